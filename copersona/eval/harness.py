"""The harness: every method on the same examples, generator, decoding and metrics.

Methods build inputs; the harness generates for all of them the same way (batched, cached in the
store, one decoding configuration), scores every prediction with every metric, and compares the
CoPersona methods with the best baseline by paired bootstrap over the same examples.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import numpy as np

from copersona.backends.embed import Embedder
from copersona.backends.llm import LLM, LLMBackend, Request, SoftPrompt
from copersona.build import Progress
from copersona.config import HarnessConfig
from copersona.data.records import Example
from copersona.eval.judge import CRITERIA, judge_reviews
from copersona.eval.metrics import Metric, load_metric
from copersona.eval.stats import Comparison, Estimate, bootstrap, paired_difference, resample_indices
from copersona.methods import METHODS, Method, MethodInput, Resources, create, example_key, method_class
from copersona.methods.prompts import item_block
from copersona.model.trained import TrainedModel
from copersona.store.sqlite import Store

# The answer ends where the model starts echoing the layout: a new turn or the item block's fields.
STOP = ("<|im_start|>", "\nItem:", "\nRating:", "\nReview title:", "Write this customer's review")

PRIMARY_METRIC = "rouge1"

#: The generator named for reference rows.
NO_GENERATOR = "none (no LLM)"


class MixedGeneratorsError(ValueError):
    """Methods of one evaluation would run on different generators (base and fine-tuned, or two bases)."""


@dataclass
class Prediction:
    method: str
    example: str
    user_id: str
    item_id: str
    reference: str
    text: str
    prompt_tokens: int = 0
    completion_tokens: int = 0
    seconds: float = 0.0
    cached: bool = False
    notes: list[str] = field(default_factory=list)
    truncations: list[dict] = field(default_factory=list)
    dropped: list[dict] = field(default_factory=list)  # other users' texts the evidence cutoff kept out

    def to_dict(self) -> dict:
        return asdict(self)


def _whitespace_tokens(text: str) -> int:
    return len(text.split())


class Harness:
    """Methods over one store, one generator (created only if a method needs it) and one config."""

    def __init__(
        self,
        store: Store,
        config: HarnessConfig,
        *,
        llm: Callable[[], LLM] | None,
        embedder: Callable[[], Embedder],
        progress: Progress | None = None,
        models: dict[str, TrainedModel] | None = None,
        base_generator: str | None = None,
    ):
        self.store = store
        self.config = config
        self.base_generator = base_generator or "the configured generator"
        self._llm_factory = llm
        self._llm: LLM | None = None
        self._embedder_factory = embedder
        self.progress = progress or Progress()
        self._methods: dict[str, Method] = {}
        self._resources: dict[int | None, Resources] = {}
        # Trained models by method: such a method generates with its model, on the window it trained on.
        self.models = dict(models or {})
        self._model_llm: tuple[str, LLM] | None = None
        self.generated_with: dict[str, str] = {}

    @property
    def generator_id(self) -> str | None:
        """The generator's model id if one was loaded (reference-only runs load none)."""
        return self._llm.model_id if self._llm is not None else None

    def generator_family(self, name: str) -> str | None:
        """What generates for ``name``, as far as comparability goes (None: no LLM).

        Rows are comparable when their families are equal: the same base model, or fine-tuned
        adapters from the same base under the same training budget (the equal-budget comparison).
        """
        if not method_class(name).uses_generator:
            return None
        model = self.models.get(name)
        if model is None:
            return f"base {self.base_generator}"
        budget = hashlib.sha256(json.dumps(model.config, sort_keys=True).encode()).hexdigest()[:12]
        return f"fine-tuned from {model.base}, training budget {budget}"

    def llm(self) -> LLM:
        if self._llm is None:
            if self._llm_factory is None:
                raise RuntimeError("no generator configured")
            self._llm = self._llm_factory()
        return self._llm

    def resources(self, window: int | None = None) -> Resources:
        """Shared resources; budgets count the generator's tokens (words when there is no generator).

        ``window`` overrides the generator's context window (a trained model's training window);
        methods on the same window share one set of resources.
        """
        if window not in self._resources:
            if self._llm_factory is not None:
                backend = self.llm().backend
                count, context = backend.count_tokens, backend.context_window
            else:  # reference methods only: budgets are not used, word counts stand in
                count, context = _whitespace_tokens, self.config.budget.reference_window
            shared = next(iter(self._resources.values()), None)
            self._resources[window] = Resources(
                self.store,
                self.config,
                count_tokens=shared.count_tokens if shared is not None else count,
                context_window=window or context,
                embedder=self._embedder_factory,
                llm=self.llm if self._llm_factory is not None else None,
            )
        return self._resources[window]

    def method(self, name: str, examples: list[Example] | None = None) -> Method:
        if name not in self._methods:
            if method_class(name).soft_prompt is not None and name not in self.models:
                raise ValueError(
                    f"{name!r} needs a trained model: run `copersona train STORE --method {name} --out DIR`, "
                    "or evaluate with --finetuned"
                )
            model = self.models.get(name)
            method = create(name, self.resources(model.window if model is not None else None))
            method.prepare(examples or [])
            self._methods[name] = method
        return self._methods[name]

    def generator(self, name: str) -> LLM:
        """The LLM that generates for ``name``: its trained model's, else the shared generator."""
        model = self.models.get(name)
        if model is None:
            return self.llm()
        if self._model_llm is None or self._model_llm[0] != model.key:
            if self._model_llm is not None:  # one fine-tuned model in memory at a time
                self._model_llm[1].backend.close()
            self._model_llm = (model.key, LLM(finetuned_backend(model, self.config), cache=self.store))
        return self._model_llm[1]

    def soft_prompt(self, name: str, user_id: str) -> SoftPrompt | None:
        """The user's cached soft prompt for a method with a personalizer (computed at training)."""
        if METHODS[name].soft_prompt is None:
            return None
        model = self.models[name]
        values = self.store.soft_prompt(model.key, user_id)
        if values is None:
            raise ValueError(
                f"{model.key}: no soft prompt for user {user_id} in {self.store.path} "
                "(the model was trained on another store, or the user was added after training)"
            )
        return SoftPrompt(key=f"{model.key}/{user_id}", values=values)

    def inputs(self, name: str, example: Example) -> MethodInput:
        return self.method(name, [example]).inputs(example)

    def predict(self, name: str, examples: list[Example]) -> list[Prediction]:
        """One prediction per example: generated in batches, or copied for reference methods."""
        method = self.method(name, examples)
        inputs = [method.inputs(e) for e in examples]
        predictions = [
            Prediction(
                method=name,
                example=example_key(e),
                user_id=e.user_id,
                item_id=e.target.item_id,
                reference=e.target.text,
                text=inp.prediction or "",
                notes=inp.notes,
                truncations=[t.to_dict() for t in inp.truncations],
                dropped=[d.to_dict() for d in inp.dropped],
            )
            for e, inp in zip(examples, inputs)
        ]
        if not method.uses_generator:
            self.generated_with[name] = NO_GENERATOR
            return predictions
        g = self.config.generation
        requests = [
            Request.chat(
                inp.messages,
                temperature=g.temperature,
                max_tokens=inp.max_tokens,
                seed=g.seed,
                stop=STOP,
                soft_prompt=self.soft_prompt(name, e.user_id),
            )
            for e, inp in zip(examples, inputs)
        ]
        llm = self.generator(name)
        self.generated_with[name] = llm.model_id
        with self.progress.stage(f"generating: {name}", total=len(requests)) as advance:
            for start in range(0, len(requests), g.batch_size):
                batch = slice(start, start + g.batch_size)
                for prediction, completion in zip(predictions[batch], llm.generate(requests[batch])):
                    prediction.text = completion.text.strip()
                    prediction.prompt_tokens = completion.prompt_tokens
                    prediction.completion_tokens = completion.completion_tokens
                    prediction.seconds = completion.seconds
                    prediction.cached = completion.cached
                advance(len(requests[batch]))
        return predictions


@dataclass
class Evaluation:
    """Everything one evaluation measured; :mod:`copersona.eval.report` writes it out."""

    split: str
    examples: list[str]
    methods: list[str]
    roles: dict[str, str]
    predictions: dict[str, list[Prediction]]
    scores: dict[str, dict[str, Estimate]]
    best_baseline: str | None
    comparisons: dict[str, dict[str, dict[str, Comparison]]]  # ours -> other method -> metric
    metric_configs: dict[str, dict]
    config: dict
    generator: str | None
    seconds: dict[str, float]
    judge: dict[str, dict[str, Estimate]] = field(default_factory=dict)
    judge_failures: dict[str, int] = field(default_factory=dict)
    primary_metric: str = PRIMARY_METRIC
    generators: dict[str, str] = field(default_factory=dict)  # method -> the model id that generated for it
    models: dict[str, dict] = field(default_factory=dict)  # method -> its trained model's summary
    families: dict[str, str | None] = field(default_factory=dict)  # method -> generator_family (None: no LLM)
    mixed: bool = False  # methods ran on different generator families (allowed with allow_mixed)

    def comparable(self, a: str, b: str) -> bool:
        """Rows ``a`` and ``b`` came from the same generator family (a no-LLM row is comparable with any)."""
        fa, fb = self.families.get(a), self.families.get(b)
        return fa is None or fb is None or fa == fb

    @property
    def metrics(self) -> list[str]:
        return list(self.metric_configs)


def evaluate(
    harness: Harness,
    method_names: list[str],
    examples: list[Example],
    *,
    split: str,
    metrics: list[Metric] | None = None,
    judge: LLM | None = None,
    allow_mixed: bool = False,
) -> Evaluation:
    """Predict with every method, score, and compare CoPersona's methods with the best baseline.

    Methods that would run on different generators (some fine-tuned, some on the base model) are
    refused before anything is generated, unless ``allow_mixed``; then the report marks them.
    """
    families = {name: harness.generator_family(name) for name in method_names}
    distinct = sorted({f for f in families.values() if f is not None})
    if len(distinct) > 1 and not allow_mixed:
        by_family = "; ".join(f"{f}: {', '.join(n for n, g in families.items() if g == f)}" for f in distinct)
        raise MixedGeneratorsError(
            f"these methods would run on different generators ({by_family}); evaluate them on one "
            "(all base, or all --finetuned), or pass --allow-mixed to compare them anyway, marked in every table"
        )
    config = harness.config.evaluation
    metrics = metrics if metrics is not None else [load_metric(m, config) for m in config.metrics]
    names = [m.name for m in metrics]
    predictions, seconds = {}, {}
    for name in method_names:
        started = time.perf_counter()
        predictions[name] = harness.predict(name, examples)
        seconds[name] = time.perf_counter() - started
    indices = resample_indices(len(examples), resamples=config.resamples, seed=config.seed)
    rows: dict[str, dict[str, np.ndarray]] = {}
    scores: dict[str, dict[str, Estimate]] = {}
    with harness.progress.stage("scoring", total=len(method_names) * len(metrics)) as advance:
        for name in method_names:
            texts = [p.text for p in predictions[name]]
            references = [p.reference for p in predictions[name]]
            rows[name], scores[name] = {}, {}
            for metric in metrics:
                rows[name][metric.name] = metric.statistics(texts, references)
                scores[name][metric.name] = bootstrap(rows[name][metric.name], metric.aggregate, indices)
                advance(1)
    roles = {name: METHODS[name].role for name in method_names}
    primary = PRIMARY_METRIC if PRIMARY_METRIC in names else names[0]
    baselines = [n for n in method_names if roles[n] == "baseline"]
    best = max(baselines, key=lambda n: scores[n][primary].mean) if baselines else None
    # Each CoPersona method against every baseline (the best one first) and every reference point.
    others = sorted((n for n in method_names if roles[n] != "ours"), key=lambda n: (n != best, roles[n] != "baseline"))
    by_name = {m.name: m for m in metrics}
    comparisons = {
        name: {
            other: {
                metric: paired_difference(rows[name][metric], rows[other][metric], by_name[metric].aggregate, indices)
                for metric in names
            }
            for other in others
        }
        for name in method_names
        if roles[name] == "ours"
    }
    evaluation = Evaluation(
        split=split,
        examples=[example_key(e) for e in examples],
        methods=method_names,
        roles=roles,
        predictions=predictions,
        scores=scores,
        best_baseline=best,
        comparisons=comparisons,
        metric_configs={m.name: {"scale": m.scale, **m.config()} for m in metrics},
        config=harness.config.to_dict(),
        generator=harness.generator_id,
        seconds=seconds,
        primary_metric=primary,
        generators={n: harness.generated_with[n] for n in method_names},
        models={n: harness.models[n].summary() for n in method_names if n in harness.models},
        families=families,
        mixed=len(distinct) > 1,
    )
    if judge is not None:
        _judge(evaluation, judge, examples, harness)
    return evaluation


def _judge(evaluation: Evaluation, judge: LLM, examples: list[Example], harness: Harness) -> None:
    budget = harness.resources().budget(0)
    items = [item_block(e.target, budget) for e in examples]
    config = harness.config.evaluation
    with harness.progress.stage("judging", total=len(evaluation.methods)) as advance:
        for name in evaluation.methods:
            result = judge_reviews(judge, items, [p.text for p in evaluation.predictions[name]])
            evaluation.judge_failures[name] = result.failures
            evaluation.judge[name] = {}
            for criterion in CRITERIA:
                values = np.array([s[criterion] for s in result.scores])
                # A failed answer (NaN) is left out of the mean and of n, never counted as 0.
                judged = values[~np.isnan(values)].reshape(-1, 1)
                indices = resample_indices(len(judged), resamples=config.resamples, seed=config.seed)
                evaluation.judge[name][criterion] = bootstrap(judged, _mean, indices)
            advance(1)


def _mean(rows: np.ndarray) -> float:
    return float(rows[:, 0].mean())


def finetuned_backend(model: TrainedModel, config: HarnessConfig) -> LLMBackend:
    """The runtime of a trained model.

    With an ``openai:`` generator configured, the server runs the adapter under the model's key
    (vLLM: ``--enable-lora --lora-modules KEY=FOLDER/adapter``, plus ``--enable-prompt-embeds`` for
    soft prompts, which are embedded locally from the base checkpoint). Otherwise the fastest
    local runtime: llama.cpp with the LoRA GGUF (soft prompts decoded as embeddings) where the
    adapter was exported, else transformers with the adapter merged.
    """
    from copersona.backends import load_llm_backend
    from copersona.backends.transformers_local import TransformersBackend

    kind, _, served = (config.llm or "").partition(":")
    if kind == "openai":
        from copersona.backends.openai_http import OpenAICompatibleBackend

        embeddings = model.checkpoint if model.soft_prompt_length else None
        return OpenAICompatibleBackend(served.partition("@")[2], model.key, prompt_embeddings=embeddings)
    if model.llama_cpp_adapter:
        return load_llm_backend(model.base, lora_path=model.folder / model.llama_cpp_adapter)
    return TransformersBackend(model.checkpoint, adapter=model.adapter_dir, batch_size=config.generation.batch_size)


def generator_spec(store: Store, config: HarnessConfig) -> str:
    """The configured generator, else the LLM the store was built with."""
    return config.llm or (store.get_meta("build_config") or {}).get("llm", "smollm2")


def open_harness(
    store: Store,
    config: HarnessConfig,
    *,
    with_generator: bool = True,
    progress: Progress | None = None,
    models: dict[str, TrainedModel] | None = None,
) -> Harness:
    """A harness whose generator and embedder load from the spec strings, when first needed.

    Every method generates with the base model unless ``models`` names a trained model for it;
    methods that cannot run without one (soft prompts) take the store's registered model
    (``copersona train``) when ``models`` has none.
    """
    from copersona.backends import load_embedder, load_llm_backend

    pinned = store.get_meta("pinned_config") or {}
    spec = generator_spec(store, config)
    return Harness(
        store,
        config,
        llm=(lambda: LLM(load_llm_backend(spec), cache=store)) if with_generator else None,
        embedder=lambda: load_embedder(pinned.get("embedder", "minilm")),
        progress=progress,
        models={**registered_models(store), **(models or {})},
        base_generator=spec,
    )


def registered_models(store: Store) -> dict[str, TrainedModel]:
    """The models ``copersona train`` registered in the store for methods that cannot generate without
    one (soft prompts), by method; a moved folder is skipped."""
    found = {}
    for method, path in store.trained_models().items():
        if method not in METHODS or METHODS[method].soft_prompt is None:
            continue
        try:
            found[method] = TrainedModel.load(path)
        except FileNotFoundError:
            continue
    return found


def select_examples(store: Store, split: str, limit: int | None) -> list[Example]:
    """The split's examples of the first ``limit`` users by id (ids are opaque, so this is no bias by activity)."""
    examples = store.examples(split)
    if limit is not None:
        users = sorted({e.user_id for e in examples})[:limit]
        keep = set(users)
        examples = [e for e in examples if e.user_id in keep]
    return examples
