"""Any OpenAI-compatible chat server over HTTP: vLLM, the llama.cpp servers, Ollama, hosted APIs.

Requests in a batch run concurrently, at most ``max_concurrency`` at a time, so a batching server
(vLLM) stays busy. Transient failures (connection errors, timeouts, 429, 5xx) are retried with
exponential backoff and jitter; any other 4xx is the caller's mistake and raises at once with the
server's own message. Servers disagree on structured output and tokenization, so the backend
learns, once per instance, which ``response_format`` and which tokenize endpoint a server accepts.

Soft prompts go to servers that take prompt embeddings (vLLM with ``--enable-prompt-embeds``):
such a request is templated, tokenized and embedded here, from a local copy of the served model's
tokenizer and input embeddings, and sent to ``/completions`` as ``prompt_embeds``, the virtual
tokens first. The server applies no template to embeddings, so the client must.
"""

from __future__ import annotations

import base64
import io
import os
import random
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

from copersona.backends.llm import Completion, LLMBackend, Request

DEFAULT_CONTEXT_WINDOW = 8192
# Alternatives the server reports for the first answer token of a choice request (OpenAI allows up to 20).
TOP_LOGPROBS = 20
_PROBE_TEXT = "How many tokens is this?"
#: Tokenize endpoints (relative to the server root, not ``/v1``) and the body field holding the text.
_TOKENIZE_ENDPOINTS = (
    ("/tokenize", "prompt"),  # vLLM: {"count", "tokens"}
    ("/tokenize", "content"),  # llama.cpp server: {"tokens"}
    ("/extras/tokenize", "input"),  # llama-cpp-python server: {"tokens"}
)


class OpenAIHTTPError(RuntimeError):
    """The server refused a request, or kept failing after every retry."""

    def __init__(self, message: str, status: int | None = None):
        super().__init__(message)
        self.status = status


def _is_transient(status: int, message: str) -> bool:
    """Worth retrying: rate limits and server errors, except a server error about the request's format.

    llama-cpp-python's server answers an unknown ``response_format`` with a 500 that names it; no
    retry will change that answer.
    """
    return (status == 429 or status >= 500) and "response_format" not in message


def _rejects_json_schema(err: OpenAIHTTPError) -> bool:
    """The server refused a ``json_schema`` response format (a 400 or 422, or a 500 that names it)."""
    return err.status in (400, 422) or "response_format" in str(err)


def _server_message(response: httpx.Response) -> str:
    """The error text a server put in its body, whichever of the usual shapes it used."""
    try:
        body = response.json()
    except ValueError:
        return response.text[:500]
    if isinstance(body, dict):
        error = body.get("error", body.get("detail", body))
        if isinstance(error, dict) and "message" in error:
            return str(error["message"])[:500]
        return str(error)[:500]
    return str(body)[:500]


def _sampling(request: Request) -> dict:
    """The decoding fields of a request body, the same for chat and completions."""
    fields = {"temperature": request.temperature, "max_tokens": request.max_tokens, "seed": request.seed}
    if request.stop:
        fields["stop"] = list(request.stop)
    return fields


def _completion(body: dict, text: str | None, started: float) -> Completion:
    usage = body.get("usage") or {}
    return Completion(
        text=text or "",
        prompt_tokens=int(usage.get("prompt_tokens") or 0),
        completion_tokens=int(usage.get("completion_tokens") or 0),
        seconds=time.perf_counter() - started,
    )


class PromptEmbedder:
    """A request as the served model would embed it: chat template, tokens, input embeddings.

    Reads only the tokenizer and the input embedding matrix of a local checkpoint (the one the
    server serves, or its base: LoRA leaves the embeddings alone), never the other weights.

    Shapes: :meth:`embed` returns ``(L + T, H)``: the soft prompt's ``L`` rows, then the
    ``T`` token embeddings of the templated prompt.
    """

    def __init__(self, checkpoint: str | Path):
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        from transformers import AutoTokenizer

        self.checkpoint = Path(checkpoint)
        self.tokenizer = AutoTokenizer.from_pretrained(str(self.checkpoint), local_files_only=True)
        self.table = input_embedding_table(self.checkpoint)

    def embed(self, request: Request):
        import torch

        prompt = self.tokenizer.apply_chat_template(request.message_dicts(), add_generation_prompt=True, tokenize=False)
        ids = self.tokenizer(prompt, add_special_tokens=False)["input_ids"]
        tokens = self.table[torch.tensor(ids, dtype=torch.long)]
        soft = torch.from_numpy(request.soft_prompt.values).to(tokens.dtype)  # type: ignore[union-attr]
        if soft.shape[1] != tokens.shape[1]:
            raise ValueError(
                f"soft prompt width {soft.shape[1]} != {self.checkpoint.name}'s hidden size {tokens.shape[1]}"
            )
        return torch.cat([soft, tokens])


def input_embedding_table(checkpoint: Path):
    """The ``(V, H)`` input embedding matrix of a safetensors checkpoint, found by the model's own layout."""
    import torch
    from accelerate import init_empty_weights
    from safetensors import safe_open
    from transformers import AutoConfig, AutoModelForCausalLM

    with init_empty_weights():  # the architecture on the meta device: it names the tensor, holds no memory
        skeleton = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(str(checkpoint), local_files_only=True))
    layer = skeleton.get_input_embeddings()
    name = next(n for n, module in skeleton.named_modules() if module is layer) + ".weight"
    for shard in sorted(checkpoint.glob("*.safetensors")):
        with safe_open(str(shard), framework="pt") as weights:
            if name in weights.keys():
                return weights.get_tensor(name).to(torch.float32)
    raise FileNotFoundError(f"{checkpoint}: no tensor {name} in its safetensors files")


def encode_prompt_embeds(embeddings) -> str:
    """vLLM's wire format for ``prompt_embeds``: a ``torch.save``d tensor, base64-encoded."""
    import torch

    buffer = io.BytesIO()
    torch.save(embeddings.contiguous(), buffer)
    return base64.b64encode(buffer.getvalue()).decode("ascii")


class OpenAICompatibleBackend(LLMBackend):
    """Chat completions from ``{base_url}/chat/completions``; soft prompts as ``prompt_embeds``.

    ``prompt_embeddings`` is a local checkpoint of the served model (tokenizer and input
    embeddings); with it, requests that carry a soft prompt are sent to ``{base_url}/completions``
    as embeddings (see :class:`PromptEmbedder`).
    """

    def __init__(
        self,
        base_url: str,
        model: str,
        *,
        api_key: str | None = None,
        timeout: float = 60.0,
        max_retries: int = 4,
        backoff: float = 0.5,
        max_concurrency: int = 4,
        context_window: int | None = None,
        prompt_embeddings: str | Path | None = None,
    ):
        self.base_url = base_url.rstrip("/")
        self.model = model
        self.model_id = f"openai:{model}@{self.base_url}"
        self.max_retries = max_retries
        self.backoff = backoff
        #: Caveats a report should mention, e.g. that token counts are estimates.
        self.notes: list[str] = []
        api_key = api_key or os.environ.get("OPENAI_API_KEY")
        self._client = httpx.Client(
            timeout=httpx.Timeout(timeout),
            headers={"Authorization": f"Bearer {api_key}"} if api_key else {},
            limits=httpx.Limits(max_connections=max_concurrency, max_keepalive_connections=max_concurrency),
        )
        self._pool = ThreadPoolExecutor(max_workers=max_concurrency, thread_name_prefix="openai-http")
        #: "json_schema", downgraded for good to "json_object" once the server has rejected the former.
        self.structured_format = "json_schema"
        #: Whether choice requests are scored from ``top_logprobs``; off for good once the server refuses.
        self.gives_logprobs = True
        self._tokenize: tuple[str, str] | None = None  # (url, text field), found on first use
        self._tokenize_probed = False
        served = None if context_window else self._served_context_window(min(timeout, 10.0))
        self.context_window = context_window or served or DEFAULT_CONTEXT_WINDOW
        self.prompt_embedder = PromptEmbedder(prompt_embeddings) if prompt_embeddings is not None else None
        self.supports_soft_prompts = self.prompt_embedder is not None

    # -- generation --------------------------------------------------------------------------
    def complete(self, requests: list[Request]) -> list[Completion]:
        return list(self._pool.map(self._complete_one, requests))

    def _complete_one(self, request: Request) -> Completion:
        if request.soft_prompt is not None:
            return self._complete_embedded(request)
        started = time.perf_counter()
        try:
            body = self._post_with_retries("/chat/completions", self._payload(request, self.structured_format))
        except OpenAIHTTPError as err:
            if not (request.json_schema and self.structured_format == "json_schema" and _rejects_json_schema(err)):
                raise
            body = self._post_with_retries("/chat/completions", self._payload(request, "json_object"))
            self.structured_format = "json_object"  # the fallback worked: use it from now on
        return _completion(body, body["choices"][0]["message"].get("content"), started)

    def choice_logprobs(self, requests: list[Request]) -> list[dict[str, float] | None]:
        """One-token answers with ``top_logprobs``; None for all once the server has refused them
        (or answered without them), and the client falls back to constrained output. A choice not
        among the alternatives reported gets the least likely one's log-probability (an upper bound)."""
        return list(self._pool.map(self._choice_logprobs, requests))

    def _choice_logprobs(self, request: Request) -> dict[str, float] | None:
        if not self.gives_logprobs or request.soft_prompt is not None:
            return None
        payload = {
            "model": self.model,
            "messages": request.message_dicts(),
            "max_tokens": 1,
            "temperature": 0.0,
            "seed": request.seed,
            "logprobs": True,
            "top_logprobs": TOP_LOGPROBS,
        }
        try:
            body = self._post_with_retries("/chat/completions", payload)
            tokens = body["choices"][0]["logprobs"]["content"][0]["top_logprobs"]
        except OpenAIHTTPError as err:
            if err.status is None or err.status >= 500:
                raise
            tokens = None  # a 4xx: the server does not take logprobs
        except (KeyError, IndexError, TypeError):
            tokens = None
        if not tokens:
            self.gives_logprobs = False
            self.notes.append("the server gives no log-probabilities: choice requests use constrained output")
            return None
        found: dict[str, float] = {}
        for entry in tokens:
            token = str(entry.get("token", "")).strip()
            if token in request.choices and token not in found:
                found[token] = float(entry["logprob"])
        # A choice outside the top alternatives is at most as likely as the least likely one shown.
        floor = min(float(entry["logprob"]) for entry in tokens)
        return {choice: found.get(choice, floor) for choice in request.choices}

    def _complete_embedded(self, request: Request) -> Completion:
        """A soft-prompt request through the completions endpoint, as the whole prompt's embeddings."""
        if self.prompt_embedder is None:
            raise ValueError(f"{self.model_id}: soft prompts need prompt_embeddings (a local copy of the model)")
        started = time.perf_counter()
        embeds = encode_prompt_embeds(self.prompt_embedder.embed(request))
        payload = {"model": self.model, "prompt_embeds": embeds, **_sampling(request)}
        body = self._post_with_retries("/completions", payload)
        return _completion(body, body["choices"][0].get("text"), started)

    def _payload(self, request: Request, structured_format: str) -> dict:
        payload: dict = {"model": self.model, "messages": request.message_dicts(), **_sampling(request)}
        schema = request.schema_dict()
        if schema is not None:
            if structured_format == "json_schema":
                payload["response_format"] = {
                    "type": "json_schema",
                    "json_schema": {"name": "output", "schema": schema, "strict": True},
                }
            else:
                # llama.cpp servers constrain json_object by an attached schema; others ignore the key.
                payload["response_format"] = {"type": "json_object", "schema": schema}
        return payload

    def _post_with_retries(self, path: str, payload: dict) -> dict:
        url = self.base_url + path
        last_error = ""
        for attempt in range(self.max_retries + 1):
            if attempt:
                time.sleep(self.backoff * 2 ** (attempt - 1) * random.uniform(0.5, 1.5))
            try:
                response = self._client.post(url, json=payload)
            except httpx.TransportError as err:  # connection refused or reset, timeouts
                last_error = f"{type(err).__name__}: {err}"
                continue
            if response.is_success:
                return response.json()
            message = f"{url} answered {response.status_code}: {_server_message(response)}"
            if not _is_transient(response.status_code, message):
                raise OpenAIHTTPError(message, response.status_code)
            last_error = message
        raise OpenAIHTTPError(f"{url} failed after {self.max_retries + 1} attempts; last error: {last_error}")

    # -- server facts ------------------------------------------------------------------------
    def _served_context_window(self, timeout: float) -> int | None:
        """``max_model_len`` from ``GET /models`` (vLLM reports it); None where a server does not."""
        try:
            response = self._client.get(self.base_url + "/models", timeout=timeout)
            models = response.json().get("data", []) if response.is_success else []
        except (httpx.HTTPError, ValueError):
            return None
        for entry in models:
            if entry.get("id") == self.model and entry.get("max_model_len"):
                return int(entry["max_model_len"])
        return None

    def _tokenize_count(self, url: str, text_field: str, text: str) -> int | None:
        """Tokens of ``text`` by one tokenize endpoint, or None if it does not answer in a known shape."""
        try:
            response = self._client.post(url, json={"model": self.model, text_field: text, "add_special_tokens": False})
            data = response.json() if response.is_success else None
        except (httpx.HTTPError, ValueError):
            return None
        if not isinstance(data, dict):
            return None
        if isinstance(data.get("tokens"), list):
            return len(data["tokens"])
        return int(data["count"]) if isinstance(data.get("count"), int) else None

    def _find_tokenize(self) -> None:
        """Probe the known endpoints once; the first to count a non-empty text is the server's own."""
        self._tokenize_probed = True
        root = self.base_url.removesuffix("/v1")
        for path, text_field in _TOKENIZE_ENDPOINTS:
            # A llama.cpp server answers a vLLM-shaped body with zero tokens, hence "non-empty".
            if self._tokenize_count(root + path, text_field, _PROBE_TEXT):
                self._tokenize = (root + path, text_field)
                return
        self.notes.append("token counts are estimated as characters / 4: the server has no tokenize endpoint")

    def count_tokens(self, text: str) -> int:
        if not text:
            return 0
        if not self._tokenize_probed:
            self._find_tokenize()
        if self._tokenize is not None:
            count = self._tokenize_count(*self._tokenize, text)
            if count is not None:
                return count
        return max(1, len(text) // 4)

    def close(self) -> None:
        self._pool.shutdown(wait=True)
        self._client.close()
