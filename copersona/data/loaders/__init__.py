"""Readers for Amazon review data: every format becomes a list of ``Interaction`` and a ``LoadReport``.

Formats, a module each: Amazon 2014 reviews (headerless CSV, JSON lines, Python-literal lines, plain or
gzipped) and the 2014 ratings-only CSV (``amazon2014``); Amazon Reviews 2023 review lines and the
``amazon2023-sample`` layout (``amazon2023``); DPL-style lines ``{user_id, profile, target}``, which
``write_dpl_jsonl`` also writes (``dpl``); item metadata, 2014 or 2023, joined to reviews by item id
(``metadata``). What they share is in ``reading``. ``load_path`` detects the format of a file or a
directory; the other ``load_*`` functions read one format.

Every record a loader reads is either kept or dropped under a reason with file and 1-based line,
so ``report.read == report.kept + sum(report.dropped.values())``. Blank lines are not records.
What is kept with a note rather than dropped is listed in ``reading``.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from copersona.data.loaders.amazon2014 import (
    RATING_COLUMNS_2014,
    REVIEW_COLUMNS_2014,
    read_2014_json,
    read_2014_ratings_csv,
    read_2014_review_csv,
)
from copersona.data.loaders.amazon2023 import read_2023_json, read_sample
from copersona.data.loaders.dpl import read_dpl, write_dpl_jsonl
from copersona.data.loaders.metadata import meta_csv_records, meta_json_records
from copersona.data.loaders.reading import (
    MAX_TEXT_CHARS,
    Collector,
    ItemMeta,
    clean_text,
    first_nonblank_lines,
    parse_csv_record,
    parse_csv_rows,
    parse_object,
)
from copersona.data.records import Interaction, LoadReport

__all__ = [
    "AMAZON2014_CSV",
    "DATA_SUFFIXES",
    "AMAZON2014_JSON",
    "AMAZON2014_RATINGS_CSV",
    "AMAZON2023_JSON",
    "DPL_JSONL",
    "EMPTY",
    "ITEM_META_CSV",
    "ITEM_META_JSON",
    "MAX_TEXT_CHARS",
    "SAMPLE_JSONL",
    "ItemMeta",
    "clean_text",
    "detect_format",
    "load_amazon2014_ratings",
    "load_amazon2014_reviews",
    "load_amazon2023_reviews",
    "load_dpl_jsonl",
    "load_item_metadata",
    "load_path",
    "load_sample",
    "write_dpl_jsonl",
]

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
DATA_SUFFIXES = {".csv", ".json", ".jsonl", ".gz"}

_READERS = {
    AMAZON2014_CSV: read_2014_review_csv,
    AMAZON2014_RATINGS_CSV: read_2014_ratings_csv,
    AMAZON2014_JSON: read_2014_json,
    AMAZON2023_JSON: read_2023_json,
    SAMPLE_JSONL: read_sample,
    DPL_JSONL: read_dpl,
}


# ----------------------------------------------------------------------------------------- metadata


def load_item_metadata(path: str | Path) -> tuple[dict[str, ItemMeta], LoadReport]:
    """Item metadata by item id, from the 2014 ``meta.csv`` or 2014/2023 meta JSON lines (maybe gzipped).

    In the 2014 ``meta.csv`` the ``Description`` column holds the product title, so a CSV without a
    ``Title`` column has its ``Description`` read as the title. The first record of an item wins.
    """
    path = _existing(path)
    collector = Collector(str(path))
    items: dict[str, ItemMeta] = {}
    kind = detect_format(path)
    if kind == ITEM_META_CSV:
        records = meta_csv_records(path, collector)
    elif kind == ITEM_META_JSON:
        records = meta_json_records(path, collector)
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
    return items, collector.report


# ---------------------------------------------------------------------------------------- detection


def detect_format(path: str | Path) -> str:
    """The format of one file, judged by its first recognisable line among the first few."""
    path = _existing(path)
    lines = list(first_nonblank_lines(path))
    if not lines:
        return EMPTY
    for number, text in lines:
        is_object = text.lstrip().startswith("{")
        kind = _object_format(path, number, text) if is_object else _csv_format(parse_csv_record(text))
        if kind:
            return kind
    # A CSV whose first records span lines (quoted newlines) is only recognisable as a whole.
    for fields in parse_csv_rows("\n".join(text for _, text in lines)) or []:
        if kind := _csv_format(fields):
            return kind
    number, text = lines[0]
    raise ValueError(
        f"{path}: unknown format; line {number} starts {text[:120]!r}. Expected Amazon 2014 reviews (CSV, "
        "JSON or Python-literal lines), Amazon 2023 reviews or meta, the amazon2023-sample layout, DPL "
        "lines, or item metadata"
    )


def _object_format(path: Path, number: int, text: str) -> str | None:
    row = parse_object(text)
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
    if len(fields) == len(REVIEW_COLUMNS_2014):
        return AMAZON2014_CSV
    if len(fields) == len(RATING_COLUMNS_2014):
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
    collector = Collector(str(path))
    if kind == EMPTY:
        collector.report.notes.append(f"{path} is empty")
    else:
        _READERS[kind](path, collector)
    return collector.finish(_metadata(meta, collector))


def _load_directory(directory: Path, meta: str | Path | None) -> tuple[list[Interaction], LoadReport]:
    collector = Collector(str(directory))
    found: dict[str, list[Path]] = {}
    for file in sorted(directory.iterdir()):
        if not file.is_file() or file.name.startswith(".") or file.suffix.lower() not in DATA_SUFFIXES:
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


def _metadata(meta: str | Path | None, collector: Collector) -> dict[str, ItemMeta] | None:
    if meta is None:
        return None
    items, report = load_item_metadata(meta)
    collector.report.notes.append(f"item metadata {report.summary_line()}")
    return items


def _load_one(kind: str, path: str | Path, meta: str | Path | None) -> tuple[list[Interaction], LoadReport]:
    path = _existing(path)
    collector = Collector(str(path))
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
    collector = Collector(", ".join(map(str, files)))
    for file in files:
        read_sample(file, collector)
    return collector.finish(_metadata(meta, collector))


def load_dpl_jsonl(path: str | Path) -> tuple[list[Interaction], LoadReport]:
    """DPL-style lines; a user's profile repeats in each of their examples: the copies count as ``repeated_review``."""
    return _load_one(DPL_JSONL, path, None)
