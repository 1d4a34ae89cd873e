"""CoPersona's non-parametric branch (Sec. 3.3-3.4): BM25 self-history plus the facet peer context.

C_u(x') = LINEARIZE(H_u(x'), {E_u^(m)}): the retrieved history goes in as few-shot turns (shared
layout); the peers' facet packages are grouped by facet, each with the gated similarity as its
confidence, strongest first. Peers are named by alias: their ids mean nothing to the model.

The review answer is then chosen (``methods.copersona_answer = "select"``, the default) between the
generated one and the user's own most relevant past review, both opened by the request's review
title, by the persona scorer of :mod:`copersona.methods.selection`; "generated" keeps the paper's
answer as generated.
"""

from __future__ import annotations

from copersona.data.records import Example, Interaction
from copersona.data.sanitize import sanitize
from copersona.methods.base import MethodInput
from copersona.methods.prompts import Context, PromptMethod, fenced
from copersona.methods.selection import GENERATED, RETRIEVED, PersonaScorer, opened
from copersona.retrieval import DroppedText, FacetPeers, TokenBudget


def linearize_peers(groups: list[FacetPeers], budget: TokenBudget) -> str:
    """The facet-grouped peer context, each package within the per-neighbour-facet budget."""
    aliases: dict[str, str] = {}
    lines = []
    for group in groups:
        header = f"{group.facet.name}: {group.facet.definition}"
        if not budget.charge(header):
            break
        facet_lines = []
        for exemplar in group.exemplars:
            alias = aliases.setdefault(exemplar.peer_id, f"Peer {chr(ord('A') + len(aliases))}")
            prefix = f"- {alias} (confidence {exemplar.weight:.2f}): "
            if not budget.charge(prefix):
                break
            package = budget.fit(sanitize(exemplar.package()), budget.limit("per_peer_facet"), "peer facet")
            if package:
                facet_lines.append(prefix + package)
        if facet_lines:
            lines.append(header)
            lines.extend(facet_lines)
    return "\n".join(lines)


class CoPersonaNP(PromptMethod):
    name = "copersona-np"
    description = (
        "CoPersona without the parametric branch: BM25 history + facet-aligned peer exemplars; the answer is "
        "selected against the user's most relevant past review by a persona scorer."
    )
    role = "ours"

    def peer_context(self, example: Example) -> tuple[list[FacetPeers], list[DroppedText], list[str]]:
        """The facet groups of the request's peers (stored, derived or from the target item), what the
        evidence cutoff kept out, and how the peers were found."""
        limit = self.config.retrieval.neighbours
        if limit <= 0:
            return [], [], []
        persona = self.resources.persona(example)
        cutoff = self.resources.cutoff(example)
        groups, dropped = self.resources.peers.context(example.user_id, limit, cutoff, persona.neighbours)
        return groups, dropped, persona.notes

    def stored_texts(self, example: Example) -> list[str]:
        groups, _, _ = self.peer_context(example)
        return [f"{g.facet.name}: {g.facet.definition}" for g in groups] + [
            sanitize(e.package()) for g in groups for e in g.exemplars
        ]

    def context(self, example: Example, budget: TokenBudget) -> Context:
        limit = self.config.retrieval.neighbours
        groups, dropped, found = self.peer_context(example)
        text = linearize_peers(groups, budget)
        if not text:
            if limit <= 0:
                note = "peer context disabled (neighbours = 0)"
            elif self.config.peers.quotes == "none" and self.resources.persona(example).neighbours:
                note = "no peers: their facet texts are their own words, withheld (peers.quotes = 'none')"
            elif groups:  # the user has peers, but the window left them no room
                note = "no peers: no room left in the window for peer context"
            elif dropped:
                note = "no peers: every peer text was written on or after the target or is about the target item"
            else:
                note = "no peers: the user has no edges"
            return Context(parts={"peers": ""}, notes=[*found, note], dropped=dropped)
        title = (
            "How customers who resemble this one write about each facet (confidence: how close the "
            "resemblance is, 0-1):"
        )
        return Context(fenced(title, text, budget), {"peers": text}, found, dropped)

    def selects(self, example: Example) -> bool:
        """Whether the answer to ``example`` is selected: review targets (not free requests, not ratings)."""
        return self.config.methods.copersona_answer == "select" and example.task == "review" and not example.instruction

    def _most_relevant(self, example: Example) -> Interaction | None:
        """The user's past review the self-history retriever ranks first (the prompt's last few-shot turn)."""
        best = self.resources.retriever.retrieve(example.profile, example.query(), 1)
        return best[0] if best else None

    def inputs(self, example: Example) -> MethodInput:
        inp = super().inputs(example)
        if self.selects(example):
            review = self._most_relevant(example)
            if review is not None:
                inp.parts["retrieved answer"] = opened(example.target.review_title, review.text)
        return inp

    def answer(
        self, example: Example, inp: MethodInput, generated: str, max_tokens: int | None = None
    ) -> tuple[str, list[str]]:
        """The retrieved candidate, or the generated one where the persona scorer puts it closer to the
        user's other past reviews (the one the retrieved candidate copies is not among them) by more
        than the margin.

        Under a request's answer cap a candidate longer than the cap is not offered; the generated
        answer without its opening always fits (it was generated under the cap)."""
        title = example.target.review_title
        review = self._most_relevant(example)
        candidates = {RETRIEVED: opened(title, review.text)} if review is not None else {}
        candidates[GENERATED] = opened(title, generated)
        if max_tokens is not None:
            candidates = {n: t for n, t in candidates.items() if self.resources.count_tokens(t) <= max_tokens}
            candidates.setdefault(GENERATED, generated)
        if RETRIEVED not in candidates:
            why = "no past review to retrieve" if review is None else "the retrieved one exceeds the answer cap"
            return candidates[GENERATED], [f"answer: the generated candidate ({why})"]
        persona = [other.text for other in example.profile if other != review]
        selection = PersonaScorer().choose(candidates, persona, self.config.methods.copersona_select_margin)
        if selection is None:
            return candidates[GENERATED], ["answer: the generated candidate (no other past review to score against)"]
        return selection.text, [selection.note]
