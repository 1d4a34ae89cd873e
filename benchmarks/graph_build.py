"""Exact versus faiss HNSW neighbour search for one facet layer of the persona graph.

    python3 benchmarks/graph_build.py [--users 10000 100000] [--dim 384] [--k 5]

For each N, draws N clustered unit vectors (a mixture of Gaussians projected onto the sphere, with
within-cluster cosines of about 0.4-0.8, so neighbourhoods are meaningful) and random reliability
labels, then times one reliability-gated layer (the search ``copersona.graph.multiplex`` runs per
facet) by exact search and by faiss HNSW, and reports recall@K of faiss against exact: the share
of exact neighbours that faiss also returns.

Exact search costs n^2 d; above ``--full-exact-max`` users it runs on ``--exact-sample`` random
query rows against all N nodes, its time is scaled by N / rows, and recall is computed on those
rows; the table marks such rows. Peak RSS is the process's high-water mark so far.
"""

from __future__ import annotations

import argparse
import platform
import resource
import time

import numpy as np

from copersona.config import GraphConfig
from copersona.facets.records import RELIABILITY_LEVELS
from copersona.graph.knn import HNSW_EF_CONSTRUCTION, HNSW_M, top_k_neighbours
from copersona.graph.multiplex import reliability_gates

# A skew toward moderate evidence, as summaries of short histories produce.
RELIABILITY_SHARES = [0.15, 0.25, 0.35, 0.25]
USERS_PER_CLUSTER = 500


def clustered_unit_vectors(n: int, dim: int, rng: np.random.Generator) -> np.ndarray:
    """(n, dim) float32 unit rows around n / 500 random centres.

    A point is centre + noise with per-coordinate scale sigma; two points of one cluster then
    have cosine about 1 / (1 + sigma^2 dim). Each cluster draws that cosine from [0.4, 0.8].
    """
    clusters = max(1, n // USERS_PER_CLUSTER)
    centres = rng.standard_normal((clusters, dim), dtype=np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    within_cosine = rng.uniform(0.4, 0.8, clusters)
    sigma = np.sqrt((1 / within_cosine - 1) / dim).astype(np.float32)
    membership = rng.integers(0, clusters, n)
    points = centres[membership]
    points += rng.standard_normal((n, dim), dtype=np.float32) * sigma[membership, None]
    points /= np.linalg.norm(points, axis=1, keepdims=True)
    return points


def recall(truth: np.ndarray, found: np.ndarray) -> float:
    """Share of the real (non-padding) entries of ``truth`` that appear in the same row of ``found``."""
    hits = sum(len(set(t[t >= 0].tolist()) & set(f[f >= 0].tolist())) for t, f in zip(truth, found))
    return hits / max(1, int((truth >= 0).sum()))


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def measure(n: int, args: argparse.Namespace, config: GraphConfig) -> dict:
    rng = np.random.default_rng(args.seed)
    vectors = clustered_unit_vectors(n, args.dim, rng)
    labels = rng.choice(list(RELIABILITY_LEVELS), size=n, p=RELIABILITY_SHARES).tolist()
    weights = reliability_gates(labels, config)
    search = {"k": args.k, "min_similarity": config.min_similarity, "node_weights": weights}

    started = time.perf_counter()
    approximate = top_k_neighbours(vectors, method="faiss", candidate_factor=args.candidate_factor, **search)
    faiss_seconds = time.perf_counter() - started

    sampled = n > args.full_exact_max and args.exact_sample < n
    rows = np.sort(rng.choice(n, size=args.exact_sample, replace=False)) if sampled else np.arange(n)
    started = time.perf_counter()
    exact = top_k_neighbours(vectors, method="exact", rows=rows, **search)
    exact_seconds = (time.perf_counter() - started) * n / rows.size

    return {
        "users": n,
        "exact_rows": f"{rows.size:,} (sample)" if sampled else f"{rows.size:,}",
        "exact_seconds": exact_seconds,
        "sampled": sampled,
        "faiss_seconds": faiss_seconds,
        "speedup": exact_seconds / faiss_seconds,
        "recall": recall(exact.indices, approximate.indices[rows]),
        "neighbours": float(exact.counts.mean()),
        "peak_rss_mib": peak_rss_mib(),
    }


def print_table(results: list[dict], args: argparse.Namespace) -> None:
    headers = ["users", "exact rows", "exact s", "faiss s", "speed-up", f"recall@{args.k}", "nbrs/user", "peak RSS MiB"]
    rows = [
        [
            f"{r['users']:,}",
            r["exact_rows"],
            f"{r['exact_seconds']:.1f}" + (" (extrap.)" if r["sampled"] else ""),
            f"{r['faiss_seconds']:.1f}",
            f"{r['speedup']:.1f}x",
            f"{r['recall']:.4f}",
            f"{r['neighbours']:.2f}",
            f"{r['peak_rss_mib']:,.0f}",
        ]
        for r in results
    ]
    title = (
        f"One facet layer: d={args.dim}, K={args.k}, cosine >= {GraphConfig().min_similarity}, "
        f"HNSW M={HNSW_M} efConstruction={HNSW_EF_CONSTRUCTION} candidates={args.k}*{args.candidate_factor}+1"
    )
    caption = (
        "exact s of a sampled row is (time on the sampled rows) x N / rows; recall@K and nbrs/user "
        f"(exact neighbours per user) are on the exact rows. {platform.processor() or platform.machine()}, "
        f"{_threads()}."
    )
    try:
        from rich.console import Console
        from rich.table import Table
    except ImportError:
        widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headers)]
        print(title)
        for line in [headers, *rows]:
            print("  ".join(cell.rjust(width) for cell, width in zip(line, widths)))
        print(caption)
        return
    table = Table(title=title, caption=caption)
    for header in headers:
        table.add_column(header, justify="right")
    for row in rows:
        table.add_row(*row)
    Console(width=140).print(table)


def _threads() -> str:
    import faiss

    return f"{faiss.omp_get_max_threads()} faiss search threads (HNSW insertion single-threaded)"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--users", type=int, nargs="+", default=[10000, 100000], help="layer sizes N")
    parser.add_argument("--dim", type=int, default=384, help="embedding dimension d")
    parser.add_argument("--k", type=int, default=GraphConfig().top_k, help="neighbours per user K")
    parser.add_argument(
        "--candidate-factor",
        type=int,
        default=GraphConfig().candidate_factor,
        help="faiss candidates fetched per neighbour kept",
    )
    parser.add_argument(
        "--exact-sample", type=int, default=2000, help="query rows of the exact search above --full-exact-max users"
    )
    parser.add_argument(
        "--full-exact-max",
        type=int,
        default=GraphConfig().exact_max_users,
        help="largest N whose exact search runs on every row",
    )
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    config = GraphConfig(top_k=args.k, candidate_factor=args.candidate_factor)
    results = []
    for n in args.users:
        results.append(measure(n, args, config))
    print_table(results, args)


if __name__ == "__main__":
    main()
