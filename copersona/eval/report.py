"""Evaluation outputs: results.json, results.csv, predictions.jsonl, report.md and PNG plots."""

from __future__ import annotations

import csv
import json
from collections import Counter
from pathlib import Path

from copersona.eval.harness import Evaluation
from copersona.eval.stats import Estimate
from copersona.inference import NO_GENERATOR

LABELS = {
    "rouge1": "R-1",
    "rougeL": "R-L",
    "meteor": "MET.",
    "bleu": "BL.",
    "bertscore": "BS.",
    "mae": "MAE ↓",
    "rmse": "RMSE ↓",
    "pearson": "Pearson",
    "spearman": "Spearman",
    "accuracy": "Acc.",
}
BERTSCORE_NOTE = (
    "BERTScore here uses {model} (layer {layer}); the papers use led-base-16384, so these BERTScore "
    "values are not comparable with the papers' numbers, only with each other."
)


def dropped_counts(evaluation: Evaluation, name: str) -> dict[str, int]:
    """What the evidence cutoff did for one method: texts left out, by what was done instead."""
    return dict(Counter(d.action for p in evaluation.predictions[name] for d in p.dropped))


def comparison_count(evaluation: Evaluation) -> int:
    """Paired tests in the report: one per (CoPersona method, other method, metric)."""
    return sum(len(by_metric) for against in evaluation.comparisons.values() for by_metric in against.values())


def results_dict(evaluation: Evaluation) -> dict:
    return {
        "task": evaluation.task,
        "split": evaluation.split,
        "history_cap": evaluation.history_cap,
        "examples": len(evaluation.examples),
        "generator": evaluation.generator,
        "mixed_generators": evaluation.mixed,
        "primary_metric": evaluation.primary_metric,
        "evidence_cutoff": evaluation.config.get("peers", {}),
        "comparisons_made": comparison_count(evaluation),
        "methods": {
            name: {
                "role": evaluation.roles[name],
                "generator": evaluation.generators.get(name),
                "generator_family": evaluation.families.get(name),
                "seconds": evaluation.seconds[name],
                "metrics": {metric: est.to_dict() for metric, est in evaluation.scores[name].items()},
                "judge": {c: est.to_dict() for c, est in evaluation.judge.get(name, {}).items()},
                "judge_failures": evaluation.judge_failures.get(name),
                "truncations": sum(len(p.truncations) for p in evaluation.predictions[name]),
                "notes": dict(Counter(n for p in evaluation.predictions[name] for n in p.notes)),
                "evidence_dropped": dropped_counts(evaluation, name),
                "completion_tokens": sum(p.completion_tokens for p in evaluation.predictions[name]),
                "ratings_read_from": dict(Counter(p.read_from for p in evaluation.predictions[name] if p.read_from)),
            }
            for name in evaluation.methods
        },
        "best_baseline": evaluation.best_baseline,
        "comparisons": {
            name: {
                other: {metric: c.to_dict() for metric, c in by_metric.items()} for other, by_metric in against.items()
            }
            for name, against in evaluation.comparisons.items()
        },
        "different_generator_comparisons": [
            [name, other]
            for name, against in evaluation.comparisons.items()
            for other in against
            if not evaluation.comparable(name, other)
        ],
        "metric_configs": evaluation.metric_configs,
        "config": evaluation.config,
        "generators": evaluation.generators,
        "models": {name: summary.to_dict() for name, summary in evaluation.models.items()},
    }


def _cell(estimate: Estimate, scale: str, bold: bool = False) -> str:
    digits = 2 if scale == "0-100" else 4
    text = f"{estimate.mean:.{digits}f} ± {(estimate.high - estimate.low) / 2:.{digits}f}"
    return f"**{text}**" if bold else text


def markdown(evaluation: Evaluation, title: str = "Evaluation") -> str:
    metrics = evaluation.metrics
    scales = {m: evaluation.metric_configs[m]["scale"] for m in metrics}
    generating = [n for n in evaluation.methods if evaluation.roles[n] != "reference"]
    best = {m: evaluation.best(m, generating) for m in metrics} if generating else {}
    peers = evaluation.config.get("peers", {})
    task = (
        "Task: rating prediction (the item only; the rating read from the generator's probabilities). "
        if evaluation.task == "rating"
        else ""
    )
    lines = [
        f"# {title}",
        "",
        f"{task}{len(evaluation.examples)} examples of the {evaluation.split} split. Cells: mean ± half the 95% "
        "bootstrap interval. Best generating method per column in bold. Reference points use no LLM. "
        f"Other users' evidence: cutoff `{peers.get('cutoff', 'n/a')}`, same item "
        f"{'allowed' if peers.get('same_item') else 'never'}.",
    ]
    if evaluation.mixed:
        lines += [
            "",
            "**Mixed generators** (`--allow-mixed`): the rows below did not all run on the same generator; "
            "compare rows only within one generator family (see the generator column).",
        ]
    lines += [
        "",
        "| Method | " + " | ".join(LABELS.get(m, m) for m in metrics) + " | generator |",
        "|---|" + "---|" * (len(metrics) + 1),
    ]
    for name in evaluation.methods:
        label = f"{name} (reference, no LLM)" if evaluation.roles[name] == "reference" else name
        cells = [_cell(evaluation.scores[name][m], scales[m], best.get(m) == name) for m in metrics]
        lines.append(f"| {label} | " + " | ".join(cells) + f" | `{evaluation.generators.get(name, '')}` |")
    for name, against in evaluation.comparisons.items():
        lines += [
            "",
            f"## Paired comparisons: {name}",
            "",
            f"Difference ({name} - other) on the same examples, 95% paired-bootstrap interval, two-sided p "
            f"(p < 1/B where none of the B resamples crosses zero). The best baseline by "
            f"{LABELS.get(evaluation.primary_metric, evaluation.primary_metric)} is {evaluation.best_baseline}, "
            f"chosen on these same examples; this report makes {comparison_count(evaluation)} paired "
            "comparisons, uncorrected for multiple testing.",
            "",
            "| Against | " + " | ".join(LABELS.get(m, m) for m in metrics) + " |",
            "|---|" + "---|" * len(metrics),
        ]
        for other, by_metric in against.items():
            label = f"{other} (best baseline)" if other == evaluation.best_baseline else other
            if not evaluation.comparable(name, other):
                label += " (**different generator**)"
            cells = [
                f"{c.difference.mean:+.4f} [{c.difference.low:+.4f}, {c.difference.high:+.4f}] {c.p_text()}"
                for c in (by_metric[m] for m in metrics)
            ]
            lines.append(f"| {label} | " + " | ".join(cells) + " |")
    if evaluation.judge:
        criteria = list(next(iter(evaluation.judge.values())))
        lines += [
            "",
            "## LLM-as-judge (1-10)",
            "",
            "| Method | " + " | ".join(criteria) + " | failed answers |",
            "|---|" + "---|" * (len(criteria) + 1),
        ]
        for name, by_criterion in evaluation.judge.items():
            cells = [_cell(by_criterion[c], "0-10") for c in criteria]
            lines.append(f"| {name} | " + " | ".join(cells) + f" | {evaluation.judge_failures.get(name, 0)} |")
    if evaluation.models:
        lines += [
            "",
            "## Trained models",
            "",
            "Each method below generated with its own fine-tuned adapter (and soft prompts where it has a "
            "personalizer); the rest used the base generator.",
            "",
            "| Method | steps x batch | window | train examples | target tokens (train / validation) | training time "
            "| validation loss (first -> last) | generator |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for name, model in evaluation.models.items():
            first, last = model.initial_validation_loss, model.final_validation_loss
            losses = f"{first:.3f} -> {last:.3f}" if first is not None and last is not None else "n/a"
            window = f"{model.window} (+{model.soft_prompt_length} virtual)"
            targets = (
                f"{model.target_tokens.train:,} / {model.target_tokens.validation:,}" if model.target_tokens else "n/a"
            )
            lines.append(
                f"| {name} | {model.steps} x {model.batch_size} | {window} | {model.train_examples} | {targets} "
                f"| {model.seconds / 60:.1f} min | {losses} | `{evaluation.generators.get(name, '')}` |"
            )
    lines += ["", "## Run", ""]
    for name in evaluation.methods:
        preds = evaluation.predictions[name]
        notes = Counter(n for p in preds for n in p.notes)
        cut = sum(len(p.truncations) for p in preds)
        extra = "; ".join(f"{n}: {c}" for n, c in notes.most_common()) or "no fallbacks"
        dropped = dropped_counts(evaluation, name)
        if dropped:
            extra += "; evidence cutoff: " + "; ".join(f"{a}: {c}" for a, c in sorted(dropped.items()))
        cached = sum(p.cached for p in preds)
        read = Counter(p.read_from for p in preds if p.read_from)
        if read:
            extra += "; ratings read from " + ", ".join(f"{source}: {c}" for source, c in read.most_common())
        lines.append(
            f"- `{name}`: {evaluation.seconds[name]:.1f} s ({cached} of {len(preds)} answers from the store's "
            f"cache), {sum(p.completion_tokens for p in preds)} tokens generated, {cut} truncated components; "
            f"{extra}."
        )
    if "bertscore" in metrics:
        config = evaluation.metric_configs["bertscore"]
        lines += ["", BERTSCORE_NOTE.format(model=config["model"], layer=config["layer"])]
    lines += ["", "Metric configurations are in `results.json` (`metric_configs`)."]
    return "\n".join(lines) + "\n"


def _plot_label(evaluation: Evaluation, name: str) -> str:
    """A bar's label; in a mixed run it names the row's generator too."""
    if not evaluation.mixed or evaluation.families.get(name) is None:
        return name
    return f"{name}\n[{evaluation.generators.get(name, '')[:28]}]"


def plot_metrics(evaluation: Evaluation, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    metrics = evaluation.metrics
    fig, axes = plt.subplots(1, len(metrics), figsize=(3.2 * len(metrics), 3.6), squeeze=False)
    colours = {"baseline": "#8c8c8c", "ours": "#1f77b4", "reference": "#e6a23c"}
    for ax, metric in zip(axes[0], metrics):
        estimates = [evaluation.scores[n][metric] for n in evaluation.methods]
        means = [e.mean for e in estimates]
        errors = [[e.mean - e.low for e in estimates], [e.high - e.mean for e in estimates]]
        ax.bar(
            range(len(means)),
            means,
            yerr=errors,
            capsize=3,
            color=[colours[evaluation.roles[n]] for n in evaluation.methods],
        )
        ax.set_xticks(
            range(len(means)),
            [_plot_label(evaluation, n) for n in evaluation.methods],
            rotation=60,
            ha="right",
            fontsize=8,
        )
        ax.set_title(LABELS.get(metric, metric))
    generators = sorted({g for g in evaluation.generators.values() if g and g != NO_GENERATOR})
    fig.suptitle(
        f"{evaluation.split}: {len(evaluation.examples)} examples (grey baselines, blue CoPersona, "
        f"orange no-LLM references)\ngenerator: {', '.join(generators) or 'none'}"
        + (" (MIXED)" if evaluation.mixed else ""),
        fontsize=8,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write_evaluation(evaluation: Evaluation, out: Path, title: str = "Evaluation") -> list[Path]:
    """Write every output of one evaluation into ``out``; returns the files written."""
    out.mkdir(parents=True, exist_ok=True)
    written = []
    path = out / "results.json"
    path.write_text(json.dumps(results_dict(evaluation), indent=2))
    written.append(path)
    path = out / "results.csv"
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["method", "role", "generator", "metric", "mean", "low", "high", "n"])
        for name in evaluation.methods:
            row = [name, evaluation.roles[name], evaluation.generators.get(name, "")]
            for metric, e in evaluation.scores[name].items():
                writer.writerow([*row, metric, e.mean, e.low, e.high, e.n])
            for criterion, e in evaluation.judge.get(name, {}).items():
                writer.writerow([*row, f"judge_{criterion}", e.mean, e.low, e.high, e.n])
    written.append(path)
    path = out / "predictions.jsonl"
    with path.open("w") as handle:
        for name in evaluation.methods:
            for prediction in evaluation.predictions[name]:
                handle.write(json.dumps(prediction.to_dict()) + "\n")
    written.append(path)
    path = out / "report.md"
    path.write_text(markdown(evaluation, title))
    written.append(path)
    path = out / "metrics.png"
    plot_metrics(evaluation, path)
    written.append(path)
    return written
