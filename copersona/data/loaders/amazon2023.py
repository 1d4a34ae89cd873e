"""Amazon Reviews 2023 review lines (timestamps in milliseconds), plain or gzipped, and the
``amazon2023-sample`` layout: one row per user and category with a ``history`` and a ``heldout`` review.
"""

from __future__ import annotations

from pathlib import Path

from copersona.data.loaders.reading import Collector, objects


def read_2023_json(path: Path, collector: Collector) -> None:
    for number, row in objects(path, collector):
        collector.report.read += 1
        collector.add(
            str(path),
            number,
            user_id=row.get("user_id"),
            item_id=row.get("parent_asin") or row.get("asin"),
            timestamp=row.get("timestamp"),
            rating=row.get("rating"),
            review_title=row.get("title", ""),
            text=row.get("text", ""),
            units_per_second=1000,
        )


def read_sample(path: Path, collector: Collector) -> None:
    """Rows ``{user_id, category, history, heldout}``; every review in a row is one record."""
    for number, row in objects(path, collector):
        history = row.get("history")
        if not isinstance(history, list):
            collector.report.read += 1
            collector.drop("malformed_line", str(path), number, "row has no history list")
            continue
        reviews = history + ([row["heldout"]] if row.get("heldout") is not None else [])
        for review in reviews:
            collector.report.read += 1
            if not isinstance(review, dict):
                collector.drop("malformed_line", str(path), number, f"review is not an object: {str(review)[:80]}")
                continue
            product = review.get("product") if isinstance(review.get("product"), dict) else {}
            collector.add(
                str(path),
                number,
                user_id=row.get("user_id"),
                item_id=review.get("parent_asin") or review.get("asin"),
                timestamp=review.get("timestamp_ms"),
                rating=review.get("rating"),
                review_title=review.get("review_title", ""),
                text=review.get("review_full") or review.get("review_excerpt", ""),
                item_title=product.get("title", ""),
                item_category=product.get("main_category") or row.get("category", ""),
                units_per_second=1000,
            )
