"""A small evaluation end to end with the real packaged models, through the command line."""

from __future__ import annotations

import json
import sqlite3

import pytest
from runner import cli, cli_process

METHODS = ["nonperso", "rag", "pag", "dpl", "copersona-np", "copy-self", "copy-peer"]
USERS = 2


def _llm_calls(store) -> int:
    with sqlite3.connect(store) as db:
        return db.execute("SELECT COUNT(*) FROM llm_cache").fetchone()[0]


@pytest.fixture(scope="module")
def short_answers(tmp_path_factory):
    """A harness config whose answers stop at 48 tokens: the wiring is checked, not the review's length."""
    config = tmp_path_factory.mktemp("config") / "short.toml"
    config.write_text("[harness.generation]\nmax_new_tokens = 48\n")
    return config


@pytest.fixture(scope="module")
def evaluation_run(built_store, short_answers, tmp_path_factory):
    """One evaluation through the CLI, shared by every test of this module: (output folder, the process)."""
    out = tmp_path_factory.mktemp("evaluation")
    run = cli_process(  # a fresh interpreter: what its console shows is checked
        "evaluate", built_store, "--out", out, "--limit", USERS, "--ablation", "neighbours=0,3",
        "--config", short_answers,
    )  # fmt: skip
    return out, run


@pytest.fixture(scope="module")
def evaluated(evaluation_run):
    return evaluation_run[0]


def test_the_console_shows_progress_not_library_chatter(evaluation_run):
    stderr = evaluation_run[1].stderr
    assert "generating: copersona-np" in stderr and "scoring" in stderr
    assert "DEBUG" not in stderr  # bm25s logs every index it builds at DEBUG
    # The BERTScore encoder loads once for every method and the ablation (it loaded once per method).
    assert stderr.count("Loading weights") <= 2


def test_results_cover_every_method_and_metric(evaluated):
    results = json.loads((evaluated / "results.json").read_text())
    assert list(results["methods"]) == METHODS and results["examples"] == USERS
    for name, method in results["methods"].items():
        assert method["role"] == {"copersona-np": "ours", "copy-self": "reference", "copy-peer": "reference"}.get(
            name, "baseline"
        )
        assert set(method["metrics"]) == {"rouge1", "rougeL", "meteor", "bleu", "bertscore"}
        for estimate in method["metrics"].values():
            assert estimate["n"] == USERS and estimate["low"] <= estimate["mean"] <= estimate["high"]
    assert results["best_baseline"] in ("nonperso", "rag", "pag", "dpl")
    against = results["comparisons"]["copersona-np"]
    assert list(against)[0] == results["best_baseline"] and set(against) == set(METHODS) - {"copersona-np"}
    assert all(set(by_metric) == {"rouge1", "rougeL", "meteor", "bleu", "bertscore"} for by_metric in against.values())
    assert results["metric_configs"]["bertscore"]["comparable_with_papers"] is False
    assert results["config"]["generation"]["temperature"] == 0.8  # the default, under --config's answer length
    assert results["config"]["generation"]["max_new_tokens"] == 48
    # Every row names its generator; one base model made every generated row, none is mixed.
    generators = {name: method["generator"] for name, method in results["methods"].items()}
    assert generators["copy-self"] == generators["copy-peer"] == "none (no LLM)"
    assert len({g for n, g in generators.items() if n not in ("copy-self", "copy-peer")}) == 1
    assert generators["rag"].startswith("llamacpp:SmolLM2-135M-Instruct.Q4_1.gguf@")
    assert results["mixed_generators"] is False and results["evidence_cutoff"]["cutoff"] == "before-target"
    assert results["different_generator_comparisons"] == []
    assert results["comparisons_made"] == len(against) * 5


def test_predictions_and_report_are_written(evaluated):
    lines = [json.loads(line) for line in (evaluated / "predictions.jsonl").read_text().splitlines()]
    assert len(lines) == len(METHODS) * USERS
    generated = [p for p in lines if p["method"] in METHODS[:5]]
    assert sum(bool(p["text"]) for p in generated) >= 0.8 * len(generated)
    assert all(0 < p["completion_tokens"] <= 48 for p in generated if p["text"])
    report = (evaluated / "report.md").read_text()
    assert "| Method | R-1 | R-L | MET. | BL. | BS. | generator |" in report
    assert "chosen on these same examples" in report and "cutoff `before-target`" in report
    assert "not comparable with the papers' numbers" in report and "## Paired comparisons: copersona-np" in report
    assert (evaluated / "metrics.png").read_bytes()[:4] == b"\x89PNG"
    rows = (evaluated / "results.csv").read_text().splitlines()
    assert rows[0] == "method,role,generator,metric,mean,low,high,n" and len(rows) > len(METHODS) * 5


def test_neighbour_ablation_varies_the_peer_count(evaluated):
    ablation = json.loads((evaluated / "ablation-neighbours.json").read_text())
    assert ablation["values"] == ["0", "3"]  # the values chosen on the command line
    assert all(set(r) == {"copersona-np"} for r in ablation["results"].values())
    assert (evaluated / "ablation-neighbours.png").read_bytes()[:4] == b"\x89PNG"


def test_rerun_is_served_from_the_cache(evaluated, built_store, short_answers, tmp_path):
    before = _llm_calls(built_store)
    cli("evaluate", built_store, "--out", tmp_path, "--limit", USERS, "--methods", "rag,copersona-np",
        "--metrics", "rouge1", "--config", short_answers)  # fmt: skip
    assert _llm_calls(built_store) == before
    old = {(p["method"], p["example"]): p["text"] for p in map(json.loads, (evaluated / "predictions.jsonl").open())}
    for p in map(json.loads, (tmp_path / "predictions.jsonl").open()):
        assert old[(p["method"], p["example"])] == p["text"]


def test_the_judge_scores_every_row(evaluated, built_store, short_answers, tmp_path):
    """The LLM judge on the cached answers of one method and both reference points."""
    cli("evaluate", built_store, "--out", tmp_path, "--limit", USERS, "--methods", "rag", "--metrics", "rouge1",
        "--judge", "smollm2", "--config", short_answers)  # fmt: skip
    results = json.loads((tmp_path / "results.json").read_text())
    assert list(results["methods"]) == ["rag", "copy-self", "copy-peer"]
    for method in results["methods"].values():
        judged = method["judge"]
        assert set(judged) == {"authenticity", "practical_details", "human_likeness"}
        assert 0 <= method["judge_failures"] <= USERS
        assert all(j["n"] == USERS - method["judge_failures"] for j in judged.values())  # failures are not in n


def test_generate_explains_its_input(built_store):
    with sqlite3.connect(built_store) as db:
        user = db.execute("SELECT user_id FROM interactions WHERE heldout_rank = 0 ORDER BY user_id").fetchone()[0]
    result = cli("generate", built_store, "--user", user, "--method", "copersona-np", "--explain")
    assert result.stdout.strip()  # the review
    assert '"method": "copersona-np"' in result.stderr and '"messages"' in result.stderr
    assert '"peers"' in result.stderr and '"dropped"' in result.stderr  # what reached the input, what was cut


def test_fine_tuned_and_base_rows_are_not_mixed_silently(built_store, tmp_path):
    """A trained model for one method only: the run is refused before any generation, naming the split."""
    from copersona.config import HarnessConfig
    from copersona.eval.harness import MixedGeneratorsError, evaluate, select_examples
    from copersona.inference import open_runtime
    from copersona.model.trained import TrainedModel
    from copersona.store import Store

    model = TrainedModel(
        method="rag",
        base="smollm2",
        checkpoint="",
        fingerprint="f",
        encoder=None,
        window=320,
        soft_prompt_length=0,
        steps=1,
        train_examples=1,
        validation_examples=0,
        seconds=0.0,
        config={"steps": 1},
    )
    with Store(built_store, read_only=True) as db:
        runtime = open_runtime(db, HarnessConfig(), models={"rag": model})
        assert runtime.generator_family("nonperso") == "base smollm2"
        assert runtime.generator_family("rag").startswith("fine-tuned from smollm2")
        assert runtime.generator_family("copy-self") is None
        examples = select_examples(db, "test", 1)
        with pytest.raises(MixedGeneratorsError, match="--allow-mixed"):
            evaluate(runtime, ["nonperso", "rag", "copy-self"], examples, split="test")
        assert runtime.generated_with == {}  # refused before anything was generated


def test_unknown_method_is_one_clear_line(built_store, tmp_path):
    result = cli("evaluate", built_store, "--out", tmp_path, "--methods", "magic", check=False)
    assert result.returncode == 1 and "unknown method 'magic'" in result.stderr


@pytest.mark.parametrize(
    ("spec", "values", "error"),
    [
        ("neighbours", (0, 1, 2, 3), None),
        ("neighbours=0, 3", (0, 3), None),
        ("temperature=0.5,1", (0.5, 1.0), None),
        ("retriever=bm25,recency", ("bm25", "recency"), None),
        ("neighbours=two", None, "values must be ints"),
        ("neighbours=", (0, 1, 2, 3), None),
        ("neighbours=,", None, "no values"),
        ("depth=1", None, "unknown ablation 'depth'"),
    ],
)
def test_ablation_values_can_be_chosen(spec, values, error):
    from copersona.eval.ablation import ablation_of

    if error is not None:
        with pytest.raises(ValueError, match=error):
            ablation_of(spec)
    else:
        assert ablation_of(spec).values == values
