"""The harness: every method on the same examples, generator, decoding and metrics.

The runtime (:mod:`copersona.inference`) answers for every method the same way; the harness
scores every prediction with every metric and compares the CoPersona methods with the best
baseline by paired bootstrap over the same examples.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from copersona.backends.llm import LLM
from copersona.data.records import Example
from copersona.eval.judge import CRITERIA, judge_reviews
from copersona.eval.metrics import Metric, load_metric
from copersona.eval.rating_metrics import RATING_METRICS
from copersona.eval.stats import Comparison, Estimate, bootstrap, paired_difference, resample_indices
from copersona.facets.profile import recent
from copersona.inference import Prediction, Runtime
from copersona.methods import METHODS, example_key
from copersona.methods.prompts import item_block
from copersona.model.trained import ModelSummary
from copersona.store import Store

PRIMARY_METRIC = "rouge1"
#: Each task's primary metric (the best baseline is chosen on it) and its metrics.
PRIMARY_METRICS = {"review": "rouge1", "rating": "mae"}


class MixedGeneratorsError(ValueError):
    """Methods of one evaluation would run on different generators (base and fine-tuned, or two bases)."""


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
    models: dict[str, ModelSummary] = field(default_factory=dict)  # method -> its trained model's summary
    families: dict[str, str | None] = field(default_factory=dict)  # method -> generator_family (None: no LLM)
    mixed: bool = False  # methods ran on different generator families (allowed with allow_mixed)
    task: str = "review"
    history_cap: int | None = None  # each profile cut to its N most recent reviews (None: whole profiles)

    def better(self, metric: str, a: float, b: float) -> bool:
        """Whether score ``a`` beats ``b`` on ``metric`` (errors are better lower)."""
        return a < b if self.metric_configs[metric].get("higher_is_better") is False else a > b

    def best(self, metric: str, names: list[str]) -> str:
        """The method of ``names`` with the best score on ``metric`` (NaN scores never win)."""
        scored = [n for n in names if self.scores[n][metric].mean == self.scores[n][metric].mean] or names
        best = scored[0]
        for name in scored[1:]:
            if self.better(metric, self.scores[name][metric].mean, self.scores[best][metric].mean):
                best = name
        return best

    def comparable(self, a: str, b: str) -> bool:
        """Rows ``a`` and ``b`` came from the same generator family (a no-LLM row is comparable with any)."""
        fa, fb = self.families.get(a), self.families.get(b)
        return fa is None or fb is None or fa == fb

    @property
    def metrics(self) -> list[str]:
        return list(self.metric_configs)


def evaluate(
    runtime: Runtime,
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
    families = {name: runtime.generator_family(name) for name in method_names}
    distinct = sorted({f for f in families.values() if f is not None})
    if len(distinct) > 1 and not allow_mixed:
        by_family = "; ".join(f"{f}: {', '.join(n for n, g in families.items() if g == f)}" for f in distinct)
        raise MixedGeneratorsError(
            f"these methods would run on different generators ({by_family}); evaluate them on one "
            "(all base, or all --finetuned), or pass --allow-mixed to compare them anyway, marked in every table"
        )
    config = runtime.config.evaluation
    tasks = {e.task for e in examples}
    if len(tasks) > 1:
        raise ValueError("an evaluation covers one task; these examples mix " + ", ".join(sorted(tasks)))
    task = tasks.pop() if tasks else "review"
    if metrics is None:
        names = RATING_METRICS if task == "rating" else config.metrics
        metrics = [load_metric(m, config) for m in names]
    names = [m.name for m in metrics]
    predictions, seconds = {}, {}
    for name in method_names:
        started = time.perf_counter()
        predictions[name] = runtime.predict(name, examples)
        seconds[name] = time.perf_counter() - started
    indices = resample_indices(len(examples), resamples=config.resamples, seed=config.seed)
    rows: dict[str, dict[str, np.ndarray]] = {}
    scores: dict[str, dict[str, Estimate]] = {}
    with runtime.progress.stage("scoring", total=len(method_names) * len(metrics)) as advance:
        for name in method_names:
            rows[name], scores[name] = {}, {}
            for metric in metrics:
                rows[name][metric.name] = metric.rows(predictions[name])
                scores[name][metric.name] = bootstrap(rows[name][metric.name], metric.aggregate, indices)
                advance(1)
    roles = {name: METHODS[name].role for name in method_names}
    primary = PRIMARY_METRICS[task] if PRIMARY_METRICS[task] in names else names[0]
    baselines = [n for n in method_names if roles[n] == "baseline"]
    evaluation = Evaluation(
        split=split,
        examples=[example_key(e) for e in examples],
        methods=method_names,
        roles=roles,
        predictions=predictions,
        scores=scores,
        best_baseline=None,
        comparisons={},
        metric_configs={
            m.name: {"scale": m.scale, "higher_is_better": m.higher_is_better, **m.config()} for m in metrics
        },
        config=runtime.config.to_dict(),
        generator=runtime.generator_id,
        seconds=seconds,
        primary_metric=primary,
        generators={n: runtime.generated_with[n] for n in method_names},
        models={n: runtime.models[n].summary() for n in method_names if n in runtime.models},
        families=families,
        mixed=len(distinct) > 1,
        task=task,
    )
    best = evaluation.best(primary, baselines) if baselines else None
    evaluation.best_baseline = best
    # Each CoPersona method against every baseline (the best one first) and every reference point.
    others = sorted((n for n in method_names if roles[n] != "ours"), key=lambda n: (n != best, roles[n] != "baseline"))
    by_name = {m.name: m for m in metrics}
    evaluation.comparisons = {
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
    if judge is not None:
        _judge(evaluation, judge, examples, runtime)
    return evaluation


def _judge(evaluation: Evaluation, judge: LLM, examples: list[Example], runtime: Runtime) -> None:
    budget = runtime.resources().budget(0)
    items = [item_block(e.target, budget) for e in examples]
    config = runtime.config.evaluation
    with runtime.progress.stage("judging", total=len(evaluation.methods)) as advance:
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


def select_examples(
    store: Store, split: str, limit: int | None, *, task: str = "review", profile_cap: int | None = None
) -> list[Example]:
    """The split's examples of the first ``limit`` users by id (ids are opaque, so this is no bias by activity).

    For the rating task, the examples whose target has a rating. ``profile_cap`` keeps only each
    profile's most recent reviews (a sparse-history experiment on the same targets; 0 leaves none).
    """
    examples = store.examples(split)
    if limit is not None:
        users = sorted({e.user_id for e in examples})[:limit]
        keep = set(users)
        examples = [e for e in examples if e.user_id in keep]
    if task == "rating":
        examples = [e.model_copy(update={"task": "rating"}) for e in examples if e.target.rating is not None]
    if profile_cap is not None:
        examples = [e.model_copy(update={"profile": recent(e.profile, profile_cap)}) for e in examples]
    return examples


def fewest_reviews(examples: list[Example], share: float = 0.25) -> list[Example]:
    """The examples whose profiles are among the shortest: at most the ``share`` quantile of profile
    lengths (ties at the quantile included)."""
    if not examples:
        return []
    bound = float(np.quantile([len(e.profile) for e in examples], share))
    return [e for e in examples if len(e.profile) <= bound]
