"""Self-history retrieval H_u(x'): which of the user's own past reviews go into the prompt.

Three retrievers behind one interface (Table 5's ablation): BM25 over the user's profile (the
paper's default, bm25s), dense retrieval with the embedder, and plain recency. Each ranks the
profile of one example (everything the user wrote before the target) for that example's query and
returns the best ``k``, best first; ties go to the more recent review.
"""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from collections import OrderedDict
from collections.abc import Callable, Iterable
from typing import ClassVar

import bm25s
import numpy as np

from copersona.backends.embed import Embedder
from copersona.data.records import Interaction

# bm25s sets its own logger to DEBUG, so every index it builds would print a line to any
# configured handler (one per user in an evaluation); its warnings still come through.
logging.getLogger("bm25s").setLevel(logging.WARNING)

# Indexes kept per (user, profile length): an evaluation revisits each profile once per method.
_INDEX_CACHE_SIZE = 4096


def query_text(target: Interaction) -> str:
    """x' (App. A): the target item's title and description, the review title and the rating."""
    rating = f"Rating: {target.rating:g}/5" if target.rating is not None else ""
    parts = (target.item_title, target.item_description, target.review_title, rating)
    return "\n".join(p for p in parts if p)


def document_text(interaction: Interaction) -> str:
    """What a past review is matched on: its item's title, the review title and the text."""
    return " ".join(p for p in (interaction.item_title, interaction.review_title, interaction.text) if p)


def _ranked(scores: np.ndarray, k: int) -> list[int]:
    """Indices of the ``k`` best scores, best first; among equal scores the later (more recent) one."""
    order = sorted(range(len(scores)), key=lambda i: (-float(scores[i]), -i))
    return order[:k]


class HistoryRetriever(ABC):
    """Ranks a user's profile for a query."""

    name: ClassVar[str]

    @abstractmethod
    def scores(self, profile: list[Interaction], query: Interaction) -> np.ndarray:
        """One relevance score per profile interaction (higher is better)."""

    def retrieve(self, profile: list[Interaction], query: Interaction, k: int) -> list[Interaction]:
        """The ``k`` most relevant profile interactions, best first."""
        if not profile or k <= 0:
            return []
        return [profile[i] for i in _ranked(self.scores(profile, query), k)]

    def warm(self, profiles: Iterable[list[Interaction]]) -> None:  # noqa: B027 - optional offline hook
        """Precompute what retrieval over these profiles needs (offline), so a request only scores."""


class RecencyRetriever(HistoryRetriever):
    """The most recent reviews: the heuristic that did best on Books in the paper's Table 5."""

    name = "recency"

    def scores(self, profile: list[Interaction], query: Interaction) -> np.ndarray:
        return np.arange(len(profile), dtype=np.float64)


class BM25Retriever(HistoryRetriever):
    """BM25 (bm25s, Lucene variant) over one profile at a time, English stop words, Snowball stems.

    Term statistics come from the profile itself, as in per-user retrieval (Qiu et al.): no other
    user's text and no held-out review enters a user's index. Indexes are cached per profile.
    """

    name = "bm25"

    def __init__(self) -> None:
        import Stemmer

        self._stemmer = Stemmer.Stemmer("english")
        self._indexes: OrderedDict[tuple, bm25s.BM25] = OrderedDict()

    def _tokens(self, texts: list[str]) -> list[list[str]]:
        return bm25s.tokenize(texts, stopwords="en", stemmer=self._stemmer, return_ids=False, show_progress=False)

    def _index(self, profile: list[Interaction]) -> bm25s.BM25:
        # Every item: a cutoff may leave out a review in the middle of a history (the target item's).
        key = tuple((i.user_id, i.item_id) for i in profile)  # pooled reviews of several users too
        index = self._indexes.get(key)
        if index is None:
            index = bm25s.BM25()
            # bm25s cannot index an empty corpus vocabulary; a token no text contains keeps it valid.
            index.index(
                [tokens or ["\x00"] for tokens in self._tokens([document_text(i) for i in profile])],
                show_progress=False,
            )
            self._indexes[key] = index
            if len(self._indexes) > _INDEX_CACHE_SIZE:
                self._indexes.popitem(last=False)
        else:
            self._indexes.move_to_end(key)
        return index

    def warm(self, profiles: Iterable[list[Interaction]]) -> None:
        for profile in profiles:
            if profile:
                self._index(profile)

    def scores(self, profile: list[Interaction], query: Interaction) -> np.ndarray:
        terms = [t for t in self._tokens([query_text(query)])[0] if t]
        if not terms:
            return np.zeros(len(profile))
        return np.asarray(self._index(profile).get_scores(terms), dtype=np.float64)


class DenseRetriever(HistoryRetriever):
    """Cosine similarity of embedder vectors (the paper's dense ablation uses Contriever)."""

    name = "dense"

    def __init__(self, embedder: Embedder):
        self.embedder = embedder
        self._vectors: dict[str, np.ndarray] = {}

    def _embed(self, texts: list[str]) -> np.ndarray:
        missing = list(dict.fromkeys(t for t in texts if t not in self._vectors))
        if missing:
            for text, vector in zip(missing, self.embedder.encode(missing)):
                self._vectors[text] = vector
        return np.vstack([self._vectors[t] for t in texts])

    def warm(self, profiles: Iterable[list[Interaction]]) -> None:
        self._embed([document_text(i) for profile in profiles for i in profile])

    def scores(self, profile: list[Interaction], query: Interaction) -> np.ndarray:
        vectors = self._embed([document_text(i) for i in profile])
        return vectors @ self.embedder.encode([query_text(query)])[0]


RETRIEVERS = ("bm25", "dense", "recency")


def load_retriever(name: str, embedder: Callable[[], Embedder]) -> HistoryRetriever:
    """A retriever by name; ``embedder`` is called only for the dense one."""
    if name == "bm25":
        return BM25Retriever()
    if name == "dense":
        return DenseRetriever(embedder())
    if name == "recency":
        return RecencyRetriever()
    raise ValueError(f"unknown retriever {name!r}: use one of {', '.join(RETRIEVERS)}")
