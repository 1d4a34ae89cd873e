"""Token budgets per prompt component (App. C), counted with the generator's own tokenizer.

Truncation works on whole words with any tokenizer that can count: the longest word prefix whose
token count fits is found by bisection, so a backend only has to implement ``count_tokens``.
Every cut is recorded, so a report can say how often and how much context was lost.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field

from copersona.config import BudgetConfig


@dataclass(frozen=True)
class Truncation:
    """One component cut to its budget (or dropped: ``kept_tokens`` 0)."""

    component: str
    tokens: int
    kept_tokens: int

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class TokenBudget:
    """Budgets scaled to the generator's window, a token counter, and the record of cuts.

    ``scale`` = min(1, (window - answer room) / reference window): the paper's 8,192-token budgets
    shrink for a smaller window and never grow for a larger one.
    """

    count_tokens: Callable[[str], int]
    config: BudgetConfig
    scale: float = 1.0
    truncations: list[Truncation] = field(default_factory=list)
    used: int = 0
    reserved: int = 0  # tokens held back for a component placed later

    @classmethod
    def for_window(
        cls, count_tokens: Callable[[str], int], config: BudgetConfig, window: int, answer_tokens: int
    ) -> TokenBudget:
        scale = min(1.0, max(window - answer_tokens, 0) / config.reference_window)
        return cls(count_tokens=count_tokens, config=config, scale=scale)

    def limit(self, name: str) -> int:
        """A component's budget in tokens after scaling (``name`` is a field of BudgetConfig)."""
        return int(getattr(self.config, name) * self.scale)

    @property
    def remaining(self) -> int:
        return max(self.limit("total") - self.used - self.reserved, 0)

    @contextmanager
    def reserving(self, share: float) -> Iterator[None]:
        """Inside, ``share`` of what remains is held back for what is placed after the block.

        The guaranteed share of a later component: at a small window, history placed first would
        otherwise leave nothing for the method's own context (peers, profiles).
        """
        self.reserved = int(share * self.remaining)
        try:
            yield
        finally:
            self.reserved = 0

    def charge(self, text: str) -> bool:
        """Charge fixed text (headers, layout) against the total if it fits whole; False if it does not."""
        tokens = self.count_tokens(text)
        if tokens > self.remaining:
            return False
        self.used += tokens
        return True

    def fit(self, text: str, limit: int, component: str) -> str:
        """``text`` cut to at most ``limit`` tokens (and to what is left of the total); cuts are recorded.

        Charges what is kept against the total, so components are admitted in priority order.
        """
        limit = min(limit, self.remaining)
        tokens = self.count_tokens(text)
        if tokens <= limit:
            self.used += tokens
            return text
        kept = truncate_words(text, limit, self.count_tokens)
        kept_tokens = self.count_tokens(kept) if kept else 0
        self.truncations.append(Truncation(component, tokens, kept_tokens))
        self.used += kept_tokens
        return kept


def truncate_words(text: str, limit: int, count_tokens: Callable[[str], int]) -> str:
    """The longest prefix of whole words of ``text`` with at most ``limit`` tokens ('' if none fits)."""
    words = text.split(" ")
    low, high = 0, len(words)  # invariant: words[:low] fits; words[:high + 1] does not (or high = all)
    while low < high:
        middle = (low + high + 1) // 2
        if count_tokens(" ".join(words[:middle])) <= limit:
            low = middle
        else:
            high = middle - 1
    return " ".join(words[:low])
