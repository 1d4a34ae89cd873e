"""Persona-DB (`004`; Sun et al.): a hierarchical persona database, joined with collaborators'.

Offline (``prepare``, cached in the store): every user's persona profile is refined into levels
(:mod:`copersona.personadb`): distilled facts per review, traits induced across reviews, and a
cache of persona keys with the rating tendency. Users are JOINed on shared persona keys.

Per request, ``retrieval.history_k`` persona units are retrieved across the levels, most abstract
first, so that a small context carries the most: the user's cache, their induced traits and
distilled facts (each level ranked by cosine to the query), then their collaborators' traits and
facts about the most similar items (filling the gaps of a sparse user). The History level is the
shared layout's few-shot turns (the same ``history_k`` retrieved reviews as RAG), so Persona-DB
differs from RAG by its persona units alone. A collaborator's unit is used only when every review
it rests on passes the request's evidence cutoff; with ``[harness.peers] quotes = "none"``
collaborators' extractive units (their own sentences) are never used.
"""

from __future__ import annotations

from functools import cached_property

import numpy as np

from copersona.data.records import Example, Interaction
from copersona.data.sanitize import sanitize
from copersona.methods.base import example_key
from copersona.methods.prompts import Context, PromptMethod, fenced
from copersona.personadb.database import PersonaDB
from copersona.personadb.records import PersonaUnit
from copersona.personadb.refine import ExtractiveRefiner, LLMRefiner
from copersona.retrieval import DroppedText, TokenBudget

COLLABORATOR_UNIT_DROPPED = "collaborator's persona unit left out"
LABELS = {
    ("own", "cache"): "Persona",
    ("own", "induced"): "Trait",
    ("own", "distilled"): "Fact",
    ("collaborator", "induced"): "Similar customer's trait",
    ("collaborator", "distilled"): "Similar customer's fact",
}


class PersonaDBMethod(PromptMethod):
    name = "persona-db"
    description = (
        "Persona-DB: the user's refined persona (cache, induced traits, distilled facts) and collaborators' "
        "joined on persona keys, retrieved most abstract first."
    )

    @cached_property
    def database(self) -> PersonaDB:
        config = self.config.methods
        embedder = self.resources.embedder
        extractive = ExtractiveRefiner(embedder, config.persona_db_keys).fit(self.resources.profiles)
        refiner = (
            LLMRefiner(embedder, config.persona_db_keys, self.resources.llm, extractive)
            if config.persona_db_refiner == "llm"
            else extractive
        )
        return PersonaDB(self.resources.store, refiner)

    def __init__(self, resources):
        super().__init__(resources)
        self._query_vectors: dict[str, np.ndarray] = {}  # by example key, embedded in prepare

    def own_reviews(self, example: Example) -> list[Interaction]:
        """The reviews the user's own persona is refined from: their persona profile (the reviews
        before the held-out block, shared by all their examples) when the example shows all of it;
        else the example's own profile (capped for a sparse-user experiment, or a served request's)."""
        persona_profile = self.resources.profiles.get(example.user_id, [])
        shown = {(i.item_id, i.timestamp) for i in example.profile}
        if persona_profile and all((i.item_id, i.timestamp) in shown for i in persona_profile):
            return persona_profile
        return example.profile

    def prepare(self, examples: list[Example]) -> None:
        """Refine everyone's persona (collaborators come from the whole population) and the examples'
        own (capped) profiles, and embed the queries, before any request (then count the texts)."""
        if self.config.methods.persona_db_neighbor_topk > 0:
            _ = self.database.population
        self.database.ensure({e.user_id: self.own_reviews(e) for e in examples})
        self._embed_queries(examples)
        super().prepare(examples)

    def _embed_queries(self, examples: list[Example]) -> None:
        todo = [e for e in examples if example_key(e) not in self._query_vectors]
        if todo:
            vectors = self.resources.embedder.encode([_query_text(e) for e in todo])
            self._query_vectors.update({example_key(e): v for e, v in zip(todo, vectors)})

    def retrieve(self, example: Example) -> tuple[list[tuple[str, str]], list[DroppedText], list[str]]:
        """Up to ``retrieval.history_k`` (label, text) units, most abstract first; what the cutoff left
        out of collaborators' units; notes."""
        k = self.config.retrieval.history_k
        if k <= 0:
            return [], [], ["retrieval size 0: no persona units"]
        self._embed_queries([example])
        query = self._query_vectors[example_key(example)]
        notes: list[str] = []
        units: list[tuple[str, str]] = []
        dropped: list[DroppedText] = []
        own = self.database.persona(example.user_id, self.own_reviews(example))
        if own is None:
            notes.append("no persona: the user has no profile reviews to refine")
        else:
            persona, vectors = own
            units += _ranked("own", persona.units, vectors, query, "cache")
            units += _ranked("own", persona.units, vectors, query, "induced")
            units += _ranked("own", persona.units, vectors, query, "distilled")
            if len(units) < k:
                collaborated, dropped = self._collaborators(example, persona, vectors, query)
                units += collaborated
        return units[:k], dropped, notes

    def _collaborators(
        self, example: Example, persona, vectors: np.ndarray, query: np.ndarray
    ) -> tuple[list[tuple[str, str]], list[DroppedText]]:
        methods = self.config.methods
        cutoff = self.resources.cutoff(example)
        own_words_allowed = self.config.peers.quotes != "none"
        traits: list[tuple[float, str]] = []
        facts: list[tuple[float, str]] = []
        dropped: list[DroppedText] = []
        for peer in self.database.collaborators(example.user_id, persona, vectors, methods.persona_db_neighbor_topk):
            theirs, their_vectors = self.database.population[peer]
            allowed: list[tuple[float, PersonaUnit]] = []
            for unit, vector in zip(theirs.units, their_vectors):
                if unit.level == "cache" or (not own_words_allowed and unit.made_by.startswith("extractive")):
                    continue
                reason = cutoff.reason_for_all(unit.sources)
                if reason is not None:
                    dropped.append(DroppedText(unit.text, peer, reason, COLLABORATOR_UNIT_DROPPED))
                    continue
                allowed.append((float(vector @ query), unit))
            allowed.sort(key=lambda pair: -pair[0])
            traits += [(score, u.text) for score, u in allowed if u.level == "induced"]
            facts += [(score, u.text) for score, u in allowed if u.level == "distilled"][
                : methods.persona_db_item_topk_collab
            ]
        ranked = [(LABELS[("collaborator", "induced")], t) for _, t in sorted(traits, key=lambda p: -p[0])]
        ranked += [(LABELS[("collaborator", "distilled")], t) for _, t in sorted(facts, key=lambda p: -p[0])]
        return ranked, dropped

    def stored_texts(self, example: Example) -> list[str]:
        return [sanitize(text) for _, text in self.retrieve(example)[0]]

    def context(self, example: Example, budget: TokenBudget) -> Context:
        units, dropped, notes = self.retrieve(example)
        lines = []
        for label, text in units:
            prefix = f"- {label}: "
            if not budget.charge(prefix):
                break
            fitted = budget.fit(sanitize(text), budget.limit("per_review"), "persona unit")
            if fitted:
                lines.append(prefix + fitted)
        body = "\n".join(lines)
        if not body:
            return Context(parts={"persona database": ""}, notes=notes or ["no persona units fit"], dropped=dropped)
        title = "This customer's persona database (most abstract first; similar customers' entries fill gaps):"
        return Context(fenced(title, body, budget), {"persona database": body}, notes, dropped)


def _query_text(example: Example) -> str:
    target = example.query()
    return " ".join(p for p in (target.item_title, target.item_description[:500]) if p)


def _ranked(
    side: str, units: list[PersonaUnit], vectors: np.ndarray, query: np.ndarray, level: str
) -> list[tuple[str, str]]:
    """One level's units, most similar to the query first."""
    rows = [i for i, u in enumerate(units) if u.level == level]
    rows.sort(key=lambda i: -float(vectors[i] @ query))
    return [(LABELS[(side, level)], units[i].text) for i in rows]
