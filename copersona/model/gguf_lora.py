"""Export a peft LoRA adapter of a llama-architecture generator as a llama.cpp LoRA GGUF.

Fine-tuning happens in torch (peft on the dequantized checkpoint, see :mod:`copersona.model.base_model`),
but generating with transformers is about ten times slower on a CPU than llama.cpp running the
quantized GGUF. llama.cpp applies LoRA adapters at run time from a GGUF of their own, so the
adapter is converted here instead of merging it into a full-size checkpoint and re-quantizing it.

The conversion is the one llama.cpp's ``convert_lora_to_gguf.py`` does for llama models, without
needing a llama.cpp checkout: peft module names become GGUF tensor names, and the rows of the q/k
LoRA B matrices are put back into llama.cpp's rotary-interleaved order (transformers undoes that
order when it loads a GGUF, and an original Hugging Face checkpoint never had it).
"""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Mapping
from pathlib import Path

import numpy as np

# peft module -> llama.cpp tensor, for the linear projections of a llama decoder block.
_LLAMA_PROJECTIONS = {
    "self_attn.q_proj": "attn_q",
    "self_attn.k_proj": "attn_k",
    "self_attn.v_proj": "attn_v",
    "self_attn.o_proj": "attn_output",
    "mlp.gate_proj": "ffn_gate",
    "mlp.up_proj": "ffn_up",
    "mlp.down_proj": "ffn_down",
}
_TENSOR_KEY = re.compile(
    r"^(?:base_model\.model\.)?(?P<module>model\.layers\.(?P<layer>\d+)\.(?P<proj>\w+\.\w+))\.lora_(?P<ab>[AB])\.weight$"
)
# Initialisations that rewrite the base weights when the adapter is created: the adapter is then
# only correct on top of those rewritten weights, which the original GGUF does not have.
_SAFE_INITS = (True, False, "gaussian", "eva", "orthogonal")
_DTYPES = {"float32": np.float32, "float16": np.float16}


class UnsupportedAdapterError(ValueError):
    """The adapter uses something a llama.cpp LoRA GGUF cannot express (or that this export does not map)."""


def export_lora_gguf(
    adapter_dir: str | Path,
    out_path: str | Path,
    *,
    base_config: str | Path | Mapping | None = None,
    dtype: str = "float32",
) -> Path:
    """Write the peft LoRA adapter saved in ``adapter_dir`` to ``out_path`` as a llama.cpp LoRA GGUF.

    ``base_config`` is the base model's ``config.json`` (a path to it or to its checkpoint folder, or
    the parsed mapping); by default it is read from the adapter's ``base_model_name_or_path``, which
    peft records as the local checkpoint folder when the adapter was made on a loaded model.
    ``dtype`` is ``float32`` or ``float16`` for the written tensors. The file is written next to
    ``out_path`` under a temporary name and renamed into place, so a reader never sees half a file.

    Raises :class:`UnsupportedAdapterError` for adapters llama.cpp cannot run as plain LoRA (DoRA,
    trained biases or full modules, non-llama bases, modules other than the decoder projections, ...)
    and :class:`FileNotFoundError` when ``adapter_dir`` holds no saved adapter.
    """
    if dtype not in _DTYPES:
        raise ValueError(f"dtype must be one of {', '.join(_DTYPES)}, not {dtype!r}")
    adapter_dir = Path(adapter_dir)
    config = _read_adapter_config(adapter_dir)
    base = _read_base_config(config, adapter_dir, base_config)
    n_head = int(base["num_attention_heads"])
    n_head_kv = int(base.get("num_key_value_heads") or n_head)
    alpha = float(config.get("lora_alpha", 8))
    if alpha == 0:
        # llama.cpp reads alpha 0 as "no alpha" and scales by 1, while peft's scaling would be 0.
        raise UnsupportedAdapterError(f"{adapter_dir}: lora_alpha is 0, which llama.cpp cannot express")

    pairs = _lora_pairs(_read_adapter_tensors(adapter_dir), adapter_dir)
    tensors: list[tuple[str, np.ndarray]] = []
    for module, (layer, proj, lora_a, lora_b) in sorted(pairs.items(), key=lambda item: (item[1][0], item[1][1])):
        rank = lora_a.shape[0]
        if lora_b.shape[1] != rank:
            raise UnsupportedAdapterError(
                f"{module}: lora_A is {tuple(lora_a.shape)} but lora_B is {tuple(lora_b.shape)}; ranks differ"
            )
        expected_rank, module_alpha = _rank_and_alpha(config, module)
        if rank != expected_rank:
            raise UnsupportedAdapterError(
                f"{module}: tensors have rank {rank} but adapter_config.json says {expected_rank}"
            )
        # llama.cpp scales every tensor by one global alpha over that tensor's rank; a module whose peft
        # scaling differs (rsLoRA, rank/alpha patterns) has the difference folded into its B matrix.
        peft_scaling = module_alpha / (math.sqrt(rank) if config.get("use_rslora") else rank)
        correction = peft_scaling / (alpha / rank)
        if not math.isclose(correction, 1.0, rel_tol=1e-9):
            lora_b = lora_b * correction
        if proj in ("self_attn.q_proj", "self_attn.k_proj"):
            lora_b = _to_llamacpp_rope_order(lora_b, n_head if proj == "self_attn.q_proj" else n_head_kv, module)
        name = f"blk.{layer}.{_LLAMA_PROJECTIONS[proj]}.weight"
        # numpy (rank, in) / (out, rank) are ggml ne [in, rank] / [rank, out]: exactly the layouts
        # llama.cpp checks for (a's ne[0] = the weight's input size, b's ne[1] = its output size).
        tensors.append((f"{name}.lora_a", np.ascontiguousarray(lora_a, dtype=_DTYPES[dtype])))
        tensors.append((f"{name}.lora_b", np.ascontiguousarray(lora_b, dtype=_DTYPES[dtype])))
    return _write_gguf(Path(out_path), tensors, alpha, adapter_dir.name)


def _read_adapter_config(adapter_dir: Path) -> dict:
    path = adapter_dir / "adapter_config.json"
    if not path.is_file():
        raise FileNotFoundError(f"{adapter_dir}: no adapter_config.json (not a saved peft adapter)")
    try:
        config = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise UnsupportedAdapterError(f"{path}: not valid JSON ({err})") from err
    if config.get("peft_type") != "LORA":
        raise UnsupportedAdapterError(f"{adapter_dir}: a {config.get('peft_type')!r} adapter; only LoRA converts")
    problems = []
    if config.get("use_dora"):
        problems.append("DoRA (use_dora) rescales weights by a learnt magnitude llama.cpp does not apply")
    if config.get("bias", "none") != "none" or config.get("lora_bias"):
        problems.append("trained biases (bias / lora_bias) have no place in a llama.cpp LoRA")
    if config.get("modules_to_save") or config.get("trainable_token_indices"):
        problems.append("fully trained modules or tokens (modules_to_save / trainable_token_indices) are not LoRA")
    if config.get("fan_in_fan_out"):
        problems.append("fan_in_fan_out is for transposed (Conv1D) weights, which llama models do not have")
    if config.get("alora_invocation_tokens"):
        problems.append("activated LoRA (alora_invocation_tokens) is not exported")
    if config.get("layer_replication") or config.get("target_parameters"):
        problems.append("layer_replication / target_parameters change which weights exist")
    for variant in ("use_qalora", "use_bdlora", "velora_config", "monteclora_config", "kasa_config", "arrow_config"):
        if config.get(variant):
            problems.append(f"the LoRA variant {variant} is not plain LoRA")
    init = config.get("init_lora_weights", True)
    if init not in _SAFE_INITS:
        problems.append(f"init_lora_weights={init!r} rewrites the base weights the adapter was trained on")
    if problems:
        raise UnsupportedAdapterError(f"{adapter_dir}: cannot export to llama.cpp: " + "; ".join(problems))
    return config


def _read_base_config(config: dict, adapter_dir: Path, base_config: str | Path | Mapping | None) -> Mapping:
    if isinstance(base_config, Mapping):
        base = base_config
    else:
        source = base_config if base_config is not None else config.get("base_model_name_or_path")
        path = Path(source) if source else None
        if path is not None and path.is_dir():
            path = path / "config.json"
        if path is None or not path.is_file():
            raise FileNotFoundError(
                f"{adapter_dir}: the base model's config.json was not found at {source!r}; "
                "pass base_config= (the checkpoint folder the adapter was trained on)"
            )
        base = json.loads(path.read_text())
    if base.get("model_type") != "llama":
        raise UnsupportedAdapterError(
            f"{adapter_dir}: base model type {base.get('model_type')!r}; only llama-architecture models are exported"
        )
    return base


def _read_adapter_tensors(adapter_dir: Path) -> dict[str, np.ndarray]:
    import torch

    safetensors_file, bin_file = adapter_dir / "adapter_model.safetensors", adapter_dir / "adapter_model.bin"
    if safetensors_file.is_file():
        from safetensors.torch import load_file

        state = load_file(str(safetensors_file))
    elif bin_file.is_file():
        state = torch.load(bin_file, map_location="cpu", weights_only=True)
    else:
        raise FileNotFoundError(f"{adapter_dir}: no adapter_model.safetensors (or .bin)")
    # bfloat16 has no numpy type; float32 holds every half-precision value exactly.
    return {key: value.to(torch.float32).numpy() for key, value in state.items()}


def _lora_pairs(state: dict[str, np.ndarray], adapter_dir: Path) -> dict[str, tuple[int, str, np.ndarray, np.ndarray]]:
    halves: dict[str, dict[str, object]] = {}
    unmapped = []
    for key, value in state.items():
        match = _TENSOR_KEY.match(key)
        if match is None or match["proj"] not in _LLAMA_PROJECTIONS:
            unmapped.append(key)
            continue
        entry = halves.setdefault(match["module"], {"layer": int(match["layer"]), "proj": match["proj"]})
        entry[match["ab"]] = value
    if unmapped:
        shown = ", ".join(sorted(unmapped)[:5]) + (" ..." if len(unmapped) > 5 else "")
        raise UnsupportedAdapterError(
            f"{adapter_dir}: {len(unmapped)} tensor(s) do not map to llama.cpp LoRA tensors "
            f"(only the q/k/v/o and gate/up/down projections of decoder layers do): {shown}"
        )
    if not halves:
        raise UnsupportedAdapterError(f"{adapter_dir}: the adapter holds no LoRA tensors")
    pairs = {}
    for module, entry in halves.items():
        if "A" not in entry or "B" not in entry:
            raise UnsupportedAdapterError(
                f"{adapter_dir}: {module} has lora_{'A' if 'A' not in entry else 'B'} missing"
            )
        pairs[module] = (entry["layer"], entry["proj"], entry["A"], entry["B"])
    return pairs


def _rank_and_alpha(config: dict, module: str) -> tuple[int, float]:
    """The rank and alpha peft gave ``module``, resolving rank_pattern / alpha_pattern as peft does."""

    def lookup(patterns: dict, default):
        for pattern, value in (patterns or {}).items():
            if re.match(rf"(.*\.)?({pattern})$", module):
                return value
        return default

    return int(lookup(config.get("rank_pattern"), config["r"])), float(
        lookup(config.get("alpha_pattern"), config.get("lora_alpha", 8))
    )


def _to_llamacpp_rope_order(lora_b: np.ndarray, n_head: int, module: str) -> np.ndarray:
    """Reorder B's output rows from Hugging Face's rotary layout to llama.cpp's.

    Per head, Hugging Face keeps the two rotary halves as two blocks of rows; llama.cpp interleaves
    them pairwise. Only B needs it: B @ A's rows are B's rows, and A acts on the input side.
    """
    out = lora_b.shape[0]
    if out % (2 * n_head):
        raise UnsupportedAdapterError(f"{module}: {out} output rows do not split into {n_head} rotary heads")
    return lora_b.reshape(n_head, 2, out // n_head // 2, *lora_b.shape[1:]).swapaxes(1, 2).reshape(lora_b.shape)


def _write_gguf(out_path: Path, tensors: list[tuple[str, np.ndarray]], alpha: float, name: str) -> Path:
    import gguf

    out_path.parent.mkdir(parents=True, exist_ok=True)
    partial = out_path.with_name(f".{out_path.name}.partial-{os.getpid()}")
    try:
        writer = gguf.GGUFWriter(str(partial), "llama")
        writer.add_type(gguf.GGUFType.ADAPTER)
        writer.add_string(gguf.Keys.Adapter.TYPE, "lora")
        writer.add_float32(gguf.Keys.Adapter.LORA_ALPHA, alpha)
        writer.add_name(name)
        for tensor_name, data in tensors:
            writer.add_tensor(tensor_name, data)
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()
        os.replace(partial, out_path)
    finally:
        partial.unlink(missing_ok=True)
    return out_path
