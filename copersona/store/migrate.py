"""Copying a store between databases (``copersona migrate``): SQLite file to PostgreSQL, back, or
file to file.

Every table the source holds is copied row by row in batches inside one read snapshot of the
source and one write transaction of the target, so a copy interrupted half-way leaves the target
as empty as it was. The target must hold no store records yet: a copy never merges two stores.
"""

from __future__ import annotations

from copersona.progress import Progress
from copersona.store.store import Store, StoreError

BATCH_ROWS = 2000
# Tables that the recommendation schema adds; a source holding them gets them in the target too.
_REC_MARKER = "rec_interactions"


def copy_store(source: Store, target: Store, progress: Progress | None = None) -> dict[str, int]:
    """Copy every row of ``source`` into the empty store ``target``; rows copied per table."""
    progress = progress or Progress()
    source_tables = sorted(source.database.tables())
    with source.snapshot(), target.transaction() as db:
        if _REC_MARKER in source_tables:
            target.run_schema_script("rec_schema.sql")
        missing = set(source_tables) - db.tables()
        if missing:
            raise StoreError(f"{target.path}: has no table {', '.join(sorted(missing))} (an older store schema?)")
        filled = [t for t in source_tables if t != "meta" and db.execute(f"SELECT 1 FROM {t} LIMIT 1").fetchone()]
        if filled:
            raise StoreError(
                f"{target.path}: already holds store records ({', '.join(filled)}); copy into an empty one"
            )
        db.execute("DELETE FROM meta")  # the target's own fresh schema_version gives way to the source's
        copied: dict[str, int] = {}
        for table in source_tables:
            total = source.count(table)
            cursor = source.database.execute(f"SELECT * FROM {table}")
            columns = [d[0] for d in cursor.description]
            insert = f"INSERT INTO {table}({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))})"
            copied[table] = 0
            with progress.stage(f"copying {table}", total=total) as advance:
                while rows := cursor.fetchmany(BATCH_ROWS):
                    db.executemany(insert, rows)
                    copied[table] += len(rows)
                    advance(len(rows))
        db.restart_identities()
    return copied
