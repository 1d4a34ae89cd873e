"""prepare_users: App. A's filtering and pruning, with every removed review accounted for."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from copersona.config import DataConfig
from copersona.data.loaders import load_path
from copersona.data.prepare import prepare_users
from copersona.data.records import Interaction
from copersona.data.split import heldout_count

LONG_TEXT = "A review long enough to pass any length filter in these tests. " * 2

# Thresholds that leave synthetic cases small: no holdout, no profile minimum unless a test sets one.
LOOSE = DataConfig(min_review_length=0, min_users_per_item=1, min_reviews_per_user=1, holdout_k=0, min_profile_size=0)


def review(user: str, item: str, timestamp: int = 1_400_000_000, **fields) -> Interaction:
    return Interaction(user_id=user, item_id=item, timestamp=timestamp, text=fields.pop("text", LONG_TEXT), **fields)


def config(**overrides) -> DataConfig:
    return DataConfig(**{**LOOSE.__dict__, **overrides})


def assert_counts_add_up(report) -> None:
    assert report.read == report.kept + sum(report.dropped.values()), report.to_dict()


# ------------------------------------------------------------------------------------------ real data


def test_musical_instruments_with_paper_defaults(data_dir: Path) -> None:
    interactions, report = load_path(data_dir / "amazon2014-musical-instruments")
    defaults = DataConfig()
    users, report = prepare_users(interactions, defaults, report)

    assert users and [u.user_id for u in users] == sorted(u.user_id for u in users)
    for user in users:
        history = user.interactions
        assert len(history) >= defaults.min_reviews_per_user
        assert len(history) - heldout_count(len(history), defaults.holdout_k) >= defaults.min_profile_size
        assert [(i.timestamp, i.item_id) for i in history] == sorted((i.timestamp, i.item_id) for i in history)
        assert all(len(i.text) >= defaults.min_review_length for i in history)
        assert len({i.item_id for i in history}) == len(history)
    # The loader's and this stage's counts together: every review read is kept or dropped once.
    assert report.read == 5050
    assert report.kept == sum(len(u.interactions) for u in users)
    assert_counts_add_up(report)
    assert {"empty_text", "review_too_short", "item_pruned", "user_pruned", "profile_too_small"} <= set(report.dropped)


def test_musical_instruments_is_deterministic(data_dir: Path) -> None:
    interactions, _ = load_path(data_dir / "amazon2014-musical-instruments")
    first, first_report = prepare_users(interactions, DataConfig())
    again, again_report = prepare_users(list(reversed(interactions)), DataConfig())
    assert first == again
    assert first_report.dropped == again_report.dropped
    # Without a loader's report the stage counts its own input.
    assert first_report.read == len(interactions)
    assert_counts_add_up(first_report)


def test_sample_with_paper_defaults_is_empty_and_says_why(data_dir: Path) -> None:
    # Every sample user has five reviews of items nobody else reviewed: item pruning removes all.
    users, report = prepare_users(load_path(data_dir / "amazon2023-sample")[0], DataConfig())
    assert users == [] and report.kept == 0
    assert any(note.startswith("no users left: the stage 'pruning") for note in report.notes)
    assert_counts_add_up(report)


# ------------------------------------------------------------------------------------------- stages


def test_short_reviews_are_dropped() -> None:
    users, report = prepare_users([review("u1", "a", text="Great"), review("u1", "b")], config(min_review_length=90))
    assert [i.item_id for i in users[0].interactions] == ["b"]
    assert report.dropped == Counter({"review_too_short": 1})


def test_item_text_is_the_description_when_the_data_has_descriptions() -> None:
    interactions = [
        review("u1", "a", item_title="A long enough title, yes", item_description="Short."),
        review("u1", "b", item_title="T", item_description="A description that is long enough."),
    ]
    users, report = prepare_users(interactions, config(min_description_length=20))
    assert [i.item_id for i in users[0].interactions] == ["b"]
    assert report.dropped == Counter({"item_text_too_short": 1})


def test_item_text_falls_back_to_titles_when_no_item_has_a_description() -> None:
    interactions = [review("u1", "a", item_title="Capo"), review("u1", "b", item_title="A title that is long enough")]
    users, report = prepare_users(interactions, config(min_description_length=20))
    assert [i.item_id for i in users[0].interactions] == ["b"]
    assert any("applied to item titles" in note for note in report.notes)


def test_duplicates_keep_the_most_recent() -> None:
    interactions = [review("u1", "a", 200, text=LONG_TEXT + "new"), review("u1", "a", 100), review("u1", "b", 150)]
    users, report = prepare_users(interactions, config())
    assert [(i.item_id, i.timestamp) for i in users[0].interactions] == [("b", 150), ("a", 200)]
    assert report.dropped == Counter({"duplicate": 1})


def test_pruning_cascades_until_stable() -> None:
    # z has one reviewer (u3) and goes; u3 is left with one review and goes, which leaves y with one
    # reviewer (u2), and so on down the chain u3 -> u2 -> u5. Only u1 and u4, on items p and q, remain.
    interactions = [
        review("u1", "p"), review("u1", "q"),
        review("u4", "p"), review("u4", "q"),
        review("u3", "z"), review("u3", "y"),
        review("u2", "y"), review("u2", "w"),
        review("u5", "w"), review("u5", "p"),
    ]  # fmt: skip
    users, report = prepare_users(interactions, config(min_users_per_item=2, min_reviews_per_user=2))
    assert [(u.user_id, [i.item_id for i in u.interactions]) for u in users] == [("u1", ["p", "q"]), ("u4", ["p", "q"])]
    assert report.dropped == Counter({"item_pruned": 3, "user_pruned": 3})
    assert any("pruning (4 rounds)" in note for note in report.notes)
    assert_counts_add_up(report)


def test_profile_too_small_counts_the_held_out_reviews() -> None:
    # Five reviews with k=3: min(3, 5 // 2) = 2 are held out, so the profile has 3 < 4.
    five = [review("u1", f"i{n}", 1_400_000_000 + n) for n in range(5)]
    seven = [review("u2", f"i{n}", 1_400_000_000 + n) for n in range(7)]
    users, report = prepare_users(five + seven, config(holdout_k=3, min_profile_size=4))
    assert [u.user_id for u in users] == ["u2"]
    assert report.dropped == Counter({"profile_too_small": 5})


def test_history_order_breaks_timestamp_ties_by_item_id() -> None:
    users, _ = prepare_users([review("u1", "b", 5), review("u1", "a", 5), review("u1", "c", 1)], config())
    assert [i.item_id for i in users[0].interactions] == ["c", "a", "b"]


def test_max_users_keeps_the_first_users_by_id() -> None:
    interactions = [review(user, "a") for user in ("u3", "u1", "u2")]
    users, report = prepare_users(interactions, config(max_users=2))
    assert [u.user_id for u in users] == ["u1", "u2"]
    assert report.dropped == Counter({"max_users": 1})
    assert_counts_add_up(report)


def test_empty_input_is_not_an_error() -> None:
    users, report = prepare_users([], DataConfig())
    assert users == [] and report.read == report.kept == 0
    assert any(note.startswith("no users left") for note in report.notes)
