"""Appendix A's protocol: chronological order, the most recent k held out, train/validation/test.

For a user with n reviews, h = min(k, n // 2) most recent ones are held out (so at most half the
history). Rank 0 (the last review) is the test target, rank 1 the validation target, ranks 2+
are training targets predicted autoregressively. Every example's profile is everything the user
wrote before its target; persona building uses only the reviews before the whole held-out block.
"""

from __future__ import annotations

from copersona.data.records import Example, Interaction

_SPLIT_OF_RANK = {0: "test", 1: "validation"}


def split_of_rank(rank: int) -> str:
    """The split whose target is the held-out review of this rank (0 = the most recent)."""
    return _SPLIT_OF_RANK.get(rank, "train")


def heldout_count(num_interactions: int, holdout_k: int) -> int:
    return max(0, min(holdout_k, num_interactions // 2))


def heldout_ranks(num_interactions: int, holdout_k: int) -> list[int | None]:
    """Per interaction (oldest first): None for profile, else its rank from the most recent."""
    held = heldout_count(num_interactions, holdout_k)
    return [None] * (num_interactions - held) + list(range(held - 1, -1, -1))


def examples_for_user(user_id: str, history: list[Interaction], ranks: list[int | None]) -> list[Example]:
    """The user's examples, oldest target first; ``history`` is chronological."""
    return [
        Example(user_id=user_id, split=split_of_rank(rank), profile=history[:position], target=target)
        for position, (target, rank) in enumerate(zip(history, ranks))
        if rank is not None
    ]
