"""``copersona rec`` end to end on the real Musical Instruments data with the embedded default.

One small index (the first users by id, every stage through the real CLI), one short fine-tuning
and one evaluation are shared by every test here; the LLM path runs against a real local
OpenAI-compatible server with the packaged SmolLM2.
"""

from __future__ import annotations

import json
from collections import defaultdict

import pytest
from runner import MI, cli

from copersona.rec.data import load_interactions
from copersona.rec.evaluate import METRICS
from copersona.store.rec import RecStore

pytest.importorskip("implicit")
pytest.importorskip("torch_geometric")

USERS = 30
CONFIG = """
[rec]
bootstrap = 200
decay_grid = [0.7, 1.0]
[rec.training]
epochs = 1
batch_size = 16
max_pairs = 32
"""


@pytest.fixture(scope="module")
def rec_run(data_dir, tmp_path_factory):
    """Index, fine-tune and evaluate, as a user would, on the first USERS users."""
    folder = tmp_path_factory.mktemp("rec")
    store, config = folder / "rec.sqlite", folder / "rec.toml"
    config.write_text(CONFIG)
    indexed = cli("rec", "index", data_dir / MI, "--store", store, "--limit-users", USERS, "--config", config)
    trained = cli("rec", "train", store, "--out", folder / "ft", "--config", config)
    cli("rec", "evaluate", store, "--out", folder / "eval", "--config", config)
    return {
        "store": store,
        "config": config,
        "folder": folder,
        "index_log": indexed.stderr,
        "train_log": trained.stderr,
    }


@pytest.fixture(scope="module")
def db(rec_run):
    with RecStore(rec_run["store"], read_only=True) as opened:
        yield opened


def test_nothing_held_out_shapes_aspects_personas_or_profiles(db):
    """Validation and test interactions are targets only: no aspect, persona member or quote, and no
    profile entry comes from them, and no candidate is an item the user had before the target."""
    interactions = db.rec_interactions()
    split_of = {(i.user_id, i.item_id): s for i, s in interactions}
    training_text = defaultdict(list)
    for i, s in interactions:
        if s == "train":
            training_text[i.item_id].append(i.text)
    assert set(split_of.values()) == {"train", "validation", "test"}
    assert all(split_of[key] == "train" for key in db.aspects())
    personas = db.personas()
    assert personas, "some items must have personas"
    for item_id, found in personas.items():
        for persona in found:
            assert all(split_of[(user, item_id)] == "train" for user in persona.members)
            for quote in persona.rationale.split('" "'):
                assert any(quote.strip('"') in text for text in training_text[item_id]), quote
    for alignment in db.alignments():
        assert split_of[(alignment.user_id, alignment.item_id)] == "train"
    seen = defaultdict(set)
    for i, s in interactions:
        seen[(i.user_id, s)].add(i.item_id)
    for generator in ("bpr", "lightgcn"):
        for split, before in (("validation", ("train",)), ("test", ("train", "validation"))):
            for c in db.candidates(generator, split):
                assert len(c.items) == 20 and len(set(c.items)) == 20
                earlier = set().union(*(seen[(c.user_id, s)] for s in before))
                assert not earlier & set(c.items)
                assert c.target in seen[(c.user_id, split)]


def test_peers_reach_a_target_only_with_what_they_wrote_before_it(db, embedder):
    from copersona.config import GraphConfig
    from copersona.rec.copersona import PeerReranker
    from copersona.rec.profiles import CachedEncoder, training_profiles
    from copersona.rec.rerank import PersonaIndex

    encoder = CachedEncoder(embedder, None)  # the store is open read-only: no vector cache
    index = PersonaIndex.build(db.items(), db.personas(), encoder)
    peers = PeerReranker(db, index, training_profiles(db, 10), encoder, [1.0], [1.0], GraphConfig(), 10)
    times = {(i.user_id, s): i.timestamp for i, s in db.rec_interactions() if s != "train"}
    used = 0
    for query in db.candidates("bpr", "test") + db.candidates("bpr", "validation"):
        for _, _, entries in peers.peer_entries(query):
            assert all(time < times[(query.user_id, query.split)] for time, _ in entries)
            used += len(entries)
    assert used > 0


def test_personas_are_two_to_seven_clusters_or_a_summary_entry(db):
    details = db.persona_details()
    aspects = db.aspects()
    informative = defaultdict(int)
    for (_, item), aspect in aspects.items():
        informative[item] += aspect.informative()
    for item_id, detail in details.items():
        k = detail["k"]
        assert k <= 7 and (k == 0) == (informative[item_id] == 0)
        if informative[item_id] >= 3:
            assert k >= 2
    # Every informative tuple sits in exactly one persona of its item.
    for item_id, found in db.personas().items():
        members = [u for p in found for u in p.members]
        assert len(members) == len(set(members)) == informative[item_id]


def test_a_rerun_resumes_without_redoing_work(rec_run, data_dir):
    """Each stage skips what the store already holds: a second run changes nothing."""
    with RecStore(rec_run["store"], read_only=True) as before:
        personas, candidates = before.personas(), before.candidates("bpr", "test")
    cli(
        "rec",
        "index",
        data_dir / MI,
        "--store",
        rec_run["store"],
        "--limit-users",
        USERS,
        "--config",
        rec_run["config"],
    )
    with RecStore(rec_run["store"], read_only=True) as after:
        assert after.personas() == personas and after.candidates("bpr", "test") == candidates
        latest = {r.stage: r.details for r in after.runs()}
    assert latest["rec-aspects"]["extracted"] == 0 and latest["rec-personas"]["built"] == 0
    assert latest["rec-candidates"]["bpr"] == {"resumed": True}
    changed = cli("rec", "index", data_dir / MI, "--store", rec_run["store"], "--limit-users", USERS + 1, check=False)
    assert changed.returncode == 1 and "other settings (max_users)" in changed.stderr


def test_reasoning_chunks_give_in_a_worker_what_they_give_here(db, rec_run):
    """What `rec index --engine ray` ships to an actor: the recipe, pickled, loads the same reasoner
    from the config and the store's location, and answers a chunk as the driver's reasoner does."""
    import pickle

    from copersona.rec.config import RecConfig
    from copersona.rec.index import ReasonInChunks, RecIndex
    from copersona.rec.reasoning import AspectInput

    config = RecConfig.load(rec_run["config"])
    here = RecIndex.of(db, config)
    reviews = [AspectInput(i.user_id, i.item_id, i) for i, _ in db.rec_interactions("train") if i.text.strip()][:6]
    items = sorted(db.items().values(), key=lambda item: item.item_id)[:3]
    for stage, chunk in (("aspects", reviews), ("summaries", items)):
        recipe = pickle.loads(pickle.dumps(ReasonInChunks(config, db.location, stage)))
        assert recipe.open()(chunk) == recipe.bind(here)(chunk)


def test_evaluation_reports_every_generator_and_reranker_with_intervals(rec_run):
    results = json.loads((rec_run["folder"] / "eval" / "results.json").read_text())
    assert results["task"] == "recommendation"
    rows = {(r["generator"], r["reranker"]): r for r in results["rows"]}
    rerankers = ("none", "persona4rec", "persona4rec-summary", "persona4rec-ft", "persona4rec-ft-summary")
    rerankers += ("copersona-facets", "copersona-peers")
    assert set(rows) == {(g, r) for g in ("bpr", "lightgcn") for r in rerankers}
    for (generator, reranker), row in rows.items():
        assert set(row["metrics"]) == set(METRICS)
        for metric, value in row["metrics"].items():
            low, high = row["intervals"][metric]
            assert 0 <= low <= value <= high <= 1
        # Reranking the top 20 never changes whether the target is among them.
        assert row["metrics"]["hr@20"] == rows[(generator, "none")]["metrics"]["hr@20"]
        assert (reranker == "none") == (not row["vs_generator"])
        assert set(row["segments"]) == {"warm users", "cold users", "head items", "tail items"}
    assert rows[("bpr", "persona4rec-ft")]["encoder"].startswith("ft:")
    assert rows[("bpr", "persona4rec")]["chosen"]["gamma"] in (0.7, 1.0)
    report = (rec_run["folder"] / "eval" / "report.md").read_text()
    assert "persona4rec-ft" in report and (rec_run["folder"] / "eval" / "metrics.png").stat().st_size > 10_000


def test_fine_tuning_keeps_the_epoch_best_on_validation(rec_run):
    record = json.loads((rec_run["folder"] / "ft" / "training.json").read_text())
    scores = {h["epoch"]: h["validation_ndcg@10"] for h in record["history"]}
    assert record["kept_epoch"] == max(scores, key=lambda e: (scores[e], -e))
    assert record["pairs"] == 32 and record["history"][1]["train_loss"] > 0
    assert (rec_run["folder"] / "ft" / "encoder" / "config.json").exists()


def test_recommend_explains_each_item_with_its_winning_persona(rec_run, db):
    user = db.candidates("bpr", "test")[0].user_id
    shown = cli(
        "rec", "recommend", rec_run["store"], "--user", user, "--explain", "--top", 5, "--config", rec_run["config"]
    )
    lines = [line for line in shown.stdout.splitlines() if line.startswith("│ ")]
    assert f"{user}: bpr candidates reranked by persona4rec-ft" in shown.stdout.replace("\n", " ")
    assert sum(line.split("│")[1].strip().isdigit() for line in lines) == 5
    missing = cli("rec", "recommend", rec_run["store"], "--user", "nobody", check=False)
    assert missing.returncode == 1 and "no bpr candidates for user 'nobody'" in missing.stderr


BAD_INPUT = [
    pytest.param("a,b,c\n1,2,3\n", "unknown format", id="no-user-item-time-columns"),
    pytest.param("", "no interactions found", id="empty-file"),
]


@pytest.mark.parametrize("text, message", BAD_INPUT)
def test_bad_interaction_files_get_a_clear_message(tmp_path, text, message):
    path = tmp_path / "ratings.csv"
    path.write_text(text)
    with pytest.raises(ValueError, match=message):
        load_interactions(path)


def test_short_histories_and_items_without_metadata_are_counted(tmp_path):
    rows = [
        "u1,i1,5,100,0,0",
        "u2,i1,4,100,0,0",
        "u2,i2,3,200,0,0",
        "u3,i1,5,100,0,0",
        "u3,i2,4,200,0,0",
        "u3,i3,2,300,0,0",
    ]
    (tmp_path / "ratings.csv").write_text("\n".join(rows) + "\n")
    data = load_interactions(tmp_path / "ratings.csv")
    assert data.counts["users_with_one_interaction_train_only"] == 1
    assert data.counts["users_with_two_interactions_no_validation"] == 1
    assert data.counts["items_without_metadata"] == 3
    assert [s for i, s in zip(data.interactions, data.splits) if i.user_id == "u3"] == ["train", "validation", "test"]
    assert [s for i, s in zip(data.interactions, data.splits) if i.user_id == "u1"] == ["train"]


def test_llm_reasoning_runs_against_a_local_openai_compatible_server(data_dir, llama_server, tmp_path):
    """The paper's path with a real server and the packaged SmolLM2: every record is the model's
    validated answer or a counted fallback, and a rerun is answered from the cache."""
    store = tmp_path / "llm.sqlite"
    llm = f"openai:smollm2@{llama_server}"
    cli("rec", "index", data_dir / MI, "--store", store, "--limit-users", 1, "--llm", llm)
    with RecStore(store) as db:
        first = {r.stage: r.details for r in db.runs()}
        assert set(db.aspect_methods()) <= {"llm", "llm-fallback"} and db.aspect_methods()
        assert {d["method"] for d in db.persona_details().values()} == {"llm"}
        assert first["rec-summaries"]["methods"].keys() <= {"llm", "llm-fallback"}
        for stage in ("rec-summaries", "rec-aspects", "rec-personas"):
            assert first[stage]["llm"]["calls"] > 0
        assert {a.method for a in db.alignments()} <= {"judge", "judge-fallback"}
        # Redo the reasoning from scratch: the store's LLM cache answers every call.
        with db.transaction() as sql:
            for table in ("rec_aspects", "rec_personas", "rec_persona_items", "rec_alignments"):
                sql.execute(f"DELETE FROM {table}")
            sql.execute("UPDATE rec_items SET summary = ''")
    cli("rec", "index", data_dir / MI, "--store", store, "--limit-users", 1, "--llm", llm)
    with RecStore(store, read_only=True) as db:
        again = {r.stage: r.details for r in db.runs()}
    for stage in ("rec-summaries", "rec-aspects", "rec-personas", "rec-alignment"):
        assert again[stage]["llm"]["calls"] == 0 and again[stage]["llm"]["cache_hits"] == first[stage]["llm"]["calls"]


# Parsing and control flow of the LLM path with a scripted model (each case: what the model says,
# and the method every record must then carry).
LLM_ANSWERS = [
    pytest.param(
        [
            '{"category_preference": "strings", "purchase_purpose": null, "quality_criteria": "tone", '
            '"usage_context": null}'
        ],
        "llm",
        id="valid-json",
    ),
    pytest.param(["not json at all"], "llm-fallback", id="broken-json"),
    pytest.param(['{"category_preference": "' + "x" * 400 + '"}'], "llm-fallback", id="slot-over-max-length"),
    pytest.param(['{"persona": 9, "justification": "out of range"}'], "llm-fallback", id="wrong-shape"),
]


@pytest.mark.parametrize("answers, method", LLM_ANSWERS)
def test_llm_aspects_fall_back_to_extractive_and_say_so(scripted_backend, embedder, answers, method):
    from copersona.backends.llm import LLM
    from copersona.data.records import Interaction
    from copersona.rec.reasoning import AspectInput, ExtractiveReasoner, LLMReasoner

    review = Interaction(
        user_id="u", item_id="i", timestamp=1, text="I bought these strings for my acoustic guitar. The tone is warm."
    )
    other = review.model_copy(update={"user_id": "v", "text": "Great value. I play it on stage every week."})
    fallback = ExtractiveReasoner(embedder)
    fallback.calibrate([AspectInput("u", "i", review), AspectInput("v", "i", other)])
    reasoner = LLMReasoner(LLM(scripted_backend(answers)), fallback, retries=1)
    [(aspect, used)] = reasoner.aspects([AspectInput("u", "i", review)])
    assert used == method
    if method == "llm":
        assert aspect.slots() == json.loads(answers[0])
    else:  # the extractive way: the review's own sentences
        assert all(value in review.text for value in aspect.slots().values() if value)


def test_llm_judge_out_of_range_falls_back_to_the_cluster(scripted_backend, embedder):
    from copersona.backends.llm import LLM
    from copersona.rec.reasoning import ExtractiveReasoner, LLMReasoner
    from copersona.rec.records import Persona, RecItem

    personas = [
        Persona(item_id="i", index=0, name="a", description="d", rationale="r", members=["v"]),
        Persona(item_id="i", index=1, name="b", description="d", rationale="r", members=["u"]),
    ]
    item = RecItem(item_id="i", title="Strings")
    bad = LLMReasoner(
        LLM(scripted_backend(['{"persona": 7, "justification": "no such persona"}'])), ExtractiveReasoner(embedder)
    )
    assert bad.align(["an earlier purchase"], item, personas, "u").model_dump() == {
        "user_id": "u",
        "item_id": "i",
        "persona_index": 1,
        "justification": "",
        "method": "judge-fallback",
    }
    good = LLMReasoner(
        LLM(scripted_backend(['{"persona": 1, "justification": "likes a"}'])), ExtractiveReasoner(embedder)
    )
    judged = good.align(["an earlier purchase"], item, personas, "u")
    assert (judged.persona_index, judged.method, judged.justification) == (0, "judge", "likes a")
