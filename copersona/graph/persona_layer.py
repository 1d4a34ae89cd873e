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
from copersona.data.records import Interaction
from copersona.facets.profile import STYLE_FEATURES, style_features
from copersona.graph.records import STYLE_META
from copersona.store import Store, StoreError


def _style_matrix(profiles: list[list[Interaction]]) -> np.ndarray:
    """(n, k) style features with the characters-per-review column as log(1 + characters)."""
    style = np.vstack([style_features(p) for p in profiles]) if profiles else np.zeros((0, len(STYLE_FEATURES)))
    style[:, 0] = np.log1p(style[:, 0])
    return style


def style_standardization(profiles: list[list[Interaction]]) -> dict:
    """Each style feature's population mean and spread (JSON-serializable; a constant feature gets 1)."""
    style = _style_matrix(profiles)
    spread = style.std(axis=0) if len(style) else np.ones(len(STYLE_FEATURES))
    return {
        "features": list(STYLE_FEATURES),
        "mean": (style.mean(axis=0) if len(style) else np.zeros(len(STYLE_FEATURES))).tolist(),
        "std": np.where(spread > 0, spread, 1.0).tolist(),
    }


def persona_vectors(
    profile_vectors: np.ndarray, profiles: list[list[Interaction] | None], standardization: dict, style_scale: float
) -> np.ndarray:
    """x_u for each row: (n, d + k) float32 unit rows.

    A ``None`` profile (a query that is not a user, such as a cold start's item text) has the
    population's mean style, z = 0.
    """
    k = len(standardization["mean"])
    z = np.zeros((len(profile_vectors), k))
    rows = [r for r, profile in enumerate(profiles) if profile is not None]
    if rows:
        style = _style_matrix([profiles[r] for r in rows])
        z[rows] = (style - np.asarray(standardization["mean"])) / np.asarray(standardization["std"])
    x = np.hstack([np.asarray(profile_vectors, dtype=np.float64), style_scale * z / np.sqrt(k)])
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def population_standardization(store: Store) -> dict:
    """The style standardization of every user with a profile vector (what a first build stores)."""
    profiles = store.profiles()
    return style_standardization([profiles.get(u, []) for u in store.profile_vectors()[0]])


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
    user_ids, profile_vectors = store.profile_vectors()
    profiles = store.profiles()
    profile_of = [profiles.get(u, []) for u in user_ids]
    return user_ids, persona_vectors(profile_vectors, profile_of, standardization, config.style_scale)
