"""The generator as a trainable torch model: a Hugging Face checkpoint, or a GGUF file dequantized once
(:func:`~copersona.backends.transformers_local.dequantized_checkpoint`)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from copersona.backends.transformers_local import dequantized_checkpoint, resolve_device, resolve_dtype


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
