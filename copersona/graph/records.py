"""Typed records of the multiplex persona graph."""

from __future__ import annotations

from pydantic import BaseModel

# The whole-persona layer's key among the facet layers' (copersona.graph.persona_layer), and the
# store's meta key of its frozen style standardization (absent: the graph has no such layer).
PERSONA_LAYER = "__persona__"
STYLE_META = "persona_layer_style"


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
    """A peer by combined similarity: the mean of the pair's facet weights over all M facets,
    mixed with their whole-persona weight (:func:`rank_neighbours`)."""

    user_id: str
    combined: float
    facets: dict[str, float]  # by layer key: the facets' and, where linked, the whole-persona layer's


def rank_neighbours(
    weights: dict[str, dict[str, float]], num_facets: int, persona_weight: float = 0.0
) -> list[Neighbour]:
    """Peers ranked by combined similarity, strongest first, ties by user id.

    ``weights`` maps a peer to its layer weights with the user; facets without an edge count as 0
    in the mean over all ``num_facets`` (App. C: "the mean of its facet weights"). With the
    whole-persona layer's weight w^(P) (key ``PERSONA_LAYER``; 0 without an edge) and
    lambda = ``persona_weight``:

        combined = (1 - lambda) * sum_m W^(m) / M + lambda * w^(P);

    lambda = 0 is the paper's rule.
    """

    def combined(w: dict[str, float]) -> float:
        facet_mean = sum(v for k, v in w.items() if k != PERSONA_LAYER) / max(num_facets, 1)
        return (1 - persona_weight) * facet_mean + persona_weight * w.get(PERSONA_LAYER, 0.0)

    return sorted(
        (Neighbour(user_id=peer, combined=combined(w), facets=w) for peer, w in weights.items()),
        key=lambda n: (-n.combined, n.user_id),
    )
