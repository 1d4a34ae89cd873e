"""The whole-persona layer of the multiplex graph: topic and writing style together, one relation.

Facet layers link users on what their facet texts say; on their own they lose what a plain kNN
over whole-profile embeddings knows (the product topic) and never see how a user writes (length,
punctuation, diversity: no sentence embedding carries it). This layer links users on one vector
per user, the profile embedding p_u (unit, d) beside the standardized style features z_u of
App. C (the same features the facet clustering uses), scaled by ``graph.style_scale``:

    x_u = [p_u ; s z_u / sqrt(k)] / || [p_u ; s z_u / sqrt(k)] ||,   A_uv^(P) = x_u . x_v,

with k style features (the review length as log(1 + characters), as lengths are skewed). The
standardization (mean and spread per feature) is computed from the population when the graph is
first built and then kept frozen, like the summarizer's calibration (its absence means the graph
has no such layer), so a repaired row, a rebuild after live updates and a persona derived at
request time are all placed alike. The layer is ungated
(omega = 1: a profile embedding has no reliability label). A pair's combined similarity mixes it
with the facet layers' mean (``graph.persona_weight``, see
:func:`copersona.graph.records.rank_neighbours`); weight 0 is the paper's rule and builds no such
layer.
"""

from __future__ import annotations

import numpy as np

from copersona.config import GraphConfig
from copersona.facets.profile import STYLE_FEATURES, style_features
from copersona.graph.records import STYLE_META
from copersona.store import Store, StoreError


def persona_style(features: np.ndarray) -> np.ndarray:
    """App. C's style features (n, k) as the layer uses them: the characters per review as
    log(1 + characters)."""
    style = np.array(features, dtype=np.float64, ndmin=2)
    style[:, 0] = np.log1p(style[:, 0])
    return style


def style_standardization(features: np.ndarray) -> dict:
    """Each style feature's population mean and spread over (n, k) style features (JSON-serializable;
    a constant feature, or an empty population, gets mean 0 and spread 1)."""
    style = persona_style(features).reshape(-1, len(STYLE_FEATURES))
    mean = style.mean(axis=0) if len(style) else np.zeros(len(STYLE_FEATURES))
    spread = style.std(axis=0) if len(style) else np.ones(len(STYLE_FEATURES))
    return {"features": list(STYLE_FEATURES), "mean": mean.tolist(), "std": np.where(spread > 0, spread, 1.0).tolist()}


def persona_vectors(
    profile_vectors: np.ndarray, features: np.ndarray | None, standardization: dict, style_scale: float
) -> np.ndarray:
    """x_u for each row: (n, d + k) float32 unit rows from (n, d) profile embeddings and (n, k)
    style features; ``None`` (a query that is not a user, such as a cold start's item text) has the
    population's mean style, z = 0."""
    k = len(standardization["mean"])
    z = np.zeros((len(profile_vectors), k))
    if features is not None and len(profile_vectors):
        z = (persona_style(features) - np.asarray(standardization["mean"])) / np.asarray(standardization["std"])
    x = np.hstack([np.asarray(profile_vectors, dtype=np.float64), style_scale * z / np.sqrt(k)])
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def _layer_inputs(store: Store) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Users with a profile vector, their vectors and style features (computed from the profiles of
    users a store made before style features were stored)."""
    user_ids, profile_vectors = store.profile_vectors()
    stored = store.style_features()
    missing = [u for u in user_ids if u not in stored]
    if missing:
        profiles = store.profiles(missing)
        stored |= {u: style_features(profiles.get(u, [])) for u in missing}
    features = np.array([stored[u] for u in user_ids]) if user_ids else np.zeros((0, len(STYLE_FEATURES)))
    return user_ids, profile_vectors, features


def population_standardization(store: Store) -> dict:
    """The style standardization of every user with a profile vector (what a first build stores)."""
    return style_standardization(_layer_inputs(store)[2])


def has_persona_layer(store: Store) -> bool:
    """Whether the store's graph was built with a whole-persona layer."""
    return store.get_meta(STYLE_META) is not None


def persona_layer(
    store: Store, config: GraphConfig, standardization: dict | None = None
) -> tuple[list[str], np.ndarray]:
    """The layer's users (sorted, those with a profile vector) and their x_u; the stored
    standardization unless one is given."""
    standardization = standardization or store.get_meta(STYLE_META)
    if standardization is None:
        raise StoreError(f"{store.path}: the graph has no whole-persona layer; run `copersona build` again")
    user_ids, profile_vectors, features = _layer_inputs(store)
    return user_ids, persona_vectors(profile_vectors, features, standardization, config.style_scale)
