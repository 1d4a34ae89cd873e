"""A local Hugging Face model run by transformers: a checkpoint folder, or a GGUF file dequantized once.

This backend needs no server and runs anything transformers can load, on CUDA where present. It
has no constrained decoding: :class:`~copersona.backends.llm.LLM` validates structured answers
and retries. Requests with the same decoding parameters are generated together in left-padded
batches; a sampled request's text therefore depends on its seed *and* on its batch companions.
"""

from __future__ import annotations

import os
import shutil
import time
from itertools import groupby
from pathlib import Path

from copersona.backends.digest import cache_dir, folder_digest, weights_digest
from copersona.backends.llm import Completion, LLMBackend, Request

# A local checkpoint's weight files, hashed into the model id.
WEIGHT_FILES = ("*.safetensors", "*.bin", "*.gguf")


def resolve_device(device: str) -> str:
    import torch

    if device != "auto":
        return device
    return "cuda" if torch.cuda.is_available() else "cpu"


def resolve_dtype(dtype: str, device: str):
    """float32 on CPU (half precision is slow there); bfloat16 on a GPU that has it, else float16."""
    import torch

    if dtype != "auto":
        return getattr(torch, dtype)
    if not device.startswith("cuda"):
        return torch.float32
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


def dequantized_checkpoint(gguf_path: str | Path) -> Path:
    """A safetensors checkpoint (model and tokenizer) of ``gguf_path``, converted on first use only.

    transformers can load a GGUF file directly, but it dequantizes every tensor and rebuilds the
    tokenizer on each load (the packaged SmolLM2: about 50 s here, a 7B model minutes; reading the
    converted checkpoint: under a second). The checkpoint lives in the cache folder, named by the
    GGUF's digest, so the conversion is paid once per machine and file.

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


def _decoding_key(request: Request) -> tuple:
    """Requests sharing this key can be generated in one batch; greedy decoding ignores the seed."""
    seed = request.seed if request.temperature > 0 else None
    soft = request.soft_prompt.values.shape if request.soft_prompt is not None else None
    return (request.temperature, request.max_tokens, request.stop, seed, soft)


def _cut_at_stop(text: str, stop: tuple[str, ...]) -> str:
    """The text before the first stop sequence, which (as in the OpenAI API) is not returned."""
    cuts = [text.find(s) for s in stop if s and s in text]
    return text[: min(cuts)] if cuts else text


class TransformersBackend(LLMBackend):
    """AutoModelForCausalLM + AutoTokenizer from local files only; never reaches for a hub.

    ``adapter`` is a peft LoRA folder merged into the weights at load (no per-token LoRA cost).
    Requests may carry soft prompts: their virtual tokens go before the prompt's token embeddings.
    """

    supports_soft_prompts = True

    def __init__(
        self,
        path_or_name: str | Path,
        *,
        gguf_file: str | None = None,
        adapter: str | Path | None = None,
        device: str = "auto",
        dtype: str = "auto",
        batch_size: int = 8,
    ):
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        try:
            import torch
            from transformers import AutoModelForCausalLM, AutoTokenizer
        except ImportError as err:
            raise RuntimeError("the transformers backend needs transformers (pip install 'copersona[hf]')") from err
        self._torch = torch
        self.device = resolve_device(device)
        self.batch_size = batch_size
        source = str(path_or_name)
        # A GGUF is read from its dequantized checkpoint; its identity stays the GGUF's digest.
        checkpoint = str(dequantized_checkpoint(Path(source) / gguf_file)) if gguf_file else source
        self.tokenizer = AutoTokenizer.from_pretrained(checkpoint, local_files_only=True)
        self.tokenizer.padding_side = "left"  # generation continues every row from its last real token
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.model = AutoModelForCausalLM.from_pretrained(
            checkpoint, dtype=resolve_dtype(dtype, self.device), local_files_only=True
        )
        name = gguf_file or (Path(source).name if Path(source).is_dir() else source)
        self.model_id = f"hf-gguf:{name}" if gguf_file else f"hf:{name}"
        if gguf_file:
            self.model_id += f"@{weights_digest(Path(source) / gguf_file)}"
        elif Path(source).is_dir():
            self.model_id += f"@{folder_digest(source, WEIGHT_FILES)}"
        if adapter is not None:
            from peft import PeftModel

            self.model = PeftModel.from_pretrained(self.model, str(adapter)).merge_and_unload()
            weights = sorted(Path(adapter).glob("adapter_model.*"))
            if not weights:
                raise FileNotFoundError(f"{adapter}: no adapter_model.safetensors (not a peft adapter folder)")
            self.model_id += f"+lora:{weights_digest(weights[0])}"
        self.model.to(self.device).eval()
        self.context_window = int(getattr(self.model.config, "max_position_embeddings", 2048))
        eos = self.model.generation_config.eos_token_id
        self._end_ids = set(eos if isinstance(eos, list) else [eos]) | {self.tokenizer.pad_token_id}

    def complete(self, requests: list[Request]) -> list[Completion]:
        def key(i: int) -> str:  # repr: seeds may be None, which does not sort against ints
            return repr(_decoding_key(requests[i]))

        results: list[Completion | None] = [None] * len(requests)
        for _, group in groupby(sorted(range(len(requests)), key=key), key=key):
            indices = list(group)
            for start in range(0, len(indices), self.batch_size):
                chunk = indices[start : start + self.batch_size]
                for i, completion in zip(chunk, self._generate([requests[i] for i in chunk]), strict=True):
                    results[i] = completion
        return results  # type: ignore[return-value]

    def _generate(self, batch: list[Request]) -> list[Completion]:
        """One generate() call for requests that share their decoding parameters."""
        torch, first = self._torch, batch[0]
        prompts = [
            self.tokenizer.apply_chat_template(r.message_dicts(), add_generation_prompt=True, tokenize=False)
            for r in batch
        ]
        inputs = self.tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=False).to(self.device)
        prompt_lengths = inputs["attention_mask"].sum(dim=1).tolist()
        if first.soft_prompt is not None:
            inputs, prompt_lengths = (
                self._with_soft_prompts(inputs, batch),
                [n + first.soft_prompt.values.shape[0] for n in prompt_lengths],
            )
        greedy = first.temperature <= 0
        sampling = {"do_sample": False} if greedy else {"do_sample": True, "temperature": first.temperature}
        stopping = {"stop_strings": list(first.stop), "tokenizer": self.tokenizer} if first.stop else {}
        started = time.perf_counter()
        torch.manual_seed(first.seed)
        with torch.inference_mode():
            output = self.model.generate(
                **inputs,
                max_new_tokens=first.max_tokens,
                pad_token_id=self.tokenizer.pad_token_id,
                **sampling,
                **stopping,
            )
        seconds = (time.perf_counter() - started) / len(batch)
        # generate() returns the prompt before the new tokens when given ids, only new ones from embeddings.
        new_tokens = output[:, inputs["input_ids"].shape[1] :].tolist() if "input_ids" in inputs else output.tolist()
        completions = []
        for request, tokens, prompt_length in zip(batch, new_tokens, prompt_lengths, strict=True):
            length = next((k for k, token in enumerate(tokens) if token in self._end_ids), len(tokens))
            text = self.tokenizer.decode(tokens[:length], skip_special_tokens=True)
            completions.append(
                Completion(
                    text=_cut_at_stop(text, request.stop),
                    prompt_tokens=int(prompt_length),
                    completion_tokens=length,
                    seconds=seconds,
                )
            )
        return completions

    def _with_soft_prompts(self, inputs, batch: list[Request]) -> dict:
        """Token embeddings with each request's soft prompt before them (mask extended accordingly)."""
        from copersona.model.soft_prompt import prepend_soft_prompt

        torch = self._torch
        embeddings = self.model.get_input_embeddings()(inputs["input_ids"])
        soft = torch.stack([torch.from_numpy(r.soft_prompt.values) for r in batch]).to(self.device)  # type: ignore[union-attr]
        embeddings, mask, _ = prepend_soft_prompt(embeddings, inputs["attention_mask"], soft)
        return {"inputs_embeds": embeddings, "attention_mask": mask}

    @property
    def special_tokens(self) -> tuple[str, ...]:
        return tokenizer_special_tokens(self.tokenizer)

    def count_tokens(self, text: str) -> int:
        return len(self.tokenizer.encode(text, add_special_tokens=False)) if text else 0

    def close(self) -> None:
        del self.model
        if self.device.startswith("cuda"):
            self._torch.cuda.empty_cache()


def tokenizer_special_tokens(tokenizer) -> tuple[str, ...]:
    """A Hugging Face tokenizer's special tokens and its added tokens marked special, as text."""
    added = [t.content for t in tokenizer.added_tokens_decoder.values() if t.special]
    return tuple(sorted({*tokenizer.all_special_tokens, *added}))
