"""The parametric branch's inputs, read from the store as tensors: facet states, labels, neighbours."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from copersona.facets.records import RELIABILITY_LEVELS
from copersona.graph.knn import top_k_neighbours
from copersona.store import Store


@dataclass
class PersonaGraph:
    """Every user's facet embeddings and reliability levels, and the user-level neighbour edges.

    Attributes:
        user_ids: ``N`` ids; row ``i`` of every tensor is ``user_ids[i]``.
        facet_keys: ``M`` facet keys, in the schema's order.
        states: ``(N, M, d)`` float32 facet embeddings ``e_u^(m)`` (placeholder embedding where absent).
        levels: ``(N, M)`` int64 reliability levels (0 none ... 3 strong).
        profiles: ``(N, d)`` float32 profile embeddings (mean of the user's reviews), for DEP.
        edge_index: ``(2, E)`` int64, row 0 the neighbour, row 1 the user; ``N_u`` of Eq. 10.
        placeholder: ``(d,)`` the state of a facet without evidence (the placeholder text's embedding;
            zeros when no user of the store has one); hidden facets take it.
    """

    user_ids: list[str]
    facet_keys: list[str]
    states: torch.Tensor
    levels: torch.Tensor
    profiles: torch.Tensor
    edge_index: torch.Tensor
    placeholder: torch.Tensor | None = None

    def __post_init__(self) -> None:
        if self.placeholder is None:
            self.placeholder = torch.zeros(self.states.shape[-1], dtype=self.states.dtype, device=self.states.device)

    @property
    def index(self) -> dict[str, int]:
        return {u: i for i, u in enumerate(self.user_ids)}

    def to(self, device: str) -> PersonaGraph:
        return PersonaGraph(
            self.user_ids,
            self.facet_keys,
            self.states.to(device),
            self.levels.to(device),
            self.profiles.to(device),
            self.edge_index.to(device),
            self.placeholder.to(device),
        )

    @classmethod
    def from_store(cls, store: Store, neighbours: int) -> PersonaGraph:
        schema = store.schema()
        if schema is None:
            raise ValueError(f"{store.path}: no facet schema; build the store first (copersona build)")
        facet_keys = [f.key for f in schema.facets]
        level = {name: i for i, name in enumerate(RELIABILITY_LEVELS)}
        user_ids: list[str] | None = None
        states, levels = [], []
        for key in facet_keys:
            ids, vectors, labels = store.facet_layer(key)
            if user_ids is not None and ids != user_ids:
                raise ValueError(f"{store.path}: facet {key!r} covers other users than the first facet")
            user_ids = ids
            states.append(vectors)
            levels.append([level[label] for label in labels])
        if not user_ids:
            raise ValueError(f"{store.path}: no facet states; build the store first (copersona build)")
        state_array = np.stack(states, axis=1).astype(np.float32)  # (N, M, d)
        level_array = np.array(levels, dtype=np.int64).T  # (N, M)
        profile_ids, profile_vectors = store.profile_vectors()
        rows = {u: i for i, u in enumerate(profile_ids)}
        missing = [u for u in user_ids if u not in rows]
        if missing:
            raise ValueError(f"{store.path}: {len(missing)} users have facet states but no profile vector")
        profiles = profile_vectors[[rows[u] for u in user_ids]].astype(np.float32)
        placeholder = store.placeholder_vector()
        return cls(
            user_ids=user_ids,
            facet_keys=facet_keys,
            states=torch.from_numpy(state_array),
            levels=torch.from_numpy(level_array),
            profiles=torch.from_numpy(profiles),
            edge_index=anchor_neighbour_edges(state_array, level_array, neighbours),
            placeholder=torch.from_numpy(placeholder) if placeholder is not None else None,
        )


def anchor_embeddings(states: np.ndarray, levels: np.ndarray) -> np.ndarray:
    """``(N, d)``: each user's mean over observed facets (moderate or strong), L2-normalized.

    A user with no observed facet is anchored on all of them, so every user has a neighbour set.
    """
    observed = (levels >= RELIABILITY_LEVELS.index("moderate")).astype(np.float32)
    observed[observed.sum(axis=1) == 0] = 1.0
    anchors = (states * observed[:, :, None]).sum(axis=1) / observed.sum(axis=1, keepdims=True)
    norms = np.linalg.norm(anchors, axis=1, keepdims=True)
    return anchors / np.maximum(norms, 1e-12)


def anchor_neighbour_edges(states: np.ndarray, levels: np.ndarray, k: int) -> torch.Tensor:
    """``(2, E)`` edges from each user's top-``k`` anchor neighbours (by cosine) to the user."""
    if k <= 0 or len(states) < 2:
        return torch.zeros(2, 0, dtype=torch.int64)
    found = top_k_neighbours(anchor_embeddings(states, levels), k, min_similarity=-1.0)
    users, slots = np.nonzero(found.indices >= 0)
    return torch.from_numpy(np.stack([found.indices[users, slots], users]).astype(np.int64))
