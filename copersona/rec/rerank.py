"""The persona-profiled item index and online reranking (paper 003, Sec. 3.2, Eq. 10).

Every persona's embedding is computed once, offline, and held in a faiss inner-product index
(vectors are unit-norm, so inner product is cosine). An item without personas (no informative
training review yet) is indexed by the embedding of its summary, as is every item in the
summary-only variant (Sec. 4.2.3). Online, a user's candidates are scored by
score(u, i) = max over the item's personas pi of sim(e_u, e_pi), and the winning persona is the
explanation. Scoring reads the candidates' rows straight from the index's own storage (one gather
and one matrix-vector product): a faiss search restricted to them by an ID selector still scans
every row of the index, about 4 ns per row and query (``benchmarks/rec_latency.py``).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass

import faiss
import numpy as np

from copersona.rec.config import RecConfig
from copersona.rec.metrics import rank_of, ranking_metrics
from copersona.rec.profiles import CachedEncoder, training_profiles, user_vectors
from copersona.rec.records import Candidates, Persona, RecItem
from copersona.store.rec import RecStore


@dataclass(frozen=True)
class Ranked:
    """One reranked candidate: its score and the persona that won it (None: its summary did)."""

    item_id: str
    score: float
    persona: Persona | None


class PersonaIndex:
    """Persona vectors of every item in one faiss index, with each item's rows."""

    def __init__(self, rows: list[tuple[str, Persona | None]], vectors: np.ndarray):
        self.rows = rows
        n, dim = vectors.shape
        self.index = faiss.IndexFlatIP(dim)  # row r of the index is rows[r]
        self.index.add(np.ascontiguousarray(vectors, dtype=np.float32))
        # A view of the index's own storage, not a copy: the vectors are held once.
        self.vectors = faiss.rev_swig_ptr(self.index.get_xb(), n * dim).reshape(n, dim) if n else vectors
        rows_of: dict[str, list[int]] = {}
        for row, (item_id, _) in enumerate(rows):
            rows_of.setdefault(item_id, []).append(row)
        self.rows_of = {item: np.array(found, dtype=np.int64) for item, found in rows_of.items()}
        # Each item's rows padded with -1 to the widest item: a query gathers its candidates' rows at once.
        self.position = {item: n for n, item in enumerate(rows_of)}
        width = max((len(found) for found in rows_of.values()), default=1)
        self.table = np.full((len(rows_of), width), -1, dtype=np.int64)
        for n, found in enumerate(rows_of.values()):
            self.table[n, : len(found)] = found

    @classmethod
    def build(
        cls,
        items: dict[str, RecItem],
        personas: dict[str, list[Persona]],
        encoder: CachedEncoder,
        *,
        summary_only: bool = False,
    ) -> PersonaIndex:
        """Rows for every item: its personas, or its summary when it has none (or ``summary_only``)."""
        rows: list[tuple[str, Persona | None]] = []
        texts: list[str] = []
        for item_id in sorted(items):
            own = [] if summary_only else personas.get(item_id, [])
            for persona in own:
                rows.append((item_id, persona))
                texts.append(persona.text())
            if not own:
                rows.append((item_id, None))
                texts.append(items[item_id].summary or items[item_id].title or item_id)
        return cls(rows, encoder.encode(texts))

    @property
    def memory_bytes(self) -> int:
        """The index's vectors (held once) and each row's item and persona reference."""
        return int(self.vectors.nbytes) + 8 * len(self.rows)

    def scores(self, user: np.ndarray, candidates: list[str]) -> list[Ranked]:
        """Each candidate's Eq. 10 score and winning persona, in the candidates' order (-inf: not indexed)."""
        known = [item for item in candidates if item in self.position]
        best: dict[str, tuple[float, int]] = {}
        if known:
            table = self.table[[self.position[item] for item in known]]  # (C, P), -1 padded
            sims = np.where(table >= 0, self.vectors[np.maximum(table, 0)] @ user.astype(np.float32), -np.inf)
            # argmax takes the first row reaching an item's maximum (its lowest persona index).
            column = sims.argmax(axis=1)
            at = np.arange(len(known))
            best = dict(zip(known, zip(sims[at, column].tolist(), table[at, column].tolist())))
        return [
            Ranked(item, best[item][0], self.rows[best[item][1]][1]) if item in best else Ranked(item, -np.inf, None)
            for item in candidates
        ]

    def rerank(self, user: np.ndarray, candidates: list[str]) -> list[Ranked]:
        """Candidates by descending score; equal scores keep the generator's order."""
        ranked = self.scores(user, candidates)
        order = sorted(range(len(ranked)), key=lambda i: (-ranked[i].score, i))
        return [ranked[i] for i in order]


class Reranker(ABC):
    """One way of reordering a generator's candidates; ``prepare`` may choose settings on validation."""

    name: str
    encoder_id: str = ""

    def prepare(self, validation: list[Candidates]) -> dict:  # noqa: B027 - optional
        """Choose settings on validation candidates; returns what was chosen (for the report)."""
        return {}

    @abstractmethod
    def rerank(self, query: Candidates) -> list[Ranked]:
        """The query's candidates in the new order (``query.target`` is never read)."""


class GeneratorOrder(Reranker):
    """No reranking: the first-stage generator's own order (the paper's CF rows)."""

    name = "none"

    def rerank(self, query: Candidates) -> list[Ranked]:
        return [Ranked(item, float(-n), None) for n, item in enumerate(query.items)]


class PersonaReranker(Reranker):
    """PERSONA4REC: Eq. 10 over the persona index; gamma (Eq. 7) chosen on validation NDCG@10."""

    def __init__(
        self,
        name: str,
        index: PersonaIndex,
        profiles: dict[str, list[str]],
        encoder: CachedEncoder,
        gammas: list[float],
    ):
        self.name = name
        self.index = index
        self.profiles = profiles
        self.encoder = encoder
        self.encoder_id = encoder.encoder_id
        self.gammas = gammas
        self.gamma = gammas[-1]
        self.users: dict[str, np.ndarray] = {}

    def prepare(self, validation: list[Candidates]) -> dict:
        scores = {}
        for gamma in self.gammas:
            self.users = user_vectors(self.profiles, self.encoder, gamma)
            ranks = [rank_of([r.item_id for r in self.rerank(c)], c.target) for c in validation]
            scores[gamma] = ranking_metrics(ranks)["ndcg@10"] if ranks else 0.0
        self.use_gamma(max(self.gammas, key=lambda g: (scores[g], g)))
        return {"gamma": self.gamma, "validation_ndcg@10": {str(g): round(s, 4) for g, s in scores.items()}}

    def use_gamma(self, gamma: float) -> None:
        self.gamma = gamma
        self.users = user_vectors(self.profiles, self.encoder, gamma)

    def user_vector(self, query: Candidates) -> np.ndarray | None:
        return self.users.get(query.user_id)

    def rerank(self, query: Candidates) -> list[Ranked]:
        vector = self.user_vector(query)
        if vector is None:  # no training history: nothing to personalize with
            return GeneratorOrder().rerank(query)
        return self.index.rerank(vector, query.items)


def all_rerankers(
    store: RecStore, config: RecConfig, vanilla: CachedEncoder, finetuned: CachedEncoder | None = None
) -> list[Reranker]:
    """PERSONA4REC with the vanilla encoder and (when trained) the fine-tuned one, each with its
    summary-only variant (Table 6: items indexed by their summary, the same encoder); then the
    CoPersona rows with the best available encoder, when the store has facet states."""
    from copersona.config import GraphConfig
    from copersona.rec.copersona import FacetReranker, PeerReranker

    items, personas = store.items(), store.personas()
    profiles = training_profiles(store, config.history_length)
    out: list[Reranker] = []
    persona_index = {}
    for suffix, encoder in (("", vanilla), ("-ft", finetuned)):
        if encoder is None:
            continue
        for variant, summary_only in (("", False), ("-summary", True)):
            index = PersonaIndex.build(items, personas, encoder, summary_only=summary_only)
            if not summary_only:
                persona_index[encoder.encoder_id] = index
            out.append(PersonaReranker(f"persona4rec{suffix}{variant}", index, profiles, encoder, config.decay_grid))
    if store.count("rec_facets"):
        encoder = finetuned or vanilla
        index = persona_index[encoder.encoder_id]
        graph = GraphConfig()
        fallback = PersonaReranker("persona4rec", index, profiles, encoder, config.decay_grid)
        out.append(FacetReranker(store, index, fallback, graph))
        out.append(
            PeerReranker(
                store, index, profiles, encoder, config.decay_grid, config.peer_weights, graph, config.history_length
            )
        )
    return out
