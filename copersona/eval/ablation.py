"""Ablations and sensitivity (Sec. 4.4): one setting varied, everything else fixed, each with a plot.

* ``neighbours``: peers in the peer context, 0-3 (Fig. 5), for copersona-np;
* ``retriever``: bm25, dense, recency (Table 5), for rag and copersona-np;
* ``temperature``: 0.5-1.0 (Fig. 3), for copersona-np;
* ``facets``: M = 3-6 (Fig. 4): the facet stages (schema, summaries, graph) are rebuilt into a copy
  of the store per M, next to the outputs, then copersona-np runs on each copy;
* ``retrieval-size``: 1, 2, 4, 8 retrieved units (own reviews; Persona-DB's persona units), for
  every method of the rating harness (Persona-DB's context-efficiency curve); nonperso retrieves
  nothing and is the flat line.

Generation is cached in the store, so values shared with the main evaluation cost nothing.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path

from copersona.data.records import Example
from copersona.eval.harness import Evaluation, evaluate
from copersona.eval.metrics import load_metric
from copersona.eval.rating_metrics import RATING_METRICS
from copersona.eval.report import LABELS
from copersona.inference import Runtime
from copersona.store import Store


@dataclass(frozen=True)
class Ablation:
    name: str
    setting: str  # dotted HarnessConfig field, or build field for facets
    values: tuple
    methods: tuple[str, ...]
    figure: str


ABLATIONS = {
    a.name: a
    for a in (
        Ablation("neighbours", "retrieval.neighbours", (0, 1, 2, 3), ("copersona-np",), "Fig. 5"),
        Ablation("retriever", "retrieval.retriever", ("bm25", "dense", "recency"), ("rag", "copersona-np"), "Table 5"),
        Ablation("temperature", "generation.temperature", (0.5, 0.6, 0.7, 0.8, 0.9, 1.0), ("copersona-np",), "Fig. 3"),
        Ablation("facets", "facets.num_facets", (3, 4, 5, 6), ("copersona-np",), "Fig. 4"),
        Ablation(
            "retrieval-size",
            "retrieval.history_k",
            (1, 2, 4, 8),
            ("nonperso", "rag", "pag", "dpl", "copersona-np", "persona-db"),
            "Persona-DB's context efficiency",
        ),
    )
}


def _set(config: object, dotted: str, value: object) -> None:
    *path, last = dotted.split(".")
    for part in path:
        config = getattr(config, part)
    setattr(config, last, value)


def facet_variant(store: Store, num_facets: int, folder: Path, runtime: Runtime) -> Path:
    """A copy of ``store`` whose facet stages were rebuilt with ``num_facets`` facets (resumable)."""
    from copersona.build import Backends, Build
    from copersona.config import BuildConfig

    path = folder / f"facets-{num_facets}.sqlite"
    if not path.exists():
        partial = path.with_suffix(".partial")
        folder.mkdir(parents=True, exist_ok=True)
        store.backup(partial)
        with Store(partial) as copied:
            copied.reset_personas()
        partial.rename(path)
    config = BuildConfig.from_dict(store.get_meta("build_config"))
    config.facets.num_facets = num_facets
    with Store(path) as variant:
        backends = Backends(embedder_factory=lambda: runtime.resources().embedder, llm_factory=lambda db: runtime.llm())
        Build(variant, config, backends).run()
    return path


def ablation_of(spec: str) -> Ablation:
    """The ablation ``NAME``, or ``NAME=V1,V2,...`` with the values chosen (of the setting's type)."""
    name, _, chosen = spec.partition("=")
    if name not in ABLATIONS:
        raise ValueError(f"unknown ablation {name!r}: use one of {', '.join(ABLATIONS)}")
    ablation = ABLATIONS[name]
    if not chosen:
        return ablation
    kind = type(ablation.values[0])
    try:
        values = tuple(kind(v.strip()) for v in chosen.split(",") if v.strip())
    except ValueError:
        raise ValueError(f"ablation {name}: values must be {kind.__name__}s, got {chosen!r}") from None
    if not values:
        raise ValueError(f"ablation {name}: no values after '='")
    return dataclasses.replace(ablation, values=values)


def check_ablations(specs: list[str], runtime: Runtime) -> None:
    """Refuse, before any work, ablations that are unknown or cannot run on the runtime's generators."""
    for spec in specs:
        if ablation_of(spec).name == "facets" and runtime.models:
            raise ValueError(
                "the facets ablation rebuilds the facet stages, which the trained models' inputs and soft "
                "prompts were made from: run it without --finetuned/--model"
            )


def run_ablation(spec: str, store: Store, runtime: Runtime, examples: list[Example], out: Path, *, split: str) -> dict:
    """``spec``: ``NAME`` or ``NAME=V1,V2,...`` (see :func:`ablation_of`)."""
    check_ablations([spec], runtime)
    ablation = ablation_of(spec)
    name = ablation.name
    task = examples[0].task if examples else "review"
    names = RATING_METRICS if task == "rating" else runtime.config.evaluation.metrics
    metrics = [load_metric(m, runtime.config.evaluation) for m in names]
    results: dict[str, Evaluation] = {}
    for value in ablation.values:
        config = copy.deepcopy(runtime.config)
        with contextlib.ExitStack() as stack:
            target_store = store
            if name == "facets":
                variant = facet_variant(store, int(value), out / "ablation-stores", runtime)
                target_store = stack.enter_context(Store(variant))
            else:
                _set(config, ablation.setting, value)
            run = runtime.variant(config, target_store)  # a fine-tuned run's ablations use its fine-tuned models
            results[str(value)] = evaluate(run, list(ablation.methods), examples, split=split, metrics=metrics)
    return {
        "ablation": name,
        "setting": ablation.setting,
        "figure": ablation.figure,
        "values": [str(v) for v in ablation.values],
        "examples": len(examples),
        "results": {
            value: {method: {m: e.to_dict() for m, e in ev.scores[method].items()} for method in ev.methods}
            for value, ev in results.items()
        },
    }


def plot_ablation(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    values = result["values"]
    first = result["results"][values[0]]
    methods = list(first)
    metrics = list(first[methods[0]])
    fig, axes = plt.subplots(1, len(metrics), figsize=(3.2 * len(metrics), 3.2), squeeze=False)
    for ax, metric in zip(axes[0], metrics):
        for method in methods:
            rows = [result["results"][v][method][metric] for v in values]
            means = [r["mean"] for r in rows]
            errors = [[r["mean"] - r["low"] for r in rows], [r["high"] - r["mean"] for r in rows]]
            ax.errorbar(range(len(values)), means, yerr=errors, marker="o", capsize=3, label=method)
        ax.set_xticks(range(len(values)), values)
        ax.set_xlabel(result["setting"])
        ax.set_title(LABELS.get(metric, metric))
    axes[0][0].legend(fontsize=8)
    fig.suptitle(f"{result['ablation']} ({result['figure']}), {result['examples']} examples", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def run_ablations(
    specs: list[str], store: Store, runtime: Runtime, examples: list[Example], out: Path, *, split: str
) -> list[Path]:
    written = []
    for spec in specs:
        result = run_ablation(spec, store, runtime, examples, out, split=split)
        name = result["ablation"]
        path = out / f"ablation-{name}.json"
        path.write_text(json.dumps(result, indent=2))
        plot_ablation(result, out / f"ablation-{name}.png")
        written += [path, out / f"ablation-{name}.png"]
    return written
