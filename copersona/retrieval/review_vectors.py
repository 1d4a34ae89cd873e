"""Embeddings of every persona profile review, computed once per data and embedder and kept in the store.

Methods that compare other users' reviews with a user or an item (CFRAG's user encoder, PAT's topic
trajectory) share them; a review the store does not hold (a held-out validation review before a
test target, a served review) is embedded once on first use.
"""

from __future__ import annotations

import hashlib
import io
import json
from functools import cached_property

import numpy as np

from copersona.backends.embed import Embedder
from copersona.data.records import Interaction
from copersona.store import Store

# Their row in the store's method_models table.
STORED_AS = "review-vectors"

ReviewKey = tuple[str, str, int]  # user, item, timestamp


def digest(payload: object) -> str:
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:24]


def review_key(review: Interaction) -> ReviewKey:
    return (review.user_id, review.item_id, review.timestamp)


class ReviewVectors:
    """``reviews`` (by user id, then time) and ``matrix`` (unit rows, aligned); ``of`` for any reviews."""

    def __init__(self, store: Store, profiles: dict[str, list[Interaction]], embedder: Embedder):
        self.store = store
        self.embedder = embedder
        self.reviews = [r for user in sorted(profiles) for r in profiles[user]]

    @cached_property
    def key(self) -> str:
        """Identifies the data and embedder the vectors come from (a trained model built on them names it)."""
        return digest([self.embedder.model_id, [review_key(r) for r in self.reviews]])

    @cached_property
    def matrix(self) -> np.ndarray:
        payload = self.store.method_model(STORED_AS, self.key)
        if payload is not None:
            return np.load(io.BytesIO(payload))
        texts = [r.text for r in self.reviews]
        matrix = self.embedder.encode(texts) if texts else np.zeros((0, self.embedder.dim), dtype=np.float32)
        matrix = np.asarray(matrix, dtype=np.float32)
        if not self.store.read_only:
            buffer = io.BytesIO()
            np.save(buffer, matrix)
            self.store.write_method_model(STORED_AS, self.key, buffer.getvalue())
        return matrix

    @cached_property
    def _by_key(self) -> dict[ReviewKey, np.ndarray]:
        return {review_key(r): v for r, v in zip(self.reviews, self.matrix)}

    def embed(self, reviews: list[Interaction]) -> None:
        """Embed, in one batch, the reviews not known yet."""
        known = self._by_key
        missing = {review_key(r): r.text for r in reviews if review_key(r) not in known}
        if missing:
            known.update(zip(missing, self.embedder.encode(list(missing.values()))))

    def of(self, reviews: list[Interaction]) -> np.ndarray:
        """(len(reviews), dim) unit rows."""
        self.embed(reviews)
        if not reviews:
            return np.zeros((0, self.embedder.dim), dtype=np.float32)
        return np.vstack([self._by_key[review_key(r)] for r in reviews])
