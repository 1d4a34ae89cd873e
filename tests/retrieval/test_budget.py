"""Token budgets counted with the real SmolLM2 tokenizer."""

from __future__ import annotations

import pytest

from copersona.config import BudgetConfig
from copersona.retrieval import TokenBudget
from copersona.retrieval.budget import truncate_words

TEXT = "The tuner clips onto the headstock and reads every string quickly, even on a loud stage. " * 20


@pytest.mark.parametrize("limit", [0, 1, 5, 37, 200])
def test_truncation_keeps_the_longest_word_prefix_within_the_limit(limit, smollm2):
    kept = truncate_words(TEXT, limit, smollm2.count_tokens)
    assert smollm2.count_tokens(kept) <= limit
    assert TEXT.startswith(kept)
    one_more = " ".join(TEXT.split(" ")[: len(kept.split(" ")) + 1]) if kept else TEXT.split(" ")[0]
    assert smollm2.count_tokens(one_more) > limit


def test_budget_records_every_cut_and_charges_the_total(smollm2):
    budget = TokenBudget(smollm2.count_tokens, BudgetConfig(total=150, per_review=100))
    first = budget.fit(TEXT, budget.limit("per_review"), "review")
    assert smollm2.count_tokens(first) <= 100
    second = budget.fit(TEXT, budget.limit("per_review"), "review")
    assert smollm2.count_tokens(second) <= 150 - smollm2.count_tokens(first)
    assert budget.remaining >= 0
    assert [t.component for t in budget.truncations] == ["review", "review"]
    assert all(t.kept_tokens < t.tokens for t in budget.truncations)
    short = budget.fit("fits", 10, "short")
    assert short == "" or short == "fits"  # the total is nearly spent: fits or is dropped, and recorded if dropped
    assert len(budget.truncations) == 2 + (short == "")


def test_text_within_budget_is_untouched(smollm2):
    budget = TokenBudget(smollm2.count_tokens, BudgetConfig())
    assert budget.fit("A short review.", 100, "review") == "A short review."
    assert budget.truncations == []


@pytest.mark.parametrize(
    ("window", "answer", "scale"),
    [(8192, 0, 1.0), (32768, 256, 1.0), (4096, 0, 0.5), (2048, 1024, 0.125)],
)
def test_budgets_scale_down_with_the_window_never_up(window, answer, scale, smollm2):
    budget = TokenBudget.for_window(smollm2.count_tokens, BudgetConfig(), window, answer)
    assert budget.scale == pytest.approx(scale)
    assert budget.limit("per_peer_facet") == int(512 * scale)
