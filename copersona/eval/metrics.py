"""Text-generation metrics of Sec. 4.1, offline and pinned, each with its configuration recorded.

Every metric turns (prediction, reference) pairs into per-example *statistics* and aggregates any
subset of rows into one score. For the averaged metrics the statistic is the score itself; for
corpus BLEU it is sacrebleu's n-gram counts, summed before the score is computed. The same
interface lets the bootstrap resample examples for every metric, corpus BLEU included.

ROUGE-1/ROUGE-L: rouge-score F-measure with the Porter stemmer. METEOR: NLTK with WordNet 3.0
(installed offline by ``scripts/install_wordnet.py``). BLEU: sacrebleu corpus BLEU, 13a
tokenization, on a 0-100 scale as in the papers. BERTScore: bert-score F1 on a local encoder; the
papers use led-base-16384, so BERTScore from another encoder is not comparable with their numbers.
"""

from __future__ import annotations

import functools
import importlib.metadata
from abc import ABC, abstractmethod
from typing import TYPE_CHECKING, ClassVar

import numpy as np

from copersona.config import EvaluationConfig

if TYPE_CHECKING:
    from copersona.inference import Prediction


def _version(package: str) -> str:
    return importlib.metadata.version(package)


class Metric(ABC):
    """A metric: per-example statistics, an aggregate over rows, and its configuration."""

    name: ClassVar[str]
    scale: ClassVar[str] = "0-1"
    higher_is_better: ClassVar[bool] = True

    @abstractmethod
    def statistics(self, predictions: list[str], references: list[str]) -> np.ndarray:
        """An (n, d) array of per-example statistics."""

    def rows(self, predictions: list[Prediction]) -> np.ndarray:
        """The statistics of a method's predictions: their texts against the references."""
        return self.statistics([p.text for p in predictions], [p.reference for p in predictions])

    def aggregate(self, rows: np.ndarray) -> float:
        """The score of a set of examples (default: the mean per-example score)."""
        return float(rows[:, 0].mean()) if len(rows) else float("nan")

    @abstractmethod
    def config(self) -> dict:
        """Everything that determines the numbers (library versions included)."""


class Rouge(Metric):
    def __init__(self, kind: str):
        from rouge_score import rouge_scorer

        self.name = kind  # type: ignore[misc]
        self._scorer = rouge_scorer.RougeScorer([kind], use_stemmer=True)

    def statistics(self, predictions: list[str], references: list[str]) -> np.ndarray:
        return np.array(
            [[self._scorer.score(ref, pred)[self.name].fmeasure] for pred, ref in zip(predictions, references)]
        ).reshape(-1, 1)

    def config(self) -> dict:
        return {"library": f"rouge-score {_version('rouge-score')}", "score": "F-measure", "use_stemmer": True}


class Meteor(Metric):
    name = "meteor"

    def __init__(self) -> None:
        from nltk.corpus import wordnet
        from nltk.tokenize import wordpunct_tokenize
        from nltk.translate.meteor_score import meteor_score

        try:
            wordnet.ensure_loaded()
        except LookupError as err:
            raise RuntimeError(
                "METEOR needs WordNet for NLTK: apt-get install wordnet-base wordnet-sense-index, then "
                "python scripts/install_wordnet.py (or drop meteor from evaluation.metrics)"
            ) from err
        self._score = meteor_score
        self._tokenize = wordpunct_tokenize

    def statistics(self, predictions: list[str], references: list[str]) -> np.ndarray:
        return np.array(
            [[self._score([self._tokenize(ref)], self._tokenize(pred))] for pred, ref in zip(predictions, references)]
        ).reshape(-1, 1)

    def config(self) -> dict:
        return {
            "library": f"nltk {_version('nltk')}",
            "tokenizer": "wordpunct_tokenize",
            "wordnet": "3.0 (Debian wordnet-base)",
            "parameters": {"alpha": 0.9, "beta": 3, "gamma": 0.5},
        }


class Bleu(Metric):
    name = "bleu"
    scale = "0-100"

    def __init__(self) -> None:
        from sacrebleu.metrics import BLEU

        self._bleu = BLEU()

    def statistics(self, predictions: list[str], references: list[str]) -> np.ndarray:
        if not predictions:
            return np.zeros((0, 10))
        # sacrebleu's own significance tests resample these per-sentence n-gram counts.
        return np.array(self._bleu._extract_corpus_statistics(predictions, [references]), dtype=np.int64)

    def aggregate(self, rows: np.ndarray) -> float:
        if not len(rows):
            return float("nan")
        return float(self._bleu._compute_score_from_stats(rows.sum(axis=0).tolist()).score)

    def config(self) -> dict:
        return {
            "library": f"sacrebleu {_version('sacrebleu')}",
            "signature": str(self._bleu.get_signature()),
            "level": "corpus",
        }


@functools.cache
def _bert_scorer(model: str, layer: int):
    """The encoder, loaded once per process: every method, ablation and evaluation reuses it."""
    import bert_score

    return bert_score.BERTScorer(model_type=model, num_layers=layer, batch_size=32)


class BertScore(Metric):
    name = "bertscore"

    def __init__(self, model: str, layer: int):
        from copersona.backends.embed import packaged_minilm_path

        self.model = packaged_minilm_path() if model == "minilm" else model
        self.model_name = model
        self.layer = layer

    def statistics(self, predictions: list[str], references: list[str]) -> np.ndarray:
        rows = np.zeros((len(predictions), 1))
        # An empty text scores 0, as bert-score itself decides; it is not sent to bert-score, whose
        # empty-string path calls a tokenizer method transformers 5 removed.
        scored = [i for i, (p, r) in enumerate(zip(predictions, references)) if p.strip() and r.strip()]
        if scored:
            _, _, f1 = _bert_scorer(self.model, self.layer).score(
                [predictions[i] for i in scored], [references[i] for i in scored]
            )
            rows[scored, 0] = f1.numpy()
        return rows

    def config(self) -> dict:
        return {
            "library": f"bert-score {_version('bert-score')}",
            "model": self.model_name,
            "layer": self.layer,
            "idf": False,
            "rescale_with_baseline": False,
            "score": "F1",
            "empty_text": 0.0,
            "comparable_with_papers": False,
        }


METRICS = ("rouge1", "rougeL", "meteor", "bleu", "bertscore")


def load_metric(name: str, config: EvaluationConfig | None = None) -> Metric:
    from copersona.eval.rating_metrics import RATING_METRICS

    if name in RATING_METRICS:
        return RATING_METRICS[name]()
    config = config or EvaluationConfig()
    if name in ("rouge1", "rougeL"):
        return Rouge(name)
    if name == "meteor":
        return Meteor()
    if name == "bleu":
        return Bleu()
    if name == "bertscore":
        return BertScore(config.bertscore_model, config.bertscore_layer)
    raise ValueError(f"unknown metric {name!r}: use one of {', '.join(METRICS + tuple(RATING_METRICS))}")
