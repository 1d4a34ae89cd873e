"""Choice requests (the rating task): probabilities of each answer, read from log-probabilities,
else from constrained output, else a counted uniform fallback; cached like answers.

Control flow runs on a scripted backend (which answer comes when); the log-probabilities come from
the real packaged SmolLM2, in process and behind llama-cpp-python's OpenAI-compatible server.
"""

from __future__ import annotations

import numpy as np
import pytest

from copersona.backends import load_llm_backend
from copersona.backends.llm import LLM, Choice, Request
from copersona.methods.prompts import RATINGS
from copersona.store import Store

ASK = [
    {"role": "system", "content": "You are a customer deciding how many stars (1 to 5) to give a product."},
    {
        "role": "user",
        "content": "Item: Nylon guitar strings\n\nHow many stars (1-5) does this customer give this item?",
    },
]


def _ask(seed: int = 0) -> Request:
    return Request.chat(ASK, temperature=0.0, max_tokens=16, seed=seed, choices=RATINGS)


@pytest.mark.parametrize(
    ("answer", "source", "probabilities"),
    [
        ('{"answer": "4"}', "constrained", (0, 0, 0, 1, 0)),
        ('```json\n{"answer": "2"}\n```', "constrained", (0, 1, 0, 0, 0)),
        ('{"answer": "7"}', "fallback", (0.2,) * 5),
        ("four stars", "fallback", (0.2,) * 5),
    ],
)
def test_without_logprobs_the_answer_is_constrained_and_a_bad_one_is_a_counted_uniform_fallback(
    scripted_backend, tmp_path, answer, source, probabilities
):
    backend = scripted_backend([answer])
    with Store(tmp_path / "cache.sqlite") as store:
        llm = LLM(backend, cache=store)
        choice = llm.choose([_ask()])[0]
        assert (choice.source, choice.probabilities) == (source, pytest.approx(probabilities))
        assert llm.stats.choice_fallbacks == (source == "fallback")
        sent = backend.requests[0]
        assert sent.choices == () and sent.schema_dict()["properties"]["answer"]["enum"] == list(RATINGS)
        again = LLM(scripted_backend(["must not be asked"]), cache=store).choose([_ask()])[0]
    assert again.cached and again.probabilities == choice.probabilities


def test_choice_requests_are_keyed_apart_from_generation_and_generation_keys_are_unchanged(scripted_backend):
    generation = Request.chat(ASK, temperature=0.0, max_tokens=16)
    assert "choices" not in generation.to_dict()  # caches of earlier runs stay valid
    llm = LLM(scripted_backend(["unused"]))
    assert llm.cache_key(generation) != llm.cache_key(_ask())
    with pytest.raises(ValueError, match="choice requests only"):
        llm.choose([generation])


@pytest.mark.parametrize(
    ("logprobs", "expected"),
    [
        (
            {"1": np.log(0.1), "2": np.log(0.3), "3": np.log(0.1), "4": np.log(0.3), "5": np.log(0.2)},
            (0.1, 0.3, 0.1, 0.3, 0.2),
        ),
        ({"4": np.log(0.5), "5": np.log(0.25)}, (0, 0, 0, 2 / 3, 1 / 3)),
        ({}, None),
    ],
)
def test_logprobs_are_renormalized_over_the_choices(logprobs, expected):
    choice = Choice.from_logprobs(logprobs, RATINGS)
    assert (choice is None) if expected is None else choice.probabilities == pytest.approx(expected)


def test_the_packaged_model_in_process_gives_a_distribution_over_ratings(smollm2, tmp_path):
    with Store(tmp_path / "cache.sqlite") as store:
        llm = LLM(smollm2, cache=store)
        choice = llm.choose([_ask()])[0]
        assert choice.source == "logprobs" and sum(choice.probabilities) == pytest.approx(1.0)
        assert all(p > 0 for p in choice.probabilities)  # every rating is one token with some probability
        assert llm.choose([_ask()])[0].probabilities == choice.probabilities and llm.stats.cache_hits == 1


def test_a_local_openai_compatible_server_gives_logprobs_and_constrained_answers(llama_server, smollm2):
    backend = load_llm_backend(f"openai:smollm2@{llama_server}", max_concurrency=2)
    try:
        served = LLM(backend).choose([_ask()])[0]
        assert served.source == "logprobs" and sum(served.probabilities) == pytest.approx(1.0)
        in_process = LLM(smollm2).choose([_ask()])[0]
        # The same model and prompt: the most likely rating agrees between server and process.
        assert np.argmax(served.probabilities) == np.argmax(in_process.probabilities)
        backend.gives_logprobs = False  # as after a server that refuses logprobs
        constrained = LLM(backend).choose([_ask(seed=1)])[0]
        assert constrained.source == "constrained" and sorted(constrained.probabilities) == [0, 0, 0, 0, 1]
    finally:
        backend.close()
