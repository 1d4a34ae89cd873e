"""Top-K neighbour search: the selection rule on hand-made cases, a brute-force property, faiss."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from synthetic import clustered_unit_vectors

from copersona.graph.knn import IVFParameters, LayerIndex, Neighbours, top_k_neighbours

OMEGA = {"none": 0.05, "weak": 0.25, "moderate": 0.60, "strong": 0.95}


def at_angles(*degrees: float) -> np.ndarray:
    """Unit vectors in the plane; the cosine of two of them is cos(angle difference)."""
    radians = np.radians(degrees)
    return np.stack([np.cos(radians), np.sin(radians)], axis=1).astype(np.float32)


# Each case: vectors, K, threshold, node weights (None = ungated) and the expected (n, K) indices.
CASES = [
    pytest.param(
        at_angles(0, 0, 0),
        2,
        0.5,
        None,
        [[1, 2], [0, 2], [0, 1]],
        id="self-excluded-identical-vectors",
    ),
    pytest.param(
        # node 1 is weak but at cosine 0.94 (kept); node 2 is strong but at cosine 0.34 (dropped)
        at_angles(0, 20, 70),
        2,
        0.35,
        [OMEGA["strong"], OMEGA["none"], OMEGA["strong"]],
        [[1, -1], [0, 2], [1, -1]],
        id="threshold-on-cosine-not-weight",
    ),
    pytest.param(
        # from node 0: node 1 at cosine 0.94, weak (W = 0.22); node 2 at cosine 0.64, strong (W = 0.61)
        at_angles(0, 20, 50),
        2,
        0.35,
        [OMEGA["strong"], OMEGA["weak"], OMEGA["strong"]],
        [[2, 1], [0, 2], [0, 1]],
        id="strong-lower-cosine-outranks-weak-higher-cosine",
    ),
    pytest.param(
        # uneven gaps, so no two peers of a node are equally close
        at_angles(0, 10, 25, 45, 70, 100),
        2,
        0.0,
        None,
        [[1, 2], [0, 2], [1, 3], [2, 4], [3, 5], [4, 3]],
        id="top-k-respected",
    ),
    pytest.param(
        at_angles(0, 30, 120, 200),
        3,
        0.35,
        None,
        [[1, -1, -1], [0, -1, -1], [-1, -1, -1], [-1, -1, -1]],
        id="fewer-than-k-padded",
    ),
    pytest.param(
        # 1, 2 and 3 tie on both cosine and weight: the smaller index wins the cut and the order
        at_angles(0, 40, 40, 40),
        2,
        0.35,
        None,
        [[1, 2], [2, 3], [1, 3], [1, 2]],
        id="ties-to-smaller-index",
    ),
    pytest.param(
        # ties straddling the cut, where argpartition's pick is arbitrary; 12 nodes, so faiss's
        # 3 * 4 + 1 candidates are all of them (beyond that, which tied peers the 8-bit codes rank first is
        # the index's business)
        at_angles(*[0] * 12),
        3,
        0.5,
        None,
        [[j for j in range(4) if j != i][:3] for i in range(12)],
        id="ties-straddling-the-cut",
    ),
    pytest.param(
        at_angles(0, 10),
        0,
        0.35,
        None,
        [[], []],
        id="k-zero",
    ),
]


@pytest.mark.parametrize("method", ["exact", "faiss"])
@pytest.mark.parametrize(("vectors", "k", "threshold", "weights", "expected"), CASES)
def test_selection_rule(vectors, k, threshold, weights, expected, method):
    weights = None if weights is None else np.asarray(weights, dtype=np.float32)
    found = top_k_neighbours(vectors, k, threshold, weights, method=method)
    assert found.method == method
    np.testing.assert_array_equal(found.indices, np.asarray(expected, dtype=np.int64).reshape(len(vectors), k))
    assert_invariants(vectors, threshold, weights, found)


def assert_invariants(
    vectors: np.ndarray, threshold: float, weights: np.ndarray | None, found: Neighbours, rows: np.ndarray | None = None
) -> None:
    """Self excluded, cosine above threshold, weight = gate(cosine), strongest first, padding last."""
    rows = np.arange(len(vectors)) if rows is None else rows
    omega = np.ones(len(vectors), dtype=np.float32) if weights is None else weights
    for u, indices, similarity, weight in zip(rows, found.indices, found.similarity, found.weight):
        real = indices >= 0
        count = int(real.sum())
        assert real[:count].all() and not real[count:].any(), "padding must follow the neighbours"
        assert (similarity[count:] == 0).all() and (weight[count:] == 0).all()
        peers = indices[:count]
        assert u not in peers
        assert len(set(peers.tolist())) == count
        np.testing.assert_allclose(similarity[:count], vectors[peers] @ vectors[u], rtol=1e-5, atol=1e-6)
        assert (similarity[:count] >= np.float32(threshold)).all()
        np.testing.assert_allclose(weight[:count], omega[u] * omega[peers] * similarity[:count], rtol=1e-6)
        assert (np.diff(weight[:count]) <= 0).all()


def brute_force(vectors: np.ndarray, k: int, threshold: float, weights: np.ndarray | None) -> np.ndarray:
    """The rule written out one pair at a time: (n, k) indices, -1 padded."""
    n = len(vectors)
    cosine = (vectors.astype(np.float64) @ vectors.T.astype(np.float64)).astype(np.float32)
    result = np.full((n, k), -1, dtype=np.int64)
    for u in range(n):
        scored = []
        for v in range(n):
            if v == u or cosine[u, v] < np.float32(threshold):
                continue
            weight = cosine[u, v] if weights is None else (cosine[u, v] * weights[v]) * weights[u]
            scored.append((-weight, v))
        chosen = [v for _, v in sorted(scored)[:k]]
        result[u, : len(chosen)] = chosen
    return result


@st.composite
def small_problems(draw):
    n = draw(st.integers(1, 24))
    d = draw(st.integers(1, 5))
    # Entries are multiples of 1/4 and thresholds multiples of 1/16: every inner product is exact
    # in float32 whatever the summation order, so exact ties occur and must break by index.
    entries = draw(st.lists(st.integers(-3, 3), min_size=n * d, max_size=n * d))
    vectors = (np.asarray(entries, dtype=np.float32) / 4).reshape(n, d)
    k = draw(st.integers(0, 6))
    threshold = draw(st.integers(-16, 16)) / 16
    gated = draw(st.booleans())
    weights = (
        np.asarray(draw(st.lists(st.sampled_from(list(OMEGA.values())), min_size=n, max_size=n)), dtype=np.float32)
        if gated
        else None
    )
    block_size = draw(st.sampled_from([1, 3, None]))
    return vectors, k, threshold, weights, block_size


@settings(max_examples=150, deadline=None)
@given(small_problems())
def test_exact_equals_brute_force(problem):
    vectors, k, threshold, weights, block_size = problem
    found = top_k_neighbours(vectors, k, threshold, weights, method="exact", block_size=block_size)
    np.testing.assert_array_equal(found.indices, brute_force(vectors, k, threshold, weights))


@pytest.fixture(scope="module")
def clustered_layer():
    vectors = clustered_unit_vectors(3000, 32, 30, seed=7)
    weights = np.random.default_rng(8).choice(np.float32(list(OMEGA.values())), size=len(vectors))
    return vectors, weights


def recall(truth: np.ndarray, found: np.ndarray) -> float:
    hits = sum(len(set(t[t >= 0].tolist()) & set(f[f >= 0].tolist())) for t, f in zip(truth, found))
    return hits / max(1, int((truth >= 0).sum()))


def test_faiss_recall_and_invariants(clustered_layer):
    vectors, weights = clustered_layer
    exact = top_k_neighbours(vectors, 5, 0.35, weights, method="exact")
    approximate = top_k_neighbours(vectors, 5, 0.35, weights, method="faiss")
    assert (exact.indices >= 0).sum() > 0.9 * exact.indices.size, "the fixture should have neighbours"
    assert recall(exact.indices, approximate.indices) >= 0.95
    assert_invariants(vectors, 0.35, weights, approximate)


@pytest.mark.parametrize("method", ["exact", "faiss"])
def test_deterministic_and_row_subsets_agree(clustered_layer, method):
    vectors, weights = clustered_layer
    first = top_k_neighbours(vectors, 5, 0.35, weights, method=method)
    second = top_k_neighbours(vectors, 5, 0.35, weights, method=method)
    for name in ("indices", "similarity", "weight"):
        np.testing.assert_array_equal(getattr(first, name), getattr(second, name))
    rows = np.array([2999, 0, 17, 17, 1500])
    subset = top_k_neighbours(vectors, 5, 0.35, weights, rows=rows, method=method)
    np.testing.assert_array_equal(subset.indices, first.indices[rows])
    assert_invariants(vectors, 0.35, weights, subset, rows=rows)


@pytest.mark.parametrize(("n", "expected"), [(10, "exact"), (11, "faiss")])
def test_auto_switches_at_exact_max(n, expected):
    found = top_k_neighbours(clustered_unit_vectors(n, 8, 2, seed=0), 2, 0.35, method="auto", exact_max=10)
    assert found.method == expected


def test_ungated_weight_is_similarity(clustered_layer):
    vectors, _ = clustered_layer
    found = top_k_neighbours(vectors[:500], 5, 0.35)
    np.testing.assert_array_equal(found.weight, found.similarity)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"k": -1}, "k must be"),
        ({"node_weights": np.zeros(4)}, "positive"),
        ({"node_weights": np.ones(3)}, "shape"),
        ({"rows": np.array([4])}, "rows must index"),
        ({"method": "annoy"}, "unknown search method"),
        ({"method": "faiss", "candidate_factor": 0}, "candidate_factor"),
    ],
)
def test_rejects_bad_arguments(kwargs, message):
    arguments = {"vectors": at_angles(0, 10, 20, 30), "k": 2, "min_similarity": 0.35, **kwargs}
    with pytest.raises(ValueError, match=message):
        top_k_neighbours(**arguments)


def test_rejects_non_finite_vectors():
    vectors = at_angles(0, 10)
    vectors[0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        top_k_neighbours(vectors, 1, 0.35)


@pytest.mark.parametrize("method", ["exact", "faiss"])
def test_a_new_query_finds_what_it_would_find_as_a_node(clustered_layer, method):
    """Serving searches a built layer with a persona derived at request time: its top-K must be the
    row it would get as one more node of the layer, with its own stored row left out."""
    vectors, weights = clustered_layer
    rng = np.random.default_rng(3)
    users = rng.choice(len(vectors), size=20, replace=False)
    queries = vectors[users] + rng.normal(scale=0.05, size=(20, vectors.shape[1])).astype(np.float32)
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    gates = weights[users]
    index = LayerIndex(vectors, weights, method=method)
    found = index.search(queries, 5, 0.35, gates, exclude=users)
    for row, (user, query, gate) in enumerate(zip(users, queries, gates)):
        others = np.delete(np.arange(len(vectors)), user)
        as_node = top_k_neighbours(
            np.vstack([vectors[others], query]), 5, 0.35, np.append(weights[others], gate), rows=[len(others)]
        )
        expected = np.where(as_node.indices[0] >= 0, others[np.maximum(as_node.indices[0], 0)], -1)
        if method == "exact":
            np.testing.assert_array_equal(found.indices[row], expected)
        else:
            assert recall(expected[None], found.indices[row][None]) >= 0.8
    assert user not in found.indices[-1]


@pytest.mark.parametrize(
    ("n", "lists", "probes", "training_points"),
    [
        (1, 1, 1, 1),
        (3000, 23, 8, 736),
        (100_000, 781, 8, 24992),
        (1_000_000, 4096, 16, 131072),
    ],
)
def test_ivf_parameters_grow_with_the_layer(n, lists, probes, training_points):
    assert IVFParameters.for_size(n) == IVFParameters(lists, probes, training_points)
    assert IVFParameters.for_size(n, lists=32, probes=4) == IVFParameters(min(32, n), min(4, 32, n), min(n, 1024))
