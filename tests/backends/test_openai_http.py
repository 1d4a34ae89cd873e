"""The OpenAI-compatible HTTP backend against real local servers.

Chat and structured output go to llama-cpp-python's own OpenAI-compatible server running the
packaged SmolLM2. Failure handling (retries, refusals, timeouts, concurrency) needs a server that
fails on cue, so a small http.server in a thread plays one, answering from a script per test.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from pydantic import BaseModel, Field
from runner import free_port

from copersona.backends import load_llm_backend
from copersona.backends.llamacpp import LlamaCppBackend, packaged_smollm2_path
from copersona.backends.llm import LLM, Request
from copersona.backends.openai_http import OpenAICompatibleBackend, OpenAIHTTPError

ASK = [{"role": "user", "content": "Say hello."}]


# -- the real model server: ``llama_server`` (tests/conftest.py) ---------------------------------
@pytest.fixture
def served(llama_server) -> Iterator[OpenAICompatibleBackend]:
    backend = load_llm_backend(f"openai:smollm2@{llama_server}", max_concurrency=2)
    yield backend
    backend.close()


class Greeting(BaseModel):
    greeting: str = Field(max_length=40)
    language: str = Field(max_length=20)


def test_spec_string_names_model_and_server(served, llama_server):
    assert served.model_id == f"openai:smollm2@{llama_server}"
    assert served.context_window == 8192  # this server does not report max_model_len: the default


def test_chat_completion_from_the_real_server(served):
    completions = served.complete([Request.chat(ASK, temperature=0.0, max_tokens=16, seed=s) for s in (1, 2)])
    assert len(completions) == 2
    for completion in completions:
        assert completion.text.strip()
        assert completion.prompt_tokens > 5 and 0 < completion.completion_tokens <= 16


def test_structured_output_from_the_real_server(served):
    result = LLM(served).generate_structured(
        [{"role": "user", "content": "Greet me in French. Answer as JSON."}], Greeting, max_tokens=80
    )
    assert result.ok, result.error
    # llama-cpp-python's server knows only json_object (with a schema): the backend learned that.
    assert served.structured_format == "json_object"


def test_count_tokens_uses_the_server_tokenizer(served):
    local = LlamaCppBackend(packaged_smollm2_path(), n_ctx=512, n_threads=1)
    try:
        text = "Collaborative personas for sparse histories."
        assert served.count_tokens(text) == local.count_tokens(text)
    finally:
        local.close()
    assert served.notes == []


# -- a server that fails on cue ---------------------------------------------------------------
Reply = tuple[int, dict]  # status, JSON body


def ok_reply(text: str) -> Reply:
    return 200, {
        "choices": [{"message": {"role": "assistant", "content": text}}],
        "usage": {"prompt_tokens": 3, "completion_tokens": 2},
    }


class ScriptedServer:
    """A threaded HTTP server whose replies come from ``script(path, body, call_number)``."""

    def __init__(self, script: Callable[[str, dict, int], Reply | None]):
        self.script = script
        self.calls: list[tuple[str, dict]] = []
        self.in_flight = 0
        self.max_in_flight = 0
        self._lock = threading.Lock()
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._httpd.daemon_threads = True
        self._httpd.handle_error = lambda request, address: None  # clients that time out hang up
        self.base_url = f"http://127.0.0.1:{self._httpd.server_address[1]}/v1"

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                self._answer({})

            def do_POST(self):
                self._answer(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))

            def _answer(self, body: dict):
                with server._lock:
                    server.calls.append((self.path, body))
                    number = len(server.calls)
                    server.in_flight += 1
                    server.max_in_flight = max(server.max_in_flight, server.in_flight)
                try:
                    status, reply = server.script(self.path, body, number) or (404, {"error": "no such route"})
                finally:
                    with server._lock:
                        server.in_flight -= 1
                payload = json.dumps(reply).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, *args):
                pass

        return Handler

    def chat_calls(self) -> list[dict]:
        return [body for path, body in self.calls if path.endswith("/chat/completions")]

    def __enter__(self) -> ScriptedServer:
        threading.Thread(target=self._httpd.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()


def chat_only(reply_for: Callable[[dict, int], Reply]) -> Callable[[str, dict, int], Reply | None]:
    """A script answering chat completions with ``reply_for(body, chat_call_number)`` and 404 elsewhere."""
    counter = {"chat": 0}

    def script(path: str, body: dict, _number: int) -> Reply | None:
        if not path.endswith("/chat/completions"):
            return None
        counter["chat"] += 1
        return reply_for(body, counter["chat"])

    return script


@contextmanager
def scripted_backend(
    reply_for: Callable[[dict, int], Reply], **options
) -> Iterator[tuple[ScriptedServer, OpenAICompatibleBackend]]:
    with ScriptedServer(chat_only(reply_for)) as server:
        backend = OpenAICompatibleBackend(server.base_url, "m", backoff=0.05, **options)
        try:
            yield server, backend
        finally:
            backend.close()


@pytest.mark.parametrize("status", [429, 500, 503])
def test_transient_errors_are_retried_with_backoff(status):
    def flaky(body, n):
        return (status, {"error": {"message": "busy"}}) if n <= 2 else ok_reply("at last")

    with scripted_backend(flaky) as (server, backend):
        started = time.monotonic()
        [completion] = backend.complete([Request.chat(ASK)])
        elapsed = time.monotonic() - started
    assert completion.text == "at last"
    assert len(server.chat_calls()) == 3
    assert elapsed >= 0.05 * 0.5 + 0.1 * 0.5  # two backoff sleeps, jitter at its lowest


def test_client_errors_raise_at_once_with_the_server_message():
    refuse = lambda body, n: (400, {"error": {"message": "max_tokens is too large"}})  # noqa: E731
    with (
        scripted_backend(refuse) as (server, backend),
        pytest.raises(OpenAIHTTPError, match="400: max_tokens is too large") as err,
    ):
        backend.complete([Request.chat(ASK)])
    assert err.value.status == 400
    assert len(server.chat_calls()) == 1


def test_persistent_failure_gives_up_after_max_retries():
    bad_gateway = lambda body, n: (502, {"detail": "bad gateway"})  # noqa: E731
    with (
        scripted_backend(bad_gateway, max_retries=2) as (server, backend),
        pytest.raises(OpenAIHTTPError, match="after 3 attempts.*502: bad gateway"),
    ):
        backend.complete([Request.chat(ASK)])
    assert len(server.chat_calls()) == 3


def test_timeouts_are_retried_then_reported():
    def slow(body, n):
        time.sleep(1.5)
        return ok_reply("too late")

    with scripted_backend(slow, timeout=0.3, max_retries=1) as (server, backend):
        started = time.monotonic()
        with pytest.raises(OpenAIHTTPError, match="after 2 attempts.*Timeout"):
            backend.complete([Request.chat(ASK)])
        assert time.monotonic() - started < 1.5
    assert len(server.chat_calls()) == 2


def test_unreachable_server_is_retried_then_reported():
    backend = OpenAICompatibleBackend(f"http://127.0.0.1:{free_port()}/v1", "m", max_retries=1, backoff=0.01)
    try:
        assert backend.context_window == 8192
        with pytest.raises(OpenAIHTTPError, match="after 2 attempts.*ConnectError"):
            backend.complete([Request.chat(ASK)])
    finally:
        backend.close()


def test_concurrency_is_bounded_and_order_kept():
    def echo(body, n):
        time.sleep(0.15)
        return ok_reply(body["messages"][0]["content"])

    with scripted_backend(echo, max_concurrency=3) as (server, backend):
        requests = [Request.chat([{"role": "user", "content": f"q{i}"}]) for i in range(9)]
        started = time.monotonic()
        texts = [c.text for c in backend.complete(requests)]
        elapsed = time.monotonic() - started
    assert texts == [f"q{i}" for i in range(9)]
    assert server.max_in_flight == 3
    assert elapsed < 9 * 0.15  # concurrent, not one after another


def test_json_schema_refusal_falls_back_to_json_object_once():
    def only_json_object(body, n):
        if body["response_format"]["type"] == "json_schema":
            return 400, {"error": {"message": "response_format type json_schema is not supported"}}
        return ok_reply('{"greeting": "salut", "language": "fr"}')

    with scripted_backend(only_json_object) as (server, backend):
        llm = LLM(backend)
        first = llm.generate_structured(ASK, Greeting)
        second = llm.generate_structured(ASK, Greeting, seed=7)
    assert first.ok and second.ok
    formats = [body["response_format"]["type"] for body in server.chat_calls()]
    assert formats == ["json_schema", "json_object", "json_object"]
    assert server.chat_calls()[1]["response_format"]["schema"] == Greeting.model_json_schema()


def test_payload_carries_decoding_parameters():
    with scripted_backend(lambda body, n: ok_reply("fine")) as (server, backend):
        backend.complete(
            [
                Request.chat(
                    ASK, temperature=0.3, max_tokens=12, seed=9, stop=["\n"], json_schema=Greeting.model_json_schema()
                )
            ]
        )
    [body] = server.chat_calls()
    sent = (body["model"], body["temperature"], body["max_tokens"], body["seed"], body["stop"])
    assert sent == ("m", 0.3, 12, 9, ["\n"])
    assert body["response_format"]["json_schema"]["schema"] == Greeting.model_json_schema()
    assert body["messages"] == ASK


def test_context_window_from_max_model_len():
    def vllm_models(path, body, n):
        if path == "/v1/models":
            return 200, {"data": [{"id": "other", "max_model_len": 2048}, {"id": "m", "max_model_len": 32768}]}
        return None

    with ScriptedServer(vllm_models) as server:
        backend = OpenAICompatibleBackend(server.base_url, "m")
        assert backend.context_window == 32768
        backend.close()


def test_count_tokens_probes_vllm_shape_then_estimates_without_tokenizer():
    def vllm_tokenize(path, body, n):
        if path == "/tokenize" and "prompt" in body:
            return 200, {"count": len(body["prompt"].split()), "tokens": body["prompt"].split(), "max_model_len": 4096}
        return None

    with ScriptedServer(vllm_tokenize) as server:
        backend = OpenAICompatibleBackend(server.base_url, "m")
        assert backend.count_tokens("one two three") == 3
        assert backend.notes == []
        backend.close()
    with ScriptedServer(lambda path, body, n: None) as server:
        backend = OpenAICompatibleBackend(server.base_url, "m")
        assert backend.count_tokens("x" * 40) == 10
        assert "estimated" in backend.notes[0]
        backend.close()


# -- soft prompts as prompt embeddings (vLLM --enable-prompt-embeds) --------------------------
def vllm_completions(path: str, body: dict, _number: int) -> Reply | None:
    """Answers ``/v1/completions`` as vLLM does; chat as usual; 404 elsewhere."""
    if path == "/v1/completions":
        return 200, {"choices": [{"text": "embedded answer"}], "usage": {"prompt_tokens": 30, "completion_tokens": 2}}
    return ok_reply("chat answer") if path == "/v1/chat/completions" else None


def test_soft_prompt_requests_go_to_completions_as_the_whole_prompts_embeddings():
    import base64
    import io

    import numpy as np
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from copersona.backends.llm import SoftPrompt
    from copersona.model.base_model import checkpoint_for

    checkpoint = checkpoint_for("smollm2")  # the packaged model, dequantized: what a server would run
    soft = SoftPrompt("user-1", np.random.default_rng(0).normal(0, 0.02, (4, 576)).astype(np.float32))
    with ScriptedServer(vllm_completions) as server:
        backend = OpenAICompatibleBackend(server.base_url, "copersona@abc", prompt_embeddings=checkpoint)
        assert backend.supports_soft_prompts
        embedded, plain = LLM(backend).generate(
            [Request.chat(ASK, temperature=0.5, max_tokens=9, stop=["\n"], soft_prompt=soft), Request.chat(ASK)]
        )
        backend.close()
    assert (embedded.text, embedded.prompt_tokens, plain.text) == ("embedded answer", 30, "chat answer")
    [(_, body)] = [(p, b) for p, b in server.calls if p == "/v1/completions"]
    assert (body["model"], body["temperature"], body["max_tokens"], body["stop"]) == ("copersona@abc", 0.5, 9, ["\n"])
    assert "prompt" not in body and "messages" not in body
    sent = torch.load(io.BytesIO(base64.b64decode(body["prompt_embeds"])), weights_only=True)

    tokenizer = AutoTokenizer.from_pretrained(str(checkpoint), local_files_only=True)
    prompt = tokenizer.apply_chat_template(ASK, add_generation_prompt=True, tokenize=False)
    ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    table = AutoModelForCausalLM.from_pretrained(str(checkpoint), local_files_only=True).get_input_embeddings()
    assert sent.shape == (4 + len(ids), 576)
    assert torch.equal(sent[:4], torch.from_numpy(soft.values))  # the virtual tokens first
    assert torch.allclose(sent[4:], table.weight[torch.tensor(ids)].detach())  # then the templated prompt


def test_soft_prompts_without_a_local_copy_of_the_model_are_refused():
    import numpy as np

    from copersona.backends.llm import SoftPrompt

    with ScriptedServer(vllm_completions) as server:
        backend = OpenAICompatibleBackend(server.base_url, "m")
        request = Request.chat(ASK, soft_prompt=SoftPrompt("u", np.zeros((2, 576), dtype=np.float32)))
        with pytest.raises(ValueError, match="cannot take soft prompts"):
            LLM(backend).generate([request])
        backend.close()
    assert server.calls == [("/v1/models", {})]  # nothing was generated


def test_trained_models_with_a_served_generator_use_the_adapter_by_key():
    from copersona.config import HarnessConfig
    from copersona.inference import finetuned_backend
    from copersona.model.base_model import checkpoint_for
    from copersona.model.trained import TrainedModel

    def trained(soft_prompt_length: int) -> TrainedModel:
        return TrainedModel(
            method="copersona", base="smollm2", checkpoint=str(checkpoint_for("smollm2")), fingerprint="f00d",
            encoder="persona", window=300, soft_prompt_length=soft_prompt_length, steps=1, train_examples=1,
            validation_examples=0, seconds=0.0, config={},
        )  # fmt: skip

    with ScriptedServer(vllm_completions) as server:
        config = HarnessConfig(llm=f"openai:base-model@{server.base_url}")
        with_soft, text_only = finetuned_backend(trained(20), config), finetuned_backend(trained(0), config)
    assert (with_soft.model, with_soft.base_url) == ("copersona@f00d", server.base_url)
    assert with_soft.supports_soft_prompts and not text_only.supports_soft_prompts
    with_soft.close()
    text_only.close()
