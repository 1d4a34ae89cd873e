"""PAT on a real build: the style space, the two trajectories under the evidence cutoff, and the
control flow of its dual reasoning (drafts scripted; the end-to-end path uses the real generator)."""

from __future__ import annotations

import pytest

from copersona.backends.llm import LLM
from copersona.config import HarnessConfig
from copersona.data.records import Interaction
from copersona.eval.harness import select_examples
from copersona.inference import Runtime
from copersona.methods.pat import STYLE_PASS, TOPIC_PASS, StyleSpace, character_classes


@pytest.mark.parametrize(
    "text, classes",
    [("Great amp!", "Aaaaa aaa!"), ("5 stars :)", "0 aaaaa :)"), ("tab\tand  space", "aaa aaa  aaaaa")],
)
def test_character_classes_keep_rhythm_and_punctuation_not_words(text, classes):
    assert character_classes(text) == classes


def _reviews(texts: list[str]) -> list[Interaction]:
    return [Interaction(user_id="u", item_id=f"i{n}", timestamp=n, text=t, rating=5) for n, t in enumerate(texts)]


def test_style_space_ranks_by_writing_not_topic(built_db):
    space = StyleSpace(list(built_db.profiles().values()))
    shouty = space.vector(_reviews(["LOVE this pedal!!! Works GREAT!!!", "WOW!!! Best strings EVER!!!"]))
    shouty_other_topic = space.vector(_reviews(["LOVE these picks!!! Feel GREAT!!!", "WOW!!! Best strap EVER!!!"]))
    calm_same_topic = space.vector(
        _reviews(["The pedal works as described, and the build quality seems adequate for the price."] * 2)
    )
    assert float(shouty @ shouty_other_topic) > float(shouty @ calm_same_topic)


def test_trajectories_use_only_other_users_reviews_the_cutoff_allows(runtime, built_db):
    examples = select_examples(built_db, "test", 10)
    method = runtime.method("pat", examples)
    for example in examples:
        cutoff = runtime.resources().cutoff(example)
        visible = method._visible(example)
        assert example.user_id not in visible
        assert all(cutoff.allows(r) for reviews in visible.values() for r in reviews)
        topic = method.topic_reviews(example, visible)
        assert topic and len({r.user_id for r in topic}) == len(topic)
        style, text, _ = method.trajectories(example)
        assert style.startswith("- A customer who writes about") and text


def test_dual_reasoning_drafts_then_refines_k_rounds(built_db, scripted_backend):
    from copersona.backends import load_embedder

    backend = scripted_backend(["Draft: first draft", "styled once", "topical once", "styled twice", "final"])
    config = HarnessConfig()
    config.methods.pat_rounds = 2
    config.methods.pat_topic_reviews = 0  # the style trajectory alone: no review embeddings to compute
    runtime = Runtime(built_db, config, llm=lambda: LLM(backend), embedder=lambda: load_embedder("minilm"))
    example = select_examples(built_db, "test", 1)[0]
    inp = runtime.inputs("pat", example)
    # draft, then style 1, topic 1, style 2 as drafts; topic 2 is the input the harness generates
    assert len(backend.requests) == 4
    assert [inp.parts[k] for k in ("draft", "round 1, style", "round 1, topic", "round 2, style")] == [
        "first draft",
        "styled once",
        "topical once",
        "styled twice",
    ]
    assert inp.parts["final pass"] == "round 2, topic"
    assert TOPIC_PASS in inp.messages[-1]["content"] and inp.messages[-1]["content"].endswith("styled twice")
    assert STYLE_PASS in backend.requests[1].messages[-1][1]
    assert "<data>" in backend.requests[0].messages[0][1]  # the draft's prompt holds the style cues, fenced
    assert "no topic context" in " ".join(inp.notes)
    rating = runtime.inputs("pat", example.model_copy(update={"task": "rating"}))
    assert len(backend.requests) == 4 and "draft" not in rating.parts  # the rating task: the plain prompt
    first = runtime.method("pat").training_input(example)  # what fine-tuning and GRPO train on
    assert len(backend.requests) == 4 and "draft" not in first.parts and STYLE_PASS not in str(first.messages)
