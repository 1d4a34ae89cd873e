"""The monotone label-to-gate mapping of App. C: reliability label -> trust in the user's own facet state."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from copersona.facets.records import RELIABILITY_LEVELS


class MonotoneGate(nn.Module):
    r"""Maps ordinal reliability levels to gates :math:`\gamma_0 \le \gamma_1 \le \gamma_2 \le \gamma_3`.

    .. math::
        \delta_i = \mathrm{softplus}(\tilde\delta_i) \ge 0, \qquad
        z_k = z_0 + \sum_{i=1}^{k} \delta_i, \qquad
        \gamma_k = \sigma(z_k)

    Monotone by construction (cumulative non-negative increments) and differentiable; four scalars,
    shared across facets, or one set per facet with ``num_facets``.

    Args:
        num_facets: ``None`` for one gate shared by every facet (the paper's), else one per facet.

    Shapes:
        - input ``levels``: ``(N, M)`` integer levels in ``[0, 3]`` (none, weak, moderate, strong)
        - output: ``(N, M)`` gates in ``(0, 1)``
    """

    def __init__(self, num_facets: int | None = None):
        super().__init__()
        rows = 1 if num_facets is None else num_facets
        levels = len(RELIABILITY_LEVELS)
        # Starts near the graph stage's fixed weights (none 0.05 ... strong 0.95): z from -3 up by 2 per level.
        self.z0 = nn.Parameter(torch.full((rows, 1), -3.0))
        self.raw_increments = nn.Parameter(torch.full((rows, levels - 1), 1.8))
        self.per_facet = num_facets is not None

    def table(self) -> torch.Tensor:
        """``(rows, 4)``: the gate of each level (one row when shared)."""
        z = torch.cat([self.z0, self.z0 + torch.cumsum(F.softplus(self.raw_increments), dim=1)], dim=1)
        return torch.sigmoid(z)

    def forward(self, levels: torch.Tensor) -> torch.Tensor:
        table = self.table()
        if not self.per_facet:
            return table[0][levels]
        facets = torch.arange(levels.shape[1], device=levels.device).expand_as(levels)
        return table[facets, levels]
