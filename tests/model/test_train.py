"""Joint training on the real store with the real SmolLM2, on budgets a busy 2-core CPU runs in seconds.

Each run trains a few steps of two examples over a short window; what is checked is what must hold
at any budget: the loss falls on what the model sees, a resumed run is the uninterrupted one, a folder
never takes another run, and a trained model's soft prompts are cached for every user.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

pytest.importorskip("peft", reason="needs peft")
pytest.importorskip("transformers", reason="needs transformers")
pytest.importorskip("torch_geometric", reason="needs torch_geometric")

from runner import copy_store

from copersona.config import HarnessConfig, TrainingConfig  # noqa: E402
from copersona.model.data import hidden_facets, training_examples, validation_examples  # noqa: E402
from copersona.model.graph_inputs import PersonaGraph  # noqa: E402
from copersona.model.personalizer import Personalizer  # noqa: E402
from copersona.model.train import Trainer, TrainingError, train_or_reuse  # noqa: E402
from copersona.model.trained import MODEL_RECORD, CurvePoint, TrainedModel  # noqa: E402
from copersona.store import Store  # noqa: E402

L = 4  # virtual tokens


def tiny(**changes) -> TrainingConfig:
    """Four steps of two examples over a 160-token window, with a small LoRA and personalizer."""
    raw = {
        "steps": 4,
        "batch_size": 2,
        "micro_batch_size": 1,
        "max_length": 160,
        "train_examples": 2,
        "validation_examples": 2,
        "eval_every": 2,
        "device": "cpu",
        "lora": {"rank": 4, "alpha": 8},
        "personalizer": {
            "soft_prompt_length": L,
            "projector_hidden": 32,
            "encoder_hidden": 16,
            "attention_heads": 2,
            "graph_neighbours": 3,
        },
        "optimizer": {"learning_rate": 1e-3},
    }
    for key, value in changes.items():
        if isinstance(value, dict):
            raw[key] = {**raw.get(key, {}), **value}
        else:
            raw[key] = value
    return TrainingConfig.from_dict(raw)


@pytest.fixture(scope="module")
def store(built_store, tmp_path_factory):
    """A writable copy: training writes soft prompts into the store, the session's build stays as built."""
    copy = copy_store(built_store, tmp_path_factory.mktemp("train-store") / "mi.sqlite")
    with Store(copy) as db:
        yield db


@pytest.fixture(scope="module")
def models_root(tmp_path_factory):
    return tmp_path_factory.mktemp("models")


# Dropout off: the same two sequences every step, so the first and last train losses are comparable.
DETERMINISTIC = tiny(lora={"dropout": 0.0}, personalizer={"encoder_dropout": 0.0})


@pytest.fixture(scope="module")
def trained(store, models_root) -> TrainedModel:
    """CoPersona (soft prompt + both branches' text) trained once, shared by the tests below."""
    return train_or_reuse(store, "copersona", models_root, DETERMINISTIC, HarnessConfig())


# -- training -------------------------------------------------------------------------------------


def test_steps_lower_the_loss_on_the_batch_they_train_on(trained):
    # train_examples == batch_size: every step sees the same two sequences, the first step's loss is
    # the untrained model's and the last step's the model's after three updates on exactly that batch.
    losses = [p.train_loss for p in trained.curve if p.train_loss is not None]
    assert len(losses) == DETERMINISTIC.steps and all(np.isfinite(losses))
    assert losses[-1] < 0.9 * losses[0], losses


def test_the_gate_learns_through_the_generators_loss(trained):
    """End to end: the LM loss reaches the reliability gate through soft prompt, projector and encoder."""
    from copersona.model.gate import MonotoneGate

    state = torch.load(trained.personalizer_file)
    start = MonotoneGate()
    for name in ("z0", "raw_increments"):
        moved = (state[f"encoder.gate.{name}"] - getattr(start, name).detach()).abs()
        assert bool((moved > 1e-5).all()), (name, moved)


def test_trained_model_folder_and_record(trained, models_root):
    folder = trained.folder
    assert folder.parent == models_root and folder.name == f"copersona-{trained.fingerprint}"
    for name in ("training.json", "adapter/adapter_config.json", "personalizer.pt", "curve.json", MODEL_RECORD):
        assert (folder / name).exists(), name
    assert TrainedModel.load(folder) == trained
    assert trained.encoder == "persona" and trained.soft_prompt_length == L
    assert trained.window == DETERMINISTIC.max_length - L and trained.steps == DETERMINISTIC.steps
    assert trained.train_examples == 2 and trained.validation_examples == 2
    assert trained.target_tokens.train > 0 and trained.target_tokens.validation > 0  # recorded in model.json
    # Validation at the start and every eval_every steps, one train loss per step.
    assert [p.step for p in trained.curve] == [0, 1, 2, 3, 4]
    assert [p.validation_loss is not None for p in trained.curve] == [True, False, True, False, True]
    assert [CurvePoint(**p) for p in json.loads((folder / "curve.json").read_text())] == trained.curve


# -- soft prompts ---------------------------------------------------------------------------------------


def test_soft_prompts_are_cached_for_every_user(trained, store):
    graph = PersonaGraph.from_store(store, DETERMINISTIC.personalizer.graph_neighbours)
    hidden = torch.load(trained.personalizer_file)["projector.net.2.bias"].numel() // L
    personalizer = Personalizer("persona", graph, hidden, DETERMINISTIC.personalizer)
    personalizer.load_state_dict(torch.load(trained.personalizer_file))
    personalizer.eval()
    with torch.no_grad():
        expected = personalizer(graph, torch.arange(len(graph.user_ids))).numpy()
    cached = []
    for row, user_id in enumerate(graph.user_ids):
        prompt = store.soft_prompt(trained.key, user_id)
        assert prompt is not None, user_id
        assert prompt.shape == (L, hidden) and prompt.dtype == np.float32
        np.testing.assert_allclose(prompt, expected[row], rtol=1e-5, atol=1e-6)
        cached.append(prompt)
    assert store.count("soft_prompts") >= len(graph.user_ids)
    assert store.soft_prompt(trained.key, "no-such-user") is None
    assert store.soft_prompt("other-model@0", graph.user_ids[0]) is None
    cached = np.stack(cached)
    assert np.abs(cached - cached.mean(axis=0)).max() > 0  # one prompt per user, not one for all


def test_train_or_reuse_reuses_a_finished_model(trained, store, models_root, monkeypatch):
    record = trained.folder / MODEL_RECORD
    before = record.stat().st_mtime_ns

    def no_training(self, **_):
        raise AssertionError("train_or_reuse trained again instead of reusing the finished model")

    monkeypatch.setattr(Trainer, "run", no_training)
    again = train_or_reuse(store, "copersona", models_root, DETERMINISTIC, HarnessConfig())
    assert again == trained and record.stat().st_mtime_ns == before
    # Another budget is another model: it would train (here: reach the patched run) in its own folder.
    with pytest.raises(AssertionError, match="trained again"):
        train_or_reuse(store, "copersona", models_root, tiny(steps=5), HarnessConfig())


# -- resuming and folders ---------------------------------------------------------------------------------

# Dropout on (the defaults): a resumed run must restore the random state too, not only the weights.
# eval_every 3 makes the interrupted run stop between checkpoints (its stop writes one of its own).
RESUMABLE = tiny(eval_every=3)


def _weights(folder) -> tuple[dict, dict]:
    from safetensors.torch import load_file

    return load_file(folder / "adapter" / "adapter_model.safetensors"), torch.load(folder / "personalizer.pt")


def _assert_same(a: dict, b: dict):
    assert a.keys() == b.keys() and a
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=1e-6, msg=key)


@pytest.fixture(scope="module")
def uninterrupted(store, tmp_path_factory) -> TrainedModel:
    out = tmp_path_factory.mktemp("uninterrupted")
    trained = Trainer(store, "copersona-p", out, RESUMABLE, HarnessConfig()).run()
    assert trained is not None
    return trained


def test_resumed_run_equals_the_uninterrupted_one(store, tmp_path, uninterrupted):
    stopped = Trainer(store, "copersona-p", tmp_path, RESUMABLE, HarnessConfig()).run(stop_after=2)
    assert stopped is None
    assert not (tmp_path / MODEL_RECORD).exists() and not (tmp_path / "adapter").exists()
    assert [p.name for p in (tmp_path / "checkpoints").glob("step-*.pt")] == ["step-0000002.pt"]

    resumed = Trainer(store, "copersona-p", tmp_path, RESUMABLE, HarnessConfig()).run()  # a new process's view
    assert resumed is not None and resumed.fingerprint == uninterrupted.fingerprint
    assert [p.step for p in resumed.curve] == [p.step for p in uninterrupted.curve] == [0, 1, 2, 3, 4]
    for mine, theirs in zip(resumed.curve, uninterrupted.curve):
        for loss in ("train_loss", "validation_loss"):
            ours, reference = getattr(mine, loss), getattr(theirs, loss)
            assert (ours is None) == (reference is None)
            if ours is not None:
                assert ours == pytest.approx(reference, rel=1e-6, abs=1e-6), (mine, theirs)
    adapter, personalizer = _weights(tmp_path)
    adapter_a, personalizer_a = _weights(uninterrupted.folder)
    _assert_same(adapter, adapter_a)
    _assert_same(personalizer, personalizer_a)
    # Training moved the adapter at all (LoRA's B starts at zero): the comparison is not of two inits.
    assert any(v.abs().max() > 0 for k, v in adapter.items() if "lora_B" in k)


def test_a_folder_holding_another_run_is_refused(store, uninterrupted):
    folder = uninterrupted.folder
    held = (folder / "training.json").read_text()
    other = tiny(eval_every=3, optimizer={"learning_rate": 5e-4})
    with pytest.raises(TrainingError, match="holds another training run"):
        Trainer(store, "copersona-p", folder, other, HarnessConfig()).run()
    assert (folder / "training.json").read_text() == held  # not overwritten
    assert TrainedModel.load(folder) == uninterrupted


# -- the training data --------------------------------------------------------------------------------


def test_training_examples_predict_from_strictly_earlier_reviews(store):
    examples = training_examples(store)
    held_out = store.examples("train")
    profiles = store.profiles()
    assert len(examples) == len(held_out) + sum(len(p) - 1 for p in profiles.values())
    assert examples[: len(held_out)] == held_out  # held-out train targets first
    assert training_examples(store, limit=5) == examples[:5]
    evaluated = {(e.user_id, e.target.item_id, e.target.timestamp) for e in store.examples() if e.split != "train"}
    histories = {u: store.history(u)[0] for u in store.user_ids()}
    for e in examples:
        target = e.target
        assert e.split == "train" and target.user_id == e.user_id and e.profile
        assert all(p.user_id == e.user_id for p in e.profile)
        assert target not in e.profile
        assert all((p.timestamp, p.item_id) < (target.timestamp, target.item_id) for p in e.profile)
        # The profile is the user's whole history before the target, in order (nothing skipped).
        history = histories[e.user_id]
        assert e.profile == history[: history.index(target)]
        # No validation or test target is trained on or read while training.
        assert (e.user_id, target.item_id, target.timestamp) not in evaluated
        assert not any((e.user_id, p.item_id, p.timestamp) in evaluated for p in e.profile)


def test_soft_prompts_of_profile_targets_hide_the_facets_resting_on_them(store):
    examples = training_examples(store)
    held_out = len(store.examples("train"))
    keys = [f.key for f in store.schema().facets]
    states = {}
    for state in store.facet_states():
        states.setdefault(state.user_id, {})[state.facet_key] = state
    hidden = [hidden_facets(e, states[e.user_id], keys) for e in examples]
    assert not any(hidden[:held_out])  # a held-out target is in no facet state: nothing to hide
    assert any(hidden[held_out:])
    for example, facets in zip(examples[held_out:], hidden[held_out:]):
        before = {(r.item_id, r.timestamp) for r in example.profile}
        for m, key in enumerate(keys):
            state = states[example.user_id][key]
            sources = {(r.item_id, r.timestamp) for r in [*state.summary_sources, *state.quote_sources]}
            assert (m in facets) == (not sources <= before)
            if (example.target.item_id, example.target.timestamp) in sources:
                assert m in facets  # the target's own text never reaches its soft prompt


def test_every_method_trains_on_the_same_target_tokens(store):
    from transformers import AutoTokenizer

    from copersona.inference import store_embedder
    from copersona.methods import create
    from copersona.methods.base import Resources
    from copersona.model.base_model import checkpoint_for
    from copersona.model.data import CHATML_END, encode_example, end_of_turn

    tokenizer = AutoTokenizer.from_pretrained(str(checkpoint_for("smollm2")))
    assert end_of_turn(tokenizer) == CHATML_END  # SmolLM2's chat template ends turns with it
    count = lambda text: len(tokenizer(text, add_special_tokens=False)["input_ids"]) if text else 0  # noqa: E731
    examples = sorted(training_examples(store), key=lambda e: -len(e.target.text))[:3]  # the longest targets
    resources = Resources(
        store, HarnessConfig(), count_tokens=count, context_window=192, embedder=store_embedder(store)
    )
    labels = {}
    for name in ("nonperso", "rag", "pag", "copersona-np"):
        method = create(name, resources)
        method.prepare(examples)
        labels[name] = [[t for t in encode_example(method, e, tokenizer, 192).labels if t >= 0] for e in examples]
    assert all(labels[name] == labels["nonperso"] for name in labels)
    assert max(len(t) for t in labels["nonperso"]) == 96  # the longest were cut at half the window, for every method


def test_validation_examples_are_the_first_users_validation_targets(store):
    chosen = validation_examples(store, 5)
    assert len(chosen) == 5 and all(e.split == "validation" for e in chosen)
    everyone = store.examples("validation")
    assert [e.user_id for e in chosen] == sorted(e.user_id for e in everyone)[:5]


def test_trainer_refuses_what_it_cannot_train(store):
    with pytest.raises(ValueError, match="unknown method"):
        Trainer(store, "bogus", None, tiny(), HarnessConfig())
    with pytest.raises(ValueError, match="nothing to train"):
        Trainer(store, "copy-self", None, tiny(), HarnessConfig())
    with pytest.raises(ValueError, match="multiple of"):
        Trainer(store, "rag", None, tiny(batch_size=3, micro_batch_size=2), HarnessConfig())


# -- GRPO (PAT's policy optimisation) at the same budget --------------------------------------------


@pytest.mark.parametrize(
    "completion, target, better_than",
    [
        ("the strap is soft and long", "the strap is soft and long", "a strap"),
        ("the strap is soft and long", "the strap is soft and long", ""),
        ("soft strap , long enough", "the strap is soft and long", "the the the the the the the the the the the the"),
    ],
)
def test_review_reward_prefers_closer_answers_of_the_target_length(completion, target, better_than):
    from copersona.model.grpo import review_reward

    assert review_reward(completion, target, 0.1) > review_reward(better_than, target, 0.1)


def test_grpo_trains_an_adapter_into_a_model_folder(store, tmp_path):
    """GRPO on Non-Perso's inputs (the shortest prompts; PAT trains on its first pass the same way)."""
    pytest.importorskip("trl", reason="needs trl")
    from copersona.config import GRPOSettings
    from copersona.model.grpo import GRPOTrainer

    config = tiny(steps=2, batch_size=1, train_examples=2, validation_examples=0, eval_every=2)
    grpo = GRPOSettings(generations=2, max_completion_tokens=8, beta=0.0)
    trainer = GRPOTrainer(store, "nonperso", tmp_path / "grpo", config, HarnessConfig(), grpo=grpo)
    trained = trainer.run()
    assert trained is not None and trained.method == "nonperso" and trained.steps == 2
    log = json.loads((tmp_path / "grpo" / "grpo-log.json").read_text())
    assert [e["step"] for e in log] == [1, 2] and all(np.isfinite(e["reward"]) for e in log)
    assert TrainedModel.load(tmp_path / "grpo").fingerprint == trained.fingerprint
    assert trained.llama_cpp_adapter == "adapter.gguf" and (tmp_path / "grpo" / "adapter.gguf").stat().st_size > 0
    lora = Trainer(store, "nonperso", tmp_path / "sft", config, HarnessConfig())
    assert lora.prepare()[3] != trained.fingerprint  # the same data and budget, another algorithm
