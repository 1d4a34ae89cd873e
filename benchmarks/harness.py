"""Per-request input assembly and generation throughput of the evaluation runtime.

    python3 benchmarks/runtime.py [--store runs/bench-mi-1000.sqlite] [--users 1000] [--generate 8]

1. Input assembly (no generation): for every method, the time ``inputs(example)`` takes on the
   test example of each of ``--users`` real users (retrieval, peer context, budgets, prompt
   layout), p50 and p99. The store is built once from ../shared/data with
   configs/amazon2014-mi-sparse.toml if missing. Timing starts after each method's ``prepare``
   (offline, timed too: per-profile BM25 indexes, token counts of stored texts, PAG/DPL profile
   texts, the peer index, DPL's clustering); a request then computes what depends on its query:
   the retrieval scores, the query's tokens, budgets and the layout. The target (the query) of
   every request is new: it is a held-out review no offline step has seen.
2. Generation: tokens per second for the same ``--generate`` copersona-np prompts sent raw to the
   llama.cpp backend, and through the runtime (batching, the store cache, post-processing) with an
   empty cache, then again with a warm cache.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from copersona.backends import load_embedder, load_llm_backend
from copersona.backends.llm import LLM, Request
from copersona.build import Backends, Build
from copersona.config import BuildConfig, HarnessConfig
from copersona.inference import STOP, Runtime
from copersona.store import Store

ROOT = Path(__file__).resolve().parents[1]
METHODS = ("nonperso", "rag", "pag", "dpl", "copersona-np", "copy-self", "copy-peer")


def ensure_store(path: Path) -> None:
    if path.exists():
        return
    config = BuildConfig.load(ROOT / "configs" / "amazon2014-mi-sparse.toml")
    with Store(path) as store:
        backends = Backends(
            embedder_factory=lambda: load_embedder(config.embedder),
            llm_factory=lambda db: LLM(load_llm_backend(config.llm), cache=db),
        )
        Build(store, config, backends).run(ROOT.parent / "shared" / "data" / "amazon2014-musical-instruments")


def assembly(store: Store, llm: LLM, users: int) -> list[tuple[str, int, float, float, float]]:
    """(method, requests, prepare seconds, p50 ms, p99 ms); each method on fresh resources, so none
    benefits from what another counted or indexed."""
    examples = store.examples("test")
    seen, picked = set(), []
    for example in examples:
        if example.user_id not in seen:
            seen.add(example.user_id)
            picked.append(example)
    picked = picked[:users]
    rows = []
    for name in METHODS:
        runtime = Runtime(store, HarnessConfig(), llm=lambda: llm, embedder=lambda: load_embedder("minilm"))
        started = time.perf_counter()
        method = runtime.method(name, picked)  # prepare: the offline part
        prepared = time.perf_counter() - started
        times = []
        for example in picked:
            started = time.perf_counter()
            method.inputs(example)
            times.append((time.perf_counter() - started) * 1000)
        rows.append((name, len(times), prepared, statistics.median(times), float(np.percentile(times, 99))))
    return rows


def generation(store: Store, runtime: Runtime, count: int) -> list[tuple[str, int, float, float]]:
    examples = store.examples("test")[:count]
    inputs = [runtime.inputs("copersona-np", e) for e in examples]
    backend = runtime.llm().backend
    g = runtime.config.generation
    requests = [
        Request.chat(i.messages, temperature=g.temperature, max_tokens=i.max_tokens, seed=g.seed, stop=STOP)
        for i in inputs
    ]
    rows = []
    started = time.perf_counter()
    completions = backend.complete(requests)
    elapsed = time.perf_counter() - started
    tokens = sum(c.completion_tokens for c in completions)
    rows.append(("raw llama.cpp backend", tokens, elapsed, tokens / elapsed))
    with tempfile.TemporaryDirectory() as folder:
        cache_path = Path(folder) / "cache.sqlite"
        store.backup(cache_path)  # the generations below are new to this copy's cache
        with Store(cache_path) as cache_store:
            cached_runtime = Runtime(
                cache_store,
                runtime.config,
                llm=lambda: LLM(backend, cache=cache_store),
                embedder=lambda: load_embedder("minilm"),
            )
            for label in ("runtime, empty cache", "runtime, warm cache"):
                started = time.perf_counter()
                predictions = cached_runtime.predict("copersona-np", examples)
                elapsed = time.perf_counter() - started
                tokens = sum(p.completion_tokens for p in predictions)
                rows.append((label, tokens, elapsed, tokens / elapsed))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--store", type=Path, default=ROOT / "runs" / "bench-mi-1000.sqlite")
    parser.add_argument("--users", type=int, default=1000)
    parser.add_argument("--generate", type=int, default=8)
    args = parser.parse_args()
    ensure_store(args.store)
    with Store(args.store) as store:
        llm = LLM(load_llm_backend("smollm2"))
        runtime = Runtime(store, HarnessConfig(), llm=lambda: llm, embedder=lambda: load_embedder("minilm"))
        rows = assembly(store, llm, args.users)
        print(f"\nInput assembly per request, {rows[0][1]} users (the aim is p50 < 1 ms)")
        print(f"{'method':<14}{'requests':>9}{'prepare s':>10}{'p50 ms':>9}{'p99 ms':>9}")
        for name, n, prepared, p50, p99 in rows:
            print(f"{name:<14}{n:>9}{prepared:>10.1f}{p50:>9.3f}{p99:>9.3f}")
        if args.generate:
            rows = generation(store, runtime, args.generate)
            raw = rows[0][3]
            print(f"\nGeneration, {args.generate} copersona-np prompts (SmolLM2-135M, llama.cpp, this CPU)")
            print(f"{'path':<24}{'tokens':>8}{'seconds':>9}{'tokens/s':>10}{'vs raw':>8}")
            for label, tokens, seconds, rate in rows:
                print(f"{label:<24}{tokens:>8}{seconds:>9.2f}{rate:>10.1f}{rate / raw:>8.2f}")


if __name__ == "__main__":
    main()
