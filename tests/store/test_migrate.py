"""`copersona migrate` and a store on PostgreSQL, with the real 40-user build: the copy holds every
row, the commands read it as they read the file, and a copy back gives the file's rows exactly."""

import json
import sqlite3

import pytest
from runner import cli

from copersona.eval.harness import select_examples
from copersona.inspect import overview
from copersona.store import Store, StoreError
from copersona.store.migrate import copy_store


def _rows(path) -> dict[str, list[tuple]]:
    """Every row of every table of a SQLite store, in one order."""
    db = sqlite3.connect(path)
    tables = [t for (t,) in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'") if t != "sqlite_sequence"]
    # Integer keys (run ids) in numeric order, so that the copy's last run is last whatever the count.
    rows = {
        t: sorted(db.execute(f"SELECT * FROM {t}").fetchall(), key=lambda r: (isinstance(r[0], int) and r[0], repr(r)))
        for t in tables
    }
    db.close()
    return rows


def test_migrate_to_postgres_and_back_with_the_real_build(built_db, runtime, runtime_on, postgres, tmp_path):
    url = postgres.database()
    cli("migrate", built_db.path, url)
    with Store(url, read_only=True) as copied:
        assert copied.examples() == built_db.examples()
        assert copied.facet_states() == built_db.facet_states() and copied.schema() == built_db.schema()
        for user in built_db.user_ids():
            assert copied.neighbours(user) == built_db.neighbours(user)
        ids, vectors = copied.profile_vectors()
        assert ids == built_db.profile_vectors()[0] and (vectors == built_db.profile_vectors()[1]).all()
        assert copied.runs() == built_db.runs() and copied.cache_stats() == built_db.cache_stats()

    # The commands take the URL where they take a file (the same overview); the harness reads it alike.
    shown = json.loads(cli("inspect", url, "--json").stdout)
    assert shown == json.loads(json.dumps({**overview(built_db), "store": url}))
    examples = select_examples(built_db, "test", 4)
    with Store(url, read_only=True) as copied:
        on_postgres = runtime_on(copied).predict("copy-peer", examples)
    assert [p.text for p in on_postgres] == [p.text for p in runtime.predict("copy-peer", examples)]

    with Store(url) as written:  # new runs continue the copied log's ids
        assert written.start_run("after-migrate") == max(r.run_id for r in built_db.runs()) + 1
    back = tmp_path / "back.sqlite"
    with Store(url, read_only=True) as source, Store(back) as target:
        copy_store(source, target)
        with pytest.raises(StoreError, match="already holds store records"):  # never merges two stores
            copy_store(source, target)
    original, returned = _rows(built_db.path), _rows(back)
    assert returned.pop("runs")[:-1] == original.pop("runs") and returned == original
    with pytest.raises(StoreError, match="cannot connect"):
        Store(url.rsplit(":", 1)[0] + ":1/none")
