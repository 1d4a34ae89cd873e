"""One config file holds the build sections and the [harness] table; unknown keys are errors."""

from __future__ import annotations

import pytest
from runner import cli

from copersona.config import BuildConfig, HarnessConfig, TrainingConfig, describe

FILE = """
llm = "smollm2"
[graph]
top_k = 4
[harness.retrieval]
retriever = "recency"
neighbours = 2
[harness.generation]
temperature = 0.6
"""


def test_build_and_harness_read_their_own_parts(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text(FILE)
    build, harness = BuildConfig.load(path), HarnessConfig.load(path)
    assert build.graph.top_k == 4
    assert harness.retrieval.retriever == "recency" and harness.retrieval.neighbours == 2
    assert harness.generation.temperature == 0.6 and harness.budget.total == 8192


def test_unknown_harness_key_is_an_error(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text("[harness.retrieval]\nretriver = 'bm25'\n")
    with pytest.raises(ValueError, match="retriver"):
        HarnessConfig.load(path)


def test_every_harness_setting_is_documented():
    rows = describe(HarnessConfig)
    assert rows and all(text for _, _, text in rows)
    assert {"retrieval.retriever", "budget.per_peer_facet", "evaluation.bertscore_model"} <= {n for n, _, _ in rows}


def test_a_trained_models_identity_leaves_out_what_acts_after_generation(tmp_path):
    # One adapter serves every answer setting: choosing among generated answers shapes no training example.
    path = tmp_path / "c.toml"
    path.write_text("[harness.methods]\ncopersona_answer = 'generated'\ncopersona_select_margin = 0.2\n")
    assert HarnessConfig.load(path).input_settings() == HarnessConfig().input_settings()
    path.write_text(FILE)
    assert HarnessConfig.load(path).input_settings() != HarnessConfig().input_settings()
    assert "evaluation" not in HarnessConfig().input_settings()


def test_help_texts_keep_their_brackets():
    # "[harness]" and "[training]" are config tables; read as console markup they vanished.
    assert "[harness]" in cli("train", "--help").stdout
    assert "[harness]" in cli("config", "--help").stdout


# Every setting carries a type and a range: a bad value is refused when the file is read, before
# any work, with its key named. (name, file, loader, what the message says)
INVALID_CASES = [
    (
        "word for a count",
        "[data]\nmin_reviews_per_user = 'five'",
        BuildConfig,
        "data.min_reviews_per_user: expected an integer",
    ),
    ("fraction for a count", "[graph]\ntop_k = 2.5", BuildConfig, "graph.top_k: expected an integer"),
    ("cosine below 0", "[graph]\nmin_similarity = -1", BuildConfig, "graph.min_similarity: -1 is out of range"),
    ("word for a number", "[graph]\nmin_similarity = 'high'", BuildConfig, "graph.min_similarity: expected a number"),
    ("negative holdout", "[data]\nholdout_k = -1", BuildConfig, "data.holdout_k: -1 is out of range"),
    (
        "unknown choice",
        "[harness.retrieval]\nretriever = 'magic'",
        HarnessConfig,
        "retrieval.retriever: 'magic' is not one of",
    ),
    (
        "negative peers",
        "[harness.retrieval]\nneighbours = -1",
        HarnessConfig,
        "retrieval.neighbours: -1 is out of range",
    ),
    ("no training steps", "[training]\nsteps = 0", TrainingConfig, "steps: 0 is out of range"),
    (
        "word for a rate",
        "[training.optimizer]\nlearning_rate = 'fast'",
        TrainingConfig,
        "learning_rate: expected a number",
    ),
    ("unknown table", "[nonsense]\nx = 1", BuildConfig, "unknown key"),
    ("not TOML", "[data\n", BuildConfig, "not valid TOML"),
]


@pytest.mark.parametrize("name,text,loader,message", INVALID_CASES, ids=[c[0] for c in INVALID_CASES])
def test_invalid_settings_are_refused_naming_the_key(tmp_path, name, text, loader, message):
    path = tmp_path / "c.toml"
    path.write_text(text)
    with pytest.raises(ValueError, match=message.replace("[", r"\[")):
        loader.load(path)
