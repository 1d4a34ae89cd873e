"""Load on `copersona serve`: concurrent OpenAI clients, with review updates and deletions mixed in.

    python3 benchmarks/serve_load.py --store runs/mi.sqlite [--clients 4] [--seconds 60]
        [--method copersona-np] [--max-tokens 32] [--update-every 5] [--delete-every 20]

Serves a copy of the store (updates and deletions never touch the original) on loopback with an
API key, then:

1. persona assembly alone: the method's input for a free request of each of ``--assembly-users``
   users (history retrieval, peer facet context, budgets), timed in process on the server's
   worker thread after one warm-up pass, so no HTTP and no generation;
2. ``--clients`` threads, each with its own official ``openai`` client, send chat completions
   for random users for ``--seconds``; one more thread posts a review every ``--update-every``
   seconds and deletes a user every ``--delete-every`` seconds (requests for a deleted user then
   count as expected 404s, not errors).

Prints requests/s and p50/p99 latencies per kind, and errors (anything but a 2xx or an expected 404).
"""

from __future__ import annotations

import argparse
import random
import shutil
import socket
import statistics
import tempfile
import threading
import time
from pathlib import Path

import httpx
import openai
import uvicorn

from copersona.config import HarnessConfig, ServeConfig
from copersona.generate import free_request_example
from copersona.serve import open_app

KEY = "benchmark-key"
QUESTIONS = [
    "What do you look for in a guitar strap?",
    "Describe a cable you would buy again.",
    "How do you choose strings for practice?",
    "What annoys you most in a cheap tuner?",
]


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q / 100 * (len(ordered) - 1))))]


def assembly_latencies(service, method: str, users: list[str]) -> list[float]:
    """Milliseconds to build ``method``'s input for one free request, per user (second pass)."""

    def run() -> list[float]:
        runtime = service._runtime(service.config.generation.temperature, service.config.generation.seed)
        times = []
        for attempt in range(2):
            for user in users:
                example = free_request_example(service.store, user, random.choice(QUESTIONS))
                started = time.perf_counter()
                runtime.inputs(method, example)
                if attempt == 1:
                    times.append((time.perf_counter() - started) * 1000)
        return times

    return service._worker.submit(run).result()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--store", type=Path, required=True)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--method", default="copersona-np")
    parser.add_argument("--max-tokens", type=int, default=32)
    parser.add_argument("--update-every", type=float, default=5)
    parser.add_argument("--delete-every", type=float, default=20)
    parser.add_argument("--assembly-users", type=int, default=200)
    args = parser.parse_args()

    folder = Path(tempfile.mkdtemp(prefix="copersona-load-"))
    store = shutil.copy(args.store, folder / "store.sqlite")
    keys = folder / "keys.txt"
    keys.write_text(KEY + "\n")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    app, service = open_app(store, HarnessConfig(), ServeConfig(max_concurrent_per_key=10_000), api_keys=keys)
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    threading.Thread(target=server.run, daemon=True).start()
    while not server.started:
        time.sleep(0.05)
    base = f"http://127.0.0.1:{port}"

    users = service._worker.submit(lambda: service.store.user_ids()).result()
    assembly = assembly_latencies(service, args.method, users[: args.assembly_users])

    results: dict[str, list[float]] = {"chat": [], "update": [], "delete": []}
    errors: list[str] = []
    deleted: set[str] = set()
    lock = threading.Lock()
    stop = time.time() + args.seconds

    def client_loop(seed: int) -> None:
        rng = random.Random(seed)
        client = openai.OpenAI(base_url=f"{base}/v1", api_key=KEY, max_retries=0, timeout=600)
        while time.time() < stop:
            user = rng.choice(users)
            started = time.perf_counter()
            try:
                client.chat.completions.create(
                    model=args.method,
                    user=user,
                    messages=[{"role": "user", "content": rng.choice(QUESTIONS)}],
                    max_tokens=args.max_tokens,
                    temperature=0.8,
                    seed=rng.randrange(2**31),
                )
                with lock:
                    results["chat"].append(time.perf_counter() - started)
            except openai.NotFoundError:
                if user not in deleted:
                    errors.append(f"404 for {user}")
            except Exception as err:  # noqa: BLE001 - every failure is counted and shown
                errors.append(f"{type(err).__name__}: {err}")

    def churn() -> None:
        rng = random.Random(0)
        headers = {"Authorization": f"Bearer {KEY}"}
        next_update, next_delete, count = time.time(), time.time() + args.delete_every, 0
        with httpx.Client(base_url=base, headers=headers, timeout=600) as http:
            while time.time() < stop:
                now = time.time()
                if now >= next_update:
                    count += 1
                    user = rng.choice([u for u in users if u not in deleted])
                    review = {
                        "item_id": f"bench-item-{count}",
                        "text": f"Benchmark review {count}: solid, would buy.",
                        "rating": 4,
                    }
                    started = time.perf_counter()
                    response = http.post(f"/v1/users/{user}/reviews", json={"reviews": [review]})
                    results["update"].append(time.perf_counter() - started)
                    if response.status_code != 200:
                        errors.append(f"update {response.status_code}: {response.text[:200]}")
                    next_update = now + args.update_every
                if now >= next_delete:
                    user = rng.choice([u for u in users if u not in deleted])
                    deleted.add(user)
                    started = time.perf_counter()
                    response = http.delete(f"/v1/users/{user}")
                    results["delete"].append(time.perf_counter() - started)
                    if response.status_code != 200:
                        errors.append(f"delete {response.status_code}: {response.text[:200]}")
                    next_delete = now + args.delete_every
                time.sleep(0.05)

    threads = [threading.Thread(target=client_loop, args=(i,)) for i in range(args.clients)]
    threads.append(threading.Thread(target=churn))
    began = time.time()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.time() - began
    server.should_exit = True

    print(f"store {args.store} ({len(users)} users), method {args.method}, {args.clients} clients, {elapsed:.0f} s")
    print("| kind | count | per s | p50 | p99 |")
    print("|---|---|---|---|---|")
    print(
        f"| persona assembly (in process) | {len(assembly)} | | {statistics.median(assembly):.2f} ms "
        f"| {percentile(assembly, 99):.2f} ms |"
    )
    for kind, values in results.items():
        print(
            f"| {kind} over HTTP | {len(values)} | {len(values) / elapsed:.2f} | {percentile(values, 50):.2f} s "
            f"| {percentile(values, 99):.2f} s |"
        )
    print(f"errors: {len(errors)}" + (f" (first: {errors[0]})" if errors else ""))


if __name__ == "__main__":
    main()
