"""Loaders: the real files load with the counts their README states; broken input is counted, never fatal."""

from __future__ import annotations

import csv
import gzip
import io
import json
import tempfile
import zlib
from collections import Counter
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from copersona.config import DataConfig
from copersona.data.loaders import (
    AMAZON2014_JSON,
    EMPTY,
    MAX_TEXT_CHARS,
    clean_text,
    detect_format,
    load_amazon2014_ratings,
    load_amazon2014_reviews,
    load_amazon2023_reviews,
    load_dpl_jsonl,
    load_item_metadata,
    load_path,
    load_sample,
    write_dpl_jsonl,
)
from copersona.data.prepare import prepare_users
from copersona.data.split import examples_for_user, heldout_ranks

REVIEW_COLUMNS = [
    "reviewerID",
    "asin",
    "reviewerName",
    "helpful",
    "reviewText",
    "overall",
    "summary",
    "unixReviewTime",
    "reviewTime",
]
VALID_REVIEW = {
    "reviewerID": "U1",
    "asin": "I1",
    "reviewerName": "Ann",
    "helpful": "[0, 0]",
    "reviewText": "Solid stand, holds my guitar well.",
    "overall": "5",
    "summary": "Good",
    "unixReviewTime": "1393545600",
    "reviewTime": "02 28, 2014",
}


def csv_line(**overrides: str) -> str:
    """One 2014 review row as the headerless CSV export writes it (newline included)."""
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\n").writerow([{**VALID_REVIEW, **overrides}[c] for c in REVIEW_COLUMNS])
    return buffer.getvalue()


def json_review(**overrides: object) -> str:
    row = {
        "reviewerID": "U1",
        "asin": "I1",
        "reviewText": "Solid stand.",
        "overall": 5.0,
        "summary": "Good",
        "unixReviewTime": 1393545600,
    }
    return json.dumps({**row, **overrides}) + "\n"


def assert_counts_add_up(report) -> None:
    assert report.read == report.kept + sum(report.dropped.values()), report.to_dict()


def note_count(report, name: str) -> int:
    """How many records were kept with the caveat ``name``."""
    return report.flagged[name]


# ------------------------------------------------------------------------------------------- real data


def test_musical_instruments_reviews_match_the_readme(data_dir: Path) -> None:
    path = data_dir / "amazon2014-musical-instruments" / "reviews_partial.csv"
    interactions, report = load_path(path)
    assert report.read == 5050
    # Two reviews have an empty text; one of them is its user's only review, hence 1,380 of the README's 1,381 users.
    assert report.dropped == Counter({"empty_text": 2})
    assert [(issue["file"], issue["line"]) for issue in report.issues] == [(str(path), 2927), (str(path), 4399)]
    assert len(interactions) == 5048
    assert len({i.user_id for i in interactions}) == 1380
    assert len({i.item_id for i in interactions}) == 392
    assert all(i.text and i.rating in {1.0, 2.0, 3.0, 4.0, 5.0} for i in interactions)
    assert_counts_add_up(report)


def test_musical_instruments_directory_joins_meta_and_skips_the_ratings_file(data_dir: Path) -> None:
    interactions, report = load_path(data_dir / "amazon2014-musical-instruments")
    assert report.read == 5050 and len(interactions) == 5048
    assert any("skipped ratings_full.csv" in note for note in report.notes)
    assert note_count(report, "no_item_metadata") == 0
    assert all(i.item_title and i.item_category and not i.item_description for i in interactions)
    titles = {i.item_id: i.item_title for i in interactions}
    # meta.csv writes this title with &quot;; the entity is decoded.
    assert titles["B0002E38AS"] == "Monster Rock - 12' Instrument Cable - Angled to Straight 1/4\" plugs"


def test_item_metadata_csv_reads_description_as_title(data_dir: Path) -> None:
    items, report = load_item_metadata(data_dir / "amazon2014-musical-instruments" / "meta.csv")
    assert report.read == report.kept == len(items) == 900
    pop_filter = items["1384719342"]
    assert pop_filter.title.startswith("niceEshop Studio Microphone")
    assert pop_filter.category == "Windsreens & Pop Filters"
    assert pop_filter.description == ""


def test_ratings_file_loads_as_ratings_only(data_dir: Path) -> None:
    path = data_dir / "amazon2014-musical-instruments" / "ratings_full.csv"
    interactions, report = load_path(path)
    assert load_amazon2014_ratings(path)[0] == interactions
    assert report.read == report.kept == 10261
    assert not report.dropped
    assert note_count(report, "ratings_only") == 10261
    assert len({i.user_id for i in interactions}) == 1429
    assert len({i.item_id for i in interactions}) == 900
    assert all(i.text == "" and i.rating is not None for i in interactions)


def test_sample_directory_merges_users_across_rows_and_categories(data_dir: Path) -> None:
    sample = data_dir / "amazon2023-sample"
    interactions, report = load_path(sample)
    rows = [
        json.loads(line) for name in ("training", "validation", "test") for line in (sample / f"{name}.jsonl").open()
    ]
    users_by_category: dict[str, set[str]] = {}
    for row in rows:
        users_by_category.setdefault(row["category"], set()).add(row["user_id"])
    loaded_users = {i.user_id for i in interactions}
    assert len(users_by_category) == 24
    assert all(users <= loaded_users for users in users_by_category.values())
    assert report.read == sum(len(row["history"]) + 1 for row in rows) == 3455
    # The sample repeats three (user, item) pairs and has two empty texts (README: known defects).
    assert report.dropped == Counter({"duplicate": 3, "empty_text": 2})
    assert_counts_add_up(report)
    # Each user's rows, across categories and files, become one history of their non-empty reviews.
    items_by_user: dict[str, set[str]] = {}
    for row in rows:
        for review in [*row["history"], row["heldout"]]:
            if (review["review_full"] or review["review_excerpt"]).strip():
                items_by_user.setdefault(row["user_id"], set()).add(review["parent_asin"])
    loaded_items: dict[str, set[str]] = {}
    for interaction in interactions:
        loaded_items.setdefault(interaction.user_id, set()).add(interaction.item_id)
    assert loaded_items == items_by_user
    assert any(sum(user in users for users in users_by_category.values()) > 1 for user in loaded_items)
    assert load_sample(sorted(sample.glob("*.jsonl")))[0] == interactions


def test_sample_fields_are_mapped_and_decoded(data_dir: Path) -> None:
    interactions, _ = load_path(data_dir / "amazon2023-sample" / "training.jsonl")
    first = json.loads((data_dir / "amazon2023-sample" / "training.jsonl").open().readline())
    review = first["history"][0]
    loaded = next(i for i in interactions if i.user_id == first["user_id"] and i.item_id == review["parent_asin"])
    assert loaded.timestamp == review["timestamp_ms"] // 1000
    assert loaded.rating == review["rating"]
    assert loaded.review_title == review["review_title"]
    assert loaded.item_title == review["product"]["title"]
    assert loaded.item_category == review["product"]["main_category"]
    assert not any("<br" in i.text or "&quot;" in i.text or "&amp;" in i.text for i in interactions)


# ---------------------------------------------------------------------------------- per-record problems


@pytest.mark.parametrize(
    ("file_name", "overrides", "reason"),
    [
        ("reviews.csv", {"reviewerID": ""}, "missing_user_id"),
        ("reviews.csv", {"asin": "   "}, "missing_item_id"),
        ("reviews.csv", {"unixReviewTime": "yesterday"}, "bad_timestamp"),
        ("reviews.csv", {"unixReviewTime": "-5"}, "bad_timestamp"),
        ("reviews.csv", {"unixReviewTime": "1393545600000"}, "bad_timestamp"),  # milliseconds where seconds belong
        ("reviews.csv", {"overall": "five"}, "bad_rating"),
        ("reviews.csv", {"overall": "7"}, "bad_rating"),
        ("reviews.csv", {"overall": "0"}, "bad_rating"),
        ("reviews.csv", {"reviewText": "  <br />  "}, "empty_text"),
        ("reviews.json", {"reviewerID": None}, "missing_user_id"),
        ("reviews.json", {"reviewerID": ["U1"]}, "missing_user_id"),
        ("reviews.json", {"asin": None}, "missing_item_id"),
        ("reviews.json", {"unixReviewTime": None}, "bad_timestamp"),
        ("reviews.json", {"unixReviewTime": True}, "bad_timestamp"),
        ("reviews.json", {"overall": float("nan")}, "bad_rating"),
        ("reviews.json", {"overall": "great"}, "bad_rating"),
        ("reviews.json", {"overall": True}, "bad_rating"),
        ("reviews.json", {"reviewText": None}, "empty_text"),
    ],
)
def test_bad_record_is_dropped_with_its_line(tmp_path: Path, file_name: str, overrides: dict, reason: str) -> None:
    path = tmp_path / file_name
    write = csv_line if file_name.endswith(".csv") else json_review
    path.write_text(write(reviewerID="U0") + write(**overrides))
    interactions, report = load_path(path)
    assert [i.user_id for i in interactions] == ["U0"]
    assert report.dropped == Counter({reason: 1})
    assert (report.issues[0]["file"], report.issues[0]["line"]) == (str(path), 2)
    assert_counts_add_up(report)


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        ({"overall": None}, {"rating": None}),
        ({"overall": "4"}, {"rating": 4.0}),
        ({"reviewerID": 123}, {"user_id": "123"}),
        ({"unixReviewTime": "1393545600"}, {"timestamp": 1393545600}),
    ],
)
def test_lenient_json_values_are_kept(tmp_path: Path, overrides: dict, expected: dict) -> None:
    path = tmp_path / "reviews.json"
    path.write_text(json_review(**overrides))
    (interaction,), report = load_path(path)
    assert {field: getattr(interaction, field) for field in expected} == expected
    assert note_count(report, "rating_missing") == (1 if expected.get("rating", 0) is None else 0)


def test_missing_csv_rating_is_kept_as_none(tmp_path: Path) -> None:
    path = tmp_path / "reviews.csv"
    path.write_text(csv_line(overall=""))
    (interaction,), report = load_path(path)
    assert interaction.rating is None
    assert note_count(report, "rating_missing") == 1


def test_duplicates_keep_the_most_recent_review(tmp_path: Path) -> None:
    path = tmp_path / "reviews.csv"
    newer = csv_line(reviewText="Changed my mind, it wobbles.", unixReviewTime="1400000000")
    older = csv_line(reviewText="Solid stand.", unixReviewTime="1300000000")
    copy = csv_line(asin="I2")
    path.write_text(newer + older + copy + copy)
    interactions, report = load_path(path)
    # Loaders return each user's interactions oldest first.
    assert [(i.item_id, i.text) for i in interactions] == [
        ("I2", VALID_REVIEW["reviewText"]),
        ("I1", "Changed my mind, it wobbles."),
    ]
    assert report.dropped == Counter({"duplicate": 1, "repeated_review": 1})
    assert {(issue["reason"], issue["line"]) for issue in report.issues} == {("duplicate", 2), ("repeated_review", 3)}
    assert_counts_add_up(report)


# ------------------------------------------------------------------------------------- CSV structure


def test_unbalanced_quote_costs_only_its_own_line(tmp_path: Path) -> None:
    path = tmp_path / "reviews.csv"
    broken = 'U9,I9,"broken name,[0 0],text,5,t,1393545600,x\n'
    path.write_text(csv_line(reviewerID="U1") + broken + csv_line(reviewerID="U2") + csv_line(reviewerID="U3"))
    interactions, report = load_path(path)
    assert [i.user_id for i in interactions] == ["U1", "U2", "U3"]
    assert report.dropped == Counter({"malformed_csv": 1})
    assert report.issues[0]["line"] == 2


def test_quoted_field_spanning_lines_is_one_record(tmp_path: Path) -> None:
    path = tmp_path / "reviews.csv"
    path.write_text(csv_line(reviewText="First paragraph.\nSecond paragraph.") + "too,few,fields\n")
    (interaction,), report = load_path(path)
    assert interaction.text == "First paragraph.\nSecond paragraph."
    assert report.read == 2 and report.issues[0]["line"] == 3


def test_csv_with_a_header_in_any_column_order(tmp_path: Path) -> None:
    path = tmp_path / "reviews.csv"
    path.write_text("overall,reviewText,asin,reviewerID,unixReviewTime,summary\n4,Nice tone.,I7,U7,1393545600,Ok\n")
    (interaction,), report = load_path(path)
    assert (interaction.user_id, interaction.item_id, interaction.rating, interaction.text) == (
        "U7",
        "I7",
        4.0,
        "Nice tone.",
    )
    assert report.read == 1


def test_file_of_only_a_header_loads_nothing(tmp_path: Path) -> None:
    path = tmp_path / "reviews.csv"
    path.write_text(",".join(REVIEW_COLUMNS) + "\n")
    interactions, report = load_path(path)
    assert interactions == [] and report.read == 0 and not report.dropped


def test_empty_file_loads_nothing_with_a_note(tmp_path: Path) -> None:
    path = tmp_path / "reviews.jsonl"
    path.write_text("\n  \n")
    assert detect_format(path) == EMPTY
    interactions, report = load_path(path)
    assert interactions == [] and report.read == 0
    assert any("is empty" in note for note in report.notes)


# ---------------------------------------------------------------------------------- text and bytes


@pytest.mark.parametrize(
    ("raw", "clean"),
    [
        ("Tom &amp; Jerry", "Tom & Jerry"),
        ("&quot;quoted&quot; &#39;too&#39;", "\"quoted\" 'too'"),
        ("one<br />two<BR>three", "one\ntwo\nthree"),
        ("para<br /><br /><br /><br />graph", "para\n\ngraph"),
        ("  many   spaces\there \u00a0 ", "many spaces here"),
        (None, ""),
        (["first line", "  ", " second "], "first line\nsecond"),
    ],
)
def test_clean_text(raw: object, clean: str) -> None:
    assert clean_text(raw) == clean


def test_html_entities_are_decoded_in_every_text_field(tmp_path: Path) -> None:
    path = tmp_path / "reviews.csv"
    path.write_text(csv_line(reviewText="It&#39;s &quot;great&quot;<br />Really.", summary="Tom &amp; Jerry"))
    (interaction,), _ = load_path(path)
    assert interaction.text == 'It\'s "great"\nReally.'
    assert interaction.review_title == "Tom & Jerry"


@pytest.mark.parametrize("length", [MAX_TEXT_CHARS + 1, 200_000])  # 200,000 is past csv's default field limit
def test_huge_text_is_truncated_not_dropped(tmp_path: Path, length: int) -> None:
    limit_before = csv.field_size_limit()
    path = tmp_path / "reviews.csv"
    path.write_text(csv_line(reviewText="a" * length))
    (interaction,), report = load_path(path)
    assert len(interaction.text) == MAX_TEXT_CHARS
    assert note_count(report, "text_truncated") == 1
    assert csv.field_size_limit() == limit_before


def test_non_utf8_bytes_are_replaced_and_counted(tmp_path: Path) -> None:
    path = tmp_path / "reviews.csv"
    path.write_bytes(csv_line(reviewText="Caf\xe9 sound").encode("latin-1") + csv_line(asin="I2").encode())
    interactions, report = load_path(path)
    assert interactions[0].text == "Caf\ufffd sound"
    assert note_count(report, "non_utf8") == 1 and len(interactions) == 2


# ------------------------------------------------------------------------------ gzip, python literals


def test_gzipped_csv_is_detected_by_content(tmp_path: Path) -> None:
    path = tmp_path / "reviews.data"
    path.write_bytes(gzip.compress((csv_line() + csv_line(asin="I2")).encode()))
    interactions, _ = load_amazon2014_reviews(path)
    assert [i.item_id for i in interactions] == ["I1", "I2"]


@pytest.mark.parametrize("kept_fraction", [0.2, 0.5, 0.9, "trailer"])
def test_truncated_gzip_keeps_the_whole_lines_before_the_cut(data_dir: Path, tmp_path: Path, kept_fraction) -> None:
    lines = (data_dir / "amazon2023-sample" / "training.jsonl").read_bytes().splitlines(keepends=True)[:120]
    compressed = gzip.compress(b"".join(lines))
    cut = compressed[:-4] if kept_fraction == "trailer" else compressed[: int(len(compressed) * kept_fraction)]
    available = zlib.decompressobj(wbits=31).decompress(cut)
    whole_lines = available[: available.rfind(b"\n") + 1]
    truncated, plain = tmp_path / "cut.jsonl.gz", tmp_path / "whole.jsonl"
    truncated.write_bytes(cut)
    plain.write_bytes(whole_lines)

    interactions, report = load_path(truncated)
    expected, expected_report = load_path(plain)
    assert interactions == expected and interactions
    assert report.read == expected_report.read
    line_count = whole_lines.count(b"\n")
    assert any(note.startswith(f"truncated gzip: stopped after line {line_count} ") for note in report.notes)


def test_python_literal_lines_gzipped_with_their_metadata(tmp_path: Path) -> None:
    reviews = [
        {
            "reviewerID": "U1",
            "asin": "I1",
            "reviewText": "It's a keeper \u2013 really",
            "overall": 5.0,
            "summary": "Yes",
            "unixReviewTime": 1393545600,
        },
        {
            "reviewerID": "U1",
            "asin": "I2",
            "reviewText": "Meh.",
            "overall": 2.0,
            "summary": "No",
            "unixReviewTime": 1393632000,
        },
    ]
    metadata = [
        {
            "asin": "I1",
            "title": "Capo &amp; case",
            "description": ["Spring capo.", "Fits six strings."],
            "categories": [["Musical Instruments", "Capos"], ["Gifts"]],
        },
    ]
    review_path, meta_path = tmp_path / "reviews_Music.json.gz", tmp_path / "meta_Music.json.gz"
    review_path.write_bytes(gzip.compress("".join(repr(r) + "\n" for r in reviews).encode()))
    meta_path.write_bytes(gzip.compress("".join(repr(m) + "\n" for m in metadata).encode()))
    assert detect_format(review_path) == AMAZON2014_JSON

    interactions, report = load_path(review_path, meta=meta_path)
    capo, other = interactions
    assert capo.text == "It's a keeper \u2013 really"
    assert (capo.item_title, capo.item_description, capo.item_category) == (
        "Capo & case",
        "Spring capo.\nFits six strings.",
        "Capos",
    )
    assert other.item_title == ""
    assert note_count(report, "no_item_metadata") == 1
    assert load_path(tmp_path)[0] == interactions  # the directory finds both files


def test_amazon2023_reviews_with_meta(tmp_path: Path) -> None:
    review_path, meta_path = tmp_path / "Music.jsonl", tmp_path / "meta_Music.jsonl.gz"
    review_path.write_text(
        json.dumps(
            {
                "user_id": "U1",
                "parent_asin": "P1",
                "asin": "A1",
                "rating": 4.0,
                "title": "Warm",
                "text": "Warm tone.",
                "timestamp": 1627679830425,
            }
        )
        + "\n"
        + json.dumps(
            {"user_id": "U1", "asin": "A2", "rating": 3, "title": "", "text": "Fine.", "timestamp": 1627679890999}
        )
        + "\n"
    )
    meta_rows = [
        {
            "parent_asin": "P1",
            "title": "Tube amp",
            "description": ["Class A.", "15 watts."],
            "main_category": "Musical Instruments",
            "categories": ["Musical Instruments", "Amplifiers"],
        },
        {
            "parent_asin": "A2",
            "title": "Strap",
            "description": [],
            "main_category": "Musical Instruments",
            "categories": [],
        },
    ]
    meta_path.write_bytes(gzip.compress("".join(json.dumps(m) + "\n" for m in meta_rows).encode()))
    amp, strap = load_amazon2023_reviews(review_path, meta=meta_path)[0]
    assert (amp.item_id, amp.timestamp, amp.review_title, amp.item_description, amp.item_category) == (
        "P1",
        1627679830,
        "Warm",
        "Class A.\n15 watts.",
        "Amplifiers",
    )
    assert (strap.item_id, strap.item_title, strap.item_category) == ("A2", "Strap", "Musical Instruments")


# ------------------------------------------------------------------------------------- clear errors


def test_missing_path_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="nowhere.csv"):
        load_path(tmp_path / "nowhere.csv")


@pytest.mark.parametrize(
    ("content", "seen"),
    [("hello there\nnot data either\n", "hello there"), ('{"foo": 1, "bar": 2}\n', "'bar', 'foo'")],
)
def test_unknown_format_names_the_file_and_what_was_seen(tmp_path: Path, content: str, seen: str) -> None:
    path = tmp_path / "mystery.txt"
    path.write_text(content)
    with pytest.raises(ValueError, match="mystery.txt") as raised:
        load_path(path)
    assert seen in str(raised.value)


def test_metadata_given_as_reviews_is_a_clear_error(data_dir: Path) -> None:
    with pytest.raises(ValueError, match="item metadata"):
        load_path(data_dir / "amazon2014-musical-instruments" / "meta.csv")


def test_directory_without_reviews_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "notes.md").write_text("nothing here")
    with pytest.raises(ValueError, match="no review file"):
        load_path(tmp_path)


def test_a_few_broken_lines_at_the_top_do_not_hide_the_format(tmp_path: Path) -> None:
    path = tmp_path / "reviews.jsonl"
    path.write_text("{not json\n\x00\x01garbage\n" + json_review())
    interactions, report = load_path(path)
    assert len(interactions) == 1 and report.dropped == Counter({"malformed_line": 2})


# ------------------------------------------------------------------------------------------------- DPL


def test_dpl_round_trip(data_dir: Path, tmp_path: Path) -> None:
    users, _ = prepare_users(load_path(data_dir / "amazon2014-musical-instruments")[0], DataConfig())
    examples = [
        example
        for user in users[:40]
        for example in examples_for_user(user.user_id, user.interactions, heldout_ranks(len(user.interactions), 3))
    ]
    path = tmp_path / "dpl.jsonl"
    assert write_dpl_jsonl(examples, path) == len(examples)

    interactions, report = load_dpl_jsonl(path)
    written = {interaction for example in examples for interaction in [*example.profile, example.target]}
    assert set(interactions) == written and len(interactions) == len(written)
    # Each example repeats its user's earlier reviews; the copies are counted, not lost silently.
    assert set(report.dropped) == {"repeated_review"}
    assert_counts_add_up(report)
    assert load_path(path)[0] == interactions


def test_dpl_accepts_the_papers_data_key(tmp_path: Path) -> None:
    review = {"item_id": "I1", "timestamp": 1393545600, "rating": 5, "text": "Loud and clear."}
    path = tmp_path / "dpl.jsonl"
    path.write_text(json.dumps({"user_id": "U1", "profile": [], "data": review}) + "\n")
    (interaction,), _ = load_path(path)
    assert (interaction.user_id, interaction.item_id, interaction.text) == ("U1", "I1", "Loud and clear.")


# ---------------------------------------------------------------------------------------------- fuzz

garbage_lines = st.lists(st.binary(max_size=120).map(lambda raw: raw.replace(b"\n", b"")), min_size=1, max_size=8)


def is_record_line(raw: bytes, number: int) -> bool:
    """Whether the loader treats this line as a record (it skips blank lines), mirroring its decoding."""
    text = raw.decode("utf-8", errors="replace").rstrip("\r\n")
    return bool((text.removeprefix("\ufeff") if number == 1 else text).strip())


def interleave(valid: list[bytes], garbage: list[bytes], positions: list[int]) -> tuple[bytes, set[int]]:
    """The file's bytes and the line numbers of the garbage lines that are records."""
    lines = [(line, False) for line in valid]
    for raw, position in zip(garbage, positions):
        lines.insert(position % (len(lines) + 1), (raw + b"\n", True))
    bad_lines = {n for n, (raw, is_garbage) in enumerate(lines, 1) if is_garbage and is_record_line(raw, n)}
    return b"".join(raw for raw, _ in lines), bad_lines


def assert_garbage_is_counted(
    path: Path, loader, valid: list[bytes], garbage: list[bytes], positions: list[int]
) -> None:
    path.write_bytes(b"".join(valid))
    expected, clean_report = loader(path)
    assert not clean_report.dropped
    content, bad_lines = interleave(valid, garbage, positions)
    path.write_bytes(content)
    interactions, report = loader(path)
    assert interactions == expected
    assert sum(report.dropped.values()) == len(bad_lines)
    assert {(issue["file"], issue["line"]) for issue in report.issues} == {(str(path), n) for n in bad_lines}
    assert_counts_add_up(report)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(garbage=garbage_lines, positions=st.lists(st.integers(min_value=0, max_value=40), min_size=8, max_size=8))
def test_fuzz_garbage_in_real_csv(data_dir: Path, garbage: list[bytes], positions: list[int]) -> None:
    valid = (
        (data_dir / "amazon2014-musical-instruments" / "reviews_partial.csv")
        .read_bytes()
        .splitlines(keepends=True)[:30]
    )
    with tempfile.TemporaryDirectory() as directory:
        assert_garbage_is_counted(Path(directory) / "reviews.csv", load_amazon2014_reviews, valid, garbage, positions)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(garbage=garbage_lines, positions=st.lists(st.integers(min_value=0, max_value=12), min_size=8, max_size=8))
def test_fuzz_garbage_in_real_jsonl(data_dir: Path, garbage: list[bytes], positions: list[int]) -> None:
    valid = (data_dir / "amazon2023-sample" / "test.jsonl").read_bytes().splitlines(keepends=True)[:10]
    with tempfile.TemporaryDirectory() as directory:
        assert_garbage_is_counted(Path(directory) / "sample.jsonl", load_sample, valid, garbage, positions)


@settings(max_examples=40, deadline=None)
@given(content=st.binary(max_size=400))
def test_fuzz_arbitrary_bytes_never_crash_a_loader(content: bytes) -> None:
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / "anything.jsonl"
        path.write_bytes(content)
        try:
            interactions, report = load_path(path)
        except ValueError as err:  # an unrecognisable file is reported, naming it
            assert "anything.jsonl" in str(err)
        else:
            assert_counts_add_up(report)
            assert len(interactions) == report.kept
