"""The service behind the HTTP API: one store, one runtime, every call on one worker thread.

SQLite connections and the embedded llama.cpp model are not shared across threads, and one
generator answers one request at a time anyway, so the store and the runtime live on a single
worker thread; the web server's event loop only awaits it. Persona reads are milliseconds, so
they queue behind a generation at most.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import TypeVar

from copersona.backends.llm import TextSink
from copersona.build import Build
from copersona.config import HarnessConfig
from copersona.data.records import Interaction
from copersona.generate import UnknownUser, free_request_example, request_example
from copersona.inference import NO_GENERATOR, Runtime, open_runtime
from copersona.inspect import user_persona
from copersona.live import add_reviews, erase_user
from copersona.methods import METHODS, method_class
from copersona.store import Store

T = TypeVar("T")

# Runtimes kept per (temperature, seed) a request asked for: each keeps its own prepared methods.
_VARIANTS_KEPT = 8


@dataclass
class Answer:
    """One served answer, with what shaped it."""

    method: str
    user_id: str
    text: str
    generator: str
    prompt_tokens: int
    completion_tokens: int
    cached: bool
    notes: list[str] = field(default_factory=list)
    explain: dict | None = None


class PersonaService:
    """Answers and persona reads for one store, in the user's voice, on the configured generator."""

    def __init__(self, store_path: str | Path, config: HarnessConfig):
        self.store_path = store_path
        self.config = config
        self._worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="copersona-store")
        self._store: Store | None = None
        self._runtimes: dict[tuple[float, int], Runtime] = {}
        self._build: Build | None = None  # the store's build config and models, for live updates
        self.models: list[dict] = []  # what GET /v1/models lists; set when the service opens

    # -- the worker thread ------------------------------------------------------------------

    async def call(self, function: Callable[..., T], *args, **kwargs) -> T:
        """Run ``function(*args, **kwargs)`` on the worker thread and await its result."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._worker, lambda: function(*args, **kwargs))

    def open(self) -> None:
        """Open the store on the worker thread (writable: answers are cached in it); fails fast."""
        self._worker.submit(self._open).result()

    def _open(self) -> None:
        # Serving writes only into an existing CoPersona store (its LLM cache); it never creates one.
        self._store = Store(self.store_path, create=False)
        runtime = self._runtime(self.config.generation.temperature, self.config.generation.seed)
        self.models = self._runnable(runtime)

    def close(self) -> None:
        def shut() -> None:
            if self._store is not None:
                self._store.close()

        self._worker.submit(shut).result()
        self._worker.shutdown()

    @property
    def store(self) -> Store:
        if self._store is None:
            raise RuntimeError("the service is not open")
        return self._store

    def _runtime(self, temperature: float, seed: int) -> Runtime:
        key = (temperature, seed)
        if key not in self._runtimes:
            base = next(iter(self._runtimes.values()), None)
            generation = replace(self.config.generation, temperature=temperature, seed=seed)
            config = replace(self.config, generation=generation)
            self._runtimes[key] = base.variant(config) if base is not None else open_runtime(self.store, config)
            if len(self._runtimes) > _VARIANTS_KEPT:  # the first (configured) runtime is kept
                del self._runtimes[list(self._runtimes)[1]]
        return self._runtimes[key]

    # -- what runs there --------------------------------------------------------------------

    @staticmethod
    def _runnable(runtime: Runtime) -> list[dict]:
        """The methods this store can answer with: every method that writes (the review task and
        free requests) and needs no model it lacks. Fixed while serving (methods, trained models and
        settings are read at open), so requests check against it without a trip to the worker thread."""
        rows = []
        for name, cls in METHODS.items():
            if "review" not in cls.tasks or runtime.refusal(name) is not None:
                continue
            model = runtime.models.get(name)
            generator = NO_GENERATOR if not cls.uses_generator else model.key if model else runtime.base_generator
            rows.append({"id": name, "description": cls.description, "generator": generator})
        return rows

    def answer(
        self,
        method: str,
        user_id: str,
        *,
        instruction: str = "",
        item_id: str | None = None,
        rating: float | None = None,
        title: str | None = None,
        max_tokens: int | None = None,
        temperature: float | None = None,
        seed: int | None = None,
        explain: bool = False,
        on_text: TextSink | None = None,
    ) -> Answer:
        """``method``'s answer for ``user_id``: a review of ``item_id``, or the free ``instruction``;
        with ``on_text``, its text is passed there as it is generated."""
        if "review" not in method_class(method).tasks:  # an unknown method is a ValueError naming the known ones
            raise ValueError(
                f"{method!r} predicts ratings (evaluate --task rating); the service writes with the others"
            )
        generation = self.config.generation
        runtime = self._runtime(
            generation.temperature if temperature is None else temperature, generation.seed if seed is None else seed
        )
        if item_id is not None:
            example = request_example(self.store, user_id, item_id, rating=rating, title=title)
        else:
            example = free_request_example(self.store, user_id, instruction)
        if on_text is not None:
            prediction = runtime.stream(method, example, on_text, max_tokens=max_tokens)
        else:
            prediction = runtime.predict(method, [example], max_tokens=max_tokens)[0]
        return Answer(
            method=method,
            user_id=user_id,
            text=prediction.text,
            generator=runtime.generated_with.get(method, NO_GENERATOR),
            prompt_tokens=prediction.prompt_tokens,
            completion_tokens=prediction.completion_tokens,
            cached=prediction.cached,
            notes=prediction.notes,
            explain=runtime.inputs(method, example).to_dict() if explain else None,
        )

    def users(self, offset: int, limit: int) -> dict:
        ids = self.store.user_ids()
        return {"total": len(ids), "offset": offset, "data": ids[offset : offset + limit]}

    def persona(self, user_id: str, neighbours: int) -> dict:
        if not self.store.history(user_id)[0]:
            raise UnknownUser(f"no user {user_id!r}")
        return user_persona(self.store, user_id, neighbours=neighbours, words=self.config.peers.quotes)

    def add_reviews(self, reviews: list[Interaction]) -> dict:
        """Add reviews without a rebuild (:mod:`copersona.live.update`); runtimes forget what changed."""
        if self._build is None:
            self._build = Build.of(self.store)
        report = add_reviews(self._build, reviews)
        for runtime in self._runtimes.values():
            runtime.forget()
        return asdict(report)

    def erase(self, user_id: str) -> dict:
        """Forget ``user_id`` in the store, and every text of theirs the runtimes hold in memory."""
        report = erase_user(self.store, user_id)
        for runtime in self._runtimes.values():
            runtime.forget()
        return asdict(report)

    def peers(self, user_id: str, limit: int) -> dict:
        persona = self.persona(user_id, limit)
        return {
            "user_id": user_id,
            "combined": persona["combined_neighbours"],
            "facets": {f["key"]: f["neighbours"] for f in persona["facets"]},
        }
