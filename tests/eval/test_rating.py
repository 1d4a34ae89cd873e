"""The rating task (response prediction) end to end with the real packaged models, and the
integrity of its reference points on real data."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from runner import cli

from copersona.eval.harness import select_examples
from copersona.methods import REFERENCE_METHODS
from copersona.retrieval.cutoff import SECONDS_PER_DAY, day
from copersona.store import Store

LLM_METHODS = ["rag", "persona-db"]
USERS = 2
METRICS = {"mae", "rmse", "pearson", "spearman", "accuracy"}


@pytest.fixture(scope="module")
def rated(built_store, tmp_path_factory):
    out = tmp_path_factory.mktemp("rating")
    cli("evaluate", built_store, "--task", "rating", "--methods", ",".join(LLM_METHODS), "--limit", USERS, "--out", out)
    return out


def test_rating_results_hold_every_metric_for_methods_and_reference_points(rated):
    results = json.loads((rated / "results.json").read_text())
    assert results["task"] == "rating" and results["primary_metric"] == "mae"
    assert list(results["methods"]) == LLM_METHODS + list(REFERENCE_METHODS["rating"])
    for name, method in results["methods"].items():
        assert set(method["metrics"]) == METRICS and method["metrics"]["mae"]["n"] == USERS
        assert 0 <= method["metrics"]["mae"]["mean"] <= 4
        if name in LLM_METHODS:
            assert method["ratings_read_from"] == {"logprobs": USERS} and method["generator"].startswith("llamacpp:")
        else:
            assert method["role"] == "reference" and method["generator"] == "none (no LLM)"
    assert (rated / "metrics.png").stat().st_size > 0 and "MAE" in (rated / "report.md").read_text()


def test_llm_predictions_are_the_expectation_and_argmax_of_a_distribution(rated):
    rows = [json.loads(line) for line in (rated / "predictions.jsonl").read_text().splitlines()]
    assert len(rows) == USERS * (len(LLM_METHODS) + 3)
    for row in rows:
        assert 1 <= row["rating"] <= 5 and row["reference"] in {"1", "2", "3", "4", "5"}
        if row["method"] in LLM_METHODS:
            p = np.array(row["distribution"])
            assert p.sum() == pytest.approx(1) and row["rating"] == pytest.approx(p @ np.arange(1, 6))
            assert row["text"] == str(int(np.argmax(p)) + 1)


def test_the_first_run_refined_persona_db_levels_that_inspect_shows(built_store, rated):
    user = json.loads((rated / "predictions.jsonl").read_text().splitlines()[0])["user_id"]
    shown = json.loads(cli("inspect", built_store, "--user", user, "--json").stdout)
    assert "[distilled]" in cli("inspect", built_store, "--user", user).stdout
    levels = {unit["level"] for persona in shown["persona_db"] for unit in persona["units"]}
    assert {"cache", "distilled"} <= levels


def test_persona_db_writes_reviews_as_well(built_store, rated):
    user = json.loads((rated / "predictions.jsonl").read_text().splitlines()[0])["user_id"]
    run = cli("generate", built_store, "--user", user, "--method", "persona-db", "--explain")
    assert run.stdout.strip() and "persona database" in run.stderr  # the review, and what went into it


def test_reference_points_never_see_a_held_out_or_later_rating(built_store, tmp_path, runtime_on):
    """Every rating written on or after the earliest target day is flipped (held-out targets included,
    the day's targets' own earlier reviews excepted): the predictions for that day's targets stay the
    same, and later targets' do change."""
    path = shutil.copy(built_store, tmp_path / "s.sqlite")

    def predict() -> dict[str, dict[str, float]]:
        with Store(path) as db:
            examples = select_examples(db, "test", None, task="rating")
            runtime = runtime_on(db, methods={"rating_mf_blocks": 3})
            return {
                name: {p.example: p.rating for p in runtime.predict(name, examples)}
                for name in REFERENCE_METHODS["rating"]
            }, examples

    before, examples = predict()
    first_day = min(day(e.target.timestamp) for e in examples)
    earliest = [e for e in examples if day(e.target.timestamp) == first_day]
    # Their own earlier reviews of that day stay (a user's history before the target is theirs to use).
    own = [(i.user_id, i.item_id) for e in earliest for i in e.profile]
    with Store(path) as db, db.transaction() as connection:
        connection.execute("CREATE TEMP TABLE own(user_id TEXT, item_id TEXT)")
        connection.executemany("INSERT INTO own VALUES (?, ?)", own)
        connection.execute(
            "UPDATE interactions SET rating = CASE WHEN rating >= 3 THEN 1 ELSE 5 END WHERE timestamp >= ? "
            "AND (user_id, item_id) NOT IN (SELECT user_id, item_id FROM own)",
            (first_day * SECONDS_PER_DAY,),
        )
    after, _ = predict()
    first = [f"{e.user_id}/{e.target.item_id}" for e in earliest]
    for name in REFERENCE_METHODS["rating"]:
        assert all(after[name][key] == pytest.approx(before[name][key]) for key in first), name
    assert any(after[name] != before[name] for name in ("user-mean", "rating-mf"))  # the flip is seen later on
