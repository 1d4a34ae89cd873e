"""The facet peer context of the non-parametric branch (Sec. 3.3, Eqs. 7-8; App. C).

For a user u*, the peers are the top neighbours by combined similarity (App. C: up to three).
For each facet m, the peers linked to u* in layer m bring their facet package t_v^(m) (summary and
quotes, Eq. 4) with the gated similarity A~_{u*v}^(m) as the confidence (Eq. 8). A peer linked to
u* by the whole-persona layer alone (no facet edge) brings its package on every facet, with its
whole-persona similarity as the confidence: it was chosen as a whole, not for a facet. Everything is read
from the store once, so assembling a request's context is dictionary lookups.

A request's :class:`~copersona.retrieval.cutoff.EvidenceCutoff` decides which of a peer's texts it
may see: a summary resting on a review written on or after the target's day (or on the peer's
review of the target item) is replaced by the peer's quotes from allowed reviews, and the peer is
skipped on that facet when none is left. Every text left out is returned as a :class:`DroppedText`.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

from copersona.facets.records import PLACEHOLDER_LEVELS, Facet, FacetSummary
from copersona.graph.records import PERSONA_LAYER, Neighbour, rank_neighbours
from copersona.retrieval.cutoff import DroppedText, EvidenceCutoff
from copersona.store import Store, StoreError

SUMMARY_REPLACED = "summary replaced by the peer's earlier quotes"
PEER_SKIPPED = "peer skipped on this facet"
QUOTE_DROPPED = "quote dropped"


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
        if not self.summary:  # the summary was cut off: the quotes alone
            return f"Quotes: {quotes}"
        return f"{self.summary} Quotes: {quotes}" if quotes else self.summary


@dataclass(frozen=True)
class FacetPeers:
    """E_{u*}^(m): one facet's exemplars, strongest first."""

    facet: Facet
    exemplars: tuple[PeerExemplar, ...]


def own_words(state: FacetSummary) -> bool:
    """Whether a facet state's summary is the user's own sentences (extractive) rather than a model's."""
    return state.method == "extractive"


class PeerIndex:
    """Neighbours and facet packages of every user, loaded from the store.

    With ``words="none"`` packages carry no peer's own words: no quotes, and summaries only where a
    model wrote them (an extractive summary is the peer's sentences).
    """

    def __init__(self, store: Store, words: str = "verbatim"):
        self.words = words
        schema = store.schema()
        if schema is None:
            raise StoreError(f"{store.path}: no facet schema; run `copersona build` first")
        self.facets = {facet.key: facet for facet in schema.facets}
        self._states: dict[tuple[str, str], FacetSummary] = {(s.user_id, s.facet_key): s for s in store.facet_states()}
        weights: dict[str, dict[str, dict[str, float]]] = defaultdict(lambda: defaultdict(dict))
        for edge in store.edges():
            weights[edge.source][edge.target][edge.facet_key] = edge.weight
        persona_weight = store.persona_weight()
        self._neighbours: dict[str, list[Neighbour]] = {
            user: rank_neighbours(peers, len(self.facets), persona_weight) for user, peers in weights.items()
        }

    def neighbours(self, user_id: str, limit: int | None) -> list[Neighbour]:
        """Top peers by combined similarity (the mean of the pair's facet weights over all M, mixed
        with their whole-persona weight); None: all."""
        return self._neighbours.get(user_id, [])[:limit]

    def context(
        self, user_id: str, limit: int, cutoff: EvidenceCutoff, neighbours: list[Neighbour] | None = None
    ) -> tuple[list[FacetPeers], list[DroppedText]]:
        """Facet-grouped exemplars from the user's top ``limit`` peers, facets in schema order,
        with what ``cutoff`` kept out. ``neighbours``: the request's own peers (a persona derived
        from its profile, :mod:`copersona.graph.personas`) instead of the stored graph's."""
        peers = self.neighbours(user_id, limit) if neighbours is None else neighbours[:limit]
        # A peer's confidence per facet: its facet weights; a peer linked by the whole-persona layer
        # alone (no facet edge) brings every facet its evidence supports, at its whole-persona weight.
        confidence: dict[str, dict[str, float]] = {}
        for peer in peers:
            if self.facets.keys() & peer.facets.keys():
                confidence[peer.user_id] = peer.facets
            else:
                confidence[peer.user_id] = {
                    key: peer.facets[PERSONA_LAYER]
                    for key in self.facets
                    if (peer.user_id, key) in self._states
                    and self._states[(peer.user_id, key)].reliability not in PLACEHOLDER_LEVELS
                }
        groups, dropped = [], []
        for key, facet in self.facets.items():
            exemplars = []
            linked = sorted((v for v, c in confidence.items() if key in c), key=lambda v: (-confidence[v][key], v))
            for peer_id in linked:
                state = self._states[(peer_id, key)]
                if self.words == "none":
                    state = state.model_copy(
                        update={"quotes": [], "quote_sources": [], "summary": "" if own_words(state) else state.summary}
                    )
                exemplar = self._exemplar(peer_id, confidence[peer_id][key], state, cutoff)
                dropped.extend(exemplar[1])
                if exemplar[0] is not None:
                    exemplars.append(exemplar[0])
            if exemplars:
                groups.append(FacetPeers(facet, tuple(exemplars)))
        return groups, dropped

    @staticmethod
    def _exemplar(
        peer: str, weight: float, state: FacetSummary, cutoff: EvidenceCutoff
    ) -> tuple[PeerExemplar | None, list[DroppedText]]:
        """The peer's package as far as ``cutoff`` allows (None when nothing is left), and what it left out."""
        dropped, quotes = [], []
        for quote, ref in zip(state.quotes, state.quote_sources, strict=True):
            reason = cutoff.reason(ref)
            if reason is None:
                quotes.append(quote)
            else:
                dropped.append(DroppedText(quote, peer, reason, QUOTE_DROPPED, state.facet_key))
        summary = state.summary
        reason = cutoff.reason_for_all(state.summary_sources)
        if reason is not None and summary:
            action = SUMMARY_REPLACED if quotes else PEER_SKIPPED
            dropped.append(DroppedText(summary, peer, reason, action, state.facet_key))
            summary = ""
        if not summary and not quotes:
            return None, dropped
        return PeerExemplar(peer, weight, summary, tuple(quotes), state.reliability), dropped
