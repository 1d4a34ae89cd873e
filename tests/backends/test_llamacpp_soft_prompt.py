"""Soft prompts under llama.cpp: virtual token embeddings decoded before the prompt, for real.

transformers runs the dequantized checkpoint in float32 while llama.cpp runs the Q4_1 GGUF, so
logits never match exactly. What must match is what the soft prompt does: the change it makes to
the next-token logits, and a confident greedy answer. Both sides get the same embedding rows
(transformers' dequantized ones; llama.cpp's own table is quantized) and the same prompt token ids.
"""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest

from copersona.backends import load_llm_backend
from copersona.backends.llm import Request, SoftPrompt

pytest.importorskip("llama_cpp", reason="needs llama-cpp-python (pip install 'copersona[embedded]')")

HIDDEN = 576  # SmolLM2-135M's n_embd
FRANCE = [{"role": "user", "content": "What is the capital of France?"}]
COLORS = [{"role": "user", "content": "Name three colors."}]
COUNT = [{"role": "user", "content": "Count from 1 to 10, separated by commas."}]


@pytest.fixture(scope="module")
def backend():
    loaded = load_llm_backend("smollm2", n_ctx=512, n_threads=1)
    yield loaded
    loaded.close()


@pytest.fixture(scope="module")
def base():
    pytest.importorskip("torch", reason="needs torch")
    pytest.importorskip("transformers", reason="needs transformers")
    from copersona.model.base_model import load_base_model

    return load_base_model("smollm2", device="cpu")


def random_soft(length: int = 6, seed: int = 0) -> SoftPrompt:
    values = np.random.default_rng(seed).normal(0.0, 0.05, (length, HIDDEN)).astype(np.float32)
    return SoftPrompt(f"random-{length}-{seed}", values)


def token_soft(base, backend, text: str) -> SoftPrompt:
    """The transformers model's (dequantized) embedding rows of ``text``'s tokens."""
    import torch

    ids = backend._llm.tokenize(text.encode("utf-8"), add_bos=False)
    with torch.no_grad():
        values = base.model.get_input_embeddings()(torch.tensor(ids)).numpy().astype(np.float32)
    return SoftPrompt(f"tokens:{text}", values)


def llamacpp_next_logits(backend, request: Request) -> np.ndarray:
    """Next-token logits after the prompt: a one-token request leaves them in the context's output buffer."""
    import llama_cpp

    backend.complete([replace(request, max_tokens=1)])
    logits = llama_cpp.llama_get_logits_ith(backend._llm.ctx, -1)
    return np.ctypeslib.as_array(logits, shape=(backend._llm.n_vocab(),)).copy()


def transformers_run(base, prompt: list[int], soft: SoftPrompt | None, new_tokens: int) -> tuple[np.ndarray, str]:
    """Next-token logits and the greedy continuation, the soft prompt prepended as the backend does it."""
    import torch

    from copersona.model.soft_prompt import prepend_soft_prompt

    ids = torch.tensor([prompt])
    with torch.no_grad():
        embeddings, mask = base.model.get_input_embeddings()(ids), torch.ones_like(ids)
        if soft is not None:
            embeddings, mask, _ = prepend_soft_prompt(embeddings, mask, torch.from_numpy(soft.values)[None])
        logits = base.model(inputs_embeds=embeddings, attention_mask=mask).logits[0, -1].numpy()
        if not new_tokens:
            return logits, ""
        output = base.model.generate(
            inputs_embeds=embeddings, attention_mask=mask, max_new_tokens=new_tokens, do_sample=False
        )
    return logits, base.tokenizer.decode(output[0], skip_special_tokens=True)


def test_soft_prompt_acts_as_in_transformers(backend, base):
    soft = token_soft(base, backend, "You are a pirate. Always talk like a pirate.")
    plain = Request.chat(FRANCE, temperature=0.0, max_tokens=8)
    request = replace(plain, soft_prompt=soft)
    prompt = backend._prompt_arguments(plain)["prompt"]  # the very ids llama.cpp decodes after the soft prompt

    [completion] = backend.complete([request])
    hf_plain, _ = transformers_run(base, prompt, None, 1)
    hf_soft, hf_text = transformers_run(base, prompt, soft, 8)
    assert completion.text == hf_text  # measured: both "The capital of France is Paris."
    assert completion.prompt_tokens == len(soft.values) + len(prompt)
    assert 0 < completion.completion_tokens <= 8

    llama_plain, llama_soft = llamacpp_next_logits(backend, plain), llamacpp_next_logits(backend, request)
    assert llama_soft.argmax() == hf_soft.argmax()
    hf_change, llama_change = hf_soft - hf_plain, llama_soft - llama_plain
    assert np.abs(hf_change).mean() > 0.5  # the soft prompt visibly matters (measured 1.29)
    assert np.corrcoef(hf_change, llama_change)[0, 1] > 0.9  # measured 0.987; no change at all if it were ignored
    assert 0.7 < float(hf_change @ llama_change / (hf_change @ hf_change)) < 1.4  # measured 1.20


def test_empty_soft_prompt_reproduces_the_plain_path(backend):
    empty = SoftPrompt("empty", np.zeros((0, HIDDEN), np.float32))
    for temperature, seed in ((0.0, 0), (0.8, 5)):
        plain = Request.chat(COLORS, temperature=temperature, max_tokens=16, seed=seed)
        [expected, got] = backend.complete([plain, replace(plain, soft_prompt=empty)])
        assert (got.text, got.prompt_tokens, got.completion_tokens) == (
            expected.text,
            expected.prompt_tokens,
            expected.completion_tokens,
        )


def test_random_soft_prompt_is_used_and_follows_the_seed(backend):
    greedy = Request.chat(COLORS, temperature=0.0, max_tokens=16)
    [plain, soft] = backend.complete([greedy, replace(greedy, soft_prompt=random_soft())])
    assert soft.text.strip() and soft.text != plain.text

    sampled = Request.chat(COLORS, temperature=0.8, max_tokens=16, seed=3, soft_prompt=random_soft())
    first, again, other = backend.complete([sampled, sampled, replace(sampled, seed=4)])
    assert first.text == again.text
    assert first.text != other.text


def test_plain_request_after_a_soft_prompt_is_unaffected(backend):
    plain = Request.chat(FRANCE, temperature=0.0, max_tokens=12)
    fresh = load_llm_backend("smollm2", n_ctx=512, n_threads=1)
    try:
        [expected] = fresh.complete([plain])
    finally:
        fresh.close()
    # The same messages before and after a soft prompt: the high-level Llama must not match the prompt's
    # tokens against its history and reuse a KV cache that now holds the soft prompt's positions.
    before, _, after = backend.complete([plain, replace(plain, soft_prompt=random_soft(seed=1)), plain])
    assert before.text == after.text == expected.text


def test_soft_prompt_width_must_be_n_embd(backend):
    for values in (np.zeros((4, HIDDEN + 1), np.float32), np.zeros(HIDDEN, np.float32)):
        with pytest.raises(ValueError, match="n_embd"):
            backend.complete([Request.chat(COLORS, max_tokens=4, soft_prompt=SoftPrompt("bad", values))])
    with pytest.raises(ValueError, match="NaN"):
        bad = np.full((2, HIDDEN), np.nan, np.float32)
        backend.complete([Request.chat(COLORS, max_tokens=4, soft_prompt=SoftPrompt("nan", bad))])


def test_stop_string_cuts_the_text(backend):
    request = Request.chat(COUNT, temperature=0.0, max_tokens=40, soft_prompt=random_soft(length=2, seed=2))
    [full, cut] = backend.complete([request, replace(request, stop=("5",))])
    assert "5" in full.text
    assert cut.text == full.text[: full.text.index("5")]
    assert cut.completion_tokens < full.completion_tokens


def test_json_schema_grammar_applies_with_a_soft_prompt(backend):
    schema = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
    request = Request.chat(FRANCE, temperature=0.0, max_tokens=40, json_schema=schema, soft_prompt=random_soft())
    [completion] = backend.complete([request])
    assert isinstance(json.loads(completion.text)["city"], str)


def test_lora_adapter_applies_with_a_soft_prompt(backend, base, tmp_path):
    import torch

    pytest.importorskip("peft", reason="needs peft")
    from peft import LoraConfig, get_peft_model

    from copersona.model.gguf_lora import export_lora_gguf

    plain = Request.chat(FRANCE, temperature=0.0, max_tokens=8)
    request = replace(plain, soft_prompt=random_soft())
    prompt = backend._prompt_arguments(plain)["prompt"]

    def hf_logits(soft):
        return transformers_run(base, prompt, soft, 0)[0]

    hf_base = hf_logits(request.soft_prompt)
    targets = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    torch.manual_seed(0)  # before get_peft_model, which draws the A matrices
    peft_model = get_peft_model(base.model, LoraConfig(r=8, lora_alpha=16, target_modules=targets))
    try:
        for name, parameter in peft_model.named_parameters():
            if "lora_B" in name:
                torch.nn.init.normal_(parameter, std=0.1)  # large enough to move logits well past Q4 rounding
        peft_model.save_pretrained(tmp_path / "adapter")
        peft_model.eval()
        hf_adapted, hf_adapted_plain = hf_logits(request.soft_prompt), hf_logits(None)  # base.model adapted in place
    finally:
        peft_model.unload()  # the plain modules back, for the tests after this one
    adapted = load_llm_backend(
        "smollm2", n_ctx=512, n_threads=1, lora_path=export_lora_gguf(tmp_path / "adapter", tmp_path / "a.gguf")
    )
    try:
        llama_adapted, llama_adapted_plain = (
            llamacpp_next_logits(adapted, request),
            llamacpp_next_logits(adapted, plain),
        )
        [completion] = adapted.complete([request])
    finally:
        adapted.close()
    # What the adapter changes with a soft prompt in place, and what the soft prompt changes under the adapter.
    adapter_change = (hf_adapted - hf_base, llama_adapted - llamacpp_next_logits(backend, request))
    soft_change = (hf_adapted - hf_adapted_plain, llama_adapted - llama_adapted_plain)
    for hf_change, llama_change in (adapter_change, soft_change):
        assert np.abs(hf_change).mean() > 0.3  # measured 0.85 and 1.10
        assert np.corrcoef(hf_change, llama_change)[0, 1] > 0.9  # measured 0.979 and 0.968
    assert completion.text.strip()
