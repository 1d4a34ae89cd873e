"""The persona database: refined personas kept in the store, and collaborators joined on their keys.

Personas are stored per (user, profile digest): the digest covers the refiner's identity and the
exact reviews refined, so a changed profile, refiner, model or setting never reads an old persona,
and a capped profile (sparse-user experiments) gets its own. Refinement is resumable: users are
refined in batches, each written in one transaction, and a rerun refines only what is missing. On
a store opened read-only (a snapshot being served or inspected) personas are kept in memory.
"""

from __future__ import annotations

import hashlib
import json
from collections import defaultdict
from functools import cached_property

import numpy as np

from copersona.data.records import Interaction
from copersona.personadb.records import Persona
from copersona.personadb.refine import Refiner
from copersona.progress import Progress
from copersona.store import Store

# Users refined (and written) per transaction.
BATCH = 64


class PersonaDB:
    """Personas of a store's users under one refiner."""

    def __init__(self, store: Store, refiner: Refiner, progress: Progress | None = None):
        self.store = store
        self.refiner = refiner
        self.progress = progress or Progress()
        self._loaded: dict[tuple[str, str], tuple[Persona, np.ndarray]] = {}  # read, or refined on a read-only store

    def digest(self, reviews: list[Interaction]) -> str:
        refs = [[r.item_id, r.timestamp] for r in reviews]
        return hashlib.sha256(json.dumps([self.refiner.identity, refs]).encode()).hexdigest()[:24]

    def ensure(self, profiles: dict[str, list[Interaction]]) -> dict[str, int]:
        """Refine every non-empty profile not in the store yet; returns this call's counts (refined,
        and the refiner's own: LLM answers and fallbacks), which the store's run log keeps too."""
        stored = self.store.persona_digests() | set(self._loaded)
        todo = {u: p for u, p in profiles.items() if p and (u, self.digest(p)) not in stored}
        if not todo:
            return {}
        counts: dict[str, int] = defaultdict(int)

        def refine() -> dict:
            users = list(todo)
            with self.progress.stage("persona-db: refining", total=len(users)) as advance:
                for start in range(0, len(users), BATCH):
                    batch = {u: todo[u] for u in users[start : start + BATCH]}
                    refined, batch_counts = self.refiner.refine(batch)
                    self._keep(
                        [
                            (Persona(user_id=u, profile=self.digest(batch[u]), units=units), vectors)
                            for u, (units, vectors) in refined.items()
                        ]
                    )
                    counts["refined"] += len(refined)
                    for key, value in batch_counts.items():
                        counts[key] += value
                    advance(len(batch))
            return {"refiner": self.refiner.identity, **counts}

        if self.store.read_only:
            refine()
        else:
            self.store.run_stage("persona-db", refine)
        return dict(counts)

    def _keep(self, personas: list[tuple[Persona, np.ndarray]]) -> None:
        if self.store.read_only:
            self._loaded.update({(p.user_id, p.profile): (p, v) for p, v in personas})
        else:
            self.store.write_personas(personas)

    def persona(self, user_id: str, reviews: list[Interaction]) -> tuple[Persona, np.ndarray] | None:
        """The stored persona refined from exactly ``reviews`` (refined now if missing), or None for no reviews."""
        if not reviews:
            return None
        key = (user_id, self.digest(reviews))
        if key not in self._loaded:
            found = self.store.persona(*key)
            if found is None:
                self.ensure({user_id: reviews})  # a read-only store's go to _loaded
                found = self._loaded.get(key) or self.store.persona(*key)
            if found is None:  # nothing to refine (no sentences at all)
                return None
            self._loaded[key] = found
        return self._loaded[key]

    # -- collaborative refinement ----------------------------------------------------------------
    @cached_property
    def population(self) -> dict[str, tuple[Persona, np.ndarray]]:
        """Every user's persona of their whole persona profile (the collaborators' side)."""
        profiles = self.store.profiles()
        self.ensure(profiles)
        found = {u: self.persona(u, p) for u, p in profiles.items()}
        return {u: persona for u, persona in found.items() if persona is not None}

    @cached_property
    def _join(self) -> tuple[list[str], dict[str, set[int]], np.ndarray]:
        """Users, an inverted index key -> users, and the cache units' embeddings (key texts)."""
        users = sorted(self.population)
        by_key: dict[str, set[int]] = defaultdict(set)
        rows = []
        for row, user in enumerate(users):
            persona, vectors = self.population[user]
            for key in persona.keys:
                by_key[key].add(row)
            rows.append(vectors[0])  # the cache unit comes first
        matrix = np.vstack(rows) if rows else np.zeros((0, self.refiner.embedder.dim), dtype=np.float32)
        return users, by_key, matrix

    def collaborators(self, user_id: str, persona: Persona, vectors: np.ndarray, k: int) -> list[str]:
        """The ``k`` users JOINed to this persona: most shared persona keys first, then the most similar
        keys (cosine of the cache units' embeddings); never the user."""
        if k <= 0:
            return []
        users, by_key, matrix = self._join
        shared = np.zeros(len(users))
        for key in persona.keys:
            for row in by_key.get(key, ()):
                shared[row] += 1
        similarity = matrix @ vectors[0] if len(users) else np.zeros(0)
        order = np.lexsort((np.arange(len(users)), -similarity, -shared))
        return [users[i] for i in order if users[i] != user_id][:k]
