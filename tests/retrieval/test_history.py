"""Self-history retrievers on real Musical Instruments profiles."""

from __future__ import annotations

import numpy as np
import pytest

from copersona.data.records import Interaction
from copersona.retrieval import RETRIEVERS, load_retriever, query_text
from copersona.retrieval.history import document_text


def _user_with_history(profiles: dict, size: int = 6) -> list[Interaction]:
    return next(p for _, p in sorted(profiles.items()) if len(p) >= size)


def _query_like(interaction: Interaction) -> Interaction:
    """A new target on the same item as ``interaction`` (so its words should find it)."""
    return interaction.model_copy(update={"item_id": "new", "text": "", "review_title": ""})


@pytest.fixture(scope="module")
def retrievers(embedder):
    return {name: load_retriever(name, lambda: embedder) for name in RETRIEVERS}


@pytest.mark.parametrize("name", RETRIEVERS)
def test_every_retriever_returns_k_distinct_profile_reviews(name, retrievers, mi_profiles):
    profile = _user_with_history(mi_profiles)
    found = retrievers[name].retrieve(profile, _query_like(profile[1]), 4)
    assert len(found) == 4 and len({i.item_id for i in found}) == 4
    assert all(i in profile for i in found)


@pytest.mark.parametrize("name", ["bm25", "dense"])
def test_content_retrievers_find_the_review_of_the_queried_item(name, retrievers, mi_profiles):
    hits = 0
    users = [p for _, p in sorted(mi_profiles.items()) if len(p) >= 5][:30]
    for profile in users:
        target = profile[0]  # the oldest review: recency would rank it last
        found = retrievers[name].retrieve(profile, _query_like(target), 1)
        hits += found[0].item_id == target.item_id
    assert hits >= 0.8 * len(users)


def test_recency_returns_most_recent_first(retrievers, mi_profiles):
    profile = _user_with_history(mi_profiles)
    assert retrievers["recency"].retrieve(profile, profile[0], 3) == profile[::-1][:3]


def test_bm25_without_query_terms_falls_back_to_recency(retrievers, mi_profiles):
    profile = _user_with_history(mi_profiles)
    stopwords_only = profile[0].model_copy(
        update={"item_title": "the and of", "item_description": "", "review_title": "", "rating": None}
    )
    assert retrievers["bm25"].retrieve(profile, stopwords_only, 3) == profile[::-1][:3]


@pytest.mark.parametrize("name", RETRIEVERS)
def test_empty_profile_or_k_zero_gives_nothing(name, retrievers, mi_profiles):
    profile = _user_with_history(mi_profiles)
    assert retrievers[name].retrieve([], profile[0], 4) == []
    assert retrievers[name].retrieve(profile, profile[0], 0) == []


def test_bm25_scores_do_not_depend_on_other_users(retrievers, mi_profiles):
    """Per-profile statistics: indexing other users' profiles first changes nothing."""
    users = [p for _, p in sorted(mi_profiles.items()) if len(p) >= 5][:3]
    query = _query_like(users[0][2])
    before = retrievers["bm25"].scores(users[0], query)
    for other in users[1:]:
        retrievers["bm25"].scores(other, query)
    assert np.array_equal(before, retrievers["bm25"].scores(users[0], query))


def test_query_text_holds_item_title_description_review_title_and_rating(mi_profiles):
    target = _user_with_history(mi_profiles)[0]
    text = query_text(target)
    assert target.item_title in text and f"{target.rating:g}/5" in text
    assert target.text not in text  # the answer is never part of the query
    assert target.item_title in document_text(target)


def test_unknown_retriever_is_a_clear_error(embedder):
    with pytest.raises(ValueError, match="unknown retriever"):
        load_retriever("tfidf", lambda: embedder)
