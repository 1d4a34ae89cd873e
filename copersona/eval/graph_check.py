"""An intrinsic check of a persona graph that needs no generation.

The question: are a user's graph neighbours better exemplars of what the user writes next than
random users are? For each user's held-out test review y_u and a peer set P,

    sim(u, P) = mean over v in P of mean over v's profile reviews r of s(y_u, r),

with s the embedding cosine or ROUGE-L F1. The lift of a graph is sim(u, neighbours) minus the
mean of s over a fixed random sample of other users (the expectation of sim(u, P) for a random P
of any size, shared by every graph so they are compared on the same baseline), per user; its mean
gets a bootstrap interval. It is reported per facet layer, for the whole-persona layer, for the
combined similarity (App. C's peer choice with the whole-persona layer: the default), for the
paper's rule (facet layers only), and for a single global kNN graph over whole-profile embeddings:
the unstructured baseline the paper argues against. Each graph's lift is also paired with the global
kNN's on the same users (a user without peers has lift 0), with a bootstrap interval of the mean
difference. Held-out reviews are never part of any profile, so nothing leaks.

Facet separation asks whether the facet texts are disentangled: for facet m, the mean cosine of
its texts across users minus the mean cosine of a user's facet-m text with the same user's other
facet texts (placeholders left out). Positive: a facet's texts are more alike across users than
one user's texts are across facets.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from rouge_score import tokenizers

from copersona.backends.embed import Embedder
from copersona.eval.stats import Estimate, bootstrap_mean
from copersona.graph.multiplex import global_knn
from copersona.graph.records import PERSONA_LAYER, Neighbour, rank_neighbours
from copersona.store import Store, StoreError

GLOBAL = "global-knn (baseline)"
PERSONA = "whole-persona layer"
COMBINED = "combined (default)"


@dataclass
class GraphLift:
    graph: str
    users: int
    cosine: Estimate
    cosine_random: float
    cosine_lift: Estimate
    rouge_l: Estimate
    rouge_l_random: float
    rouge_l_lift: Estimate
    # Paired with the global kNN's lift on every checked user (no peers: lift 0); None for itself.
    cosine_vs_global: Estimate | None = None
    rouge_l_vs_global: Estimate | None = None

    def to_dict(self) -> dict:
        paired = {
            "cosine_lift_minus_global": self.cosine_vs_global.to_dict() if self.cosine_vs_global else None,
            "rouge_l_lift_minus_global": self.rouge_l_vs_global.to_dict() if self.rouge_l_vs_global else None,
        }
        return {
            "graph": self.graph,
            "users": self.users,
            "cosine": self.cosine.to_dict(),
            "cosine_random": self.cosine_random,
            "cosine_lift": self.cosine_lift.to_dict(),
            "rouge_l": self.rouge_l.to_dict(),
            "rouge_l_random": self.rouge_l_random,
            "rouge_l_lift": self.rouge_l_lift.to_dict(),
            **paired,
        }


@dataclass
class FacetSeparation:
    facet: str
    users: int
    across_users: float  # mean cosine of this facet's texts between different users
    within_user: float  # mean cosine of a user's text on this facet with their other facets' texts
    separation: float  # across_users - within_user

    def to_dict(self) -> dict:
        return dict(vars(self))


def facet_separation(store: Store) -> list[FacetSeparation]:
    """Per facet: is it one thing across users rather than one user's text again? (module docstring)."""
    schema = store.schema()
    layers = {f.key: store.facet_layer(f.key, placeholders=False) for f in schema.facets}
    rows = {key: {u: i for i, u in enumerate(users)} for key, (users, _, _) in layers.items()}
    out = []
    for key, (users, vectors, _) in layers.items():
        if len(users) < 2:
            continue
        n = len(users)
        total = vectors.sum(axis=0)
        across = (float(total @ total) - float((vectors * vectors).sum())) / (n * (n - 1))
        within = [
            float(vectors[i] @ other_vectors[rows[other][user]])
            for other, (_, other_vectors, _) in layers.items()
            if other != key
            for i, user in enumerate(users)
            if user in rows[other]
        ]
        mean_within = float(np.mean(within)) if within else float("nan")
        out.append(FacetSeparation(key, n, across, mean_within, across - mean_within))
    return out


class LCSIndex:
    """The longest common subsequence of one token sequence with many others, bit-parallel.

    Hyyro's algorithm (2004): with ``match[t]`` the bit mask of the positions of token ``t`` in the
    indexed sequence ``a`` (length m) and ``V`` starting as m one-bits, each token ``t`` of ``b``
    updates ``V <- (V + (V & match[t])) | (V & ~match[t])`` (kept to m bits); the LCS length is the
    number of zero bits left. Python integers are the bit vectors, so a pair costs ``len(b)``
    integer operations instead of the ``len(a) * len(b)`` cells of the dynamic-programming table
    rouge-score fills, with the same result.
    """

    def __init__(self, a: list[str]):
        self.length = len(a)
        self.mask = (1 << self.length) - 1
        self.match: dict[str, int] = {}
        for position, token in enumerate(a):
            self.match[token] = self.match.get(token, 0) | (1 << position)

    def lcs(self, b: list[str]) -> int:
        v, mask, match = self.mask, self.mask, self.match
        for token in b:
            bits = match.get(token)
            if bits:
                u = v & bits
                v = ((v + u) | (v - u)) & mask
        return self.length - v.bit_count()


def rouge_l_f1(target: LCSIndex, prediction: list[str]) -> float:
    """rouge-score's ROUGE-L F1 of a tokenized prediction against an indexed tokenized target."""
    if not target.length or not prediction:
        return 0.0
    common = target.lcs(prediction)
    if not common:
        return 0.0
    precision, recall = common / len(prediction), common / target.length
    return 2 * precision * recall / (precision + recall)


class _Similarities:
    """s(y_u, reviews of v) for targets and profiles, computed once per (u, v) pair.

    Every text is embedded and tokenized (rouge-score's stemming tokenizer) once; cosines come
    from one matrix product, ROUGE-L from the bit-parallel LCS of each target with each review.
    """

    def __init__(self, targets: dict[str, str], reviews: dict[str, list[str]], embedder: Embedder):
        self.users = sorted(targets)
        self.row = {u: k for k, u in enumerate(self.users)}
        owners = sorted(reviews)
        texts = [text for v in owners for text in reviews[v]]
        ends = np.cumsum([len(reviews[v]) for v in owners])
        self.span = {v: (end - len(reviews[v]), end) for v, end in zip(owners, ends)}
        target_vectors = embedder.encode([targets[u] for u in self.users])
        self.cosines = target_vectors @ embedder.encode(texts).T  # targets x reviews
        tokenizer = tokenizers.DefaultTokenizer(use_stemmer=True)
        tokens: dict[str, list[str]] = {}
        for text in [*targets.values(), *texts]:
            if text not in tokens:
                tokens[text] = tokenizer.tokenize(text)
        self.review_tokens = [tokens[text] for text in texts]
        self.target_index = {u: LCSIndex(tokens[targets[u]]) for u in self.users}
        self._memo: dict[tuple[str, str], tuple[float, float]] = {}

    def pair(self, u: str, v: str) -> tuple[float, float]:
        key = (u, v)
        if key not in self._memo:
            first, end = self.span[v]
            cosine = float(self.cosines[self.row[u], first:end].mean())
            index = self.target_index[u]
            rouge = float(np.mean([rouge_l_f1(index, self.review_tokens[k]) for k in range(first, end)]))
            self._memo[key] = (cosine, rouge)
        return self._memo[key]

    def group(self, u: str, peers: list[str]) -> tuple[float, float]:
        pairs = np.array([self.pair(u, v) for v in peers])
        return float(pairs[:, 0].mean()), float(pairs[:, 1].mean())


def check_graph(
    store: Store,
    embedder: Embedder,
    *,
    neighbours: int = 3,
    random_peers: int = 15,
    seed: int = 0,
    max_users: int | None = None,
    split: str = "validation",
) -> list[GraphLift]:
    """Lift over random peers for each facet layer, the combined graph and a global kNN graph,
    scored against the held-out reviews of ``split`` (validation: design choices are made on it)."""
    schema = store.schema()
    if schema is None or store.count("edges") == 0:
        raise StoreError(f"{store.path}: no graph yet; run `copersona build` first")
    targets = {e.user_id: e.target.text for e in store.examples(split) if e.target.text}
    profiles = store.profiles()
    reviews = {u: [i.text for i in items if i.text] for u, items in profiles.items()}
    reviews = {u: texts for u, texts in reviews.items() if texts}
    users = sorted(u for u in targets if u in reviews)
    if max_users is not None:
        users = users[:max_users]
    if len(users) < 3:
        raise StoreError(f"{store.path}: too few users with a {split} target to check the graph ({len(users)})")
    sims = _Similarities({u: targets[u] for u in users}, reviews, embedder)

    peer_sets: dict[str, dict[str, list[str]]] = {}
    layer_names = {facet.key: f"facet:{facet.key}" for facet in schema.facets} | {PERSONA_LAYER: PERSONA}
    for key, name in layer_names.items():
        layer: dict[str, list[str]] = {}
        for edge in store.edges(facet_key=key):  # by source, strongest first
            if (
                edge.source in sims.row
                and edge.target in reviews
                and len(layer.setdefault(edge.source, [])) < neighbours
            ):
                layer[edge.source].append(edge.target)
        layer = {u: peers for u, peers in layer.items() if peers}
        if layer:
            peer_sets[name] = layer

    # The default ranking, and the paper's rule from the same edges with the whole-persona layer left out.
    def first(ranked: list[Neighbour]) -> list[str]:
        return [n.user_id for n in ranked if n.user_id in reviews][:neighbours]

    ranked = {u: store.neighbours(u) for u in users}
    if PERSONA in peer_sets:
        facet_only = {}
        for u, peers in ranked.items():
            facet_weights = {n.user_id: {k: w for k, w in n.facets.items() if k != PERSONA_LAYER} for n in peers}
            facet_only[u] = first(rank_neighbours({v: w for v, w in facet_weights.items() if w}, len(schema.facets)))
        peer_sets["facet layers only (paper's rule)"] = facet_only
    peer_sets[COMBINED] = {u: first(peers) for u, peers in ranked.items()}
    profile_ids, profile_vectors = store.profile_vectors()
    global_edges = global_knn(
        profile_ids, profile_vectors, neighbours, store.get_meta("build_config")["graph"]["min_similarity"]
    )
    global_layer: dict[str, list[str]] = {}
    for edge in global_edges:
        if edge.target in reviews:
            global_layer.setdefault(edge.source, []).append(edge.target)
    peer_sets[GLOBAL] = global_layer

    candidates = sorted(reviews)
    rng = np.random.default_rng(seed)
    baseline = {}
    for u in users:
        others = [v for v in candidates if v != u]
        baseline[u] = sims.group(u, list(rng.choice(others, size=min(random_peers, len(others)), replace=False)))
    lifts = {}
    for name, layer in peer_sets.items():
        lifts[name] = np.array(
            [np.subtract(sims.group(u, layer[u]), baseline[u]) if layer.get(u) else (0.0, 0.0) for u in users]
        )
    global_lift = lifts[GLOBAL]
    results = []
    for name, layer in peer_sets.items():
        rows = [(*sims.group(u, layer[u]), *baseline[u]) for u in users if layer.get(u)]
        if not rows:
            continue
        table = np.array(rows)
        paired = lifts[name] - global_lift
        results.append(
            GraphLift(
                graph=name,
                users=len(rows),
                cosine=bootstrap_mean(table[:, 0], seed=seed),
                cosine_random=float(table[:, 2].mean()),
                cosine_lift=bootstrap_mean(table[:, 0] - table[:, 2], seed=seed),
                rouge_l=bootstrap_mean(table[:, 1], seed=seed),
                rouge_l_random=float(table[:, 3].mean()),
                rouge_l_lift=bootstrap_mean(table[:, 1] - table[:, 3], seed=seed),
                cosine_vs_global=None if name == GLOBAL else bootstrap_mean(paired[:, 0], seed=seed),
                rouge_l_vs_global=None if name == GLOBAL else bootstrap_mean(paired[:, 1], seed=seed),
            )
        )
    return results
