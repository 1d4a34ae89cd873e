"""peft LoRA adapters exported to llama.cpp GGUF change the packaged SmolLM2 the way peft does, for real.

transformers runs the dequantized checkpoint in float32 while llama.cpp runs the Q4_1 GGUF (and
quantizes activations for its dot products), so logits never match exactly; what must match is the
change an adapter makes. A few hundredths of a logit of that change is llama.cpp's rounding, so the
adapters here are made large enough (B ~ N(0, std)) to move logits by about a logit or more.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from copersona.backends import load_llm_backend
from copersona.backends.digest import weights_digest
from copersona.backends.llamacpp import packaged_smollm2_path
from copersona.model.gguf_lora import UnsupportedAdapterError, export_lora_gguf

pytest.importorskip("llama_cpp", reason="needs llama-cpp-python (pip install 'copersona[embedded]')")
pytest.importorskip("peft", reason="needs peft")
torch = pytest.importorskip("torch", reason="needs torch")

PROMPT = b"The capital of France is a city where people"
ALL_PROJECTIONS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
R, ALPHA = 16, 32


@pytest.fixture(scope="module")
def base():
    from copersona.model.base_model import load_base_model

    return load_base_model("smollm2", device="cpu")


@pytest.fixture(scope="module")
def prompt_tokens():
    from llama_cpp import Llama

    # llama.cpp's own tokenization, fed to both sides, so both see the very same ids.
    llm = Llama(model_path=packaged_smollm2_path(), n_ctx=64, n_threads=1, vocab_only=True, verbose=False)
    try:
        return llm.tokenize(PROMPT, add_bos=False)
    finally:
        llm.close()


def make_adapter(base, folder: Path, tokens, *, targets=ALL_PROJECTIONS, std=0.1, **options):
    """Save a LoRA adapter with seeded A and N(0, std) B; return peft's (base, adapted) next-token logits."""
    from peft import LoraConfig, get_peft_model

    config = LoraConfig(
        r=R, lora_alpha=ALPHA, lora_dropout=0.05, target_modules=list(targets), task_type="CAUSAL_LM", **options
    )
    torch.manual_seed(0)  # before get_peft_model, which draws the A matrices
    peft_model = get_peft_model(base.model, config)
    try:
        for name, parameter in peft_model.named_parameters():
            if "lora_B" in name and std:
                torch.nn.init.normal_(parameter, std=std)
            elif "lora_B" in name:
                torch.nn.init.zeros_(parameter)
        peft_model.save_pretrained(folder)
        peft_model.eval()
        ids = torch.tensor([tokens])
        with torch.no_grad():
            adapted = peft_model(ids).logits[0, -1].float().numpy()
            with peft_model.disable_adapter():
                plain = peft_model(ids).logits[0, -1].float().numpy()
    finally:
        peft_model.unload()  # puts the plain modules back so the next adapter starts from the base
    return plain, adapted


def llamacpp_logits(tokens, lora_path=None) -> np.ndarray:
    from llama_cpp import Llama

    llm = Llama(
        model_path=packaged_smollm2_path(),
        lora_path=str(lora_path) if lora_path else None,
        n_ctx=64,
        n_threads=1,
        n_threads_batch=1,  # the prompt is processed with every core otherwise, which stalls on a busy machine
        logits_all=True,  # without it llama-cpp-python keeps no scores after eval
        verbose=False,
    )
    try:
        llm.eval(tokens)
        return np.array(llm.scores[llm.n_tokens - 1])
    finally:
        llm.close()


@pytest.fixture(scope="module")
def llamacpp_base(prompt_tokens):
    return llamacpp_logits(prompt_tokens)


@pytest.fixture(scope="module")
def full_adapter(base, prompt_tokens, tmp_path_factory):
    folder = tmp_path_factory.mktemp("full") / "adapter"
    plain, adapted = make_adapter(base, folder, prompt_tokens)
    return folder, plain, adapted


def test_adapter_changes_llamacpp_logits_as_it_changes_peft_logits(full_adapter, prompt_tokens, llamacpp_base):
    folder, plain, adapted = full_adapter
    gguf_path = export_lora_gguf(folder, folder.parent / "full.gguf")
    peft_change = adapted - plain
    llamacpp_change = llamacpp_logits(prompt_tokens, gguf_path) - llamacpp_base
    assert np.abs(peft_change).mean() > 1.0  # the adapter visibly matters, well above llama.cpp's rounding
    assert np.corrcoef(peft_change, llamacpp_change)[0, 1] > 0.95  # measured 0.993
    # The same size of change, not just its direction: llama.cpp scales by alpha / r as peft does.
    slope = float(peft_change @ llamacpp_change / (peft_change @ peft_change))
    assert 0.8 < slope < 1.25  # measured 1.08; alpha ignored would give about 0.5


def test_query_and_key_rows_follow_llamacpps_rotary_order(base, prompt_tokens, llamacpp_base, tmp_path):
    # Without reordering the q/k B rows into llama.cpp's interleaved rotary layout this is about 0.1.
    plain, adapted = make_adapter(base, tmp_path / "qk", prompt_tokens, targets=["q_proj", "k_proj"], std=0.15)
    gguf_path = export_lora_gguf(tmp_path / "qk", tmp_path / "qk.gguf")
    llamacpp_change = llamacpp_logits(prompt_tokens, gguf_path) - llamacpp_base
    assert np.corrcoef(adapted - plain, llamacpp_change)[0, 1] > 0.9


@pytest.mark.parametrize(
    "options",
    [{"use_rslora": True}, {"rank_pattern": {"down_proj": 8}, "alpha_pattern": {r"layers\.1\d\..*_proj": 64}}],
    ids=["rslora", "patterns"],
)
def test_scalings_llamacpp_lacks_are_folded_into_b(base, prompt_tokens, llamacpp_base, tmp_path, options):
    # llama.cpp knows one alpha and divides by each tensor's rank; peft's rsLoRA divides by sqrt(r),
    # and rank/alpha patterns give modules their own r and alpha.
    plain, adapted = make_adapter(base, tmp_path / "a", prompt_tokens, std=0.05, **options)
    gguf_path = export_lora_gguf(tmp_path / "a", tmp_path / "a.gguf")
    peft_change = adapted - plain
    llamacpp_change = llamacpp_logits(prompt_tokens, gguf_path) - llamacpp_base
    assert np.corrcoef(peft_change, llamacpp_change)[0, 1] > 0.95
    assert 0.8 < float(peft_change @ llamacpp_change / (peft_change @ peft_change)) < 1.25


def test_zero_adapter_changes_nothing(base, prompt_tokens, llamacpp_base, tmp_path):
    plain, adapted = make_adapter(base, tmp_path / "zero", prompt_tokens, std=0.0)
    np.testing.assert_array_equal(plain, adapted)
    gguf_path = export_lora_gguf(tmp_path / "zero", tmp_path / "zero.gguf")
    np.testing.assert_allclose(llamacpp_logits(prompt_tokens, gguf_path), llamacpp_base, atol=1e-5)


def test_gguf_holds_llamacpp_names_shapes_and_metadata(full_adapter, tmp_path):
    from gguf import GGUFReader

    folder, _, _ = full_adapter
    out = export_lora_gguf(folder, tmp_path / "sub" / "adapter.gguf", dtype="float16")
    assert out == tmp_path / "sub" / "adapter.gguf"
    assert [p.name for p in out.parent.iterdir()] == ["adapter.gguf"]  # no temporary file left behind
    reader = GGUFReader(str(out))
    assert reader.fields["general.architecture"].contents() == "llama"
    assert reader.fields["general.type"].contents() == "adapter"
    assert reader.fields["adapter.type"].contents() == "lora"
    assert reader.fields["adapter.lora.alpha"].contents() == ALPHA
    shapes = {tensor.name: tuple(int(n) for n in tensor.shape) for tensor in reader.tensors}
    assert len(shapes) == 30 * 7 * 2
    # ggml order (ne0 first): a is [in, r] and b is [r, out], as llama.cpp checks against the weight's [in, out].
    assert shapes["blk.0.attn_q.weight.lora_a"] == (576, R)
    assert shapes["blk.0.attn_k.weight.lora_b"] == (R, 192)
    assert shapes["blk.29.ffn_down.weight.lora_a"] == (1536, R)
    assert shapes["blk.29.ffn_down.weight.lora_b"] == (R, 576)


def _variant(folder: Path, tmp_path: Path, **config_changes) -> Path:
    changed = tmp_path / "variant"
    shutil.copytree(folder, changed)
    config = json.loads((changed / "adapter_config.json").read_text())
    config.update(config_changes)
    (changed / "adapter_config.json").write_text(json.dumps(config))
    return changed


def test_bad_adapters_are_refused_with_the_reason(full_adapter, tmp_path):
    folder, _, _ = full_adapter
    out = tmp_path / "out.gguf"
    with pytest.raises(FileNotFoundError, match="adapter_config.json"):
        export_lora_gguf(tmp_path, out)
    with pytest.raises(UnsupportedAdapterError, match="DoRA"):
        export_lora_gguf(_variant(folder, tmp_path / "dora", use_dora=True), out)
    with pytest.raises(UnsupportedAdapterError, match="modules_to_save"):
        export_lora_gguf(_variant(folder, tmp_path / "save", modules_to_save=["lm_head"]), out)
    with pytest.raises(UnsupportedAdapterError, match="pissa"):
        export_lora_gguf(_variant(folder, tmp_path / "pissa", init_lora_weights="pissa"), out)
    with pytest.raises(UnsupportedAdapterError, match="only LoRA"):
        export_lora_gguf(_variant(folder, tmp_path / "ia3", peft_type="IA3"), out)
    with pytest.raises(UnsupportedAdapterError, match="only llama"):
        export_lora_gguf(folder, out, base_config={"model_type": "gpt2", "num_attention_heads": 12})
    with pytest.raises(FileNotFoundError, match="base_config="):
        export_lora_gguf(_variant(folder, tmp_path / "hub", base_model_name_or_path="org/not-here"), out)

    from safetensors.torch import load_file, save_file

    extra = _variant(folder, tmp_path / "head")
    state = load_file(str(extra / "adapter_model.safetensors"))
    state["base_model.model.lm_head.lora_A.weight"] = torch.zeros(R, 576)
    save_file(state, str(extra / "adapter_model.safetensors"))
    with pytest.raises(UnsupportedAdapterError, match="lm_head"):
        export_lora_gguf(extra, out)
    assert not out.exists()


def test_backend_model_id_names_the_adapter(full_adapter, tmp_path, monkeypatch):
    # Reading the context length parses the whole GGUF vocabulary (seconds); it plays no part here.
    monkeypatch.setattr("copersona.backends.llamacpp.gguf_trained_context", lambda path: 8192)
    folder, _, _ = full_adapter
    first = export_lora_gguf(folder, tmp_path / "first.gguf")
    second = export_lora_gguf(folder, tmp_path / "second.gguf", dtype="float16")
    ids = []
    for lora_path in (None, first, second):
        backend = load_llm_backend("smollm2", n_ctx=256, n_threads=1, lora_path=lora_path)
        ids.append(backend.model_id)
        backend.close()
    assert ids[0] == f"llamacpp:SmolLM2-135M-Instruct.Q4_1.gguf@{weights_digest(packaged_smollm2_path())}"
    assert ids[1].startswith(ids[0] + "+lora:") and len(set(ids)) == 3
    with pytest.raises(FileNotFoundError, match="LoRA adapter"):
        load_llm_backend("smollm2", n_ctx=256, n_threads=1, lora_path=tmp_path / "missing.gguf")
