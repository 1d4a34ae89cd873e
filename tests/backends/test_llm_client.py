"""The LLM client's control flow (cache, structured output, JSON extraction) and backend spec strings.

A scripted backend stands in for a model here only to steer the control flow (which answer comes
when); the real models are exercised in the other tests of this folder.
"""

from __future__ import annotations

import importlib.util
import json

import numpy as np
import pytest
from pydantic import BaseModel, Field

from copersona.backends import load_llm_backend
from copersona.backends.digest import weights_digest
from copersona.backends.llamacpp import packaged_smollm2_path
from copersona.backends.llm import LLM, Completion, LLMBackend, Request, SoftPrompt, extract_json
from copersona.store import Store


class ScriptedBackend(LLMBackend):
    """Answers with the given texts in turn (the last one repeats) and records every request."""

    context_window = 2048

    def __init__(self, answers: list[str], model_id: str = "scripted:v1"):
        self.answers = list(answers)
        self.model_id = model_id
        self.requests: list[Request] = []

    def complete(self, requests: list[Request]) -> list[Completion]:
        completions = []
        for request in requests:
            text = self.answers[min(len(self.requests), len(self.answers) - 1)]
            self.requests.append(request)
            completions.append(Completion(text=text, prompt_tokens=7, completion_tokens=3))
        return completions

    def count_tokens(self, text: str) -> int:
        return len(text.split())


class City(BaseModel):
    name: str = Field(max_length=20)
    population: int


MESSAGES = [{"role": "user", "content": "Name a city."}]
PARIS = '{"name": "Paris", "population": 2100000}'


def test_rerun_reads_the_store_cache_without_calling_the_backend(tmp_path):
    requests = [Request.chat(MESSAGES, seed=s) for s in (1, 2)]
    first_backend = ScriptedBackend(["first answer", "second answer"])
    with Store(tmp_path / "run.db") as store:
        first = LLM(first_backend, cache=store).generate(requests)
    assert len(first_backend.requests) == 2

    rerun_backend = ScriptedBackend(["must not be used"])
    with Store(tmp_path / "run.db") as store:
        rerun = LLM(rerun_backend, cache=store)
        second = rerun.generate(requests)
    assert rerun_backend.requests == []
    assert [c.text for c in second] == [c.text for c in first] == ["first answer", "second answer"]
    assert all(c.cached for c in second)
    assert rerun.stats.cache_hits == 2 and rerun.stats.calls == 0
    assert (second[0].prompt_tokens, second[0].completion_tokens) == (7, 3)


def test_only_uncached_requests_reach_the_backend(tmp_path):
    with Store(tmp_path / "run.db") as store:
        LLM(ScriptedBackend(["a"]), cache=store).generate([Request.chat(MESSAGES, seed=1)])
        backend = ScriptedBackend(["b"])
        texts = [
            c.text
            for c in LLM(backend, cache=store).generate(
                [Request.chat(MESSAGES, seed=1), Request.chat(MESSAGES, seed=2)]
            )
        ]
    assert texts == ["a", "b"]
    assert [r.seed for r in backend.requests] == [2]


@pytest.mark.parametrize(
    ("model_id", "params"),
    [
        ("scripted:v2", {}),
        ("scripted:v1", {"temperature": 0.1}),
        ("scripted:v1", {"max_tokens": 99}),
        ("scripted:v1", {"seed": 5}),
        ("scripted:v1", {"stop": ["\n"]}),
        ("scripted:v1", {"json_schema": {"type": "object"}}),
    ],
)
def test_cache_key_changes_with_model_and_every_parameter(model_id, params):
    base = LLM(ScriptedBackend(["x"])).cache_key(Request.chat(MESSAGES))
    assert LLM(ScriptedBackend(["x"], model_id=model_id)).cache_key(Request.chat(MESSAGES, **params)) != base


def test_cache_key_follows_soft_prompt_values_not_their_name():
    llm = LLM(ScriptedBackend(["x"]))
    values = np.random.default_rng(0).normal(size=(4, 8)).astype(np.float32)
    key = llm.cache_key(Request.chat(MESSAGES, soft_prompt=SoftPrompt("model@1/user", values)))
    renamed = llm.cache_key(Request.chat(MESSAGES, soft_prompt=SoftPrompt("another name", values.copy())))
    changed = values.copy()
    changed[2, 3] += 1e-3
    retrained = llm.cache_key(Request.chat(MESSAGES, soft_prompt=SoftPrompt("model@1/user", changed)))
    assert key == renamed and key != retrained and key != llm.cache_key(Request.chat(MESSAGES))


def test_weights_replaced_under_the_same_name_get_a_new_digest(tmp_path, monkeypatch):
    """A model or adapter file swapped in place changes the model id, so its cached answers miss."""
    monkeypatch.setenv("COPERSONA_CACHE", str(tmp_path / "cache"))
    adapter = tmp_path / "adapter.gguf"
    adapter.write_bytes(b"GGUF" + bytes(range(256)) * 64)
    first = weights_digest(adapter)
    assert weights_digest(adapter) == first and (tmp_path / "cache" / "weight-digests.json").exists()
    replacement = tmp_path / "new.gguf"
    replacement.write_bytes(b"GGUF" + bytes(range(255, -1, -1)) * 64)  # same size, other values
    replacement.replace(adapter)
    second = weights_digest(adapter)
    assert second != first
    keys = {
        LLM(ScriptedBackend(["x"], model_id=f"llamacpp:m.gguf+lora:{d}")).cache_key(Request.chat(MESSAGES))
        for d in (first, second)
    }
    assert len(keys) == 2


def test_cache_key_ignores_schema_key_order():
    llm = LLM(ScriptedBackend(["x"]))
    one = Request.chat(MESSAGES, json_schema={"type": "object", "required": ["a"]})
    other = Request.chat(MESSAGES, json_schema={"required": ["a"], "type": "object"})
    assert llm.cache_key(one) == llm.cache_key(other)


def test_structured_valid_json_is_one_attempt():
    backend = ScriptedBackend([PARIS])
    result = LLM(backend).generate_structured(MESSAGES, City)
    assert result.ok and result.value == City(name="Paris", population=2100000)
    assert result.attempts == 1
    assert json.loads(backend.requests[0].json_schema) == City.model_json_schema()


def test_structured_retries_with_a_new_seed_after_broken_json():
    backend = ScriptedBackend(['{"name": "Par', PARIS])
    llm = LLM(backend)
    result = llm.generate_structured(MESSAGES, City, seed=10)
    assert result.value == City(name="Paris", population=2100000)
    assert result.attempts == 2
    assert [r.seed for r in backend.requests] == [10, 11]
    assert llm.stats.structured_retries == 1 and llm.stats.structured_failures == 0


def test_structured_failure_is_returned_and_counted_never_raised():
    too_long = json.dumps({"name": "x" * 50, "population": 1})
    llm = LLM(ScriptedBackend(["not json at all", too_long]))
    result = llm.generate_structured(MESSAGES, City, retries=2)
    assert result.value is None and not result.ok
    assert result.attempts == 3
    assert result.raw == too_long
    assert result.error.startswith("ValidationError")
    assert llm.stats.structured_failures == 1
    assert llm.stats.failure_samples == [result.error]


def test_structured_parses_code_fenced_json():
    result = LLM(ScriptedBackend([f"Here you go:\n```json\n{PARIS}\n```"])).generate_structured(MESSAGES, City)
    assert result.value == City(name="Paris", population=2100000)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('{"a": 1}', {"a": 1}),
        ('  {"a": 1}\n', {"a": 1}),
        ('```json\n{"a": 1}\n```', {"a": 1}),
        ('```\n{"a": [1, 2]}\n```', {"a": [1, 2]}),
        ('Sure! {"a": {"b": "c"}} Hope this helps.', {"a": {"b": "c"}}),
        ('Answer:\n```json\n{"a": "}"}\n```\nDone', {"a": "}"}),
        ("[1, 2, 3]", [1, 2, 3]),
        ('"just a string"', "just a string"),
    ],
)
def test_extract_json_finds_the_object(text, expected):
    assert extract_json(text) == expected


@pytest.mark.parametrize("text", ["", "no json here", '{"a": 1', "} backwards {", '{"a": }'])
def test_extract_json_raises_on_text_without_json(text):
    with pytest.raises(json.JSONDecodeError):
        extract_json(text)


# -- spec strings ------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "spec", ["gpt-4", "openai:model-without-server", "openai:@http://localhost:8000/v1", "hf:", "llamacpp:", "hf-gguf:"]
)
def test_unknown_llm_spec_lists_the_forms(spec):
    with pytest.raises(ValueError, match="openai:MODEL@BASE_URL"):
        load_llm_backend(spec)


def test_llamacpp_spec_with_a_missing_file_says_so(tmp_path):
    pytest.importorskip("llama_cpp")
    with pytest.raises(FileNotFoundError, match="no such GGUF"):
        load_llm_backend(f"llamacpp:{tmp_path / 'absent.gguf'}")


def test_missing_packaged_model_points_at_the_extra(monkeypatch):
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(RuntimeError, match=r"copersona\[embedded\]"):
        packaged_smollm2_path()
