"""User profiles and their embeddings (paper 003, Eq. 4, 6, 7), through a cached encoder.

A profile entry is one training interaction: the item's summary s_i and, when the user reviewed
it, their aspect tuple a_{u,i} (Eq. 6 embeds their concatenation). A user's profile is their L most
recent training entries, most recent first; the user embedding is their decayed mean
e_u = sum_l gamma^(l-1) e_{u,l} / sum_l gamma^(l-1) (Eq. 7), re-normalized so that sim is a cosine.
"""

from __future__ import annotations

from collections import defaultdict

import numpy as np

from copersona.backends.embed import Embedder
from copersona.rec.records import AspectTuple, RecItem
from copersona.store.rec import RecStore, text_digest


def entry_text(item: RecItem, aspect: AspectTuple | None) -> str:
    """concat(s_i, a_{u,i}) of Eq. 6 (the summary alone when the user wrote no informative review)."""
    summary = item.summary or item.title or item.item_id
    said = aspect.text() if aspect is not None and aspect.informative() else ""
    return f"{summary} | {said}" if said else summary


def training_entries(store: RecStore) -> dict[str, list[tuple[int, str]]]:
    """Each user's training interactions as (time, entry text), oldest first."""
    items, aspects = store.items(), store.aspects()
    history: dict[str, list[tuple[int, str]]] = defaultdict(list)
    for interaction, _ in store.rec_interactions("train"):
        key = (interaction.user_id, interaction.item_id)
        history[interaction.user_id].append(
            (interaction.timestamp, entry_text(items[interaction.item_id], aspects.get(key)))
        )
    return dict(history)


def training_profiles(store: RecStore, length: int) -> dict[str, list[str]]:
    """Each user's profile entries, most recent training interaction first, at most ``length``."""
    return {user: [text for _, text in entries[::-1][:length]] for user, entries in training_entries(store).items()}


class CachedEncoder:
    """An embedder whose vectors are kept in the store by (encoder id, text digest); no store: no cache."""

    def __init__(self, embedder: Embedder, store: RecStore | None, encoder_id: str | None = None):
        self.embedder = embedder
        self.store = store
        self.encoder_id = encoder_id or embedder.model_id

    @property
    def dim(self) -> int:
        return self.embedder.dim

    def encode(self, texts: list[str]) -> np.ndarray:
        found = self.store.vectors(self.encoder_id, texts) if self.store is not None else {}
        missing = list(dict.fromkeys(t for t in texts if text_digest(t) not in found))
        if missing:
            fresh = self.embedder.encode(missing)
            if self.store is not None:
                self.store.write_vectors(self.encoder_id, missing, fresh)
            found.update({text_digest(t): v for t, v in zip(missing, fresh)})
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for row, text in enumerate(texts):
            out[row] = found[text_digest(text)]
        return out


def decayed_mean(entry_vectors: np.ndarray, gamma: float) -> np.ndarray:
    """Eq. 7 for one user, rows most recent first; the result has unit norm (zeros for no entries)."""
    if len(entry_vectors) == 0:
        return np.zeros(entry_vectors.shape[1], dtype=np.float32)
    weights = gamma ** np.arange(len(entry_vectors), dtype=np.float64)
    mean = (weights[:, None] * entry_vectors).sum(axis=0) / weights.sum()
    norm = np.linalg.norm(mean)
    return (mean / norm if norm > 0 else mean).astype(np.float32)


def user_vectors(profiles: dict[str, list[str]], encoder: CachedEncoder, gamma: float) -> dict[str, np.ndarray]:
    """e_u for every user with a profile."""
    texts = list(dict.fromkeys(t for entries in profiles.values() for t in entries))
    vectors = encoder.encode(texts)
    row = {t: i for i, t in enumerate(texts)}
    return {
        user: decayed_mean(vectors[[row[t] for t in entries]], gamma) for user, entries in profiles.items() if entries
    }
