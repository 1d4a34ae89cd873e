"""CoPersona on the recommendation task (beyond paper 003): facets and facet-graph peers as rerankers.

* ``copersona-facets`` scores a candidate with the user's facet embeddings instead of one profile
  embedding: score(u, i) = max over facets m and personas pi of omega(r_u^m) cos(e_u^m, e_pi), with
  omega the graph's reliability gate, so a facet the user's reviews barely support counts little.
  Users without reviews (no facet states) fall back to PERSONA4REC's profile embedding.
* ``copersona-peers`` adds the profiles of the user's facet-graph peers to the user embedding:
  e_u' = normalize(e_u + beta * sum_v w_uv e_v(t) / sum_v w_uv), with w_uv the combined facet
  weight of the multiplex graph (Sec. 3.2; a layer per facet, placeholder facets left out) and
  e_v(t) the peer's decayed profile of training interactions *before the target's time t*, so
  nothing written after the target reaches it through a peer. beta is chosen on validation.
  Which users are peers is decided on training-period facets, as the CF generators learn from
  all training interactions.
"""

from __future__ import annotations

from collections import defaultdict

import numpy as np

from copersona.config import GraphConfig
from copersona.facets.records import PLACEHOLDER_LEVELS
from copersona.graph.multiplex import edges_of, layer_neighbours, reliability_gates
from copersona.graph.records import rank_neighbours
from copersona.rec.metrics import rank_of, ranking_metrics
from copersona.rec.profiles import CachedEncoder, decayed_mean, training_entries
from copersona.rec.records import Candidates
from copersona.rec.rerank import PersonaIndex, PersonaReranker, Ranked, Reranker
from copersona.store.rec import RecStore


class FacetReranker(Reranker):
    """``copersona-facets`` (see the module docstring)."""

    name = "copersona-facets"

    def __init__(self, store: RecStore, index: PersonaIndex, fallback: PersonaReranker, graph: GraphConfig):
        self.index = index
        self.fallback = fallback
        self.encoder_id = fallback.encoder_id
        users, self.keys, labels, vectors = store.facets()
        gates = reliability_gates(labels.ravel().tolist(), graph).reshape(labels.shape) if len(users) else labels
        self.facets = {u: (vectors[n], gates[n]) for n, u in enumerate(users)}

    def prepare(self, validation: list[Candidates]) -> dict:
        return {"gamma_of_fallback": self.fallback.prepare(validation)["gamma"], "users_with_facets": len(self.facets)}

    def rerank(self, query: Candidates) -> list[Ranked]:
        if query.user_id not in self.facets:
            return self.fallback.rerank(query)
        vectors, gates = self.facets[query.user_id]
        rows = [int(row) for item in query.items for row in self.index.rows_of.get(item, [])]
        scores = (gates[:, None] * (vectors @ self.index.vectors[rows].T)).max(axis=0)  # (rows,)
        best: dict[str, tuple[float, int]] = {}
        for score, row in zip(scores.tolist(), rows):
            item = self.index.rows[row][0]
            if item not in best or score > best[item][0]:
                best[item] = (score, row)
        ranked = [Ranked(i, best[i][0], self.index.rows[best[i][1]][1]) for i in query.items if i in best]
        order = sorted(range(len(ranked)), key=lambda n: (-ranked[n].score, n))
        return [ranked[n] for n in order]


def facet_peers(store: RecStore, graph: GraphConfig) -> dict[str, list[tuple[str, float]]]:
    """Each user's top-K peers by combined weight over the facet layers (placeholder facets excluded)."""
    users, keys, labels, vectors = store.facets()
    weights: dict[str, dict[str, dict[str, float]]] = defaultdict(lambda: defaultdict(dict))
    for f, key in enumerate(keys):
        rows = np.flatnonzero(~np.isin(labels[:, f], PLACEHOLDER_LEVELS))
        if len(rows) < 2:
            continue
        layer_users = [users[r] for r in rows]
        neighbours = layer_neighbours(vectors[rows, f], labels[rows, f].tolist(), graph)
        for edge in edges_of(key, layer_users, neighbours):
            weights[edge.source][edge.target][key] = edge.weight
    return {
        user: [(n.user_id, n.combined) for n in rank_neighbours(peers, len(keys))[: graph.top_k]]
        for user, peers in weights.items()
    }


class PeerReranker(PersonaReranker):
    """``copersona-peers`` (see the module docstring)."""

    def __init__(
        self,
        store: RecStore,
        index: PersonaIndex,
        profiles: dict[str, list[str]],
        encoder: CachedEncoder,
        gammas: list[float],
        betas: list[float],
        graph: GraphConfig,
        length: int,
    ):
        super().__init__("copersona-peers", index, profiles, encoder, gammas)
        self.betas = betas
        self.beta = 0.0
        self.length = length
        self.peers = facet_peers(store, graph)
        self.entries = training_entries(store)
        self.target_time = {(i.user_id, s): i.timestamp for i, s in store.rec_interactions() if s != "train"}
        texts = list(dict.fromkeys(t for history in self.entries.values() for _, t in history))
        self.entry_vectors = dict(zip(texts, encoder.encode(texts)))

    def peer_entries(self, query: Candidates) -> list[tuple[str, float, list[tuple[int, str]]]]:
        """(peer, weight, entries) of the query's user: each peer's L most recent training entries
        written before the query's target, most recent first; peers with none are left out."""
        cutoff = self.target_time[(query.user_id, query.split)]
        found = []
        for peer, weight in self.peers.get(query.user_id, []):
            before = [(time, text) for time, text in self.entries.get(peer, []) if time < cutoff][::-1]
            if before:
                found.append((peer, weight, before[: self.length]))
        return found

    def _peer_vector(self, query: Candidates) -> np.ndarray | None:
        total, weight_sum = None, 0.0
        for _, weight, entries in self.peer_entries(query):
            vector = decayed_mean(np.stack([self.entry_vectors[text] for _, text in entries]), self.gamma)
            total = weight * vector if total is None else total + weight * vector
            weight_sum += weight
        return None if total is None else total / weight_sum

    def user_vector(self, query: Candidates) -> np.ndarray | None:
        own = super().user_vector(query)
        peers = self._peer_vector(query) if self.beta > 0 and own is not None else None
        if peers is None:
            return own
        mixed = own + self.beta * peers
        return (mixed / np.linalg.norm(mixed)).astype(np.float32)

    def prepare(self, validation: list[Candidates]) -> dict:
        self.beta = 0.0
        chosen = super().prepare(validation)
        scores = {}
        for beta in self.betas:
            self.beta = beta
            scores[beta] = ranking_metrics(
                [rank_of([r.item_id for r in self.rerank(c)], c.target) for c in validation]
            )["ndcg@10"]
        self.beta = max(self.betas, key=lambda b: (scores[b], -b))
        users_with_peers = sum(1 for peers in self.peers.values() if peers)
        return chosen | {
            "beta": self.beta,
            "validation_ndcg@10_by_beta": {str(b): round(v, 4) for b, v in scores.items()},
            "users_with_peers": users_with_peers,
        }
