"""User encoders of the parametric branch: the reliability-gated graph encoder (Eqs. 9-12) and DEP's.

:class:`GatedFacetConv` is one message-passing layer over the user-level neighbour graph, applied
to all facets at once; :class:`CrossFacetAttention` lets facet states attend to each other; and
:class:`PersonaEncoder` chains them into the collaborative persona vector ``h_u``.
:class:`DifferenceEncoder` is the DEP baseline's user vector: the user against their peers.
"""

from __future__ import annotations

import torch
from torch import nn
from torch_geometric.nn import MessagePassing

from copersona.model.gate import MonotoneGate


class GatedFacetConv(MessagePassing):
    r"""Reliability-gated self-vs-neighbours update of every facet state (Eqs. 10-11).

    .. math::
        \tilde{h}_u^{(m)} = \frac{1}{|\mathcal{N}_u|} \sum_{v \in \mathcal{N}_u} h_v^{(0,m)}, \qquad
        h_u^{(m)} = \sigma\big(W(\gamma_u^{(m)} h_u^{(0,m)} + (1 - \gamma_u^{(m)}) \tilde{h}_u^{(m)})\big)

    ``W`` is shared across facets. A user without neighbours takes their own state as the
    neighbours' mean (so the gate has nothing to mix): a mean over an empty set would be zero.

    Args:
        in_channels: facet embedding size ``d``.
        out_channels: facet state size ``d'``.
        dropout: dropout on the output.

    Shapes:
        - ``x``: ``(N, M, d)`` facet states :math:`h^{(0)}`
        - ``gamma``: ``(N, M)`` gates in ``[0, 1]``
        - ``edge_index``: ``(2, E)``, row 0 the neighbour ``v``, row 1 the user ``u`` it informs
        - output: ``(N, M, d')``
    """

    def __init__(self, in_channels: int, out_channels: int, dropout: float = 0.1):
        super().__init__(aggr="mean")
        self.linear = nn.Linear(in_channels, out_channels)
        self.activation = nn.ReLU()
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, gamma: torch.Tensor, edge_index: torch.Tensor) -> torch.Tensor:
        n, m, d = x.shape
        flat = x.reshape(n, m * d)
        neighbours = _own_when_isolated(flat, self.propagate(edge_index, x=flat), edge_index).reshape(n, m, d)
        gamma = gamma.unsqueeze(-1)
        return self.dropout(self.activation(self.linear(gamma * x + (1 - gamma) * neighbours)))

    def message(self, x_j: torch.Tensor) -> torch.Tensor:
        return x_j


class CrossFacetAttention(nn.Module):
    r"""Self-attention across a user's facet states, with a residual and layer norm.

    .. math::
        H' = \mathrm{LayerNorm}(H + \mathrm{MHA}(H + P, H + P, H))

    ``P`` is a learned embedding per facet position, so attention knows which facet is which.

    Shapes:
        - input: ``(N, M, d')``
        - output: ``(N, M, d')``
    """

    def __init__(self, channels: int, num_facets: int, heads: int = 4, dropout: float = 0.1):
        super().__init__()
        self.facet_embedding = nn.Parameter(torch.zeros(num_facets, channels))
        self.attention = nn.MultiheadAttention(channels, heads, dropout=dropout, batch_first=True)
        self.norm = nn.LayerNorm(channels)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        keyed = h + self.facet_embedding
        attended, _ = self.attention(keyed, keyed, h, need_weights=False)
        return self.norm(h + attended)


class PersonaEncoder(nn.Module):
    r"""Facet embeddings and reliability labels -> the collaborative persona vector (Eqs. 9-12).

    .. math::
        h_u^{(0,m)} = e_u^{(m)}, \quad
        \gamma_u^{(m)} = f_\theta(r_u^{(m)}), \quad
        h_u = [h_u^{(1)} \parallel \dots \parallel h_u^{(M)}]

    with one :class:`GatedFacetConv` layer and :class:`CrossFacetAttention` after it.

    Shapes:
        - ``states``: ``(N, M, d)`` facet embeddings
        - ``levels``: ``(N, M)`` reliability levels in ``[0, 3]``
        - ``edge_index``: ``(2, E)`` user-level neighbour edges
        - output: ``(N, M * hidden)``
    """

    def __init__(
        self,
        in_channels: int,
        num_facets: int,
        *,
        hidden: int = 512,
        heads: int = 4,
        dropout: float = 0.1,
        per_facet_gate: bool = False,
    ):
        super().__init__()
        self.gate = MonotoneGate(num_facets if per_facet_gate else None)
        self.conv = GatedFacetConv(in_channels, hidden, dropout)
        self.attention = CrossFacetAttention(hidden, num_facets, heads, dropout)
        self.out_channels = num_facets * hidden

    def forward(self, states: torch.Tensor, levels: torch.Tensor, edge_index: torch.Tensor) -> torch.Tensor:
        h = self.conv(states, self.gate(levels), edge_index)
        return self.attention(h).flatten(1)


class DifferenceEncoder(nn.Module):
    r"""DEP's user vector: the user's own review embedding and how it differs from their peers'.

    .. math::
        h_u = \mathrm{ReLU}\Big(W\big[p_u \parallel p_u - \tfrac{1}{|\mathcal{N}_u|}\textstyle\sum_{v} p_v\big]\Big)

    ``p`` is the profile embedding (mean of the user's reviews); peers are the user-level neighbours.

    Shapes:
        - ``profiles``: ``(N, d)``
        - ``edge_index``: ``(2, E)``
        - output: ``(N, hidden)``
    """

    def __init__(self, in_channels: int, *, hidden: int = 512, dropout: float = 0.1):
        super().__init__()
        self.peer_mean = MeanOfNeighbours()
        self.linear = nn.Linear(2 * in_channels, hidden)
        self.activation = nn.ReLU()
        self.dropout = nn.Dropout(dropout)
        self.out_channels = hidden

    def forward(self, profiles: torch.Tensor, edge_index: torch.Tensor) -> torch.Tensor:
        peers = self.peer_mean(profiles, edge_index)
        return self.dropout(self.activation(self.linear(torch.cat([profiles, profiles - peers], dim=1))))


class MeanOfNeighbours(MessagePassing):
    """Mean of the neighbours' features; a user without neighbours gets their own (no difference).

    Shapes: ``x`` ``(N, d)``, ``edge_index`` ``(2, E)`` -> ``(N, d)``.
    """

    def __init__(self):
        super().__init__(aggr="mean")

    def forward(self, x: torch.Tensor, edge_index: torch.Tensor) -> torch.Tensor:
        return _own_when_isolated(x, self.propagate(edge_index, x=x), edge_index)

    def message(self, x_j: torch.Tensor) -> torch.Tensor:
        return x_j


def _own_when_isolated(x: torch.Tensor, mean: torch.Tensor, edge_index: torch.Tensor) -> torch.Tensor:
    """``mean`` where a node has in-edges, else the node's own features ``x`` (both ``(N, F)``)."""
    isolated = torch.ones(x.shape[0], dtype=torch.bool, device=x.device)
    isolated[edge_index[1]] = False
    return torch.where(isolated[:, None], x, mean)
