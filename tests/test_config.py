"""One config file holds the build sections and the [harness] table; unknown keys are errors."""

from __future__ import annotations

import pytest
from runner import cli

from copersona.config import BuildConfig, HarnessConfig, describe

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


def test_help_texts_keep_their_brackets():
    # "[harness]" and "[training]" are config tables; read as console markup they vanished.
    assert "[harness]" in cli("train", "--help").stdout
    assert "[harness]" in cli("config", "--help").stdout
