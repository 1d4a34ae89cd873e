"""CFRAG's user encoder: users embedded from their own reviews, trained contrastively.

A user's input is the mean of their reviews' sentence embeddings (the shared embedder's, 384-d for
MiniLM); the encoder is a two-layer MLP onto the unit sphere,

    z_u = normalize(W_2 . GELU(W_1 . mean_{r in R_u} e_r + b_1) + b_2),    z_u in R^{dim}.

Training (InfoNCE, as CFRAG's user retriever): each step splits every user's reviews into two
disjoint random halves; the two halves' embeddings of one user are positives, every other user in
the batch is a negative,

    L = - 1/B sum_u log( exp(z_u^a . z_u^b / tau) / sum_v exp(z_u^a . z_v^b / tau) ),

symmetrized over (a, b). Users with one review have no second half and are not trained on (they are
still encoded). Deterministic for a seed; a few seconds on a CPU for a few thousand users.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F


@dataclass(frozen=True)
class EncoderSettings:
    dim: int
    epochs: int
    temperature: float
    seed: int = 0
    hidden: int = 256
    learning_rate: float = 3e-3


class UserEncoder(nn.Module):
    """mean review embedding (B, d_in) -> unit user embedding (B, dim)."""

    def __init__(self, input_dim: int, settings: EncoderSettings):
        super().__init__()
        self.settings = settings
        self.net = nn.Sequential(
            nn.Linear(input_dim, settings.hidden), nn.GELU(), nn.Linear(settings.hidden, settings.dim)
        )

    def forward(self, means: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.net(means), dim=-1)

    @torch.no_grad()
    def encode(self, means: np.ndarray) -> np.ndarray:
        """(n, d_in) float32 means -> (n, dim) float32 unit rows."""
        if len(means) == 0:
            return np.zeros((0, self.settings.dim), dtype=np.float32)
        return self(torch.from_numpy(np.ascontiguousarray(means, dtype=np.float32))).numpy()

    def to_bytes(self) -> bytes:
        buffer = io.BytesIO()
        torch.save(self.state_dict(), buffer)
        return buffer.getvalue()

    @classmethod
    def from_bytes(cls, payload: bytes, input_dim: int, settings: EncoderSettings) -> UserEncoder:
        encoder = cls(input_dim, settings)
        encoder.load_state_dict(torch.load(io.BytesIO(payload), weights_only=True))
        return encoder.eval()


def train_user_encoder(review_vectors: list[np.ndarray], settings: EncoderSettings) -> tuple[UserEncoder, list[float]]:
    """Train on each user's (n_u, d_in) review embeddings; returns the encoder and the loss per epoch.

    Raises ValueError when fewer than two users have two or more reviews (no negatives to contrast).
    """
    trainable = [v for v in review_vectors if len(v) >= 2]
    if len(trainable) < 2:
        raise ValueError("the user encoder needs at least two users with two or more reviews each")
    torch.manual_seed(settings.seed)
    rng = np.random.default_rng(settings.seed)
    encoder = UserEncoder(trainable[0].shape[1], settings)
    optimizer = torch.optim.AdamW(encoder.parameters(), lr=settings.learning_rate)
    losses = []
    targets = torch.arange(len(trainable))
    for _ in range(settings.epochs):
        halves_a, halves_b = [], []
        for vectors in trainable:
            order = rng.permutation(len(vectors))
            cut = len(vectors) // 2
            halves_a.append(vectors[order[:cut]].mean(axis=0))
            halves_b.append(vectors[order[cut:]].mean(axis=0))
        za = encoder(torch.from_numpy(np.vstack(halves_a)))
        zb = encoder(torch.from_numpy(np.vstack(halves_b)))
        logits = za @ zb.T / settings.temperature
        loss = (F.cross_entropy(logits, targets) + F.cross_entropy(logits.T, targets)) / 2
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return encoder.eval(), losses
