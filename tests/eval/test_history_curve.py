"""The sparse-history protocol: cap parsing, and on a real build, that nothing of the reviews a cap
cuts away reaches the capped request's input (the stored persona they shaped is poisoned, their
ratings flipped, and every input stays the same)."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from runner import cli, copy_store

from copersona.eval.harness import select_examples
from copersona.eval.history_curve import parse_caps, run_history_caps
from copersona.facets.profile import split_sentences
from copersona.methods import example_key
from copersona.store import Store

PROMPT_METHODS = ["copersona-np", "rag", "pag", "dpl", "persona-db"]
REVIEW_REFERENCES = ["copy-self", "copy-peer"]
RATING_REFERENCES = ["user-mean", "item-mean", "rating-mf"]
POISON = "POISON persona text that only the stored persona holds"
# Sentences at least this long are distinctive enough to look for verbatim in an input.
DISTINCT_CHARS = 40
USERS = 2
NO_EDGES = "no peers: the user has no edges"
CUT_OFF = "no peers: every peer text was written on or after the target"


@pytest.mark.parametrize(
    "text, caps",
    [("0,1,2,all", [0, 1, 2, None]), ("all", [None]), (" 4 , 0 ", [4, 0])],
)
def test_caps_parse(text, caps):
    assert parse_caps(text) == caps


@pytest.mark.parametrize("text", ["", "1,1", "-1", "two", "1,,2", "all,all"])
def test_bad_caps_are_refused(text):
    with pytest.raises(ValueError):
        parse_caps(text)


def _inputs(path, runtime_on, cap: int, users: list[str]) -> dict[str, str]:
    """Every method's input (messages, or a reference point's answer) for the users' capped test examples."""
    with Store(path) as db:
        runtime = runtime_on(db)
        found = {}
        for task, names in (("review", PROMPT_METHODS + REVIEW_REFERENCES), ("rating", RATING_REFERENCES)):
            examples = [e for e in select_examples(db, "test", None, task=task, profile_cap=cap) if e.user_id in users]
            for name in names:
                method = runtime.variant().method(name, examples)
                for e in examples:
                    inp = method.inputs(e)
                    found[f"{task}/{name}/{example_key(e)}"] = json.dumps(
                        [inp.messages, inp.prediction, inp.rating, inp.notes], sort_keys=True
                    )
        return found


@pytest.fixture(scope="module")
def capped(built_store, tmp_path_factory):
    """A copy of the session build, the users whose capped profiles lose reviews, and what is cut."""
    path = copy_store(built_store, tmp_path_factory.mktemp("capped") / "s.sqlite")
    with Store(path) as db:
        profiles = db.profiles()
        examples = select_examples(db, "test", None, profile_cap=1)
    cut = {
        e.user_id: [
            r
            for r in profiles[e.user_id]
            if (r.item_id, r.timestamp) not in {(i.item_id, i.timestamp) for i in e.profile}
        ]
        for e in examples
    }
    users = sorted(u for u, reviews in cut.items() if reviews)[:USERS]
    return path, users, cut


def test_cut_reviews_reach_no_input_of_the_capped_request(capped, runtime_on, tmp_path):
    path, users, cut = capped
    cap = 1
    before = _inputs(path, runtime_on, cap, users)
    sentences = {s for u in users for r in cut[u] for s in split_sentences(r.text) if len(s) >= DISTINCT_CHARS}
    assert sentences
    for key, text in before.items():
        assert not [s for s in sentences if s in text], key
    for user in users:  # one user at a time: another capped user may be this one's peer
        poisoned = shutil.copy(path, tmp_path / f"{user}.sqlite")
        rng = np.random.default_rng(0)
        with Store(poisoned) as db, db.transaction() as connection:
            noise = rng.normal(size=(8, 384)).astype(np.float32)
            noise /= np.linalg.norm(noise, axis=1, keepdims=True)
            connection.execute(
                "UPDATE facet_states SET summary = ?, quotes = '[]', facet_text = ?, vector = ?, "
                "reliability = 'strong' WHERE user_id = ?",
                (POISON, POISON, noise[0].tobytes(), user),
            )
            connection.execute("UPDATE profile_vectors SET vector = ? WHERE user_id = ?", (noise[1].tobytes(), user))
            connection.execute("DELETE FROM edges WHERE source = ?", (user,))
            connection.executemany(
                "UPDATE interactions SET rating = CASE WHEN rating >= 3 THEN 1 ELSE 5 END "
                "WHERE user_id = ? AND item_id = ?",
                [(user, r.item_id) for r in cut[user]],
            )
        after = _inputs(poisoned, runtime_on, cap, users)  # the same examples: the rating model's data depends on them
        assert {k: v for k, v in after.items() if f"/{user}/" in k} == {
            k: v for k, v in before.items() if f"/{user}/" in k
        }
    # Peers are found even from one review: each prompt shows them, or they were found and the
    # evidence cutoff kept their texts out (written after this target), never "no edges".
    prompts = {key: text for key, text in before.items() if key.startswith("review/copersona-np/")}
    assert prompts and not any(NO_EDGES in text for text in prompts.values())
    assert all("Peer A" in text or CUT_OFF in text for text in prompts.values())


def test_history_cap_sweep_from_the_cli(built_store, tmp_path):
    out = tmp_path / "curve"
    cli(
        "evaluate",
        built_store,
        "--methods",
        "copy-self",
        "--metrics",
        "rouge1",
        "--history-cap",
        "0,all",
        "--limit",
        3,
        "--out",
        out,
    )
    curve = json.loads((out / "history-curve.json").read_text())
    assert {(r["history_cap"], r["method"]) for r in curve["rows"]} == {
        (cap, m) for cap in (0, None) for m in ("copy-self", "copy-peer")
    }
    assert json.loads((out / "cap-0" / "results.json").read_text())["history_cap"] == 0
    by_cap = {r["history_cap"]: r for r in curve["rows"] if r["method"] == "copy-self"}
    assert by_cap[0]["metrics"]["rouge1"]["mean"] == 0  # nothing to copy from an empty profile
    cold = next(r for r in curve["rows"] if r["history_cap"] == 0 and r["method"] == "copy-peer")
    assert cold["notes"] == {"peers found from the target item (no profile reviews)": 3}
    assert (out / "history-curve.png").stat().st_size > 0


def test_soft_prompted_methods_are_refused_a_cut_profile(runtime, built_db):
    with pytest.raises(ValueError, match="soft prompts"):
        run_history_caps(
            runtime, ["copersona-np", "copersona"], built_db, split="test", limit=1, task="review", caps=[1]
        )
