"""Item metadata records, from the 2014 ``meta.csv`` or 2014/2023 meta JSON lines, plain or gzipped.

``load_item_metadata`` (in the package) keeps them by item id; a load's ``Collector`` joins them into its reviews.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from copersona.data.loaders.reading import (
    Collector,
    ItemMeta,
    after_first_nonblank,
    csv_layout,
    csv_records,
    identifier,
    numbered_lines,
    objects,
)


def meta_csv_records(path: Path, collector: Collector) -> Iterator[tuple[int, str, ItemMeta]]:
    columns, _ = csv_layout(path, [])
    position = {name: index for index, name in enumerate(columns)}

    def column(fields: list[str], *names: str) -> str:
        return next((fields[position[name]] for name in names if name in position), "")

    has_title = "title" in position
    lines = after_first_nonblank(numbered_lines(path, collector))
    for number, fields in csv_records(lines, path, collector, len(columns)):
        meta = ItemMeta(
            title=collector.text(column(fields, "title") if has_title else column(fields, "description")),
            description=collector.text(column(fields, "description")) if has_title else "",
            category=collector.text(column(fields, "category", "main_category", "categories")),
        )
        yield number, identifier(column(fields, "product id", "parent_asin", "asin", "item_id")), meta


def meta_json_records(path: Path, collector: Collector) -> Iterator[tuple[int, str, ItemMeta]]:
    for number, row in objects(path, collector):
        collector.report.read += 1
        category = _leaf_category(row.get("categories")) or _leaf_category(row.get("category"))
        meta = ItemMeta(
            title=collector.text(row.get("title")),
            description=collector.text(row.get("description")),
            category=collector.text(category or row.get("main_category")),
        )
        yield number, identifier(row.get("parent_asin") or row.get("asin")), meta


def _leaf_category(value: object) -> str:
    """The most specific category: 2014 nests paths (``[["Music", ..., "Strings"]]``: the first path's
    last entry), 2023 has one flat path."""
    if isinstance(value, str):
        return value
    if not isinstance(value, list) or not value:
        return ""
    path = value[0] if isinstance(value[0], list) else value
    leaves = [entry for entry in path if isinstance(entry, str) and entry.strip()]
    return leaves[-1] if leaves else ""
