"""Readers for Amazon review data: every format becomes a list of ``Interaction`` and a ``LoadReport``.

Formats: Amazon 2014 reviews (headerless CSV, JSON lines, Python-literal lines, plain or gzipped)
with item metadata joined by asin; Amazon Reviews 2023 review and meta JSON lines; the
``amazon2023-sample`` layout (one row per user and category with a ``history`` and a ``heldout``
review); DPL-style lines ``{user_id, profile, target}``, which ``write_dpl_jsonl`` also writes.
``load_path`` detects the format of a file or a directory.

Every record a loader reads is either kept or dropped under a reason with file and 1-based line,
so ``report.read == report.kept + sum(report.dropped.values())``. Blank lines are not records.
Decisions a reader of a report should know:

- A missing rating is kept as ``None`` (noted as ``rating_missing``); a rating that is not a number
  or lies outside 1..5 is dropped as ``bad_rating``.
- Of several reviews of one item by one user the most recent is kept; the others are dropped as
  ``duplicate``, or as ``repeated_review`` when they are exact copies (DPL files repeat a user's
  profile in each of their examples).
- Reviews whose item has no metadata are kept with empty item fields and noted (``no_item_metadata``).
- Text fields longer than ``MAX_TEXT_CHARS`` are truncated and noted, bytes that are not UTF-8
  are replaced and noted, and a truncated gzip is read up to its last whole line and noted.
- A ratings-only file (the 2014 ``ratings_full.csv``: no text) loads with empty texts and a note;
  in a directory it is skipped when a file with review text is there.
"""

from __future__ import annotations

import ast
import csv
import gzip
import html
import io
import json
import math
import re
import zlib
from collections import Counter, deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from copersona.data.records import Example, Interaction, LoadReport

MAX_TEXT_CHARS = 20_000

# Detected formats, as ``detect_format`` names them.
AMAZON2014_CSV = "amazon2014_csv"
AMAZON2014_RATINGS_CSV = "amazon2014_ratings_csv"
AMAZON2014_JSON = "amazon2014_json"  # strict JSON or Python-literal lines
AMAZON2023_JSON = "amazon2023_json"
SAMPLE_JSONL = "sample_jsonl"
DPL_JSONL = "dpl_jsonl"
ITEM_META_CSV = "item_meta_csv"
ITEM_META_JSON = "item_meta_json"
EMPTY = "empty"

_META_FORMATS = {ITEM_META_CSV, ITEM_META_JSON}
_DATA_SUFFIXES = {".csv", ".json", ".jsonl", ".gz"}

# Column order of the headerless 2014 CSV exports in shared/data.
_REVIEW_COLUMNS_2014 = [
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
_RATING_COLUMNS_2014 = ["reviewerid", "asin", "overall", "unixreviewtime", "helpful_num", "helpful_den"]

_GZIP_MAGIC = b"\x1f\x8b"
# Lines looked at to detect a format, so a few broken lines at the top do not hide it.
_SNIFF_LINES = 20
# A quoted CSV field may span lines; past this many a stray quote is the likelier explanation.
_MAX_CSV_RECORD_LINES = 200
# Large enough for any text we would truncate plus the rest of its record; set only while parsing.
_CSV_FIELD_LIMIT = 1 << 24
# Unix seconds at 2100-01-01: later values are unit mix-ups (milliseconds read as seconds).
_LATEST_TIMESTAMP = 4_102_444_800

_NOTE_TEXTS = {
    "text_truncated": f"text fields longer than {MAX_TEXT_CHARS} characters were truncated",
    "non_utf8": "lines had bytes that are not UTF-8; they were replaced by U+FFFD",
    "rating_missing": "reviews have no rating; kept with rating None",
    "no_item_metadata": "reviews have no item metadata; kept with empty item fields",
    "ratings_only": "records carry no review text (a ratings-only file); kept with empty text",
}

_BREAK_TAG = re.compile(r"<br\s*/?>", re.IGNORECASE)
_INLINE_SPACE = re.compile(r"[^\S\n]+")
_BLANK_LINES = re.compile(r"\n{3,}")


@dataclass(frozen=True)
class ItemMeta:
    """What item metadata contributes to an interaction."""

    title: str = ""
    description: str = ""
    category: str = ""


def clean_text(value: object) -> str:
    """Decode HTML entities and ``<br />``, collapse spaces, keep paragraph breaks; lists are joined by lines."""
    if value is None:
        return ""
    if isinstance(value, (list, tuple)):
        return "\n".join(part for part in (clean_text(item) for item in value) if part)
    text = _BREAK_TAG.sub("\n", html.unescape(str(value)))
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    text = "\n".join(_INLINE_SPACE.sub(" ", line).strip() for line in text.split("\n"))
    return _BLANK_LINES.sub("\n\n", text).strip()


# ----------------------------------------------------------------------------------------- collection


@dataclass
class _Located:
    interaction: Interaction
    path: str
    line: int
    order: int


class _Collector:
    """One load's records, drops and notes; ``finish`` dedupes, joins metadata and fills the report."""

    def __init__(self, source: str) -> None:
        self.report = LoadReport(source=source)
        self.records: list[_Located] = []
        self.notes: Counter = Counter()

    def drop(self, reason: str, path: str, line: int, detail: str = "") -> None:
        self.report.drop(reason, path, line, detail)

    def text(self, value: object) -> str:
        text = clean_text(value)
        if len(text) > MAX_TEXT_CHARS:
            self.notes["text_truncated"] += 1
            text = text[:MAX_TEXT_CHARS]
        return text

    def add(
        self,
        path: str,
        line: int,
        *,
        user_id: object,
        item_id: object,
        timestamp: object,
        rating: object,
        review_title: object = "",
        text: object = "",
        item_title: object = "",
        item_description: object = "",
        item_category: object = "",
        units_per_second: int = 1,
        ratings_only: bool = False,
    ) -> None:
        """Validate one review record (already counted as read) and keep it or drop it."""
        user = _identifier(user_id)
        item = _identifier(item_id)
        seconds = _unix_seconds(timestamp, units_per_second)
        score, rating_ok = _rating(rating)
        if not user:
            return self.drop("missing_user_id", path, line, f"user id {user_id!r}")
        if not item:
            return self.drop("missing_item_id", path, line, f"item id {item_id!r}")
        if seconds is None:
            return self.drop("bad_timestamp", path, line, f"timestamp {timestamp!r}")
        if not rating_ok:
            return self.drop("bad_rating", path, line, f"rating {rating!r}")
        body = self.text(text)
        if not body and not ratings_only:
            return self.drop("empty_text", path, line, f"user {user} item {item}")
        if score is None:
            self.notes["rating_missing"] += 1
        if ratings_only:
            self.notes["ratings_only"] += 1
        interaction = Interaction(
            user_id=user,
            item_id=item,
            timestamp=seconds,
            rating=score,
            review_title=self.text(review_title),
            text=body,
            item_title=self.text(item_title),
            item_description=self.text(item_description),
            item_category=self.text(item_category),
        )
        self.records.append(_Located(interaction, path, line, len(self.records)))

    def finish(self, meta: dict[str, ItemMeta] | None = None) -> tuple[list[Interaction], LoadReport]:
        latest: dict[tuple[str, str], _Located] = {}
        for record in self.records:
            key = (record.interaction.user_id, record.interaction.item_id)
            current = latest.get(key)
            if current is None:
                latest[key] = record
                continue
            newer, older = (record, current) if _recency(record) > _recency(current) else (current, record)
            latest[key] = newer
            reason = "repeated_review" if older.interaction == newer.interaction else "duplicate"
            self.drop(reason, older.path, older.line, f"user {key[0]} item {key[1]}: a later review is kept")
        interactions = [_with_meta(record.interaction, meta, self.notes) for record in latest.values()]
        interactions.sort(key=lambda i: (i.user_id, i.timestamp, i.item_id))
        self.report.kept = len(interactions)
        self.flush_notes()
        return interactions, self.report

    def flush_notes(self) -> None:
        """Write the counted notes into the report as ``name: count explanation`` lines."""
        counted = ((name, text) for name, text in _NOTE_TEXTS.items() if self.notes[name])
        self.report.notes.extend(f"{name}: {self.notes[name]} {text}" for name, text in counted)


def _recency(record: _Located) -> tuple[int, int]:
    # The later of two equally dated reviews in read order wins.
    return record.interaction.timestamp, record.order


def _with_meta(interaction: Interaction, meta: dict[str, ItemMeta] | None, notes: Counter) -> Interaction:
    if meta is None:
        return interaction
    item = meta.get(interaction.item_id)
    if item is None:
        notes["no_item_metadata"] += 1
        return interaction
    # Metadata fills what the review lacks; it never overwrites what the review file says.
    update = {
        field: value
        for field, value in (
            ("item_title", item.title),
            ("item_description", item.description),
            ("item_category", item.category),
        )
        if value and not getattr(interaction, field)
    }
    return interaction.model_copy(update=update) if update else interaction


def _identifier(value: object) -> str:
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        return ""
    return str(value).strip()


def _unix_seconds(value: object, units_per_second: int) -> int | None:
    if value is None or isinstance(value, bool):
        return None
    try:
        number = value if isinstance(value, int) else float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    if isinstance(number, float) and not math.isfinite(number):
        return None
    seconds = int(number // units_per_second)
    return seconds if 0 < seconds < _LATEST_TIMESTAMP else None


def _rating(value: object) -> tuple[float | None, bool]:
    """(rating, valid): missing is valid with None; a non-number or one outside 1..5 is not."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return None, True
    if isinstance(value, bool):
        return None, False
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None, False
    return (number, True) if 1 <= number <= 5 else (None, False)  # NaN fails both comparisons


# ---------------------------------------------------------------------------------------- raw lines


def _numbered_lines(path: Path, collector: _Collector) -> Iterator[tuple[int, str]]:
    """(1-based line number, text) of every line, blank ones included; gzip is detected by content."""
    opener = gzip.open if _is_gzip(path, collector) else open
    with opener(path, "rb") as handle:
        number = 0
        # A line is yielded once the next read succeeds: in a truncated gzip the last one may be cut.
        held: bytes | None = None
        try:
            for chunk in handle:
                if held is not None:
                    number += 1
                    yield number, _decode(held, number, collector)
                held = chunk
        except (EOFError, zlib.error, gzip.BadGzipFile) as err:
            if held is not None and held.endswith(b"\n"):
                number += 1
                yield number, _decode(held, number, collector)
            collector.report.notes.append(f"truncated gzip: stopped after line {number} of {path} ({err})")
            return
        if held is not None:
            number += 1
            yield number, _decode(held, number, collector)


def _is_gzip(path: Path, collector: _Collector) -> bool:
    """Whether the file is gzip: it starts with the magic and decompresses (a plain line may start so)."""
    with path.open("rb") as handle:
        if handle.read(2) != _GZIP_MAGIC:
            return False
    try:
        with gzip.open(path, "rb") as handle:
            handle.read(1)
    except (EOFError, zlib.error, gzip.BadGzipFile):
        collector.report.notes.append(f"{path} starts like gzip but does not decompress; read as plain text")
        return False
    return True


def _decode(raw: bytes, number: int, collector: _Collector) -> str:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        collector.notes["non_utf8"] += 1
        text = raw.decode("utf-8", errors="replace")
    text = text.rstrip("\r\n")
    return text.removeprefix("\ufeff") if number == 1 else text


def _parse_object(text: str) -> dict | None:
    """A JSON object, or a Python dict literal (the older McAuley files); None for anything else."""
    try:
        value = json.loads(text)
    except (ValueError, RecursionError):
        if not text.lstrip().startswith("{"):
            return None
        try:
            value = ast.literal_eval(text.strip())
        except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
            return None
    return value if isinstance(value, dict) else None


def _objects(path: Path, collector: _Collector) -> Iterator[tuple[int, dict]]:
    """Each line's object; a line that is not one is read and dropped as one record."""
    for number, text in _numbered_lines(path, collector):
        if not text.strip():
            continue
        value = _parse_object(text)
        if value is None:
            collector.report.read += 1
            collector.drop("malformed_line", str(path), number, text[:120])
            continue
        yield number, value


def _parse_csv_rows(text: str) -> list[list[str]] | None:
    # The field limit is raised for this call only: a truncatable huge text must not fail the parse.
    previous = csv.field_size_limit(_CSV_FIELD_LIMIT)
    try:
        return list(csv.reader(io.StringIO(text, newline="")))
    except csv.Error:
        return None
    finally:
        csv.field_size_limit(previous)


def _parse_csv_record(text: str) -> list[str] | None:
    rows = _parse_csv_rows(text)
    return rows[0] if rows is not None and len(rows) == 1 else None


def _csv_records(
    lines: Iterable[tuple[int, str]], path: Path, collector: _Collector, width: int
) -> Iterator[tuple[int, list[str]]]:
    """Records of ``width`` fields with their first line; each other record is counted and dropped.

    A line with an odd number of quotes opens a quoted field that continues on the next lines. If
    those lines do not close it into one record of the right width, the opening line is judged on
    its own (a stray quote) and the lines after it are read again, so one bad line never takes
    good ones with it.
    """
    source = iter(lines)
    pushed_back: deque[tuple[int, str]] = deque()

    def next_line() -> tuple[int, str] | None:
        return pushed_back.popleft() if pushed_back else next(source, None)

    while (first := next_line()) is not None:
        number, text = first
        if not text.strip():
            continue
        collector.report.read += 1
        chunk = [first]
        quotes = text.count('"')
        while quotes % 2 and len(chunk) < _MAX_CSV_RECORD_LINES:
            following = next_line()
            if following is None:
                break
            chunk.append(following)
            quotes += following[1].count('"')
        if len(chunk) > 1:
            fields = _parse_csv_record("\n".join(line for _, line in chunk))
            if fields is not None and len(fields) == width:
                yield number, fields
                continue
            pushed_back.extendleft(reversed(chunk[1:]))
        fields = _parse_csv_record(text)
        if fields is not None and len(fields) == width:
            yield number, fields
        else:
            seen = "unparsable" if fields is None else f"{len(fields)} fields"
            detail = f"expected {width} fields, got {seen}: {text[:120]}"
            collector.drop("malformed_csv", str(path), number, detail)


# ------------------------------------------------------------------------------------ review readers


def _csv_layout(path: Path, default_columns: list[str]) -> tuple[list[str], bool]:
    """(lower-case column names, whether the first record is a header naming them)."""
    for _, text in _first_nonblank_lines(path):
        names = [field.strip().lower() for field in _parse_csv_record(text) or []]
        if {"reviewerid", "product id", "asin", "parent_asin"} & set(names):
            return names, True
        return default_columns, False
    return default_columns, False


def _read_2014_csv(path: Path, collector: _Collector, default_columns: list[str], ratings_only: bool) -> None:
    columns, has_header = _csv_layout(path, default_columns)
    lines = _numbered_lines(path, collector)
    if has_header:
        lines = _after_first_nonblank(lines)
    for number, fields in _csv_records(lines, path, collector, len(columns)):
        row = dict(zip(columns, fields))
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


def _after_first_nonblank(lines: Iterator[tuple[int, str]]) -> Iterator[tuple[int, str]]:
    """The lines after the header (the first non-blank line)."""
    header_seen = False
    for number, text in lines:
        if not header_seen and text.strip():
            header_seen = True
            continue
        yield number, text


def _read_2014_review_csv(path: Path, collector: _Collector) -> None:
    _read_2014_csv(path, collector, _REVIEW_COLUMNS_2014, ratings_only=False)


def _read_2014_ratings_csv(path: Path, collector: _Collector) -> None:
    _read_2014_csv(path, collector, _RATING_COLUMNS_2014, ratings_only=True)


def _read_2014_json(path: Path, collector: _Collector) -> None:
    for number, row in _objects(path, collector):
        collector.report.read += 1
        collector.add(
            str(path),
            number,
            user_id=row.get("reviewerID"),
            item_id=row.get("asin"),
            timestamp=row.get("unixReviewTime"),
            rating=row.get("overall"),
            review_title=row.get("summary", ""),
            text=row.get("reviewText", ""),
        )


def _read_2023_json(path: Path, collector: _Collector) -> None:
    for number, row in _objects(path, collector):
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


def _read_sample(path: Path, collector: _Collector) -> None:
    """Rows ``{user_id, category, history, heldout}``; every review in a row is one record."""
    for number, row in _objects(path, collector):
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


def _read_dpl(path: Path, collector: _Collector) -> None:
    """Lines ``{user_id, profile: [review], target: review}`` (``data`` is the paper's name for target)."""
    for number, row in _objects(path, collector):
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


_READERS = {
    AMAZON2014_CSV: _read_2014_review_csv,
    AMAZON2014_RATINGS_CSV: _read_2014_ratings_csv,
    AMAZON2014_JSON: _read_2014_json,
    AMAZON2023_JSON: _read_2023_json,
    SAMPLE_JSONL: _read_sample,
    DPL_JSONL: _read_dpl,
}


# ----------------------------------------------------------------------------------------- metadata


def load_item_metadata(path: str | Path) -> tuple[dict[str, ItemMeta], LoadReport]:
    """Item metadata by item id, from the 2014 ``meta.csv`` or 2014/2023 meta JSON lines (maybe gzipped).

    In the 2014 ``meta.csv`` the ``Description`` column holds the product title, so a CSV without a
    ``Title`` column has its ``Description`` read as the title. The first record of an item wins.
    """
    path = _existing(path)
    collector = _Collector(str(path))
    items: dict[str, ItemMeta] = {}
    kind = detect_format(path)
    if kind == ITEM_META_CSV:
        records = _meta_csv_records(path, collector)
    elif kind == ITEM_META_JSON:
        records = _meta_json_records(path, collector)
    elif kind == EMPTY:
        records = iter(())
    else:
        raise ValueError(f"{path}: expected item metadata, found {kind}")
    for number, item_id, meta in records:
        if not item_id:
            collector.drop("missing_item_id", str(path), number)
        elif item_id in items:
            collector.drop("duplicate", str(path), number, f"item {item_id} already read")
        else:
            items[item_id] = meta
    collector.report.kept = len(items)
    collector.flush_notes()
    return items, collector.report


def _meta_csv_records(path: Path, collector: _Collector) -> Iterator[tuple[int, str, ItemMeta]]:
    columns, _ = _csv_layout(path, [])
    position = {name: index for index, name in enumerate(columns)}

    def column(fields: list[str], *names: str) -> str:
        return next((fields[position[name]] for name in names if name in position), "")

    has_title = "title" in position
    lines = _after_first_nonblank(_numbered_lines(path, collector))
    for number, fields in _csv_records(lines, path, collector, len(columns)):
        meta = ItemMeta(
            title=collector.text(column(fields, "title") if has_title else column(fields, "description")),
            description=collector.text(column(fields, "description")) if has_title else "",
            category=collector.text(column(fields, "category", "main_category", "categories")),
        )
        yield number, _identifier(column(fields, "product id", "parent_asin", "asin", "item_id")), meta


def _meta_json_records(path: Path, collector: _Collector) -> Iterator[tuple[int, str, ItemMeta]]:
    for number, row in _objects(path, collector):
        collector.report.read += 1
        category = _leaf_category(row.get("categories")) or _leaf_category(row.get("category"))
        meta = ItemMeta(
            title=collector.text(row.get("title")),
            description=collector.text(row.get("description")),
            category=collector.text(category or row.get("main_category")),
        )
        yield number, _identifier(row.get("parent_asin") or row.get("asin")), meta


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


# ---------------------------------------------------------------------------------------- detection


def detect_format(path: str | Path) -> str:
    """The format of one file, judged by its first recognisable line among the first few."""
    path = _existing(path)
    lines = list(_first_nonblank_lines(path))
    if not lines:
        return EMPTY
    for number, text in lines:
        is_object = text.lstrip().startswith("{")
        kind = _object_format(path, number, text) if is_object else _csv_format(_parse_csv_record(text))
        if kind:
            return kind
    # A CSV whose first records span lines (quoted newlines) is only recognisable as a whole.
    for fields in _parse_csv_rows("\n".join(text for _, text in lines)) or []:
        if kind := _csv_format(fields):
            return kind
    number, text = lines[0]
    raise ValueError(
        f"{path}: unknown format; line {number} starts {text[:120]!r}. Expected Amazon 2014 reviews (CSV, "
        "JSON or Python-literal lines), Amazon 2023 reviews or meta, the amazon2023-sample layout, DPL "
        "lines, or item metadata"
    )


def _first_nonblank_lines(path: Path) -> Iterator[tuple[int, str]]:
    """The first few non-blank lines, for sniffing (what reading them notes is not kept)."""
    seen = 0
    for number, text in _numbered_lines(path, _Collector(str(path))):
        if text.strip():
            yield number, text
            seen += 1
            if seen == _SNIFF_LINES:
                return


def _object_format(path: Path, number: int, text: str) -> str | None:
    row = _parse_object(text)
    if row is None:
        return None
    if "history" in row:
        return SAMPLE_JSONL
    if "profile" in row and ("target" in row or "data" in row):
        return DPL_JSONL
    if "reviewerID" in row:
        return AMAZON2014_JSON
    if "user_id" in row and ("parent_asin" in row or "asin" in row):
        return AMAZON2023_JSON
    if "asin" in row or "parent_asin" in row:
        return ITEM_META_JSON
    raise ValueError(
        f"{path}: line {number} is an object with keys {sorted(map(str, row))[:12]}, which match no known "
        "layout (need history; profile+target; reviewerID; user_id+parent_asin; or asin for item metadata)"
    )


def _csv_format(fields: list[str] | None) -> str | None:
    if not fields:
        return None
    names = {field.strip().lower() for field in fields}
    if "reviewerid" in names:
        return AMAZON2014_CSV if "reviewtext" in names else AMAZON2014_RATINGS_CSV
    if names & {"product id", "asin", "parent_asin"}:
        return ITEM_META_CSV
    if len(fields) == len(_REVIEW_COLUMNS_2014):
        return AMAZON2014_CSV
    if len(fields) == len(_RATING_COLUMNS_2014):
        return AMAZON2014_RATINGS_CSV
    return None


def _existing(path: str | Path) -> Path:
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file or directory")
    return path


# ------------------------------------------------------------------------------------ entry points


def load_path(path: str | Path, *, meta: str | Path | None = None) -> tuple[list[Interaction], LoadReport]:
    """Load a review file or a directory of them, detecting the format; ``meta`` adds item metadata.

    A directory contributes all its review files (``.csv``, ``.json``, ``.jsonl``, ``.gz``) and, unless
    ``meta`` is given, its item metadata files. Ratings-only files are skipped when a file with
    review text is there.
    """
    path = _existing(path)
    if path.is_dir():
        return _load_directory(path, meta)
    kind = detect_format(path)
    if kind in _META_FORMATS:
        raise ValueError(f"{path}: this is item metadata ({kind}); pass it as meta= next to a review file")
    collector = _Collector(str(path))
    if kind == EMPTY:
        collector.report.notes.append(f"{path} is empty")
    else:
        _READERS[kind](path, collector)
    return collector.finish(_metadata(meta, collector))


def _load_directory(directory: Path, meta: str | Path | None) -> tuple[list[Interaction], LoadReport]:
    collector = _Collector(str(directory))
    found: dict[str, list[Path]] = {}
    for file in sorted(directory.iterdir()):
        if not file.is_file() or file.name.startswith(".") or file.suffix.lower() not in _DATA_SUFFIXES:
            continue
        try:
            found.setdefault(detect_format(file), []).append(file)
        except ValueError as err:
            collector.report.notes.append(f"skipped {file.name}: {err}")
    collector.report.notes.extend(f"skipped {file.name}: empty" for file in found.get(EMPTY, []))
    text_kinds = [kind for kind in _READERS if kind != AMAZON2014_RATINGS_CSV and found.get(kind)]
    if text_kinds:
        collector.report.notes.extend(
            f"skipped {file.name}: ratings without review text (load it by its own path to use it)"
            for file in found.get(AMAZON2014_RATINGS_CSV, [])
        )
    chosen_kinds = text_kinds or [kind for kind in [AMAZON2014_RATINGS_CSV] if found.get(kind)]
    if not chosen_kinds:
        seen = {kind: [file.name for file in files] for kind, files in found.items()}
        raise ValueError(f"{directory}: no review file found (found {seen or 'no data files'})")
    for kind in chosen_kinds:
        for file in found[kind]:
            _READERS[kind](file, collector)
    meta_files = [meta] if meta is not None else [*found.get(ITEM_META_CSV, []), *found.get(ITEM_META_JSON, [])]
    if not meta_files:
        return collector.finish(None)
    items: dict[str, ItemMeta] = {}
    for meta_file in meta_files:
        for item_id, item in (_metadata(meta_file, collector) or {}).items():
            items.setdefault(item_id, item)  # the first file that describes an item wins
    return collector.finish(items)


def _metadata(meta: str | Path | None, collector: _Collector) -> dict[str, ItemMeta] | None:
    if meta is None:
        return None
    items, report = load_item_metadata(meta)
    collector.report.notes.append(f"item metadata {report.summary_line()}")
    return items


def _load_one(kind: str, path: str | Path, meta: str | Path | None) -> tuple[list[Interaction], LoadReport]:
    path = _existing(path)
    collector = _Collector(str(path))
    _READERS[kind](path, collector)
    return collector.finish(_metadata(meta, collector))


def load_amazon2014_reviews(
    path: str | Path, *, meta: str | Path | None = None
) -> tuple[list[Interaction], LoadReport]:
    """2014 reviews: headerless CSV (or CSV with a header naming the columns), JSON or Python-literal lines."""
    kind = detect_format(path)
    if kind == EMPTY:
        kind = AMAZON2014_JSON
    if kind not in (AMAZON2014_CSV, AMAZON2014_JSON):
        raise ValueError(f"{path}: expected Amazon 2014 reviews, found {kind}")
    return _load_one(kind, path, meta)


def load_amazon2014_ratings(path: str | Path) -> tuple[list[Interaction], LoadReport]:
    """The 2014 ratings-only CSV (``reviewerID, asin, overall, unixReviewTime, ...``): empty texts, noted."""
    return _load_one(AMAZON2014_RATINGS_CSV, path, None)


def load_amazon2023_reviews(
    path: str | Path, *, meta: str | Path | None = None
) -> tuple[list[Interaction], LoadReport]:
    """Amazon Reviews 2023 review lines (timestamps in milliseconds), plain or gzipped."""
    return _load_one(AMAZON2023_JSON, path, meta)


def load_sample(
    paths: str | Path | Iterable[str | Path], *, meta: str | Path | None = None
) -> tuple[list[Interaction], LoadReport]:
    """The amazon2023-sample layout, one or several files; a user's rows are merged."""
    files = [_existing(paths)] if isinstance(paths, (str, Path)) else [_existing(p) for p in paths]
    collector = _Collector(", ".join(map(str, files)))
    for file in files:
        _read_sample(file, collector)
    return collector.finish(_metadata(meta, collector))


def load_dpl_jsonl(path: str | Path) -> tuple[list[Interaction], LoadReport]:
    """DPL-style lines; a user's profile repeats in each of their examples: the copies count as ``repeated_review``."""
    return _load_one(DPL_JSONL, path, None)


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
