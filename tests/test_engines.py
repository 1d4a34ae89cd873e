"""The Ray engine on the real 40-user build: a local Ray started by the test, the build's per-user
stages and the harness's generation on actor pools, against the local engine's results."""

import pytest
from runner import copy_store

from copersona.backends import load_embedder
from copersona.backends.llm import LLM
from copersona.build import Backends, Build
from copersona.config import BuildConfig, HarnessConfig
from copersona.eval.harness import select_examples
from copersona.inference import Runtime
from copersona.inspect import overview
from copersona.store import Store


@pytest.fixture(scope="module")
def ray_engine():
    from copersona.engines import RayEngine

    engine = RayEngine(actors=1)  # one model load per stage: two cores, and the test's own process
    yield engine
    engine.close()


def test_ray_resumes_a_partly_built_store_to_the_local_engines_and_generates_its_answers(
    built_db, runtime, smollm2, ray_engine, tmp_path
):
    store = copy_store(built_db.path, tmp_path / "ray.sqlite")
    users = built_db.user_ids()
    with Store(store) as db:
        # An eighth of the users as a killed build leaves them (no profile vector, no facet
        # states), no graph, no cached answer: the Ray build must redo exactly those.
        redo = users[::8]
        db.forget_personas(redo)
        with db.transaction() as sql:
            sql.execute("DELETE FROM edges")
            sql.execute("DELETE FROM llm_cache")
        config = BuildConfig.from_dict(db.get_meta("build_config"))
        result = Build(db, config, Backends.of(config), engine=ray_engine).run(batch_users=5)
        for stage in ("profiles", "summaries"):
            details = result.stages[stage].details
            assert details["engine"] == "ray" and details["actors"] >= 1
            assert (details.get("embedded", details.get("users")), details["reused"]) == (
                len(redo),
                len(users) - len(redo),
            )
        assert {r["stage"]: r["engine"] for r in overview(db)["runs"]}["summaries"] == "ray"

        assert db.facet_states() == built_db.facet_states()
        assert (db.profile_vectors()[1] == built_db.profile_vectors()[1]).all()
        for facet in built_db.schema().facets:
            ids, vectors, labels = db.facet_layer(facet.key)
            local_ids, local_vectors, local_labels = built_db.facet_layer(facet.key)
            assert (ids, labels) == (local_ids, local_labels) and (vectors == local_vectors).all()
        assert all(db.neighbours(u) == built_db.neighbours(u) for u in users)

        # Generation: each answer generated afresh in an actor, the local engine's answer.
        examples = select_examples(built_db, "test", 2)[:1]
        on_ray = Runtime(
            db,
            HarnessConfig(),
            llm=lambda: LLM(smollm2, cache=db),
            embedder=lambda: load_embedder("minilm"),
            base_generator="smollm2",
            engine=ray_engine,
        )
        remote = on_ray.predict("nonperso", examples)
        local = runtime.predict("nonperso", examples)
    assert [p.text for p in remote] == [p.text for p in local] and all(p.text for p in remote)
    assert not any(p.cached for p in remote)
