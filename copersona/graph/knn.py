"""Top-K neighbour search with reliability gating (Sec. 3.2, Eq. 5-6; App. C).

For n nodes with rows e_u of unit L2 norm, the cosine similarity is A_uv = e_u . e_v (Eq. 5) and
the gated weight is W_uv = omega_u * omega_v * A_uv (Eq. 6), omega_u > 0 being the node's
reliability weight. Node u's neighbours are the nodes v != u with A_uv >= min_similarity (the
threshold is on the cosine, not the gated weight), the K largest by W_uv, ties broken by the
smaller index v. Every result is a deterministic function of the inputs.

Two searches compute them:

* ``exact``: blocks of query rows against the whole matrix (one matrix product per block, memory
  bounded by ``block_size``), then ``argpartition`` and a stable sort of the K survivors.
* ``faiss``: an approximate candidate search, then the exact rule on the candidates. Since
  omega_u is constant within row u, ranking by W_uv is ranking by omega_v * A_uv = e_u . (omega_v
  e_v), a maximum inner product search of the queries e_u over the scaled rows omega_v e_v. An
  HNSW graph (faiss ``IndexHNSWFlat``, inner-product metric) over the scaled rows returns
  ``candidate_factor * K`` candidates per query; their cosine and weight are recomputed exactly,
  self and sub-threshold candidates dropped, and the survivors ranked by the exact rule. A true
  neighbour is missed only when the HNSW walk does not reach it; in particular, when more peers
  tie than candidates are fetched, which of them are found is up to the walk (deterministic, but
  not necessarily the smallest indices).

``auto`` picks exact up to ``exact_max`` nodes: its cost grows as n^2 d, the HNSW build's as
about n log(n) d, and below some tens of thousands of nodes exact is fast and has no recall loss.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

SearchMethod = Literal["auto", "exact", "faiss"]

# Bytes of working memory per (query row, node) pair in an exact block: the cosine and key
# matrices (4 + 4), a boolean mask (1), the negated keys argpartition ranks (4) and its int64
# index output (8).
_EXACT_BYTES_PER_PAIR = 21
_EXACT_BLOCK_BYTES = 256 * 2**20
# Rows of the candidate matrix re-scored at once on the faiss path: (rows, candidates, d) floats.
_RESCORE_BLOCK_BYTES = 128 * 2**20

# HNSW defaults: M = 32 links per node and efConstruction = 80; on the clustered 384-d unit
# vectors of benchmarks/graph_build.py they recover 99.9% of the exact top-5 at 100k users, in
# a quarter of exact search's time.
HNSW_M = 32
HNSW_EF_CONSTRUCTION = 80
# The search beam is never narrower than this, nor than twice the candidates fetched.
HNSW_MIN_EF_SEARCH = 64


@dataclass(frozen=True)
class Neighbours:
    """Each query row's top-K neighbours, strongest first; rows with fewer are padded.

    Attributes
    ----------
    indices : (q, k) int64
        Neighbour node indices; -1 pads rows with fewer than K qualifying neighbours.
    similarity : (q, k) float32
        Cosine A_uv of each neighbour; 0 in padding.
    weight : (q, k) float32
        Gated weight W_uv = (A_uv * omega_v) * omega_u, non-increasing along each row; equal to
        ``similarity`` when the search ran without node weights; 0 in padding.
    method : {"exact", "faiss"}
        The search that produced them.
    """

    indices: np.ndarray
    similarity: np.ndarray
    weight: np.ndarray
    method: str

    @property
    def counts(self) -> np.ndarray:
        """(q,) int64: the number of real (unpadded) neighbours of each row."""
        return (self.indices >= 0).sum(axis=1)


def top_k_neighbours(
    vectors: np.ndarray,
    k: int,
    min_similarity: float,
    node_weights: np.ndarray | None = None,
    *,
    rows: np.ndarray | None = None,
    method: SearchMethod = "auto",
    exact_max: int = 20000,
    candidate_factor: int = 4,
    block_size: int | None = None,
    hnsw_m: int = HNSW_M,
    ef_construction: int = HNSW_EF_CONSTRUCTION,
    ef_search: int | None = None,
) -> Neighbours:
    """Each node's top-K peers by gated weight among those at cosine >= ``min_similarity``.

    Parameters
    ----------
    vectors : (n, d) float32
        Node embeddings e_u, rows of unit L2 norm (the inner product is read as the cosine; rows
        are not renormalised here).
    k : int
        Neighbours kept per node, K >= 0.
    min_similarity : float
        Candidates need A_uv >= min_similarity, compared in float32.
    node_weights : (n,) float, optional
        omega_u > 0 per node; None ranks by the cosine itself (W = A).
    rows : (q,) int, optional
        Query only these node indices (all n nodes remain candidates); default all, q = n.
    method : {"auto", "exact", "faiss"}
        Search; "auto" is exact when n <= ``exact_max``, else faiss.
    exact_max : int
        Largest n that "auto" searches exactly.
    candidate_factor : int
        faiss: candidates fetched per neighbour kept (plus one for the query itself).
    block_size : int, optional
        exact: query rows per matrix product; default keeps one block's working memory near
        256 MiB.
    hnsw_m, ef_construction : int
        faiss: HNSW links per node and construction beam width.
    ef_search : int, optional
        faiss: search beam width; default max(64, 2 * candidates). faiss widens it to the
        candidate count if smaller.

    Returns
    -------
    Neighbours
        (q, k) arrays, rows in the order of ``rows``.
    """
    vectors = _as_matrix(vectors)
    n = vectors.shape[0]
    if k < 0:
        raise ValueError(f"k must be >= 0, got {k}")
    weights = None if node_weights is None else _as_node_weights(node_weights, n)
    query_rows = np.arange(n, dtype=np.int64) if rows is None else _as_rows(rows, n)
    if method == "auto":
        method = "exact" if n <= exact_max else "faiss"
    if method == "exact":
        return _exact(vectors, k, np.float32(min_similarity), weights, query_rows, block_size)
    if method == "faiss":
        if candidate_factor < 1:
            raise ValueError(f"candidate_factor must be >= 1, got {candidate_factor}")
        return _approximate(
            vectors,
            k,
            np.float32(min_similarity),
            weights,
            query_rows,
            candidate_factor,
            hnsw_m,
            ef_construction,
            ef_search,
        )
    raise ValueError(f"unknown search method {method!r}: use 'auto', 'exact' or 'faiss'")


def _as_matrix(vectors: np.ndarray) -> np.ndarray:
    matrix = np.ascontiguousarray(vectors, dtype=np.float32)
    if matrix.ndim != 2:
        raise ValueError(f"vectors must be a (n, d) matrix, got shape {matrix.shape}")
    if not np.isfinite(matrix).all():
        raise ValueError("vectors contain NaN or infinite values")
    return matrix


def _as_node_weights(node_weights: np.ndarray, n: int) -> np.ndarray:
    weights = np.asarray(node_weights, dtype=np.float32)
    if weights.shape != (n,):
        raise ValueError(f"node_weights must have shape ({n},), got {weights.shape}")
    # omega > 0 keeps the per-row factor omega_u from reordering (or tying) a row's peers, which
    # is what lets the approximate search rank by omega_v * A_uv alone.
    if not (np.isfinite(weights).all() and (weights > 0).all()):
        raise ValueError("node_weights must be finite and positive")
    return weights


def _as_rows(rows: np.ndarray, n: int) -> np.ndarray:
    query_rows = np.asarray(rows, dtype=np.int64).reshape(-1)
    if query_rows.size and (query_rows.min() < 0 or query_rows.max() >= n):
        raise ValueError(f"rows must index the {n} nodes")
    return query_rows


def _padding(q: int, k: int, method: str) -> Neighbours:
    """(q, k) rows of nothing but padding, to be filled in."""
    return Neighbours(
        indices=np.full((q, k), -1, dtype=np.int64),
        similarity=np.zeros((q, k), dtype=np.float32),
        weight=np.zeros((q, k), dtype=np.float32),
        method=method,
    )


def _gate(similarity: np.ndarray, peer_weights: np.ndarray, query_weights: np.ndarray) -> np.ndarray:
    """W = (A * omega_v) * omega_u in float32, in this order on every path so the bits agree.

    ``similarity`` is (q, c), ``peer_weights`` (q, c) or (c,), ``query_weights`` (q,).
    """
    weight = similarity * peer_weights
    weight *= query_weights[:, None]
    return weight


def _select(keys: np.ndarray, columns: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Per row, the positions of the k largest finite keys, ties to the smaller column.

    Parameters
    ----------
    keys : (q, c) float32
        Ranking keys; -inf marks non-candidates.
    columns : (q, c) or (c,) int64
        Node index of each position, the tie-breaker.

    Returns
    -------
    positions : (q, k) int64
        Positions into ``keys``' rows, best first; -1 where fewer than k keys are finite.
    ranked_keys : (q, k) float32
        The keys at ``positions``; -inf at -1.
    """
    q, c = keys.shape
    if k == 0 or c == 0:
        return np.full((q, k), -1, dtype=np.int64), np.full((q, k), -np.inf, dtype=np.float32)
    columns = np.broadcast_to(columns, keys.shape)
    take = min(k, c)
    if take < c:
        # argpartition's choice among keys equal to the k-th largest is arbitrary; it is
        # corrected below for the rows where such a tie straddles the cut.
        positions = np.argpartition(-keys, take - 1, axis=1)[:, :take]
    else:
        positions = np.broadcast_to(np.arange(c), (q, c)).copy()
    chosen = np.take_along_axis(keys, positions, axis=1)
    cut = chosen.min(axis=1)
    straddling = np.flatnonzero(np.isfinite(cut) & ((keys >= cut[:, None]).sum(axis=1) > take))
    for row in straddling:
        # Everything above the cut is in; the places left go to the smallest tied columns.
        above = np.flatnonzero(keys[row] > cut[row])
        tied = np.flatnonzero(keys[row] == cut[row])
        tied = tied[np.argsort(columns[row, tied], kind="stable")[: take - above.size]]
        positions[row] = np.concatenate([above, tied])
    chosen = np.take_along_axis(keys, positions, axis=1)
    chosen_columns = np.take_along_axis(columns, positions, axis=1)
    order = np.lexsort((chosen_columns, -chosen), axis=1)  # key descending, then column ascending
    positions = np.take_along_axis(positions, order, axis=1)
    chosen = np.take_along_axis(chosen, order, axis=1)
    positions[~np.isfinite(chosen)] = -1
    if take < k:
        positions = np.pad(positions, ((0, 0), (0, k - take)), constant_values=-1)
        chosen = np.pad(chosen, ((0, 0), (0, k - take)), constant_values=-np.inf)
    return positions, chosen


def _exact(
    vectors: np.ndarray,
    k: int,
    threshold: np.float32,
    weights: np.ndarray | None,
    query_rows: np.ndarray,
    block_size: int | None,
) -> Neighbours:
    n = vectors.shape[0]
    q = query_rows.size
    result = _padding(q, k, "exact")
    if block_size is None:
        block_size = max(1, _EXACT_BLOCK_BYTES // (_EXACT_BYTES_PER_PAIR * max(n, 1)))
    columns = np.arange(n, dtype=np.int64)
    for start in range(0, q, block_size):
        block = query_rows[start : start + block_size]
        cosine = vectors[block] @ vectors.T  # (b, n)
        keys = cosine.copy() if weights is None else _gate(cosine, weights, weights[block])
        keys[cosine < threshold] = -np.inf
        keys[np.arange(block.size), block] = -np.inf  # a node is never its own peer
        positions, ranked = _select(keys, columns, k)
        found = positions >= 0
        rows_out = slice(start, start + block.size)
        result.indices[rows_out][found] = positions[found]
        result.similarity[rows_out][found] = np.take_along_axis(cosine, positions, axis=1)[found]
        result.weight[rows_out][found] = ranked[found]
    return result


def _approximate(
    vectors: np.ndarray,
    k: int,
    threshold: np.float32,
    weights: np.ndarray | None,
    query_rows: np.ndarray,
    candidate_factor: int,
    hnsw_m: int,
    ef_construction: int,
    ef_search: int | None,
) -> Neighbours:
    n, d = vectors.shape
    q = query_rows.size
    if k == 0 or q == 0:
        return _padding(q, k, "faiss")
    candidates = min(n, k * candidate_factor + 1)  # +1: the query itself is usually its own best hit
    index = build_hnsw_index(
        vectors if weights is None else vectors * weights[:, None], hnsw_m=hnsw_m, ef_construction=ef_construction
    )
    index.hnsw.efSearch = max(HNSW_MIN_EF_SEARCH, 2 * candidates) if ef_search is None else ef_search
    _, found = index.search(vectors[query_rows], candidates)  # (q, c); -1 where the walk found fewer
    found = found.astype(np.int64, copy=False)

    result = _padding(q, k, "faiss")
    block_size = max(1, _RESCORE_BLOCK_BYTES // (4 * candidates * d))
    for start in range(0, q, block_size):
        block = query_rows[start : start + block_size]
        peers = found[start : start + block.size]
        valid = (peers >= 0) & (peers != block[:, None])
        safe_peers = np.where(valid, peers, 0)
        # The exact cosine of each candidate: e_u . e_v, batched as (b, 1, d) @ (b, d, c).
        cosine = np.matmul(vectors[block][:, None, :], vectors[safe_peers].transpose(0, 2, 1))[:, 0, :]
        keys = cosine.copy() if weights is None else _gate(cosine, weights[safe_peers], weights[block])
        keys[~valid | (cosine < threshold)] = -np.inf
        positions, ranked = _select(keys, safe_peers, k)
        kept = positions >= 0
        rows_out = slice(start, start + block.size)
        result.indices[rows_out][kept] = np.take_along_axis(safe_peers, positions, axis=1)[kept]
        result.similarity[rows_out][kept] = np.take_along_axis(cosine, positions, axis=1)[kept]
        result.weight[rows_out][kept] = ranked[kept]
    return result


def build_hnsw_index(points: np.ndarray, *, hnsw_m: int = HNSW_M, ef_construction: int = HNSW_EF_CONSTRUCTION):
    """A faiss ``IndexHNSWFlat`` with the inner-product metric over ``points`` (n, d) float32.

    Insertion runs on one thread: faiss inserts in parallel under per-node locks, so the graph
    (and the neighbours found through it) would depend on thread timing. Single-threaded, the
    graph is a function of the points and their order; level assignment draws from faiss's
    fixed-seed generator. Searching is parallel and still deterministic, each query's walk being
    independent of the others.
    """
    import faiss

    index = faiss.IndexHNSWFlat(points.shape[1], hnsw_m, faiss.METRIC_INNER_PRODUCT)
    index.hnsw.efConstruction = ef_construction
    threads = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    try:
        index.add(np.ascontiguousarray(points, dtype=np.float32))
    finally:
        faiss.omp_set_num_threads(threads)
    return index
