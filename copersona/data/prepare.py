"""Appendix A's preprocessing: from loaded interactions to users with chronological histories.

Stages, each counting every review it removes under a reason in the report:

1. ``review_too_short``: review text shorter than ``min_review_length``.
2. ``item_text_too_short``: the item's description shorter than ``min_description_length``; when no
   interaction carries a description (Amazon 2014 metadata, the 2023 sample) the title is judged.
3. ``duplicate``: of several reviews of one item by one user the most recent is kept. This runs
   before pruning so that copies do not count towards the thresholds.
4. Iterative pruning until nothing changes: ``item_pruned`` (fewer than ``min_users_per_item``
   reviewers), ``user_pruned`` (fewer than ``min_reviews_per_user`` reviews).
5. ``profile_too_small``: users with fewer than ``min_profile_size`` reviews left once
   ``heldout_count`` are held out. This runs once after pruning, as App. A builds profiles after
   pruning, and items are not pruned again: run inside the loop it empties sparse data (the
   Musical Instruments partial file keeps no user at Table 7's thresholds), so an item of the
   result may have fewer than ``min_users_per_item`` reviewers.
6. ``max_users``: only the first ``max_users`` users by id are kept.

Users come out sorted by id, each history oldest first (ties by item id).
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Callable

from copersona.config import DataConfig
from copersona.data.records import Interaction, LoadReport, User
from copersona.data.split import heldout_count


def prepare_users(
    interactions: list[Interaction], config: DataConfig, report: LoadReport | None = None
) -> tuple[list[User], LoadReport]:
    """Filter, dedupe, prune and group ``interactions`` into users (App. A).

    With ``report`` (the loader's), the removals are added to it and its ``kept`` becomes the number
    of interactions left, so ``read == kept + sum(dropped)`` still holds over both stages; without,
    a new report counts this stage alone. An empty result is not an error: the notes say which
    stage removed the last reviews.
    """
    if report is None:
        report = LoadReport(source="prepare_users", read=len(interactions), kept=len(interactions))
    elif report.kept != len(interactions):
        report.notes.append(
            f"prepare_users got {len(interactions)} interactions but the report kept {report.kept}; "
            "its read/kept/dropped counts do not add up across the two stages"
        )
    stages: list[tuple[str, int]] = [("input", len(interactions))]

    remaining = [
        i for i in interactions if _keep(i, len(i.text) >= config.min_review_length, "review_too_short", report)
    ]
    stages.append((f"min_review_length={config.min_review_length}", len(remaining)))

    if config.min_description_length > 0:
        item_text = _item_text_judged(remaining, report)
        remaining = [
            i
            for i in remaining
            if _keep(i, len(item_text(i)) >= config.min_description_length, "item_text_too_short", report)
        ]
    stages.append((f"min_description_length={config.min_description_length}", len(remaining)))

    remaining = _latest_per_user_item(remaining, report)
    stages.append(("dedupe", len(remaining)))

    remaining, rounds = _prune(remaining, config, report)
    stages.append((f"pruning ({rounds} rounds)", len(remaining)))

    histories: dict[str, list[Interaction]] = defaultdict(list)
    for interaction in remaining:
        histories[interaction.user_id].append(interaction)
    user_ids = _users_with_profiles(histories, config, report)
    stages.append((f"min_profile_size={config.min_profile_size}", sum(len(histories[u]) for u in user_ids)))
    if config.max_users is not None:
        for user_id in user_ids[config.max_users :]:
            for interaction in histories[user_id]:
                _keep(interaction, False, "max_users", report)
        user_ids = user_ids[: config.max_users]
    users = [
        User(user_id=user_id, interactions=sorted(histories[user_id], key=lambda i: (i.timestamp, i.item_id)))
        for user_id in user_ids
    ]
    kept = sum(len(user.interactions) for user in users)
    stages.append((f"max_users={config.max_users}", kept))

    report.kept = kept
    report.notes.append("prepare_users reviews left after each stage: " + ", ".join(f"{n} {c}" for n, c in stages))
    if not users:
        emptied_by = next(name for name, count in stages if count == 0)
        report.notes.append(f"no users left: the stage '{emptied_by}' removed the last reviews")
    return users, report


def _keep(interaction: Interaction, keep: bool, reason: str, report: LoadReport) -> bool:
    if not keep:
        report.drop(reason, detail=f"user {interaction.user_id} item {interaction.item_id}")
    return keep


def _users_with_profiles(histories: dict[str, list[Interaction]], config: DataConfig, report: LoadReport) -> list[str]:
    """Ids, sorted, of the users whose profile (history less the held-out targets) is large enough."""
    user_ids = []
    for user_id in sorted(histories):
        history = histories[user_id]
        profile_size = len(history) - heldout_count(len(history), config.holdout_k)
        if profile_size >= config.min_profile_size:
            user_ids.append(user_id)
        else:
            for interaction in history:
                _keep(interaction, False, "profile_too_small", report)
    return user_ids


def _item_text_judged(interactions: list[Interaction], report: LoadReport) -> Callable[[Interaction], str]:
    if any(i.item_description for i in interactions):
        return lambda i: i.item_description
    report.notes.append("no item descriptions in the data: min_description_length is applied to item titles")
    return lambda i: i.item_title


def _latest_per_user_item(interactions: list[Interaction], report: LoadReport) -> list[Interaction]:
    latest: dict[tuple[str, str], Interaction] = {}
    for interaction in interactions:
        key = (interaction.user_id, interaction.item_id)
        current = latest.get(key)
        if current is None:
            latest[key] = interaction
            continue
        # Equal timestamps: the later one in input order wins, as in the loaders.
        newer, older = (interaction, current) if interaction.timestamp >= current.timestamp else (current, interaction)
        latest[key] = newer
        _keep(older, False, "duplicate", report)
    return list(latest.values())


def _prune(interactions: list[Interaction], config: DataConfig, report: LoadReport) -> tuple[list[Interaction], int]:
    """Remove items and users below the thresholds until none is; returns what is left and the rounds run."""
    min_reviewers, min_reviews = config.min_users_per_item, config.min_reviews_per_user
    rounds = 0
    while True:
        rounds += 1
        reviewers = Counter(i.item_id for i in interactions)
        kept = [i for i in interactions if _keep(i, reviewers[i.item_id] >= min_reviewers, "item_pruned", report)]
        reviews = Counter(i.user_id for i in kept)
        kept = [i for i in kept if _keep(i, reviews[i.user_id] >= min_reviews, "user_pruned", report)]
        if len(kept) == len(interactions):
            return kept, rounds
        interactions = kept
