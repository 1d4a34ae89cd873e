"""Settings of the recommendation task (the ``[rec]`` table of a config file); defaults from paper 003."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from copersona.config import _help, _read, _TopLevel
from copersona.rec.candidates import BPRSettings, LightGCNSettings


@dataclass
class EncoderTraining:
    """Fine-tuning the encoder on aligned (user profile, persona) pairs (Sec. 3.1.3, 4.1.4)."""

    epochs: int = _help("Passes over the alignment pairs; the epoch best on validation is kept.", ge=1, default=2)
    batch_size: int = _help("Pairs per step; the other pairs of a batch are the negatives.", ge=2, default=32)
    learning_rate: float = _help(
        "AdamW learning rate of the LoRA weights (the paper's 1e-5 is for BGE-M3 at batch 72).", ge=0, default=2e-4
    )
    scale: float = _help(
        "Inverse temperature 1/tau of InfoNCE (MultipleNegativesRankingLoss's scale).", ge=0, default=20.0
    )
    lora_rank: int = _help("LoRA rank r.", ge=1, default=16)
    lora_alpha: int = _help("LoRA alpha.", ge=1, default=32)
    lora_dropout: float = _help("LoRA dropout.", ge=0, le=1, default=0.05)
    max_pairs: int | None = _help("Cap on training pairs (a seeded random sample); none: all.", ge=1, default=None)
    seed: int = _help("Seed of initialization and batch order.", default=0)


@dataclass
class RecConfig(_TopLevel):
    """Everything ``copersona rec`` needs."""

    where = "rec"

    embedder: str = _help(
        "Encoder spec (the vanilla encoder; fine-tuning adds a LoRA adapter to it).", default="minilm"
    )
    llm: str | None = _help(
        "LLM spec for the paper's reasoning (summaries, aspects, personas, judge); none: the extractive way.",
        default=None,
    )
    max_users: int | None = _help(
        "Keep this many users (first by id) and their interactions; none: all.", ge=1, default=None
    )
    candidates: int = _help("Candidates each generator retrieves per user (the paper's top-20).", ge=1, default=20)
    generators: list[str] = _help(
        "First-stage generators.",
        choices=("bpr", "lightgcn"),
        min_length=1,
        default_factory=lambda: ["bpr", "lightgcn"],
    )
    history_length: int = _help("Recent training interactions in a user profile, L (Eq. 6-7).", ge=1, default=10)
    decay_grid: list[float] = _help(
        "Values of the temporal decay gamma tried on validation (Eq. 7); the best is used on test.",
        ge=0,
        le=1,
        min_length=1,
        default_factory=lambda: [0.5, 0.7, 0.85, 1.0],
    )
    facets: int = _help(
        "CoPersona facets per user (the built-in schema's first N), for the copersona rows.", ge=1, le=6, default=5
    )
    peer_weights: list[float] = _help(
        "copersona-peers: weights of the facet-graph peers' profile in the user embedding, tried on validation.",
        ge=0,
        min_length=1,
        default_factory=lambda: [0.0, 0.25, 0.5, 1.0],
    )
    bootstrap: int = _help("Bootstrap resamples for confidence intervals.", ge=100, default=1000)
    seed: int = _help("Seed of clustering and bootstrap.", default=0)
    bpr: BPRSettings = field(default_factory=BPRSettings)
    lightgcn: LightGCNSettings = field(default_factory=LightGCNSettings)
    training: EncoderTraining = field(default_factory=EncoderTraining)

    @classmethod
    def load(cls, path: str | Path) -> RecConfig:
        return cls.from_dict(_read(path).get("rec", {}))
