"""DPL-style lines ``{user_id, profile, target}``: read as reviews, and written by ``write_dpl_jsonl``."""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

from copersona.data.loaders.reading import Collector, objects
from copersona.data.records import Example


def read_dpl(path: Path, collector: Collector) -> None:
    """Lines ``{user_id, profile: [review], target: review}`` (``data`` is the paper's name for target)."""
    for number, row in objects(path, collector):
        profile = row.get("profile")
        target = row.get("target", row.get("data"))
        if not isinstance(profile, list) or not isinstance(target, dict):
            collector.report.read += 1
            collector.drop("malformed_line", str(path), number, "row needs a profile list and a target object")
            continue
        for review in [*profile, target]:
            collector.report.read += 1
            if not isinstance(review, dict):
                collector.drop("malformed_line", str(path), number, f"review is not an object: {str(review)[:80]}")
                continue
            collector.add(
                str(path),
                number,
                user_id=review.get("user_id") or row.get("user_id"),
                item_id=review.get("item_id") or review.get("parent_asin") or review.get("asin"),
                timestamp=review.get("timestamp"),
                rating=review.get("rating"),
                review_title=review.get("review_title", ""),
                text=review.get("text", ""),
                item_title=review.get("item_title", ""),
                item_description=review.get("item_description", ""),
                item_category=review.get("item_category", ""),
            )


def write_dpl_jsonl(examples: Iterable[Example], path: str | Path) -> int:
    """Write one ``{user_id, split, profile, target}`` line per example; returns the number written."""
    written = 0
    with Path(path).open("w", encoding="utf-8") as handle:
        for example in examples:
            row = {
                "user_id": example.user_id,
                "split": example.split,
                "profile": [interaction.model_dump() for interaction in example.profile],
                "target": example.target.model_dump(),
            }
            handle.write(json.dumps(row, ensure_ascii=False) + "\n")
            written += 1
    return written
