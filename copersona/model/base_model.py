"""The generator as a trainable torch model: a Hugging Face checkpoint, or a GGUF file dequantized once.

transformers can load a GGUF file directly, but it dequantizes every tensor on each load (the
packaged SmolLM2 takes several seconds, a 7B model minutes). :func:`dequantized_checkpoint` does it
once and keeps a safetensors checkpoint in the cache folder; every later load reads that.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from copersona.backends.digest import cache_dir, weights_digest
from copersona.backends.transformers_local import resolve_device, resolve_dtype


def dequantized_checkpoint(gguf_path: str | Path) -> Path:
    """A safetensors checkpoint (model and tokenizer) of ``gguf_path``, converted on first use only.

    The conversion is written to a temporary folder and renamed into place, so an interrupted
    conversion never leaves a half checkpoint that a later load would trust.
    """
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf_path = Path(gguf_path)
    target = cache_dir() / "models" / f"{gguf_path.stem}-{weights_digest(gguf_path)}"
    if (target / "config.json").exists():
        return target
    partial = target.with_name(target.name + f".partial-{os.getpid()}")
    shutil.rmtree(partial, ignore_errors=True)
    files = {"gguf_file": gguf_path.name, "local_files_only": True}
    import torch

    model = AutoModelForCausalLM.from_pretrained(str(gguf_path.parent), dtype=torch.float32, **files)
    tokenizer = AutoTokenizer.from_pretrained(str(gguf_path.parent), **files)
    # The weights are plain float tensors now; dropping the GGUF marker lets transformers save them.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.save_pretrained(partial)
    tokenizer.save_pretrained(partial)
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        partial.rename(target)
    except OSError:  # another process finished the same conversion first
        shutil.rmtree(partial, ignore_errors=True)
    return target


def checkpoint_for(spec: str) -> Path:
    """The local checkpoint folder a generator spec trains on.

    ``smollm2`` / ``llamacpp:PATH.gguf`` / ``hf-gguf:PATH.gguf``: the GGUF, dequantized once;
    ``hf:PATH``: the checkpoint itself. A served model (``openai:``) has no local weights to train.
    """
    from copersona.backends import LLMSpec

    parsed = LLMSpec.parse(spec)
    if parsed.gguf is not None:
        return dequantized_checkpoint(parsed.gguf)
    if parsed.kind == "hf":
        return Path(parsed.target)
    raise ValueError(f"cannot train {spec!r}: training needs local weights (smollm2, llamacpp:, hf-gguf: or hf:)")


@dataclass
class BaseModel:
    """A causal LM, its tokenizer, and where they came from."""

    model: object  # transformers PreTrainedModel (or a peft wrapper of one)
    tokenizer: object
    checkpoint: Path
    device: str

    @property
    def hidden_size(self) -> int:
        return int(self.model.config.hidden_size)


def load_base_model(spec: str = "smollm2", *, device: str = "auto", dtype: str = "auto") -> BaseModel:
    """The generator of ``spec`` as a torch model on ``device`` (CUDA when present, else CPU)."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from transformers import AutoModelForCausalLM, AutoTokenizer

    checkpoint = checkpoint_for(spec)
    device = resolve_device(device)
    tokenizer = AutoTokenizer.from_pretrained(str(checkpoint), local_files_only=True)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    model = AutoModelForCausalLM.from_pretrained(
        str(checkpoint), dtype=resolve_dtype(dtype, device), local_files_only=True
    )
    return BaseModel(model=model.to(device), tokenizer=tokenizer, checkpoint=checkpoint, device=device)
