"""The HTTP API: OpenAI-compatible chat completions where ``model`` names a method and ``user`` the
persona, plus read access to personas.

* ``POST /v1/chat/completions``: ``metadata.item_id`` (with optional ``rating`` and ``title``)
  asks for the user's review of an item; otherwise the last user message is a free request,
  answered in the user's voice with their retrieved history and peer facet context. ``stream``
  sends server-sent events; ``explain`` (an extension field) returns the exact input the method
  built. ``usage`` counts the generator's tokens.
* ``POST /v1/users/{id}/reviews`` adds reviews (of an existing or a new user) without a rebuild.
* ``GET /v1/models``; ``GET /v1/users``, ``/v1/users/{id}``, ``/v1/users/{id}/peers``;
  ``DELETE /v1/users/{id}`` forgets a user (:mod:`copersona.live.erase`) and returns what went.
* ``GET /`` is a page to explore the store (users, facets, peers, writing with any method); it and
  ``GET /health`` are open; everything else needs a bearer token from the keys file when one is given.

Errors use OpenAI's shape (``{"error": {"message", "type", "param", "code"}}``) with a 4xx status:
a client mistake is never a 500, and no traceback reaches a client.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from importlib import resources
from pathlib import Path
from typing import Annotated, Literal

from fastapi import Depends, FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from copersona.config import ServeConfig
from copersona.data.loaders import MAX_TEXT_CHARS
from copersona.data.records import Interaction
from copersona.generate import UnknownUser
from copersona.serve.service import Answer, PersonaService


class ApiError(Exception):
    """A client-facing error: status, message and OpenAI's error type and code."""

    def __init__(self, status: int, message: str, kind: str = "invalid_request_error", code: str | None = None):
        super().__init__(message)
        self.status, self.message, self.kind, self.code = status, message, kind, code


def _error(status: int, message: str, kind: str = "invalid_request_error", code: str | None = None) -> JSONResponse:
    return JSONResponse({"error": {"message": message, "type": kind, "param": None, "code": code}}, status_code=status)


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="allow")

    role: Literal["system", "user", "assistant", "tool", "developer"]
    content: str | list[dict] | None = None

    def text(self) -> str:
        if isinstance(self.content, list):  # OpenAI content parts: only text parts carry words
            return "\n".join(str(part.get("text", "")) for part in self.content if part.get("type") == "text")
        return self.content or ""


class StreamOptions(BaseModel):
    include_usage: bool = False


class ChatRequest(BaseModel):
    """The OpenAI chat request; unknown OpenAI fields are accepted and ignored."""

    model_config = ConfigDict(extra="allow")

    model: str = Field(min_length=1, max_length=200)
    messages: list[ChatMessage] = Field(default_factory=list, max_length=256)
    user: str = Field(min_length=1, max_length=500, description="The persona: a user id of the store.")
    metadata: dict[str, str] | None = Field(
        default=None, description="item_id (a review of that item), rating and title: the review task."
    )
    max_tokens: int | None = Field(default=None, ge=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    temperature: float | None = Field(default=None, ge=0, le=2)
    seed: int | None = Field(default=None, ge=0, le=2**31 - 1)
    stream: bool = False
    stream_options: StreamOptions | None = None
    explain: bool = Field(default=False, description="Return the exact input the method built.")


class NewReview(BaseModel):
    item_id: str = Field(min_length=1, max_length=200)
    text: str = Field(min_length=1, max_length=MAX_TEXT_CHARS)
    rating: float | None = Field(default=None, ge=0, le=10)
    title: str = Field(default="", max_length=500)
    item_title: str = Field(default="", max_length=500, description="Default: the store's title of the item.")
    timestamp: int | None = Field(default=None, ge=0, le=2**40, description="Unix seconds (default: now).")


class NewReviews(BaseModel):
    reviews: list[NewReview] = Field(min_length=1, max_length=1000)


def _client_error(err: Exception) -> ApiError:
    """A 4xx for what the client can fix: an unknown user (404) or a bad value (400)."""
    if isinstance(err, UnknownUser):
        return ApiError(404, str(err).split(": ", 1)[-1], code="user_not_found")
    return ApiError(400, str(err))


class _Reply:
    """One chat completion's response, whole or as server-sent chunks, in OpenAI's shapes."""

    def __init__(self, model: str, include_usage: bool):
        self.model, self.include_usage = model, include_usage
        self.id = f"chatcmpl-{uuid.uuid4().hex}"
        self.created = int(time.time())

    @staticmethod
    def usage(answer: Answer) -> dict:
        total = answer.prompt_tokens + answer.completion_tokens
        return {
            "prompt_tokens": answer.prompt_tokens,
            "completion_tokens": answer.completion_tokens,
            "total_tokens": total,
        }

    @staticmethod
    def extension(answer: Answer) -> dict:
        extension = {"generator": answer.generator, "cached": answer.cached, "notes": answer.notes}
        if answer.explain is not None:
            extension["explain"] = answer.explain
        return extension

    def whole(self, answer: Answer) -> dict:
        message = {"role": "assistant", "content": answer.text}
        return {
            "id": self.id,
            "object": "chat.completion",
            "created": self.created,
            "model": self.model,
            "choices": [{"index": 0, "message": message, "finish_reason": "stop"}],
            "usage": self.usage(answer),
            "copersona": self.extension(answer),
        }

    def chunk(self, delta: dict | None, finish: str | None = None, **extra) -> str:
        body = {"id": self.id, "object": "chat.completion.chunk", "created": self.created, "model": self.model}
        choices = [] if delta is None else [{"index": 0, "delta": delta, "finish_reason": finish}]
        return f"data: {json.dumps({**body, 'choices': choices, **extra})}\n\n"


async def _streamed(service, keys, caller: str, model: str, user: str, arguments: dict, reply: _Reply):
    """Stream the answer as it is generated. Errors before the first piece (an unknown user, a
    bad value) are still a plain 4xx; the key's in-flight slot is held until the stream ends."""
    loop = asyncio.get_running_loop()
    pieces: asyncio.Queue[str] = asyncio.Queue()
    keys.enter(caller)

    def on_text(piece: str) -> None:  # runs on the worker thread; the put is ordered before the task's end
        loop.call_soon_threadsafe(pieces.put_nowait, piece)

    task = asyncio.ensure_future(service.call(service.answer, model, user, **arguments, on_text=on_text))
    first = asyncio.ensure_future(pieces.get())
    await asyncio.wait({task, first}, return_when=asyncio.FIRST_COMPLETED)
    if task.done() and task.exception() is not None and not first.done():
        first.cancel()
        keys.leave(caller)
        err = task.exception()
        if isinstance(err, (UnknownUser, ValueError)):
            raise _client_error(err)
        raise err

    async def events() -> AsyncIterator[str]:
        try:
            yield reply.chunk({"role": "assistant", "content": ""})
            waiting = first
            while True:
                await asyncio.wait({task, waiting}, return_when=asyncio.FIRST_COMPLETED)
                if waiting.done():
                    yield reply.chunk({"content": waiting.result()})
                    waiting = asyncio.ensure_future(pieces.get())
                elif pieces.empty():  # the task is done and every piece was sent
                    waiting.cancel()
                    break
                else:
                    await asyncio.sleep(0)  # let the pending get take the queued piece
            if task.exception() is not None:  # after text was sent: the stream ends with an error event
                message = f"generation failed ({type(task.exception()).__name__})"
                yield f"data: {json.dumps({'error': {'message': message, 'type': 'server_error'}})}\n\n"
            else:
                answer = task.result()
                yield reply.chunk({}, "stop", copersona=reply.extension(answer))
                if reply.include_usage:  # OpenAI's last chunk under stream_options.include_usage
                    yield reply.chunk(None, usage=reply.usage(answer))
            yield "data: [DONE]\n\n"
        finally:
            keys.leave(caller)

    return StreamingResponse(events(), media_type="text/event-stream")


def _review_task(metadata: dict[str, str] | None) -> tuple[str | None, float | None, str | None]:
    if not metadata or not metadata.get("item_id"):
        return None, None, None
    rating = metadata.get("rating")
    try:
        value = float(rating) if rating not in (None, "") else None
    except ValueError:
        raise ApiError(400, f"metadata.rating: expected a number, got {rating!r}") from None
    if value is not None and value != value:  # NaN
        raise ApiError(400, "metadata.rating: expected a number, got NaN")
    return metadata["item_id"], value, metadata.get("title")


class KeyLimits:
    """Bearer tokens from a file (one per line) and the requests each has in flight."""

    def __init__(self, keys: list[str] | None, per_key: int):
        self.keys = keys
        self.per_key = per_key
        self.in_flight: Counter[str] = Counter()

    @classmethod
    def read(cls, path: Path | None, per_key: int) -> KeyLimits:
        if path is None:
            return cls(None, per_key)
        keys = [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
        if not keys:
            raise ValueError(f"{path}: no API keys (one bearer token per line)")
        return cls(keys, per_key)

    def authorize(self, header: str | None) -> str:
        if self.keys is None:
            return "anonymous"
        scheme, _, token = (header or "").partition(" ")
        if scheme.lower() != "bearer" or not any(secrets.compare_digest(token.strip(), k) for k in self.keys):
            raise ApiError(401, "missing or invalid API key (Authorization: Bearer KEY)", "authentication_error")
        return token.strip()

    def enter(self, key: str) -> None:
        if self.in_flight[key] >= self.per_key:
            message = f"too many requests in flight for this key (at most {self.per_key})"
            raise ApiError(429, message, "rate_limit_error")
        self.in_flight[key] += 1

    def leave(self, key: str) -> None:
        self.in_flight[key] -= 1


class BodyLimit:
    """ASGI middleware: a request body over ``limit`` bytes gets 413 before the app reads it all."""

    def __init__(self, app, limit: int):
        self.app, self.limit = app, limit

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        length = dict(scope.get("headers", [])).get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.limit:
            return await _error(413, f"request body over {self.limit} bytes")(scope, receive, send)
        seen = 0

        async def limited():
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.limit:
                raise _TooLarge
            return message

        try:
            await self.app(scope, limited, send)
        except _TooLarge:
            await _error(413, f"request body over {self.limit} bytes")(scope, receive, send)


class _TooLarge(Exception):
    pass


def _caller(request: Request) -> str:
    """The API key a request authenticates with (401 when keys are configured and it has none)."""
    return request.app.state.keys.authorize(request.headers.get("authorization"))


Caller = Annotated[str, Depends(_caller)]


def create_app(service: PersonaService, settings: ServeConfig, keys: KeyLimits) -> BodyLimit:
    """The ASGI application over an opened ``service`` (closed at shutdown): the FastAPI app
    behind the request-size limit."""

    @asynccontextmanager
    async def lifespan(_app: FastAPI):
        yield
        service.close()

    app = FastAPI(title="CoPersona", version="1", lifespan=lifespan)
    app.state.keys = keys

    @app.exception_handler(ApiError)
    async def api_error(_request: Request, err: ApiError) -> JSONResponse:
        return _error(err.status, err.message, err.kind, err.code)

    @app.exception_handler(RequestValidationError)
    async def invalid(_request: Request, err: RequestValidationError) -> JSONResponse:
        first = err.errors()[0] if err.errors() else {}
        where = ".".join(str(p) for p in first.get("loc", ()) if p != "body")
        return _error(400, f"{where}: {first.get('msg', 'invalid request')}" if where else "invalid request")

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_request: Request, err: StarletteHTTPException) -> JSONResponse:
        return _error(err.status_code, str(err.detail))

    @app.exception_handler(Exception)
    async def unexpected(_request: Request, err: Exception) -> JSONResponse:
        # Reached only by a bug: the client gets a line, not a traceback.
        return _error(500, f"internal error ({type(err).__name__}); this is a bug", "server_error")

    async def guarded(caller: str, function, *args, **kwargs):
        """Run a service call for ``caller`` within its in-flight limit; map our errors to 4xx."""
        keys.enter(caller)
        try:
            return await service.call(function, *args, **kwargs)
        except (UnknownUser, ValueError) as err:
            raise _client_error(err) from None
        finally:
            keys.leave(caller)

    @app.get("/", include_in_schema=False)
    async def page() -> HTMLResponse:
        # The page holds no data; it asks the API (with the key typed into it) for everything.
        return HTMLResponse(resources.files("copersona.serve").joinpath("page.html").read_text(encoding="utf-8"))

    @app.get("/health")
    async def health() -> dict:
        return {"status": "ok"}

    @app.get("/v1/models")
    async def models(caller: Caller) -> dict:  # the key is checked; the list needs no worker
        rows = service.models
        return {
            "object": "list",
            "data": [{"id": r["id"], "object": "model", "created": 0, "owned_by": "copersona", **r} for r in rows],
        }

    @app.get("/v1/users")
    async def users(
        caller: Caller, offset: Annotated[int, Query(ge=0)] = 0, limit: Annotated[int, Query(ge=1)] = 50
    ) -> dict:
        return await guarded(caller, service.users, offset, min(limit, settings.page_size))

    @app.get("/v1/users/{user_id}")
    async def user(caller: Caller, user_id: str, neighbours: Annotated[int, Query(ge=0, le=100)] = 5) -> dict:
        return await guarded(caller, service.persona, user_id, neighbours)

    @app.get("/v1/users/{user_id}/peers")
    async def peers(caller: Caller, user_id: str, limit: Annotated[int, Query(ge=0, le=100)] = 5) -> dict:
        return await guarded(caller, service.peers, user_id, limit)

    @app.post("/v1/users/{user_id}/reviews")
    async def post_reviews(caller: Caller, user_id: str, body: NewReviews) -> dict:
        now = int(time.time())
        reviews = [
            Interaction(
                user_id=user_id,
                item_id=r.item_id,
                timestamp=r.timestamp if r.timestamp is not None else now,
                rating=r.rating,
                review_title=r.title,
                text=r.text,
                item_title=r.item_title,
            )
            for r in body.reviews
        ]
        return await guarded(caller, service.add_reviews, reviews)

    @app.delete("/v1/users/{user_id}")
    async def delete_user(caller: Caller, user_id: str) -> dict:
        return {"deleted": True, **await guarded(caller, service.erase, user_id)}

    @app.post("/v1/chat/completions")
    async def chat(caller: Caller, body: ChatRequest):
        if body.model not in {m["id"] for m in service.models}:
            raise ApiError(404, f"no model {body.model!r}; GET /v1/models lists them", code="model_not_found")
        item_id, rating, title = _review_task(body.metadata)
        instruction = next((m.text() for m in reversed(body.messages) if m.role == "user"), "")
        if item_id is None and not instruction.strip():
            raise ApiError(400, "messages: no user message to answer (or name metadata.item_id for a review)")
        wanted = body.max_completion_tokens or body.max_tokens
        arguments = {
            "instruction": instruction,
            "item_id": item_id,
            "rating": rating,
            "title": title,
            "max_tokens": min(wanted or settings.max_tokens, settings.max_tokens),
            "temperature": body.temperature,
            "seed": body.seed,
            "explain": body.explain,
        }
        reply = _Reply(body.model, body.stream_options is not None and body.stream_options.include_usage)
        if body.stream:
            return await _streamed(service, keys, caller, body.model, body.user, arguments, reply)
        answer: Answer = await guarded(caller, service.answer, body.model, body.user, **arguments)
        return reply.whole(answer)

    return BodyLimit(app, settings.max_request_bytes)
