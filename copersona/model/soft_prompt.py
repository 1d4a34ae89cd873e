"""Soft prompts: the projector of App. C and how virtual tokens join the token embeddings."""

from __future__ import annotations

import torch
from torch import nn

IGNORE_INDEX = -100  # labels with this value add nothing to the loss (torch and transformers convention)


class SoftPromptProjector(nn.Module):
    r"""User vector -> ``L`` virtual token embeddings (Eq. 13, the two-layer MLP of App. C).

    .. math::
        S_u = \mathrm{reshape}\big(W_2 \tanh(W_1 h_u + b_1) + b_2\big) \in \mathbb{R}^{L \times H}

    As in prompt tuning (Lester et al., 2021), the output bias starts at the embeddings of real
    tokens (``init_tokens``) and the weights near zero, so every user starts with the same
    ordinary-looking prompt and training moves users apart. (An all-zero start is no neutral
    choice: a zero embedding makes the first RMSNorm's gradient undefined.)

    Shapes:
        - input: ``(N, d_in)``
        - output: ``(N, L, H)``
    """

    def __init__(
        self,
        in_channels: int,
        hidden_size: int,
        *,
        length: int = 20,
        width: int = 512,
        init_tokens: torch.Tensor | None = None,
    ):
        super().__init__()
        self.length, self.hidden_size = length, hidden_size
        self.net = nn.Sequential(nn.Linear(in_channels, width), nn.Tanh(), nn.Linear(width, length * hidden_size))
        if init_tokens is not None:
            if init_tokens.shape != (length, hidden_size):
                raise ValueError(f"init_tokens: expected ({length}, {hidden_size}), got {tuple(init_tokens.shape)}")
            with torch.no_grad():
                self.net[2].bias.copy_(init_tokens.reshape(-1))
                nn.init.normal_(self.net[2].weight, std=1e-3)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.net(h).view(h.shape[0], self.length, self.hidden_size)


def prepend_soft_prompt(
    embeddings: torch.Tensor,
    attention_mask: torch.Tensor,
    soft_prompt: torch.Tensor,
    labels: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Virtual tokens before the real ones: the mask gains ones, the labels ``IGNORE_INDEX``.

    With left padding the virtual tokens sit before the padding; that is correct because the mask
    hides the padding and generation derives positions from the mask.

    Shapes:
        - ``embeddings``: ``(B, T, H)``; ``attention_mask``: ``(B, T)``; ``labels``: ``(B, T)``
        - ``soft_prompt``: ``(B, L, H)``
        - returns ``(B, L + T, H)``, ``(B, L + T)``, ``(B, L + T)``
    """
    batch, length = soft_prompt.shape[:2]
    virtual_mask = attention_mask.new_ones(batch, length)
    embeddings = torch.cat([soft_prompt.to(embeddings.dtype), embeddings], dim=1)
    attention_mask = torch.cat([virtual_mask, attention_mask], dim=1)
    if labels is not None:
        labels = torch.cat([labels.new_full((batch, length), IGNORE_INDEX), labels], dim=1)
    return embeddings, attention_mask, labels
