"""Where per-user work runs: in this process, or as a Ray Data pipeline on a local Ray or a cluster.

A stage hands an engine its batches, the batch function bound to this process's models, and a
*worker*: a picklable recipe whose :meth:`Worker.open` loads the same models in another process
(the embedder, the summarizer, the generator with the store as its answer cache) and returns the
same batch function. The local engine calls the bound function batch by batch. The Ray engine
runs the recipe in an actor pool (Ray Data's ``map_batches`` with ``ActorPoolStrategy``: each
actor loads the models once). Either way the results come back to the caller, which writes each
batch to the store in one transaction, so a killed run resumes without redoing finished
batches, and both engines run the same stage functions.
"""

from __future__ import annotations

import pickle
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Sequence
from typing import Any, Protocol

ENGINES = ("local", "ray")
# What an engine yields per batch: its index among the batches given, and one result per item.
Results = tuple[int, list]


BatchFunction = Callable[[Any], list]


class Worker(Protocol):
    """A picklable recipe for one stage's per-batch work."""

    def open(self) -> BatchFunction:
        """In a worker process: load the models (opening the store by its location where the work
        needs it) and return the batch function."""
        ...


class Engine(ABC):
    name: str

    @abstractmethod
    def map(self, worker: Worker, batches: Sequence[Any], here: Callable[[], BatchFunction]) -> Iterator[Results]:
        """``(batch index, results)`` for each batch, in the order they finish; ``here()`` is the
        batch function on this process's models, ``worker`` the recipe of the same for another."""

    def describe(self) -> dict:
        """What the run log records of the engine."""
        return {"engine": self.name}

    @abstractmethod
    def close(self) -> None:
        """Release what the engine started."""


class LocalEngine(Engine):
    """The batches one after another in this process, with its models."""

    name = "local"

    def map(self, worker: Worker, batches: Sequence[Any], here: Callable[[], BatchFunction]) -> Iterator[Results]:
        run = here()
        for index, batch in enumerate(batches):
            yield index, run(batch)

    def close(self) -> None:
        """Nothing was started."""


class _RayActor:
    """One actor of the pool: opens the worker once, then maps each row's pickled batch."""

    def __init__(self, recipe: bytes):
        self._worker: Worker = pickle.loads(recipe)
        self._run: BatchFunction | None = None

    def __call__(self, rows: dict[str, Any]) -> dict[str, Any]:
        # Opened on the first call, not in __init__: Ray Data calls the actor from its own executor
        # thread, and a SQLite connection (the generator's answer cache) belongs to its thread.
        if self._run is None:
            self._run = self._worker.open()
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

    def map(self, worker: Worker, batches: Sequence[Any], here: Callable[[], BatchFunction]) -> Iterator[Results]:
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
