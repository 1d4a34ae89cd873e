"""Erasure on a real store: the user's words leave the file's bytes, and the graph around the gap
equals a rebuild of the remaining users."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from copersona.config import BuildConfig
from copersona.facets.profile import split_sentences
from copersona.generate import UnknownUser
from copersona.graph.multiplex import build_graph
from copersona.live import erase_user
from copersona.live.erase import WordMatcher
from copersona.store import Store


def _raw(path) -> bytes:
    """The store's bytes as they lie on disk: the file and its WAL."""
    wal = path.with_name(path.name + "-wal")
    return path.read_bytes() + (wal.read_bytes() if wal.exists() else b"")


def _forms(sentence: str) -> list[bytes]:
    """How a sentence can lie in the file: as text, or escaped inside a JSON column."""
    return [sentence.encode(), json.dumps(sentence)[1:-1].encode()]


@pytest.fixture(scope="module")
def erased(built_store, tmp_path_factory):
    path = shutil.copy(built_store, tmp_path_factory.mktemp("erase") / "s.sqlite")
    with Store(path) as store:
        # The user most others point to: the most neighbour lists to repair.
        user = max(store.user_ids(), key=lambda u: sum(map(len, store.in_edges(u).values())))
        history, _ = store.history(user)
        sentences = [s for i in history for s in split_sentences(i.text)]
        before = _raw(path)
        report = erase_user(store, user)
    return path, user, sentences, before, report


def test_no_word_of_the_user_remains_in_the_file(erased):
    path, user, sentences, before, report = erased
    assert sentences and any(form in before for s in sentences for form in _forms(s))
    after = _raw(path)
    assert not [s for s in sentences if any(form in after for form in _forms(s))]
    assert report.removed["interactions"] > 0 and report.removed["facet_states"] > 0 and report.removed["edges"] > 0
    with Store(path, read_only=True) as store:
        assert store.history(user)[0] == [] and store.facet_states(user_id=user) == []
        assert store.in_edges(user) == {} and store.neighbours(user) == []
        for entry in store._db.execute("SELECT request, response FROM llm_cache"):
            assert not WordMatcher([" ".join(sentences)])(entry[0] + entry[1])


def test_repaired_neighbour_lists_equal_a_rebuild(erased):
    path, _, _, _, report = erased
    assert report.neighbours_recomputed > 0
    with Store(path) as store:
        repaired = store.edges()
        config = BuildConfig.from_dict(store.get_meta("build_config")).graph
        build_graph(store, config, [f.key for f in store.schema().facets])
        rebuilt = store.edges()
    # The same edges and ranks; scores agree to float32 rounding (a row subset multiplies in
    # other BLAS blocks than the whole matrix).
    assert [(e.facet_key, e.source, e.target, e.rank) for e in rebuilt] == [
        (e.facet_key, e.source, e.target, e.rank) for e in repaired
    ]
    assert np.allclose([e.weight for e in rebuilt], [e.weight for e in repaired], atol=1e-6)


def test_erasing_twice_is_a_clear_error(erased):
    path, user, *_ = erased
    with Store(path) as store, pytest.raises(UnknownUser, match="no user"):
        erase_user(store, user)


def test_a_phrase_matcher_finds_truncated_and_escaped_copies():
    matcher = WordMatcher(["The tuning pegs slipped every night, so I replaced them with locking ones."])
    assert matcher(json.dumps({"messages": [{"content": "Review: The tuning pegs slipped every"}]}))
    assert matcher("…so I replaced them with locking ones")  # a cut copy still holds five words
    assert not matcher("The tuning pegs are fine.") and not matcher("Great")
