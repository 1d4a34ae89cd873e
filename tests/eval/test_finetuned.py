"""`copersona train` and the equal-budget fine-tuned evaluation, end to end with the real models.

The budget is tiny (2 steps over 4 examples) so the path runs in minutes on a CPU; what is checked
is the wiring: one adapter per method on that method's inputs, equal budgets, the right runtime
for each method, reuse of trained models and cached generations, and training's resume.
"""

from __future__ import annotations

import json
import sqlite3

import pytest
from runner import cli

from copersona.store import Store

TINY_BUDGET = """
[training]
steps = 2
batch_size = 2
micro_batch_size = 2
max_length = 192
train_examples = 4
validation_examples = 2
eval_every = 1

[training.personalizer]
soft_prompt_length = 4
"""
USERS = 2


@pytest.fixture(scope="module")
def workspace(built_store, tmp_path_factory):
    """A copy of the session store (training writes soft prompts and registrations into it)."""
    root = tmp_path_factory.mktemp("finetuned")
    with Store(built_store) as store:
        store.backup(root / "mi.sqlite")
    (root / "tiny.toml").write_text(TINY_BUDGET)
    return root


def _evaluate(root, out):
    return cli(
        "evaluate", root / "mi.sqlite", "--out", out, "--limit", USERS, "--methods", "rag,copersona",
        "--finetuned", "--config", root / "tiny.toml", "--models-dir", root / "models", "--metrics", "rouge1",
    )  # fmt: skip


@pytest.fixture(scope="module")
def finetuned(workspace):
    _evaluate(workspace, workspace / "eval")
    return workspace


def test_every_method_gets_its_own_adapter_on_the_same_budget(finetuned):
    results = json.loads((finetuned / "eval" / "results.json").read_text())
    assert list(results["methods"]) == ["rag", "copersona", "copy-self", "copy-peer"]
    models = results["models"]
    assert set(models) == {"rag", "copersona"}
    budgets = {
        name: (m["steps"], m["config"]["batch_size"], m["window"], m["train_examples"]) for name, m in models.items()
    }
    assert budgets["rag"] == budgets["copersona"] == (2, 2, 192 - 4, 4)
    assert models["rag"]["encoder"] is None and models["copersona"]["encoder"] == "persona"
    # Both run in llama.cpp with their exported LoRA (copersona's soft prompts decoded as embeddings).
    for name in ("rag", "copersona"):
        assert results["generators"][name].startswith("llamacpp:") and "+lora:" in results["generators"][name]
    assert results["generators"]["rag"] != results["generators"]["copersona"]
    for name in ("rag", "copersona"):
        assert models[name]["initial_validation_loss"] > 0 and models[name]["final_validation_loss"] > 0
        assert (finetuned / "models" / f"{name}-{models[name]['fingerprint']}" / "curve.png").read_bytes()[:4] == (
            b"\x89PNG"
        )
    report = (finetuned / "eval" / "report.md").read_text()
    assert "## Trained models" in report and "| copersona | 2 x 2 | 188 (+4 virtual) | 4 |" in report


def test_soft_prompts_are_cached_for_every_user(finetuned):
    with Store(finetuned / "mi.sqlite") as store:
        users = store.user_ids()
        key = json.loads((finetuned / "eval" / "results.json").read_text())["models"]["copersona"]["fingerprint"]
        prompts = [store.soft_prompt(f"copersona@{key}", u) for u in users]
    assert all(p is not None and p.shape == (4, 576) for p in prompts)


def test_rerun_reuses_models_and_generations(finetuned):
    def state():
        with sqlite3.connect(finetuned / "mi.sqlite") as db:
            cached = db.execute("SELECT COUNT(*) FROM llm_cache").fetchone()[0]
        records = sorted((finetuned / "models").glob("*/model.json"))
        return cached, [(p, p.stat().st_mtime_ns) for p in records]

    before = state()
    _evaluate(finetuned, finetuned / "eval-again")
    assert state() == before

    def texts(out):
        return {(p["method"], p["example"]): p["text"] for p in map(json.loads, (out / "predictions.jsonl").open())}

    assert texts(finetuned / "eval-again") == texts(finetuned / "eval")


def test_train_resumes_registers_and_generates(workspace):
    store, out = workspace / "mi.sqlite", workspace / "trained-p"
    stopped = cli("train", store, "--out", out, "--method", "copersona-p", "--config", workspace / "tiny.toml",
                  "--stop-after", 1)  # fmt: skip
    assert "stopped at a checkpoint" in " ".join(stopped.stderr.split())  # rich writes to stderr
    assert not (out / "model.json").exists() and len(list((out / "checkpoints").glob("step-*.pt"))) == 1
    cli("train", store, "--out", out, "--method", "copersona-p", "--config", workspace / "tiny.toml")
    record = json.loads((out / "model.json").read_text())
    assert record["steps"] == 2 and [p["step"] for p in record["curve"]] == [0, 1, 2]
    with Store(store) as db:
        assert db.trained_models()["copersona-p"] == str(out.resolve())
        user = db.user_ids()[0]
    text = cli("generate", store, "--user", user, "--method", "copersona-p").stdout
    assert text.strip()


def test_soft_prompt_methods_need_a_trained_model(built_store):
    with Store(built_store) as db:
        user = db.user_ids()[0]
    result = cli("generate", built_store, "--user", user, "--method", "dep", check=False)
    assert result.returncode != 0 and "needs a trained model" in result.stderr
