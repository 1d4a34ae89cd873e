"""One request: the example a `copersona generate` call stands for.

A held-out item of the user is evaluated as in the harness (the profile is everything before it).
Any other item is a new request: the whole history is the profile, the item's title and
description come from any stored review of it, and it is dated now (a live request may use every
piece of evidence written before it).
"""

from __future__ import annotations

import time

from copersona.data.records import Example, Interaction
from copersona.data.split import split_of_rank
from copersona.store.sqlite import Store, StoreError


def request_example(
    store: Store, user_id: str, item_id: str | None = None, *, rating: float | None = None, title: str | None = None
) -> Example:
    history, ranks = store.history(user_id)
    if not history:
        raise StoreError(f"{store.path}: no user {user_id!r}")
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
    known = store.item_context(item_id)
    target = Interaction(
        user_id=user_id,
        item_id=item_id,
        timestamp=max(int(time.time()), history[-1].timestamp + 1),
        rating=rating,
        review_title=title or "",
        item_title=known.item_title if known else item_id,
        item_description=known.item_description if known else "",
        item_category=known.item_category if known else "",
    )
    return Example(user_id=user_id, split="test", profile=history, target=target)
