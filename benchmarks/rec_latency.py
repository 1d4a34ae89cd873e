"""Online latency, memory and scaling of PERSONA4REC's persona index (paper 003, Sec. 3.2, 4.3, Table 7, Fig. 4).

    python3 benchmarks/rec_latency.py --store runs/rec-mi.sqlite [--repeats 5] [--threads 1]
        [--embed-sample 500] [--seed 0]

Works on a copy of the store taken with SQLite's backup API (so a store in use by another process
is read consistently, WAL included, and never locked for long); the encoder's vector cache is read
there and any vector it lacks is written there. The vanilla encoder (the store's ``rec`` config,
the packaged MiniLM by default) and gamma (chosen by ``rec evaluate``, else the last of the decay
grid) are used; neither changes what is timed. On the test candidates of every generator, for each
user with a training profile (the others are not personalized: generator order):

1. single query: Eq. 10 scoring and reranking of one user's candidates by ``PersonaIndex.rerank``
   with the user vector precomputed; the user encoding alone (gather of the user's cached entry
   vectors held in memory, Eq. 7 decayed mean), and the same through ``CachedEncoder`` (the SQLite
   vector cache); the full online path (user encoding + rerank); and a plain numpy reference of
   the same scoring (each item's persona rows padded to the widest item, one gather, one matmul,
   max over each item's rows, stable argsort). Every query's numpy ranking is checked against the
   library's: orders may differ only among scores within 1e-5 (float ties), and must otherwise
   match (asserted). p50/p99 over all queries x ``--repeats``, against the paper's 0.52 ms (CPU).
2. memory: the index (``memory_bytes``: the faiss index's vectors, which the library reads in place, and
   each row's reference; the padded row table), the process RSS
   delta while ``PersonaIndex.build`` ran, and the encoder's weights, against the paper's 0.1 GB.
3. scaling (Fig. 4): (a) 1, 10, 50 and 100 concurrent users as one batch: sequential
   ``PersonaIndex.rerank`` calls, against a batched numpy path that stacks the user vectors and
   scores every user's candidates at once, either by gathering each user's padded persona rows
   (B x C x P x d, batched matmul) or by one GEMM of the users against the union of the batch's
   persona rows; (b) 20, 50 and 100 candidates per user, the extra ones drawn uniformly (seeded)
   from the items the user has no training interaction with.
4. build: ``PersonaIndex.build`` per 1k items with every vector cached, through the SQLite cache and
   from memory (pure index construction); and the encoder's time per 1k persona texts, encoding
   up to ``--embed-sample`` of them afresh with ``embedder.encode`` (no cache).

Prints one table per part and a summary line; ratios are between rows of this one run.
"""

from __future__ import annotations

import argparse
import gc
import os
import random
import resource
import sqlite3
import tempfile
import time
from contextlib import closing
from pathlib import Path

import faiss
import numpy as np
import torch

from copersona.backends.embed import load_embedder
from copersona.rec.config import RecConfig
from copersona.rec.profiles import CachedEncoder, decayed_mean, training_profiles, user_vectors
from copersona.rec.rerank import PersonaIndex
from copersona.store.rec import RecStore

PAPER_CPU_MS = 0.52
PAPER_MEMORY_GB = 0.1
#: Scores closer than this are float ties: two orders that differ only among them are the same ranking.
TIE = 1e-5


def copy_store(source: Path, target: Path, attempts: int = 30) -> None:
    """A consistent copy through the backup API, retried while another process holds a write lock."""
    for attempt in range(attempts):
        try:
            with closing(sqlite3.connect(f"file:{source}?mode=ro", uri=True, timeout=10)) as src:
                with closing(sqlite3.connect(target)) as dst:
                    src.backup(dst)
            return
        except sqlite3.OperationalError as err:
            if "locked" not in str(err) and "busy" not in str(err) or attempt == attempts - 1:
                raise
            time.sleep(2)


def rss_bytes() -> int:
    try:
        import psutil

        return psutil.Process().memory_info().rss
    except ImportError:  # the peak instead: a delta of it is a lower bound
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def ms(values_ns: list[int] | np.ndarray) -> np.ndarray:
    return np.asarray(values_ns, dtype=np.float64) / 1e6


def pct(values: np.ndarray, q: float) -> float:
    return float(np.percentile(values, q)) if len(values) else float("nan")


def table(title: str, header: list[str], rows: list[list[str]]) -> None:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    print(f"\n{title}")
    print("| " + " | ".join(h.ljust(w) for h, w in zip(header, widths)) + " |")
    print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for row in rows:
        print("| " + " | ".join(str(c).ljust(w) for c, w in zip(row, widths)) + " |")


class MemoryEncoder:
    """Vectors kept in a dict after the first lookup: ``PersonaIndex.build`` without the SQLite cache."""

    def __init__(self, encoder: CachedEncoder):
        self.encoder = encoder
        self.vectors: dict[str, np.ndarray] = {}

    def encode(self, texts: list[str]) -> np.ndarray:
        missing = [t for t in dict.fromkeys(texts) if t not in self.vectors]
        if missing:
            self.vectors.update(zip(missing, self.encoder.encode(missing)))
        return np.stack([self.vectors[t] for t in texts]) if texts else np.zeros((0, self.encoder.dim), np.float32)


class PaddedScorer:
    """The numpy reference of Eq. 10: each item's persona rows padded to the widest item, the padding
    masked by a bias of -inf (an item absent from the index is all padding, so scores -inf)."""

    def __init__(self, index: PersonaIndex):
        items = sorted(index.rows_of)
        self.position = {item: n for n, item in enumerate(items)}
        self.missing = len(items)
        self.pad = len(index.rows)
        width = max(len(r) for r in index.rows_of.values())
        dim = index.vectors.shape[1]
        self.vectors = np.vstack([index.vectors, np.zeros((1, dim), dtype=np.float32)])
        self.rows = np.full((len(items) + 1, width), self.pad, dtype=np.int64)
        self.bias = np.full((len(items) + 1, width), -np.inf, dtype=np.float32)
        for item, rows in index.rows_of.items():
            self.rows[self.position[item], : len(rows)] = rows
            self.bias[self.position[item], : len(rows)] = 0

    def positions(self, candidates: list[str], width: int | None = None) -> np.ndarray:
        out = np.full(width or len(candidates), self.missing, dtype=np.int64)
        out[: len(candidates)] = [self.position.get(item, self.missing) for item in candidates]
        return out

    def rerank(self, user: np.ndarray, candidates: list[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(order, score, winning row or -1) of the candidates; the order is by descending score, stable."""
        pos = self.positions(candidates)
        rows = self.rows[pos]
        sims = self.vectors[rows] @ user + self.bias[pos]
        col = sims.argmax(axis=1)
        take = np.arange(len(pos))
        best, winner = sims[take, col], rows[take, col]
        return np.argsort(-best, kind="stable"), best, np.where(winner == self.pad, -1, winner)

    def rerank_batch(
        self, users: np.ndarray, candidates: list[list[str]], union: bool = False
    ) -> tuple[np.ndarray, np.ndarray]:
        """(orders, scores), each (B, C): all users at once, by per-user gathers or one GEMM on the union."""
        width = max(len(c) for c in candidates)
        pos = np.stack([self.positions(c, width) for c in candidates])  # (B, C)
        rows = self.rows[pos]  # (B, C, P)
        if union:
            unique, inverse = np.unique(rows, return_inverse=True)
            sims_u = self.vectors[unique] @ users.T  # (U, B)
            sims = sims_u[inverse.reshape(rows.shape), np.arange(len(users))[:, None, None]]
        else:
            b, c, p = rows.shape
            sims = (self.vectors[rows].reshape(b, c * p, -1) @ users[:, :, None]).reshape(b, c, p)
        best = (sims + self.bias[pos]).max(axis=2)
        return np.argsort(-best, axis=1, kind="stable"), best


def compare(
    library: list, reference: tuple[np.ndarray, np.ndarray, np.ndarray], cands: list[str], user: np.ndarray, index
) -> tuple[int, int]:
    """(1 if the ranking differs beyond float ties, winning personas that differ beyond float ties) of one query."""
    order, best, winner = reference
    lib_score = {r.item_id: r.score for r in library}
    lib_best = np.array([lib_score[c] for c in cands])
    finite = np.isfinite(best)
    rank_bad = int(
        not np.array_equal(np.isfinite(lib_best), finite) or bool(np.any(np.abs(lib_best[finite] - best[finite]) > TIE))
    )
    if [r.item_id for r in library] != [cands[i] for i in order]:
        # the reference order must also sort the library's scores (descending), up to ties
        along = lib_best[order]
        ok = np.isfinite(along)
        rank_bad |= int(bool(np.any(np.diff(along[ok]) > TIE)) or not bool(np.all(ok[: ok.sum()])))
    explained_bad = 0
    for ranked in library:
        n = cands.index(ranked.item_id)
        ref_persona = index.rows[winner[n]][1] if winner[n] >= 0 else None
        if ranked.persona != ref_persona:  # fine only when both winners tie the best
            rows = index.rows_of.get(ranked.item_id, [])
            lib_row = next((r for r in rows if index.rows[r][1] == ranked.persona), None)
            if (
                lib_row is None
                or winner[n] < 0
                or abs(float(index.vectors[[lib_row, winner[n]]] @ user @ [1, -1])) > TIE
            ):
                explained_bad += 1
    return rank_bad, explained_bad


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--store", type=Path, required=True)
    parser.add_argument("--repeats", type=int, default=5, help="Passes over the test queries per timed row.")
    parser.add_argument("--threads", type=int, default=1, help="torch, faiss and BLAS threads.")
    parser.add_argument("--embed-sample", type=int, default=500, help="Persona texts encoded afresh.")
    parser.add_argument("--gamma", type=float, default=None, help="Decay of Eq. 7 (default: the store's).")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    faiss.omp_set_num_threads(args.threads)
    try:
        from threadpoolctl import threadpool_limits

        threadpool_limits(args.threads)
    except ImportError:
        pass

    folder = Path(tempfile.mkdtemp(prefix="copersona-reclat-"))
    copy = folder / "store.sqlite"
    copy_store(args.store.resolve(), copy)
    store = RecStore(copy, create=False)
    config = RecConfig.from_dict(store.get_meta("rec_config", {}))
    embedder = load_embedder(config.embedder)
    encoder = CachedEncoder(embedder, store)
    gamma = args.gamma if args.gamma is not None else store.get_meta("rec_gamma", {}).get(encoder.encoder_id)
    gamma = gamma if gamma is not None else config.decay_grid[-1]
    items, personas = store.items(), store.personas()
    (cached_before,) = store._db.execute("SELECT COUNT(*) FROM rec_vectors").fetchone()

    # -- the index, and the memory it takes ---------------------------------------------------
    gc.collect()
    rss_before = rss_bytes()
    started = time.perf_counter()
    index = PersonaIndex.build(items, personas, encoder)
    first_build = time.perf_counter() - started
    gc.collect()
    rss_delta = rss_bytes() - rss_before
    (cached_after,) = store._db.execute("SELECT COUNT(*) FROM rec_vectors").fetchone()

    # -- users: cached entry vectors in memory, and the test queries ------------------------------
    profiles = training_profiles(store, config.history_length)
    entry_texts = list(dict.fromkeys(t for entries in profiles.values() for t in entries))
    entry_vectors = encoder.encode(entry_texts)
    entry_row = {t: n for n, t in enumerate(entry_texts)}
    entry_rows = {u: np.array([entry_row[t] for t in e], dtype=np.int64) for u, e in profiles.items() if e}
    users = {u: decayed_mean(entry_vectors[rows], gamma) for u, rows in entry_rows.items()}
    library_users = user_vectors(profiles, encoder, gamma)
    assert all(np.array_equal(users[u], library_users[u]) for u in users), "user vectors differ from user_vectors()"
    (cached_final,) = store._db.execute("SELECT COUNT(*) FROM rec_vectors").fetchone()

    queries: list[tuple[str, list[str]]] = []
    skipped = 0
    generators = store.generators()
    for generator in generators:
        for c in store.candidates(generator, "test"):
            if c.user_id in users:
                queries.append((c.user_id, c.items))
            else:
                skipped += 1
    assert queries, "no test user with a training profile"
    scorer = PaddedScorer(index)

    # -- 1. single query -----------------------------------------------------------------------
    timed: dict[str, list[int]] = {"encode": [], "rerank": [], "numpy": [], "full": [], "sqlite": []}
    clock = time.perf_counter_ns
    for user, cands in queries[:50]:  # warm-up
        index.rerank(users[user], cands)
        scorer.rerank(users[user], cands)
    rank_mismatch = explain_mismatch = 0
    for user, cands in queries:  # checked once, untimed
        vector = users[user]
        r, e = compare(index.rerank(vector, cands), scorer.rerank(vector, cands), cands, vector, index)
        rank_mismatch += r
        explain_mismatch += e
    gc.collect()
    for _ in range(args.repeats):
        for user, cands in queries:
            rows, vector = entry_rows[user], users[user]
            t0 = clock()
            decayed_mean(entry_vectors[rows], gamma)
            t1 = clock()
            index.rerank(vector, cands)
            t2 = clock()
            scorer.rerank(vector, cands)
            t3 = clock()
            index.rerank(decayed_mean(entry_vectors[rows], gamma), cands)
            t4 = clock()
            timed["encode"].append(t1 - t0)
            timed["rerank"].append(t2 - t1)
            timed["numpy"].append(t3 - t2)
            timed["full"].append(t4 - t3)
    for user, _ in queries[: len(queries) // len(generators)]:  # one pass: each user once
        t0 = clock()
        decayed_mean(encoder.encode(profiles[user]), gamma)
        timed["sqlite"].append(clock() - t0)
    t = {k: ms(v) for k, v in timed.items()}
    n_cands = int(np.median([len(c) for _, c in queries]))
    single = [
        ("user encoding: cached entry vectors in memory + Eq. 7", "encode"),
        ("user encoding through CachedEncoder (SQLite cache) + Eq. 7", "sqlite"),
        (f"rerank {n_cands} candidates: PersonaIndex.rerank (faiss)", "rerank"),
        (f"rerank {n_cands} candidates: numpy reference", "numpy"),
        ("full online path: user encoding (memory) + PersonaIndex.rerank", "full"),
    ]
    base = pct(t["rerank"], 50)
    table(
        f"1. Single query ({len(queries)} test queries of {len(users)} users, {len(generators)} generators, "
        f"x{args.repeats}; {skipped} without a profile skipped; {args.threads} thread(s))",
        ["step", "n", "p50 ms", "p99 ms", "mean ms", "p50 / paper 0.52 ms"],
        [
            [
                name,
                str(len(t[key])),
                f"{pct(t[key], 50):.4f}",
                f"{pct(t[key], 99):.4f}",
                f"{t[key].mean():.4f}",
                f"{pct(t[key], 50) / PAPER_CPU_MS:.3f}",
            ]
            for name, key in single
        ],
    )
    print(
        f"PersonaIndex.rerank p50 / numpy p50: {base / pct(t['numpy'], 50):.1f}x; ranking mismatches vs numpy "
        f"beyond float ties (|d| > {TIE:g}): {rank_mismatch} of {len(queries)}; winning persona mismatches: "
        f"{explain_mismatch}"
    )
    assert rank_mismatch == 0, f"{rank_mismatch} queries ranked differently by the numpy reference"

    # -- 2. memory -----------------------------------------------------------------------------
    n_rows, dim = index.vectors.shape
    index_bytes = index.memory_bytes + index.table.nbytes
    weights = sum(p.numel() * p.element_size() for p in embedder.model.parameters())
    with_personas = sum(1 for i in items if personas.get(i))
    table(
        f"2. Memory ({len(items)} items, {with_personas} with personas, {n_rows} rows of dim {dim})",
        ["what", "MB", "/ paper 0.1 GB"],
        [
            [f"faiss vectors and row references (memory_bytes, {n_rows} rows)", f"{index.memory_bytes / 1e6:.2f}", ""],
            ["padded row table of the items", f"{index.table.nbytes / 1e6:.2f}", ""],
            [
                "PersonaIndex total",
                f"{index_bytes / 1e6:.2f}",
                f"{index_bytes / (PAPER_MEMORY_GB * 1e9):.4f}",
            ],
            [
                "numpy reference's padded tables (not the library)",
                f"{(scorer.vectors.nbytes + scorer.rows.nbytes + scorer.bias.nbytes) / 1e6:.2f}",
                "",
            ],
            [
                "process RSS delta during PersonaIndex.build",
                f"{rss_delta / 1e6:.2f}",
                f"{rss_delta / (PAPER_MEMORY_GB * 1e9):.4f}",
            ],
            ["encoder weights (MiniLM, fp32)", f"{weights / 1e6:.1f}", f"{weights / (PAPER_MEMORY_GB * 1e9):.2f}"],
            ["process RSS now (torch, encoder, store, index)", f"{rss_bytes() / 1e6:.0f}", ""],
        ],
    )
    print(
        f"first build {first_build * 1000:.0f} ms; vectors encoded then because the cache lacked them: "
        f"{cached_after - cached_before} (and {cached_final - cached_after} user entries afterwards)"
    )

    # -- 3a. concurrent users in one batch ------------------------------------------------------
    rng = random.Random(args.seed)
    scaling = []
    for size in (1, 10, 50, 100):
        if size > len(queries):
            continue
        batches = max(20, min(200, args.repeats * len(queries) // size // 4))
        rows_t: dict[str, list[int]] = {"seq": [], "gather": [], "union": []}
        for n in range(batches):
            batch = rng.sample(queries, size)
            vectors = np.stack([users[u] for u, _ in batch])
            cands = [c for _, c in batch]
            t0 = clock()
            for (_, c), v in zip(batch, vectors):
                index.rerank(v, c)
            t1 = clock()
            orders, best = scorer.rerank_batch(vectors, cands)
            t2 = clock()
            orders_u, best_u = scorer.rerank_batch(vectors, cands, union=True)
            t3 = clock()
            rows_t["seq"].append(t1 - t0)
            rows_t["gather"].append(t2 - t1)
            rows_t["union"].append(t3 - t2)
            if n == 0:  # the batched scores are the single-query ones
                for b, ((_, c), v) in enumerate(zip(batch, vectors)):
                    _, single_best, _ = scorer.rerank(v, c)
                    for got in (best[b, : len(c)], best_u[b, : len(c)]):
                        finite = np.isfinite(single_best)
                        assert np.array_equal(np.isfinite(got), finite)
                        assert np.allclose(got[finite], single_best[finite], atol=TIE)
        for key, name in (
            ("seq", "sequential PersonaIndex.rerank"),
            ("gather", "numpy batch: gather (B,C,P,d) + batched matmul"),
            ("union", "numpy batch: one GEMM on the union of rows"),
        ):
            v = ms(rows_t[key])
            scaling.append(
                [str(size), name, str(batches), f"{pct(v, 50):.3f}", f"{pct(v, 99):.3f}", f"{pct(v, 50) / size:.4f}"]
            )
    table(
        f"3a. Concurrent users scored as one batch ({n_cands} candidates each; user vectors precomputed)",
        ["users", "path", "batches", "batch p50 ms", "batch p99 ms", "per user ms (p50 / users)"],
        scaling,
    )

    # -- 3b. candidates per user -----------------------------------------------------------------
    trained: dict[str, set[str]] = {}
    for interaction, _ in store.rec_interactions("train"):
        trained.setdefault(interaction.user_id, set()).add(interaction.item_id)
    pool = sorted(items)
    sizes = [20, 50, 100]
    extended: dict[int, list[list[str]]] = {s: [] for s in sizes}
    rng = random.Random(args.seed)
    for user, cands in queries:
        grown = list(cands)
        taken = set(grown) | trained.get(user, set())
        room = len(pool) - len(taken)
        for size in sizes:
            while len(grown) < size and room > 0:
                item = pool[rng.randrange(len(pool))]
                if item not in taken:
                    grown.append(item)
                    taken.add(item)
                    room -= 1
            extended[size].append(grown[:size])
    candidate_rows = []
    for size in sizes:
        lists = extended[size]
        lib_t, ref_t, bad = [], [], 0
        for (user, _), cands in zip(queries, lists):
            vector = users[user]
            bad += compare(index.rerank(vector, cands), scorer.rerank(vector, cands), cands, vector, index)[0]
        for _ in range(args.repeats):
            for (user, _), cands in zip(queries, lists):
                vector = users[user]
                t0 = clock()
                index.rerank(vector, cands)
                t1 = clock()
                scorer.rerank(vector, cands)
                t2 = clock()
                lib_t.append(t1 - t0)
                ref_t.append(t2 - t1)
        assert bad == 0, f"{bad} rankings of {size} candidates differ from the numpy reference"
        lib, ref = ms(lib_t), ms(ref_t)
        mean_len = np.mean([len(c) for c in lists])
        candidate_rows.append(
            [
                f"{size} ({mean_len:.1f})",
                f"{pct(lib, 50):.4f}",
                f"{pct(lib, 99):.4f}",
                f"{pct(ref, 50):.4f}",
                f"{pct(ref, 99):.4f}",
                f"{pct(lib, 50) / pct(ref, 50):.1f}x",
            ]
        )
    table(
        f"3b. Candidates per user (extra ones uniform over untouched items, seed {args.seed}; {len(queries)} "
        f"queries x{args.repeats}; 0 ranking mismatches vs numpy)",
        ["candidates (mean)", "rerank p50 ms", "rerank p99 ms", "numpy p50 ms", "numpy p99 ms", "rerank / numpy"],
        candidate_rows,
    )

    # -- 4. build and embedding time --------------------------------------------------------------
    memory = MemoryEncoder(encoder)
    PersonaIndex.build(items, personas, memory)  # fills the dict
    build_t: dict[str, list[float]] = {"sqlite": [], "memory": []}
    spent, builds = 0.0, 0
    while builds < 3 or (spent < 2.0 and builds < 20):
        for key, enc in (("sqlite", encoder), ("memory", memory)):
            t0 = time.perf_counter()
            PersonaIndex.build(items, personas, enc)
            took = time.perf_counter() - t0
            build_t[key].append(took)
            spent += took
        builds += 1
    texts = sorted({p.text() for ps in personas.values() for p in ps})
    sample = random.Random(args.seed).sample(texts, min(args.embed_sample, len(texts)))
    embedder.encode(sample[:8])  # warm-up
    t0 = time.perf_counter()
    embedder.encode(sample)
    embed_s = time.perf_counter() - t0
    per_k_items = {k: float(np.median(v)) / len(items) * 1e6 for k, v in build_t.items()}
    table(
        f"4. Build time ({len(items)} items, {n_rows} rows; median of {builds} builds; "
        f"{len(sample)} persona texts encoded, {args.threads} thread(s))",
        ["what", "total ms", "ms per 1k items", "ms per 1k rows or texts"],
        [
            [
                f"PersonaIndex.build, vectors {note}",
                f"{np.median(build_t[key]) * 1000:.2f}",
                f"{per_k_items[key]:.2f}",
                f"{np.median(build_t[key]) / n_rows * 1e6:.2f}",
            ]
            for key, note in (("sqlite", "from the SQLite cache"), ("memory", "in memory (index construction)"))
        ]
        + [
            [
                f"embedder.encode of {len(sample)} persona texts (no cache)",
                f"{embed_s * 1000:.0f}",
                "",
                f"{embed_s / len(sample) * 1e6:.0f}",
            ]
        ],
    )

    store.close()
    for path in folder.iterdir():
        path.unlink()
    folder.rmdir()
    print(
        f"\nsummary: rerank p50 {base:.3f} ms (paper {PAPER_CPU_MS} ms CPU), full online path p50 "
        f"{pct(t['full'], 50):.3f} ms, numpy reference p50 {pct(t['numpy'], 50):.3f} ms "
        f"(rerank / numpy {base / pct(t['numpy'], 50):.1f}x), {rank_mismatch} ranking mismatches; index "
        f"{index_bytes / 1e6:.2f} MB (paper {PAPER_MEMORY_GB} GB); "
        f"{scaling[-3][0]} users: {scaling[-3][3]} ms sequential, {scaling[-2][3]} / {scaling[-1][3]} ms batched numpy "
        f"(gather / union GEMM); build "
        f"{per_k_items['memory']:.2f} ms per 1k items, embedding {embed_s / len(sample) * 1e6 / 1000:.1f} s per 1k "
        f"persona texts ({args.threads} thread(s))"
    )


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    main()
