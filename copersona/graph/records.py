"""Typed records of the multiplex persona graph."""

from __future__ import annotations

from pydantic import BaseModel


class Edge(BaseModel):
    """A directed edge of one facet layer: ``target`` is among ``source``'s top-K peers on the facet.

    ``similarity`` is the cosine A_uv of Eq. 5; ``weight`` the reliability-gated A~_uv of Eq. 6,
    which ranks the neighbours; ``rank`` is 0 for the strongest.
    """

    facet_key: str
    source: str
    target: str
    similarity: float
    weight: float
    rank: int


class Neighbour(BaseModel):
    """A peer by combined similarity: the mean of the pair's facet weights over all M facets."""

    user_id: str
    combined: float
    facets: dict[str, float]


def rank_neighbours(weights: dict[str, dict[str, float]], num_facets: int) -> list[Neighbour]:
    """Peers ranked by combined similarity, strongest first, ties by user id.

    ``weights`` maps a peer to its facet weights with the user; facets without an edge count as 0
    in the mean over all ``num_facets`` (App. C: "the mean of its facet weights").
    """
    return sorted(
        (
            Neighbour(user_id=peer, combined=sum(w.values()) / max(num_facets, 1), facets=w)
            for peer, w in weights.items()
        ),
        key=lambda n: (-n.combined, n.user_id),
    )
