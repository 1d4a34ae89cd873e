"""Time and item integrity of other users' evidence: a rule table, then real examples of a real build."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from copersona.config import HarnessConfig, PeersConfig
from copersona.data.records import Interaction
from copersona.facets.profile import split_sentences
from copersona.facets.records import FacetSummary, ReviewRef
from copersona.graph.records import PERSONA_LAYER
from copersona.retrieval.cutoff import LATER, SAME_ITEM, EvidenceCutoff, day
from copersona.retrieval.peers import PEER_SKIPPED, QUOTE_DROPPED, SUMMARY_REPLACED, PeerIndex
from copersona.store import Store

DAY = 86_400
TARGET = Interaction(user_id="u", item_id="target-item", timestamp=10 * DAY + 3600)


def _ref(days: int, item: str = "other") -> ReviewRef:
    return ReviewRef(item_id=item, timestamp=days * DAY)


@dataclass(frozen=True)
class Case:
    name: str
    summary_sources: tuple[ReviewRef, ...]
    quote_sources: tuple[ReviewRef, ...]
    peers: PeersConfig
    kept_summary: bool
    kept_quotes: int
    actions: tuple[str, ...]  # what the cutoff did, in order


STRICT = PeersConfig()
CASES = [
    Case("all earlier", (_ref(3), _ref(5)), (_ref(3), _ref(5)), STRICT, True, 2, ()),
    Case(
        "same day is not before",
        (_ref(3), _ref(10)),
        (_ref(3), _ref(10)),
        STRICT,
        False,
        1,
        (QUOTE_DROPPED, SUMMARY_REPLACED),
    ),
    Case(
        "all later: skipped",
        (_ref(11),),
        (_ref(11), _ref(12)),
        STRICT,
        False,
        0,
        (QUOTE_DROPPED, QUOTE_DROPPED, PEER_SKIPPED),
    ),
    Case(
        "the target item, earlier",
        (_ref(2, "target-item"),),
        (_ref(2, "target-item"),),
        STRICT,
        False,
        0,
        (QUOTE_DROPPED, PEER_SKIPPED),
    ),
    Case(
        "same item allowed",
        (_ref(2, "target-item"),),
        (_ref(2, "target-item"),),
        PeersConfig(same_item=True),
        True,
        1,
        (),
    ),
    Case("no time cutoff", (_ref(11), _ref(20)), (_ref(11), _ref(20)), PeersConfig(cutoff="none"), True, 2, ()),
    Case(
        "no time cutoff, target item",
        (_ref(11), _ref(20, "target-item")),
        (_ref(11), _ref(20, "target-item")),
        PeersConfig(cutoff="none"),
        False,
        1,
        (QUOTE_DROPPED, SUMMARY_REPLACED),
    ),
]


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_peer_package_under_the_cutoff(case):
    state = FacetSummary(
        user_id="peer",
        facet_key="f",
        summary="first sentence. second sentence.",
        quotes=["first sentence.", "second sentence."][: len(case.quote_sources)],
        reliability="strong",
        method="extractive",
        summary_sources=list(case.summary_sources),
        quote_sources=list(case.quote_sources),
    )
    exemplar, dropped = PeerIndex._exemplar("peer", 0.5, state, EvidenceCutoff.for_target(TARGET, case.peers))
    assert tuple(d.action for d in dropped) == case.actions
    if exemplar is None:
        assert not case.kept_summary and case.kept_quotes == 0
        return
    assert bool(exemplar.summary) == case.kept_summary and len(exemplar.quotes) == case.kept_quotes
    assert all(d.reason in (LATER, SAME_ITEM) for d in dropped)
    if not case.kept_summary:
        assert exemplar.package().startswith("Quotes:")


# -- real data: no later or same-item peer text reaches any input -----------------------------------

# Sentences this long are specific to one review; short ones ("Great product.") recur across users.
SPECIFIC_CHARS = 40


@pytest.fixture(scope="module")
def store(built_db):
    return built_db


@pytest.fixture(scope="module")
def examples(store):
    return store.examples("test") + store.examples("validation")


def _forbidden_sentences(store: Store, peers: set[str], target: Interaction) -> set[str]:
    """Specific sentences of the peers' reviews written on or after the target's day or of its item,
    that none of their allowed reviews also contains."""
    profiles = store.profiles(peers)
    cutoff = EvidenceCutoff.for_target(target, PeersConfig())
    banned, allowed = set(), []
    for reviews in profiles.values():
        for review in reviews:
            if cutoff.allows(review):
                allowed.append(review.text)
            else:
                banned.update(s for s in split_sentences(review.text) if len(s) >= SPECIFIC_CHARS)
    return {s for s in banned if not any(s in text for text in allowed)}


def test_peer_context_never_carries_later_or_same_item_reviews(store, runtime, examples):
    """Real examples whose peers wrote later reviews (or reviewed the target item): their texts stay out."""
    index = runtime.resources().peers
    with_drops = 0
    for example in examples:
        inp = runtime.inputs("copersona-np", example)
        peers = {n.user_id for n in index.neighbours(example.user_id, runtime.config.retrieval.neighbours)}
        if not peers:
            continue
        with_drops += bool(inp.dropped)
        shown = inp.parts["peers"]
        for sentence in _forbidden_sentences(store, peers, example.target):
            assert sentence not in shown, (example.user_id, sentence)
        for dropped in inp.dropped:
            assert dropped.peer in peers and dropped.reason in (LATER, SAME_ITEM)
    assert with_drops > 0, "the real build should hold targets whose peers wrote later reviews"


def test_peers_found_by_the_whole_persona_layer_alone_bring_their_facets(store, runtime, examples):
    """A peer linked by no facet edge (only by the whole-persona layer) still brings its facet
    packages where its evidence supports one, at its whole-persona weight, or has them cut off."""
    index = runtime.resources().peers
    limit = runtime.config.retrieval.neighbours
    strong = {(s.user_id, s.facet_key) for s in store.facet_states() if s.reliability in ("moderate", "strong")}
    persona_only = 0
    for example in examples:
        cutoff = EvidenceCutoff.for_target(example.target, runtime.config.peers)
        groups, dropped = index.context(example.user_id, limit, cutoff)
        shown = {(e.peer_id, g.facet.key): e.weight for g in groups for e in g.exemplars}
        cut = {(d.peer, d.facet) for d in dropped}
        for peer in index.neighbours(example.user_id, limit):
            if set(peer.facets) != {PERSONA_LAYER}:
                continue
            persona_only += 1
            for key in index.facets:
                if (peer.user_id, key) in strong and (peer.user_id, key) not in cut:
                    assert shown[(peer.user_id, key)] == peer.facets[PERSONA_LAYER]
                elif (peer.user_id, key) not in strong:
                    assert (peer.user_id, key) not in shown  # no evidence: nothing a layer links on
    assert persona_only, "the session build should choose some peers by the whole-persona layer alone"


def test_persona_db_collaborators_bring_only_units_of_earlier_reviews_of_other_items(store, runtime, examples):
    """Collaborators' traits and facts rest on reviews; none resting on a later or same-item review is shown.

    Profiles capped at one review: then the user's own persona leaves room that collaborators fill.
    """
    left_out = 0
    method = runtime.method("persona-db", examples)
    k = runtime.config.methods.persona_db_neighbor_topk
    for example in (e.model_copy(update={"profile": e.profile[-1:]}) for e in examples):
        inp = runtime.inputs("persona-db", example)
        persona, vectors = method.database.persona(example.user_id, method.own_reviews(example))
        collaborators = set(method.database.collaborators(example.user_id, persona, vectors, k))
        shown = inp.parts["persona database"]
        for sentence in _forbidden_sentences(store, collaborators, example.target):
            assert sentence not in shown, (example.user_id, sentence)
        assert all(d.peer != example.user_id and d.reason in (LATER, SAME_ITEM) for d in inp.dropped)
        left_out += len(inp.dropped)
    assert left_out > 0, "the real build should hold collaborators with later reviews"


def test_copy_peer_copies_only_earlier_reviews_of_other_items(store, runtime, examples):
    later = 0
    for example in examples:
        inp = runtime.inputs("copy-peer", example)
        if not inp.prediction:
            continue
        peer, item = inp.parts["copied from"].removeprefix("peer ").split(", item ")
        copied = next(i for i in store.profiles([peer])[peer] if i.item_id == item)
        assert copied.text == inp.prediction
        assert copied.item_id != example.target.item_id and day(copied.timestamp) < day(example.target.timestamp)
        later += sum(d.reason == LATER for d in inp.dropped)
    assert later > 0


def test_dpl_compares_with_representatives_reviews_before_the_target(runtime, examples):
    method = runtime.method("dpl", examples)
    for example in examples[:10]:
        cutoff = runtime.resources().cutoff(example)
        for _, reviews in method.compared_with(example):
            assert reviews and all(cutoff.allows(r) for r in reviews)


def test_no_cutoff_lets_later_evidence_back_in(store, runtime_on, examples):
    loose = runtime_on(store, peers={"cutoff": "none", "same_item": True})
    assert all(not loose.inputs("copersona-np", e).dropped for e in examples)


def test_a_bad_cutoff_setting_names_its_key():
    with pytest.raises(ValueError, match="harness.peers.cutoff"):
        HarnessConfig.from_dict({"peers": {"cutoff": "yesterday"}})


def test_cfrag_places_only_earlier_reviews_of_other_users_and_items(runtime, examples):
    method = runtime.method("cfrag", examples)
    left_out = 0
    for example in examples:
        cutoff = runtime.resources().cutoff(example)
        documents, _, dropped = method.documents(example)
        assert documents and all(d.user_id != example.user_id and cutoff.allows(d) for d in documents)
        assert all(d.peer != example.user_id and d.reason in (LATER, SAME_ITEM) for d in dropped)
        left_out += len(dropped)
    assert left_out > 0, "the real build should hold similar users with later reviews"
