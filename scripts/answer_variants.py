"""The validation table behind CoPersona's selected answer (README, "Better than copying").

Every row is computed from one evaluation run with the paper's answer, so the generator is called
once per example for all of them::

    copersona evaluate STORE --split validation --limit 100 --methods copersona-np \\
        --config generated.toml --out RUN     # generated.toml: [harness.methods] copersona_answer = "generated"
    python3 scripts/answer_variants.py STORE RUN --split validation

A fine-tuned run (``--finetuned --methods copersona``, the same setting) is read with ``--method copersona``;
``--samples RUN2 RUN3`` adds best-of-N rows over runs made the same way at other sampling seeds (``--seed``).

Rows: the generated answer as written; the same opened by the request's review title; the title and
the user's most relevant past review (no LLM), and the same among the past reviews whose rating is
nearest the requested one; the selected answer at each margin; best-of-k over the
k most relevant past reviews (persona-scored among themselves, then against the generated answer at
the default margin); the default with a symmetric scorer (the prompt's few-shot reviews left out of
the persona sample); the default's answer cut, at a sentence boundary, to near a multiple of the
user's median past-review length; copy-self and copy-peer from the same run. Each row's R-1, METEOR
and BLEU, and its difference from copy-self and copy-peer with paired 95% bootstrap intervals. Only
the user's history (before the target) and the request are read to build an answer; the reference
is read only to score it, except by the last row, an upper bound and not a method: per request, the
one of the two candidates (title + retrieved review, title + generated) closer to the reference.

Sentiment drift: a rating probe (ridge regression on the store's embeddings of the reviews of users
outside the evaluated ones, all splits) reads each answer's rating from its text; the table gives
the mean absolute difference from the requested rating, with the references' own as the floor.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
from collections.abc import Callable
from pathlib import Path

import numpy as np
from sklearn.linear_model import RidgeCV

from copersona.config import MethodsConfig, RetrievalConfig
from copersona.data.records import Example
from copersona.eval.metrics import load_metric
from copersona.eval.stats import paired_difference, resample_indices
from copersona.inference.loading import store_embedder
from copersona.methods.base import example_key
from copersona.methods.selection import PersonaScorer, opened
from copersona.retrieval.history import BM25Retriever
from copersona.store import Store

MARGINS = (0.0, 0.02, 0.05, 0.1, 0.2)
DEFAULT_MARGIN = MethodsConfig().copersona_select_margin
BEST_OF = (2, 3, 5)
SHOWN = RetrievalConfig().history_k  # past reviews the CoPersona-NP prompt shows as few-shot turns
LENGTH_MULTIPLES = (1.0, 1.5, 2.0)
METRICS = ("rouge1", "meteor", "bleu")
REFERENCES = ("copy-self", "copy-peer")
UPPER_BOUND = "upper bound, reads the reference: of the two candidates the one with the higher R-1 against it"
SENTENCE_END = re.compile(r"(?<=[.!?])\s+")

retriever = BM25Retriever()
scorer = PersonaScorer()


def selected(example: Example, generated: str, margin: float, k: int = 1, shown: int = 1) -> str:
    """The selected answer, with the k most relevant past reviews as retrieved candidates; the persona
    sample leaves all k out (at k = 1 this is the method's own rule with its default BM25 retriever).

    ``shown`` > 1 makes the scorer symmetric: the sample also leaves out the ``shown`` most relevant
    reviews (the prompt's few-shot turns, which the generated candidate was written from), so neither
    candidate is scored against reviews its writer saw; where no other review remains, the sample is
    the method's."""
    title = example.target.review_title
    ranked = retriever.retrieve(example.profile, example.query(), max(k, shown))
    top = ranked[:k]
    answer = opened(title, generated)
    if not top:
        return answer
    persona = [other.text for other in example.profile if other not in ranked] or [
        other.text for other in example.profile if other not in top
    ]
    retrieved = scorer.choose({f"r{i}": opened(title, r.text) for i, r in enumerate(top)}, persona)
    if retrieved is None:  # every past review is a candidate: the method's rule with the top one
        return selected(example, generated, margin) if k > 1 else answer
    final = scorer.choose({"retrieved": retrieved.text, "generated": answer}, persona, margin)
    return final.text


def best_sampled(example: Example, samples: list[str]) -> str:
    """Best-of-N: of N sampled generations, the one the persona scorer puts closest to the user's past
    reviews other than the retrieved one (the first sample on a tie or with no such review)."""
    top = retriever.retrieve(example.profile, example.query(), 1)
    persona = [other.text for other in example.profile if other not in top]
    title = example.target.review_title
    best = scorer.choose({str(i): opened(title, text) for i, text in enumerate(samples)}, persona)
    return samples[int(best.chosen)] if best is not None else samples[0]


def cut_near(text: str, words: int) -> str:
    """``text`` cut after the sentence that ends nearest to ``words`` words (at least one sentence)."""
    if len(text.split()) <= words:
        return text
    kept: list[str] = []
    count = 0
    for sentence in SENTENCE_END.split(text):
        n = len(sentence.split())
        if kept and abs(count + n - words) > abs(count - words):
            break
        kept.append(sentence)
        count += n
    return " ".join(kept)


def median_words(example: Example) -> float | None:
    return statistics.median(len(r.text.split()) for r in example.profile) if example.profile else None


def rating_probe(store: Store, evaluated: set[str]) -> Callable[[list[str]], np.ndarray]:
    """Ratings read from texts: ridge regression on the embeddings of every stored review of the users
    not evaluated (so no answer, reference or copied review was seen in fitting)."""
    embedder = store_embedder(store)()
    reviews = [
        r
        for user, profile in store.profiles().items()
        if user not in evaluated
        for r in profile
        if r.rating is not None and r.text
    ]
    model = RidgeCV(alphas=np.logspace(-2, 2, 9)).fit(
        embedder.encode([r.text for r in reviews]), [r.rating for r in reviews]
    )
    return lambda texts: model.predict(embedder.encode(texts))


def value(name: str, number: float, sign: str = "") -> str:
    """A metric's value as the tables print it (BLEU on 0-100, two decimals; the others four)."""
    return f"{number:{sign}.2f}" if name == "bleu" else f"{number:{sign}.4f}"


def read_predictions(run: Path) -> dict[str, dict[str, dict]]:
    """A run's predictions by method, then by example."""
    predictions: dict[str, dict[str, dict]] = {}
    for line in (run / "predictions.jsonl").read_text().splitlines():
        row = json.loads(line)
        predictions.setdefault(row["method"], {})[row["example"]] = row
    return predictions


def print_tables(
    title: str, rows: dict[str, list[str]], references: list[str], store: Store, examples: list[Example]
) -> None:
    """Each row's R-1, METEOR, BLEU, median length over the reference's and sentiment drift, then its
    paired 95% bootstrap difference from each reference row (``REFERENCES``, which ``rows`` must hold)."""
    metrics = {name: load_metric(name) for name in METRICS}
    stats = {(r, n): m.statistics(texts, references) for r, texts in rows.items() for n, m in metrics.items()}
    indices = resample_indices(len(examples), resamples=1000, seed=0)
    probe = rating_probe(store, {e.user_id for e in examples})
    requested = np.array([e.target.rating for e in examples], dtype=float)

    def drift(texts: list[str]) -> float:
        return float(np.nanmean(np.abs(probe(texts) - requested)))

    print(f"{title}: {len(examples)} examples")
    print(f"sentiment drift (|probe's rating - requested rating|, mean) of the references: {drift(references):.2f}")
    print("| answer | R-1 | METEOR | BLEU | median words / reference's | sentiment drift |\n|---|---|---|---|---|---|")
    for r, texts in rows.items():
        ratio = statistics.median(len(t.split()) / max(1, len(ref.split())) for t, ref in zip(texts, references))
        cells = [value(n, m.aggregate(stats[(r, n)])) for n, m in metrics.items()]
        print(f"| {r} | {' | '.join(cells)} | {ratio:.2f} | {drift(texts):.2f} |")
    for reference in REFERENCES:
        print(f"\nminus {reference}, paired 95% bootstrap:\n| answer | R-1 | METEOR | BLEU |\n|---|---|---|---|")
        for r in rows:
            if r in REFERENCES:
                continue
            cells = []
            for n, m in metrics.items():
                d = paired_difference(stats[(r, n)], stats[(reference, n)], m.aggregate, indices).difference
                cells.append(f"{value(n, d.mean, '+')} [{value(n, d.low, '+')}, {value(n, d.high, '+')}]")
            print(f"| {r} | {' | '.join(cells)} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("store")
    parser.add_argument("run", type=Path, help="an evaluate --out folder made with copersona_answer = 'generated'")
    parser.add_argument("--split", default="validation")
    parser.add_argument(
        "--method", default="copersona-np", help="the run's selecting method: copersona-np, or copersona (--finetuned)"
    )
    parser.add_argument(
        "--samples",
        type=Path,
        nargs="*",
        default=[],
        help="runs like RUN at other sampling seeds (--seed): best-of-N rows over RUN's and their generations",
    )
    args = parser.parse_args()

    predictions = read_predictions(args.run)
    generated = predictions[args.method]
    keys = sorted(generated)
    store = Store(args.store, read_only=True)
    examples = {example_key(e): e for e in store.examples(args.split)}
    references = [generated[key]["reference"] for key in keys]

    def row(answer: Callable[[Example, str], str]) -> list[str]:
        return [answer(examples[key], generated[key]["text"]) for key in keys]

    def retrieved(e: Example, _: str) -> str:
        best = retriever.retrieve(e.profile, e.query(), 1)
        return opened(e.target.review_title, best[0].text if best else "")

    def nearest_rating(e: Example, _: str) -> str:
        """The most relevant of the past reviews whose rating is nearest the requested one."""
        ranked = retriever.retrieve(e.profile, e.query(), len(e.profile))
        if e.target.rating is not None:
            ranked.sort(key=lambda r: abs(r.rating - e.target.rating) if r.rating is not None else float("inf"))
        return opened(e.target.review_title, ranked[0].text if ranked else "")

    title_generated = row(lambda e, g: opened(e.target.review_title, g))
    title_retrieved = row(retrieved)
    rows = {
        "generated (the paper's answer)": row(lambda e, g: g),
        "title + generated": title_generated,
        "title + retrieved review (no LLM)": title_retrieved,
        "title + retrieved review nearest the requested rating (no LLM)": row(nearest_rating),
    }
    rows |= {f"select, margin {m}": row(lambda e, g, m=m: selected(e, g, m)) for m in MARGINS}
    rows |= {
        f"best of {k} retrieved + generated, margin {DEFAULT_MARGIN}": row(
            lambda e, g, k=k: selected(e, g, DEFAULT_MARGIN, k)
        )
        for k in BEST_OF
    }
    rows[f"select, margin {DEFAULT_MARGIN}, the prompt's {SHOWN} shown reviews left out of the persona sample"] = row(
        lambda e, g: selected(e, g, DEFAULT_MARGIN, shown=SHOWN)
    )
    samples = [generated] + [read_predictions(run)[args.method] for run in args.samples]
    for n in range(2, len(samples) + 1):
        rows[f"best of {n} sampled generations, then select at margin {DEFAULT_MARGIN}"] = row(
            lambda e, _, n=n: selected(
                e, best_sampled(e, [s[example_key(e)]["text"] for s in samples[:n]]), DEFAULT_MARGIN
            )
        )
    default = rows[f"select, margin {DEFAULT_MARGIN}"]
    medians = [median_words(examples[key]) for key in keys]
    for multiple in LENGTH_MULTIPLES:
        rows[f"select, cut near {multiple}x the user's median length"] = [
            cut_near(text, round(multiple * median)) if median else text for text, median in zip(default, medians)
        ]
    rows[UPPER_BOUND] = [
        max(pair, key=lambda text, ref=ref: scorer.score(text, [ref]))
        for ref, pair in zip(references, zip(title_retrieved, title_generated))
    ]
    rows |= {name: [predictions[name][key]["text"] for key in keys] for name in REFERENCES}

    print_tables(f"{args.store}, {args.split}", rows, references, store, [examples[key] for key in keys])


if __name__ == "__main__":
    main()
