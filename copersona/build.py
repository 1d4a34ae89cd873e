"""The offline persona build: data -> profiles -> facet schema -> facet states -> multiplex graph.

Every stage reads records from the store, writes records to the store, skips what is already
there and logs a run with counts and timings, so a killed build resumes where it stopped and ends
with the same graph as an uninterrupted one. Facet states are written one batch of users per
transaction; the graph is rebuilt deterministically from them in one transaction.

The per-user stages (profile embedding, facet summaries) run their batches on an engine
(:mod:`copersona.engines`): in this process, or on Ray; the driver writes every batch.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from copersona.backends.embed import Embedder
from copersona.backends.llm import LLM
from copersona.config import BuildConfig
from copersona.data.loaders import load_path
from copersona.data.prepare import prepare_users
from copersona.data.records import Interaction
from copersona.engines import Engine, LocalEngine
from copersona.facets.induction import (
    cluster_features,
    cluster_users,
    evidence_packages,
    induce_schema,
    load_schema_file,
)
from copersona.facets.profile import profile_text, recent, style_features
from copersona.facets.records import FacetSchema, FacetSummary
from copersona.facets.summarize import AbstractiveSummarizer, ExtractiveSummarizer, Summarizer
from copersona.graph.multiplex import build_graph
from copersona.progress import Progress
from copersona.store import Store, StoreError
from copersona.store.records import RunRecord


@dataclass
class Backends:
    """Models a build uses; the LLM is created lazily because the extractive path may never need it."""

    embedder_factory: Callable[[], Embedder]
    llm_factory: Callable[[Store], LLM]
    _embedder: Embedder | None = field(default=None, init=False, repr=False)
    _llm: LLM | None = field(default=None, init=False, repr=False)
    _summarizer_of: tuple[FacetSchema, Summarizer] | None = field(default=None, init=False, repr=False)

    def embedder(self) -> Embedder:
        if self._embedder is None:
            self._embedder = self.embedder_factory()
        return self._embedder

    def llm(self, store: Store) -> LLM:
        if self._llm is None:
            self._llm = self.llm_factory(store)
        return self._llm

    def summarizer(self, schema: FacetSchema, config: BuildConfig, store: Store) -> Summarizer:
        """One summarizer per schema: making one embeds the facets' query texts, which a live
        update (one user at a time) should not pay for again."""
        if self._summarizer_of is None or self._summarizer_of[0] != schema:
            kind = config.summary.summarizer
            if kind == "extractive":
                summarizer: Summarizer = ExtractiveSummarizer(schema, config.summary, self.embedder())
            elif kind == "abstractive":
                summarizer = AbstractiveSummarizer(schema, config.summary, self.llm(store))
            else:
                raise ValueError(f"unknown summarizer {kind!r}: use 'extractive' or 'abstractive'")
            self._summarizer_of = (schema, summarizer)
        return self._summarizer_of[1]

    @classmethod
    def of(cls, config: BuildConfig) -> Backends:
        """Model factories from the config's spec strings (models load only when a stage needs them)."""
        from copersona.backends import load_embedder, load_llm_backend

        return cls(
            embedder_factory=lambda: load_embedder(config.embedder),
            llm_factory=lambda store: LLM(load_llm_backend(config.llm), cache=store),
        )


@dataclass
class BuildResult:
    """The run record of every stage this build ran, by stage name."""

    stages: dict[str, RunRecord] = field(default_factory=dict)


# Profiles embedded and written per transaction (a killed build keeps what it embedded).
PROFILE_CHUNK = 256


@dataclass
class _BuildWorker(ABC):
    """What an engine's worker process needs to load the build's models and open its store."""

    config: BuildConfig
    store_location: str

    def open(self) -> Callable:
        """In a worker process: the build's models loaded from its config, the store opened by location."""
        return self.bind(Backends.of(self.config), Store(self.store_location, create=False))

    @abstractmethod
    def bind(self, backends: Backends, store: Store) -> Callable:
        """The batch function on these models."""


@dataclass
class EmbedProfileTexts(_BuildWorker):
    """Profile texts -> their embeddings (one batch: a chunk of users' texts)."""

    def bind(self, backends: Backends, store: Store) -> Callable[[list[str]], np.ndarray]:
        return backends.embedder().encode


@dataclass
class SummarizeFacets(_BuildWorker):
    """Users' profiles -> their facet states with embeddings, by the calibrated summarizer."""

    schema: FacetSchema
    calibration: dict

    def bind(self, backends: Backends, store: Store) -> Callable[[dict], list[tuple[FacetSummary, np.ndarray]]]:
        summarizer = backends.summarizer(self.schema, self.config, store)
        summarizer.load_calibration(self.calibration)
        embedder, placeholder = backends.embedder(), self.config.summary.placeholder

        def summarize(profiles: dict[str, list[Interaction]]) -> list[tuple[FacetSummary, np.ndarray]]:
            states = summarizer.summarize(profiles)
            return list(zip(states, embedder.encode([s.facet_text(placeholder) for s in states])))

        return summarize


# Settings that shape stored records: a resumed build must use the same ones.
_PINNED = ("embedder", "summary.summarizer", "facets.num_facets", "data")


def _pinned(config: BuildConfig) -> dict:
    raw = config.to_dict()
    out = {}
    for key in _PINNED:
        value = raw
        for part in key.split("."):
            value = value[part]
        out[key] = value
    if config.summary.summarizer == "abstractive":
        out["llm"] = config.llm
    return out


class Build:
    """Runs the stages against one store; ``run`` does all of them."""

    @classmethod
    def of(cls, store: Store, progress: Progress | None = None) -> Build:
        """The build that made ``store``: its stored config and models (for live updates)."""
        raw = store.get_meta("build_config")
        if raw is None:
            raise StoreError(f"{store.path}: not built yet; run `copersona build` first")
        config = BuildConfig.from_dict(raw)
        return cls(store, config, Backends.of(config), progress)

    def __init__(
        self,
        store: Store,
        config: BuildConfig,
        backends: Backends,
        progress: Progress | None = None,
        engine: Engine | None = None,
    ):
        self.store = store
        self.config = config
        self.backends = backends
        self.progress = progress or Progress()
        self.engine = engine or LocalEngine()

    def run(self, data_path: str | Path | None = None, *, batch_users: int = 32) -> BuildResult:
        self._check_config()
        result = BuildResult()
        if self.store.count("interactions") == 0:
            if data_path is None:
                raise StoreError(f"{self.store.path} holds no data yet: give a data path")
            result.stages["load"] = self._stage("load", lambda: self.load(data_path))
        elif data_path is not None and self.store.get_meta("data_path") != str(Path(data_path).resolve()):
            raise StoreError(
                f"{self.store.path} was built from {self.store.get_meta('data_path')}, not {data_path}; use a new store"
            )
        result.stages["profiles"] = self._stage("profiles", self.profiles, on_engine=True)
        result.stages["schema"] = self._stage("schema", self.schema)
        result.stages["summaries"] = self._stage("summaries", lambda: self.summaries(batch_users), on_engine=True)
        result.stages["graph"] = self._stage("graph", self.graph)
        return result

    # -- plumbing ----------------------------------------------------------------------------
    def _check_config(self) -> None:
        pinned, stored = _pinned(self.config), self.store.get_meta("pinned_config")
        if stored is None or self.store.count("interactions") == 0:  # nothing was built on the old pins yet
            self.store.set_meta("pinned_config", pinned)
        elif stored != pinned:
            changed = sorted(k for k in set(stored) | set(pinned) if stored.get(k) != pinned.get(k))
            raise StoreError(f"{self.store.path} was built with other settings ({', '.join(changed)}); use a new store")
        # The rest (graph settings, say) may change between runs; the latest run's config is kept.
        self.store.set_meta("build_config", self.config.to_dict())

    def _stage(self, name: str, work: Callable[[], dict], *, on_engine: bool = False) -> RunRecord:
        """Runs a logged stage; the log says where its work ran (the driver's stages run locally)."""
        where = self.engine.describe() if on_engine else {"engine": "local"}
        return self.store.run_stage(name, lambda: {**work(), **where})

    # -- stages ------------------------------------------------------------------------------
    def load(self, data_path: str | Path) -> dict:
        """Read the data, apply App. A's filters and split, and store users with held-out ranks."""
        interactions, report = load_path(data_path)
        data_config = self.config.data
        users, report = prepare_users(interactions, data_config, report)
        self.progress.message(report.summary_line())
        if not users:
            raise ValueError(f"no user of {data_path} passes the filters: {report.summary_line()}")
        with self.progress.stage("load", total=len(users)) as advance, self.store.transaction():
            self.store.write_users(users, data_config.holdout_k)
            self.store.set_meta("data_path", str(Path(data_path).resolve()))
            advance(len(users))
        return {"users": len(users), "report": report.to_dict()}

    def profiles(self, users: Iterable[str] | None = None) -> dict:
        """tau_u per user, embedded (L2-normalized) for clustering and the global baseline graph, and
        the profile's style features (for the whole-persona layer).

        ``users``: (re)embed exactly these (a live update); default every user not embedded yet.
        """
        if users is None:
            done = set(self.store.profile_vectors()[0])
            profiles = self.store.profiles()
        else:
            done, profiles = set(), self.store.profiles(users)
        todo = sorted(set(profiles) - done)
        if todo:
            facets = self.config.facets
            chunks = [todo[start : start + PROFILE_CHUNK] for start in range(0, len(todo), PROFILE_CHUNK)]
            texts = [
                [profile_text(profiles[u], facets.profile_reviews, facets.profile_max_chars) for u in chunk]
                for chunk in chunks
            ]
            worker = EmbedProfileTexts(self.config, self.store.location)
            with self.progress.stage("embed profiles", total=len(todo)) as advance:
                for index, vectors in self.engine.map(worker, texts, lambda: worker.bind(self.backends, self.store)):
                    styles = [style_features(profiles[u]) for u in chunks[index]]
                    self.store.write_profile_vectors(chunks[index], vectors, styles)
                    advance(len(chunks[index]))
        return {"embedded": len(todo), "reused": len(done)}

    def schema(self) -> dict:
        """The facet schema: stored, from a file, or induced from cluster evidence by the LLM."""
        existing = self.store.schema()
        if existing is not None:
            return {"source": existing.source, "facets": [f.name for f in existing.facets], "reused": True}
        facets_config = self.config.facets
        details: dict = {}
        if facets_config.schema_file:
            schema = load_schema_file(facets_config.schema_file)
        else:
            schema, details = self._induce()
        self.store.write_schema(schema)
        self.progress.message(
            f"facet schema ({schema.source}): {', '.join(f.name for f in schema.facets)}"
            + (f" - {schema.note}" if schema.source == "builtin" else "")
        )
        return {"source": schema.source, "note": schema.note, "facets": [f.name for f in schema.facets], **details}

    def _induce(self) -> tuple[FacetSchema, dict]:
        facets_config = self.config.facets
        user_ids, vectors = self.store.profile_vectors()
        profiles = self.store.profiles(user_ids)
        style = np.vstack([style_features(profiles[u]) for u in user_ids])
        labels = cluster_users(cluster_features(vectors, style), facets_config.num_clusters, facets_config.seed)
        texts = [
            profile_text(profiles[u], facets_config.profile_reviews, facets_config.profile_max_chars) for u in user_ids
        ]
        latest = [recent(profiles[u], 1)[0].text for u in user_ids]
        packages = evidence_packages(user_ids, texts, latest, vectors, style, labels, facets_config)
        self.store.write_clusters(packages)
        llm = self.backends.llm(self.store)
        with self.progress.stage("induce facet schema", total=1) as advance:
            schema = induce_schema(llm, packages, facets_config)
            advance(1)
        return schema, {
            "clusters": len(packages),
            "cluster_sizes": [p.size for p in packages],
            "llm": llm.stats.to_dict(),
        }

    def frozen_summarizer(self) -> Summarizer:
        """The store's summarizer with its stored calibration: what summarizes a user again (a live
        update, a profile cut short for evaluation) the way the build summarized everyone."""
        schema, calibration = self.store.schema(), self.store.get_meta("summary_calibration")
        if schema is None or calibration is None:
            raise StoreError(f"{self.store.path}: not fully built; finish `copersona build` first")
        summarizer = self._summarizer(schema)
        summarizer.load_calibration(calibration)
        return summarizer

    def _summarizer(self, schema: FacetSchema) -> Summarizer:
        return self.backends.summarizer(schema, self.config, self.store)

    def summaries(self, batch_users: int, users: Iterable[str] | None = None) -> dict:
        """Facet states of every user not yet done, one transaction per batch of users.

        ``users``: summarize exactly these again (a live update), with the stored calibration.
        """
        schema = self.store.schema()
        keys = [f.key for f in schema.facets]
        calibration = self.store.get_meta("summary_calibration")
        if users is None:
            profiles = self.store.profiles()
            done = self.store.users_with_states(keys)
        else:
            if calibration is None:
                raise StoreError(f"{self.store.path}: no summarizer calibration; finish `copersona build` first")
            profiles, done = self.store.profiles(users), set()
        todo = sorted(set(profiles) - done)
        summarizer = self._summarizer(schema)
        self.store.set_meta("summarizer", summarizer.method)
        if calibration is None:
            with self.progress.stage(f"calibrate {summarizer.method} summarizer", total=1) as advance:
                calibration = summarizer.calibrate(profiles)
                advance(1)
            self.store.set_meta("summary_calibration", calibration)
        placeholder = self.config.summary.placeholder
        labels: Counter = Counter()
        fallbacks: Counter = Counter()
        dropped = 0
        starts = range(0, len(todo), batch_users)
        batches = [{u: profiles[u] for u in todo[start : start + batch_users]} for start in starts]
        worker = SummarizeFacets(self.config, self.store.location, schema, calibration)
        with self.progress.stage("facet summaries", total=len(todo)) as advance:
            for index, pairs in self.engine.map(worker, batches, lambda: worker.bind(self.backends, self.store)):
                self.store.write_facet_states(pairs, placeholder)
                batch = batches[index]
                states = [state for state, _ in pairs]
                labels.update(s.reliability for s in states)
                fallbacks.update(s.fallback.split(":")[0] for s in states if s.fallback)
                dropped += sum(s.dropped_quotes for s in states)
                advance(len(batch))
        details = {
            "summarizer": summarizer.method,
            "users": len(todo),
            "reused": len(done),
            "labels": dict(labels),
            "fallbacks": dict(fallbacks),
            "dropped_quotes": dropped,
        }
        if isinstance(summarizer, AbstractiveSummarizer):
            details["llm"] = summarizer.llm.stats.to_dict()
        return details

    def graph(self) -> dict:
        """The multiplex graph, rebuilt from every user's facet states in one transaction."""
        keys = [f.key for f in self.store.schema().facets]
        missing = len(self.store.user_ids()) - len(self.store.users_with_states(keys))
        if missing:
            raise StoreError(f"{missing} users lack facet states; run the build again to finish them")
        with self.progress.stage("multiplex graph", total=len(keys)) as advance:
            counts = build_graph(self.store, self.config.graph, keys)
            advance(len(keys))
        return counts
