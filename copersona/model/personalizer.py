"""The personalizer: a user encoder and the soft-prompt projector, one module trained end to end."""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn
from torch_geometric.utils import k_hop_subgraph

from copersona.config import PersonalizerSettings
from copersona.model.encoder import DifferenceEncoder, PersonaEncoder
from copersona.model.graph_inputs import PersonaGraph
from copersona.model.soft_prompt import SoftPromptProjector

#: ``persona``: CoPersona's gated graph encoder over facets; ``difference``: DEP's user-vs-peers vector.
EncoderKind = Literal["persona", "difference"]
ENCODER_KINDS: tuple[EncoderKind, ...] = ("persona", "difference")


class Personalizer(nn.Module):
    """Users' soft prompts from the persona graph.

    Shapes:
        - ``forward(graph, rows)``: ``rows`` ``(B,)`` indices into ``graph.user_ids`` -> ``(B, L, H)``
    """

    def __init__(
        self,
        kind: EncoderKind,
        graph: PersonaGraph,
        hidden_size: int,
        settings: PersonalizerSettings,
        *,
        init_tokens: torch.Tensor | None = None,
    ):
        super().__init__()
        if kind not in ENCODER_KINDS:
            raise ValueError(f"unknown encoder {kind!r}: use one of {', '.join(ENCODER_KINDS)}")
        if settings.gate not in ("shared", "per-facet"):
            raise ValueError(f"training.personalizer.gate: {settings.gate!r} is neither 'shared' nor 'per-facet'")
        self.kind = kind
        d = graph.states.shape[-1]
        if kind == "persona":
            self.encoder: PersonaEncoder | DifferenceEncoder = PersonaEncoder(
                d,
                len(graph.facet_keys),
                hidden=settings.encoder_hidden,
                heads=settings.attention_heads,
                dropout=settings.encoder_dropout,
                per_facet_gate=settings.gate == "per-facet",
            )
        else:
            self.encoder = DifferenceEncoder(d, hidden=settings.encoder_hidden, dropout=settings.encoder_dropout)
        self.projector = SoftPromptProjector(
            self.encoder.out_channels,
            hidden_size,
            length=settings.soft_prompt_length,
            width=settings.projector_hidden,
            init_tokens=init_tokens,
        )

    def forward(self, graph: PersonaGraph, rows: torch.Tensor, hidden: torch.Tensor | None = None) -> torch.Tensor:
        """Soft prompts of ``rows``; ``hidden`` ``(B, M)`` bool hides facets of each row's own user.

        A training example whose target is one of the user's profile reviews hides the facets whose
        evidence rests on that review or a later one (leave the target out, as at test time): they
        take the placeholder state and level none. Rows with hidden facets are encoded one by one,
        since one user may appear in a batch with different masks.
        """
        if hidden is not None and bool(hidden.any()):
            return torch.cat([self._encode(graph, rows[b : b + 1], hidden[b]) for b in range(len(rows))])
        return self._encode(graph, rows)

    def _encode(self, graph: PersonaGraph, rows: torch.Tensor, hidden: torch.Tensor | None = None) -> torch.Tensor:
        # One message-passing layer reads only the users' direct neighbours: encode that subgraph,
        # not the whole population, so a step costs the same for 300 users or 300,000.
        subset, edge_index, mapping, _ = k_hop_subgraph(
            rows, 1, graph.edge_index, relabel_nodes=True, num_nodes=len(graph.user_ids), flow="source_to_target"
        )
        if self.kind == "persona":
            states, levels = graph.states[subset], graph.levels[subset]
            if hidden is not None and bool(hidden.any()):
                states, levels = states.clone(), levels.clone()
                states[mapping[0], hidden] = graph.placeholder
                levels[mapping[0], hidden] = 0
            h = self.encoder(states, levels, edge_index)
        else:
            h = self.encoder(graph.profiles[subset], edge_index)
        return self.projector(h[mapping])


# The soft prompt starts as the embeddings of this text's tokens (cycled to L tokens).
INIT_TEXT = " Here is what is known about this customer and how they write their reviews:"


def init_token_embeddings(embeddings: nn.Embedding, tokenizer, length: int) -> torch.Tensor:
    """``(L, H)``: the embeddings of :data:`INIT_TEXT`'s tokens, repeated to ``length``."""
    ids = tokenizer(INIT_TEXT, add_special_tokens=False)["input_ids"]
    ids = [ids[i % len(ids)] for i in range(length)]
    return embeddings.weight[torch.tensor(ids, device=embeddings.weight.device)].detach().float().cpu()
