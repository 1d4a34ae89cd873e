"""The runtime: a request (an :class:`~copersona.data.records.Example`) in, an answer out.

Methods build inputs; the runtime generates for all of them the same way (batched, cached in the
store, one decoding configuration) with the generator each method is entitled to: the shared base
model, or the method's trained model (its adapter on the window it trained on, and the user's
cached soft prompt). ``generate``, ``train``, ``evaluate``, the benchmarks and the server all
answer through it; scoring and statistics live in :mod:`copersona.eval`.
"""

from __future__ import annotations

import functools
import hashlib
import json
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

from copersona.backends import LLMSpec, load_llm_backend
from copersona.backends.embed import Embedder
from copersona.backends.llm import LLM, Choice, Completion, Request, SoftPrompt, TextSink
from copersona.config import HarnessConfig
from copersona.data.records import Example
from copersona.engines import BatchFunction, Engine, LocalEngine
from copersona.inference.loading import cached_llm, finetuned_backend, generator_spec, registered_models, store_embedder
from copersona.methods import METHODS, Method, MethodInput, Resources, create, example_key, method_class
from copersona.methods.prompts import RATINGS
from copersona.model.trained import TrainedModel
from copersona.progress import Progress
from copersona.retrieval.budget import Truncation
from copersona.retrieval.cutoff import DroppedText
from copersona.store import Store

# The answer ends where the model starts echoing the layout: a new turn or the item block's fields.
STOP = ("<|im_start|>", "\nItem:", "\nRating:", "\nReview title:", "Write this customer's review")

#: The generator named for reference rows.
NO_GENERATOR = "none (no LLM)"


@dataclass
class Prediction:
    """One method's answer for one example, with what shaped it.

    In the rating task ``text`` is the rating answered (the most probable one) and ``reference`` the
    true one; ``rating`` is the point prediction (the expected rating under ``distribution``, the
    probabilities of :data:`~copersona.methods.prompts.RATINGS`; a reference method's own estimate).
    """

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
    truncations: list[Truncation] = field(default_factory=list)
    dropped: list[DroppedText] = field(default_factory=list)  # other users' texts the evidence cutoff kept out
    rating: float | None = None
    distribution: list[float] | None = None
    read_from: str = ""  # rating task: "logprobs", "constrained" or "fallback" (see Choice)

    def record_choice(self, choice: Choice) -> None:
        """Take a rating answer: the expected rating and the most probable one."""
        values = [float(r) for r in RATINGS]
        self.distribution = list(choice.probabilities)
        self.rating = sum(v * p for v, p in zip(values, choice.probabilities))
        self.text = RATINGS[max(range(len(values)), key=lambda i: (choice.probabilities[i], -i))]
        self.read_from = choice.source
        self.cached = choice.cached

    def record(self, completion: Completion) -> None:
        """Take the generated answer and what it cost."""
        self.text = completion.text.strip()
        self.prompt_tokens = completion.prompt_tokens
        self.completion_tokens = completion.completion_tokens
        self.seconds = completion.seconds
        self.cached = completion.cached

    def to_dict(self) -> dict:
        return asdict(self)


def _whitespace_tokens(text: str) -> int:
    return len(text.split())


def answer_batch(llm: LLM, requests: list[Request]) -> list[Choice | Completion]:
    """Each request's answer, in order: a rating choice where it offers choices, else a completion."""
    choices = [r for r in requests if r.choices]
    chosen = iter(llm.choose(choices) if choices else [])
    completions = iter(llm.generate([r for r in requests if not r.choices]))
    return [next(chosen) if r.choices else next(completions) for r in requests]


@dataclass
class AnswerRequests:
    """An engine worker's recipe for :func:`answer_batch`: the method's generator (the base model's
    spec, or its trained model) loaded in the worker, with the store opened there as its cache."""

    base: str
    model: TrainedModel | None
    config: HarnessConfig
    store_location: str

    def open(self) -> BatchFunction:
        backend = finetuned_backend(self.model, self.config) if self.model else load_llm_backend(self.base)
        return functools.partial(answer_batch, LLM(backend, cache=Store(self.store_location, create=False)))


class Runtime:
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
        engine: Engine | None = None,
    ):
        self.store = store
        self.engine = engine or LocalEngine()
        self.config = config
        self.base_generator = base_generator or "the configured generator"
        self._llm_factory = llm
        self._llm: LLM | None = None
        self._embedder_factory = functools.cache(embedder)  # one embedder, whatever the windows and variants
        self.progress = progress or Progress()
        self._methods: dict[str, Method] = {}
        self._resources: dict[int | None, Resources] = {}
        # Trained models by method: such a method generates with its model, on the window it trained on.
        self.models = dict(models or {})
        self._model_llm: tuple[str, LLM] | None = None
        self.generated_with: dict[str, str] = {}

    def variant(self, config: HarnessConfig | None = None, store: Store | None = None) -> Runtime:
        """A runtime on another config or store that shares this one's generator, embedder and trained models."""
        return Runtime(
            store if store is not None else self.store,
            config if config is not None else self.config,
            llm=self.llm if self._llm_factory is not None else None,
            embedder=self._embedder_factory,
            progress=self.progress,
            models=self.models,
            base_generator=self.base_generator,
            engine=self.engine,
        )

    def forget(self) -> None:
        """Drop prepared methods and resources (indexes, token counts, peer texts) after the store
        changed under this runtime; the generator and embedder stay loaded."""
        self._methods.clear()
        self._resources.clear()

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
            special: tuple[str, ...] = ()
            if self._llm_factory is not None:
                backend = self.llm().backend
                count, context, special = backend.count_tokens, backend.context_window, backend.special_tokens
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
                special_tokens=special,
            )
        return self._resources[window]

    def refusal(self, name: str) -> str | None:
        """Why ``name`` cannot run here (a trained model missing, peers' words withheld), or None."""
        cls = method_class(name)
        if cls.soft_prompt is not None and name not in self.models:
            return (
                f"{name!r} needs a trained model: run `copersona train STORE --method {name} --out DIR`, "
                "or evaluate with --finetuned"
            )
        if cls.shows_peer_words and self.config.peers.quotes == "none":
            return f"{name!r} puts other users' reviews in its input, which [harness.peers] quotes = 'none' forbids"
        return None

    def method(self, name: str, examples: list[Example] | None = None) -> Method:
        if name not in self._methods:
            refusal = self.refusal(name)
            if refusal is not None:
                raise ValueError(refusal)
            model = self.models.get(name)
            method = create(name, self.resources(model.window if model is not None else None))
            method.draft = functools.partial(self._draft, name)
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

    def soft_prompt(self, name: str, example: Example) -> SoftPrompt | None:
        """The user's cached soft prompt for a method with a personalizer (computed at training from
        the stored graph, so refused to a request whose persona must be derived from a shorter profile)."""
        if METHODS[name].soft_prompt is None:
            return None
        user_id = example.user_id
        if self.method(name).resources.persona(example).derived:
            raise ValueError(
                f"{name!r}: user {user_id}'s soft prompt was computed from their whole persona profile, and this "
                "request's profile lacks some of those reviews (a history cap); evaluate copersona-np instead"
            )
        model = self.models[name]
        values = self.store.soft_prompt(model.key, user_id)
        if values is None:
            raise ValueError(
                f"{model.key}: no soft prompt for user {user_id} in {self.store.path} "
                "(the model was trained on another store, or the user was added after training)"
            )
        return SoftPrompt(key=f"{model.key}/{user_id}", values=values)

    def _draft(self, name: str, messages: list[dict[str, str]], max_tokens: int) -> str:
        """An intermediate text of a multi-pass method, decoded as its answers are (and cached)."""
        g = self.config.generation
        request = Request.chat(messages, temperature=g.temperature, max_tokens=max_tokens, seed=g.seed, stop=STOP)
        return self.generator(name).generate([request])[0].text.strip()

    def inputs(self, name: str, example: Example) -> MethodInput:
        return self.method(name, [example]).inputs(example)

    def predict(self, name: str, examples: list[Example], *, max_tokens: int | None = None) -> list[Prediction]:
        """One prediction per example: generated in batches, or copied for reference methods.

        ``max_tokens`` caps each answer below the method's own length target (a served request's cap).
        """
        method = self.method(name, examples)
        tasks = {e.task for e in examples}
        if not tasks <= set(method.tasks):
            raise ValueError(f"{name!r} answers the {' and '.join(method.tasks)} task, not {', '.join(sorted(tasks))}")
        inputs = [method.inputs(e) for e in examples]
        predictions = [self._prediction(name, e, inp) for e, inp in zip(examples, inputs)]
        if not method.uses_generator:
            self.generated_with[name] = NO_GENERATOR
            return predictions
        requests = [self._request(name, e, inp, max_tokens) for e, inp in zip(examples, inputs)]
        llm = self.generator(name)
        self.generated_with[name] = llm.model_id
        size = self.config.generation.batch_size
        batches = [requests[start : start + size] for start in range(0, len(requests), size)]
        worker = AnswerRequests(self.base_generator, self.models.get(name), self.config, self.store.location)
        with self.progress.stage(f"generating: {name}", total=len(requests)) as advance:
            for index, answers in self.engine.map(worker, batches, lambda: functools.partial(answer_batch, llm)):
                batch = batches[index]
                for prediction, request, answer in zip(predictions[index * size :], batch, answers):
                    if request.choices:
                        prediction.record_choice(answer)
                    else:
                        prediction.record(answer)
                advance(len(batch))
        for prediction, example, inp in zip(predictions, examples, inputs):
            self._finish(method, example, inp, prediction, max_tokens)
        return predictions

    @staticmethod
    def _finish(
        method: Method, example: Example, inp: MethodInput, prediction: Prediction, max_tokens: int | None
    ) -> None:
        """The method's final answer from the generated text (a selecting method may keep another candidate)."""
        if not method.selects(example):
            return
        prediction.text, notes = method.answer(example, inp, prediction.text, max_tokens)
        prediction.notes = [*prediction.notes, *notes]

    def stream(self, name: str, example: Example, on_text: TextSink, *, max_tokens: int | None = None) -> Prediction:
        """One prediction whose text goes to ``on_text`` as it is generated (a reference method's,
        or a cached answer, at once). Leading whitespace is not passed on, as ``predict`` strips it."""
        method = self.method(name, [example])
        inp = method.inputs(example)
        prediction = self._prediction(name, example, inp)
        if not method.uses_generator:
            self.generated_with[name] = NO_GENERATOR
            on_text(prediction.text)
            return prediction
        started = False

        def trimmed(piece: str) -> None:
            nonlocal started
            if not started:
                piece = piece.lstrip()
                started = bool(piece)
            if piece:
                on_text(piece)

        llm = self.generator(name)
        self.generated_with[name] = llm.model_id
        request = self._request(name, example, inp, max_tokens)
        if method.selects(example):  # the answer is known only once every candidate is
            prediction.record(llm.generate([request])[0])
            self._finish(method, example, inp, prediction, max_tokens)
            on_text(prediction.text)
            return prediction
        prediction.record(llm.stream(request, trimmed))
        return prediction

    @staticmethod
    def _prediction(name: str, example: Example, inp: MethodInput) -> Prediction:
        rating = example.target.rating
        reference = example.target.text
        if example.task == "rating":
            reference = f"{rating:g}" if rating is not None else ""
        return Prediction(
            method=name,
            example=example_key(example),
            user_id=example.user_id,
            item_id=example.target.item_id,
            reference=reference,
            text=inp.prediction or "",
            notes=inp.notes,
            truncations=list(inp.truncations),
            dropped=list(inp.dropped),
            rating=inp.rating,
        )

    def _request(self, name: str, example: Example, inp: MethodInput, max_tokens: int | None) -> Request:
        g = self.config.generation
        if example.task == "rating":  # scored, not sampled: the probability of each rating
            return Request.chat(
                inp.messages,
                temperature=0.0,
                max_tokens=inp.max_tokens,
                seed=g.seed,
                choices=RATINGS,
                soft_prompt=self.soft_prompt(name, example),
            )
        return Request.chat(
            inp.messages,
            temperature=g.temperature,
            max_tokens=min(inp.max_tokens, max_tokens) if max_tokens else inp.max_tokens,
            seed=g.seed,
            stop=STOP,
            soft_prompt=self.soft_prompt(name, example),
        )


def open_runtime(
    store: Store,
    config: HarnessConfig,
    *,
    with_generator: bool = True,
    progress: Progress | None = None,
    models: dict[str, TrainedModel] | None = None,
    engine: Engine | None = None,
) -> Runtime:
    """A runtime whose generator and embedder load from the spec strings, when first needed.

    Every method generates with the base model unless ``models`` names a trained model for it;
    methods that cannot run without one (soft prompts) take the store's registered model
    (``copersona train``) when ``models`` has none.
    """
    spec = generator_spec(store, config)
    LLMSpec.parse(spec)  # a mistyped spec fails here, before any work
    return Runtime(
        store,
        config,
        llm=(lambda: cached_llm(store, spec)) if with_generator else None,
        embedder=store_embedder(store),
        progress=progress,
        models={**registered_models(store), **(models or {})},
        base_generator=spec,
        engine=engine,
    )
