"""The facet peer context of the non-parametric branch (Sec. 3.3, Eqs. 7-8; App. C).

For a user u*, the peers are the top neighbours by combined similarity (App. C: up to three).
For each facet m, the peers linked to u* in layer m bring their facet package t_v^(m) (summary and
quotes, Eq. 4) with the gated similarity A~_{u*v}^(m) as the confidence (Eq. 8). Everything is read
from the store once, so assembling a request's context is dictionary lookups.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

from copersona.facets.records import Facet, FacetSummary
from copersona.graph.records import Neighbour, rank_neighbours
from copersona.store.sqlite import Store, StoreError


@dataclass(frozen=True)
class PeerExemplar:
    """(v, t_v^(m), A~_{u*v}^(m)) of Eq. 8."""

    peer_id: str
    weight: float
    summary: str
    quotes: tuple[str, ...]
    reliability: str

    def package(self) -> str:
        """t_v^(m) = [s_v^(m); e_v^(m)]: the summary, then the quotes it does not already contain."""
        quotes = " ".join(f'"{q}"' for q in self.quotes if q not in self.summary)
        return f"{self.summary} Quotes: {quotes}" if quotes else self.summary


@dataclass(frozen=True)
class FacetPeers:
    """E_{u*}^(m): one facet's exemplars, strongest first."""

    facet: Facet
    exemplars: tuple[PeerExemplar, ...]


class PeerIndex:
    """Neighbours and facet packages of every user, loaded from the store."""

    def __init__(self, store: Store):
        schema = store.schema()
        if schema is None:
            raise StoreError(f"{store.path}: no facet schema; run `copersona build` first")
        self.facets = {facet.key: facet for facet in schema.facets}
        self._states: dict[tuple[str, str], FacetSummary] = {(s.user_id, s.facet_key): s for s in store.facet_states()}
        weights: dict[str, dict[str, dict[str, float]]] = defaultdict(lambda: defaultdict(dict))
        for edge in store.edges():
            weights[edge.source][edge.target][edge.facet_key] = edge.weight
        self._neighbours: dict[str, list[Neighbour]] = {
            user: rank_neighbours(peers, len(self.facets)) for user, peers in weights.items()
        }

    def neighbours(self, user_id: str, limit: int) -> list[Neighbour]:
        """Top peers by combined similarity (the mean of the pair's facet weights over all M)."""
        return self._neighbours.get(user_id, [])[:limit]

    def context(self, user_id: str, limit: int) -> list[FacetPeers]:
        """Facet-grouped exemplars from the user's top ``limit`` peers, facets in schema order."""
        peers = self.neighbours(user_id, limit)
        groups = []
        for key, facet in self.facets.items():
            exemplars = []
            for peer in sorted((p for p in peers if key in p.facets), key=lambda p: (-p.facets[key], p.user_id)):
                state = self._states[(peer.user_id, key)]
                exemplars.append(
                    PeerExemplar(peer.user_id, peer.facets[key], state.summary, tuple(state.quotes), state.reliability)
                )
            if exemplars:
                groups.append(FacetPeers(facet, tuple(exemplars)))
        return groups
