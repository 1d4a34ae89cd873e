"""The monotone label-to-gate mapping (App. C): ordered, bounded, a table lookup, and trainable."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from copersona.facets.records import RELIABILITY_LEVELS
from copersona.model.gate import MonotoneGate

LEVELS = len(RELIABILITY_LEVELS)  # none, weak, moderate, strong


def _gate(z0: list[float], raw: list[list[float]], per_facet: bool) -> MonotoneGate:
    gate = MonotoneGate(len(z0) if per_facet else None)
    with torch.no_grad():
        gate.z0.copy_(torch.tensor(z0).reshape(-1, 1))
        gate.raw_increments.copy_(torch.tensor(raw))
    return gate


def _parameters(rows: int, z0: st.SearchStrategy, increment: st.SearchStrategy):
    return st.tuples(
        st.lists(z0, min_size=rows, max_size=rows),
        st.lists(st.lists(increment, min_size=LEVELS - 1, max_size=LEVELS - 1), min_size=rows, max_size=rows),
    )


# Any finite float32 at all: sigmoid saturates to exactly 0 or 1 for |z| > ~17 in float32, so only the
# closed interval can hold; what must never happen is a NaN or an inversion of the order.
ANY = st.floats(allow_nan=False, allow_infinity=False, width=32)
# Values that keep every z_k inside (-16, 16), where float32 sigmoid is strictly inside (0, 1).
Z0 = st.floats(-6.0, 6.0, width=32)
INCREMENT = st.floats(-30.0, 3.0, width=32)  # softplus(3) ~ 3.05, so z_3 <= 6 + 3 * 3.05


@pytest.mark.parametrize("per_facet, rows", [(False, 1), (True, 1), (True, 4)])
@settings(max_examples=150, deadline=None)
@given(data=st.data())
def test_table_is_monotone_and_open_unit_interval(per_facet, rows, data):
    z0, raw = data.draw(_parameters(rows, Z0, INCREMENT))
    table = _gate(z0, raw, per_facet).table().detach()
    assert table.shape == (rows, LEVELS)
    assert bool(((table > 0) & (table < 1)).all()), table
    assert bool((table[:, 1:] >= table[:, :-1]).all()), table
    # The lowest level is exactly sigma(z0): the increments only ever raise the higher levels.
    assert torch.allclose(table[:, 0], torch.sigmoid(torch.tensor(z0)))


@pytest.mark.parametrize("per_facet, rows", [(False, 1), (True, 3)])
@settings(max_examples=150, deadline=None)
@given(data=st.data())
def test_table_stays_ordered_and_finite_for_any_real_parameters(per_facet, rows, data):
    z0, raw = data.draw(_parameters(rows, ANY, ANY))
    table = _gate(z0, raw, per_facet).table().detach()
    assert torch.isfinite(table).all(), table
    assert bool(((table >= 0) & (table <= 1)).all()), table
    assert bool((table[:, 1:] >= table[:, :-1]).all()), table


@settings(max_examples=100, deadline=None)
@given(
    params=_parameters(1, Z0, INCREMENT),
    levels=st.lists(st.lists(st.integers(0, LEVELS - 1), min_size=5, max_size=5), min_size=1, max_size=6),
)
def test_shared_forward_looks_up_the_table(params, levels):
    gate = _gate(*params, per_facet=False)
    levels = torch.tensor(levels)
    out = gate(levels)
    table = gate.table()[0]
    assert out.shape == levels.shape
    for n in range(levels.shape[0]):
        for m in range(levels.shape[1]):
            assert out[n, m] == table[levels[n, m]]


@settings(max_examples=100, deadline=None)
@given(
    params=_parameters(3, Z0, INCREMENT),
    levels=st.lists(st.lists(st.integers(0, LEVELS - 1), min_size=3, max_size=3), min_size=1, max_size=6),
)
def test_per_facet_forward_uses_each_facets_own_row(params, levels):
    gate = _gate(*params, per_facet=True)
    levels = torch.tensor(levels)
    out = gate(levels)
    table = gate.table()
    assert out.shape == levels.shape
    for n in range(levels.shape[0]):
        for m in range(levels.shape[1]):
            assert out[n, m] == table[m, levels[n, m]]


def test_default_start_is_near_the_graph_stages_fixed_weights():
    table = MonotoneGate().table().detach()[0]
    assert table[0] < 0.1 and table[-1] > 0.9
    assert torch.all(table[1:] - table[:-1] > 0.1)  # distinct levels at the start, not collapsed


@pytest.mark.parametrize("num_facets", [None, 3], ids=["shared", "per-facet"])
def test_gradients_reach_every_parameter(num_facets):
    gate = MonotoneGate(num_facets)
    facets = num_facets or 5
    # Every level in every facet column, so every increment (which lifts the levels above it) matters.
    levels = torch.tensor([[(row + col) % LEVELS for col in range(facets)] for row in range(LEVELS)])
    weights = torch.linspace(0.5, 1.5, levels.numel()).reshape(levels.shape)  # no symmetric cancellation
    (gate(levels) * weights).sum().backward()
    for name, parameter in gate.named_parameters():
        assert parameter.grad is not None, name
        assert torch.isfinite(parameter.grad).all(), name
        assert bool((parameter.grad.abs() > 0).all()), (name, parameter.grad)


def test_higher_levels_get_more_gradient_paths():
    """Increment i lifts levels i..3 only: a loss on the lowest levels leaves the top increment untouched."""
    gate = MonotoneGate()
    gate(torch.tensor([[0, 1, 2]])).sum().backward()
    grad = gate.raw_increments.grad[0]
    assert grad[0] > 0 and grad[1] > 0 and grad[2] == 0
