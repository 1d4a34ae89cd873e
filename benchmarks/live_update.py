"""Adding one review to a built store, against rebuilding its personas and graph.

    python3 benchmarks/live_update.py [--data ../shared/data/amazon2014-musical-instruments]
        [--min-reviews 2] [--updates 20] [--keep runs/mi-1k.sqlite]

Builds a store of the data with the embedded default, keeping users with at least
``--min-reviews`` reviews (2 keeps about a thousand of the Musical Instruments users; 1 review is
held out, profiles of 1+), then on copies of it:

* rebuild: every user's profile embedding and facet states recomputed with the store's frozen
  schema and calibration, then the whole graph: what a live update saves;
* ``--updates`` live updates, each adding one review (another user's text, on a new item) to a
  random user through :func:`copersona.live.add_reviews`, timed one by one, with how many
  neighbour lists each searched again.

``--keep`` saves the first build (e.g. for ``benchmarks/serve_load.py`` at a thousand users).
Prints one table; the ratio is rebuild time over the median update, measured in this one run.
"""

from __future__ import annotations

import argparse
import random
import shutil
import statistics
import tempfile
import time
from pathlib import Path

from copersona.build import Backends, Build
from copersona.config import BuildConfig
from copersona.data.records import Interaction
from copersona.live import add_reviews
from copersona.store import Store

REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared/data/amazon2014-musical-instruments")
    parser.add_argument("--min-reviews", type=int, default=2)
    parser.add_argument("--updates", type=int, default=20)
    parser.add_argument("--keep", type=Path, help="copy the first build here")
    args = parser.parse_args()

    config = BuildConfig.load(REPO / "configs/amazon2014-mi-partial.toml")
    config.data.min_reviews_per_user, config.data.holdout_k, config.data.min_profile_size = args.min_reviews, 1, 1
    config.validate()
    folder = Path(tempfile.mkdtemp(prefix="copersona-live-"))
    built = folder / "built.sqlite"
    started = time.perf_counter()
    with Store(built) as store:
        Build(store, config, Backends.of(config)).run(args.data)
        users = store.user_ids()
        texts = [i.text for u in users[:200] for i in store.history(u)[0] if len(i.text) > 80]
    build_seconds = time.perf_counter() - started
    if args.keep:
        args.keep.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(built, args.keep)

    rebuilt = shutil.copy(built, folder / "rebuilt.sqlite")
    with Store(rebuilt) as store:
        build = Build.of(store)
        build.backends.embedder()  # loaded before the clock starts, as in a running service
        started = time.perf_counter()
        store.forget_personas(store.user_ids())
        build.profiles()
        build.summaries(64)
        build.graph()
        rebuild_seconds = time.perf_counter() - started

    updated = shutil.copy(built, folder / "updated.sqlite")
    rng = random.Random(0)
    seconds, rows = [], []
    with Store(updated) as store:
        build = Build.of(store)
        build.backends.embedder()
        for n in range(args.updates):
            user = rng.choice(users)
            last = store.history(user)[0][-1].timestamp
            review = Interaction(
                user_id=user, item_id=f"bench-item-{n}", timestamp=last + 86_400, rating=4.0, text=rng.choice(texts)
            )
            report = add_reviews(build, [review])
            seconds.append(report.seconds)
            rows.append(report.neighbour_rows)
    shutil.rmtree(folder)

    median = statistics.median(seconds)
    print(f"{args.data.name}: {len(users)} users; first build {build_seconds:.0f} s")
    print("| operation | seconds | neighbour lists searched |")
    print("|---|---|---|")
    print(f"| rebuild personas and graph (frozen schema, calibration) | {rebuild_seconds:.1f} | all {len(users)} |")
    print(
        f"| add one review (median of {len(seconds)}; p90 {sorted(seconds)[int(0.9 * (len(seconds) - 1))]:.2f}) "
        f"| {median:.2f} | median {statistics.median(rows):.0f} of {len(users)} |"
    )
    print(f"rebuild / update: {rebuild_seconds / median:.0f}x")


if __name__ == "__main__":
    main()
