"""``copersona rec evaluate``: every (generator, reranker) row on the test users, with intervals.

For each first-stage generator (BPR-MF, LightGCN) the test users' top-k candidates are ranked by
the generator itself (reranker ``none``, the paper's CF rows) and by each reranker; the target
keeps whatever rank the generator gave it when it is outside the candidates (a miss at every
cutoff). Settings a reranker chooses (the decay gamma) are chosen on the validation users. Each
row reports HR, MRR and NDCG at 5/10/20 with 95% bootstrap intervals, a paired bootstrap test
against its generator's own order, and the same metrics for warm/cold users and head/tail items
(top and bottom 20% by training interactions, Table 5).
"""

from __future__ import annotations

import csv
import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from copersona.eval.stats import bootstrap, paired_difference, resample_indices
from copersona.progress import Progress
from copersona.rec.metrics import CUTOFFS, per_query_metrics, rank_of
from copersona.rec.rerank import GeneratorOrder, Reranker
from copersona.store.rec import RecStore

METRICS = tuple(f"{name}@{k}" for k in CUTOFFS for name in ("hr", "mrr", "ndcg"))
#: The share of users (items) at each end that forms the warm/cold (head/tail) segments (Table 5).
SEGMENT_SHARE = 0.2


@dataclass
class Row:
    """One (generator, reranker) on the test users: each user's target rank, in the users' order."""

    generator: str
    reranker: str
    encoder: str
    users: list[str]
    ranks: list[int | None]
    chosen: dict = field(default_factory=dict)

    def per_query(self) -> dict[str, np.ndarray]:
        return per_query_metrics(self.ranks)


def segments(store: RecStore, users: list[str], targets: dict[str, str]) -> dict[str, np.ndarray]:
    """Boolean masks over ``users``: warm/cold users by training interactions, head/tail target items
    by the item's training interactions (top and bottom 20%, ties kept together)."""
    per_user: Counter = Counter()
    per_item: Counter = Counter()
    for interaction, _ in store.rec_interactions("train"):
        per_user[interaction.user_id] += 1
        per_item[interaction.item_id] += 1
    user_counts = np.array([per_user[u] for u in users])
    item_counts = np.array([per_item[targets[u]] for u in users])
    low_u, high_u = np.quantile(user_counts, [SEGMENT_SHARE, 1 - SEGMENT_SHARE])
    low_i, high_i = np.quantile(item_counts, [SEGMENT_SHARE, 1 - SEGMENT_SHARE])
    return {
        "warm users": user_counts >= high_u,
        "cold users": user_counts <= low_u,
        "head items": item_counts >= high_i,
        "tail items": item_counts <= low_i,
    }


def rank_rows(
    store: RecStore, rerankers: list[Reranker], progress: Progress | None = None, split: str = "test"
) -> list[Row]:
    """Every generator x (its own order + each reranker) on ``split``."""
    progress = progress or Progress()
    rows = []
    for generator in store.generators():
        candidates = store.candidates(generator, split)  # type: ignore[arg-type]
        users = [c.user_id for c in candidates]
        with progress.stage(f"rerank {generator} candidates", total=len(rerankers) + 1) as advance:
            for reranker in [GeneratorOrder(), *rerankers]:
                ranks = [rank_of([r.item_id for r in reranker.rerank(c)], c.target) for c in candidates]
                rows.append(Row(generator, reranker.name, reranker.encoder_id, users, ranks))
                advance(1)
    return rows


def evaluate(
    store: RecStore,
    rerankers: list[Reranker],
    out: Path,
    *,
    resamples: int = 1000,
    seed: int = 0,
    progress: Progress | None = None,
) -> dict:
    """Choose each reranker's settings on validation, rank the test users, write the results to ``out``."""
    progress = progress or Progress()
    validation = [c for g in store.generators() for c in store.candidates(g, "validation")]
    chosen = {}
    for reranker in rerankers:
        with progress.stage(f"choose {reranker.name} settings on validation", total=1) as advance:
            chosen[reranker.name] = reranker.prepare(validation)
            advance(1)
    rows = rank_rows(store, rerankers, progress)
    for row in rows:
        row.chosen = chosen.get(row.reranker, {})
    results = summarize(store, rows, resamples=resamples, seed=seed)
    write_results(results, rows, out)
    return results


def summarize(store: RecStore, rows: list[Row], *, resamples: int, seed: int) -> dict:
    out_rows = []
    by_generator = {r.generator: r for r in rows if r.reranker == "none"}
    # A generator's rows share its test users: segments and its own order's metrics are computed once.
    masks_of = {
        g: segments(store, r.users, {c.user_id: c.target for c in store.candidates(g, "test")})
        for g, r in by_generator.items()
    }
    base_of = {g: r.per_query() for g, r in by_generator.items()}
    for row in rows:
        masks = masks_of[row.generator]
        indices = resample_indices(len(row.users), resamples=resamples, seed=seed)
        values = row.per_query()
        base = base_of[row.generator]
        entry = {
            "generator": row.generator,
            "reranker": row.reranker,
            "encoder": row.encoder,
            "users": len(row.users),
            "chosen": row.chosen,
            "metrics": {m: float(values[m].mean()) for m in METRICS},
            "intervals": {},
            "vs_generator": {},
            "segments": {},
        }
        for m in METRICS:
            estimate = bootstrap(values[m], np.mean, indices)
            entry["intervals"][m] = [estimate.low, estimate.high]
            if row.reranker != "none":
                entry["vs_generator"][m] = paired_difference(values[m], base[m], np.mean, indices).to_dict()
        for name, mask in masks.items():
            entry["segments"][name] = {"users": int(mask.sum())} | {
                m: float(values[m][mask].mean()) if mask.any() else float("nan") for m in METRICS
            }
        out_rows.append(entry)
    return {
        "task": "recommendation",
        "split": "test",
        "users": len(rows[0].users) if rows else 0,
        "candidates": store.get_meta("rec_config", {}).get("candidates"),
        "reasoning": store.get_meta("rec_config", {}).get("llm") or "extractive",
        "resamples": resamples,
        "rows": out_rows,
    }


def _cell(row: dict, metric: str) -> str:
    low, high = row["intervals"][metric]
    mark = ""
    test = row["vs_generator"].get(metric)
    if test and test["p_value"] < 0.05:
        mark = "*" if test["mean"] > 0 else "(-)*"
    return f"{row['metrics'][metric]:.4f}{mark} ({low:.3f}-{high:.3f})"


def markdown(results: dict) -> str:
    lines = [
        "# Recommendation: reranking first-stage candidates",
        "",
        f"{results['users']} test users, top-{results['candidates']} candidates per generator; "
        f"offline reasoning: {results['reasoning']}. Cells: mean (95% bootstrap interval, "
        f"{results['resamples']} resamples); * p < 0.05 against the generator's own order (paired bootstrap).",
        "",
        "| generator | reranker | encoder | " + " | ".join(METRICS) + " |",
        "|---|---|---|" + "---|" * len(METRICS),
    ]
    for row in results["rows"]:
        cells = " | ".join(_cell(row, m) for m in METRICS)
        lines.append(f"| {row['generator']} | {row['reranker']} | {row['encoder'] or '-'} | {cells} |")
    lines += ["", "## Segments (Table 5): NDCG@10 and HR@10", ""]
    names = list(results["rows"][0]["segments"]) if results["rows"] else []
    lines.append("| generator | reranker | " + " | ".join(f"{n} (n)" for n in names) + " |")
    lines.append("|---|---|" + "---|" * len(names))
    for row in results["rows"]:
        cells = [
            f"{row['segments'][n]['ndcg@10']:.4f} / {row['segments'][n]['hr@10']:.4f} ({row['segments'][n]['users']})"
            for n in names
        ]
        lines.append(f"| {row['generator']} | {row['reranker']} | " + " | ".join(cells) + " |")
    chosen = {r["reranker"]: r["chosen"] for r in results["rows"] if r["chosen"]}
    if chosen:
        lines += ["", "## Settings chosen on validation", ""]
        lines += [f"- {name}: {json.dumps(values)}" for name, values in chosen.items()]
    return "\n".join(lines) + "\n"


def plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    shown = ("hr@10", "mrr@10", "ndcg@10")
    generators = list(dict.fromkeys(r["generator"] for r in results["rows"]))
    fig, axes = plt.subplots(1, len(shown), figsize=(4.2 * len(shown), 3.8), squeeze=False)
    for ax, metric in zip(axes[0], shown):
        labels, means, errors, colours = [], [], [[], []], []
        for row in results["rows"]:
            low, high = row["intervals"][metric]
            mean = row["metrics"][metric]
            labels.append(f"{row['generator']}\n{row['reranker']}")
            means.append(mean)
            errors[0].append(mean - low)
            errors[1].append(high - mean)
            colours.append("#8c8c8c" if row["reranker"] == "none" else f"C{generators.index(row['generator'])}")
        ax.bar(range(len(means)), means, yerr=errors, capsize=3, color=colours)
        ax.set_xticks(range(len(means)), labels, rotation=70, ha="right", fontsize=7)
        ax.set_title(metric.upper())
    fig.suptitle(
        f"{results['users']} test users, top-{results['candidates']} candidates (grey: generator's own order)",
        fontsize=9,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write_results(results: dict, rows: list[Row], out: Path) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    written = [out / "results.json", out / "results.csv", out / "ranks.jsonl", out / "report.md", out / "metrics.png"]
    written[0].write_text(json.dumps(results, indent=2))
    with written[1].open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["generator", "reranker", "encoder", "metric", "mean", "low", "high", "n"])
        for row in results["rows"]:
            for m in METRICS:
                low, high = row["intervals"][m]
                writer.writerow(
                    [row["generator"], row["reranker"], row["encoder"], m, row["metrics"][m], low, high, row["users"]]
                )
    with written[2].open("w") as handle:
        for row in rows:
            for user, rank in zip(row.users, row.ranks):
                handle.write(
                    json.dumps({"generator": row.generator, "reranker": row.reranker, "user_id": user, "rank": rank})
                    + "\n"
                )
    written[3].write_text(markdown(results))
    plot(results, written[4])
    return written
