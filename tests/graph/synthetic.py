"""Synthetic facet embeddings for the graph tests."""

import math

import numpy as np


def clustered_unit_vectors(n: int, d: int, clusters: int, seed: int) -> np.ndarray:
    """(n, d) float32 unit rows around random centres on the sphere, within-cluster cosine about 0.6,
    so that the 0.35 threshold keeps edges."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(clusters, d))
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    points = centres[rng.integers(0, clusters, n)] + rng.normal(scale=math.sqrt(0.7 / d), size=(n, d))
    return (points / np.linalg.norm(points, axis=1, keepdims=True)).astype(np.float32)
