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
