"""What every loader shares: numbered lines of plain or gzipped files, CSV records, JSON or Python-literal
objects, text cleaning, and the ``Collector`` that validates, dedupes and joins one load's records.

Decisions a reader of a report should know:

- A missing rating is kept as ``None`` (noted as ``rating_missing``); a rating that is not a number
  or lies outside 1..5 is dropped as ``bad_rating``.
- Of several reviews of one item by one user the most recent is kept; the others are dropped as
  ``duplicate``, or as ``repeated_review`` when they are exact copies (DPL files repeat a user's
  profile in each of their examples).
- Reviews whose item has no metadata are kept with empty item fields and noted (``no_item_metadata``).
- Text fields longer than ``MAX_TEXT_CHARS`` are truncated and noted, bytes that are not UTF-8
  are replaced and noted, and a truncated gzip is read up to its last whole line and noted.
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

from copersona.data.records import Interaction, LoadReport

MAX_TEXT_CHARS = 20_000

_GZIP_MAGIC = b"\x1f\x8b"
# Lines looked at to detect a format, so a few broken lines at the top do not hide it.
_SNIFF_LINES = 20
# A quoted CSV field may span lines; past this many a stray quote is the likelier explanation.
_MAX_CSV_RECORD_LINES = 200
# Large enough for any text we would truncate plus the rest of its record; set only while parsing.
_CSV_FIELD_LIMIT = 1 << 24
# Unix seconds at 2100-01-01: later values are unit mix-ups (milliseconds read as seconds).
_LATEST_TIMESTAMP = 4_102_444_800

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


class Collector:
    """One load's records and drops; ``finish`` dedupes, joins metadata and fills the report.

    Records kept with a caveat are counted in ``report.flagged``: ``text_truncated`` (a text field
    over ``MAX_TEXT_CHARS``, cut), ``non_utf8`` (bytes replaced by U+FFFD), ``rating_missing`` (kept
    with rating None), ``no_item_metadata`` (kept with empty item fields) and ``ratings_only`` (a
    ratings-only file: kept with empty text).
    """

    def __init__(self, source: str) -> None:
        self.report = LoadReport(source=source)
        self.records: list[_Located] = []

    def drop(self, reason: str, path: str, line: int, detail: str = "") -> None:
        self.report.drop(reason, path, line, detail)

    def text(self, value: object) -> str:
        text = clean_text(value)
        if len(text) > MAX_TEXT_CHARS:
            self.report.flagged["text_truncated"] += 1
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
        user = identifier(user_id)
        item = identifier(item_id)
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
            self.report.flagged["rating_missing"] += 1
        if ratings_only:
            self.report.flagged["ratings_only"] += 1
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
        interactions = [_with_meta(record.interaction, meta, self.report.flagged) for record in latest.values()]
        interactions.sort(key=lambda i: (i.user_id, i.timestamp, i.item_id))
        self.report.kept = len(interactions)
        return interactions, self.report


def _recency(record: _Located) -> tuple[int, int]:
    # The later of two equally dated reviews in read order wins.
    return record.interaction.timestamp, record.order


def _with_meta(interaction: Interaction, meta: dict[str, ItemMeta] | None, flagged: Counter) -> Interaction:
    if meta is None:
        return interaction
    item = meta.get(interaction.item_id)
    if item is None:
        flagged["no_item_metadata"] += 1
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


def identifier(value: object) -> str:
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


def numbered_lines(path: Path, collector: Collector) -> Iterator[tuple[int, str]]:
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


def _is_gzip(path: Path, collector: Collector) -> bool:
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


def _decode(raw: bytes, number: int, collector: Collector) -> str:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        collector.report.flagged["non_utf8"] += 1
        text = raw.decode("utf-8", errors="replace")
    text = text.rstrip("\r\n")
    return text.removeprefix("\ufeff") if number == 1 else text


def parse_object(text: str) -> dict | None:
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


def objects(path: Path, collector: Collector) -> Iterator[tuple[int, dict]]:
    """Each line's object; a line that is not one is read and dropped as one record."""
    for number, text in numbered_lines(path, collector):
        if not text.strip():
            continue
        value = parse_object(text)
        if value is None:
            collector.report.read += 1
            collector.drop("malformed_line", str(path), number, text[:120])
            continue
        yield number, value


def parse_csv_rows(text: str) -> list[list[str]] | None:
    # The field limit is raised for this call only: a truncatable huge text must not fail the parse.
    previous = csv.field_size_limit(_CSV_FIELD_LIMIT)
    try:
        return list(csv.reader(io.StringIO(text, newline="")))
    except csv.Error:
        return None
    finally:
        csv.field_size_limit(previous)


def parse_csv_record(text: str) -> list[str] | None:
    rows = parse_csv_rows(text)
    return rows[0] if rows is not None and len(rows) == 1 else None


def csv_records(
    lines: Iterable[tuple[int, str]], path: Path, collector: Collector, width: int
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
            fields = parse_csv_record("\n".join(line for _, line in chunk))
            if fields is not None and len(fields) == width:
                yield number, fields
                continue
            pushed_back.extendleft(reversed(chunk[1:]))
        fields = parse_csv_record(text)
        if fields is not None and len(fields) == width:
            yield number, fields
        else:
            seen = "unparsable" if fields is None else f"{len(fields)} fields"
            detail = f"expected {width} fields, got {seen}: {text[:120]}"
            collector.drop("malformed_csv", str(path), number, detail)


# ----------------------------------------------------------------------------------------- sniffing


def first_nonblank_lines(path: Path) -> Iterator[tuple[int, str]]:
    """The first few non-blank lines, for sniffing (what reading them notes is not kept)."""
    seen = 0
    for number, text in numbered_lines(path, Collector(str(path))):
        if text.strip():
            yield number, text
            seen += 1
            if seen == _SNIFF_LINES:
                return


def csv_layout(path: Path, default_columns: list[str]) -> tuple[list[str], bool]:
    """(lower-case column names, whether the first record is a header naming them)."""
    for _, text in first_nonblank_lines(path):
        names = [field.strip().lower() for field in parse_csv_record(text) or []]
        if {"reviewerid", "product id", "asin", "parent_asin"} & set(names):
            return names, True
        return default_columns, False
    return default_columns, False


def after_first_nonblank(lines: Iterator[tuple[int, str]]) -> Iterator[tuple[int, str]]:
    """The lines after the header (the first non-blank line)."""
    header_seen = False
    for number, text in lines:
        if not header_seen and text.strip():
            header_seen = True
            continue
        yield number, text
