"""Amazon 2014 reviews: headerless CSV (or CSV with a header naming the columns), JSON or Python-literal
lines, plain or gzipped; and the ratings-only CSV.

A ratings-only file (the 2014 ``ratings_full.csv``: no text) loads with empty texts and a note;
in a directory it is skipped when a file with review text is there.
"""

from __future__ import annotations

from pathlib import Path

from copersona.data.loaders.reading import (
    Collector,
    after_first_nonblank,
    csv_layout,
    csv_records,
    numbered_lines,
    objects,
)

# Column order of the headerless 2014 CSV exports in shared/data.
REVIEW_COLUMNS_2014 = [
    "reviewerid",
    "asin",
    "reviewername",
    "helpful",
    "reviewtext",
    "overall",
    "summary",
    "unixreviewtime",
    "reviewtime",
]
RATING_COLUMNS_2014 = ["reviewerid", "asin", "overall", "unixreviewtime", "helpful_num", "helpful_den"]


def _add_review(collector: Collector, path: Path, number: int, row: dict, ratings_only: bool = False) -> None:
    """One 2014 review record, its field names lower-cased (CSV headers and JSON keys differ in case)."""
    collector.add(
        str(path),
        number,
        user_id=row.get("reviewerid"),
        item_id=row.get("asin"),
        timestamp=row.get("unixreviewtime"),
        rating=row.get("overall"),
        review_title=row.get("summary", ""),
        text=row.get("reviewtext", ""),
        ratings_only=ratings_only,
    )


def _read_2014_csv(path: Path, collector: Collector, default_columns: list[str], ratings_only: bool) -> None:
    columns, has_header = csv_layout(path, default_columns)
    lines = numbered_lines(path, collector)
    if has_header:
        lines = after_first_nonblank(lines)
    for number, fields in csv_records(lines, path, collector, len(columns)):
        _add_review(collector, path, number, dict(zip(columns, fields)), ratings_only)


def read_2014_review_csv(path: Path, collector: Collector) -> None:
    _read_2014_csv(path, collector, REVIEW_COLUMNS_2014, ratings_only=False)


def read_2014_ratings_csv(path: Path, collector: Collector) -> None:
    _read_2014_csv(path, collector, RATING_COLUMNS_2014, ratings_only=True)


def read_2014_json(path: Path, collector: Collector) -> None:
    for number, row in objects(path, collector):
        collector.report.read += 1
        _add_review(collector, path, number, {str(key).lower(): value for key, value in row.items()})
