"""One request: the example a `copersona generate` call (or a served request) stands for.

A held-out item of the user is evaluated as in the harness (the profile is everything before it).
Any other item is a new request: the whole history is the profile, the item's title and
description come from any stored review of it, and it is dated now (a live request may use every
piece of evidence written before it). A free request (any instruction, answered in the user's
voice) is dated now too, with the whole history as its profile.
"""

from __future__ import annotations

import time

from copersona.data.records import Example, Interaction
from copersona.data.split import split_of_rank
from copersona.store import Store, StoreError


def request_example(
    store: Store, user_id: str, item_id: str | None = None, *, rating: float | None = None, title: str | None = None
) -> Example:
    history, ranks = _history(store, user_id)
    scale = store.rating_range()
    if rating is not None and scale is not None and not scale[0] <= rating <= scale[1]:
        raise ValueError(f"rating {rating:g} is outside this store's ratings ({scale[0]:g}-{scale[1]:g})")
    if item_id is None:
        if 0 not in ranks:
            raise StoreError(f"user {user_id!r} has no test target; pass --item")
        item_id = history[ranks.index(0)].item_id
    for position, interaction in enumerate(history):
        if interaction.item_id == item_id:
            target = interaction.model_copy(
                update={k: v for k, v in (("rating", rating), ("review_title", title)) if v is not None}
            )
            rank = ranks[position]
            split = split_of_rank(rank) if rank is not None else "train"  # a profile review: a past example
            return Example(user_id=user_id, split=split, profile=history[:position], target=target)
    target = _live_target(history, item_id, store.item_context(item_id), rating, title)
    return Example(user_id=user_id, split="test", profile=history, target=target)


def free_request_example(store: Store, user_id: str, instruction: str) -> Example:
    """A free request of ``user_id``: their whole history as profile, dated now, no item."""
    if not instruction.strip():
        raise ValueError("the request is empty")
    history, _ = _history(store, user_id)
    target = _live_target(history, "", None, None, None)
    return Example(user_id=user_id, split="test", profile=history, target=target, instruction=instruction)


class UnknownUser(StoreError):
    """The store has no such user (or no longer: erased)."""


def _history(store: Store, user_id: str) -> tuple[list[Interaction], list[int | None]]:
    history, ranks = store.history(user_id)
    if not history:
        raise UnknownUser(f"{store.path}: no user {user_id!r}")
    return history, ranks


def _live_target(
    history: list[Interaction], item_id: str, known: Interaction | None, rating: float | None, title: str | None
) -> Interaction:
    """A request made now (after the user's last review), for ``item_id`` as far as the store knows it."""
    return Interaction(
        user_id=history[-1].user_id,
        item_id=item_id,
        timestamp=max(int(time.time()), history[-1].timestamp + 1),
        rating=rating,
        review_title=title or "",
        item_title=known.item_title if known else item_id,
        item_description=known.item_description if known else "",
        item_category=known.item_category if known else "",
    )
