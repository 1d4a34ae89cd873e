"""Live updates on a real store: adding the held-back reviews incrementally gives the facet states
and graph of a full rebuild with the same frozen schema and calibration."""

from __future__ import annotations

import shutil
import threading

import numpy as np
import pytest

from copersona.build import Build
from copersona.data.records import User
from copersona.inspect import user_persona
from copersona.live import add_reviews
from copersona.store import Store


def _personas(path) -> tuple[list, list, list]:
    with Store(path, read_only=True) as store:
        states = [(s.user_id, s.facet_key, s.summary, tuple(s.quotes), s.reliability) for s in store.facet_states()]
        edges = store.edges()
        history = [(u, [(i.item_id, r) for i, r in zip(*store.history(u))]) for u in store.user_ids()]
    return states, edges, history


def _rebuild_everything(build: Build) -> None:
    """The build's own stages on every user, with the store's schema and calibration."""
    users = build.store.user_ids()
    build.store.forget_personas(users)
    build.profiles()
    build.summaries(32)
    build.graph()


@pytest.fixture(scope="module")
def stores(built_store, tmp_path_factory):
    """(held back and rebuilt, incremental, full build) store paths, the held-back reviews, the update."""
    folder = tmp_path_factory.mktemp("update")
    half = shutil.copy(built_store, folder / "half.sqlite")
    with Store(half) as store:
        holdout_k = Build.of(store).config.data.holdout_k
        users = store.user_ids()
        held = []
        for user in users[::2]:  # every other user loses their two newest reviews
            history, _ = store.history(user)
            held.extend(history[-2:])
        gone = users[1]  # and one user is held back whole: added as a new user
        held.extend(store.history(gone)[0])
        with store.transaction() as db:
            db.executemany(
                "DELETE FROM interactions WHERE user_id = ? AND item_id = ?", [(r.user_id, r.item_id) for r in held]
            )
            for user in {r.user_id for r in held}:  # held-out ranks as a build on the smaller data marks them
                history, _ = store.history(user)
                if history:
                    store.write_users([User(user_id=user, interactions=history)], holdout_k)
            db.execute("DELETE FROM edges")
            for table in ("profile_vectors", "facet_states", "soft_prompts"):
                db.execute(f"DELETE FROM {table} WHERE user_id = ?", (gone,))
        _rebuild_everything(Build.of(store))
    incremental = shutil.copy(half, folder / "incremental.sqlite")
    with Store(incremental) as store:
        report = add_reviews(Build.of(store), held)
    # The reference is the session build itself: a full build on all the data, and its schema and
    # calibration are the ones the held-back store kept frozen.
    return half, incremental, built_store, held, report


def test_adding_held_back_reviews_equals_a_rebuild(stores):
    half, incremental, reference, held, report = stores
    assert report.new_users == 1 and report.added == len(held) and report.replaced == 0
    states, edges, history = _personas(incremental)
    ref_states, ref_edges, ref_history = _personas(reference)
    assert history == ref_history  # held-out ranks recomputed as the full build marks them
    assert states == ref_states
    assert [(e.facet_key, e.source, e.target, e.rank) for e in edges] == [
        (e.facet_key, e.source, e.target, e.rank) for e in ref_edges
    ]
    assert np.allclose([e.weight for e in edges], [e.weight for e in ref_edges], atol=1e-6)
    # The update searched a neighbourhood, not the whole graph, and the graph did change.
    assert 0 < report.neighbour_rows and _personas(half)[1] != edges


def test_adding_nothing_or_to_an_unbuilt_store_is_a_clear_error(stores, tmp_path):
    _, incremental, *_ = stores
    with Store(incremental) as store, pytest.raises(ValueError, match="no reviews"):
        add_reviews(Build.of(store), [])


def test_readers_see_a_user_before_or_after_an_update_never_between(stores, tmp_path):
    """A reader on its own connection polls one user's persona while the update commits."""
    half, *_, held, _ = stores
    path = shutil.copy(half, tmp_path / "s.sqlite")
    user = held[0].user_id

    def observe(store: Store) -> tuple:
        persona = user_persona(store, user)
        return persona["profile_reviews"], persona["heldout_reviews"], [f["summary"] for f in persona["facets"]]

    with Store(path, read_only=True) as reader:
        before = observe(reader)
    seen, done = [], threading.Event()

    def poll() -> None:
        with Store(path, read_only=True) as reader:
            while not done.is_set():
                seen.append(observe(reader))

    thread = threading.Thread(target=poll)
    thread.start()
    try:
        with Store(path) as store:
            add_reviews(Build.of(store), [r for r in held if r.user_id == user])
    finally:
        done.set()
        thread.join()
    with Store(path, read_only=True) as reader:
        after = observe(reader)
    assert before != after and len(seen) > 10
    assert {s == before or s == after for s in map(tuple, seen)} == {True}
