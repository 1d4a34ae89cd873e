"""Persona-DB's hierarchy on real profiles: the extractive refiner, the store, and the LLM path
against a real local OpenAI-compatible server (control flow, caching, validation)."""

from __future__ import annotations

import statistics

import pytest
from runner import copy_store

from copersona.backends import load_llm_backend
from copersona.backends.llm import LLM
from copersona.facets.records import ReviewRef
from copersona.personadb.database import PersonaDB
from copersona.personadb.records import LEVELS
from copersona.personadb.refine import ExtractiveRefiner, LLMRefiner
from copersona.store import Store


@pytest.fixture(scope="module")
def profiles(built_db):
    return built_db.profiles()


@pytest.fixture(scope="module")
def extractive(embedder, profiles):
    return ExtractiveRefiner(embedder, keys=5).fit(profiles)


@pytest.fixture(scope="module")
def population(runtime, built_db):
    """The session runtime's Persona-DB (its method refined every user once, for the other tests too)."""
    return runtime.method("persona-db", built_db.examples("test")).database.population


@pytest.fixture
def store(built_store, tmp_path):
    """A copy of the session build without refined personas (CLI tests may have refined some in it)."""
    with Store(copy_store(built_store, tmp_path / "s.sqlite")) as db:
        with db.transaction() as connection:
            connection.execute("DELETE FROM persona_db_units")
        yield db


def test_every_level_rests_on_the_users_own_reviews(population, profiles):
    assert set(population) == {u for u, reviews in profiles.items() if reviews}
    for user, (persona, vectors) in population.items():
        units = persona.units
        reviews = {ReviewRef.of(r): r for r in profiles[user]}
        levels = [u.level for u in units]
        assert levels == sorted(levels, key=LEVELS.index) and levels[0] == "cache"  # most abstract first
        assert len(vectors) == len(units)
        cache = units[0]
        assert 1 <= len(cache.keys) <= 5 and set(cache.sources) == set(reviews)
        mean = statistics.fmean(r.rating for r in profiles[user])
        assert f"Rates {mean:.1f}/5" in cache.text
        for unit in units[1:]:
            assert unit.sources and set(unit.sources) <= set(reviews)
            if unit.level == "distilled":  # a verbatim sentence of the review it names
                (source,) = unit.sources
                assert unit.text.split('": ', 1)[1] in " ".join(reviews[source].text.split())
            else:
                assert len(unit.sources) >= 2  # a trait is seen across reviews


def test_personas_are_stored_by_profile_digest_and_refined_once(store, extractive, profiles):
    database = PersonaDB(store, extractive)
    some = dict(list(profiles.items())[:6])
    assert database.ensure(some)["refined"] == 6
    assert database.ensure(some) == {}  # resumed: nothing left to refine
    assert store.runs("persona-db")[-1].details["refined"] == 6  # the run log keeps the counts
    user, reviews = next(iter(some.items()))
    persona, _ = database.persona(user, reviews)
    assert persona.level("cache") and store.personas_of(user)[0].units == persona.units
    capped = database.persona(user, reviews[-1:])[0]  # a capped profile is another persona
    assert capped.profile != persona.profile and len(store.personas_of(user)) == 2
    assert PersonaDB(store, ExtractiveRefiner(extractive.embedder, keys=3).fit(profiles)).digest(reviews) != (
        persona.profile
    )  # another setting never reads these


def test_collaborators_share_keys_and_never_include_the_user(runtime, built_db, population):
    database = runtime.method("persona-db", built_db.examples("test")).database
    for user, (persona, vectors) in population.items():
        joined = database.collaborators(user, persona, vectors, 3)
        assert len(joined) == 3 and user not in joined
        shared = [len(set(persona.keys) & set(population[c][0].keys)) for c in joined]
        assert shared == sorted(shared, reverse=True)


def test_the_llm_path_against_a_local_server_validates_caches_and_counts_fallbacks(
    llama_server, store, extractive, profiles
):
    # The two users with the shortest profiles: their prompts fit the test server's 2,048 tokens.
    users = sorted(profiles, key=lambda u: sum(len(r.text) for r in profiles[u]))[:2]
    chosen = {u: profiles[u] for u in users}
    backend = load_llm_backend(f"openai:smollm2@{llama_server}", max_concurrency=2)
    try:
        llm = LLM(backend, cache=store)
        refiner = LLMRefiner(extractive.embedder, 5, llm, extractive)
        refined, counts = refiner.refine(chosen)
        assert counts["llm"] + counts["fallback_invalid"] + counts["fallback_review_numbers"] == 2
        assert llm.stats.calls >= 2
        for user, (units, vectors) in refined.items():
            shown = {ReviewRef.of(r) for r in profiles[user]}
            assert units[0].level == "cache" and len(vectors) == len(units)
            assert all(set(u.sources) <= shown for u in units)
            made_by = {u.made_by for u in units}
            assert made_by == {backend.model_id} or all(m.startswith("extractive (fallback") for m in made_by)
        again = LLM(backend, cache=store)
        second, second_counts = LLMRefiner(extractive.embedder, 5, again, extractive).refine(chosen)
        assert again.stats.calls == 0 and again.stats.cache_hits >= 2  # every answer read back from the store
        assert second_counts == counts and [u.text for u in second[users[0]][0]] == [
            u.text for u in refined[users[0]][0]
        ]
    finally:
        backend.close()
