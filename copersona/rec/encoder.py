"""Fine-tuning the user-persona encoder (paper 003, Sec. 3.1.3, Eq. 6-9), and loading it back.

Training pairs come from the alignment stage: for a training interaction (u, i) aligned with
persona pi+, the anchor is u's profile *before* i (its L most recent entries, Eq. 6) and the
positive is pi+'s text (Eq. 8). The anchor embedding is the decayed mean of its entries'
embeddings (Eq. 7), computed with gradients, so the loss trains exactly the e_u used at inference;
sentence-transformers' ``MultipleNegativesRankingLoss`` then computes InfoNCE with in-batch
negatives (Eq. 9; its ``scale`` is 1/tau). Only a LoRA adapter (peft) is trained. After each epoch
the encoder reranks the validation users' candidates, and the epoch with the best validation
NDCG@10 is kept (merged into the base weights, so the result is a plain sentence-transformers
model that ``st:PATH`` loads anywhere).
"""

from __future__ import annotations

import hashlib
import json
import random
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from copersona.backends.embed import Embedder
from copersona.progress import Progress
from copersona.rec.config import EncoderTraining, RecConfig
from copersona.rec.profiles import CachedEncoder, entry_text, training_profiles
from copersona.rec.rerank import PersonaIndex, PersonaReranker
from copersona.store import StoreError
from copersona.store.rec import RecStore

#: Token window of one profile entry or persona while training (the inference encoder's own limit applies later).
TRAIN_MAX_TOKENS = 128


@dataclass(frozen=True)
class Pair:
    """One training pair: the profile before the interaction (most recent first) and pi+'s text."""

    user_id: str
    item_id: str
    profile: tuple[str, ...]
    persona: str


def training_pairs(store: RecStore, length: int) -> tuple[list[Pair], dict]:
    """Pairs from the stored alignments, oldest first; interactions with no earlier profile are counted."""
    items, aspects, personas = store.items(), store.aspects(), store.personas()
    aligned = {(a.user_id, a.item_id): a.persona_index for a in store.alignments()}
    history: dict[str, list[str]] = defaultdict(list)
    pairs, no_profile = [], 0
    for interaction, _ in store.rec_interactions("train"):
        key = (interaction.user_id, interaction.item_id)
        if key in aligned:
            persona = next(p for p in personas[interaction.item_id] if p.index == aligned[key])
            profile = tuple(reversed(history[interaction.user_id][-length:]))
            if profile:
                pairs.append(Pair(interaction.user_id, interaction.item_id, profile, persona.text()))
            else:
                no_profile += 1
        history[interaction.user_id].append(entry_text(items[interaction.item_id], aspects.get(key)))
    return pairs, {"aligned_pairs": len(pairs), "aligned_without_earlier_profile": no_profile}


def train_encoder(
    base_path: str,
    pairs: list[Pair],
    settings: EncoderTraining,
    gamma: float,
    out: Path,
    validate: Callable[[object], float],
    progress: Progress | None = None,
) -> dict:
    """Train a LoRA adapter on ``pairs``; keep the epoch whose ``validate(model)`` (NDCG@10) is best.

    Writes ``out/encoder`` (the merged model) and ``out/training.json``; returns the record.
    """
    import torch
    from peft import LoraConfig, get_peft_model
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.losses import MultipleNegativesRankingLoss

    progress = progress or Progress()
    torch.manual_seed(settings.seed)
    rng = random.Random(settings.seed)
    model = SentenceTransformer(base_path, device="cpu")
    transformer = model[0]
    lora = LoraConfig(
        r=settings.lora_rank,
        lora_alpha=settings.lora_alpha,
        lora_dropout=settings.lora_dropout,
        target_modules=["query", "key", "value", "dense"],
    )
    # LoRA layers are injected into the transformer's own modules; merging later writes them back in place.
    adapted = get_peft_model(transformer.auto_model, lora)
    loss = MultipleNegativesRankingLoss(model, scale=settings.scale)
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=settings.learning_rate)
    chosen = rng.sample(pairs, settings.max_pairs) if settings.max_pairs and settings.max_pairs < len(pairs) else pairs

    tokenize = getattr(model, "preprocess", None) or model.tokenize  # renamed in sentence-transformers 6

    def embed(texts: list[str]) -> torch.Tensor:
        return model(tokenize(texts))["sentence_embedding"]

    def anchors(batch: list[Pair]) -> torch.Tensor:
        flat = [entry for pair in batch for entry in pair.profile]
        vectors = embed(flat)
        out_rows, start = [], 0
        for pair in batch:
            rows = vectors[start : start + len(pair.profile)]
            start += len(pair.profile)
            weights = gamma ** torch.arange(len(rows), dtype=rows.dtype)
            out_rows.append((weights[:, None] * rows).sum(0) / weights.sum())
        return torch.stack(out_rows)

    inference_tokens, model.max_seq_length = model.max_seq_length, TRAIN_MAX_TOKENS
    model.eval()
    with torch.no_grad():
        history = [{"epoch": 0, "validation_ndcg@10": validate(model)}]
    # The adapter as initialized adds nothing (LoRA's B starts at zero): epoch 0 is the vanilla encoder.
    best_score, best_state = history[0]["validation_ndcg@10"], _adapter_state(model)
    started = time.perf_counter()
    for epoch in range(1, settings.epochs + 1):
        order = chosen[:]
        rng.shuffle(order)
        batches = [order[i : i + settings.batch_size] for i in range(0, len(order), settings.batch_size)]
        batches = [b for b in batches if len(b) > 1]  # a lone pair has no in-batch negative
        losses = []
        model.train()
        with progress.stage(f"train encoder, epoch {epoch}", total=len(batches)) as advance:
            for batch in batches:
                value = loss.compute_loss_from_embeddings([anchors(batch), embed([p.persona for p in batch])], None)
                optimizer.zero_grad()
                value.backward()
                optimizer.step()
                losses.append(float(value.detach()))
                advance(1, status=f"loss {np.mean(losses[-20:]):.3f}")
        model.eval()
        with torch.no_grad():
            score = validate(model)
        train_loss = float(np.mean(losses)) if losses else None
        history.append({"epoch": epoch, "train_loss": train_loss, "validation_ndcg@10": score})
        progress.message(f"epoch {epoch}: train loss {history[-1]['train_loss']}, validation NDCG@10 {score:.4f}")
        if score > best_score:
            best_score, best_state = score, _adapter_state(model)
    kept_epoch = max(history, key=lambda h: (h["validation_ndcg@10"], -h["epoch"]))["epoch"]
    model.load_state_dict(best_state, strict=False)
    model.max_seq_length = inference_tokens
    adapted.merge_and_unload()
    out.mkdir(parents=True, exist_ok=True)
    model.save(str(out / "encoder"))
    digest = hashlib.sha256()
    for name, value in sorted(model.state_dict().items()):
        digest.update(name.encode())
        digest.update(value.detach().cpu().numpy().tobytes())
    record = {
        "encoder_id": f"ft:{digest.hexdigest()[:16]}",
        "base": base_path,
        "gamma": gamma,
        "pairs": len(chosen),
        "kept_epoch": kept_epoch,
        "note": "epoch 0 is the vanilla encoder; when no epoch beats it on validation the kept weights equal it",
        "history": history,
        "settings": asdict(settings),
        "seconds": round(time.perf_counter() - started, 1),
    }
    (out / "training.json").write_text(json.dumps(record, indent=2))
    return record


def _adapter_state(model) -> dict:
    return {k: v.detach().clone() for k, v in model.state_dict().items() if "lora_" in k}


class _Training(Embedder):
    """The model being trained, as an embedder (for validation between epochs; never cached)."""

    def __init__(self, model, model_id: str):
        self.model, self.model_id = model, model_id
        self.dim = int(model.get_embedding_dimension())

    def encode(self, texts: list[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        return self.model.encode(
            texts, batch_size=64, normalize_embeddings=True, convert_to_numpy=True, show_progress_bar=False
        ).astype(np.float32)


def train(store: RecStore, config: RecConfig, out: Path, progress: Progress | None = None) -> dict:
    """``copersona rec train``: gamma from the vanilla encoder on validation, then the fine-tuning."""
    from copersona.backends.embed import SentenceTransformerEmbedder, load_embedder

    progress = progress or Progress()
    embedder = load_embedder(config.embedder)
    if not isinstance(embedder, SentenceTransformerEmbedder):
        raise ValueError(f"fine-tuning needs a sentence-transformers encoder, not {config.embedder!r}")
    base_path = embedder.source
    validation = [c for g in store.generators() for c in store.candidates(g, "validation")]
    if not validation:
        raise StoreError(f"{store.path}: no validation candidates (run `copersona rec index` first)")
    items, personas = store.items(), store.personas()
    profiles = training_profiles(store, config.history_length)
    vanilla = CachedEncoder(embedder, store)
    reranker = PersonaReranker(
        "persona4rec", PersonaIndex.build(items, personas, vanilla), profiles, vanilla, config.decay_grid
    )
    chosen = reranker.prepare(validation)
    pairs, counts = training_pairs(store, config.history_length)
    if len(pairs) < 2:
        raise ValueError(f"{store.path}: {len(pairs)} training pairs; fine-tuning needs aligned interactions")

    def validate(model) -> float:
        encoder = CachedEncoder(_Training(model, "training"), None)
        candidate = PersonaReranker(
            "ft", PersonaIndex.build(items, personas, encoder), profiles, encoder, [chosen["gamma"]]
        )
        return candidate.prepare(validation)["validation_ndcg@10"][str(chosen["gamma"])]

    record = train_encoder(base_path, pairs, config.training, chosen["gamma"], out, validate, progress)
    record |= {"vanilla": chosen, **counts}
    (out / "training.json").write_text(json.dumps(record, indent=2))
    return record
