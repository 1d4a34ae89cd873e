"""The multiplex persona graph: one sparse, reliability-gated similarity layer per facet (Sec. 3.2).

Layer m links user u to its top-K peers v by the gated facet similarity (Eq. 5-6)

    W_uv^(m) = omega(r_u^(m)) * omega(r_v^(m)) * A_uv^(m),   A_uv^(m) = e_u^(m) . e_v^(m),

among the peers with A_uv^(m) >= min_similarity (App. C: K = 5, threshold 0.35, omega = [0.05,
0.25, 0.60, 0.95] for none, weak, moderate, strong). Edges are directed: v in N_u does not imply
u in N_v. Beside the facet layers, the whole-persona layer (:mod:`copersona.graph.persona_layer`)
links users on their profile embedding and writing style. A pair's combined similarity, the
mean of its facet weights over all M facets mixed with its whole-persona weight
(:func:`copersona.graph.records.rank_neighbours`), is read from the stored edges by
:meth:`copersona.store.Store.neighbours`.

:func:`global_knn` is the unstructured alternative the paper argues against: one ungated K-NN
graph over a single vector per user.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np

from copersona.config import GraphConfig
from copersona.facets.records import RELIABILITY_LEVELS
from copersona.graph.knn import IVFParameters, LayerIndex, Neighbours, top_k_neighbours
from copersona.graph.persona_layer import has_persona_layer, persona_layer, population_standardization
from copersona.graph.records import PERSONA_LAYER, STYLE_META, Edge
from copersona.store import Store

GLOBAL_FACET_KEY = "__global__"

_LEVEL_INDEX = {level: i for i, level in enumerate(RELIABILITY_LEVELS)}


def reliability_gates(reliabilities: Sequence[str], config: GraphConfig) -> np.ndarray:
    """omega(r_u) per user: (n,) float32 from ``config.reliability_weights`` by level.

    Raises ValueError for an unknown label or a weight table that is not four positive numbers.
    """
    omega = np.asarray(config.reliability_weights, dtype=np.float32)
    if omega.shape != (len(RELIABILITY_LEVELS),) or not (omega > 0).all():
        raise ValueError(
            f"graph.reliability_weights must be {len(RELIABILITY_LEVELS)} positive numbers "
            f"(for {', '.join(RELIABILITY_LEVELS)}), got {config.reliability_weights}"
        )
    try:
        levels = np.fromiter((_LEVEL_INDEX[r] for r in reliabilities), dtype=np.int64, count=len(reliabilities))
    except KeyError as err:
        raise ValueError(f"unknown reliability label {err.args[0]!r}; known: {RELIABILITY_LEVELS}") from None
    return omega[levels]


def layer_gates(reliabilities: Sequence[str] | None, n: int, config: GraphConfig) -> np.ndarray:
    """omega per node of a layer: by reliability label, or 1 for an ungated layer (``None``)."""
    if reliabilities is None:
        return np.ones(n, dtype=np.float32)
    if len(reliabilities) != n:
        raise ValueError(f"{n} vectors but {len(reliabilities)} reliability labels")
    return reliability_gates(reliabilities, config)


def layer_neighbours(
    vectors: np.ndarray, reliabilities: Sequence[str] | None, config: GraphConfig, rows: np.ndarray | None = None
) -> Neighbours:
    """One layer's top-K neighbours of every user (or of ``rows``), gated by reliability (Eq. 6).

    Parameters
    ----------
    vectors : (n, d) float32
        The facet embeddings e_u^(m) (or the whole-persona vectors x_u), unit rows.
    reliabilities : sequence of n labels, or None
        r_u^(m) in none / weak / moderate / strong; None for an ungated layer (omega = 1).
    config : GraphConfig
        K, the cosine threshold, omega and the exact/approximate switch.
    rows : (q,) int, optional
        Search only these users' neighbours (every user stays a candidate); default all, q = n.

    Returns
    -------
    Neighbours
        (q, K) indices, cosine A_uv and full gated weight omega_u omega_v A_uv.
    """
    return top_k_neighbours(
        vectors,
        config.top_k,
        config.min_similarity,
        layer_gates(reliabilities, len(vectors), config),
        rows=rows,
        **search_settings(config, len(vectors)),
    )


def layer_index(vectors: np.ndarray, gates: np.ndarray, config: GraphConfig) -> LayerIndex:
    """A layer searchable for new queries (a persona derived at request time), as the build searched it."""
    return LayerIndex(vectors, gates, **search_settings(config, len(vectors)))


def search_settings(config: GraphConfig, n: int) -> dict:
    """The search a layer of ``n`` users gets: exact or approximate, and the index's parameters."""
    return {
        "exact_max": config.exact_max_users,
        "candidate_factor": config.candidate_factor,
        "ivf": IVFParameters.for_size(n, lists=config.ivf_lists, probes=config.ivf_probes),
    }


def edges_of(
    facet_key: str, user_ids: Sequence[str], neighbours: Neighbours, sources: Sequence[str] | None = None
) -> Iterator[Edge]:
    """The edges of a layer, by source in ``user_ids`` order, then by rank (0 = strongest).

    ``neighbours`` indexes ``user_ids``; its rows are ``sources`` when only some rows were searched.
    """
    for source, row_indices, row_similarity, row_weight in zip(
        user_ids if sources is None else sources,
        neighbours.indices.tolist(),
        neighbours.similarity.tolist(),
        neighbours.weight.tolist(),
    ):
        for rank, (target, similarity, weight) in enumerate(zip(row_indices, row_similarity, row_weight)):
            if target < 0:
                break  # padding only follows the real neighbours
            yield Edge(
                facet_key=facet_key,
                source=source,
                target=user_ids[target],
                similarity=similarity,
                weight=weight,
                rank=rank,
            )


Layer = tuple[list[str], np.ndarray, list[str] | None]  # a layer's users, vectors, reliability labels (None: ungated)


def graph_layer(store: Store, config: GraphConfig, key: str) -> Layer:
    """A layer's node table as stored now: a facet's states, or the whole-persona layer's vectors."""
    if key == PERSONA_LAYER:
        user_ids, vectors = persona_layer(store, config)
        return user_ids, vectors, None
    return store.facet_layer(key, placeholders=config.placeholder_edges)


def layer_keys(store: Store, config: GraphConfig, facet_keys: Sequence[str]) -> list[str]:
    """The stored graph's layers: one per facet, and the whole-persona layer where the build made one
    (and its weight is not 0)."""
    built = config.persona_weight > 0 and has_persona_layer(store)
    return [*facet_keys, PERSONA_LAYER] if built else list(facet_keys)


def refresh_sources(store: Store, config: GraphConfig, facet_key: str, sources: Sequence[str]) -> int:
    """Recompute the out-edges of ``sources`` in one layer against the layer as stored now.

    After a user leaves (or their facet text changes), only rows that can change are searched
    again: with exact search the result equals a full rebuild's rows for those users. Returns
    the number of rows recomputed (sources no longer in the layer are skipped).
    """
    return _refresh(store, config, facet_key, graph_layer(store, config, facet_key), sources)


def _refresh(store: Store, config: GraphConfig, facet_key: str, layer: Layer, sources: Sequence[str]) -> int:
    user_ids, vectors, reliabilities = layer
    position = {user: i for i, user in enumerate(user_ids)}
    present = [s for s in sources if s in position]
    if not present:
        store.replace_layer_rows(facet_key, sources, [])
        return 0
    rows = np.array([position[s] for s in present], dtype=np.int64)
    neighbours = layer_neighbours(vectors, reliabilities, config, rows)
    store.replace_layer_rows(facet_key, sources, edges_of(facet_key, user_ids, neighbours, present))
    return len(present)


def _may_gain(store: Store, config: GraphConfig, facet_key: str, layer: Layer, changed: Sequence[str]) -> set[str]:
    """Users of the layer whose top-K a changed user may now enter: the changed user's gated weight
    to them reaches their current K-th neighbour's (or they have room for one more)."""
    user_ids, vectors, reliabilities = layer
    if not user_ids:
        return set()
    position = {user: i for i, user in enumerate(user_ids)}
    gates = layer_gates(reliabilities, len(user_ids), config)
    kth = np.full(len(user_ids), -np.inf, dtype=np.float32)  # -inf: room for another neighbour
    counts = np.zeros(len(user_ids), dtype=np.int64)
    lowest = np.full(len(user_ids), np.inf, dtype=np.float32)
    for edge in store.edges(facet_key=facet_key):
        if edge.source in position:
            row = position[edge.source]
            counts[row] += 1
            lowest[row] = min(lowest[row], edge.weight)
    full = counts >= config.top_k
    kth[full] = lowest[full]
    found: set[str] = set()
    for user in changed:
        if user not in position:
            continue
        row = position[user]
        similarity = vectors @ vectors[row]
        weight = gates * gates[row] * similarity
        # >= keeps ties: a tie may reorder a list, so the list is searched again.
        candidates = (similarity >= np.float32(config.min_similarity)) & (weight >= kth)
        candidates[row] = False
        found.update(user_ids[i] for i in np.flatnonzero(candidates))
    return found


def repair_layers(store: Store, config: GraphConfig, facet_keys: Sequence[str], changed: Sequence[str]) -> set[str]:
    """After the facet states of ``changed`` users were rewritten, search again the rows that can
    differ from a rebuild's: the changed users', those that had one as a neighbour, and those one
    may now enter. Costs one pass of dot products per changed user and layer, not a rebuild.
    Returns every user whose neighbour list was searched again."""
    touched: set[str] = set()
    keys = layer_keys(store, config, facet_keys)
    pointing: dict[str, set[str]] = {key: set() for key in keys}
    for user in changed:
        for facet_key, sources in store.in_edges(user).items():
            pointing.setdefault(facet_key, set()).update(sources)
    for facet_key in keys:
        layer = graph_layer(store, config, facet_key)  # read once per layer
        rows = set(changed) | pointing[facet_key] | _may_gain(store, config, facet_key, layer, changed)
        _refresh(store, config, facet_key, layer, sorted(rows))
        touched |= rows
    return touched


def build_layer(
    facet_key: str, user_ids: Sequence[str], vectors: np.ndarray, reliabilities: Sequence[str], config: GraphConfig
) -> list[Edge]:
    """Facet layer m as edges: each user's top-K peers by omega(r_u) omega(r_v) cos(e_u, e_v).

    Parameters
    ----------
    facet_key : str
        The facet m; every edge carries it.
    user_ids : sequence of n str
        Node names, row-aligned with ``vectors`` and ``reliabilities``.
    vectors : (n, d) float32
        Unit facet embeddings.
    reliabilities : sequence of n labels
        Reliability r_u^(m) of each user's facet summary.
    config : GraphConfig

    Returns
    -------
    list of Edge
        Grouped by source in ``user_ids`` order, rank 0 first; ``similarity`` is the cosine,
        ``weight`` the gated weight.
    """
    if len(user_ids) != len(vectors):
        raise ValueError(f"{len(user_ids)} user ids but {len(vectors)} vectors")
    return list(edges_of(facet_key, user_ids, layer_neighbours(vectors, reliabilities, config)))


def build_graph(store: Store, config: GraphConfig, facet_keys: Sequence[str]) -> dict[str, dict]:
    """Build every facet layer from the store's facet states, and the whole-persona layer
    (:mod:`copersona.graph.persona_layer`, unless ``config.persona_weight`` is 0), and replace
    the stored graph.

    Each facet layer's node table comes from :meth:`Store.facet_layer` (users sorted by id, so the
    result does not depend on insertion order); users whose facet text is the placeholder are
    nodes only with ``config.placeholder_edges``. All layers are computed before anything is
    written, and the new edges replace the old ones in a single transaction: readers see the
    old graph or the new one, never a mix.

    Parameters
    ----------
    store : Store
        Holds the facet states (embeddings and reliability labels); receives the edges.
    config : GraphConfig
    facet_keys : sequence of str
        The schema's facets, one layer each; a key without states gives an empty layer.

    Returns
    -------
    dict
        Per layer key (the facets', then ``PERSONA_LAYER``): ``users`` (nodes in the layer),
        ``edges``, ``users_with_edges`` (sources with at least one edge), ``mean_weight`` (of its
        edges' gated weights; 0.0 without edges) and ``method`` (the search used).
    """
    layers: list[tuple[str, list[str], Neighbours]] = []
    counts: dict[str, dict] = {}
    # The first build standardizes the style features, later ones keep it (frozen like the summary
    # calibration); none stored says there is no whole-persona layer.
    standardization = None
    if config.persona_weight > 0:
        standardization = store.get_meta(STYLE_META) or population_standardization(store)
    for facet_key in [*facet_keys, PERSONA_LAYER] if standardization else facet_keys:
        if facet_key == PERSONA_LAYER:
            user_ids, vectors = persona_layer(store, config, standardization)
            reliabilities = None
        else:
            user_ids, vectors, reliabilities = graph_layer(store, config, facet_key)
        neighbours = layer_neighbours(vectors, reliabilities, config)
        found = neighbours.indices >= 0
        layers.append((facet_key, user_ids, neighbours))
        counts[facet_key] = {
            "users": len(user_ids),
            "edges": int(found.sum()),
            "users_with_edges": int(found.any(axis=1).sum()),
            "mean_weight": float(neighbours.weight[found].mean()) if found.any() else 0.0,
            "method": neighbours.method,
        }
    # Edge records are made as they are written, so only the compact arrays are held at once.
    with store.transaction():
        store.set_meta(STYLE_META, standardization)
        store.replace_edges(
            edge for facet_key, user_ids, neighbours in layers for edge in edges_of(facet_key, user_ids, neighbours)
        )
    return counts


def global_knn(
    user_ids: Sequence[str],
    vectors: np.ndarray,
    k: int,
    min_similarity: float,
    *,
    exact_max: int = GraphConfig.exact_max_users,
    candidate_factor: int = GraphConfig.candidate_factor,
) -> list[Edge]:
    """The single-graph baseline: each user's top-K peers by plain cosine, no facets, no gating.

    Parameters
    ----------
    user_ids : sequence of n str
    vectors : (n, d) float32
        One unit vector per user (e.g. the profile embedding).
    k : int
        Neighbours per user.
    min_similarity : float
        Cosine threshold.
    exact_max, candidate_factor : int
        As in :func:`copersona.graph.knn.top_k_neighbours`.

    Returns
    -------
    list of Edge
        ``facet_key`` "__global__", ``weight`` equal to ``similarity``. Not for the store, whose
        combined similarity averages over the schema's facets.
    """
    if len(user_ids) != len(vectors):
        raise ValueError(f"{len(user_ids)} user ids but {len(vectors)} vectors")
    neighbours = top_k_neighbours(vectors, k, min_similarity, exact_max=exact_max, candidate_factor=candidate_factor)
    return list(edges_of(GLOBAL_FACET_KEY, user_ids, neighbours))
