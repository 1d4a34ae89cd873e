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

from collections.abc import Iterator
from functools import cached_property
from itertools import chain

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
        best = self.resources.bm25.retrieve(profile, example.query(), 1)
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
    shows_peer_words = True

    @cached_property
    def _profile_space(self) -> tuple[list[str], np.ndarray]:
        """User ids and their whole-profile embeddings (for the fallback peers)."""
        return self.resources.store.profile_vectors()

    def _nearest_by_profile(self, user_id: str, vector: np.ndarray | None) -> Iterator[str]:
        """The other users by whole-profile embedding (``vector``, the request's), nearest first;
        ranked only when a request needs them."""
        user_ids, vectors = self._profile_space
        if vector is None:
            return
        for j in np.argsort(-(vectors @ vector), kind="stable"):
            if user_ids[j] != user_id:
                yield user_ids[j]

    def inputs(self, example: Example) -> MethodInput:
        """Copy from the nearest graph peer that has a review the request may see, else the nearest
        such user by profile embedding."""
        cutoff = self.resources.cutoff(example)
        persona = self.resources.persona(example)
        graph = [n.user_id for n in persona.neighbours]
        notes = [*persona.notes] + ([] if graph else ["no graph peers: nearest user by profile embedding"])
        dropped: list[DroppedText] = []
        nearest = self._nearest_by_profile(example.user_id, persona.profile_vector)
        for position, peer in enumerate(chain(graph, nearest)):
            visible = []
            for review in self.resources.profiles.get(peer, []):
                reason = cutoff.reason(review)
                if reason is None:
                    visible.append(review)
                else:
                    dropped.append(DroppedText(review.text, peer, reason, CANDIDATE_DROPPED))
            if visible:
                if graph and position >= len(graph):
                    notes.append("no graph peer has a review before the target: nearest user by profile embedding")
                return self.copy_from(visible, example, f"peer {peer}", notes, dropped)
        return self.copy_from([], example, "no peer", notes, dropped)
