"""CoPersona's selected answer: the persona scorer (one table of cases) and the answers on real examples.

The runtime tests script the generator's answer (control flow: which candidate is kept, how it is
opened, what is noted); the generation itself is checked end to end in tests/eval.
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from copersona.backends.llm import LLM
from copersona.config import HarnessConfig
from copersona.inference import Runtime
from copersona.methods.selection import GENERATED, RETRIEVED, PersonaScorer, opened, opening


@dataclass(frozen=True)
class ScorerCase:
    name: str
    candidates: dict[str, str]
    persona: list[str]
    chosen: str | None  # None: nothing to choose by
    margin: float = 0.0


SCORER_CASES = [
    ScorerCase(
        "closer to the user's reviews wins",
        {GENERATED: "the product arrived", RETRIEVED: "great strings, bright tone, they last"},
        ["bright tone and the strings last", "great strings for the price"],
        RETRIEVED,
    ),
    ScorerCase(
        "the generated one when it is closer",
        {GENERATED: "great strings for the price", RETRIEVED: "the cable broke"},
        ["great strings for the price", "strings with a bright tone"],
        GENERATED,
    ),
    ScorerCase(
        "a tie keeps the first named", {GENERATED: "good cable", RETRIEVED: "cable good"}, ["a good cable"], GENERATED
    ),
    ScorerCase("an empty candidate is never chosen", {GENERATED: "  ", RETRIEVED: "x"}, ["y"], RETRIEVED),
    ScorerCase(
        "the first named keeps its place within the margin",
        {RETRIEVED: "great strings", GENERATED: "great strings for the price"},
        ["great strings for the price"],
        RETRIEVED,
        margin=0.5,  # 1.0 against 0.57
    ),
    ScorerCase(
        "beyond the margin another wins",
        {RETRIEVED: "great strings", GENERATED: "great strings for the price"},
        ["great strings for the price"],
        GENERATED,
        margin=0.4,
    ),
    ScorerCase("no persona: no choice", {GENERATED: "a", RETRIEVED: "b"}, ["", " "], None),
    ScorerCase("no candidate: no choice", {GENERATED: ""}, ["a review"], None),
]


@pytest.mark.parametrize("case", SCORER_CASES, ids=lambda c: c.name)
def test_persona_scorer(case):
    selection = PersonaScorer().choose(case.candidates, case.persona, case.margin)
    if case.chosen is None:
        assert selection is None
        return
    assert selection.chosen == case.chosen and selection.text == case.candidates[case.chosen]
    assert set(selection.scores) == {n for n, t in case.candidates.items() if t.strip()}
    first = next(n for n, t in case.candidates.items() if t.strip())
    handicapped = {n: score - (0 if n == first else case.margin) for n, score in selection.scores.items()}
    assert handicapped[case.chosen] == max(handicapped.values())


@pytest.mark.parametrize(
    ("title", "body", "expected"),
    [
        ("Great strings", "They last.", "Great strings. They last."),
        ("Works!", "Fine.", "Works! Fine."),
        ("  spaced   out ", "x", "spaced out. x"),
        ("", "Only the body.", "Only the body."),
    ],
)
def test_the_review_title_opens_the_answer(title, body, expected):
    assert opened(title, body) == expected and opening("") == ""


GIBBERISH = "qqq zzz vvv"  # shares no word with any review: the scorer never prefers it to a real review


def _runtime(store, backend, embedder, answer: str) -> Runtime:
    config = HarnessConfig()
    config.methods.copersona_answer = answer
    return Runtime(store, config, llm=lambda: LLM(backend), embedder=lambda: embedder)


def test_selected_answers_on_real_examples(built_db, scripted_backend, embedder):
    examples = built_db.examples("test")[:12]
    runtime = _runtime(built_db, scripted_backend([GIBBERISH]), embedder, "select")
    predictions = runtime.predict("copersona-np", examples)
    kept = set()
    for example, prediction in zip(examples, predictions):
        title = opening(example.target.review_title)
        assert prediction.text.startswith(title) and prediction.text != example.target.text
        [note] = [n for n in prediction.notes if n.startswith("answer:")]
        body = prediction.text.removeprefix(title).strip()
        if body == GIBBERISH:
            # Only when there is nothing to score it against: one past review, the retrieved one.
            assert "no other past review" in note and len(example.profile) == 1
            kept.add(GENERATED)
        else:
            assert note == f"answer: the {RETRIEVED} candidate (persona scorer)"
            assert body in {review.text.strip() for review in example.profile}  # the user's own, before the target
            shown = runtime.inputs("copersona-np", example).parts["retrieved answer"]
            assert shown == prediction.text  # --explain shows the candidate that was kept
            kept.add(RETRIEVED)
    assert RETRIEVED in kept


def test_a_selected_answer_is_streamed_whole_and_as_predicted(built_db, scripted_backend, embedder):
    example = built_db.examples("test")[0]
    runtime = _runtime(built_db, scripted_backend([GIBBERISH]), embedder, "select")
    pieces: list[str] = []
    streamed = runtime.stream("copersona-np", example, pieces.append)
    assert pieces == [streamed.text] and streamed.text == runtime.predict("copersona-np", [example])[0].text


def test_generated_setting_keeps_the_papers_answer(built_db, scripted_backend, embedder):
    examples = built_db.examples("test")[:4]
    runtime = _runtime(built_db, scripted_backend([GIBBERISH]), embedder, "generated")
    predictions = runtime.predict("copersona-np", examples)
    assert [p.text for p in predictions] == [GIBBERISH] * len(examples)
    assert not any(n.startswith("answer:") for p in predictions for n in p.notes)
    assert "retrieved answer" not in runtime.inputs("copersona-np", examples[0]).parts


def test_under_an_answer_cap_only_candidates_within_it_are_offered(built_db, scripted_backend, embedder):
    examples = built_db.examples("test")[:6]
    runtime = _runtime(built_db, scripted_backend([GIBBERISH]), embedder, "select")
    cap = 6  # the scripted backend counts words: the generated answer fits, a whole past review does not
    for prediction in runtime.predict("copersona-np", examples, max_tokens=cap):
        assert len(prediction.text.split()) <= cap and prediction.text.endswith(GIBBERISH)
        assert "answer: the generated candidate (the retrieved one exceeds the answer cap)" in prediction.notes
