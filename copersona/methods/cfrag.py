"""CFRAG-style collaborative retrieval (Shi et al. 2025): similar users' reviews as context.

Offline (``prepare``, cached in the store under a digest of the data and settings): every persona
profile review is embedded, and a user encoder is trained contrastively on users' own reviews
(:mod:`copersona.model.user_encoder`). Per request:

1. the user is encoded from the request's own profile (the target item's metadata stands in for an
   empty one, a cold start);
2. every other user is encoded from the reviews of theirs the request's evidence cutoff allows
   (written before the target's day, not of the target item), and the ``cfrag_users`` nearest are
   the similar users;
3. their allowed reviews are scored for the query by BM25 and re-ranked with the user's preference,
   ``(1 - w) * bm25 / max bm25 + w * cos(review, user's mean review)``, w = ``cfrag_preference``;
   the best ``cfrag_documents`` go in, fenced as data, beside the user's own retrieved history.

The encoder sees persona profiles only (never a held-out target); like the other population-level
statistics it is fitted once over everyone.
"""

from __future__ import annotations

from dataclasses import asdict
from functools import cached_property

import numpy as np
import scipy.sparse as sp

from copersona.data.records import Example, Interaction
from copersona.data.sanitize import sanitize
from copersona.graph.personas import item_query
from copersona.methods.prompts import Context, PromptMethod, fenced
from copersona.model.user_encoder import EncoderSettings, UserEncoder, train_user_encoder
from copersona.retrieval import DroppedText, TokenBudget
from copersona.retrieval.cutoff import day
from copersona.retrieval.review_vectors import digest

REVIEW_DROPPED = "similar user's review left out"


class CFRAG(PromptMethod):
    name = "cfrag"
    description = (
        "CFRAG: similar users by a contrastively trained user embedding; their reviews retrieved and re-ranked."
    )
    shows_peer_words = True

    # -- offline ---------------------------------------------------------------------------------
    @cached_property
    def settings(self) -> EncoderSettings:
        m = self.config.methods
        return EncoderSettings(
            dim=m.cfrag_dim, epochs=m.cfrag_epochs, temperature=m.cfrag_temperature, seed=self.config.generation.seed
        )

    @cached_property
    def encoder(self) -> UserEncoder:
        """The user encoder trained on every persona profile (loaded from the store when trained before)."""
        reviews = self.resources.review_vectors
        vectors = reviews.matrix
        key = "encoder/" + digest([asdict(self.settings), reviews.key])
        payload = self.resources.store.method_model(self.name, key)
        if payload is not None:
            return UserEncoder.from_bytes(payload, vectors.shape[1], self.settings)
        owners = self._owners
        per_user = [vectors[owners.getrow(u).indices] for u in range(owners.shape[0])]
        encoder, _ = train_user_encoder(per_user, self.settings)
        if not self.resources.store.read_only:
            self.resources.store.write_method_model(self.name, key, encoder.to_bytes())
        return encoder

    @cached_property
    def _users(self) -> list[str]:
        return sorted({r.user_id for r in self.resources.review_vectors.reviews})

    @cached_property
    def _owners(self) -> sp.csr_matrix:
        """(users x reviews) 0/1: which user wrote which review."""
        reviews = self.resources.review_vectors.reviews
        row = {u: i for i, u in enumerate(self._users)}
        rows = [row[r.user_id] for r in reviews]
        return sp.csr_matrix((np.ones(len(reviews)), (rows, range(len(reviews)))), shape=(len(row), len(reviews)))

    @cached_property
    def _review_days(self) -> tuple[np.ndarray, np.ndarray]:
        reviews = self.resources.review_vectors.reviews
        return np.array([day(r.timestamp) for r in reviews]), np.array([r.item_id for r in reviews], dtype=object)

    def prepare(self, examples: list[Example]) -> None:
        """Train (or load) the encoder and embed the examples' profile reviews not stored (a held-out
        validation review before a test target), in one batch."""
        _ = self.encoder
        self.resources.review_vectors.embed([r for e in examples for r in e.profile])
        super().prepare(examples)

    # -- per request -----------------------------------------------------------------------------
    def preference(self, example: Example) -> np.ndarray:
        """The user's mean review embedding (unit): from the profile, or the target item for a cold start."""
        if example.profile:
            mean = self.resources.review_vectors.of(example.profile).mean(axis=0)
        else:
            mean = self.resources.embedder.encode([item_query(example)])[0]
        return mean / max(float(np.linalg.norm(mean)), 1e-12)

    def similar_users(self, example: Example, preference: np.ndarray) -> tuple[list[str], np.ndarray]:
        """The nearest other users by encoded visible reviews, and the visibility mask over all reviews."""
        cutoff = self.resources.cutoff(example)
        days, items = self._review_days
        visible = np.ones(len(days), dtype=bool)
        if cutoff.before_day is not None:
            visible &= days < cutoff.before_day
        if cutoff.item_id is not None:
            visible &= items != cutoff.item_id
        counts = self._owners @ visible.astype(np.float64)
        sums = self._owners @ (self.resources.review_vectors.matrix * visible[:, None])
        has = (counts > 0) & (np.array(self._users) != example.user_id)
        if not has.any():
            return [], visible
        encoded = self.encoder.encode((sums[has] / counts[has, None]).astype(np.float32))
        me = self.encoder.encode(preference[None, :])[0]
        candidates = [u for u, h in zip(self._users, has) if h]
        order = np.lexsort((np.arange(len(candidates)), -(encoded @ me)))
        return [candidates[i] for i in order[: self.config.methods.cfrag_users]], visible

    def documents(self, example: Example) -> tuple[list[Interaction], list[str], list[DroppedText]]:
        """The similar users' reviews to place, best first; notes; their reviews the cutoff left out."""
        m = self.config.methods
        if m.cfrag_users <= 0 or m.cfrag_documents <= 0:
            return [], ["collaborative retrieval off (cfrag_users or cfrag_documents = 0)"], []
        preference = self.preference(example)
        users, visible = self.similar_users(example, preference)
        if not users:
            return [], ["no similar user has a review before the target"], []
        reviews, vectors = self.resources.review_vectors.reviews, self.resources.review_vectors.matrix
        chosen = set(users)
        cutoff = self.resources.cutoff(example)
        dropped = [
            DroppedText(r.text, r.user_id, cutoff.reason(r) or "", REVIEW_DROPPED)
            for i, r in enumerate(reviews)
            if not visible[i] and r.user_id in chosen
        ]
        rows = [i for i, r in enumerate(reviews) if visible[i] and r.user_id in chosen]
        pool = [reviews[i] for i in rows]
        relevance = self.resources.bm25.scores(pool, example.query())
        top = float(relevance.max()) if len(relevance) else 0.0
        relevance = relevance / top if top > 0 else relevance
        score = (1 - m.cfrag_preference) * relevance + m.cfrag_preference * (vectors[rows] @ preference)
        order = np.lexsort((np.arange(len(pool)), -score))
        notes = [] if example.profile else ["no profile reviews: the target item stands in for the user"]
        return [pool[i] for i in order[: m.cfrag_documents]], notes, dropped

    def stored_texts(self, example: Example) -> list[str]:
        return [sanitize(r.profile_line()) for r in self.documents(example)[0]]

    def context(self, example: Example, budget: TokenBudget) -> Context:
        documents, notes, dropped = self.documents(example)
        lines = []
        for review in documents:
            if not budget.charge("- "):
                break
            fitted = budget.fit(sanitize(review.profile_line()), budget.limit("per_review"), "similar user's review")
            if fitted:
                lines.append("- " + fitted)
        body = "\n".join(lines)
        if not body:
            notes = notes or ["no similar user's review fits"]
            return Context(parts={"similar users' reviews": ""}, notes=notes, dropped=dropped)
        title = "Reviews by customers with similar tastes, most relevant to this item first:"
        return Context(fenced(title, body, budget), {"similar users' reviews": body}, notes, dropped)
