"""The LLM family: one small abstract backend, and the cached, validating client every stage uses.

A backend only turns a batch of :class:`Request` into :class:`Completion` (constrained by a JSON
schema where it can). :class:`LLM` adds what every backend needs the same way: the store-backed
cache (a rerun costs nothing), structured output validated against a pydantic model with retries,
and counters (calls, cache hits, tokens, failures) for the run log.
"""

from __future__ import annotations

import hashlib
import json
import re
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields, replace
from typing import TYPE_CHECKING, Generic, TypeVar

import numpy as np
from pydantic import BaseModel, ValidationError

if TYPE_CHECKING:
    from copersona.store import Store

Message = dict[str, str]  # {"role": "system" | "user" | "assistant", "content": ...}
T = TypeVar("T", bound=BaseModel)
TextSink = Callable[[str], None]  # receives an answer's text piece by piece as it is generated


@dataclass(frozen=True)
class SoftPrompt:
    """Virtual token embeddings ``(L, H)`` placed before a request's prompt (a trained personalizer's).

    ``key`` names them (model and user) in messages; cache keys use :attr:`digest`, a hash of the
    values themselves, so a retrained personalizer never reuses an answer made with older values.
    """

    key: str
    values: np.ndarray = field(compare=False, hash=False, repr=False)

    @property
    def digest(self) -> str:
        """sha256 of the shape and the float32 values."""
        values = np.ascontiguousarray(self.values, dtype=np.float32)
        return hashlib.sha256(f"{values.shape}".encode() + values.tobytes()).hexdigest()


@dataclass(frozen=True)
class Request:
    """One generation: chat messages and decoding parameters; ``json_schema`` constrains the output."""

    messages: tuple[tuple[str, str], ...]
    temperature: float = 0.8
    max_tokens: int = 256
    seed: int = 0
    stop: tuple[str, ...] = ()
    json_schema: str | None = None  # JSON text, so the request stays hashable
    soft_prompt: SoftPrompt | None = None  # only backends with supports_soft_prompts take one
    choices: tuple[str, ...] = ()  # a choice request: the answers scored (see LLM.choose), not generated

    def choice_schema(self) -> dict:
        """The constrained-output fallback of a choice request: an object holding one of the choices."""
        return {
            "type": "object",
            "properties": {"answer": {"type": "string", "enum": list(self.choices)}},
            "required": ["answer"],
        }

    @classmethod
    def chat(cls, messages: list[Message], **params) -> Request:
        schema = params.pop("json_schema", None)
        if isinstance(schema, dict):
            schema = json.dumps(schema, sort_keys=True)
        return cls(
            messages=tuple((m["role"], m["content"]) for m in messages),
            json_schema=schema,
            stop=tuple(params.pop("stop", ())),
            choices=tuple(params.pop("choices", ())),
            **params,
        )

    def message_dicts(self) -> list[Message]:
        return [{"role": role, "content": content} for role, content in self.messages]

    def schema_dict(self) -> dict | None:
        return json.loads(self.json_schema) if self.json_schema else None

    def to_dict(self) -> dict:
        """JSON-ready; a soft prompt appears by the digest of its values, and choices as a list (neither
        at all when absent, so generation requests keep the cache keys they always had)."""
        optional = ("soft_prompt", "choices")
        record = {f.name: getattr(self, f.name) for f in fields(self) if f.name not in optional}
        record["messages"] = [list(m) for m in self.messages]
        record["stop"] = list(self.stop)
        if self.choices:
            record["choices"] = list(self.choices)
        if self.soft_prompt is not None:
            record["soft_prompt"] = self.soft_prompt.digest
        return record


@dataclass
class Completion:
    text: str
    prompt_tokens: int = 0
    completion_tokens: int = 0
    seconds: float = 0.0
    cached: bool = False


class LLMBackend(ABC):
    """What a model server or runtime must provide."""

    #: Identifies the model and backend in cache keys and reports, e.g. ``llamacpp:SmolLM2-135M...``.
    model_id: str
    #: The model's context window in tokens.
    context_window: int
    #: Whether requests may carry a :class:`SoftPrompt` (it needs the model's embedding layer).
    supports_soft_prompts: bool = False

    @abstractmethod
    def complete(self, requests: list[Request]) -> list[Completion]:
        """Generate one completion per request, in order."""

    @abstractmethod
    def count_tokens(self, text: str) -> int:
        """Tokens of ``text`` under the model's own tokenizer."""

    def choice_logprobs(self, requests: list[Request]) -> list[dict[str, float] | None]:
        """Per request, the log-probability of each of its ``choices`` as the answer's first token,
        or None where this backend cannot tell (the client then asks for constrained output).
        Choices missing from what the model reports are left out of the dict."""
        return [None] * len(requests)

    def stream(self, request: Request, on_text: TextSink) -> Completion:
        """One completion, its text passed to ``on_text`` as it is generated. A backend that cannot
        stream passes the whole text once it is done."""
        completion = self.complete([request])[0]
        on_text(completion.text)
        return completion

    @property
    def special_tokens(self) -> tuple[str, ...]:
        """The model's own control tokens as text (turn markers and the like), for removal from
        untrusted text; a served model whose tokenizer is not visible here has none listed."""
        return ()

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release model memory or connections."""


@dataclass
class Structured(Generic[T]):
    """A validated object, or the failure that remained after every attempt."""

    value: T | None
    raw: str
    attempts: int
    error: str = ""

    @property
    def ok(self) -> bool:
        return self.value is not None


@dataclass
class Choice:
    """A choice request's answer: a probability per choice (in the request's order), and how it was read.

    ``source``: "logprobs" (the first answer token's probabilities, renormalized over the choices),
    "constrained" (one answer under a JSON schema: all mass on it), or "fallback" (no usable answer:
    uniform, counted in :class:`LLMStats`).
    """

    probabilities: tuple[float, ...]
    source: str
    cached: bool = False

    def to_text(self) -> str:
        return json.dumps({"probabilities": list(self.probabilities), "source": self.source})

    @classmethod
    def from_text(cls, text: str, *, cached: bool = False) -> Choice:
        raw = json.loads(text)
        return cls(tuple(float(p) for p in raw["probabilities"]), raw["source"], cached)

    @classmethod
    def from_logprobs(cls, logprobs: dict[str, float], choices: tuple[str, ...]) -> Choice | None:
        """Renormalized over the choices; None when the model gave none of them any probability."""
        found = np.array([logprobs.get(c, -np.inf) for c in choices], dtype=np.float64)
        if not np.isfinite(found).any():
            return None
        weights = np.exp(found - found[np.isfinite(found)].max())
        return cls(tuple(float(w) for w in weights / weights.sum()), "logprobs")


@dataclass
class LLMStats:
    calls: int = 0
    cache_hits: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    seconds: float = 0.0
    structured_failures: int = 0
    structured_retries: int = 0
    choice_fallbacks: int = 0  # choice requests answered neither by log-probabilities nor by constrained output
    failure_samples: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)


_FENCE = re.compile(r"^```(?:json)?\s*|\s*```$", re.MULTILINE)


def extract_json(text: str) -> object:
    """Parse the JSON object in a model's answer, tolerating code fences and text around it."""
    stripped = _FENCE.sub("", text.strip())
    try:
        return json.loads(stripped)
    except json.JSONDecodeError:
        start, end = stripped.find("{"), stripped.rfind("}")
        if start == -1 or end <= start:
            raise
        return json.loads(stripped[start : end + 1])


class LLM:
    """A backend with a cache in the store, structured output and counters."""

    def __init__(self, backend: LLMBackend, cache: Store | None = None):
        self.backend = backend
        self.cache = cache
        self.stats = LLMStats()

    @property
    def model_id(self) -> str:
        return self.backend.model_id

    def cache_key(self, request: Request) -> str:
        payload = json.dumps({"model": self.backend.model_id, **request.to_dict()}, sort_keys=True)
        return hashlib.sha256(payload.encode()).hexdigest()

    def _cached(self, requests: list[Request]) -> list[dict | None]:
        """Each request's cached answer (None where there is none), counting the hits."""
        hits = [self.cache.cache_get(self.cache_key(r)) if self.cache is not None else None for r in requests]
        self.stats.cache_hits += sum(hit is not None for hit in hits)
        return hits

    def generate(self, requests: list[Request]) -> list[Completion]:
        """Completions for ``requests``; cached ones are read back, the rest go to the backend in one batch."""
        results: list[Completion | None] = [
            None if hit is None else Completion(**hit, cached=True) for hit in self._cached(requests)
        ]
        missing = [i for i, result in enumerate(results) if result is None]
        self._check_soft_prompts([requests[i] for i in missing])
        if missing:
            started = time.perf_counter()
            fresh = self.backend.complete([requests[i] for i in missing])
            elapsed = time.perf_counter() - started
            for i, completion in zip(missing, fresh):
                completion.seconds = completion.seconds or elapsed / len(missing)
                results[i] = completion
                self._record(requests[i], completion)
        return results  # type: ignore[return-value]

    def stream(self, request: Request, on_text: TextSink) -> Completion:
        """One completion, its text passed to ``on_text`` as generated (a cached answer: at once)."""
        hit = self.cache.cache_get(self.cache_key(request)) if self.cache is not None else None
        if hit is not None:
            self.stats.cache_hits += 1
            on_text(hit["text"])
            return Completion(**hit, cached=True)
        self._check_soft_prompts([request])
        started = time.perf_counter()
        completion = self.backend.stream(request, on_text)
        completion.seconds = completion.seconds or time.perf_counter() - started
        self._record(request, completion)
        return completion

    def choose(self, requests: list[Request]) -> list[Choice]:
        """A probability per choice for each choice request (``Request.choices``), cached like answers.

        Log-probabilities of the first answer token where the backend gives them; otherwise one
        greedy answer constrained to the choices by a JSON schema; otherwise (no valid answer) the
        uniform distribution, counted in ``stats.choice_fallbacks``.
        """
        if any(not r.choices for r in requests):
            raise ValueError("choose() takes choice requests only (Request.choices set)")
        results: list[Choice | None] = [
            None if hit is None else Choice.from_text(hit["text"], cached=True) for hit in self._cached(requests)
        ]
        missing = [i for i, result in enumerate(results) if result is None]
        if not missing:
            return results  # type: ignore[return-value]
        started = time.perf_counter()
        asked = [requests[i] for i in missing]
        for i, logprobs in zip(missing, self.backend.choice_logprobs(asked)):
            if logprobs is not None:
                results[i] = Choice.from_logprobs(logprobs, requests[i].choices)
        constrained = [i for i in missing if results[i] is None]
        if constrained:
            fallback_requests = [
                replace(requests[i], choices=(), json_schema=json.dumps(requests[i].choice_schema()), temperature=0.0)
                for i in constrained
            ]
            for i, completion in zip(constrained, self.backend.complete(fallback_requests)):
                results[i] = self._constrained_choice(completion.text, requests[i].choices)
        elapsed = time.perf_counter() - started
        for i in missing:
            self._record(requests[i], Completion(results[i].to_text(), seconds=elapsed / len(missing)))
        return results  # type: ignore[return-value]

    def _constrained_choice(self, text: str, choices: tuple[str, ...]) -> Choice:
        try:
            answer = extract_json(text)
            index = choices.index(str(answer["answer"]).strip()) if isinstance(answer, dict) else -1
        except (json.JSONDecodeError, ValueError, KeyError):
            index = -1
        if index < 0:
            self.stats.choice_fallbacks += 1
            if len(self.stats.failure_samples) < 5:
                self.stats.failure_samples.append(f"choice: no valid answer among {list(choices)}: {text[:200]!r}")
            return Choice(tuple(1 / len(choices) for _ in choices), "fallback")
        return Choice(tuple(float(j == index) for j in range(len(choices))), "constrained")

    def _check_soft_prompts(self, requests: list[Request]) -> None:
        if not self.backend.supports_soft_prompts and any(r.soft_prompt is not None for r in requests):
            raise ValueError(
                f"{self.backend.model_id} cannot take soft prompts; methods with a personalizer generate "
                "through llama.cpp, transformers, or a server that takes prompt embeddings (openai: with "
                "prompt_embeddings)"
            )

    def _record(self, request: Request, completion: Completion) -> None:
        """Count a fresh completion and cache it."""
        self.stats.calls += 1
        self.stats.prompt_tokens += completion.prompt_tokens
        self.stats.completion_tokens += completion.completion_tokens
        self.stats.seconds += completion.seconds
        if self.cache is not None:
            self.cache.cache_put(
                self.cache_key(request),
                self.backend.model_id,
                request.to_dict(),
                completion.text,
                completion.prompt_tokens,
                completion.completion_tokens,
                completion.seconds,
            )

    def generate_structured(self, messages: list[Message], model: type[T], **params) -> Structured[T]:
        """One prompt's answer as an object of ``model``; see :meth:`generate_structured_batch`."""
        json_schema = params.pop("json_schema", None)
        return self.generate_structured_batch([messages], model, json_schemas=[json_schema], **params)[0]

    def generate_structured_batch(
        self,
        prompts: list[list[Message]],
        model: type[T],
        *,
        temperature: float = 0.2,
        max_tokens: int = 1024,
        retries: int = 2,
        seed: int = 0,
        json_schemas: list[dict | None] | None = None,
    ) -> list[Structured[T]]:
        """Objects of ``model`` parsed from the answers to ``prompts``, in order.

        Each round sends every prompt still without a valid answer to the backend as one batch
        (so an HTTP backend runs them concurrently); a retry samples with a new seed. A prompt's
        JSON schema (default: the model's own) goes to the backend for constrained decoding;
        validation always uses the pydantic model, so a backend without constraints works too.
        Failures are returned, never raised: the caller records its fallback.
        """
        schemas = [s or model.model_json_schema() for s in (json_schemas or [None] * len(prompts))]
        results: list[Structured[T] | None] = [None] * len(prompts)
        raws, errors = [""] * len(prompts), [""] * len(prompts)
        for attempt in range(retries + 1):
            pending = [i for i, r in enumerate(results) if r is None]
            if not pending:
                break
            if attempt:
                self.stats.structured_retries += len(pending)
            requests = [
                Request.chat(
                    prompts[i],
                    temperature=temperature,
                    max_tokens=max_tokens,
                    seed=seed + attempt,
                    json_schema=schemas[i],
                )
                for i in pending
            ]
            for i, completion in zip(pending, self.generate(requests)):
                raws[i] = completion.text
                try:
                    value = model.model_validate(extract_json(completion.text))
                except (json.JSONDecodeError, ValidationError, ValueError) as err:
                    errors[i] = f"{type(err).__name__}: {str(err)[:300]}"
                    continue
                results[i] = Structured(value=value, raw=completion.text, attempts=attempt + 1)
        for i, result in enumerate(results):
            if result is None:
                self.stats.structured_failures += 1
                if len(self.stats.failure_samples) < 5:
                    self.stats.failure_samples.append(errors[i])
                results[i] = Structured(value=None, raw=raws[i], attempts=retries + 1, error=errors[i])
        return results  # type: ignore[return-value]
