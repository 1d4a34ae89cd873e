"""Where per-user work runs: in this process, or as a Ray Data pipeline on a local Ray or a cluster.

A stage hands an engine a *worker*: a picklable recipe whose :meth:`Worker.open` loads what the
work needs once per process (the embedder, the summarizer) and returns a function from one batch
of items to one result per item. The local engine opens it here, with the models this process
already holds, and calls it batch by batch. The Ray engine runs the same recipe in an actor pool
(Ray Data's ``map_batches`` with ``ActorPoolStrategy``: each actor loads the models once, from
the recipe's config). Either way the results come back to the caller, which writes each batch to
the store in one transaction, so a killed run resumes without redoing finished batches, and both
engines run the same stage functions.
"""

from __future__ import annotations

import pickle
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from copersona.build import Backends
    from copersona.store import Store

ENGINES = ("local", "ray")
# What an engine yields per batch: its index among the batches given, and one result per item.
Results = tuple[int, list]


class Worker(Protocol):
    """A picklable recipe for one stage's per-batch work."""

    def open(self, backends: Backends, store: Store) -> Callable[[list], list]:
        """The batch function, with its models loaded from ``backends`` (and ``store`` for LLM caches)."""
        ...

    def backends(self) -> Backends:
        """The models a worker process loads for itself (from the recipe's config)."""
        ...

    @property
    def store_location(self) -> str:
        """Where a worker process opens the store (a file path or a URL)."""
        ...


class Engine(ABC):
    name: str

    @abstractmethod
    def map(self, worker: Worker, batches: Sequence[Any], backends: Backends, store: Store) -> Iterator[Results]:
        """``(batch index, results)`` for each batch, in the order they finish."""

    def describe(self) -> dict:
        """What the run log records of the engine."""
        return {"engine": self.name}

    @abstractmethod
    def close(self) -> None:
        """Release what the engine started."""


class LocalEngine(Engine):
    """The batches one after another in this process, with its models."""

    name = "local"

    def map(self, worker: Worker, batches: Sequence[Any], backends: Backends, store: Store) -> Iterator[Results]:
        run = worker.open(backends, store)
        for index, batch in enumerate(batches):
            yield index, run(batch)

    def close(self) -> None:
        """Nothing was started."""


class _RayActor:
    """One actor of the pool: opens the worker once, then maps each row's pickled batch."""

    def __init__(self, recipe: bytes):
        from copersona.store import Store

        worker: Worker = pickle.loads(recipe)
        self._store = Store(worker.store_location, create=False)
        self._run = worker.open(worker.backends(), self._store)

    def __call__(self, rows: dict[str, Any]) -> dict[str, Any]:
        results = [pickle.dumps(self._run(pickle.loads(payload))) for payload in rows["payload"]]
        return {"index": rows["index"], "result": results}


class RayEngine(Engine):
    """Ray Data pipelines: ``map_batches`` over an actor pool, on a local Ray or a cluster.

    Without ``address`` a local Ray is started (and stopped by :meth:`close`); with one this
    process joins that cluster. Nothing falls back to the local engine: a Ray that cannot start or
    be reached is an error.
    """

    name = "ray"

    def __init__(self, address: str | None = None, *, actors: int | None = None, cpus_per_actor: float = 1.0):
        try:
            import ray
        except ImportError as err:
            raise RuntimeError("the ray engine needs Ray: pip install 'copersona[ray]'") from err
        self._ray = ray
        self._started = not ray.is_initialized()
        if self._started:
            ray.init(address=address, include_dashboard=False, log_to_driver=False, configure_logging=False)
        self.address = address or "local"
        cpus = int(ray.cluster_resources().get("CPU", 1))
        self.actors = actors or max(1, int(cpus // cpus_per_actor))
        self.cpus_per_actor = cpus_per_actor

    def describe(self) -> dict:
        return {"engine": self.name, "ray_address": self.address, "actors": self.actors}

    def map(self, worker: Worker, batches: Sequence[Any], backends: Backends, store: Store) -> Iterator[Results]:
        import ray.data

        if not batches:
            return
        context = ray.data.DataContext.get_current()
        context.enable_progress_bars = False  # the CLI shows its own bars
        items = [{"index": i, "payload": pickle.dumps(batch)} for i, batch in enumerate(batches)]
        dataset = ray.data.from_items(items, override_num_blocks=len(items)).map_batches(
            _RayActor,
            fn_constructor_args=(pickle.dumps(worker),),
            batch_size=1,
            compute=ray.data.ActorPoolStrategy(min_size=1, max_size=min(self.actors, len(items))),
            num_cpus=self.cpus_per_actor,
        )
        for row in dataset.iter_rows():
            yield int(row["index"]), pickle.loads(row["result"])

    def close(self) -> None:
        if self._started:
            self._ray.shutdown()


def open_engine(name: str, address: str | None = None) -> Engine:
    """The engine ``name`` (``local`` or ``ray``); ``address`` joins a Ray cluster."""
    if name == "local":
        if address:
            raise ValueError("--ray-address needs --engine ray")
        return LocalEngine()
    if name == "ray":
        return RayEngine(address)
    raise ValueError(f"unknown engine {name!r}: use {' or '.join(ENGINES)}")
