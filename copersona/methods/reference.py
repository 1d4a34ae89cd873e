"""Reference points that use no LLM, reported beside every table (so a weak generator is not
mistaken for a method's effect):

* ``copy-self``: the user's own past review most similar to the query, by BM25;
* ``copy-peer``: the review most similar to the query (BM25) among the persona profile of the
  user's nearest peer by combined similarity; users without edges fall back to their nearest user
  by whole-profile embedding, and the fallback is recorded. Only the peer's reviews that the
  request's evidence cutoff allows are candidates (written before the target's day, not of the
  target item); a peer with none is passed over for the next, and every review left out is listed.
"""

from __future__ import annotations

from functools import cached_property

import numpy as np

from copersona.data.records import Example, Interaction
from copersona.methods.base import Method, MethodInput, example_key
from copersona.retrieval import DroppedText

CANDIDATE_DROPPED = "candidate review left out"


class CopySelf(Method):
    name = "copy-self"
    description = "No LLM: the user's own most similar past review (BM25), copied."
    uses_generator = False
    role = "reference"

    def copy_from(
        self,
        profile: list[Interaction],
        example: Example,
        source: str,
        notes: list[str],
        dropped: list[DroppedText] | None = None,
    ) -> MethodInput:
        best = self.resources.bm25.retrieve(profile, example.target, 1)
        if not best:
            notes.append(f"{source} has no reviews: empty prediction")
        return MethodInput(
            method=self.name,
            example=example_key(example),
            messages=[],
            max_tokens=0,
            prediction=best[0].text if best else "",
            parts={"copied from": f"{source}, item {best[0].item_id}" if best else source},
            notes=notes,
            dropped=dropped or [],
        )

    def inputs(self, example: Example) -> MethodInput:
        return self.copy_from(example.profile, example, "the user's own history", [])


class CopyPeer(CopySelf):
    name = "copy-peer"
    description = "No LLM: the most similar review (BM25) of the user's nearest peer, copied."

    @cached_property
    def _global_order(self) -> dict[str, list[str]]:
        """Every user's other users by whole-profile embedding, nearest first (the fallback peers)."""
        user_ids, vectors = self.resources.store.profile_vectors()
        if len(user_ids) < 2:
            return {}
        similarity = vectors @ vectors.T
        np.fill_diagonal(similarity, -np.inf)
        order = np.argsort(-similarity, axis=1, kind="stable")[:, :-1]  # the user itself sorts last
        return {u: [user_ids[j] for j in row] for u, row in zip(user_ids, order)}

    def inputs(self, example: Example) -> MethodInput:
        """Copy from the nearest graph peer that has a review the request may see, else the nearest
        such user by profile embedding."""
        cutoff = self.resources.cutoff(example)
        graph = [n.user_id for n in self.resources.peers.neighbours(example.user_id, None)]
        notes = [] if graph else ["no graph peers: nearest user by profile embedding"]
        dropped: list[DroppedText] = []
        for position, peer in enumerate(graph + self._global_order.get(example.user_id, [])):
            reviews = self.resources.profiles.get(peer, [])
            visible = cutoff.visible(reviews)
            dropped.extend(
                DroppedText(r.text, peer, reason, CANDIDATE_DROPPED)
                for r in reviews
                if (reason := cutoff.reason(r)) is not None
            )
            if visible:
                if graph and position >= len(graph):
                    notes.append("no graph peer has a review before the target: nearest user by profile embedding")
                return self.copy_from(visible, example, f"peer {peer}", notes, dropped)
        return self.copy_from([], example, "no peer", notes, dropped)
