"""The store: round trips, transactions, versions and the run log, on a real SQLite file and on a
real PostgreSQL server (every test that takes ``location`` runs on both)."""

import sqlite3
import threading

import numpy as np
import pytest

from copersona.data.records import Interaction, User
from copersona.facets.induction import builtin_schema
from copersona.facets.records import FacetSummary, ReviewRef
from copersona.graph.records import Edge
from copersona.store import SCHEMA_VERSION, Store, StoreError


@pytest.fixture(params=["sqlite", "postgresql"])
def location(request, tmp_path):
    """Where a new store goes: a file, or a new database on the session's PostgreSQL server."""
    return tmp_path / "s.sqlite" if request.param == "sqlite" else request.getfixturevalue("postgres").database()


def _user(user_id: str, n: int) -> User:
    return User(
        user_id=user_id,
        interactions=[
            Interaction(
                user_id=user_id,
                item_id=f"i{k}",
                timestamp=1000 + k,
                rating=float(1 + k % 5),
                review_title=f"title {k}",
                text=f"review {k} by {user_id}",
                item_title=f"item {k}",
            )
            for k in range(n)
        ],
    )


def test_users_round_trip_with_heldout_ranks(location):
    with Store(location) as store:
        store.write_users([_user("a", 8), _user("b", 5)], holdout_k=3)
        history, ranks = store.history("a")
        assert [i.item_id for i in history] == [f"i{k}" for k in range(8)]
        assert ranks == [None] * 5 + [2, 1, 0]
        assert [i.item_id for i in store.profiles()["b"]] == ["i0", "i1", "i2"]  # 5 // 2 = 2 held out
        splits = {(e.user_id, e.split): e for e in store.examples()}
        assert splits[("a", "test")].target.item_id == "i7"
        assert len(splits[("a", "test")].profile) == 7  # everything before the target
        assert splits[("a", "validation")].target.item_id == "i6"
        assert splits[("a", "train")].target.item_id == "i5"
        counted = {split: sum(e.split == split for e in store.examples()) for split in ("train", "validation", "test")}
        assert store.example_counts() == {split: n for split, n in counted.items() if n}


def test_failed_transaction_leaves_nothing(location):
    with Store(location) as store:
        with pytest.raises(RuntimeError):
            with store.transaction():
                store.write_users([_user("a", 6)], holdout_k=2)
                raise RuntimeError("killed mid-write")
        assert store.count("interactions") == 0


def test_facet_states_edges_and_neighbours(location, tmp_path):
    schema = builtin_schema(3)
    rng = np.random.default_rng(0)
    with Store(location) as store:
        store.write_schema(schema)
        states = []
        for user in ("a", "b", "c"):
            for facet in schema.facets:
                vector = rng.normal(size=8).astype(np.float32)
                states.append(
                    (
                        FacetSummary(
                            user_id=user,
                            facet_key=facet.key,
                            summary=f"{user} on {facet.name}",
                            quotes=["q"],
                            reliability="strong",
                            method="extractive",
                        ),
                        vector / np.linalg.norm(vector),
                    )
                )
        store.write_facet_states(states[:-1], "placeholder")
        assert store.users_with_states([f.key for f in schema.facets]) == {"a", "b"}
        store.write_facet_states(states[-1:], "placeholder")
        ids, matrix, labels = store.facet_layer(schema.facets[0].key)
        assert ids == ["a", "b", "c"] and matrix.shape == (3, 8) and labels == ["strong"] * 3
        keys = [f.key for f in schema.facets]
        store.replace_edges(
            [
                Edge(facet_key=keys[0], source="a", target="b", similarity=0.9, weight=0.8, rank=0),
                Edge(facet_key=keys[1], source="a", target="b", similarity=0.6, weight=0.5, rank=0),
                Edge(facet_key=keys[0], source="a", target="c", similarity=0.9, weight=0.9, rank=1),
            ]
        )
        peers = store.neighbours("a")
        assert [p.user_id for p in peers] == ["b", "c"]
        assert peers[0].combined == pytest.approx((0.8 + 0.5) / 3)  # mean over all M facets
        assert store.schema().facets == schema.facets and store.schema().source == "builtin"
        store.write_users([_user("a", 6)], holdout_k=2)
        store.set_meta("pinned_config", {"facets.num_facets": 3})
        store.cache_put("k", "m", {}, "answer", 1, 1, 0.1)

        store.backup(tmp_path / "copy.sqlite")
    with Store(tmp_path / "copy.sqlite") as copied:
        assert copied.count("edges") == 3 and copied.neighbours("a")[0].user_id == "b"
        copied.reset_personas()
        assert copied.schema() is None and copied.get_meta("pinned_config") is None
        assert all(copied.count(t) == 0 for t in ("facets", "facet_states", "edges"))
        assert copied.count("interactions") == 6 and copied.cache_get("k")["text"] == "answer"
    with Store(location, read_only=True) as original:  # the source is untouched
        assert original.count("edges") == 3 and original.schema() is not None


def test_cache_and_run_log(location):
    with Store(location) as store:
        run = store.start_run("load")
        store.finish_run(run, "done", {"report": {"source": "x", "read": 3, "kept": 2}})
        assert store.load_reports() == [{"source": "x", "read": 3, "kept": 2}]
        assert store.cache_get("k") is None
        store.cache_put("k", "m", {"p": 1}, "answer", 5, 7, 0.5)
        store.cache_put("k", "m", {"p": 1}, "answer again", 5, 8, 0.5)  # a key's newest answer replaces it
        assert store.cache_get("k")["text"] == "answer again"
        assert store.cache_stats() == {"calls": 1, "prompt_tokens": 5, "completion_tokens": 8, "seconds": 0.5}
        assert store.start_run("summaries") == run + 1


def test_writers_take_turns_and_readers_see_whole_transactions(location):
    """Several connections (server replicas, a live update) write one store: every write lands,
    and a reader's snapshot sees another writer's transaction whole or not at all."""
    Store(location).close()
    errors: list[BaseException] = []

    def write(worker: int) -> None:
        try:
            with Store(location) as store:
                for k in range(15):
                    with store.transaction():
                        store.cache_put(f"{worker}-{k}-a", "m", {}, "x", 1, 1, 0.1)
                        store.cache_put(f"{worker}-{k}-b", "m", {}, "x", 1, 1, 0.1)
        except BaseException as err:  # reported below: a thread's failure must fail the test
            errors.append(err)

    threads = [threading.Thread(target=write, args=(w,)) for w in range(3)]
    with Store(location, read_only=True) as reader:
        for thread in threads:
            thread.start()
        seen = []
        while any(t.is_alive() for t in threads):
            with reader.snapshot():
                seen.append(reader.cache_stats()["calls"])
        for thread in threads:
            thread.join()
        assert not errors and reader.cache_stats()["calls"] == 3 * 15 * 2
    assert all(calls % 2 == 0 for calls in seen)  # never half of a transaction's pair


def test_reopen_read_only_and_version_checks(location, tmp_path):
    with Store(location) as store:
        store.write_users([_user("a", 6)], holdout_k=2)
    with Store(location, read_only=True) as store:
        assert store.user_ids() == ["a"]
        with pytest.raises(Exception, match="read-only|readonly"):
            store.set_meta("written", True)
    with Store(location) as store:  # what a newer CoPersona leaves behind
        store.set_meta("schema_version", SCHEMA_VERSION + 1)
    with pytest.raises(StoreError, match="newer"):
        Store(location)
    with pytest.raises(StoreError, match="no such store"):
        Store(tmp_path / "missing.sqlite", read_only=True)
    (tmp_path / "junk.sqlite").write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(StoreError, match="not a"):
        Store(tmp_path / "junk.sqlite")


@pytest.mark.parametrize("read_only, create", [(True, False), (False, False), (False, True)])
def test_files_that_are_not_stores_are_refused_untouched(tmp_path, read_only, create):
    other = tmp_path / "other.sqlite"
    db = sqlite3.connect(other)
    db.execute("CREATE TABLE notes(body TEXT)")
    db.execute("INSERT INTO notes VALUES ('theirs')")
    db.commit()
    db.close()
    before = other.read_bytes()
    with pytest.raises(StoreError, match="not a CoPersona store .*notes.*left untouched"):
        Store(other, read_only=read_only, create=create)
    assert other.read_bytes() == before and sorted(p.name for p in tmp_path.iterdir()) == ["other.sqlite"]
    with pytest.raises(StoreError, match="a folder"):
        Store(tmp_path, read_only=read_only, create=create)
    missing = tmp_path / "typo" / "s.sqlite"
    if create:
        Store(missing, create=True).close()  # only a creating open makes a store (and its folder)
        assert missing.exists()
    else:
        with pytest.raises(StoreError, match="no such store"):
            Store(missing, read_only=read_only, create=False)
        assert not (tmp_path / "typo").exists()


def test_facet_state_sources_round_trip_and_older_stores_get_them(tmp_path):
    """Schema 3 stores each state's evidence sources; a schema-2 store is given conservative ones."""
    schema = builtin_schema(3)
    path = tmp_path / "s.sqlite"
    with Store(path) as store:
        store.write_users([_user("a", 6)], holdout_k=2)  # profile: i0..i3, timestamps 1000..1003
        store.write_schema(schema)
        first, third = ReviewRef(item_id="i0", timestamp=1000), ReviewRef(item_id="i2", timestamp=1002)
        state = FacetSummary(
            user_id="a",
            facet_key=schema.facets[0].key,
            summary="review 0 by a review 2 by a",
            quotes=["review 2 by a"],
            reliability="moderate",
            method="extractive",
            summary_sources=[first, third],
            quote_sources=[third],
        )
        store.write_facet_states([(state, np.ones(4, np.float32) / 2)], "placeholder")
        assert store.facet_states("a") == [state]
    db = sqlite3.connect(path)  # what a store written by schema 2 looks like
    db.execute("ALTER TABLE facet_states DROP COLUMN sources")
    db.execute("UPDATE meta SET value = '2' WHERE key = 'schema_version'")
    db.commit()
    db.close()
    with Store(path) as store:
        migrated = store.facet_states("a")[0]
        assert migrated.quote_sources == [third]  # found verbatim in the profile
        assert [r.item_id for r in migrated.summary_sources] == ["i0", "i1", "i2", "i3"]  # the whole profile
        assert store.get_meta("schema_version") == SCHEMA_VERSION
