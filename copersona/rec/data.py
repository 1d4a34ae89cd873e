"""Interactions for recommendation, and the leave-one-out split by time (paper 003, Sec. 4.1.3).

Interactions come from a ratings file (the 2014 ``ratings_full.csv``: every interaction, no text)
joined with review text where a review file holds the same (user, item), and with item metadata;
or, with no ratings file, from any review file the generation loaders read (each review is then
an interaction with its text). Per user, ordered by time (ties by item id, so the order is
reproducible), the last interaction is the test target, the one before it the validation target,
and the rest are training interactions. Everything the offline stages learn (CF models, aspects,
personas, profiles, the fine-tuned encoder) comes from training interactions only.

Users too short for the protocol are kept and counted, never silently lost: with two interactions
the earlier trains and the later is a test target (no validation target); a single interaction only
trains (it still helps the CF generators and the item's personas).
"""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from copersona.data.loaders import (
    AMAZON2014_RATINGS_CSV,
    DATA_SUFFIXES,
    ITEM_META_CSV,
    ITEM_META_JSON,
    ItemMeta,
    detect_format,
    load_amazon2014_ratings,
    load_item_metadata,
    load_path,
)
from copersona.data.records import Interaction, LoadReport
from copersona.rec.records import RecItem, RecSplit


@dataclass
class RecData:
    """What ``load_interactions`` found: interactions (with their split), items, and the reports."""

    interactions: list[Interaction]
    splits: list[RecSplit]
    items: dict[str, RecItem]
    reports: list[LoadReport]
    counts: Counter = field(default_factory=Counter)

    def by_split(self, split: RecSplit) -> list[Interaction]:
        return [i for i, s in zip(self.interactions, self.splits) if s == split]


def _files(path: Path) -> dict[str, list[Path]]:
    if path.is_file():
        return {detect_format(path): [path]}
    found: dict[str, list[Path]] = defaultdict(list)
    for file in sorted(path.iterdir()):
        if file.is_file() and not file.name.startswith(".") and file.suffix.lower() in DATA_SUFFIXES:
            try:
                found[detect_format(file)].append(file)
            except ValueError:
                continue  # not data this task reads; load_path reports it when reviews are read
    return found


def load_interactions(path: str | Path, *, meta: str | Path | None = None) -> RecData:
    """Interactions of a ratings file or directory (with reviews and metadata joined), split by time.

    Raises ``ValueError`` with the reason when nothing usable is found (no ratings or reviews, or an
    interaction file without user, item and time columns).
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file or directory")
    files = _files(path)
    reports: list[LoadReport] = []
    counts: Counter = Counter()
    ratings = files.get(AMAZON2014_RATINGS_CSV, [])
    review_source = [f for kind, fs in files.items() if kind not in (AMAZON2014_RATINGS_CSV,) for f in fs]
    reviews: list[Interaction] = []
    if path.is_dir() and any(k not in (AMAZON2014_RATINGS_CSV, ITEM_META_CSV, ITEM_META_JSON) for k in files):
        reviews, report = load_path(path, meta=meta)
        reports.append(report)
    elif path.is_file() and review_source and not ratings:
        reviews, report = load_path(path, meta=meta)
        reports.append(report)
    metadata = _metadata(files, meta, reports)
    if ratings:
        interactions = _with_reviews(ratings, reviews, metadata, reports, counts)
    else:
        interactions = reviews
    if not interactions:
        raise ValueError(f"{path}: no interactions found (need a ratings file or a review file)")
    items = _items(interactions, metadata, counts)
    interactions, splits = leave_one_out(interactions, counts)
    return RecData(interactions=interactions, splits=splits, items=items, reports=reports, counts=counts)


def _metadata(files: dict[str, list[Path]], meta: str | Path | None, reports: list[LoadReport]) -> dict[str, ItemMeta]:
    sources = [Path(meta)] if meta is not None else [*files.get(ITEM_META_CSV, []), *files.get(ITEM_META_JSON, [])]
    found: dict[str, ItemMeta] = {}
    for source in sources:
        items, report = load_item_metadata(source)
        reports.append(report)
        for item_id, item in items.items():
            found.setdefault(item_id, item)
    return found


def _with_reviews(
    ratings: list[Path],
    reviews: list[Interaction],
    metadata: dict[str, ItemMeta],
    reports: list[LoadReport],
    counts: Counter,
) -> list[Interaction]:
    """Ratings as interactions, each with its review's text where a review file has the (user, item)."""
    text_of = {(r.user_id, r.item_id): r for r in reviews}
    joined: dict[tuple[str, str], Interaction] = {}
    for file in ratings:
        rows, report = load_amazon2014_ratings(file)
        reports.append(report)
        for row in rows:
            review = text_of.get((row.user_id, row.item_id))
            if review is not None:
                counts["with_review_text"] += 1
                row = row.model_copy(
                    update={"text": review.text, "review_title": review.review_title, "rating": row.rating}
                )
            joined[(row.user_id, row.item_id)] = row
    # Reviews whose (user, item) no ratings file lists are interactions too.
    for key, review in text_of.items():
        if key not in joined:
            counts["reviews_without_rating_row"] += 1
            joined[key] = review
    out = []
    for interaction in joined.values():
        item = metadata.get(interaction.item_id)
        if item is not None and not interaction.item_title:
            interaction = interaction.model_copy(
                update={"item_title": item.title, "item_description": item.description, "item_category": item.category}
            )
        out.append(interaction)
    return out


def _items(interactions: list[Interaction], metadata: dict[str, ItemMeta], counts: Counter) -> dict[str, RecItem]:
    items = {}
    for interaction in interactions:
        if interaction.item_id in items:
            continue
        item = metadata.get(interaction.item_id)
        if item is None and not interaction.item_title:
            counts["items_without_metadata"] += 1
        items[interaction.item_id] = RecItem(
            item_id=interaction.item_id,
            title=(item.title if item else "") or interaction.item_title,
            category=(item.category if item else "") or interaction.item_category,
            description=(item.description if item else "") or interaction.item_description,
        )
    return items


def leave_one_out(interactions: list[Interaction], counts: Counter) -> tuple[list[Interaction], list[RecSplit]]:
    """Interactions ordered by (user, time, item) and each one's split; short histories counted."""
    by_user: dict[str, list[Interaction]] = defaultdict(list)
    for interaction in interactions:
        by_user[interaction.user_id].append(interaction)
    ordered: list[Interaction] = []
    splits: list[RecSplit] = []
    for user in sorted(by_user):
        history = sorted(by_user[user], key=lambda i: (i.timestamp, i.item_id))
        n = len(history)
        if n == 1:
            counts["users_with_one_interaction_train_only"] += 1
        elif n == 2:
            counts["users_with_two_interactions_no_validation"] += 1
        held: list[RecSplit] = ["validation", "test"] if n >= 3 else ["test"] if n == 2 else []
        ordered.extend(history)
        splits.extend(["train"] * (n - len(held)) + held)
    counts["users"] = len(by_user)
    counts["interactions"] = len(ordered)
    return ordered, splits
