"""Reference points that use no LLM, reported beside every table (so a weak generator is not
mistaken for a method's effect):

* ``copy-self``: the user's own past review most similar to the query, by BM25;
* ``copy-peer``: the review most similar to the query (BM25) among the persona profile of the
  user's nearest peer by combined similarity; users without edges fall back to their nearest user
  by whole-profile embedding, and the fallback is recorded.
"""

from __future__ import annotations

from functools import cached_property

import numpy as np

from copersona.data.records import Example, Interaction
from copersona.methods.base import Method, MethodInput, example_key


class CopySelf(Method):
    name = "copy-self"
    description = "No LLM: the user's own most similar past review (BM25), copied."
    uses_generator = False
    role = "reference"

    def copy_from(self, profile: list[Interaction], example: Example, source: str, notes: list[str]) -> MethodInput:
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
        )

    def inputs(self, example: Example) -> MethodInput:
        return self.copy_from(example.profile, example, "the user's own history", [])


class CopyPeer(CopySelf):
    name = "copy-peer"
    description = "No LLM: the most similar review (BM25) of the user's nearest peer, copied."

    @cached_property
    def _global_neighbour(self) -> dict[str, str]:
        """Each user's nearest other user by whole-profile embedding (the fallback peer)."""
        user_ids, vectors = self.resources.store.profile_vectors()
        if len(user_ids) < 2:
            return {}
        similarity = vectors @ vectors.T
        np.fill_diagonal(similarity, -np.inf)
        return {u: user_ids[int(np.argmax(row))] for u, row in zip(user_ids, similarity)}

    def inputs(self, example: Example) -> MethodInput:
        notes = []
        nearest = self.resources.peers.neighbours(example.user_id, 1)
        if nearest:
            peer = nearest[0].user_id
        else:
            peer = self._global_neighbour.get(example.user_id, "")
            notes.append("no graph peers: nearest user by profile embedding")
        return self.copy_from(self.resources.profiles.get(peer, []), example, f"peer {peer}", notes)
