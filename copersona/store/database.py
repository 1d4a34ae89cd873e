"""The databases a store can live in: a SQLite file, or a PostgreSQL database shared by several
writers and server replicas.

:class:`~copersona.store.store.Store` writes one SQL dialect, the subset both engines read
(``?`` placeholders, ``INSERT ... ON CONFLICT ... DO UPDATE``, ``RETURNING``); a
:class:`Database` supplies what differs: connecting, the column types of the schema, how a write
transaction takes the single-writer lock, consistent reads, listing tables and compaction.

Both keep the store's concurrency contract: one writer at a time (SQLite's ``BEGIN IMMEDIATE``;
on PostgreSQL a transaction-scoped advisory lock taken by every write transaction), any number of
readers, and a reader's snapshot sees a writer's transaction whole or not at all.
"""

from __future__ import annotations

import re
import sqlite3
from abc import ABC, abstractmethod
from collections.abc import Iterable, Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

POSTGRES_SCHEMES = ("postgresql://", "postgres://")

# Key of the advisory lock every PostgreSQL write transaction holds: one writer per database,
# as SQLite's file lock gives (an arbitrary constant, 'cpsn' in ASCII).
_WRITE_LOCK = 0x6370736E


class StoreError(RuntimeError):
    """The store is not a CoPersona store, is newer than this code, cannot be reached or written,
    or lacks a stage's output (the message says which)."""


def is_postgres(location: str | Path) -> bool:
    return isinstance(location, str) and location.startswith(POSTGRES_SCHEMES)


class Database(ABC):
    """One connection to a store's database, in autocommit mode with explicit transactions."""

    dialect: str
    #: The store's address for messages: a file path, or a URL without its password.
    location: str

    @abstractmethod
    def execute(self, sql: str, params: Sequence[Any] = ()) -> Any:
        """Run one statement with ``?`` placeholders; returns a cursor (iterable, ``fetchone``, ``rowcount``)."""

    @abstractmethod
    def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> Any:
        """Run one statement for each parameter row; the cursor's ``rowcount`` is the total."""

    @property
    @abstractmethod
    def in_transaction(self) -> bool: ...

    @abstractmethod
    def begin_write(self) -> None:
        """Open a transaction holding the single-writer lock (waits for another writer to finish)."""

    @abstractmethod
    def begin_read(self) -> None:
        """Open a transaction whose reads all see one committed state."""

    def commit(self) -> None:
        self.execute("COMMIT")

    def rollback(self) -> None:
        self.execute("ROLLBACK")

    @abstractmethod
    def tables(self) -> set[str]: ...

    @abstractmethod
    def column_types(self, script: str) -> str:
        """The schema script with its column types written for this engine."""

    def run_script(self, script: str) -> None:
        """Run a schema script (statements separated by ``;`` at line ends) in the open transaction."""
        for statement in self.column_types(script).split(";\n"):
            if statement.strip():
                self.execute(statement)

    def open_for_writing(self) -> None:
        """Check that the store can be written (once it is known to be a store: nothing is written before)."""
        self.begin_write()
        self.rollback()

    @abstractmethod
    def restart_identities(self) -> None:
        """After rows were inserted with their own ids (a copy), new rows' ids continue after them."""

    @abstractmethod
    def erase_freed_pages(self) -> None:
        """Make deleted rows unreadable from the database files once their transaction commits
        (where the engine can; otherwise :meth:`compact` removes them)."""

    @abstractmethod
    def compact(self) -> int:
        """Rewrite the database without deleted content; its size in bytes afterwards."""

    @abstractmethod
    def close(self) -> None: ...


class SQLiteDatabase(Database):
    """A store file in WAL mode: many readers, one writer."""

    dialect = "sqlite"

    def __init__(self, path: Path, *, read_only: bool):
        self.path = path
        self.location = str(path)
        uri = path.resolve().as_uri() + ("?mode=ro" if read_only else "")
        self._db = sqlite3.connect(uri, uri=True, isolation_level=None, timeout=30.0)

    def execute(self, sql: str, params: Sequence[Any] = ()) -> sqlite3.Cursor:
        return self._db.execute(sql, params)

    def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> sqlite3.Cursor:
        return self._db.executemany(sql, rows)

    @property
    def in_transaction(self) -> bool:
        return self._db.in_transaction

    def begin_write(self) -> None:
        try:
            self._db.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError as err:
            raise StoreError(f"{self.location}: cannot be written ({err})") from err

    def begin_read(self) -> None:
        self._db.execute("BEGIN DEFERRED")

    def open_for_writing(self) -> None:
        """Also turns on WAL (readers go on while one process writes)."""
        super().open_for_writing()
        self._db.execute("PRAGMA journal_mode = WAL")

    def tables(self) -> set[str]:
        rows = self._db.execute("SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'")
        return {r[0] for r in rows}  # without SQLite's own (sqlite_sequence)

    def column_types(self, script: str) -> str:
        return script

    def restart_identities(self) -> None:
        """AUTOINCREMENT already continues after the largest id inserted."""

    def erase_freed_pages(self) -> None:
        self._db.execute("PRAGMA secure_delete = ON")  # freed pages are zeroed, not left readable

    def compact(self) -> int:
        """Checkpoints the WAL into the file and truncates it, VACUUMs (a fresh copy without free
        pages) and truncates the WAL again. Fails when another connection holds a read."""
        self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        self._db.execute("VACUUM")
        busy, _, _ = self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
        if busy:
            raise StoreError(f"{self.location}: another process is reading the store; compact again once it stops")
        return self.path.stat().st_size

    def backup(self, path: str | Path) -> None:
        """A consistent copy of the whole file at ``path`` (SQLite's online backup)."""
        with sqlite3.connect(str(path)) as target:
            self._db.backup(target)
        target.close()

    def close(self) -> None:
        self._db.close()


# SQLite's column types as PostgreSQL spells them: 64-bit integers (millisecond timestamps),
# double precision (PostgreSQL's REAL is 4 bytes), byte strings, and text compared bytewise as
# SQLite does, so that every ORDER BY gives the same order on both engines.
_POSTGRES_TYPES = (
    (re.compile(r"\bINTEGER PRIMARY KEY AUTOINCREMENT\b"), "BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY"),
    (re.compile(r"\bINTEGER\b"), "BIGINT"),
    (re.compile(r"\bREAL\b"), "DOUBLE PRECISION"),
    (re.compile(r"\bBLOB\b"), "BYTEA"),
    (re.compile(r"\bTEXT\b"), 'TEXT COLLATE "C"'),
)


@lru_cache(maxsize=512)
def _postgres_sql(sql: str) -> str:
    """``?`` placeholders as psycopg's ``%s`` (the store's SQL holds no other ``?`` or ``%``)."""
    return sql.replace("?", "%s")


def redacted(url: str) -> str:
    """The URL without its password, for messages and logs."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
    return urlunsplit(parts._replace(netloc=netloc))


class PostgresDatabase(Database):
    """A store in a PostgreSQL database (psycopg 3), for several writers and server replicas.

    Vectors are stored as bytes, as in SQLite; neighbour search stays in faiss.
    """

    dialect = "postgresql"

    def __init__(self, url: str, *, read_only: bool):
        try:
            import psycopg
        except ImportError as err:  # pragma: no cover - the postgres extra is not installed
            raise StoreError("a PostgreSQL store needs psycopg: pip install 'copersona[postgres]'") from err
        self.location = redacted(url)
        try:
            self._db = psycopg.connect(url, autocommit=True)
        except psycopg.Error as err:
            raise StoreError(f"{self.location}: cannot connect ({err})".strip()) from err
        if read_only:
            self._db.execute("SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY")
        self._transaction_status = psycopg.pq.TransactionStatus

    def execute(self, sql: str, params: Sequence[Any] = ()) -> Any:
        return self._db.execute(_postgres_sql(sql), params or None)

    def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> Any:
        cursor = self._db.cursor()
        cursor.executemany(_postgres_sql(sql), list(rows))
        return cursor

    @property
    def in_transaction(self) -> bool:
        return self._db.info.transaction_status != self._transaction_status.IDLE

    def begin_write(self) -> None:
        self._db.execute("BEGIN")
        self._db.execute("SELECT pg_advisory_xact_lock(%s)", (_WRITE_LOCK,))

    def begin_read(self) -> None:
        self._db.execute("BEGIN ISOLATION LEVEL REPEATABLE READ")

    def tables(self) -> set[str]:
        rows = self._db.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = current_schema()"
        )
        return {r[0] for r in rows}

    def column_types(self, script: str) -> str:
        for pattern, replacement in _POSTGRES_TYPES:
            script = pattern.sub(replacement, script)
        return script

    def open_for_writing(self) -> None:
        try:
            super().open_for_writing()
        except Exception as err:
            raise StoreError(f"{self.location}: cannot be written ({err})") from err

    def restart_identities(self) -> None:
        self.execute(
            "SELECT setval(pg_get_serial_sequence('runs', 'run_id'), COALESCE(MAX(run_id), 0) + 1, false) FROM runs"
        )

    def erase_freed_pages(self) -> None:
        """PostgreSQL keeps deleted tuples until a VACUUM: erasure ends with :meth:`compact`."""

    def compact(self) -> int:
        """VACUUM FULL rewrites every table without the deleted rows' tuples."""
        self._db.execute("VACUUM FULL")
        return int(self._db.execute("SELECT pg_database_size(current_database())").fetchone()[0])

    def close(self) -> None:
        self._db.close()


def open_database(location: str | Path, *, read_only: bool, create: bool) -> Database:
    """The database at ``location``: a ``postgresql://`` URL, or a SQLite file path."""
    if is_postgres(location):
        return PostgresDatabase(str(location), read_only=read_only)
    path = Path(location)
    if path.is_dir():
        raise StoreError(f"{path}: a folder, not a store file")
    if not path.exists():
        if read_only or not create:
            raise StoreError(f"{path}: no such store (`copersona build` makes one)")
        path.parent.mkdir(parents=True, exist_ok=True)
    return SQLiteDatabase(path, read_only=read_only)
