"""A trained model on disk (adapter, personalizer, curve) and its record, ``model.json``."""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

MODEL_RECORD = "model.json"


@dataclass(frozen=True)
class TargetTokens:
    """What a model was trained and validated on, in target tokens: equal across methods of one
    budget (targets are cut only at the window's target limit), so their validation losses compare.

    Attributes:
        train / validation: target tokens over the training / validation examples.
        cut: targets cut at the target limit (the same ones for every method).
        hiding: training examples whose soft prompt hid facets resting on their target (0 without one).
    """

    train: int
    validation: int
    cut: int
    hiding: int = 0


@dataclass
class CurvePoint:
    """One optimizer step of a training curve; step 0 is the untrained model (no train loss), and the
    validation loss is there only at evaluation steps."""

    step: int
    train_loss: float | None
    validation_loss: float | None
    lr: float


@dataclass(frozen=True)
class ModelSummary:
    """What a report shows about a trained model: its record without the curve, with first and last
    validation losses."""

    method: str
    base: str
    fingerprint: str
    encoder: str | None
    window: int
    soft_prompt_length: int
    steps: int
    batch_size: int
    train_examples: int
    validation_examples: int
    seconds: float
    initial_validation_loss: float | None
    final_validation_loss: float | None
    target_tokens: TargetTokens | None
    config: dict

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class TrainedModel:
    """What a finished training run produced; ``model.json`` is written last, so it marks completion.

    Attributes:
        method: the harness method whose inputs trained it.
        base: the generator spec it fine-tunes (e.g. ``smollm2``).
        checkpoint: the base model's local checkpoint folder.
        fingerprint: digest of method, base, data and training config: equal fingerprints, same model.
        encoder: the personalizer's encoder kind (``persona``, ``difference``), or ``None`` without soft prompts.
        window: tokens of the text prompt the method built (the training window minus the soft prompt).
        soft_prompt_length: virtual tokens ``L`` (0 without a personalizer).
    """

    method: str
    base: str
    checkpoint: str
    fingerprint: str
    encoder: str | None
    window: int
    soft_prompt_length: int
    steps: int
    train_examples: int
    validation_examples: int
    seconds: float
    config: dict
    curve: list[CurvePoint] = field(default_factory=list)
    llama_cpp_adapter: str | None = None  # file name of the GGUF LoRA inside the folder, when exported
    target_tokens: TargetTokens | None = None  # None: trained before target tokens were recorded
    path: str = ""

    def __post_init__(self) -> None:
        if isinstance(self.target_tokens, dict):  # as read from model.json
            self.target_tokens = TargetTokens(**self.target_tokens)
        self.curve = [CurvePoint(**p) if isinstance(p, dict) else p for p in self.curve]

    @property
    def key(self) -> str:
        """Identifies the model in the store (soft prompts) and in the LLM cache."""
        return f"{self.method}@{self.fingerprint}"

    @property
    def folder(self) -> Path:
        return Path(self.path)

    @property
    def adapter_dir(self) -> Path:
        return self.folder / "adapter"

    @property
    def personalizer_file(self) -> Path:
        return self.folder / "personalizer.pt"

    @property
    def validation_losses(self) -> list[float]:
        return [p.validation_loss for p in self.curve if p.validation_loss is not None]

    def summary(self) -> ModelSummary:
        losses = self.validation_losses
        return ModelSummary(
            method=self.method,
            base=self.base,
            fingerprint=self.fingerprint,
            encoder=self.encoder,
            window=self.window,
            soft_prompt_length=self.soft_prompt_length,
            steps=self.steps,
            batch_size=self.config["batch_size"],
            train_examples=self.train_examples,
            validation_examples=self.validation_examples,
            seconds=self.seconds,
            initial_validation_loss=losses[0] if losses else None,
            final_validation_loss=losses[-1] if losses else None,
            target_tokens=self.target_tokens,
            config=self.config,
        )

    def save(self) -> None:
        record = {k: v for k, v in asdict(self).items() if k != "path"}
        write_json_atomic(self.folder / MODEL_RECORD, record)

    @classmethod
    def load(cls, folder: str | Path) -> TrainedModel:
        folder = Path(folder)
        record = folder / MODEL_RECORD
        if not record.exists():
            raise FileNotFoundError(f"{folder}: no finished training run here (no {MODEL_RECORD})")
        return cls(**json.loads(record.read_text()), path=str(folder))


def write_json_atomic(path: Path, value: object) -> None:
    """Written to a temporary file and renamed: a reader never sees half a record."""
    partial = path.with_name(path.name + ".partial")
    partial.write_text(json.dumps(value, indent=2))
    os.replace(partial, path)
