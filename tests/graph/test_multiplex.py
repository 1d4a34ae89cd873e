"""Facet layers, the stored multiplex graph and the global K-NN baseline."""

from __future__ import annotations

import numpy as np
import pytest
from synthetic import clustered_unit_vectors

from copersona.config import GraphConfig
from copersona.data.records import Interaction, User
from copersona.facets.profile import style_features
from copersona.facets.records import Facet, FacetSchema, FacetSummary
from copersona.graph.knn import top_k_neighbours
from copersona.graph.multiplex import (
    GLOBAL_FACET_KEY,
    build_graph,
    build_layer,
    edges_of,
    global_knn,
    layer_neighbours,
    reliability_gates,
)
from copersona.graph.persona_layer import persona_vectors, population_standardization
from copersona.graph.records import PERSONA_LAYER, STYLE_META, rank_neighbours
from copersona.store import Store

CONFIG = GraphConfig()
PLACEHOLDER = "No explicit profile information provided."
OMEGA = dict(zip(("none", "weak", "moderate", "strong"), CONFIG.reliability_weights))
LEVELS = list(OMEGA)


def random_layer(n: int = 60, d: int = 16, seed: int = 0) -> tuple[list[str], np.ndarray, list[str]]:
    rng = np.random.default_rng(seed)
    user_ids = [f"u{i:03d}" for i in range(n)]
    return user_ids, clustered_unit_vectors(n, d, 4, seed), [LEVELS[i] for i in rng.integers(0, 4, n)]


@pytest.mark.parametrize(
    ("labels", "weights", "expected"),
    [
        (["none", "weak", "moderate", "strong"], None, [0.05, 0.25, 0.60, 0.95]),
        (["strong", "strong", "none"], [0.1, 0.2, 0.3, 0.4], [0.4, 0.4, 0.1]),
        ([], None, []),
    ],
)
def test_reliability_gates(labels, weights, expected):
    config = GraphConfig() if weights is None else GraphConfig(reliability_weights=weights)
    np.testing.assert_allclose(reliability_gates(labels, config), expected, rtol=1e-7)


@pytest.mark.parametrize(
    ("labels", "weights", "message"),
    [
        (["certain"], None, "unknown reliability label 'certain'"),
        (["none"], [0.1, 0.2, 0.3], "4 positive numbers"),
        (["none"], [0.0, 0.2, 0.3, 0.4], "4 positive numbers"),
    ],
)
def test_reliability_gates_reject(labels, weights, message):
    config = GraphConfig() if weights is None else GraphConfig(reliability_weights=weights)
    with pytest.raises(ValueError, match=message):
        reliability_gates(labels, config)


def test_layer_weights_are_gated_cosines():
    user_ids, vectors, labels = random_layer()
    edges = build_layer("tone", user_ids, vectors, labels, CONFIG)
    position = {u: i for i, u in enumerate(user_ids)}
    assert edges, "the clustered layer should have edges"
    for edge in edges:
        u, v = position[edge.source], position[edge.target]
        assert edge.facet_key == "tone" and u != v
        assert edge.similarity == pytest.approx(float(vectors[u] @ vectors[v]), rel=1e-5)
        assert edge.similarity >= CONFIG.min_similarity
        assert edge.weight == pytest.approx(OMEGA[labels[u]] * OMEGA[labels[v]] * edge.similarity, rel=1e-6)
    by_source: dict[str, list] = {}
    for edge in edges:
        by_source.setdefault(edge.source, []).append(edge)
    for row in by_source.values():
        assert [e.rank for e in row] == list(range(len(row))) and len(row) <= CONFIG.top_k
        assert all(a.weight >= b.weight for a, b in zip(row, row[1:]))


def test_layer_prefers_strong_peer_over_closer_weak_one():
    # from "a": "b" at cosine 0.94 but weak (W = 0.22), "c" at cosine 0.64 and strong (W = 0.58)
    radians = np.radians([0, 20, 50])
    vectors = np.stack([np.cos(radians), np.sin(radians)], axis=1).astype(np.float32)
    edges = build_layer("values", ["a", "b", "c"], vectors, ["strong", "weak", "strong"], CONFIG)
    assert [e.target for e in edges if e.source == "a"] == ["c", "b"]


def test_layer_is_deterministic():
    layer = random_layer(seed=3)
    assert build_layer("tone", *layer, CONFIG) == build_layer("tone", *layer, CONFIG)


@pytest.mark.parametrize(
    ("user_ids", "labels", "message"),
    [(["a"], ["none", "none"], "1 user ids but 2 vectors"), (["a", "b"], ["none"], "2 vectors but 1 reliability")],
)
def test_layer_rejects_misaligned_inputs(user_ids, labels, message):
    with pytest.raises(ValueError, match=message):
        build_layer("tone", user_ids, clustered_unit_vectors(2, 4, 1, seed=0), labels, CONFIG)


FACET_KEYS = ["tone", "topics", "values"]


@pytest.fixture
def store(tmp_path):
    """A store with a three-facet schema and every user's state on every facet."""
    user_ids, _, _ = random_layer()
    rng = np.random.default_rng(11)
    with Store(tmp_path / "s.sqlite") as store:
        store.write_schema(
            FacetSchema(
                facets=[Facet(name=key.title(), definition=f"The user's {key}.") for key in FACET_KEYS],
                source="builtin",
            )
        )
        states = []
        for seed, key in enumerate(FACET_KEYS):
            vectors = clustered_unit_vectors(len(user_ids), 16, 4, seed=seed)
            for user_id, vector, level in zip(user_ids, vectors, rng.integers(0, 4, len(user_ids))):
                summary = FacetSummary(
                    user_id=user_id,
                    facet_key=key,
                    summary=f"{user_id} on {key}.",
                    reliability=LEVELS[level],
                    method="extractive",
                )
                states.append((summary, vector))
        store.write_facet_states(states, PLACEHOLDER)
        # Profiles of different lengths (two reviews each; the held-out one is not in the profile)
        # and profile embeddings: the whole-persona layer's inputs.
        store.write_users(
            [
                User(
                    user_id=user_id,
                    interactions=[
                        Interaction(user_id=user_id, item_id=f"i{t}", timestamp=t, text="Good strings! " * (1 + n % 7))
                        for t in range(3)
                    ],
                )
                for n, user_id in enumerate(user_ids)
            ],
            holdout_k=1,
        )
        # The first half with the style features a build stores beside the vectors; the rest as a
        # store made before they were stored (the layer computes them from the profiles).
        vectors, half = clustered_unit_vectors(len(user_ids), 16, 4, seed=7), len(user_ids) // 2
        profiles = store.profiles(user_ids[:half])
        store.write_profile_vectors(
            user_ids[:half], vectors[:half], [style_features(profiles[u]) for u in user_ids[:half]]
        )
        store.write_profile_vectors(user_ids[half:], vectors[half:])
        yield store


def test_build_graph_stores_every_layer(store):
    counts = build_graph(store, CONFIG, FACET_KEYS)

    user_ids, profile_vectors = store.profile_vectors()
    profiles = store.profiles()
    features = np.array([style_features(profiles[u]) for u in user_ids])
    persona = persona_vectors(profile_vectors, features, store.get_meta(STYLE_META), CONFIG.style_scale)
    layers = {key: store.facet_layer(key, placeholders=False) for key in FACET_KEYS}
    layers[PERSONA_LAYER] = (user_ids, persona, None)  # ungated
    for key, (users, vectors, labels) in layers.items():
        expected = list(edges_of(key, users, layer_neighbours(vectors, labels, CONFIG)))
        assert store.edges(facet_key=key) == expected
        assert counts[key] == {
            "users": len(users),
            "edges": len(expected),
            "users_with_edges": len({e.source for e in expected}),
            "mean_weight": pytest.approx(np.mean([e.weight for e in expected])),
            "method": "exact",
        }
    assert store.count("edges") == sum(c["edges"] for c in counts.values())
    assert store.get_meta(STYLE_META) == population_standardization(store)


@pytest.mark.parametrize("persona_weight", [0.0, 0.5, 1.0])
def test_stored_neighbours_mix_the_facet_mean_with_the_persona_layer(store, persona_weight):
    config = GraphConfig(persona_weight=persona_weight)
    build_graph(store, config, FACET_KEYS)
    store.set_meta("build_config", {"graph": {"persona_weight": persona_weight}})
    user = "u000"
    per_peer: dict[str, dict[str, float]] = {}
    for edge in store.edges(source=user):
        per_peer.setdefault(edge.target, {})[edge.facet_key] = edge.weight
    assert any(PERSONA_LAYER in w for w in per_peer.values()) == (persona_weight > 0)
    neighbours = store.neighbours(user)
    assert {n.user_id: n.facets for n in neighbours} == per_peer
    for n in neighbours:
        facet_mean = sum(w for k, w in n.facets.items() if k != PERSONA_LAYER) / len(FACET_KEYS)
        expected = (1 - persona_weight) * facet_mean + persona_weight * n.facets.get(PERSONA_LAYER, 0.0)
        assert n.combined == pytest.approx(expected)
    assert [n.combined for n in neighbours] == sorted((n.combined for n in neighbours), reverse=True)


@pytest.mark.parametrize(
    ("weights", "persona_weight", "order"),
    [
        # the paper's rule: the persona layer's weight does not count
        ({"a": {"tone": 0.9}, "b": {"tone": 0.3, PERSONA_LAYER: 0.99}}, 0.0, ["a", "b"]),
        # an even mix: b's whole-persona similarity outweighs a's single facet
        ({"a": {"tone": 0.9}, "b": {"tone": 0.3, PERSONA_LAYER: 0.99}}, 0.5, ["b", "a"]),
        # a peer found only by the persona layer still ranks by it
        ({"a": {"tone": 0.3}, "c": {PERSONA_LAYER: 0.5}}, 0.5, ["c", "a"]),
        # ties by user id
        ({"b": {PERSONA_LAYER: 0.5}, "a": {PERSONA_LAYER: 0.5}}, 1.0, ["a", "b"]),
    ],
)
def test_rank_neighbours_mixes_layers(weights, persona_weight, order):
    assert [n.user_id for n in rank_neighbours(weights, 3, persona_weight)] == order


def test_persona_vectors_put_style_beside_the_profile_embedding():
    profile_vectors = clustered_unit_vectors(2, 8, 1, seed=1)
    profiles = [
        [Interaction(user_id="a", item_id="i", timestamp=0, text="Short.")],
        [Interaction(user_id="b", item_id="i", timestamp=0, text="A much longer review, with commas! " * 20)],
    ]
    features = np.array([style_features(p) for p in profiles])
    standardization = {"features": ["x"] * 8, "mean": [0.0] * 8, "std": [1.0] * 8}
    x = persona_vectors(profile_vectors, features, standardization, 0.5)
    np.testing.assert_allclose(np.linalg.norm(x, axis=1), 1.0, rtol=1e-6)
    assert not np.allclose(x[0, 8:], x[1, 8:])  # the style block tells the writers apart
    # before normalization the first style entry is s z / sqrt(k) beside the unit profile embedding
    scale = x[1, :8] @ profile_vectors[1]
    np.testing.assert_allclose(x[1, 8] / scale, 0.5 * np.log1p(features[1, 0]) / np.sqrt(8), rtol=1e-5)
    # a query that is not a user (None) has the mean style: its vector is the profile embedding
    np.testing.assert_allclose(persona_vectors(profile_vectors, None, standardization, 0.5)[:, :8], profile_vectors)
    np.testing.assert_allclose(persona_vectors(profile_vectors, features, standardization, 0.0)[:, :8], profile_vectors)


def test_persona_weight_zero_builds_the_papers_graph(store):
    build_graph(store, CONFIG, FACET_KEYS)
    assert store.edges(facet_key=PERSONA_LAYER)
    build_graph(store, GraphConfig(persona_weight=0.0), FACET_KEYS)
    assert not store.edges(facet_key=PERSONA_LAYER) and store.get_meta(STYLE_META) is None


def test_build_graph_replaces_and_is_deterministic(store):
    first_counts = build_graph(store, CONFIG, FACET_KEYS)
    first_edges = store.edges()
    assert build_graph(store, CONFIG, FACET_KEYS) == first_counts
    assert store.edges() == first_edges


def test_build_graph_with_an_empty_layer(store):
    counts = build_graph(store, CONFIG, ["tone", "no_such_facet"])
    assert counts["no_such_facet"] == {
        "users": 0,
        "edges": 0,
        "users_with_edges": 0,
        "mean_weight": 0.0,
        "method": "exact",
    }
    assert {e.facet_key for e in store.edges()} == {"tone", PERSONA_LAYER}


def test_global_knn_is_ungated_cosine_knn():
    user_ids, vectors, _ = random_layer(seed=5)
    edges = global_knn(user_ids, vectors, 5, 0.35)
    reference = top_k_neighbours(vectors, 5, 0.35)
    assert {e.facet_key for e in edges} == {GLOBAL_FACET_KEY}
    assert all(e.weight == e.similarity for e in edges)
    assert [(e.source, e.target) for e in edges] == [
        (user_ids[u], user_ids[v]) for u, row in enumerate(reference.indices) for v in row if v >= 0
    ]


def test_placeholder_users_get_no_edges_unless_asked(store):
    """Placeholder facet texts are identical, so by default their users are left out of the layer."""
    placeholder_users = {s.user_id for s in store.facet_states(facet_key="tone") if s.reliability in ("none", "weak")}
    assert placeholder_users
    build_graph(store, CONFIG, FACET_KEYS)
    touched = {e.source for e in store.edges(facet_key="tone")} | {e.target for e in store.edges(facet_key="tone")}
    assert not touched & placeholder_users
    build_graph(store, GraphConfig(placeholder_edges=True), FACET_KEYS)
    assert {e.source for e in store.edges(facet_key="tone")} & placeholder_users
