"""The example a single `generate` request stands for."""

from __future__ import annotations

import pytest

from copersona.generate import request_example
from copersona.store import Store, StoreError


@pytest.fixture(scope="module")
def store(built_store):
    with Store(built_store, read_only=True) as db:
        yield db


def test_default_is_the_users_test_target(store):
    user = store.user_ids()[0]
    example = request_example(store, user)
    test = [e for e in store.examples("test") if e.user_id == user][0]
    assert example == test


def test_a_new_item_uses_the_whole_history_and_the_items_stored_context(store):
    users = store.user_ids()
    user, other = users[0], users[1]
    history, _ = store.history(user)
    owned = {i.item_id for i in history}
    foreign = next(i for i in store.history(other)[0] if i.item_id not in owned)
    example = request_example(store, user, foreign.item_id, rating=4, title="Solid")
    assert example.profile == history
    assert example.target.item_title == foreign.item_title and example.target.text == ""
    assert example.target.rating == 4 and example.target.review_title == "Solid"


def test_unknown_item_and_unknown_user(store):
    user = store.user_ids()[0]
    example = request_example(store, user, "NO-SUCH-ITEM")
    assert example.target.item_title == "NO-SUCH-ITEM"
    with pytest.raises(StoreError, match="no user"):
        request_example(store, "nobody")


@pytest.mark.parametrize("rating", [42, 0, -1])
def test_a_rating_outside_the_stores_scale_is_refused(store, rating):
    low, high = store.rating_range()
    assert (low, high) == (1, 5)  # the Amazon star scale of the real data
    with pytest.raises(ValueError, match=f"rating {rating} is outside this store's ratings"):
        request_example(store, store.user_ids()[0], rating=rating)
