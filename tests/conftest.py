"""Shared fixtures: the real review data lives next to the repository, never inside it."""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from runner import MI, PostgresServer, cli, copy_store, free_port

from copersona.backends.llm import Completion, LLMBackend

SERVER_START_SECONDS = 90

# /work/main/tests/conftest.py -> /work/main is the repo root; the data is ../shared/data from there.
SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """The shared real data (see its README); tests that need it are skipped where it is absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real data not found at {SHARED_DATA}")
    return SHARED_DATA


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def built_store(data_dir, tmp_path_factory) -> Path:
    """A 40-user build with the embedded default: MiniLM, SmolLM2 for the schema, extractive summaries."""
    store = tmp_path_factory.mktemp("build") / "mi.sqlite"
    cli("build", data_dir / MI, "--store", store, "--limit-users", 40)
    return store


@pytest.fixture(scope="session")
def built_db(built_store, tmp_path_factory):
    """A snapshot of the session build, opened read-only (inputs are built from it; nothing is written).

    A snapshot (SQLite's backup), not the build itself: CLI tests write into the build from other
    processes, and what the read-only tests check should not depend on when those writes land.
    """
    from copersona.store import Store

    snapshot = copy_store(built_store, tmp_path_factory.mktemp("snapshot") / "mi.sqlite")
    with Store(snapshot, read_only=True) as db:
        yield db


@pytest.fixture(scope="session")
def runtime_on(smollm2):
    """``runtime_on(store, section={key: value})``: a runtime on the real models with settings changed."""
    from copersona.backends import load_embedder
    from copersona.backends.llm import LLM
    from copersona.config import HarnessConfig
    from copersona.inference import Runtime

    def make(store, **changes):
        config = HarnessConfig()
        for section, values in changes.items():
            for key, value in values.items():
                setattr(getattr(config, section), key, value)
        return Runtime(store, config, llm=lambda: LLM(smollm2), embedder=lambda: load_embedder("minilm"))

    return make


@pytest.fixture(scope="session")
def runtime(built_db, runtime_on):
    """The default runtime over the session build."""
    return runtime_on(built_db)


@pytest.fixture(scope="session")
def smollm2():
    """The real packaged SmolLM2 under llama.cpp, loaded once (its tokenizer counts budgets)."""
    from copersona.backends import load_llm_backend

    backend = load_llm_backend("smollm2")
    yield backend
    backend.close()


@pytest.fixture(scope="session")
def embedder():
    """The real packaged MiniLM embedder, loaded once."""
    from copersona.backends.embed import load_embedder

    return load_embedder("minilm")


@pytest.fixture(scope="session")
def mi_profiles(data_dir, repo_root):
    """Real Musical Instruments profiles (the reviews before each user's held-out block)."""
    from copersona.config import BuildConfig
    from copersona.data.loaders import load_path
    from copersona.data.prepare import prepare_users
    from copersona.data.split import heldout_count

    config = BuildConfig.load(repo_root / "configs" / "amazon2014-mi-partial.toml")
    users, _ = prepare_users(load_path(data_dir / "amazon2014-musical-instruments")[0], config.data)
    return {
        u.user_id: u.interactions[: len(u.interactions) - heldout_count(len(u.interactions), config.data.holdout_k)]
        for u in users
    }


class ScriptedBackend(LLMBackend):
    """Answers with the given texts in order, the last one repeating; records the requests.

    For unit tests of parsing and control flow only: end-to-end tests use the real models.
    """

    def __init__(self, answers: list[str], context_window: int = 8192):
        self.answers = list(answers)
        self.requests = []
        self.batches: list[int] = []  # requests per complete() call
        self.model_id = "scripted"
        self.context_window = context_window

    def complete(self, requests):
        out = []
        self.batches.append(len(requests))
        for request in requests:
            self.requests.append(request)
            text = self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]
            out.append(Completion(text=text, prompt_tokens=10, completion_tokens=len(text.split())))
        return out

    def count_tokens(self, text: str) -> int:
        return len(text.split())


@pytest.fixture
def scripted_backend():
    return ScriptedBackend


@pytest.fixture(scope="session")
def llama_server(tmp_path_factory) -> Iterator[str]:
    """``python -m llama_cpp.server`` on the packaged SmolLM2 (one per session); yields its ``/v1`` base URL."""
    for module in ("llama_cpp", "fastapi", "uvicorn", "sse_starlette", "starlette_context", "pydantic_settings"):
        pytest.importorskip(module, reason="needs llama-cpp-python's server (pip install 'llama-cpp-python[server]')")
    from copersona.backends.llamacpp import packaged_smollm2_path, physical_cores

    port, threads = free_port(), str(physical_cores())
    log_path = tmp_path_factory.mktemp("llama_server") / "server.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "llama_cpp.server",
                "--model",
                packaged_smollm2_path(),
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--n_ctx",
                "2048",
                "--n_threads",
                threads,
                "--n_threads_batch",
                threads,
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    base_url = f"http://127.0.0.1:{port}/v1"
    try:
        deadline = time.monotonic() + SERVER_START_SECONDS
        while True:
            if process.poll() is not None:
                pytest.fail(f"llama_cpp.server exited with {process.returncode}:\n{log_path.read_text()[-3000:]}")
            try:
                if httpx.get(base_url + "/models", timeout=2).is_success:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"llama_cpp.server not ready in {SERVER_START_SECONDS}s:\n{log_path.read_text()[-3000:]}")
            time.sleep(0.25)
        yield base_url
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    """A throwaway PostgreSQL server for the store's tests on PostgreSQL (new database per call)."""
    folder = Path(tempfile.mkdtemp(prefix="copersona-pg-"))
    folder.chmod(0o755)  # the server runs as the postgres user when the tests run as root
    server = PostgresServer(folder / "server")
    yield server
    server.stop()
    shutil.rmtree(folder, ignore_errors=True)
