"""What a store holds, as plain data: the overview of ``copersona inspect`` and one user's persona."""

from __future__ import annotations

from collections import Counter, defaultdict

from copersona.facets.records import RELIABILITY_LEVELS
from copersona.graph.records import PERSONA_LAYER
from copersona.retrieval.peers import own_words
from copersona.store import Store, StoreError


def overview(store: Store) -> dict:
    """Counts, schema, reliability per facet, edges per facet, facet bias (Table 4) and the run log."""
    schema = store.schema()
    if schema is None:
        raise StoreError(f"{store.path}: no facet schema yet; run `copersona build` first")
    states = store.facet_states()
    labels: dict[str, Counter] = defaultdict(Counter)
    per_user: dict[str, list[str]] = defaultdict(list)
    for s in states:
        labels[s.facet_key][s.reliability] += 1
        per_user[s.user_id].append(s.reliability)
    # Table 4: a user is facet-biased when at least one facet is supported no better than moderate.
    biased = sum(any(r != "strong" for r in rs) for rs in per_user.values())
    edges: dict[str, dict] = {}
    for facet in schema.facets:
        layer = store.edges(facet_key=facet.key)
        edges[facet.key] = {
            "edges": len(layer),
            "users_with_edges": len({e.source for e in layer}),
            "mean_weight": round(sum(e.weight for e in layer) / len(layer), 4) if layer else 0.0,
            "mean_similarity": round(sum(e.similarity for e in layer) / len(layer), 4) if layer else 0.0,
        }
    users = len(per_user)
    return {
        "store": str(store.path),
        "users": len(store.user_ids()),
        "users_with_facets": users,
        "examples": store.example_counts(),
        "embedder": store.get_meta("pinned_config", {}).get("embedder"),
        "summarizer": store.get_meta("summarizer"),
        "schema": {
            "source": schema.source,
            "note": schema.note,
            "facets": [{"key": f.key, **f.model_dump()} for f in schema.facets],
        },
        "reliability": {k: {level: labels[k][level] for level in RELIABILITY_LEVELS} for k in labels},
        "edges": edges,
        "facet_biased": {"users": biased, "fraction": round(biased / users, 4) if users else 0.0},
        "quotes": {"kept": sum(len(s.quotes) for s in states), "dropped": sum(s.dropped_quotes for s in states)},
        "fallbacks": dict(Counter(s.fallback.split(":")[0] for s in states if s.fallback)),
        "llm_cache": store.cache_stats(),
        "load": store.load_reports(),
        "runs": [
            {"stage": r.stage, "status": r.status, "seconds": r.seconds, "engine": r.details.get("engine")}
            for r in store.runs()
        ],
    }


def user_persona(store: Store, user_id: str, neighbours: int = 3, words: str = "verbatim") -> dict:
    """One user's facets (summary, quotes, label), neighbours per facet and in the whole-persona
    layer, and top combined peers.

    ``words="none"`` leaves out the user's own words: quotes, and summaries that are their sentences.
    Read from one snapshot: a concurrent update of the user is seen whole or not at all.
    """
    with store.snapshot():
        return _user_persona(store, user_id, neighbours, words)


def _user_persona(store: Store, user_id: str, neighbours: int, words: str) -> dict:
    states = {s.facet_key: s for s in store.facet_states(user_id=user_id)}
    if not states:
        raise StoreError(f"{store.path}: no user {user_id!r} with facet states")
    schema = store.schema()
    by_facet = defaultdict(list)
    for edge in store.edges(source=user_id):
        by_facet[edge.facet_key].append(
            {"user_id": edge.target, "weight": round(edge.weight, 4), "similarity": round(edge.similarity, 4)}
        )
    history, ranks = store.history(user_id)
    return {
        "user_id": user_id,
        "profile_reviews": sum(r is None for r in ranks),
        "heldout_reviews": sum(r is not None for r in ranks),
        "facets": [
            {
                "facet": f.name,
                "key": f.key,
                "reliability": states[f.key].reliability,
                "summary": "" if words == "none" and own_words(states[f.key]) else states[f.key].summary,
                "quotes": [] if words == "none" else states[f.key].quotes,
                "fallback": states[f.key].fallback,
                "neighbours": by_facet.get(f.key, []),
            }
            for f in schema.facets
            if f.key in states
        ],
        # The whole-persona layer (profile embedding and writing style), where the graph has one.
        "persona_layer_neighbours": by_facet.get(PERSONA_LAYER, []),
        "combined_neighbours": [n.model_dump() for n in store.neighbours(user_id, limit=neighbours)],
        # Persona-DB's levels, once a persona-db run has refined them (one per profile refined).
        "persona_db": [
            {
                "profile": persona.profile,
                "units": [
                    {"level": u.level, "text": u.text, "reviews": len(u.sources), "made_by": u.made_by}
                    for u in persona.units
                    if words != "none" or not u.made_by.startswith("extractive")
                ],
            }
            for persona in store.personas_of(user_id)
        ],
    }
