"""The sparse-history protocol: every method on the same targets with profiles cut to N reviews.

For each cap N, each example's profile keeps its N most recent reviews before the target (N = 0:
a cold start; "all": the whole profile). Everything a method derives from the profile is derived
again from the cut profile: prompts, BM25 indexes and PAG/DPL/Persona-DB profiles read the
example's profile; the facet states, edges and profile vector of a request whose profile lacks
reviews its stored persona rests on are derived from the profile it holds
(:mod:`copersona.graph.personas`); soft prompts, computed from whole profiles at training, are
refused; the rating model leaves the cut ratings out. Each cap runs on a fresh runtime (methods
prepared for its examples) sharing the generator, and every answer is cached in the store, so a
sweep cut short resumes where it stopped.

What stays as built: population-level statistics fitted once over every persona profile (the
facet schema, the summarizer's calibration, TF-IDF vocabularies). They carry no review's text into
an input.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

from copersona.eval.ablation import plot_ablation
from copersona.eval.harness import Evaluation, evaluate, select_examples
from copersona.eval.report import LABELS, write_evaluation
from copersona.inference import Runtime
from copersona.methods import METHODS
from copersona.store import Store

ALL = "all"


def parse_caps(text: str) -> list[int | None]:
    """``"0,1,2,all"`` -> [0, 1, 2, None]; a cap is a count >= 0 or ``all``, each once."""
    caps: list[int | None] = []
    for part in (p.strip() for p in text.split(",")):
        if part == ALL:
            cap = None
        elif part.isdigit():
            cap = int(part)
        else:
            raise ValueError(f"--history-cap takes counts >= 0 and 'all', comma-separated; got {part!r}")
        if cap in caps:
            raise ValueError(f"--history-cap lists {part} twice")
        caps.append(cap)
    if not caps:
        raise ValueError("--history-cap needs at least one cap")
    return caps


def cap_label(cap: int | None) -> str:
    return ALL if cap is None else str(cap)


def refused_under_caps(names: list[str]) -> list[str]:
    """Methods that cannot run on a cut profile: their soft prompts were computed from whole profiles."""
    return [n for n in names if METHODS[n].soft_prompt is not None]


def run_history_caps(
    runtime: Runtime,
    names: list[str],
    store: Store,
    *,
    split: str,
    limit: int | None,
    task: str,
    caps: list[int | None],
    allow_mixed: bool = False,
) -> dict[str, Evaluation]:
    """One evaluation per cap, by cap label, in the order given."""
    refused = [n for n in refused_under_caps(names) if any(c is not None for c in caps)]
    if refused:
        raise ValueError(
            f"{', '.join(refused)}: soft prompts are computed from whole persona profiles at training, so they "
            "cannot serve a cut profile; leave them out of a --history-cap sweep (copersona-np is the same input "
            "without one)"
        )
    results = {}
    for cap in caps:
        examples = select_examples(store, split, limit, task=task, profile_cap=cap)
        evaluation = evaluate(runtime.variant(), names, examples, split=split, allow_mixed=allow_mixed)
        evaluation.history_cap = cap
        results[cap_label(cap)] = evaluation
    return results


def curve_dict(results: dict[str, Evaluation]) -> dict:
    """Every cap's scores, and CoPersona's paired tests against that cap's best baseline."""
    first = next(iter(results.values()))
    return {
        "task": first.task,
        "split": first.split,
        "examples": len(first.examples),
        "primary_metric": first.primary_metric,
        "generators": {cap: ev.generators for cap, ev in results.items()},
        "rows": [
            {
                "history_cap": ev.history_cap,
                "method": name,
                "role": ev.roles[name],
                "generator": ev.generators.get(name),
                "metrics": {m: e.to_dict() for m, e in ev.scores[name].items()},
                "notes": _notes(ev, name),
            }
            for ev in results.values()
            for name in ev.methods
        ],
        "comparisons": [
            {
                "history_cap": ev.history_cap,
                "method": ours,
                "best_baseline": ev.best_baseline,
                "metrics": {m: c.to_dict() for m, c in against[ev.best_baseline].items()},
            }
            for ev in results.values()
            for ours, against in ev.comparisons.items()
            if ev.best_baseline in against
        ],
    }


def _notes(evaluation: Evaluation, name: str) -> dict[str, int]:
    counts: dict[str, int] = {}
    for prediction in evaluation.predictions[name]:
        for note in prediction.notes:
            counts[note] = counts.get(note, 0) + 1
    return counts


def curve_markdown(results: dict[str, Evaluation], title: str) -> str:
    first = next(iter(results.values()))
    caps = list(results)
    lines = [f"# {title}", ""]
    generators = sorted({g for ev in results.values() for g in ev.generators.values() if g})
    lines += [
        f"{len(first.examples)} targets of the {first.split} split, the same at every cap; each profile cut to its N "
        f"most recent reviews before the target. Generator: {', '.join(generators)}.",
        "",
    ]
    for metric in first.metrics:
        lines += [f"## {LABELS.get(metric, metric)} against N", ""]
        lines += ["| method | " + " | ".join(f"N = {c}" for c in caps) + " |", "|---|" + "---|" * len(caps)]
        for name in first.methods:
            cells = []
            for ev in results.values():
                e = ev.scores[name][metric]
                cells.append(f"{e.mean:.4g} [{e.low:.4g}, {e.high:.4g}]")
            lines.append(f"| {name} ({first.roles[name]}) | " + " | ".join(cells) + " |")
        lines.append("")
    primary = first.primary_metric
    lines += [f"## Paired tests against each cap's best baseline ({LABELS.get(primary, primary)})", ""]
    lines += ["| N | method | best baseline | difference [95% CI] | p |", "|---|---|---|---|---|"]
    for cap, ev in results.items():
        for ours, against in ev.comparisons.items():
            if ev.best_baseline in against:
                c = against[ev.best_baseline][primary]
                d = c.difference
                lines.append(
                    f"| {cap} | {ours} | {ev.best_baseline} | {d.mean:+.4g} [{d.low:+.4g}, {d.high:+.4g}] "
                    f"| {c.p_text()} |"
                )
    return "\n".join(lines) + "\n"


def write_history_curve(results: dict[str, Evaluation], out: Path, title: str) -> list[Path]:
    """Each cap's full report in ``out/cap-N``, and the curve: json, csv, markdown and a plot."""
    written = []
    for cap, evaluation in results.items():
        written += write_evaluation(evaluation, out / f"cap-{cap}", title=f"{title}, profiles capped at {cap}")
    curve = curve_dict(results)
    path = out / "history-curve.json"
    path.write_text(json.dumps(curve, indent=2))
    written.append(path)
    path = out / "history-curve.csv"
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["history_cap", "method", "role", "generator", "metric", "mean", "low", "high", "n"])
        for row in curve["rows"]:
            for metric, e in row["metrics"].items():
                cap = cap_label(row["history_cap"])
                writer.writerow(
                    [cap, row["method"], row["role"], row["generator"], metric, e["mean"], e["low"], e["high"], e["n"]]
                )
    written.append(path)
    path = out / "history-curve.md"
    path.write_text(curve_markdown(results, title))
    written.append(path)
    path = out / "history-curve.png"
    first = next(iter(results.values()))
    plot_ablation(
        {
            "ablation": "history cap",
            "figure": "sparse-history curve",
            "setting": "profile reviews kept (N)",
            "values": list(results),
            "examples": len(first.examples),
            "results": {
                cap: {n: {m: e.to_dict() for m, e in ev.scores[n].items()} for n in ev.methods}
                for cap, ev in results.items()
            },
        },
        path,
    )
    written.append(path)
    return written
