"""One facet layer of the persona graph at 10k to 1M users: build cost, recall, memory, query latency.

    python3 benchmarks/graph_build.py [--users 10000 100000 1000000] [--dim 384] [--k 5] [--plot PATH]

For each N, in a fresh process (so peak memory is that size's alone), draws N clustered unit
vectors (a mixture of Gaussians on the sphere, within-cluster cosines of about 0.4-0.8, so
neighbourhoods are meaningful) and random reliability labels, then builds the layer as
``copersona.graph.multiplex`` does above ``graph.exact_max_users``: a faiss inverted file with
parameters from N (:class:`copersona.graph.knn.IVFParameters`), then every user's gated top-K.
It reports:

* build seconds per layer (index training, filling, and the top-K search of all N users);
* recall@K against exact search on ``--exact-sample`` random users (exact search on every user
  costs n^2 d; its time on the sample, scaled by N / rows, is shown for comparison);
* peak RSS of the process and the float vectors' own size;
* p50 / p99 of a serving-time neighbour query: one persona derived at request time (a user's
  vector, perturbed) searched against the built layer, one query at a time;
* the growth exponent of build time between successive sizes (time ~ N^x).
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import subprocess
import sys
import time

import numpy as np

from copersona.config import GraphConfig
from copersona.facets.records import RELIABILITY_LEVELS
from copersona.graph.knn import LayerIndex
from copersona.graph.multiplex import reliability_gates

# A skew toward moderate evidence, as summaries of short histories produce.
RELIABILITY_SHARES = [0.15, 0.25, 0.35, 0.25]
USERS_PER_CLUSTER = 500
# Rows drawn at once, so drawing the data never holds more than the vectors and one batch.
DRAW_BATCH = 65536
SERVING_QUERIES = 1000


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
    points = np.empty((n, dim), dtype=np.float32)
    for start in range(0, n, DRAW_BATCH):
        rows = membership[start : start + DRAW_BATCH]
        batch = centres[rows] + rng.standard_normal((rows.size, dim), dtype=np.float32) * sigma[rows, None]
        points[start : start + rows.size] = batch / np.linalg.norm(batch, axis=1, keepdims=True)
    return points


def recall(truth: np.ndarray, found: np.ndarray) -> float:
    """Share of the real (non-padding) entries of ``truth`` that appear in the same row of ``found``."""
    hits = sum(len(set(t[t >= 0].tolist()) & set(f[f >= 0].tolist())) for t, f in zip(truth, found))
    return hits / max(1, int((truth >= 0).sum()))


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def measure(n: int, args: argparse.Namespace) -> dict:
    config = GraphConfig(top_k=args.k)
    rng = np.random.default_rng(args.seed)
    vectors = clustered_unit_vectors(n, args.dim, rng)
    labels = rng.choice(list(RELIABILITY_LEVELS), size=n, p=RELIABILITY_SHARES).tolist()
    weights = reliability_gates(labels, config)
    every_user = np.arange(n)

    started = time.perf_counter()
    layer = LayerIndex(vectors, weights, method="faiss", candidate_factor=config.candidate_factor)
    index_seconds = time.perf_counter() - started
    started = time.perf_counter()
    approximate = layer.search(vectors, args.k, config.min_similarity, weights, exclude=every_user)
    search_seconds = time.perf_counter() - started

    rows = np.sort(rng.choice(n, size=min(n, args.exact_sample), replace=False))
    exact_layer = LayerIndex(vectors, weights, method="exact")
    started = time.perf_counter()
    exact = exact_layer.search(vectors[rows], args.k, config.min_similarity, weights[rows], exclude=rows)
    exact_seconds = (time.perf_counter() - started) * n / rows.size

    # A persona derived at request time: a stored user's vector moved a little, with its own gate.
    asked = rng.choice(n, size=SERVING_QUERIES, replace=False)
    queries = vectors[asked] + rng.standard_normal((SERVING_QUERIES, args.dim), dtype=np.float32) * 0.02
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    latencies = []
    for query, gate in zip(queries, weights[asked]):
        started = time.perf_counter()
        layer.search(query[None, :], args.k, config.min_similarity, gate[None])
        latencies.append(time.perf_counter() - started)

    return {
        "users": n,
        "lists": layer.ivf.lists,
        "probes": layer.ivf.probes,
        "index_seconds": index_seconds,
        "search_seconds": search_seconds,
        "layer_seconds": index_seconds + search_seconds,
        "exact_rows": int(rows.size),
        "exact_seconds": exact_seconds,
        "recall": recall(exact.indices, approximate.indices[rows]),
        "neighbours": float(exact.counts.mean()),
        "query_p50_ms": float(np.percentile(latencies, 50) * 1e3),
        "query_p99_ms": float(np.percentile(latencies, 99) * 1e3),
        "vectors_mib": vectors.nbytes / 2**20,
        "peak_rss_mib": peak_rss_mib(),
    }


def growth_exponents(results: list[dict]) -> list[str]:
    """log(t2 / t1) / log(n2 / n1) of layer seconds between each size and the one before."""
    exponents = [""]
    for before, after in zip(results, results[1:]):
        ratio = np.log(after["layer_seconds"] / before["layer_seconds"]) / np.log(after["users"] / before["users"])
        exponents.append(f"{ratio:.2f}")
    return exponents


def print_table(results: list[dict], args: argparse.Namespace) -> None:
    headers = [
        "users",
        "lists/probes",
        "index s",
        "search s",
        "layer s",
        "growth",
        "exact s",
        f"recall@{args.k}",
        "nbrs/user",
        "query p50 ms",
        "query p99 ms",
        "vectors MiB",
        "peak RSS MiB",
    ]
    rows = [
        [
            f"{r['users']:,}",
            f"{r['lists']}/{r['probes']}",
            f"{r['index_seconds']:.1f}",
            f"{r['search_seconds']:.1f}",
            f"{r['layer_seconds']:.1f}",
            growth,
            f"{r['exact_seconds']:.0f}" + ("" if r["exact_rows"] == r["users"] else "*"),
            f"{r['recall']:.4f}",
            f"{r['neighbours']:.2f}",
            f"{r['query_p50_ms']:.3f}",
            f"{r['query_p99_ms']:.3f}",
            f"{r['vectors_mib']:,.0f}",
            f"{r['peak_rss_mib']:,.0f}",
        ]
        for r, growth in zip(results, growth_exponents(results))
    ]
    config = GraphConfig(top_k=args.k)
    title = (
        f"One facet layer, faiss IVF with 8-bit codes: d={args.dim}, K={args.k}, cosine >= {config.min_similarity}, "
        f"candidates={args.k}*{config.candidate_factor}+1"
    )
    caption = (
        "layer s = index s (k-means, filling) + search s (every user's top-K); growth: layer time ~ N^x from the "
        f"size above; exact s* = exact search on {args.exact_sample:,} sampled users x N / rows; recall@K and "
        "nbrs/user on those users; query: one derived persona against the built layer; peak RSS of a process "
        f"per size. {platform.processor() or platform.machine()}, {_threads()}."
    )
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title, caption=caption)
    for header in headers:
        table.add_column(header, justify="right")
    for row in rows:
        table.add_row(*row)
    Console(width=180).print(table)


def plot(results: list[dict], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    users = [r["users"] for r in results]
    figure, axis = plt.subplots(figsize=(6, 4))
    axis.loglog(users, [r["layer_seconds"] for r in results], "o-", label="faiss IVF layer (build + all top-K)")
    axis.loglog(users, [r["exact_seconds"] for r in results], "s--", label="exact search (extrapolated)")
    axis.axhline(600, color="grey", linestyle=":", label="goal: 10 min per layer")
    axis.set_xlabel("users")
    axis.set_ylabel("seconds per layer")
    axis.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=120)


def _threads() -> str:
    import faiss

    return f"{faiss.omp_get_max_threads()} faiss threads"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--users", type=int, nargs="+", default=[10000, 100000, 1000000], help="layer sizes N")
    parser.add_argument("--dim", type=int, default=384, help="embedding dimension d")
    parser.add_argument("--k", type=int, default=GraphConfig().top_k, help="neighbours per user K")
    parser.add_argument("--exact-sample", type=int, default=2000, help="users whose exact top-K checks recall")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--plot", help="also draw the cost curve to this PNG")
    parser.add_argument("--one", action="store_true", help=argparse.SUPPRESS)  # a child process: one size, JSON out
    args = parser.parse_args()
    if args.one:
        print(json.dumps(measure(args.users[0], args)))
        return
    results = []
    for n in args.users:
        child = [sys.executable, __file__, "--one", "--users", str(n), "--dim", str(args.dim), "--k", str(args.k)]
        child += ["--exact-sample", str(args.exact_sample), "--seed", str(args.seed)]
        output = subprocess.run(child, check=True, capture_output=True, text=True).stdout
        results.append(json.loads(output.strip().splitlines()[-1]))
        print(f"{n:,} users: {results[-1]['layer_seconds']:.1f} s", file=sys.stderr)
    print_table(results, args)
    if args.plot:
        plot(results, args.plot)


if __name__ == "__main__":
    main()
