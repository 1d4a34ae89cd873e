"""The offline stages of ``copersona rec index`` (paper 003, Sec. 3.1), resumable.

Each stage reads what the previous ones wrote to the store, writes its own records in
transactions, skips what is already there (so a killed run resumes where it stopped), and logs
its counts in the store's run log:

load -> candidates (BPR-MF, LightGCN) -> summaries -> aspects -> personas -> alignment -> facets
(CoPersona's facet states of each user, for the rerankers beyond the paper).

Only training interactions shape the CF models, the aspects, the personas and the alignments; the
validation and test interactions are targets and nothing else.

The reasoning over items and reviews (item summaries, aspect tuples) runs its chunks on an engine
(:mod:`copersona.engines`): in this process, or in Ray actors that load the same reasoner (the
store, opened by location, is the LLM's answer cache); the driver writes every chunk.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import scipy.sparse as sp

from copersona.backends.embed import Embedder
from copersona.backends.llm import LLM
from copersona.engines import Engine, LocalEngine
from copersona.progress import Progress
from copersona.rec.candidates import generator as make_generator
from copersona.rec.config import RecConfig
from copersona.rec.data import load_interactions
from copersona.rec.profiles import CachedEncoder, entry_text
from copersona.rec.reasoning import AspectInput, ExtractiveReasoner, ItemEvidence, LLMReasoner, Reasoner
from copersona.rec.records import Candidates
from copersona.store import StoreError
from copersona.store.rec import RecStore
from copersona.store.records import RunRecord

CHUNK = 256  # records reasoned over and written per transaction
# Stages whose chunks run on the engine; the others run on the driver.
ENGINE_STAGES = ("summaries", "aspects")


@dataclass
class ReasonInChunks:
    """A stage's reasoning (``summaries`` or ``aspects`` of :class:`Reasoner`) over one chunk,
    loadable in an engine's worker process."""

    config: RecConfig
    store_location: str
    stage: str

    def open(self) -> Callable[[list], list]:
        """In a worker process: the index's reasoner loaded from the config, the store opened by location."""
        return self.bind(RecIndex.of(RecStore(self.store_location, create=False), self.config))

    def bind(self, index: RecIndex) -> Callable[[list], list]:
        return getattr(index.reasoner(), self.stage)


class RecIndex:
    """The offline stages against one store; ``run`` does all of them."""

    def __init__(
        self,
        store: RecStore,
        config: RecConfig,
        embedder_factory: Callable[[], Embedder],
        llm_factory: Callable[[RecStore], LLM] | None = None,
        progress: Progress | None = None,
        engine: Engine | None = None,
    ):
        self.store = store
        self.config = config
        self.progress = progress or Progress()
        self.engine = engine or LocalEngine()
        self._embedder_factory = embedder_factory
        self._llm_factory = llm_factory
        self._embedder: Embedder | None = None
        self._reasoner: Reasoner | None = None

    @classmethod
    def of(
        cls, store: RecStore, config: RecConfig, progress: Progress | None = None, engine: Engine | None = None
    ) -> RecIndex:
        """The index with the models the config names (loaded only when a stage needs them)."""
        from copersona.backends import load_embedder, load_llm_backend

        llm_factory = (lambda s: LLM(load_llm_backend(config.llm), cache=s)) if config.llm else None
        return cls(store, config, lambda: load_embedder(config.embedder), llm_factory, progress, engine)

    # -- models ------------------------------------------------------------------------------
    def embedder(self) -> Embedder:
        if self._embedder is None:
            self._embedder = self._embedder_factory()
        return self._embedder

    def encoder(self) -> CachedEncoder:
        return CachedEncoder(self.embedder(), self.store)

    def reasoner(self) -> Reasoner:
        if self._reasoner is None:
            extractive = ExtractiveReasoner(self.embedder())
            calibration = self.store.get_meta("rec_aspect_calibration")
            if calibration is not None:
                extractive.load_calibration(calibration)
            if self._llm_factory is None:
                self._reasoner = extractive
            else:
                self._reasoner = LLMReasoner(self._llm_factory(self.store), extractive)
        return self._reasoner

    # -- the run -----------------------------------------------------------------------------
    def run(self, data_path: str | Path | None = None, *, meta: str | Path | None = None) -> dict[str, RunRecord]:
        self._check_config()
        stages: dict[str, RunRecord] = {}
        if self.store.count("rec_interactions") == 0:
            if data_path is None:
                raise StoreError(f"{self.store.path} holds no interactions yet: give a data path")
            stages["load"] = self.store.run_stage("rec-load", lambda: self.load(data_path, meta))
        stages["candidates"] = self.store.run_stage("rec-candidates", self.candidates)
        for name, work in (
            ("summaries", self.summaries),
            ("aspects", self.aspects),
            ("personas", self.personas),
            ("alignment", self.alignment),
            ("facets", self.facets),
        ):
            where = self.engine.describe() if name in ENGINE_STAGES else {"engine": "local"}
            stages[name] = self.store.run_stage(f"rec-{name}", self._counting_llm_calls(work, where))
        return stages

    def _on_engine(self, stage: str, records: list) -> Iterator[tuple[list, list]]:
        """``(chunk, results)`` of the reasoner's ``stage`` over ``records`` in chunks of ``CHUNK``, as the
        engine finishes them."""
        chunks = [records[start : start + CHUNK] for start in range(0, len(records), CHUNK)]
        worker = ReasonInChunks(self.config, self.store.location, stage)
        for index, results in self.engine.map(worker, chunks, lambda: worker.bind(self)):
            yield chunks[index], results

    def _counting_llm_calls(self, work: Callable[[], dict], where: dict) -> Callable[[], dict]:
        """``work`` whose details also say where it ran and how many LLM calls it made here and how many
        the cache answered (calls in an engine's workers are counted there)."""

        def counted() -> dict:
            llm = getattr(self.reasoner(), "llm", None)
            if llm is None:
                return work() | where
            before = llm.stats.to_dict()
            details = work()
            after = llm.stats.to_dict()
            keys = ("calls", "cache_hits", "structured_failures", "structured_retries")
            details["llm"] = {key: after[key] - before[key] for key in keys} | {"model": llm.model_id}
            return details | where

        return counted

    def _check_config(self) -> None:
        """Settings that shape stored records must not change under a resumed index."""
        pinned = {
            "embedder": self.config.embedder,
            "llm": self.config.llm,
            "max_users": self.config.max_users,
            "candidates": self.config.candidates,
            "bpr": self.config.to_dict()["bpr"],
            "lightgcn": self.config.to_dict()["lightgcn"],
            "seed": self.config.seed,
            "facets": self.config.facets,
        }
        stored = self.store.get_meta("rec_pinned_config")
        if stored is not None and stored != pinned and self.store.count("rec_interactions"):
            changed = sorted(k for k in pinned if stored.get(k) != pinned[k])
            raise StoreError(
                f"{self.store.path} was indexed with other settings ({', '.join(changed)}); use a new store"
            )
        self.store.set_meta("rec_pinned_config", pinned)
        self.store.set_meta("rec_config", self.config.to_dict())

    # -- stages ------------------------------------------------------------------------------
    def load(self, data_path: str | Path, meta: str | Path | None = None) -> dict:
        data = load_interactions(data_path, meta=meta)
        for report in data.reports:
            self.progress.message(report.summary_line())
        interactions, splits = data.interactions, data.splits
        if self.config.max_users is not None:
            kept = set(sorted({i.user_id for i in interactions})[: self.config.max_users])
            chosen = [n for n, i in enumerate(interactions) if i.user_id in kept]
            interactions, splits = [interactions[n] for n in chosen], [splits[n] for n in chosen]
        used = {i.item_id for i in interactions}
        self.store.write_items(item for item_id, item in data.items.items() if item_id in used)
        self.store.write_interactions(interactions, splits)
        self.store.set_meta("rec_data_path", str(Path(data_path).resolve()))
        counts = dict(data.counts) | {"kept_users": len({i.user_id for i in interactions}), "items": len(used)}
        counts |= dict(Counter(splits))
        self.progress.message(
            f"{counts['kept_users']} users, {len(used)} items: {counts.get('train', 0)} training, "
            f"{counts.get('validation', 0)} validation and {counts.get('test', 0)} test interactions"
        )
        return {"counts": counts, "reports": [r.to_dict() for r in data.reports]}

    def candidates(self) -> dict:
        """Each generator's top-k per validation and test user, fit on training interactions."""
        rows = self.store.rec_interactions()
        users = sorted({i.user_id for i, _ in rows})
        items = sorted(self.store.items())
        user_index = {u: n for n, u in enumerate(users)}
        item_index = {i: n for n, i in enumerate(items)}
        train = _matrix([(i, s) for i, s in rows if s == "train"], user_index, item_index, len(users), len(items))
        before_test = _matrix([(i, s) for i, s in rows if s != "test"], user_index, item_index, len(users), len(items))
        targets = {s: {i.user_id: i.item_id for i, split in rows if split == s} for s in ("validation", "test")}
        details = {}
        for name in self.config.generators:
            done = {s: len(self.store.candidates(name, s)) for s in targets}
            if all(done[s] == len(targets[s]) for s in targets):
                details[name] = {"resumed": True}
                continue
            settings = getattr(self.config, name)
            model = make_generator(name, settings)
            with self.progress.stage(f"fit {name}", total=1) as advance:
                model.fit(train)
                advance(1)
            found = []
            for split, exclude in (("validation", train), ("test", before_test)):
                split_users = sorted(targets[split])
                if not split_users:
                    continue
                top = model.top(np.array([user_index[u] for u in split_users]), self.config.candidates, exclude)
                for user, row in zip(split_users, top):
                    found.append(
                        Candidates(
                            generator=name,
                            split=split,
                            user_id=user,
                            items=[items[j] for j in row if j >= 0],
                            target=targets[split][user],
                        )
                    )
            self.store.write_candidates(found)
            hits = {
                s: float(np.mean([c.target in c.items for c in found if c.split == s])) for s in targets if targets[s]
            }
            details[name] = {"users": len(found), f"hit@{self.config.candidates}": hits}
            self.progress.message(f"{name}: target among the top {self.config.candidates}: {hits}")
        return details

    def summaries(self) -> dict:
        items = self.store.items()
        todo = [item for item in items.values() if not item.summary]
        methods: Counter = Counter()
        with self.progress.stage("item summaries", total=len(todo)) as advance:
            for chunk, found in self._on_engine("summaries", todo):
                written = []
                for item, (summary, method) in zip(chunk, found):
                    written.append(item.model_copy(update={"summary": summary}))
                    methods[method] += 1
                self.store.write_items(written)
                advance(len(chunk))
        return {"items": len(items), "summarized": len(todo), "methods": dict(methods)}

    def _training_reviews(self) -> list[AspectInput]:
        return [
            AspectInput(i.user_id, i.item_id, i) for i, split in self.store.rec_interactions("train") if i.text.strip()
        ]

    def aspects(self) -> dict:
        reviews = self._training_reviews()
        have = self.store.aspects()
        todo = [r for r in reviews if (r.user_id, r.item_id) not in have]
        reasoner = self.reasoner()
        extractive = reasoner if isinstance(reasoner, ExtractiveReasoner) else reasoner.fallback  # type: ignore[attr-defined]
        if self.store.get_meta("rec_aspect_calibration") is None and reviews:
            with self.progress.stage("calibrate aspect slots", total=1) as advance:
                self.store.set_meta("rec_aspect_calibration", extractive.calibrate(reviews))
                advance(1)
        with self.progress.stage("aspect tuples", total=len(todo)) as advance:
            for chunk, found in self._on_engine("aspects", todo):
                self.store.write_aspects((r.user_id, r.item_id, a, m) for r, (a, m) in zip(chunk, found))
                advance(len(chunk))
        stored = self.store.aspects()
        informative = sum(a.informative() for a in stored.values())
        return {
            "reviews": len(reviews),
            "extracted": len(todo),
            "informative": informative,
            "dropped_over_75pct_null": len(stored) - informative,
            "methods": self.store.aspect_methods(),
        }

    def personas(self) -> dict:
        items = self.store.items()
        aspects = self.store.aspects()
        by_item: dict[str, list[tuple[str, object]]] = defaultdict(list)
        for review in self._training_reviews():
            aspect = aspects.get((review.user_id, review.item_id))
            if aspect is not None and aspect.informative():
                by_item[review.item_id].append((review.user_id, aspect))
        built = self.store.items_with_personas_built()
        todo = [i for i in sorted(items) if i not in built]
        encoder = self.encoder()
        texts = [a.text() for item_id in todo for _, a in by_item.get(item_id, [])]
        with self.progress.stage("embed aspect tuples", total=1) as advance:
            # One call for all items' tuples (cached in the store): far better batching than per item.
            vector_of = dict(zip(texts, encoder.encode(texts))) if texts else {}
            advance(1)
        fallbacks = 0
        with self.progress.stage("personas", total=len(todo)) as advance:
            for item_id in todo:
                members = by_item.get(item_id, [])
                tuples = [a for _, a in members]
                vectors = np.stack([vector_of[a.text()] for a in tuples]) if tuples else np.zeros((0, encoder.dim))
                evidence = ItemEvidence(items[item_id], [u for u, _ in members], tuples, vectors)  # type: ignore[arg-type]
                personas, details = self.reasoner().personas(evidence)
                self.store.write_personas(item_id, personas, self.reasoner().method, details)
                fallbacks += "fallback" in details
                advance(1)
        built = self.store.persona_details()
        per_item = Counter(d.get("k", 0) for d in built.values())
        return {
            "items": len(items),
            "built": len(todo),
            "personas_per_item": {str(k): v for k, v in sorted(per_item.items())},
            "summary_only_items": per_item.get(0, 0),
            "llm_fallbacks": fallbacks,
        }

    def alignment(self) -> dict:
        items, aspects, personas = self.store.items(), self.store.aspects(), self.store.personas()
        done = {(a.user_id, a.item_id) for a in self.store.alignments()}
        history: dict[str, list[str]] = defaultdict(list)
        todo = []
        for interaction, _ in self.store.rec_interactions("train"):
            key = (interaction.user_id, interaction.item_id)
            if key in aspects and key not in done:
                # The judge sees the profile before this interaction: what the user had shown by then.
                todo.append((interaction, list(reversed(history[interaction.user_id][-self.config.history_length :]))))
            history[interaction.user_id].append(entry_text(items[interaction.item_id], aspects.get(key)))
        found, unaligned = [], 0
        with self.progress.stage("user-persona alignment", total=len(todo)) as advance:
            for interaction, profile in todo:
                item = items[interaction.item_id]
                aligned = self.reasoner().align(profile, item, personas.get(item.item_id, []), interaction.user_id)
                if aligned is None:
                    unaligned += 1
                else:
                    found.append(aligned)
                if len(found) >= CHUNK:
                    self.store.write_alignments(found)
                    found = []
                advance(1)
        self.store.write_alignments(found)
        methods = Counter(a.method for a in self.store.alignments())
        return {"reviews": len(todo), "unaligned": unaligned, "methods": dict(methods)}

    def facets(self) -> dict:
        """CoPersona facet states of every user from their training reviews (extractive, built-in schema)."""
        from copersona.config import SummaryConfig
        from copersona.facets.induction import builtin_schema
        from copersona.facets.summarize import ExtractiveSummarizer

        profiles: dict[str, list] = defaultdict(list)
        for review in self._training_reviews():
            profiles[review.user_id].append(review.review)
        summary_config = SummaryConfig()
        summarizer = ExtractiveSummarizer(builtin_schema(self.config.facets), summary_config, self.embedder())
        calibration = self.store.get_meta("rec_facet_calibration")
        if calibration is None:
            calibration = summarizer.calibrate(dict(profiles))
            self.store.set_meta("rec_facet_calibration", calibration)
        summarizer.load_calibration(calibration)
        done = self.store.users_with_facets()
        todo = sorted(u for u in profiles if u not in done)
        encoder = self.encoder()
        labels: Counter = Counter()
        with self.progress.stage("facet states", total=len(todo)) as advance:
            for start in range(0, len(todo), CHUNK):
                users = todo[start : start + CHUNK]
                states = summarizer.summarize({u: profiles[u] for u in users})
                texts = [s.facet_text(summary_config.placeholder) for s in states]
                vectors = encoder.encode(texts)
                self.store.write_facets(
                    (s.user_id, s.facet_key, s.reliability, t, v) for s, t, v in zip(states, texts, vectors)
                )
                labels.update(s.reliability for s in states)
                advance(len(users))
        return {"users": len(profiles), "summarized": len(todo), "reliability": dict(labels)}


def _matrix(rows, user_index: dict[str, int], item_index: dict[str, int], n_users: int, n_items: int) -> sp.csr_matrix:
    pairs = {(user_index[i.user_id], item_index[i.item_id]) for i, _ in rows}
    if not pairs:
        return sp.csr_matrix((n_users, n_items), dtype=np.float32)
    users, items = zip(*sorted(pairs))
    return sp.csr_matrix((np.ones(len(users), dtype=np.float32), (users, items)), shape=(n_users, n_items))
