"""A request's place in the persona graph: the stored persona, or one derived from the request's profile.

The stored persona of a user (facet states, edges, profile vector) rests on their whole persona
profile. A request whose profile lacks some of those reviews (a profile cut to its N most recent
reviews in a sparse-history evaluation) must not see what the missing reviews shaped, so its
persona is derived again from the profile it holds: facet states with the store's frozen summarizer
and calibration, their embeddings, the whole-persona vector (profile embedding and style, with the
stored standardization), and each layer's top-K searched among everyone else's stored vectors with
the build's gate, threshold, K and search (each layer's :class:`LayerIndex` is built once, so a
derived row is the row a build on that profile would give). The store is only read.

A request with no edges (an empty profile, a cold start; or too little evidence for any facet)
finds peers from what the request itself holds, with ``peers.without_edges = "item"``: the target
item's metadata, plus the review's title and rating where the task gives them, embedded and
searched against every layer (in the whole-persona layer with the population's mean style). The
item is not a persona, so it carries no reliability gate (omega = 1 on its side); the peers' own
gates apply.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from copersona.backends.embed import Embedder
from copersona.build import Backends, Build
from copersona.config import GraphConfig, HarnessConfig
from copersona.data.records import Example, Interaction
from copersona.facets.profile import profile_text, style_features
from copersona.graph.knn import LayerIndex
from copersona.graph.multiplex import graph_layer, layer_gates, layer_index, layer_keys, reliability_gates
from copersona.graph.persona_layer import persona_vectors
from copersona.graph.records import PERSONA_LAYER, STYLE_META, Neighbour, rank_neighbours
from copersona.store import Store

STORED = "stored persona"
DERIVED = "derived from the request's {n} profile reviews"
COLD_START = "no profile reviews"
ITEM_PEERS = "peers found from the target item ({why})"
NO_PEERS = "no edges, and peers.without_edges = 'none'"
# Characters of the item description that go into a cold-start query (the embedder reads ~256 tokens).
QUERY_DESCRIPTION_CHARS = 600


@dataclass(frozen=True)
class RequestPersona:
    """What a request knows of its user in the graph, and where it came from."""

    neighbours: list[Neighbour]
    profile_vector: np.ndarray | None  # the whole-profile embedding (the item query's for a cold start)
    derived: bool  # False: the stored persona
    origin: str  # one line for notes and ``--explain``

    @property
    def notes(self) -> list[str]:
        return [] if self.origin == STORED else [self.origin]


def _review_ids(reviews: list[Interaction]) -> frozenset[tuple[str, int]]:
    return frozenset((r.item_id, r.timestamp) for r in reviews)


def item_query(example: Example) -> str:
    """What a request says about its target without the answer: the item's metadata, and the
    review's title and rating where the task gives them (the review task), never the review text."""
    target = example.request_target()
    parts = [target.item_title, target.item_category, target.item_description[:QUERY_DESCRIPTION_CHARS]]
    if target.review_title:
        parts.append(target.review_title)
    if target.rating is not None:
        parts.append(f"rated {target.rating:g}/5")
    return "\n".join(p for p in parts if p)


class Personas:
    """Resolves each request's persona (see the module docstring); derived ones are memoized."""

    def __init__(
        self,
        store: Store,
        config: HarnessConfig,
        embedder: Callable[[], Embedder],
        stored_neighbours: Callable[[str], list[Neighbour]],
        stored_profiles: Callable[[], dict[str, list[Interaction]]],
    ):
        self.store = store
        self.config = config
        self._embedder = embedder  # loaded only when a persona is derived or peers come from an item
        self._stored_neighbours = stored_neighbours  # the stored graph's, by user
        self._stored_profiles = stored_profiles  # the persona profiles the stored personas rest on
        self._memo: dict[tuple, RequestPersona] = {}
        self._build: Build | None = None
        self._layers: dict[str, _Layer] | None = None
        self._vectors: dict[str, np.ndarray] | None = None
        self._style_standardization: dict | None = None  # the whole-persona layer's, read with the layers

    # -- what is read from the store once ----------------------------------------------------
    @property
    def embedder(self) -> Embedder:
        return self._embedder()

    @property
    def build(self) -> Build:
        if self._build is None:
            build = Build.of(self.store)
            self._build = Build(
                self.store,
                build.config,
                Backends(embedder_factory=lambda: self.embedder, llm_factory=build.backends.llm_factory),
            )
        return self._build

    @property
    def graph_config(self) -> GraphConfig:
        return self.build.config.graph

    def _stored_vectors(self) -> dict[str, np.ndarray]:
        if self._vectors is None:
            user_ids, vectors = self.store.profile_vectors()
            self._vectors = dict(zip(user_ids, vectors))
        return self._vectors

    def _graph_layers(self) -> dict[str, _Layer]:
        """Per layer (each facet's, the whole-persona one if built): its users and their vectors and
        gates omega(r_v), searchable as the build searched them."""
        if self._layers is None:
            graph = self.graph_config
            self._layers = {}
            for key in layer_keys(self.store, graph, [facet.key for facet in self.store.schema().facets]):
                users, vectors, labels = graph_layer(self.store, graph, key)
                index = layer_index(vectors, layer_gates(labels, len(users), graph), graph) if users else None
                self._layers[key] = _Layer(users, {user: row for row, user in enumerate(users)}, index)
            self._style_standardization = self.store.get_meta(STYLE_META)
        return self._layers

    def _rank(self, weights: dict[str, dict[str, float]]) -> list[Neighbour]:
        facets = sum(key != PERSONA_LAYER for key in self._graph_layers())
        return rank_neighbours(weights, facets, self.graph_config.persona_weight)

    def _persona_vector(self, profile_vector: np.ndarray, profile: list[Interaction] | None) -> np.ndarray:
        """x_u of the whole-persona layer for a request's profile (None: an item query, mean style);
        called once the layers are read."""
        features = None if profile is None else style_features(profile)[None, :]
        scale = self.graph_config.style_scale
        return persona_vectors(profile_vector[None, :], features, self._style_standardization, scale)[0]

    # -- resolution --------------------------------------------------------------------------
    def of(self, example: Example) -> RequestPersona:
        """The stored persona when the request's profile holds every review it rests on, else a
        derived one; either way, peers from the target item when it has no edges (if allowed)."""
        stored = self._stored_profiles().get(example.user_id)
        if stored is not None and _review_ids(stored) <= _review_ids(example.profile):
            neighbours = self._stored_neighbours(example.user_id)
            persona = RequestPersona(neighbours, self._stored_vectors().get(example.user_id), False, STORED)
        else:
            key = (example.user_id, _review_ids(example.profile))
            if key not in self._memo:
                self._memo[key] = self._derive(example.user_id, example.profile)
            persona = self._memo[key]
        if persona.neighbours or self.config.peers.without_edges == "none":
            return persona
        why = {STORED: "the stored persona has no edges", COLD_START: COLD_START}.get(
            persona.origin, f"{persona.origin}: no edges"
        )
        key = ("item", example.target.item_id, item_query(example))
        if key not in self._memo:
            self._memo[key] = self._item_peers(example)
        found = self._memo[key]
        vector = persona.profile_vector if persona.profile_vector is not None else found.profile_vector
        return RequestPersona(found.neighbours, vector, persona.derived, ITEM_PEERS.format(why=why))

    def _derive(self, user_id: str, profile: list[Interaction]) -> RequestPersona:
        if not profile:
            return RequestPersona([], None, True, COLD_START)
        build = self.build
        states = build.frozen_summarizer().summarize({user_id: profile})
        placeholder = build.config.summary.placeholder
        texts = [s.facet_text(placeholder) for s in states]
        facets = build.config.facets
        vectors = self.embedder.encode(
            [*texts, profile_text(profile, facets.profile_reviews, facets.profile_max_chars)]
        )
        weights: dict[str, dict[str, float]] = {}
        for state, text, vector in zip(states, texts, vectors):
            if text == placeholder and not self.graph_config.placeholder_edges:
                continue  # as in the build: a placeholder is no evidence to link on
            gate = float(reliability_gates([state.reliability], self.graph_config)[0])
            self._search(user_id, state.facet_key, vector, gate, weights)
        if PERSONA_LAYER in self._graph_layers():
            self._search(user_id, PERSONA_LAYER, self._persona_vector(vectors[-1], profile), 1.0, weights)
        return RequestPersona(self._rank(weights), vectors[-1], True, DERIVED.format(n=len(profile)))

    def _item_peers(self, example: Example) -> RequestPersona:
        vector = self.embedder.encode([item_query(example)])[0]
        weights: dict[str, dict[str, float]] = {}
        for key in self._graph_layers():
            query = self._persona_vector(vector, None) if key == PERSONA_LAYER else vector
            self._search(example.user_id, key, query, 1.0, weights)
        return RequestPersona(self._rank(weights), vector, True, "")

    def _search(
        self, user_id: str, facet_key: str, query: np.ndarray, gate: float, weights: dict[str, dict[str, float]]
    ) -> None:
        """Add the query's top-K in one layer (never the user's own stored row) to ``weights``."""
        layer = self._graph_layers()[facet_key]
        if not layer.users:
            return
        graph = self.graph_config
        found = layer.index.search(
            query[None, :],
            graph.top_k,
            graph.min_similarity,
            np.array([gate], dtype=np.float32),
            exclude=np.array([layer.rows.get(user_id, -1)]),
        )
        for index, weight in zip(found.indices[0].tolist(), found.weight[0].tolist()):
            if index >= 0:
                weights.setdefault(layer.users[index], {})[facet_key] = weight


@dataclass(frozen=True)
class _Layer:
    users: list[str]
    rows: dict[str, int]  # user id -> row of ``index``
    index: LayerIndex | None  # None for a layer without users
