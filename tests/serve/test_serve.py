"""`copersona serve` as a client meets it: a real uvicorn server on loopback over a copy of the
session build, the real generator, driven with the official ``openai`` client and plain HTTP."""

from __future__ import annotations

import json
import shutil
import socket
import threading
import time
from pathlib import Path
from urllib.parse import quote

import httpx
import openai
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from copersona.config import HarnessConfig, ServeConfig
from copersona.serve import KeyLimits, open_app
from copersona.serve.app import ApiError
from copersona.store import Store

KEY = "test-key-1"
CHROMIUM = "/usr/bin/chromium"
HI = [{"role": "user", "content": "hi"}]
REQUEST = "Tell a friend in two sentences what you look for in a guitar strap."


@pytest.fixture(scope="module")
def server(built_store, tmp_path_factory):
    """The base URL of a running server with one API key, and a user and item of its store."""
    folder = tmp_path_factory.mktemp("serve")
    store = shutil.copy(built_store, folder / "s.sqlite")
    keys = folder / "keys.txt"
    keys.write_text(f"{KEY}\nother-key\n")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    app, _ = open_app(store, HarnessConfig(), ServeConfig(max_request_bytes=20_000), api_keys=keys)
    import uvicorn

    uv = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=uv.run, daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{port}"
    deadline = time.time() + 60
    while not uv.started and time.time() < deadline:
        time.sleep(0.1)
    with Store(built_store, read_only=True) as db:
        user = db.user_ids()[0]
        history, _ = db.history(user)
    yield {"base": base, "user": user, "history": history, "store": store}
    uv.should_exit = True
    thread.join(timeout=30)


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=f"{server['base']}/v1", api_key=KEY, max_retries=0, timeout=300)


def test_models_are_the_methods_this_store_can_run(client):
    ids = {m.id for m in client.models.list()}
    assert {"nonperso", "rag", "pag", "copersona-np", "copy-self"} <= ids
    assert "copersona" not in ids  # needs a trained model, which this store has none of


def test_a_free_request_is_streamed_as_generated_and_answered_in_the_users_voice(client, server):
    asked = {"model": "copersona-np", "user": server["user"], "max_tokens": 40}
    asked["messages"] = [{"role": "user", "content": REQUEST}]
    # Streamed first, so the tokens come as llama.cpp samples them, in OpenAI chunks, usage last.
    chunks = list(client.chat.completions.create(**asked, stream=True, stream_options={"include_usage": True}))
    pieces = [c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content]
    assert len(pieces) > 3  # many pieces: generated text, not one finished answer
    streamed = "".join(pieces)
    assert streamed.strip() == streamed and chunks[-1].usage.completion_tokens > 0
    # The same request again, whole: the cached answer, the same text and counts.
    response = client.chat.completions.create(**asked, extra_body={"explain": True})
    assert response.choices[0].message.content == streamed and response.model == "copersona-np"
    assert response.usage.completion_tokens == chunks[-1].usage.completion_tokens <= 40
    assert response.usage.prompt_tokens > 0
    extension = response.model_extra["copersona"]
    assert extension["generator"].startswith("llamacpp:") and extension["cached"]
    explain = extension["explain"]
    assert explain["parts"]["query"] == REQUEST
    assert explain["parts"]["history"]  # the user's own reviews are the few-shot turns


def test_the_review_task_names_an_item_in_metadata(client, server):
    response = client.chat.completions.create(
        model="copy-self",
        user=server["user"],
        messages=[],
        metadata={"item_id": server["history"][-1].item_id, "rating": "5"},
    )
    text = response.choices[0].message.content
    # Copy-self answers with one of the user's reviews written before the target.
    assert text in {i.text for i in server["history"][:-1]}
    assert response.model_extra["copersona"]["generator"] == "none (no LLM)"


def test_persona_api(server):
    headers = {"Authorization": f"Bearer {KEY}"}
    with httpx.Client(base_url=server["base"], headers=headers) as http:
        page = http.get("/v1/users", params={"offset": 1, "limit": 2}).json()
        assert page["total"] >= 39 and len(page["data"]) == 2
        persona = http.get(f"/v1/users/{server['user']}").json()
        assert persona["facets"] and {"summary", "quotes", "reliability", "neighbours"} <= set(persona["facets"][0])
        peers = http.get(f"/v1/users/{server['user']}/peers", params={"limit": 2}).json()
        assert len(peers["combined"]) <= 2 and set(peers["facets"]) == {f["key"] for f in persona["facets"]}
        missing = http.get("/v1/users/nobody-here")
        assert missing.status_code == 404 and missing.json()["error"]["code"] == "user_not_found"


@pytest.mark.parametrize(
    "case, request_kwargs, status",
    [
        ("no key", {"headers": {}}, 401),
        ("wrong key", {"headers": {"Authorization": "Bearer nope"}}, 401),
        ("unknown model", {"json": {"model": "gpt-9", "user": "u", "messages": []}}, 404),
        (
            "unknown user",
            {"json": {"model": "copy-self", "user": "nobody", "messages": HI}},
            404,
        ),
        ("temperature out of range", {"json": {"model": "rag", "user": "u", "temperature": 9, "messages": []}}, 400),
        ("no user message", {"json": {"model": "copy-self", "user": "u", "messages": []}}, 400),
        (
            "rating not a number",
            {"json": {"model": "copy-self", "user": "u", "metadata": {"item_id": "x", "rating": "hi"}}},
            400,
        ),
        ("body too large", {"content": b"{" + b" " * 30_000 + b"}"}, 413),
        ("not JSON", {"content": b"[/bold] not json"}, 400),
    ],
    ids=lambda v: v if isinstance(v, str) else "",
)
def test_bad_requests_get_a_clear_4xx(server, case, request_kwargs, status):
    kwargs = {"headers": {"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"}, **request_kwargs}
    response = httpx.post(f"{server['base']}/v1/chat/completions", timeout=120, **kwargs)
    assert response.status_code == status, response.text
    assert response.json()["error"]["message"]


def test_posted_reviews_make_a_new_user_servable(client, server):
    headers = {"Authorization": f"Bearer {KEY}"}
    reviews = [
        {"item_id": i.item_id, "text": f"Review {n}: the strap is {word} and sturdy, I use it on stage.", "rating": 4}
        for n, (i, word) in enumerate(zip(server["history"], ["soft", "wide", "long"]))
    ]
    with httpx.Client(base_url=server["base"], headers=headers, timeout=300) as http:
        added = http.post("/v1/users/new-player/reviews", json={"reviews": reviews})
        assert added.status_code == 200, added.text
        assert added.json()["new_users"] == 1 and added.json()["added"] == 3
        assert http.get("/v1/users/new-player").json()["facets"]
        bad = http.post("/v1/users/new-player/reviews", json={"reviews": [{"item_id": "x", "text": ""}]})
        assert bad.status_code == 400
    answer = client.chat.completions.create(
        model="copy-self", user="new-player", messages=[{"role": "user", "content": "Which strap?"}]
    )
    assert answer.choices[0].message.content.startswith("Review")


def test_delete_forgets_a_user(server):
    headers = {"Authorization": f"Bearer {KEY}"}
    with httpx.Client(base_url=server["base"], headers=headers, timeout=120) as http:
        other = http.get("/v1/users", params={"offset": 1, "limit": 1}).json()["data"][0]
        gone = http.delete(f"/v1/users/{other}")
        assert gone.status_code == 200 and gone.json()["removed"]["interactions"] > 0
        assert http.get(f"/v1/users/{other}").status_code == 404
        assert http.delete(f"/v1/users/{other}").status_code == 404
        assert other not in http.get("/v1/users", params={"limit": 100}).json()["data"]


def test_the_page_in_headless_chromium(server, repo_root):
    """Load the page, give the key, pick a user, see the facets and peers, generate; screenshots
    are kept in runs/test-artefacts/."""
    sync_api = pytest.importorskip("playwright.sync_api")
    if not Path(CHROMIUM).exists():
        pytest.skip(f"{CHROMIUM} is missing (scripts/setup.sh installs Debian's chromium)")
    artefacts = repo_root / "runs" / "test-artefacts"
    artefacts.mkdir(parents=True, exist_ok=True)
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.goto(server["base"] + "/")
            page.fill("#key", KEY)
            page.dispatch_event("#key", "change")
            page.click(f"#users button[data-user='{server['user']}']")
            page.wait_for_selector("#facets .facet")
            assert page.locator("#facets .facet").count() >= 3
            assert page.locator("svg line").count() > 0  # the peer graph has edges
            page.screenshot(path=str(artefacts / "page-persona.png"), full_page=True)
            page.fill("#request", REQUEST)
            page.click("#generate")
            page.wait_for_function(
                "() => { const t = document.getElementById('answer').textContent;"
                " return t.length > 0 && !t.startsWith('generating'); }",
                timeout=300_000,
            )
            assert page.locator("#answer.error").count() == 0
            assert "## query" in page.locator("#explain").text_content()
            page.screenshot(path=str(artefacts / "page-generation.png"), full_page=True)
        finally:
            browser.close()


def test_health_is_open(server):
    assert httpx.get(f"{server['base']}/health").json() == {"status": "ok"}


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=10), inner, max_size=3),
    max_leaves=8,
)


@settings(max_examples=25, deadline=None, database=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    model=st.sampled_from(["copy-self", "copy-peer"]) | st.text(max_size=12),
    user=st.sampled_from(["first", "nobody"]) | st.text(max_size=12),
    messages=JSON,
    metadata=JSON,
    extra=st.dictionaries(st.sampled_from(["temperature", "seed", "max_tokens", "stream", "explain"]), JSON),
    path=st.sampled_from(["/v1/chat/completions", "/v1/users/{}", "/v1/users/{}/peers", "/v1/users"]),
)
def test_fuzzed_requests_never_get_a_5xx(server, model, user, messages, metadata, extra, path):
    """Generated bodies and paths (wrong types, nesting, unicode, missing fields, NaN and Infinity, which
    Python's JSON reader accepts): 2xx or 4xx only. The body is encoded here because httpx refuses
    non-finite floats."""
    user = server["user"] if user == "first" else user
    body = {"model": model, "user": user, "messages": messages, "metadata": metadata, **extra}
    headers = {"Authorization": f"Bearer {KEY}"}
    url = server["base"] + path.format(quote(user, safe="") or "x")
    if path == "/v1/chat/completions":
        headers["Content-Type"] = "application/json"
        response = httpx.post(url, content=json.dumps(body), headers=headers, timeout=300)
    else:
        response = httpx.get(url, params={"limit": str(extra.get("max_tokens", 3))}, headers=headers, timeout=60)
    assert response.status_code < 500, response.text


def test_without_keys_only_loopback_is_served(server):
    with pytest.raises(ValueError, match="needs --api-keys"):
        open_app(server["store"], HarnessConfig(), ServeConfig(), host="0.0.0.0")


def test_each_key_has_its_own_in_flight_limit(tmp_path):
    keys_file = tmp_path / "keys"
    keys_file.write_text("a\nb\n")
    keys = KeyLimits.read(keys_file, per_key=1)
    assert keys.authorize("Bearer a") == "a"
    keys.enter("a")
    with pytest.raises(ApiError) as refused:
        keys.enter("a")
    assert refused.value.status == 429
    keys.enter("b")  # another key is not held back
    keys.leave("a")
    keys.enter("a")
    empty = tmp_path / "empty"
    empty.write_text("\n")
    with pytest.raises(ValueError, match="no API keys"):
        KeyLimits.read(empty, per_key=1)
