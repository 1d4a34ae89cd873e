"""Joint training (Sec. 3.4, Eq. 14): LoRA on the generator, with the personalizer end to end.

One loop trains every method of the harness the same way, so ``evaluate --finetuned`` compares
methods on an equal budget: same steps, batch, rank, learning rate and data; only the inputs
differ (each method's own prompt, plus soft prompts for the methods that have a personalizer).

A run lives in one folder: ``training.json`` (what is trained, fixed at the start), checkpoints
every ``eval_every`` steps (resumed automatically), then ``adapter/``, ``personalizer.pt``,
``curve.json``/``curve.png``, the llama.cpp adapter, and ``model.json`` last.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import random
import time
from dataclasses import asdict
from pathlib import Path

import torch

from copersona.backends import LLMSpec
from copersona.backends.transformers_local import tokenizer_special_tokens
from copersona.config import HarnessConfig, TrainingConfig
from copersona.facets.records import FacetSummary
from copersona.inference import generator_spec, store_embedder
from copersona.methods import METHODS, Method, Resources, create
from copersona.model.base_model import BaseModel, load_base_model
from copersona.model.data import (
    Sequence,
    collate,
    encode_example,
    examples_digest,
    hidden_facets,
    training_examples,
    validation_examples,
)
from copersona.model.graph_inputs import PersonaGraph
from copersona.model.personalizer import Personalizer, init_token_embeddings
from copersona.model.soft_prompt import prepend_soft_prompt
from copersona.model.trained import MODEL_RECORD, CurvePoint, TargetTokens, TrainedModel, write_json_atomic
from copersona.progress import Progress
from copersona.store import Store

CHECKPOINTS_KEPT = 2


class TrainingError(RuntimeError):
    pass


def soft_prompt_window(config: TrainingConfig) -> int:
    """Tokens every method's text prompt may use: the window minus the soft prompt's room.

    The same for methods with and without soft prompts, so no method gets more text than another.
    """
    return config.max_length - config.personalizer.soft_prompt_length


# How examples become sequences; part of the fingerprint, so a model trained under an older
# encoding is not reused. 2: targets cut only at the window's target limit; soft prompts hide
# facets resting on the target.
ENCODING = 2


class Trainer:
    """Trains one method's adapter (and personalizer) on a store's training examples."""

    def __init__(
        self,
        store: Store,
        method: str,
        out: str | Path | None,
        config: TrainingConfig,
        harness_config: HarnessConfig,
        *,
        base: str = "smollm2",
        progress: Progress | None = None,
    ):
        if method not in METHODS:
            raise ValueError(f"unknown method {method!r}: use one of {', '.join(METHODS)}")
        if not METHODS[method].uses_generator:
            raise ValueError(f"{method!r} uses no generator; there is nothing to train")
        if config.batch_size % config.micro_batch_size:
            raise ValueError("training.batch_size must be a multiple of training.micro_batch_size")
        self.store, self.method_name = store, method
        self.out = Path(out) if out is not None else None
        self.config, self.harness_config, self.base_spec = config, harness_config, base
        self.progress = progress or Progress()
        self.encoder_kind = METHODS[method].soft_prompt
        self._prepared: tuple[BaseModel, list[Sequence], list[Sequence], str] | None = None

    # -- data --------------------------------------------------------------------------------
    def _method(self, base: BaseModel) -> Method:
        tokenizer = base.tokenizer
        resources = Resources(
            self.store,
            self.harness_config,
            count_tokens=lambda text: len(tokenizer(text, add_special_tokens=False)["input_ids"]) if text else 0,
            context_window=soft_prompt_window(self.config),
            embedder=store_embedder(self.store),
            special_tokens=tokenizer_special_tokens(tokenizer),
        )
        return create(self.method_name, resources)

    def _sequences(self, base: BaseModel) -> tuple[list[Sequence], list[Sequence], str]:
        train = training_examples(self.store, self.config.train_examples)
        validation = validation_examples(self.store, self.config.validation_examples)
        if not train:
            raise TrainingError(f"{self.store.path}: no training examples (profiles of one review and no train split)")
        method = self._method(base)
        method.prepare(train + validation)
        window = soft_prompt_window(self.config)
        states = self._facet_states() if self.encoder_kind == "persona" else None
        with self.progress.stage(f"encoding {self.method_name} inputs", total=len(train) + len(validation)) as advance:
            encoded = []
            for example in train + validation:
                sequence = encode_example(method, example, base.tokenizer, window)
                if states is not None:
                    facet_keys, by_user = states
                    sequence.hidden = hidden_facets(example, by_user.get(example.user_id, {}), facet_keys)
                encoded.append(sequence)
                advance(1)
        return encoded[: len(train)], encoded[len(train) :], examples_digest(train) + examples_digest(validation)

    def _facet_states(self) -> tuple[list[str], dict[str, dict[str, FacetSummary]]]:
        """The schema's facet keys and every user's facet states by key (their evidence sources)."""
        by_user: dict[str, dict[str, FacetSummary]] = {}
        for state in self.store.facet_states():
            by_user.setdefault(state.user_id, {})[state.facet_key] = state
        return [f.key for f in self.store.schema().facets], by_user

    def prepare(self) -> tuple[BaseModel, list[Sequence], list[Sequence], str]:
        """Loads the base model and encodes the data (once): base, train, validation, fingerprint."""
        if self._prepared is None:
            base = load_base_model(self.base_spec, device=self.config.device, dtype=self.config.dtype)
            train, validation, data_digest = self._sequences(base)
            self._prepared = (base, train, validation, self.fingerprint(data_digest, base.checkpoint))
        return self._prepared

    def fingerprint(self, data_digest: str, checkpoint: Path) -> str:
        identity = {
            "method": self.method_name,
            "base": self.base_spec,
            "checkpoint": checkpoint.name,
            "data": data_digest,
            "training": self.config.to_dict(),
            "harness": self.harness_config.input_settings(),
            "encoding": ENCODING,
        }
        return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:16]

    # -- the run -----------------------------------------------------------------------------
    def run(self, *, stop_after: int | None = None) -> TrainedModel | None:
        """Train to ``config.steps`` (resuming from the folder's last checkpoint), then save everything.

        ``stop_after`` ends this call after that many steps with a checkpoint and returns ``None``
        (a job that runs in time slices, e.g. on a cluster queue); the next call resumes.
        """
        from peft import LoraConfig, get_peft_model

        config = self.config
        base, train, validation, fingerprint = self.prepare()
        if self.out is None:
            raise TrainingError("no output folder: give one, or use train_or_reuse")
        self._claim_folder(fingerprint)

        torch.manual_seed(config.seed)
        lora = config.lora
        model = get_peft_model(
            base.model,
            LoraConfig(
                r=lora.rank,
                lora_alpha=lora.alpha,
                lora_dropout=lora.dropout,
                target_modules=list(lora.target_modules),
                task_type="CAUSAL_LM",
            ),
        )
        graph, personalizer = None, None
        if self.encoder_kind is not None:
            graph = PersonaGraph.from_store(self.store, config.personalizer.graph_neighbours).to(base.device)
            init = init_token_embeddings(
                base.model.get_input_embeddings(), base.tokenizer, config.personalizer.soft_prompt_length
            )
            personalizer = Personalizer(
                self.encoder_kind, graph, base.hidden_size, config.personalizer, init_tokens=init
            )
            personalizer.to(base.device)
        parameters = [p for p in model.parameters() if p.requires_grad]
        if personalizer is not None:
            parameters += list(personalizer.parameters())
        opt = config.optimizer
        optimizer = torch.optim.AdamW(
            parameters, lr=opt.learning_rate, weight_decay=opt.weight_decay, betas=tuple(opt.betas)
        )
        scheduler = cosine_with_warmup(optimizer, math.ceil(opt.warmup_ratio * config.steps), config.steps)

        state = TrainingState(model, personalizer, optimizer, scheduler)
        step, curve, seconds = state.resume(self.out / "checkpoints")
        user_rows = graph.index if graph is not None else None
        pad_id = base.tokenizer.pad_token_id

        def loss_of(sequences: list[Sequence]) -> torch.Tensor:
            facets = len(graph.facet_keys) if graph is not None else 0
            batch = {k: v.to(base.device) for k, v in collate(sequences, pad_id, user_rows, facets).items()}
            embeddings = model.get_input_embeddings()(batch["input_ids"])
            mask, labels = batch["attention_mask"], batch["labels"]
            if personalizer is not None:
                soft = personalizer(graph, batch["users"], batch["hidden"])
                embeddings, mask, labels = prepend_soft_prompt(embeddings, mask, soft, labels)
            return model(inputs_embeds=embeddings, attention_mask=mask, labels=labels).loss

        def validation_loss() -> float:
            model.eval()
            if personalizer is not None:
                personalizer.eval()
            total, tokens = 0.0, 0
            with torch.no_grad():
                for start in range(0, len(validation), config.micro_batch_size):
                    chunk = validation[start : start + config.micro_batch_size]
                    n = sum(sum(1 for label in s.labels[1:] if label >= 0) for s in chunk)
                    total += float(loss_of(chunk)) * n
                    tokens += n
            model.train()
            if personalizer is not None:
                personalizer.train()
            return total / max(tokens, 1)

        if step == 0 and validation:
            curve.append(CurvePoint(step=0, train_loss=None, validation_loss=validation_loss(), lr=0.0))
        order = DataOrder(len(train), config.seed)
        accumulation = config.batch_size // config.micro_batch_size
        model.train()
        if personalizer is not None:
            personalizer.train()
        last = min(config.steps, step + stop_after) if stop_after is not None else config.steps
        recent: list[float] = []
        with self.progress.stage(f"training {self.method_name}", total=config.steps) as advance:
            advance(step)
            while step < last:
                started = time.perf_counter()
                indices = order.batch(step, config.batch_size)
                step_loss = 0.0
                for k in range(accumulation):
                    chunk = [train[i] for i in indices[k * config.micro_batch_size : (k + 1) * config.micro_batch_size]]
                    loss = loss_of(chunk) / accumulation
                    loss.backward()
                    step_loss += float(loss.detach())
                torch.nn.utils.clip_grad_norm_(parameters, opt.max_grad_norm)
                lr = optimizer.param_groups[0]["lr"]
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad(set_to_none=True)
                step += 1
                seconds += time.perf_counter() - started
                recent.append(step_loss)
                point = CurvePoint(step=step, train_loss=step_loss, validation_loss=None, lr=lr)
                if step % config.eval_every == 0 or step == config.steps:
                    point.validation_loss = validation_loss() if validation else None
                    curve.append(point)
                    state.save(self.out / "checkpoints", step, curve, seconds)
                else:
                    curve.append(point)
                shown = sum(recent[-20:]) / len(recent[-20:])
                advance(1, status=f"loss {shown:.3f}")
        if step < config.steps:
            if step % config.eval_every:
                state.save(self.out / "checkpoints", step, curve, seconds)
            return None
        return self._finish(base, model, personalizer, graph, fingerprint, curve, seconds, train, validation)

    def _claim_folder(self, fingerprint: str) -> None:
        """Records what this folder trains; a folder that holds another run is an error, not overwritten."""
        self.out.mkdir(parents=True, exist_ok=True)
        record = self.out / "training.json"
        identity = {"fingerprint": fingerprint, "method": self.method_name, "base": self.base_spec}
        if record.exists():
            held = json.loads(record.read_text())
            if held.get("fingerprint") != fingerprint:
                raise TrainingError(
                    f"{self.out} holds another training run ({held.get('method')}, {held.get('fingerprint')}); "
                    "use another --out folder or remove it"
                )
            return
        write_json_atomic(record, {**identity, "config": self.config.to_dict()})

    def _finish(self, base, model, personalizer, graph, fingerprint, curve, seconds, train, validation):
        from copersona.model.report import plot_curve

        model.save_pretrained(self.out / "adapter")
        if personalizer is not None:
            torch.save(personalizer.state_dict(), self.out / "personalizer.pt")
        write_json_atomic(self.out / "curve.json", [asdict(p) for p in curve])
        plot_curve(curve, self.out / "curve.png", title=f"{self.method_name}: training on {self.store.name}")
        trained = TrainedModel(
            method=self.method_name,
            base=self.base_spec,
            checkpoint=str(base.checkpoint),
            fingerprint=fingerprint,
            encoder=self.encoder_kind,
            window=soft_prompt_window(self.config),
            soft_prompt_length=self.config.personalizer.soft_prompt_length if personalizer is not None else 0,
            steps=self.config.steps,
            train_examples=len(train),
            validation_examples=len(validation),
            target_tokens=TargetTokens(
                train=sum(q.target_tokens for q in train),
                validation=sum(q.target_tokens for q in validation),
                cut=sum(q.truncated for q in train + validation),
                hiding=sum(bool(q.hidden) for q in train),
            ),
            seconds=seconds,
            config=self.config.to_dict(),
            curve=curve,
            llama_cpp_adapter=self._export_llama_cpp(),
            path=str(self.out),
        )
        if personalizer is not None:
            personalizer.eval()
            with torch.no_grad():
                rows = torch.arange(len(graph.user_ids), device=graph.states.device)
                prompts = torch.cat([personalizer(graph, rows[i : i + 256]) for i in range(0, len(rows), 256)])
            self.store.write_soft_prompts(trained.key, graph.user_ids, prompts.float().cpu().numpy())
        trained.save()
        return trained

    def _export_llama_cpp(self) -> str | None:
        """The adapter as a llama.cpp LoRA GGUF when the base is a GGUF model llama.cpp runs."""
        from copersona.model.gguf_lora import UnsupportedAdapterError, export_lora_gguf

        if LLMSpec.parse(self.base_spec).gguf is None:  # llama.cpp runs GGUF bases only
            return None
        try:
            export_lora_gguf(self.out / "adapter", self.out / "adapter.gguf")
        except UnsupportedAdapterError as err:
            self.progress.message(f"no llama.cpp adapter: {err}")
            return None
        return "adapter.gguf"


def train_or_reuse(
    store: Store,
    method: str,
    models_root: str | Path,
    config: TrainingConfig,
    harness_config: HarnessConfig,
    *,
    base: str = "smollm2",
    progress: Progress | None = None,
) -> TrainedModel:
    """The model of ``method`` for this data and budget: reused from ``models_root`` when it exists.

    Each model lives in ``models_root/METHOD-FINGERPRINT``; the fingerprint covers the method,
    the base model, the training examples and every training setting, so a changed budget or
    store trains anew while an unchanged one costs nothing. An interrupted run resumes.
    """
    trainer = Trainer(store, method, None, config, harness_config, base=base, progress=progress)
    folder = Path(models_root) / f"{method}-{trainer.prepare()[3]}"
    if (folder / MODEL_RECORD).exists():
        return TrainedModel.load(folder)
    trainer.out = folder
    trained = trainer.run()
    assert trained is not None  # run() returns None only when stopped early
    return trained


def train_equal_budget(
    store: Store,
    methods: list[str],
    models_root: str | Path,
    config: TrainingConfig,
    harness_config: HarnessConfig,
    *,
    given: dict[str, TrainedModel] | None = None,
    progress: Progress | None = None,
) -> dict[str, TrainedModel]:
    """The equal-budget fine-tuned plan: one model per generating method, all under ``config``'s budget.

    Methods in ``given`` keep their model; every other method that generates is trained (or its
    model reused) by :func:`train_or_reuse` from the runtime's base generator.
    """
    base = generator_spec(store, harness_config)
    trained = dict(given or {})
    for name in methods:
        if METHODS[name].uses_generator and name not in trained:
            trained[name] = train_or_reuse(
                store, name, models_root, config, harness_config, base=base, progress=progress
            )
    return trained


class DataOrder:
    """Which training sequences each step sees: a fresh seeded permutation per epoch, fixed by step alone.

    A resumed run therefore sees exactly the batches the uninterrupted run would have seen.
    """

    def __init__(self, size: int, seed: int):
        self.size, self.seed = size, seed
        self._epochs: dict[int, list[int]] = {}

    def _epoch(self, epoch: int) -> list[int]:
        if epoch not in self._epochs:
            generator = torch.Generator().manual_seed(self.seed * 100_003 + epoch)
            self._epochs[epoch] = torch.randperm(self.size, generator=generator).tolist()
        return self._epochs[epoch]

    def batch(self, step: int, batch_size: int) -> list[int]:
        positions = range(step * batch_size, (step + 1) * batch_size)
        return [self._epoch(p // self.size)[p % self.size] for p in positions]


def cosine_with_warmup(optimizer: torch.optim.Optimizer, warmup: int, total: int):
    """Linear warm-up to the peak rate, then a cosine decay to zero at ``total`` steps."""

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / (warmup + 1)
        progress = (step - warmup) / max(1, total - warmup)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


class TrainingState:
    """The trainable state of a run, saved to and restored from checkpoint files."""

    def __init__(self, model, personalizer, optimizer, scheduler):
        self.model, self.personalizer = model, personalizer
        self.optimizer, self.scheduler = optimizer, scheduler

    def save(self, folder: Path, step: int, curve: list[CurvePoint], seconds: float) -> None:
        from peft import get_peft_model_state_dict

        folder.mkdir(parents=True, exist_ok=True)
        state = {
            "step": step,
            "curve": [asdict(p) for p in curve],
            "seconds": seconds,
            "adapter": get_peft_model_state_dict(self.model),
            "personalizer": self.personalizer.state_dict() if self.personalizer is not None else None,
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "torch_rng": torch.get_rng_state(),
            "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
            "python_rng": random.getstate(),
        }
        path = folder / f"step-{step:07d}.pt"
        partial = path.with_name(path.name + ".partial")
        torch.save(state, partial)
        os.replace(partial, path)
        for old in sorted(folder.glob("step-*.pt"))[:-CHECKPOINTS_KEPT]:
            old.unlink()

    def resume(self, folder: Path) -> tuple[int, list[CurvePoint], float]:
        """Restores the newest checkpoint; returns (step, curve, training seconds), zeros for a new run."""
        from peft import set_peft_model_state_dict

        found = sorted(folder.glob("step-*.pt"))
        if not found:
            return 0, [], 0.0
        state = torch.load(found[-1], weights_only=False)
        set_peft_model_state_dict(self.model, state["adapter"])
        if self.personalizer is not None:
            self.personalizer.load_state_dict(state["personalizer"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        torch.set_rng_state(state["torch_rng"])
        if state["cuda_rng"] is not None and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["cuda_rng"])
        random.setstate(state["python_rng"])
        return state["step"], [CurvePoint(**p) for p in state["curve"]], state["seconds"]
