"""An intrinsic check of a persona graph that needs no generation.

The question: are a user's graph neighbours better exemplars of what the user writes next than
random users are? For each user's held-out test review y_u and a peer set P,

    sim(u, P) = mean over v in P of mean over v's profile reviews r of s(y_u, r),

with s the embedding cosine or ROUGE-L F1. The lift of a graph is sim(u, neighbours) minus the
mean of s over a fixed random sample of other users (the expectation of sim(u, P) for a random P
of any size, shared by every graph so they are compared on the same baseline), per user; its mean
gets a bootstrap interval. It is reported per facet layer, for the combined similarity (App. C's peer
choice) and for a single global kNN graph over whole-profile embeddings: the unstructured
baseline the paper argues against. Held-out reviews are never part of any profile, so nothing
leaks.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from rouge_score import rouge_scorer, tokenizers

from copersona.backends.embed import Embedder
from copersona.eval.stats import Estimate, bootstrap_mean
from copersona.graph.multiplex import global_knn
from copersona.store.sqlite import Store, StoreError


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

    def to_dict(self) -> dict:
        return {
            "graph": self.graph,
            "users": self.users,
            "cosine": self.cosine.to_dict(),
            "cosine_random": self.cosine_random,
            "cosine_lift": self.cosine_lift.to_dict(),
            "rouge_l": self.rouge_l.to_dict(),
            "rouge_l_random": self.rouge_l_random,
            "rouge_l_lift": self.rouge_l_lift.to_dict(),
        }


class _MemoTokenizer:
    """rouge-score's stemming tokenizer, run once per distinct text (it dominates ROUGE-L's cost)."""

    def __init__(self):
        self._tokenizer = tokenizers.DefaultTokenizer(use_stemmer=True)
        self._tokens: dict[str, list[str]] = {}

    def tokenize(self, text: str) -> list[str]:
        if text not in self._tokens:
            self._tokens[text] = self._tokenizer.tokenize(text)
        return self._tokens[text]


class _Similarities:
    """s(y_u, reviews of v) for targets and profiles, computed once per (u, v) pair."""

    def __init__(self, targets: dict[str, str], reviews: dict[str, list[str]], embedder: Embedder):
        self.users = sorted(targets)
        self.targets = targets
        self.reviews = reviews
        self.target_vectors = dict(zip(self.users, embedder.encode([targets[u] for u in self.users])))
        owners = sorted(reviews)
        vectors = embedder.encode([text for v in owners for text in reviews[v]])
        ends = np.cumsum([len(reviews[v]) for v in owners])
        self.review_vectors = {v: vectors[end - len(reviews[v]) : end] for v, end in zip(owners, ends)}
        self.scorer = rouge_scorer.RougeScorer(["rougeL"], tokenizer=_MemoTokenizer())
        self._memo: dict[tuple[str, str], tuple[float, float]] = {}

    def pair(self, u: str, v: str) -> tuple[float, float]:
        key = (u, v)
        if key not in self._memo:
            cosine = float((self.review_vectors[v] @ self.target_vectors[u]).mean())
            rouge = float(np.mean([self.scorer.score(self.targets[u], r)["rougeL"].fmeasure for r in self.reviews[v]]))
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
    for facet in schema.facets:
        layer: dict[str, list[str]] = {}
        for edge in store.edges(facet_key=facet.key):
            if (
                edge.source in sims.targets
                and edge.target in reviews
                and len(layer.setdefault(edge.source, [])) < neighbours
            ):
                layer[edge.source].append(edge.target)
        peer_sets[f"facet:{facet.key}"] = layer
    peer_sets["combined"] = {
        u: [n.user_id for n in store.neighbours(u) if n.user_id in reviews][:neighbours] for u in users
    }
    profile_ids, profile_vectors = store.profile_vectors()
    global_edges = global_knn(
        profile_ids, profile_vectors, neighbours, store.get_meta("build_config")["graph"]["min_similarity"]
    )
    global_layer: dict[str, list[str]] = {}
    for edge in global_edges:
        if edge.target in reviews:
            global_layer.setdefault(edge.source, []).append(edge.target)
    peer_sets["global-knn (baseline)"] = global_layer

    candidates = sorted(reviews)
    rng = np.random.default_rng(seed)
    baseline = {}
    for u in users:
        others = [v for v in candidates if v != u]
        baseline[u] = sims.group(u, list(rng.choice(others, size=min(random_peers, len(others)), replace=False)))
    results = []
    for name, layer in peer_sets.items():
        rows = [(*sims.group(u, layer[u]), *baseline[u]) for u in users if layer.get(u)]
        if not rows:
            continue
        table = np.array(rows)
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
            )
        )
    return results
