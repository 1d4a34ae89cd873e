"""CoPersona's selection margin chosen on validation pooled over sampling seeds and data sets.

One run's corpus BLEU over 100 answers moves with single generated answers, so the margin
(``methods.copersona_select_margin``) is chosen on the mean over several runs made with the paper's
answer at different sampling seeds, each data set weighted equally::

    copersona evaluate STORE --split validation --limit 100 --methods copersona-np \\
        --config generated.toml --seed S --out RUN_S   # [harness.methods] copersona_answer = "generated"
    python3 scripts/choose_margin.py STORE_A RUN_A0 RUN_A1 RUN_A2 --and STORE_B RUN_B0 RUN_B1 RUN_B2

The rule: the margin whose pooled mean is best on the most of R-1, METEOR and BLEU; on a tie in
that count, the higher pooled R-1. Every run's rows are printed too. At a margin of 1 the generated
answer is taken only where the user has no other past review to score against.
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path

from answer_variants import MARGINS, METRICS, read_predictions, selected, value

from copersona.eval.metrics import load_metric
from copersona.methods.base import example_key
from copersona.store import Store

GRID = (*MARGINS, 1.0)  # answer_variants' margins, and 1: no generated answer where a persona sample exists


def margin_scores(store_path: str, runs: list[Path], split: str, method: str) -> list[dict[float, dict[str, float]]]:
    """For each run: margin -> metric -> corpus score of the selected answers."""
    store = Store(store_path, read_only=True)
    examples = {example_key(e): e for e in store.examples(split)}
    metrics = {name: load_metric(name) for name in METRICS}
    scores = []
    for run in runs:
        generated = read_predictions(run)[method]
        keys = sorted(generated)
        references = [generated[key]["reference"] for key in keys]
        score = {}
        for margin in GRID:
            answers = [selected(examples[key], generated[key]["text"], margin) for key in keys]
            score[margin] = {n: m.aggregate(m.statistics(answers, references)) for n, m in metrics.items()}
        scores.append(score)
    return scores


def choose(pooled: dict[float, dict[str, float]]) -> float:
    """The margin best on the most metrics, then on R-1."""
    wins = {margin: 0 for margin in pooled}
    for name in METRICS:
        wins[max(pooled, key=lambda margin: pooled[margin][name])] += 1
    return max(pooled, key=lambda margin: (wins[margin], pooled[margin]["rouge1"]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("store")
    parser.add_argument("runs", type=Path, nargs="+", help="evaluate --out folders made with the paper's answer")
    parser.add_argument(
        "--and", dest="more", nargs="+", action="append", default=[], metavar="STORE RUN", help="another data set"
    )
    parser.add_argument("--split", default="validation")
    parser.add_argument("--method", default="copersona-np")
    args = parser.parse_args()

    data_sets = [(args.store, args.runs)] + [(more[0], [Path(run) for run in more[1:]]) for more in args.more]
    per_set = {}
    print("| data set | run | " + " | ".join(f"margin {m}" for m in GRID) + " |")
    print("|---" * (len(GRID) + 2) + "|")
    for store_path, runs in data_sets:
        scores = margin_scores(store_path, runs, args.split, args.method)
        for run, score in zip(runs, scores):
            cells = [" / ".join(value(n, score[m][n]) for n in METRICS) for m in GRID]
            print(f"| {store_path} | {run} | {' | '.join(cells)} |")
        per_set[store_path] = {m: {n: statistics.fmean(s[m][n] for s in scores) for n in METRICS} for m in GRID}
    pooled = {m: {n: statistics.fmean(per_set[d][m][n] for d in per_set) for n in METRICS} for m in GRID}
    print("\npooled (mean over runs, then over data sets): R-1 / METEOR / BLEU")
    for margin in GRID:
        print(f"| margin {margin} | {' / '.join(value(n, pooled[margin][n]) for n in METRICS)} |")
    print(f"\nchosen: margin {choose(pooled)}")


if __name__ == "__main__":
    main()
