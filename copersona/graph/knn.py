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
  e_v), a maximum inner product search of the queries e_u over the scaled rows omega_v e_v. A faiss
  inverted-file index (``IndexIVFScalarQuantizer``: spherical k-means lists, 8-bit codes, inner-
  product metric) over the scaled rows returns ``candidate_factor * K`` candidates per query from
  its ``probes`` nearest lists; their cosine and weight are recomputed exactly from the float rows,
  self and sub-threshold candidates dropped, and the survivors ranked by the exact rule. A true
  neighbour is missed only when it lies in a list that was not probed, or when its 8-bit score
  falls outside the candidates; in particular, when more peers tie than candidates are fetched,
  which of them are found is up to the codes (deterministic, but not necessarily the smallest
  indices).

``auto`` picks exact up to ``exact_max`` nodes: its cost grows as n^2 d, the inverted file's as
about n^1.5 d (lists and the nodes scanned per probe both grow as sqrt(n)), and below some tens of
thousands of nodes exact is fast and has no recall loss. The index holds one byte per dimension
(a quarter of the float rows) and is filled in batches, so a layer's embeddings are never held
twice in float. :class:`LayerIndex` keeps a layer searchable for new queries (a persona derived at
request time) without rebuilding it per query.
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

# Rows scaled and added to the inverted file at once (float32 rows of d floats).
_ADD_BATCH_ROWS = 65536


@dataclass(frozen=True)
class IVFParameters:
    """The inverted file's shape for a layer of ``n`` nodes (:meth:`for_size`), or set by hand.

    Attributes
    ----------
    lists : int
        Coarse clusters (inverted lists): a power of two near 4 sqrt(n), faiss's usual choice, but
        at most n / 128, so that below about 300k nodes a list holds a neighbourhood's worth of
        rows and a few probes cover it (at 10k nodes, 4 sqrt(n) lists of 32 rows lost a tenth of
        the true neighbours at 8 probes on the benchmark's clustered data).
    probes : int
        Lists scanned per query: at least 8 and lists / 256, so the share of the layer a query
        scans shrinks as 1 / sqrt(n) while the lists around a neighbourhood stay covered.
    training_points : int
        Rows k-means trains on: 32 per list (faiss asks 39 for a warning-free fit; 32 trains 20%
        faster and loses nothing measurable here), all rows of a smaller layer.
    """

    lists: int
    probes: int
    training_points: int

    @classmethod
    def for_size(cls, n: int, *, lists: int = 0, probes: int = 0) -> IVFParameters:
        """Parameters from the layer size; a positive ``lists`` or ``probes`` overrides its rule."""
        if lists <= 0:
            target = 4 * np.sqrt(max(n, 1))
            lists = int(2 ** round(np.log2(target)))
            lists = max(1, min(lists, n // _MIN_ROWS_PER_LIST))
        lists = max(1, min(lists, n))
        if probes <= 0:
            probes = max(8, lists // 256)
        return cls(lists=lists, probes=min(probes, lists), training_points=min(n, _TRAINING_POINTS_PER_LIST * lists))


_MIN_ROWS_PER_LIST = 128
_TRAINING_POINTS_PER_LIST = 32


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
    ivf: IVFParameters | None = None,
    block_size: int | None = None,
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
    method, exact_max, candidate_factor, ivf, block_size
        As in :class:`LayerIndex`.

    Returns
    -------
    Neighbours
        (q, k) arrays, rows in the order of ``rows``.
    """
    index = LayerIndex(
        vectors,
        node_weights,
        method=method,
        exact_max=exact_max,
        candidate_factor=candidate_factor,
        ivf=ivf,
        block_size=block_size,
    )
    query_rows = np.arange(index.size, dtype=np.int64) if rows is None else _as_rows(rows, index.size)
    weights = None if index.weights is None else index.weights[query_rows]
    return index.search(index.vectors[query_rows], k, min_similarity, weights, exclude=query_rows)


class LayerIndex:
    """One layer's nodes, searchable for the gated top-K of any query vector (Eq. 5-6).

    Built once per layer: the graph build queries it with every node, serving with a persona
    derived at request time.

    Parameters
    ----------
    vectors : (n, d) float32
        Node embeddings e_v, unit rows; kept (not copied when already float32 and contiguous)
        for the exact re-scoring.
    node_weights : (n,) float, optional
        omega_v > 0 per node; None ranks by the cosine itself.
    method : {"auto", "exact", "faiss"}
        "auto" is exact when n <= ``exact_max``, else faiss.
    exact_max : int
        Largest n that "auto" searches exactly.
    candidate_factor : int
        faiss: candidates fetched per neighbour kept (plus one for the query's own row).
    ivf : IVFParameters, optional
        faiss: the inverted file's shape; default :meth:`IVFParameters.for_size` (n).
    block_size : int, optional
        exact: query rows per matrix product; default keeps one block's working memory near
        256 MiB.
    """

    def __init__(
        self,
        vectors: np.ndarray,
        node_weights: np.ndarray | None = None,
        *,
        method: SearchMethod = "auto",
        exact_max: int = 20000,
        candidate_factor: int = 4,
        ivf: IVFParameters | None = None,
        block_size: int | None = None,
    ) -> None:
        self.vectors = _as_matrix(vectors)
        self.size = self.vectors.shape[0]
        self.weights = None if node_weights is None else _as_node_weights(node_weights, self.size)
        if method == "auto":
            method = "exact" if self.size <= exact_max else "faiss"
        if method not in ("exact", "faiss"):
            raise ValueError(f"unknown search method {method!r}: use 'auto', 'exact' or 'faiss'")
        if candidate_factor < 1:
            raise ValueError(f"candidate_factor must be >= 1, got {candidate_factor}")
        self.method = method
        self.candidate_factor = candidate_factor
        self.block_size = block_size
        self.ivf = None
        self._faiss_index = None
        if method == "faiss":
            self.ivf = ivf or IVFParameters.for_size(self.size)
            self._faiss_index = build_ivf_index(self.vectors, self.weights, self.ivf)

    def search(
        self,
        queries: np.ndarray,
        k: int,
        min_similarity: float,
        query_weights: np.ndarray | None = None,
        *,
        exclude: np.ndarray | None = None,
    ) -> Neighbours:
        """The top-K nodes of each query by gated weight among those at cosine >= ``min_similarity``.

        Parameters
        ----------
        queries : (q, d) float32
            Unit query rows e_u.
        k : int
            Neighbours per query, K >= 0.
        min_similarity : float
            Candidates need A_uv >= min_similarity, compared in float32.
        query_weights : (q,) float, optional
            omega_u of each query; needed when the index has node weights.
        exclude : (q,) int, optional
            A node each query never returns (its own row), -1 for none.

        Returns
        -------
        Neighbours
            (q, k) arrays in query order, indices into the index's nodes.
        """
        queries = _as_matrix(queries)
        q = queries.shape[0]
        if queries.shape[1] != self.vectors.shape[1]:
            raise ValueError(f"queries have {queries.shape[1]} dimensions, the index {self.vectors.shape[1]}")
        if k < 0:
            raise ValueError(f"k must be >= 0, got {k}")
        if (self.weights is None) != (query_weights is None):
            raise ValueError("query_weights are needed exactly when the index has node weights")
        query_weights = None if query_weights is None else _as_node_weights(query_weights, q)
        exclude = np.full(q, -1, dtype=np.int64) if exclude is None else np.asarray(exclude, dtype=np.int64)
        threshold = np.float32(min_similarity)
        if self.method == "exact":
            return self._exact(queries, k, threshold, query_weights, exclude)
        return self._approximate(queries, k, threshold, query_weights, exclude)

    def _exact(
        self, queries: np.ndarray, k: int, threshold: np.float32, query_weights: np.ndarray | None, exclude: np.ndarray
    ) -> Neighbours:
        n, q = self.size, queries.shape[0]
        result = _padding(q, k, "exact")
        block_size = self.block_size or max(1, _EXACT_BLOCK_BYTES // (_EXACT_BYTES_PER_PAIR * max(n, 1)))
        columns = np.arange(n, dtype=np.int64)
        for start in range(0, q, block_size):
            block = slice(start, min(q, start + block_size))
            cosine = queries[block] @ self.vectors.T  # (b, n)
            keys = cosine.copy() if query_weights is None else _gate(cosine, self.weights, query_weights[block])
            keys[cosine < threshold] = -np.inf
            own = exclude[block]
            has_own = np.flatnonzero(own >= 0)
            keys[has_own, own[has_own]] = -np.inf  # a node is never its own peer
            positions, ranked = _select(keys, columns, k)
            found = positions >= 0
            result.indices[block][found] = positions[found]
            result.similarity[block][found] = np.take_along_axis(cosine, positions, axis=1)[found]
            result.weight[block][found] = ranked[found]
        return result

    def _approximate(
        self, queries: np.ndarray, k: int, threshold: np.float32, query_weights: np.ndarray | None, exclude: np.ndarray
    ) -> Neighbours:
        q, d = queries.shape
        result = _padding(q, k, "faiss")
        if k == 0 or q == 0:
            return result
        candidates = min(self.size, k * self.candidate_factor + 1)  # +1: the query's own row is usually its best hit
        _, found = self._faiss_index.search(queries, candidates)  # (q, c); -1 where the probed lists held fewer
        found = found.astype(np.int64, copy=False)
        block_size = max(1, _RESCORE_BLOCK_BYTES // (4 * candidates * d))
        for start in range(0, q, block_size):
            block = slice(start, min(q, start + block_size))
            peers = found[block]
            valid = (peers >= 0) & (peers != exclude[block, None])
            safe_peers = np.where(valid, peers, 0)
            # The exact cosine of each candidate: e_u . e_v, batched as (b, 1, d) @ (b, d, c).
            cosine = np.matmul(queries[block][:, None, :], self.vectors[safe_peers].transpose(0, 2, 1))[:, 0, :]
            keys = (
                cosine.copy()
                if query_weights is None
                else _gate(cosine, self.weights[safe_peers], query_weights[block])
            )
            keys[~valid | (cosine < threshold)] = -np.inf
            # A full sort of the few candidates: key descending, then node ascending (the exact rule's ties).
            order = np.lexsort((safe_peers, -keys), axis=1)[:, :k]
            rows = np.arange(order.shape[0])[:, None]
            ranked = keys[rows, order]
            kept = np.isfinite(ranked)
            width = slice(0, order.shape[1])  # fewer candidates than k: the rest stays padding
            result.indices[block, width][kept] = safe_peers[rows, order][kept]
            result.similarity[block, width][kept] = cosine[rows, order][kept]
            result.weight[block, width][kept] = ranked[kept]
        return result


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


def build_ivf_index(vectors: np.ndarray, weights: np.ndarray | None, parameters: IVFParameters):
    """A trained and filled faiss ``IndexIVFScalarQuantizer`` over the scaled rows omega_v e_v.

    k-means is spherical (unit centroids: a list's centroid is the direction of its rows, and an
    inner-product assignment does not favour long centroids), trained on ``training_points``
    rows drawn with a fixed seed; rows are scaled and added ``_ADD_BATCH_ROWS`` at a time, so
    besides ``vectors`` only the index's 8-bit codes (d bytes per row) and one batch are held.
    Deterministic for a given machine and thread count (k-means' matrix products are BLAS's).
    """
    import faiss

    n, d = vectors.shape
    quantizer = faiss.IndexFlatIP(d)
    index = faiss.IndexIVFScalarQuantizer(
        quantizer, d, parameters.lists, faiss.ScalarQuantizer.QT_8bit, faiss.METRIC_INNER_PRODUCT
    )
    index.cp.spherical = True
    index.cp.niter = 10
    index.cp.min_points_per_centroid = min(_TRAINING_POINTS_PER_LIST, n // max(parameters.lists, 1))
    sample = np.sort(np.random.default_rng(0).choice(n, size=parameters.training_points, replace=False))
    index.train(_scaled(vectors, weights, sample))
    for start in range(0, n, _ADD_BATCH_ROWS):
        index.add(_scaled(vectors, weights, np.arange(start, min(n, start + _ADD_BATCH_ROWS))))
    index.nprobe = parameters.probes
    return index


def _scaled(vectors: np.ndarray, weights: np.ndarray | None, rows: np.ndarray) -> np.ndarray:
    """omega_v e_v for ``rows`` (a new array)."""
    batch = vectors[rows]
    if weights is not None:
        batch *= weights[rows, None]
    return batch
