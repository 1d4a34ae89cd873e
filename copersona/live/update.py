"""Live updates: new reviews join a built store without a rebuild.

For each user with new reviews (a review of an item they already reviewed replaces it): their
history is rewritten with held-out ranks recomputed (the newest reviews become the held-out
targets, as a build on all the data would mark them); their profile embedding and facet states
are computed again with the store's frozen schema and summarizer calibration; the graph rows that
can differ from a rebuild's are searched again (theirs, those that pointed at them, those they may
now enter: :func:`copersona.graph.multiplex.repair_layers`); soft prompts of every user whose
states or neighbours changed are dropped (they were computed from the old graph; retraining
recomputes them). One transaction: a crash leaves the store as before.

What stays frozen is what a rebuild would redo: the facet schema and the summarizer's
calibration. After many updates (say a tenth of the users new or changed), rebuild into a new
store so the schema and calibration reflect the data again.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field

from copersona.build import Build
from copersona.data.records import Interaction, User
from copersona.graph.multiplex import repair_layers
from copersona.store import StoreError


@dataclass
class Update:
    """What adding reviews changed."""

    users: list[str] = field(default_factory=list)
    new_users: int = 0
    added: int = 0
    replaced: int = 0
    neighbour_rows: int = 0
    soft_prompts_dropped: int = 0
    seconds: float = 0.0


def _with_item_context(review: Interaction, known: Interaction | None) -> Interaction:
    """A review without item metadata takes the store's (reviews sent to the API name only the item)."""
    if known is None or review.item_title:
        return review
    return review.model_copy(
        update={
            "item_title": known.item_title,
            "item_description": known.item_description,
            "item_category": known.item_category,
        }
    )


def add_reviews(build: Build, reviews: Iterable[Interaction], *, batch_users: int = 32) -> Update:
    """Add ``reviews`` to ``build.store`` (see the module docstring); ``build`` holds the store's
    build config and models."""
    store = build.store
    schema = store.schema()
    if schema is None or store.get_meta("summary_calibration") is None:
        raise StoreError(f"{store.path}: not fully built; finish `copersona build` before adding reviews")
    started = time.perf_counter()
    by_user: dict[str, dict[str, Interaction]] = defaultdict(dict)
    for review in reviews:
        by_user[review.user_id][review.item_id] = review
    if not by_user:
        raise ValueError("no reviews to add")
    report = Update(users=sorted(by_user))
    with store.transaction():
        for user, new in by_user.items():
            history = {i.item_id: i for i in store.history(user)[0]}
            report.new_users += not history
            report.replaced += len(new.keys() & history.keys())
            report.added += len(new.keys() - history.keys())
            history.update({item: _with_item_context(r, store.item_context(item)) for item, r in new.items()})
            merged = sorted(history.values(), key=lambda i: (i.timestamp, i.item_id))
            store.write_users([User(user_id=user, interactions=merged)], build.config.data.holdout_k)
        store.forget_personas(report.users)
        build.profiles(report.users)
        build.summaries(batch_users, report.users)
        keys = [f.key for f in schema.facets]
        touched = repair_layers(store, build.config.graph, keys, report.users)
        report.neighbour_rows = len(touched)
        report.soft_prompts_dropped = store.drop_soft_prompts(touched | set(report.users))
    report.seconds = round(time.perf_counter() - started, 3)
    return report
