"""The offline build end to end with the real packaged models on a small real subset, through the CLI,
and a build killed mid-way that resumes to the same graph as an uninterrupted one."""

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time

import pytest
from runner import MI
from runner import cli as _cli

from copersona.facets.induction import builtin_schema


def test_build_end_to_end_with_real_models(built_store):
    overview = json.loads(_cli("inspect", built_store, "--json").stdout)
    assert overview["users"] == 40 and overview["users_with_facets"] == 40
    assert overview["summarizer"] == "extractive" and overview["embedder"] == "minilm"
    facets = overview["schema"]["facets"]
    assert len(facets) == 5 and overview["schema"]["source"] in ("induced", "builtin")
    for facet in facets:
        assert sum(overview["reliability"][facet["key"]].values()) == 40
        edges = overview["edges"][facet["key"]]
        assert edges["edges"] <= 40 * 5 and edges["users_with_edges"] <= 40
    assert 0.0 <= overview["facet_biased"]["fraction"] <= 1.0
    assert overview["llm_cache"]["calls"] >= 1  # the schema was asked of the real SmolLM2
    # The build's five stages; methods that refine offline (persona-db) may have logged runs since.
    build_runs = [r for r in overview["runs"] if r["stage"] != "persona-db"]
    assert [r["status"] for r in build_runs] == ["done"] * 5
    assert overview["load"][0]["read"] == 5050


def test_rerun_costs_nothing(built_store, data_dir):
    before = json.loads(_cli("inspect", built_store, "--json").stdout)
    _cli("build", data_dir / MI, "--store", built_store, "--limit-users", 40)
    after = json.loads(_cli("inspect", built_store, "--json").stdout)
    assert after["llm_cache"]["calls"] == before["llm_cache"]["calls"]
    assert after["edges"] == before["edges"]
    summaries = [r for r in after["runs"] if r["stage"] == "summaries"]
    assert len(summaries) == 2


def test_inspect_user_is_readable(built_store):
    overview = json.loads(_cli("inspect", built_store, "--json").stdout)
    edges_db = sqlite3.connect(built_store)
    user = edges_db.execute("SELECT source FROM edges ORDER BY source LIMIT 1").fetchone()[0]
    edges_db.close()
    persona = json.loads(_cli("inspect", built_store, "--user", user, "--json").stdout)
    assert [f["key"] for f in persona["facets"]] == [f["key"] for f in overview["schema"]["facets"]]
    assert any(f["neighbours"] for f in persona["facets"])
    layer = {(e["user_id"], e["weight"]) for e in persona["persona_layer_neighbours"]}
    assert layer  # the default graph has the whole-persona layer; its peers mix into the combined ranking
    assert {n["user_id"] for n in persona["combined_neighbours"]} & {peer for peer, _ in layer}
    text = _cli("inspect", built_store, "--user", user).stdout
    assert user in text and "neighbours:" in text and "peers by combined similarity" in text
    assert "whole-persona layer" in text
    missing = _cli("inspect", built_store, "--user", "nobody", check=False)
    assert missing.returncode != 0 and "nobody" in missing.stderr


def test_check_graph_reports_lift_with_intervals(built_store, tmp_path):
    out = tmp_path / "check.json"
    _cli("check-graph", built_store, "--out", out)
    payload = json.loads(out.read_text())
    assert payload["split"] == "validation"  # design choices are made on validation, never on test
    results = {r["graph"]: r for r in payload["results"]}
    assert {"combined (default)", "facet layers only (paper's rule)", "whole-persona layer"} <= set(results)
    baseline = results["global-knn (baseline)"]
    assert baseline["cosine_lift_minus_global"] is None
    for r in results.values():
        lift = r["cosine_lift"]
        assert lift["low"] <= lift["mean"] <= lift["high"] and r["users"] > 0
        if r is baseline:
            continue
        for metric in ("cosine", "rouge_l"):
            paired = r[f"{metric}_lift_minus_global"]
            assert paired["low"] <= paired["mean"] <= paired["high"]
            if r["users"] == baseline["users"] == paired["n"]:  # everyone has peers in both graphs: the
                lifts = r[f"{metric}_lift"]["mean"] - baseline[f"{metric}_lift"]["mean"]  # mean of the
                assert paired["mean"] == pytest.approx(lifts)  # differences is the difference of means
    assert payload["facet_separation"]
    for facet in payload["facet_separation"]:
        assert facet["separation"] == pytest.approx(facet["across_users"] - facet["within_user"])


def _edges(store):
    db = sqlite3.connect(store)
    rows = db.execute("SELECT facet_key, source, target, round(weight, 6), rank FROM edges ORDER BY 1, 2, 5").fetchall()
    db.close()
    return rows


def _states(store):
    db = sqlite3.connect(store)
    try:
        return db.execute("SELECT COUNT(DISTINCT user_id) FROM facet_states").fetchone()[0]
    except sqlite3.OperationalError:
        return 0
    finally:
        db.close()


def test_killed_build_resumes_to_the_same_graph(data_dir, tmp_path):
    schema = tmp_path / "schema.json"
    schema.write_text(builtin_schema(5).model_dump_json())
    config = tmp_path / "config.toml"
    config.write_text(f'[facets]\nschema_file = "{schema}"\n')
    args = [data_dir / MI, "--config", config, "--limit-users", 16, "--batch-users", 2]

    reference = tmp_path / "reference.sqlite"
    _cli("build", *args[:1], "--store", reference, *args[1:])

    store = tmp_path / "killed.sqlite"
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "copersona.cli",
            "build",
            *map(str, args[:1]),
            "--store",
            str(store),
            *map(str, args[1:]),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.time() + 600
    while _states(store) < 4 and process.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    assert process.poll() is None, "the build finished before it could be killed"
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    done_before = _states(store)
    assert 0 < done_before < 16

    _cli("build", *args[:1], "--store", store, *args[1:])
    db = sqlite3.connect(store)
    details = json.loads(
        db.execute("SELECT details FROM runs WHERE stage = 'summaries' AND status = 'done'").fetchone()[0]
    )
    # The killed run is closed in the log by the run that resumed it; nothing is left "running".
    statuses = [r[0] for r in db.execute("SELECT status FROM runs WHERE stage = 'summaries' ORDER BY run_id")]
    db.close()
    assert statuses == ["interrupted", "done"]
    assert details["reused"] >= done_before and details["users"] + details["reused"] == 16
    assert _edges(store) == _edges(reference)


def test_build_on_the_amazon2023_sample(data_dir, tmp_path, repo_root):
    """The second real source end to end: the 2023 sample layout with its own config."""
    schema = tmp_path / "schema.json"
    schema.write_text(builtin_schema(4).model_dump_json())
    config = tmp_path / "config.toml"
    sample_config = (repo_root / "configs" / "amazon2023-sample.toml").read_text()
    config.write_text(sample_config + f'\n[facets]\nnum_facets = 4\nschema_file = "{schema}"\n')
    store = tmp_path / "sample.sqlite"
    _cli("build", data_dir / "amazon2023-sample", "--store", store, "--config", config, "--limit-users", 12)
    overview = json.loads(_cli("inspect", store, "--json").stdout)
    assert overview["users"] == 12 and overview["examples"] == {"validation": 12, "test": 12}
    assert overview["schema"]["source"] == "file" and len(overview["schema"]["facets"]) == 4
    assert overview["llm_cache"]["calls"] == 0  # a given schema and extractive summaries need no LLM
    assert overview["load"][0]["read"] >= 3450
