"""The store: schema-versioned, typed reads and writes, transactional, in one SQLite file or one
PostgreSQL database (:mod:`copersona.store.database`).

Many readers, one writer: every write goes through :meth:`Store.transaction`, which takes the
write lock up front (SQLite's ``BEGIN IMMEDIATE``, PostgreSQL's advisory lock) so a stage killed
half-way leaves either all or none of a batch.
"""

from __future__ import annotations

import json
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from copersona.config import GraphConfig
from copersona.data.records import Example, Interaction, User
from copersona.data.split import examples_for_user, heldout_ranks, split_of_rank
from copersona.facets.records import ClusterEvidence, Facet, FacetSchema, FacetSummary, ReviewRef, source_of
from copersona.graph.records import STYLE_META, Edge, Neighbour, rank_neighbours
from copersona.personadb.records import Persona, PersonaUnit
from copersona.store.database import Database, SQLiteDatabase, StoreError, open_database
from copersona.store.records import RunRecord

SCHEMA_VERSION = 6

_INTERACTION_COLUMNS = (
    "user_id",
    "item_id",
    "timestamp",
    "rating",
    "review_title",
    "text",
    "item_title",
    "item_description",
    "item_category",
)
_FACET_STATE_COLUMNS = (
    "user_id",
    "facet_key",
    "summary",
    "quotes",
    "reliability",
    "method",
    "fallback",
    "dropped_quotes",
    "facet_text",
    "placeholder",
    "vector",
    "sources",
)


def upsert(table: str, columns: Sequence[str], key: Sequence[str]) -> str:
    """INSERT of one row that replaces the row with the same ``key`` (both engines' ON CONFLICT)."""
    marks = ", ".join("?" * len(columns))
    update = ", ".join(f"{c} = excluded.{c}" for c in columns if c not in key)
    action = f"DO UPDATE SET {update}" if update else "DO NOTHING"
    return f"INSERT INTO {table}({', '.join(columns)}) VALUES ({marks}) ON CONFLICT({', '.join(key)}) {action}"


def _blob(vector: np.ndarray) -> bytes:
    return np.ascontiguousarray(vector, dtype=np.float32).tobytes()


def _where(**equal: str | None) -> tuple[str, list[str]]:
    """A WHERE clause (or '') requiring each given column to equal its value; None means any."""
    given = {column: value for column, value in equal.items() if value is not None}
    clause = " AND ".join(f"{column} = ?" for column in given)
    return (f" WHERE {clause}" if clause else ""), list(given.values())


def _sources_json(sources: dict[str, list[ReviewRef]]) -> str:
    return json.dumps({part: [[r.item_id, r.timestamp] for r in refs] for part, refs in sources.items()})


def _sources(text: str) -> dict[str, list[ReviewRef]]:
    raw = json.loads(text or "{}")
    return {part: [ReviewRef(item_id=i, timestamp=t) for i, t in raw.get(part, [])] for part in ("summary", "quotes")}


def _matrix(blobs: list[bytes]) -> np.ndarray:
    if not blobs:
        return np.zeros((0, 0), dtype=np.float32)
    return np.vstack([np.frombuffer(b, dtype=np.float32) for b in blobs])


class Store:
    """Typed access to a CoPersona store: a SQLite file or a ``postgresql://`` database."""

    def __init__(self, path: str | Path, *, read_only: bool = False, create: bool = True):
        """Open the store at ``path``: read-only, for writing, or (``create``) making it if absent.

        Only a CoPersona store (or an empty file or database, when creating) is opened; any other
        file, a folder, or a missing path where ``create`` is off is refused before anything is written.
        """
        self.read_only = read_only
        self._db: Database = open_database(path, read_only=read_only, create=create)
        #: Where the store is, for messages: a file path, or the URL without its password.
        self.path: Path | str = self._db.path if isinstance(self._db, SQLiteDatabase) else self._db.location
        #: What opens the same store from another process (an engine's workers): absolute, with credentials.
        self.location = str(self._db.path.resolve()) if isinstance(self._db, SQLiteDatabase) else str(path)
        try:
            if not self._is_ours() and (read_only or not create):
                raise StoreError(f"{self.path}: not a CoPersona store (it is empty)")
            if read_only:
                self._check_version()
            else:
                self._db.open_for_writing()
                self._migrate()
        except StoreError:
            self._db.close()
            raise
        except Exception as err:  # the engine's own error: a file that is no database, say
            self._db.close()
            raise StoreError(f"{self.path}: not a CoPersona store ({err}); left untouched") from err

    @property
    def name(self) -> str:
        """A short name for titles: the file name, or the database's."""
        return Path(self.path).name if isinstance(self.path, Path) else self.path.rsplit("/", 1)[-1]

    @property
    def database(self) -> Database:
        """The connection underneath, for what works on any table (copying a store between engines)."""
        return self._db

    def _is_ours(self) -> bool:
        """True for a CoPersona store, False for an empty database; any other file is refused."""
        tables = self._db.tables()
        if not tables:
            return False
        if "meta" in tables and self._db.execute("SELECT 1 FROM meta WHERE key = 'schema_version'").fetchone():
            return True
        shown = ", ".join(sorted(tables)[:5])
        raise StoreError(f"{self.path}: not a CoPersona store (it holds other tables: {shown}); left untouched")

    # -- lifecycle -------------------------------------------------------------------------
    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _check_version(self) -> int:
        row = self._db.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
        version = json.loads(row[0]) if row else 0
        if version > SCHEMA_VERSION:
            raise StoreError(f"{self.path}: store schema {version} is newer than this code ({SCHEMA_VERSION})")
        return version

    def _migrate(self) -> None:
        with self.transaction():
            version = self._check_version() if "meta" in self._db.tables() else 0
            if version < SCHEMA_VERSION:
                self.run_schema_script("schema.sql")
                if 0 < version < 3:
                    self._add_evidence_sources()
                self._set_meta("schema_version", SCHEMA_VERSION)

    def run_schema_script(self, name: str) -> None:
        """Create the tables of one of the package's schema files (inside the open transaction)."""
        self._db.run_script(resources.files("copersona.store").joinpath(name).read_text())

    def _add_evidence_sources(self) -> None:
        """Schema 3: facet states of older stores get evidence sources, conservatively.

        A quote's source is the earliest profile review that holds it; the summary is taken to rest
        on the user's whole profile, so a time cutoff falls back to quotes whenever any profile
        review is too late (a rebuild records the exact sources).
        """
        self._db.execute("ALTER TABLE facet_states ADD COLUMN sources TEXT NOT NULL DEFAULT '{}'")
        profiles = self.profiles()
        rows = self._db.execute("SELECT user_id, facet_key, quotes FROM facet_states").fetchall()
        updates = []
        for user_id, facet_key, quotes in rows:
            profile = profiles.get(user_id, [])
            found = [source_of(q, profile) for q in json.loads(quotes)]
            latest = [ReviewRef.of(profile[-1])] if profile else []
            sources = {
                "summary": [ReviewRef.of(i) for i in profile],
                "quotes": [ref or latest[0] for ref in found] if latest else [],
            }
            updates.append((_sources_json(sources), user_id, facet_key))
        self._db.executemany("UPDATE facet_states SET sources = ? WHERE user_id = ? AND facet_key = ?", updates)

    @contextmanager
    def transaction(self) -> Iterator[Database]:
        """All writes inside commit together or not at all."""
        if self._db.in_transaction:  # nested: the outer transaction decides
            yield self._db
            return
        self._db.begin_write()
        try:
            yield self._db
        except BaseException:
            self._db.rollback()
            raise
        self._db.commit()

    @contextmanager
    def snapshot(self) -> Iterator[Store]:
        """Reads inside see one state of the store: a concurrent writer's transaction (a live
        update, an erasure) is seen whole or not at all, never half (SQLite WAL snapshots,
        PostgreSQL repeatable read)."""
        if self._db.in_transaction:
            yield self
            return
        self._db.begin_read()
        try:
            yield self
        finally:
            self._db.commit()

    # -- meta and run log -----------------------------------------------------------------
    def _set_meta(self, key: str, value: Any) -> None:
        self._db.execute(
            "INSERT INTO meta(key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value",
            (key, json.dumps(value)),
        )

    def set_meta(self, key: str, value: Any) -> None:
        with self.transaction():
            self._set_meta(key, value)

    def get_meta(self, key: str, default: Any = None) -> Any:
        row = self._db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return json.loads(row[0]) if row else default

    def start_run(self, stage: str, details: dict | None = None) -> int:
        with self.transaction():
            row = self._db.execute(
                "INSERT INTO runs(stage, started, status, details) VALUES (?, ?, 'running', ?) RETURNING run_id",
                (stage, time.time(), json.dumps(details or {})),
            ).fetchone()
        return int(row[0])

    def finish_run(self, run_id: int, status: str, details: dict) -> None:
        """Ends a run; a finished run also closes earlier runs of its stage that were killed while
        running (they stay in the log as ``interrupted``, their work resumed by this one)."""
        with self.transaction():
            self._db.execute(
                "UPDATE runs SET finished = ?, status = ?, details = ? WHERE run_id = ?",
                (time.time(), status, json.dumps(details), run_id),
            )
            if status == "done":
                self._db.execute(
                    "UPDATE runs SET status = 'interrupted' WHERE stage = (SELECT stage FROM runs WHERE run_id = ?) "
                    "AND status = 'running' AND run_id < ?",
                    (run_id, run_id),
                )

    def run_stage(self, name: str, work: Callable[[], dict]) -> RunRecord:
        """Runs ``work`` as a logged stage: its details (plus seconds) on success, the error on failure."""
        run_id = self.start_run(name)
        started = time.perf_counter()
        try:
            details = work()
        except BaseException as err:
            self.finish_run(
                run_id, "failed", {"error": f"{type(err).__name__}: {err}", "seconds": time.perf_counter() - started}
            )
            raise
        details["seconds"] = round(time.perf_counter() - started, 3)
        self.finish_run(run_id, "done", details)
        return self.run(run_id)

    def runs(self, stage: str | None = None) -> list[RunRecord]:
        return self._run_records(" WHERE stage = ?" if stage else "", (stage,) if stage else ())

    def run(self, run_id: int) -> RunRecord:
        found = self._run_records(" WHERE run_id = ?", (run_id,))
        if not found:
            raise StoreError(f"{self.path}: no run {run_id}")
        return found[0]

    def _run_records(self, where: str, args: tuple) -> list[RunRecord]:
        rows = self._db.execute(
            f"SELECT run_id, stage, started, finished, status, details FROM runs{where} ORDER BY run_id", args
        )
        return [RunRecord(r[0], r[1], r[2], r[3], r[4], json.loads(r[5])) for r in rows]

    def load_reports(self) -> list[dict]:
        """What each load read, kept and dropped (with reasons, files and lines)."""
        return [r.details["report"] for r in self.runs("load") if "report" in r.details]

    # -- users and interactions -----------------------------------------------------------
    def write_users(self, users: Iterable[User], holdout_k: int) -> int:
        """Store users' histories, marking the held-out targets by rank (0 = most recent)."""
        count = 0
        with self.transaction():
            for user in users:
                ranks = heldout_ranks(len(user.interactions), holdout_k)
                self._db.executemany(
                    upsert("interactions", (*_INTERACTION_COLUMNS, "heldout_rank"), ("user_id", "item_id")),
                    [
                        (*(getattr(i, c) for c in _INTERACTION_COLUMNS), rank)
                        for i, rank in zip(user.interactions, ranks)
                    ],
                )
                count += 1
        return count

    def user_ids(self) -> list[str]:
        return [r[0] for r in self._db.execute("SELECT DISTINCT user_id FROM interactions ORDER BY user_id")]

    def _rows_to_interactions(self, rows: Iterable[tuple]) -> list[Interaction]:
        return [Interaction(**dict(zip(_INTERACTION_COLUMNS, row))) for row in rows]

    def history(self, user_id: str) -> tuple[list[Interaction], list[int | None]]:
        """A user's whole chronology and each interaction's held-out rank (None for profile)."""
        rows = self._db.execute(
            f"SELECT {', '.join(_INTERACTION_COLUMNS)}, heldout_rank FROM interactions "
            "WHERE user_id = ? ORDER BY timestamp, item_id",
            (user_id,),
        ).fetchall()
        return self._rows_to_interactions(r[:-1] for r in rows), [r[-1] for r in rows]

    def profiles(self, user_ids: Iterable[str] | None = None) -> dict[str, list[Interaction]]:
        """Each user's profile: the interactions before the held-out block, oldest first.

        Everything persona-related (facets, graph) is built from profiles only, so no held-out
        target leaks into a user's or a peer's persona.
        """
        rows = self._db.execute(
            f"SELECT {', '.join(_INTERACTION_COLUMNS)} FROM interactions WHERE heldout_rank IS NULL "
            "ORDER BY user_id, timestamp, item_id"
        )
        wanted = set(user_ids) if user_ids is not None else None
        grouped: dict[str, list[Interaction]] = defaultdict(list)
        for interaction in self._rows_to_interactions(rows):
            if wanted is None or interaction.user_id in wanted:
                grouped[interaction.user_id].append(interaction)
        return dict(grouped)

    def item_context(self, item_id: str) -> Interaction | None:
        """Some stored review of the item (for its title, description and category), or None."""
        row = self._db.execute(
            f"SELECT {', '.join(_INTERACTION_COLUMNS)} FROM interactions WHERE item_id = ? LIMIT 1", (item_id,)
        ).fetchone()
        return self._rows_to_interactions([row])[0] if row else None

    def training_ratings(self) -> list[tuple[str, str, int, float]]:
        """(user, item, timestamp, rating) of every rated interaction that is no validation or test
        target (profiles and the training targets), oldest first: what rating models may fit."""
        return [
            (u, i, int(t), float(r))
            for u, i, t, r in self._db.execute(
                "SELECT user_id, item_id, timestamp, rating FROM interactions "
                "WHERE rating IS NOT NULL AND (heldout_rank IS NULL OR heldout_rank >= 2) ORDER BY timestamp, user_id"
            )
        ]

    def rating_range(self) -> tuple[float, float] | None:
        """The lowest and highest rating of the stored reviews (None: no review has one)."""
        low, high = self._db.execute("SELECT MIN(rating), MAX(rating) FROM interactions").fetchone()
        return (low, high) if low is not None else None

    def examples(self, split: str | None = None) -> list[Example]:
        """Examples of Appendix A's protocol, rebuilt from the stored held-out ranks."""
        out = []
        for user_id in self.user_ids():
            history, ranks = self.history(user_id)
            out.extend(e for e in examples_for_user(user_id, history, ranks) if split is None or e.split == split)
        return out

    def example_counts(self) -> dict[str, int]:
        """Examples per split, counted from the held-out ranks without building the examples."""
        counts: dict[str, int] = defaultdict(int)
        rows = self._db.execute(
            "SELECT heldout_rank, COUNT(*) FROM interactions WHERE heldout_rank IS NOT NULL GROUP BY heldout_rank"
        )
        for rank, count in rows:
            counts[split_of_rank(rank)] += count
        return dict(counts)

    # -- facet schema and clusters --------------------------------------------------------
    def write_schema(self, schema: FacetSchema) -> None:
        with self.transaction():
            self._db.execute("DELETE FROM facets")
            self._db.executemany(
                "INSERT INTO facets(position, key, facet) VALUES (?, ?, ?)",
                [(i, f.key, f.model_dump_json()) for i, f in enumerate(schema.facets)],
            )
            self._set_meta("schema_source", schema.source)
            self._set_meta("schema_note", schema.note)

    def schema(self) -> FacetSchema | None:
        rows = self._db.execute("SELECT facet FROM facets ORDER BY position").fetchall()
        if not rows:
            return None
        return FacetSchema(
            facets=[Facet.model_validate_json(r[0]) for r in rows],
            source=self.get_meta("schema_source"),
            note=self.get_meta("schema_note", ""),
        )

    def write_clusters(self, clusters: list[ClusterEvidence]) -> None:
        with self.transaction():
            self._db.execute("DELETE FROM clusters")
            self._db.executemany(
                "INSERT INTO clusters(cluster_id, evidence) VALUES (?, ?)",
                [(c.cluster_id, c.model_dump_json()) for c in clusters],
            )

    def clusters(self) -> list[ClusterEvidence]:
        rows = self._db.execute("SELECT evidence FROM clusters ORDER BY cluster_id")
        return [ClusterEvidence.model_validate_json(r[0]) for r in rows]

    # -- vectors ----------------------------------------------------------------------------
    def write_profile_vectors(self, user_ids: list[str], vectors: np.ndarray, styles: np.ndarray | None = None) -> None:
        """Users' profile embeddings and, where given, their profiles' style features, in one transaction."""
        with self.transaction():
            self._db.executemany(
                upsert("profile_vectors", ("user_id", "vector"), ("user_id",)),
                [(u, _blob(v)) for u, v in zip(user_ids, vectors)],
            )
            if styles is not None:
                self._db.executemany(
                    upsert("style_features", ("user_id", "features"), ("user_id",)),
                    [(u, np.asarray(f, dtype=np.float64).tobytes()) for u, f in zip(user_ids, styles)],
                )

    def style_features(self) -> dict[str, np.ndarray]:
        """Each user's stored style features (float64, App. C); a store of schema < 6 may lack some."""
        rows = self._db.execute("SELECT user_id, features FROM style_features").fetchall()
        return {r[0]: np.frombuffer(r[1], dtype=np.float64).copy() for r in rows}

    def profile_vectors(self) -> tuple[list[str], np.ndarray]:
        rows = self._db.execute("SELECT user_id, vector FROM profile_vectors ORDER BY user_id").fetchall()
        return [r[0] for r in rows], _matrix([r[1] for r in rows])

    # -- facet states ---------------------------------------------------------------------
    def write_facet_states(self, states: list[tuple[FacetSummary, np.ndarray]], placeholder: str) -> None:
        """Write users' facet states with their embeddings in one transaction (callers pass whole users).

        ``placeholder`` is the neutral text of facets without evidence; each state's embedded text
        (Eq. 4's t = [s; ev], or the placeholder) is stored beside its vector.
        """
        rows = []
        for s, v in states:
            text = s.facet_text(placeholder)
            rows.append(
                (
                    s.user_id,
                    s.facet_key,
                    s.summary,
                    json.dumps(s.quotes),
                    s.reliability,
                    s.method,
                    s.fallback,
                    s.dropped_quotes,
                    text,
                    int(text == placeholder),
                    _blob(v),
                    _sources_json({"summary": s.summary_sources, "quotes": s.quote_sources}),
                )
            )
        with self.transaction():
            self._db.executemany(
                upsert("facet_states", _FACET_STATE_COLUMNS, ("user_id", "facet_key")),
                rows,
            )

    def users_with_states(self, facet_keys: list[str]) -> set[str]:
        """Users that have a state for every one of ``facet_keys`` (finished by the summary stage)."""
        if not facet_keys:
            return set()
        marks = ", ".join("?" * len(facet_keys))
        rows = self._db.execute(
            f"SELECT user_id FROM facet_states WHERE facet_key IN ({marks}) GROUP BY user_id HAVING COUNT(*) = ?",
            (*facet_keys, len(facet_keys)),
        )
        return {r[0] for r in rows}

    def facet_states(self, user_id: str | None = None, facet_key: str | None = None) -> list[FacetSummary]:
        where, args = _where(user_id=user_id, facet_key=facet_key)
        rows = self._db.execute(
            "SELECT user_id, facet_key, summary, quotes, reliability, method, fallback, dropped_quotes, sources "
            f"FROM facet_states{where} ORDER BY user_id, facet_key",
            args,
        )
        states = []
        for r in rows:
            sources = _sources(r[8])
            states.append(
                FacetSummary(
                    user_id=r[0],
                    facet_key=r[1],
                    summary=r[2],
                    quotes=json.loads(r[3]),
                    reliability=r[4],
                    method=r[5],
                    fallback=r[6],
                    dropped_quotes=r[7],
                    summary_sources=sources["summary"],
                    quote_sources=sources["quotes"],
                )
            )
        return states

    def facet_layer(self, facet_key: str, *, placeholders: bool = True) -> tuple[list[str], np.ndarray, list[str]]:
        """One facet's node table: user ids (sorted), their embeddings and reliability labels.

        With ``placeholders=False`` users whose facet text is the placeholder are left out.
        """
        rows = self._db.execute(
            "SELECT user_id, vector, reliability FROM facet_states WHERE facet_key = ?"
            + ("" if placeholders else " AND placeholder = 0")
            + " ORDER BY user_id",
            (facet_key,),
        ).fetchall()
        return [r[0] for r in rows], _matrix([r[1] for r in rows]), [r[2] for r in rows]

    def placeholder_vector(self) -> np.ndarray | None:
        """The embedding of the neutral placeholder text (what a facet without evidence holds), if any user has one."""
        row = self._db.execute("SELECT vector FROM facet_states WHERE placeholder = 1 LIMIT 1").fetchone()
        return None if row is None else np.frombuffer(row[0], dtype=np.float32).copy()

    def backup(self, path: str | Path) -> None:
        """A consistent copy of the whole store in a new SQLite file at ``path`` (SQLite's online
        backup from a SQLite store, a row copy in one snapshot from any other)."""
        if isinstance(self._db, SQLiteDatabase):
            self._db.backup(path)
            return
        from copersona.store.migrate import copy_store

        with Store(path) as target:
            copy_store(self, target)

    def reset_personas(self) -> None:
        """Forget the facet schema and everything built on it (states, graph, calibration, pins).

        Interactions, profile vectors, the run log and the LLM cache stay, so a build with another
        facet setting (the facet-count ablation) reruns only the facet stages.
        """
        with self.transaction():
            for table in ("facets", "clusters", "facet_states", "edges"):
                self._db.execute(f"DELETE FROM {table}")
            self._db.execute(
                "DELETE FROM meta WHERE key IN ('pinned_config', 'summarizer', 'summary_calibration', ?)", (STYLE_META,)
            )

    # -- graph ------------------------------------------------------------------------------
    def replace_edges(self, edges: Iterable[Edge]) -> int:
        """Replace the whole graph in one transaction: readers see the old graph or the new one."""
        with self.transaction():
            self._db.execute("DELETE FROM edges")
            cur = self._db.executemany(
                "INSERT INTO edges(facet_key, source, target, similarity, weight, rank) VALUES (?, ?, ?, ?, ?, ?)",
                ((e.facet_key, e.source, e.target, e.similarity, e.weight, e.rank) for e in edges),
            )
        return cur.rowcount

    def in_edges(self, user_id: str) -> dict[str, list[str]]:
        """Per facet layer, the users that have ``user_id`` among their neighbours."""
        found: dict[str, list[str]] = defaultdict(list)
        rows = self._db.execute(
            "SELECT facet_key, source FROM edges WHERE target = ? ORDER BY facet_key, source", (user_id,)
        )
        for facet_key, source in rows:
            found[facet_key].append(source)
        return dict(found)

    def edges(self, facet_key: str | None = None, source: str | None = None) -> list[Edge]:
        where, args = _where(facet_key=facet_key, source=source)
        rows = self._db.execute(
            "SELECT facet_key, source, target, similarity, weight, rank "
            f"FROM edges{where} ORDER BY facet_key, source, rank",
            args,
        )
        return [Edge(facet_key=r[0], source=r[1], target=r[2], similarity=r[3], weight=r[4], rank=r[5]) for r in rows]

    def neighbours(self, user_id: str, limit: int | None = None) -> list[Neighbour]:
        """The user's peers by combined similarity (App. C, with the whole-persona layer), strongest
        first, ties by user id."""
        num_facets = self._db.execute("SELECT COUNT(*) FROM facets").fetchone()[0]
        per_peer: dict[str, dict[str, float]] = defaultdict(dict)
        for edge in self.edges(source=user_id):
            per_peer[edge.target][edge.facet_key] = edge.weight
        ranked = rank_neighbours(per_peer, num_facets, self.persona_weight())
        return ranked[:limit] if limit is not None else ranked

    def persona_weight(self) -> float:
        """lambda of the combined similarity as the latest build set it (``graph.persona_weight``);
        0 for a graph built without the whole-persona layer (the paper's rule)."""
        if self.get_meta(STYLE_META) is None:
            return 0.0
        graph = (self.get_meta("build_config") or {}).get("graph", {})
        return float(graph.get("persona_weight", GraphConfig.persona_weight))

    # -- LLM cache --------------------------------------------------------------------------
    def cache_get(self, key: str) -> dict | None:
        row = self._db.execute(
            "SELECT response, prompt_tokens, completion_tokens, seconds FROM llm_cache WHERE key = ?", (key,)
        ).fetchone()
        if row is None:
            return None
        return {"text": row[0], "prompt_tokens": row[1], "completion_tokens": row[2], "seconds": row[3]}

    def cache_put(
        self, key: str, model: str, request: dict, text: str, prompt_tokens: int, completion_tokens: int, seconds: float
    ) -> None:
        with self.transaction():
            self._db.execute(
                upsert(
                    "llm_cache",
                    ("key", "model", "request", "response", "prompt_tokens", "completion_tokens", "seconds", "created"),
                    ("key",),
                ),
                (key, model, json.dumps(request), text, prompt_tokens, completion_tokens, seconds, time.time()),
            )

    def cache_stats(self) -> dict:
        row = self._db.execute(
            "SELECT COUNT(*), COALESCE(SUM(prompt_tokens), 0), COALESCE(SUM(completion_tokens), 0), "
            "COALESCE(SUM(seconds), 0) FROM llm_cache"
        ).fetchone()
        # PostgreSQL sums integers as NUMERIC (Decimal): cast, so both engines give the same types.
        calls, prompt_tokens, completion_tokens, seconds = row
        return {
            "calls": int(calls),
            "prompt_tokens": int(prompt_tokens),
            "completion_tokens": int(completion_tokens),
            "seconds": float(seconds),
        }

    # -- trained models and their soft prompts ----------------------------------------------
    def write_soft_prompts(self, model_key: str, user_ids: list[str], prompts: np.ndarray) -> None:
        """Every user's soft prompt ``(N, L, H)`` of one trained model, replacing any earlier ones."""
        n, length, width = prompts.shape
        if n != len(user_ids):
            raise ValueError(f"{n} soft prompts for {len(user_ids)} users")
        with self.transaction():
            self._db.execute("DELETE FROM soft_prompts WHERE model_key = ?", (model_key,))
            self._db.executemany(
                "INSERT INTO soft_prompts(model_key, user_id, length, width, vector) VALUES (?, ?, ?, ?, ?)",
                ((model_key, u, length, width, _blob(p)) for u, p in zip(user_ids, prompts)),
            )

    def soft_prompt(self, model_key: str, user_id: str) -> np.ndarray | None:
        """``(L, H)`` float32, or ``None`` when the model has no soft prompt for the user."""
        row = self._db.execute(
            "SELECT length, width, vector FROM soft_prompts WHERE model_key = ? AND user_id = ?", (model_key, user_id)
        ).fetchone()
        return None if row is None else np.frombuffer(row[2], dtype=np.float32).reshape(row[0], row[1])

    def register_trained_model(self, method: str, model_key: str, path: str) -> None:
        """Makes ``path`` the model ``evaluate`` uses for ``method``."""
        with self.transaction():
            self._db.execute(
                upsert("trained_models", ("method", "model_key", "path", "created"), ("method",)),
                (method, model_key, path, time.time()),
            )

    def trained_models(self) -> dict[str, str]:
        """Method -> training folder of the registered models."""
        return dict(self._db.execute("SELECT method, path FROM trained_models ORDER BY method").fetchall())

    # -- Persona-DB ------------------------------------------------------------------------
    def persona_digests(self) -> set[tuple[str, str]]:
        """(user, profile digest) of every stored Persona-DB persona."""
        return set(self._db.execute("SELECT DISTINCT user_id, profile FROM persona_db_units").fetchall())

    def write_personas(self, personas: list[tuple[Persona, np.ndarray]]) -> None:
        """Store refined personas (units with their embeddings), replacing any of the same user and digest."""
        with self.transaction():
            for persona, vectors in personas:
                self._db.execute(
                    "DELETE FROM persona_db_units WHERE user_id = ? AND profile = ?", (persona.user_id, persona.profile)
                )
                positions: dict[str, int] = defaultdict(int)
                rows = []
                for unit, vector in zip(persona.units, vectors):
                    rows.append(
                        (
                            persona.user_id,
                            persona.profile,
                            unit.level,
                            positions[unit.level],
                            unit.model_dump_json(),
                            _blob(vector),
                        )
                    )
                    positions[unit.level] += 1
                self._db.executemany(
                    "INSERT INTO persona_db_units(user_id, profile, level, position, unit, vector) "
                    "VALUES (?, ?, ?, ?, ?, ?)",
                    rows,
                )

    def persona(self, user_id: str, profile: str) -> tuple[Persona, np.ndarray] | None:
        """One stored persona, units most abstract first, with their embeddings; None if absent."""
        rows = self._db.execute(
            "SELECT unit, vector FROM persona_db_units WHERE user_id = ? AND profile = ? ORDER BY "
            "CASE level WHEN 'cache' THEN 0 WHEN 'induced' THEN 1 ELSE 2 END, position",
            (user_id, profile),
        ).fetchall()
        if not rows:
            return None
        units = [PersonaUnit.model_validate_json(unit) for unit, _ in rows]
        return Persona(user_id=user_id, profile=profile, units=units), _matrix([vector for _, vector in rows])

    def personas_of(self, user_id: str) -> list[Persona]:
        """Every stored persona of a user (one per profile refined), for inspection."""
        digests = [
            d
            for (d,) in self._db.execute("SELECT DISTINCT profile FROM persona_db_units WHERE user_id = ?", (user_id,))
        ]
        return [found[0] for d in digests if (found := self.persona(user_id, d)) is not None]

    # -- erasure ---------------------------------------------------------------------------
    def delete_user_rows(self, user_id: str, holds_their_words: Callable[[str], bool]) -> dict[str, int]:
        """Remove every row of ``user_id`` and every cached text ``holds_their_words``; counts by table.

        Call inside a transaction that also repairs the graph (:func:`copersona.live.erase_user`).
        Their edges go in both directions; LLM-cache entries whose request or answer holds their
        words go (answers in their voice are cached under requests holding their history); cluster
        evidence forgets them as a medoid and drops excerpts holding their words.
        """
        self._db.erase_freed_pages()
        removed: dict[str, int] = {}
        for table, where in (
            ("interactions", "user_id = ?"),
            ("profile_vectors", "user_id = ?"),
            ("style_features", "user_id = ?"),
            ("facet_states", "user_id = ?"),
            ("soft_prompts", "user_id = ?"),
            ("persona_db_units", "user_id = ?"),
            ("edges", "source = ? OR target = ?"),
        ):
            params = (user_id,) * where.count("?")
            removed[table] = self._db.execute(f"DELETE FROM {table} WHERE {where}", params).rowcount
        cached = [
            key
            for key, request, response in self._db.execute("SELECT key, request, response FROM llm_cache")
            if holds_their_words(request) or holds_their_words(response)
        ]
        self._db.executemany("DELETE FROM llm_cache WHERE key = ?", [(k,) for k in cached])
        removed["llm_cache"] = len(cached)
        changed = 0
        for cluster in self.clusters():
            excerpts = [e for e in cluster.excerpts if not holds_their_words(e)]
            medoids = [u for u in cluster.medoid_user_ids if u != user_id]
            if excerpts != cluster.excerpts or medoids != cluster.medoid_user_ids:
                changed += 1
                evidence = cluster.model_copy(update={"excerpts": excerpts, "medoid_user_ids": medoids})
                self._db.execute(
                    "UPDATE clusters SET evidence = ? WHERE cluster_id = ?",
                    (evidence.model_dump_json(), cluster.cluster_id),
                )
        removed["cluster_evidence"] = changed
        # Models a method trained on every user's reviews (CFRAG's encoder) were trained on theirs too.
        removed["method_models"] = self._db.execute("DELETE FROM method_models").rowcount
        return removed

    def method_model(self, method: str, key: str) -> bytes | None:
        """A model a method's offline preparation trained and stored under ``key``, if any."""
        row = self._db.execute(
            "SELECT payload FROM method_models WHERE method = ? AND key = ?", (method, key)
        ).fetchone()
        return None if row is None else bytes(row[0])

    def write_method_model(self, method: str, key: str, payload: bytes) -> None:
        with self.transaction():
            self._db.execute(
                upsert("method_models", ("method", "key", "payload", "created"), ("method", "key")),
                (method, key, payload, time.time()),
            )

    def forget_personas(self, user_ids: Iterable[str]) -> None:
        """Drop these users' profile vectors, facet states and Persona-DB personas (to be computed again)."""
        with self.transaction():
            for table in ("profile_vectors", "style_features", "facet_states", "persona_db_units"):
                self._db.executemany(f"DELETE FROM {table} WHERE user_id = ?", [(u,) for u in user_ids])

    def drop_soft_prompts(self, user_ids: Iterable[str]) -> int:
        """Drop these users' cached soft prompts (of every model); how many went."""
        with self.transaction():
            cur = self._db.executemany("DELETE FROM soft_prompts WHERE user_id = ?", [(u,) for u in user_ids])
        return cur.rowcount

    def replace_layer_rows(self, facet_key: str, sources: Iterable[str], edges: Iterable[Edge]) -> None:
        """Replace the out-edges of ``sources`` in one facet layer (the rest of the graph stays)."""
        with self.transaction():
            self._db.executemany(
                "DELETE FROM edges WHERE facet_key = ? AND source = ?", [(facet_key, s) for s in sources]
            )
            self._db.executemany(
                "INSERT INTO edges(facet_key, source, target, similarity, weight, rank) VALUES (?, ?, ?, ?, ?, ?)",
                [(e.facet_key, e.source, e.target, e.similarity, e.weight, e.rank) for e in edges],
            )

    def compact(self) -> dict[str, int]:
        """Rewrite the database so that deleted content is gone from its files, not just unlinked
        (SQLite: WAL checkpoint and VACUUM; PostgreSQL: VACUUM FULL); its size afterwards."""
        return {"bytes": self._db.compact()}

    # -- counts -----------------------------------------------------------------------------
    def count(self, table: str) -> int:
        """Rows of one of the store's tables (names are checked, never interpolated unseen)."""
        known = self._db.tables()
        if table not in known:
            raise ValueError(f"unknown table {table!r}")
        return int(self._db.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0])
