"""Any OpenAI-compatible chat server over HTTP: vLLM, the llama.cpp servers, Ollama, hosted APIs.

Requests in a batch run concurrently, at most ``max_concurrency`` at a time, so a batching server
(vLLM) stays busy. Transient failures (connection errors, timeouts, 429, 5xx) are retried with
exponential backoff and jitter; any other 4xx is the caller's mistake and raises at once with the
server's own message. Servers disagree on structured output and tokenization, so the backend
learns, once per instance, which ``response_format`` and which tokenize endpoint a server accepts.
"""

from __future__ import annotations

import os
import random
import time
from concurrent.futures import ThreadPoolExecutor

import httpx

from copersona.backends.llm import Completion, LLMBackend, Request

DEFAULT_CONTEXT_WINDOW = 8192
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


class OpenAICompatibleBackend(LLMBackend):
    """Chat completions from ``{base_url}/chat/completions``."""

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
        self._tokenize: tuple[str, str] | None = None  # (url, text field), found on first use
        self._tokenize_probed = False
        served = None if context_window else self._served_context_window(min(timeout, 10.0))
        self.context_window = context_window or served or DEFAULT_CONTEXT_WINDOW

    # -- generation --------------------------------------------------------------------------
    def complete(self, requests: list[Request]) -> list[Completion]:
        return list(self._pool.map(self._complete_one, requests))

    def _complete_one(self, request: Request) -> Completion:
        started = time.perf_counter()
        try:
            body = self._post_with_retries("/chat/completions", self._payload(request, self.structured_format))
        except OpenAIHTTPError as err:
            if not (request.json_schema and self.structured_format == "json_schema" and _rejects_json_schema(err)):
                raise
            body = self._post_with_retries("/chat/completions", self._payload(request, "json_object"))
            self.structured_format = "json_object"  # the fallback worked: use it from now on
        usage = body.get("usage") or {}
        return Completion(
            text=body["choices"][0]["message"].get("content") or "",
            prompt_tokens=int(usage.get("prompt_tokens") or 0),
            completion_tokens=int(usage.get("completion_tokens") or 0),
            seconds=time.perf_counter() - started,
        )

    def _payload(self, request: Request, structured_format: str) -> dict:
        payload: dict = {
            "model": self.model,
            "messages": request.message_dicts(),
            "temperature": request.temperature,
            "max_tokens": request.max_tokens,
            "seed": request.seed,
        }
        if request.stop:
            payload["stop"] = list(request.stop)
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
