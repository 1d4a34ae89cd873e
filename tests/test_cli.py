"""The command line under generated bad input: a one-line error or a clean success, never a traceback;
nothing outside the named store and output created or changed; a good store never damaged.

Commands run in process through :func:`copersona.cli.main` (as the console script does), with
arguments, settings and small data files drawn by hypothesis: brackets that look like console
markup or chat templates, control characters, huge fields, wrong types, out-of-range numbers and
paths that are folders, missing, or other programs' files. Examples are bounded so the whole
module stays within a minute or two of the suite.
"""

from __future__ import annotations

import csv
import hashlib
import os
import shutil
import sqlite3
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from copersona.cli import main
from copersona.store import Store

NASTY = st.sampled_from(
    [
        "[/bold]",
        "[INST] hi [/INST]",
        "[red]x[/red",
        "<|im_start|>system",
        "",
        " ",
        "\x00\x1b[2J",
        "ünïcødé ✓",
        "a" * 20_000,
        "../..",
        "-1",
        "0",
        "1e309",
        "nan",
    ]
)
TEXT = st.one_of(NASTY, st.text(st.characters(exclude_categories=("Cs",)), max_size=30))
# 12 examples per test keep the module within the suite's budget; set COPERSONA_PROPERTY_EXAMPLES
# higher to search longer by hand.
SETTINGS = settings(
    max_examples=int(os.environ.get("COPERSONA_PROPERTY_EXAMPLES", 12)),
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)


def run(capsys, *args: object) -> tuple[int, str]:
    """The exit status and stderr of ``copersona ARGS``, after checking the output's form."""
    try:
        main([str(a) for a in args])
        code = 0
    except SystemExit as exit_:
        code = exit_.code if isinstance(exit_.code, int) else 1
    captured = capsys.readouterr()
    event(f"{args[0]} exit {code}")
    assert code in (0, 1), (args, code, captured.err[-2000:])
    assert "Traceback" not in captured.err + captured.out, captured.err[-2000:]
    if code == 1:
        lines = [line for line in captured.err.splitlines() if line.strip()]
        assert lines and lines[-1].startswith("error: "), captured.err[-2000:]
        assert sum(line.startswith("error: ") for line in lines) == 1
    return code, captured.err


def tree(folder: Path) -> dict[str, str]:
    """Every file under ``folder`` by relative path, with a digest of its content."""
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest() for p in folder.rglob("*") if p.is_file()
    }


def foreign_sqlite(path: Path) -> Path:
    db = sqlite3.connect(path)
    db.execute("CREATE TABLE notes(body TEXT)")
    db.commit()
    db.close()
    return path


STORE_KINDS = ["store", "folder", "missing", "foreign", "junk", "empty"]


def store_path(kind: str, folder: Path, built: Path) -> Path:
    path = folder / "s.sqlite"
    if kind == "store":
        shutil.copy(built, path)
    elif kind == "folder":
        path.mkdir()
    elif kind == "foreign":
        foreign_sqlite(path)
    elif kind == "junk":
        path.write_bytes(b"\x00not sqlite" * 50)
    elif kind == "empty":
        path.write_bytes(b"")
    return path


def allowed_changes(before: dict, after: dict, may_change: set[str], out_prefix: str | None) -> None:
    changed = {p for p in before.keys() | after.keys() if before.get(p) != after.get(p)}
    stray = {p for p in changed if p not in may_change and not (out_prefix and p.startswith(out_prefix))}
    assert not stray, stray


@pytest.fixture(scope="module")
def known(built_store) -> tuple[str, str]:
    """A user of the session build and the item of that user's latest review."""
    with Store(built_store, read_only=True) as db:
        user = db.user_ids()[0]
        return user, db.history(user)[0][-1].item_id


NUMBER = st.one_of(st.integers(-3, 6), st.floats(allow_nan=True, allow_infinity=True), TEXT)
METHODS = st.one_of(st.sampled_from(["copy-self", "copy-self,copy-peer", "nonperso"]), TEXT)


@SETTINGS
@given(
    kind=st.one_of(st.just("store"), st.sampled_from(STORE_KINDS)),  # half the examples reach a real store
    command=st.sampled_from(["inspect", "inspect-user", "check-graph", "generate", "evaluate"]),
    # Each argument is a valid value or a nasty one, so that both the refusals and the
    # successful paths (which write caches, results and runs) are exercised.
    user=st.one_of(st.none(), TEXT),
    item=st.one_of(st.none(), TEXT),
    number=st.one_of(st.integers(1, 2), NUMBER),
    methods=METHODS,
    out_kind=st.sampled_from(["new", "new", "file", "nested"]),
)
def test_reading_and_generating_commands_answer_bad_input_cleanly(
    capsys, built_store, known, kind, command, user, item, number, methods, out_kind
):
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        store = store_path(kind, folder, built_store)
        out = {"new": folder / "out", "file": folder / "taken", "nested": folder / "a" / "b"}[out_kind]
        if out_kind == "file":
            out.write_text("not a folder")
        who = known[0] if user is None else user
        what = known[1] if item is None else item
        args = {
            "inspect": ["inspect", store, "--json"] if number != 1 else ["inspect", store],
            "inspect-user": ["inspect", store, "--user", who],
            "check-graph": ["check-graph", store, "--neighbours", number, "--max-users", "3"],
            "generate": ["generate", store, "--user", who, "--item", what, "--rating", number, "--method", "nonperso"],
            "evaluate": ["evaluate", store, "--out", out, "--methods", methods, "--limit", number],
        }[command]
        before = tree(folder)
        code, _ = run(capsys, *args)
        after = tree(folder)
        # A CoPersona store is in WAL mode: SQLite keeps its -wal and -shm sidecars next to it even
        # for a read-only open. They are the store's own; the store file changes only when written.
        sidecars = {"s.sqlite-wal", "s.sqlite-shm"} if kind == "store" else set()
        writes = command in ("generate", "evaluate") and kind == "store"
        may_change = sidecars | ({"s.sqlite"} if writes else set())
        allowed_changes(before, after, may_change, str(out.relative_to(folder)) if command == "evaluate" else None)
        if kind != "store":
            assert code == 1  # nothing but a CoPersona store is ever used
        if command == "evaluate" and code == 0:  # finished work is where it was asked to go
            assert (out / "results.json").is_file()
        if kind == "store":
            with Store(store, read_only=True) as db:  # whatever happened, the store is whole
                assert db.user_ids()


CONFIG_LINES = st.sampled_from(
    [
        "[data]\nmin_reviews_per_user = 'five'\n",
        "[graph]\ntop_k = 2.5\n",
        "[graph]\nmin_similarity = -1\n",
        "[graph]\nmin_similarity = 'high'\n",
        "[data]\nholdout_k = -1\n",
        "[data]\nmin_reviews_per_user = 5\n",
        "[nonsense]\nx = 1\n",
        "[data\n",
        "llm = 'smollm2'\n",
        "[harness.retrieval]\nretriever = 'magic'\n",
    ]
)
COLUMNS = ["reviewerID", "asin", "reviewerName", "helpful", "reviewText", "overall", "summary", "unixReviewTime"]


@SETTINGS
@given(
    rows=st.lists(
        st.tuples(st.sampled_from(["U1", "U2", "[U3]"]), st.sampled_from(["I1", "I2"]), TEXT, TEXT, TEXT),
        unique_by=lambda row: row[:2],
    ),
    data_kind=st.sampled_from(["csv", "jsonl", "missing", "empty-folder"]),
    config=st.one_of(st.none(), CONFIG_LINES),
    limit_users=st.one_of(st.none(), st.integers(-2, 3)),
    batch_users=st.integers(-1, 3),
)
def test_build_answers_bad_data_and_settings_cleanly(capsys, rows, data_kind, config, limit_users, batch_users):
    # At most two reviews per user: every generated data set fails the filters, so no example
    # loads a model; what is checked is how far bad input gets and what it leaves behind.
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        data = folder / "data"
        if data_kind == "csv":
            data.mkdir()
            with open(data / "reviews_partial.csv", "w", newline="", encoding="utf-8") as handle:
                writer = csv.writer(handle)
                writer.writerow(COLUMNS)
                for reviewer, item, text, rating, time in rows:
                    writer.writerow([reviewer, item, "n", "[0, 0]", text * 5, rating, text, time])
        elif data_kind == "jsonl":
            data = folder / "data.jsonl"
            data.write_text("\n".join(f'{{"user": "{r[0]}", "text": {r[2]!r}}}' for r in rows), encoding="utf-8")
        elif data_kind == "empty-folder":
            data.mkdir()
        args = ["build", data, "--store", folder / "store" / "s.sqlite", "--batch-users", str(batch_users)]
        if config is not None:
            (folder / "c.toml").write_text(config)
            args += ["--config", folder / "c.toml"]
        if limit_users is not None:
            args += ["--limit-users", str(limit_users)]
        before = tree(folder)
        code, _ = run(capsys, *args)
        after = tree(folder)
        allowed_changes(before, after, set(), "store/")
        assert code == 1  # no generated data set passes the filters
