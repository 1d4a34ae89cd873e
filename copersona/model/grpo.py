"""Reinforcement learning of a method's generation with GRPO (TRL), at the LoRA fine-tuning's budget.

PAT (`002`) trains its reasoning with policy optimisation. Here the policy is the generator with a
LoRA adapter (the same rank, targets and optimizer as :mod:`copersona.model.train`), the prompts
are the method's training inputs (PAT's first pass: both trajectories and the retrieved history,
:meth:`~copersona.methods.base.Method.training_input`) on the same training examples, and a step
sees ``batch_size`` prompts, as a LoRA step sees ``batch_size`` examples. For each prompt the
policy samples ``grpo.generations`` answers; each is rewarded by

    r = (ROUGE-L F1 + METEOR) / 2 - length_penalty * |log((w + 1) / (w* + 1))|

against the training target (w, w*: their word counts), and GRPO moves the policy toward the
answers above their group's mean. The result is a trained model folder like LoRA's (adapter,
llama.cpp adapter, curve, ``model.json``), so ``evaluate --model`` compares the two at equal budget.
Runs on a CPU at a small budget; the same code on a GPU.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from pathlib import Path

import torch

from copersona.config import GRPOSettings
from copersona.model.data import training_examples
from copersona.model.train import Trainer, TrainingError
from copersona.model.trained import CurvePoint, TrainedModel, write_json_atomic


def review_reward(completion: str, target: str, length_penalty: float) -> float:
    """(ROUGE-L F1 + METEOR) / 2 minus the length penalty (see the module docstring)."""
    from nltk.translate.meteor_score import meteor_score
    from rouge_score import rouge_scorer

    words, target_words = completion.split(), target.split()
    if not words:
        return -length_penalty * math.log(len(target_words) + 1)
    rouge = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True).score(target, completion)["rougeL"].fmeasure
    meteor = meteor_score([target_words], words)
    return (rouge + meteor) / 2 - length_penalty * abs(math.log((len(words) + 1) / (len(target_words) + 1)))


class GRPOTrainer(Trainer):
    """Trains one method's adapter with GRPO instead of supervised fine-tuning (see the module docstring)."""

    def __init__(self, *args, grpo: GRPOSettings, **kwargs):
        super().__init__(*args, **kwargs)
        if self.encoder_kind is not None:
            raise ValueError(f"{self.method_name!r} has a soft prompt; GRPO trains the generator's adapter only")
        self.grpo = grpo

    def fingerprint(self, data_digest: str, checkpoint: Path) -> str:
        identity = {"lora": super().fingerprint(data_digest, checkpoint), "grpo": self.grpo.__dict__}
        return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:16]

    def run(self, *, stop_after: int | None = None) -> TrainedModel | None:
        import datasets
        from peft import LoraConfig
        from trl import GRPOConfig
        from trl import GRPOTrainer as TRLTrainer

        config, grpo = self.config, self.grpo
        base, train, validation, fingerprint = self.prepare()
        if self.out is None:
            raise TrainingError("no output folder: give one")
        self._claim_folder(fingerprint)
        examples = training_examples(self.store, config.train_examples)
        method = self._method(base)
        method.prepare(examples)
        rows = [{"prompt": method.training_input(e).messages, "target": e.target.text.strip()} for e in examples]
        lora = config.lora
        checkpoints = self.out / "grpo"
        last = min(config.steps, stop_after) if stop_after is not None else config.steps
        arguments = GRPOConfig(
            output_dir=str(checkpoints),
            max_steps=config.steps,
            per_device_train_batch_size=config.batch_size * grpo.generations,
            num_generations=grpo.generations,
            max_completion_length=grpo.max_completion_tokens,
            temperature=grpo.temperature,
            beta=grpo.beta,
            learning_rate=config.optimizer.learning_rate,
            weight_decay=config.optimizer.weight_decay,
            max_grad_norm=config.optimizer.max_grad_norm,
            warmup_steps=math.ceil(config.optimizer.warmup_ratio * config.steps),
            lr_scheduler_type="cosine",
            logging_steps=1,
            save_steps=config.eval_every,
            save_total_limit=2,
            seed=config.seed,
            use_cpu=str(base.device) == "cpu",
            bf16=base.model.dtype == torch.bfloat16,  # as the base was loaded ([training] dtype): fp32 on a CPU
            activation_checkpointing=False,  # recomputation trades time for memory a LoRA step does not need
            report_to="none",
            disable_tqdm=True,
        )
        length_penalty = grpo.length_penalty

        def reward(completions, target, **_) -> list[float]:
            texts = [c[-1]["content"] if isinstance(c, list) else c for c in completions]
            return [review_reward(text, goal, length_penalty) for text, goal in zip(texts, target)]

        trainer = TRLTrainer(
            model=base.model,
            reward_funcs=reward,
            args=arguments,
            train_dataset=datasets.Dataset.from_list(rows),
            processing_class=base.tokenizer,
            peft_config=LoraConfig(
                r=lora.rank,
                lora_alpha=lora.alpha,
                lora_dropout=lora.dropout,
                target_modules=list(lora.target_modules),
                task_type="CAUSAL_LM",
            ),
        )
        if last < config.steps:
            trainer.args.max_steps = last  # a time slice: stop at a checkpoint, resume later
            trainer.args.save_steps = min(trainer.args.save_steps, last)
        started = time.perf_counter()
        resume = any(checkpoints.glob("checkpoint-*"))
        with self.progress.stage(f"GRPO training {self.method_name}", total=1) as advance:
            trainer.train(resume_from_checkpoint=resume or None)
            advance(1)
        seconds = time.perf_counter() - started
        log = [entry for entry in trainer.state.log_history if "reward" in entry]
        write_json_atomic(self.out / "grpo-log.json", log)
        if trainer.state.global_step < config.steps:
            return None
        curve = [
            CurvePoint(
                step=int(e["step"]),
                train_loss=float(e.get("loss", 0.0)),
                validation_loss=None,
                lr=e.get("learning_rate", 0.0),
            )
            for e in log
        ]
        return self._finish(base, trainer.model, None, None, fingerprint, curve, seconds, train, validation)
