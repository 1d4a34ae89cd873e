"""Time and item integrity of other users' evidence.

A request for target (u, i, t) may use only evidence that other users wrote before t, and never
another user's review of item i (unless ``[harness.peers] same_item`` allows it). Every piece of
peer evidence carries the review it rests on (:class:`~copersona.facets.records.ReviewRef`), so
the rule is applied where context is assembled: peer facet packages, copy-peer's candidates and
DPL's representatives. Timestamps are compared by day (the data sets date reviews by day), so
evidence from the target's own day counts as not before it.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass

from copersona.config import PeersConfig
from copersona.data.records import Interaction
from copersona.facets.records import ReviewRef

SECONDS_PER_DAY = 86_400

LATER = "written on or after the target's day"
SAME_ITEM = "a review of the target item"


def day(timestamp: int) -> int:
    return timestamp // SECONDS_PER_DAY


@dataclass(frozen=True)
class EvidenceCutoff:
    """What a request may see of other users: evidence before ``before_day``, not about ``item_id``.

    ``None`` lifts either limit.
    """

    before_day: int | None
    item_id: str | None

    @classmethod
    def for_target(cls, target: Interaction, config: PeersConfig) -> EvidenceCutoff:
        return cls(
            before_day=day(target.timestamp) if config.cutoff == "before-target" else None,
            item_id=None if config.same_item else target.item_id,
        )

    def reason(self, ref: ReviewRef | Interaction) -> str | None:
        """Why evidence from review ``ref`` may not be used, or None if it may."""
        if self.item_id is not None and ref.item_id == self.item_id:
            return SAME_ITEM
        if self.before_day is not None and day(ref.timestamp) >= self.before_day:
            return LATER
        return None

    def reason_for_all(self, refs: Iterable[ReviewRef | Interaction]) -> str | None:
        """Why evidence resting on all of ``refs`` may not be used (a later review outweighs a
        same-item one), or None if every one is allowed."""
        reasons = {reason for ref in refs if (reason := self.reason(ref)) is not None}
        return LATER if LATER in reasons else next(iter(reasons), None)

    def allows(self, ref: ReviewRef | Interaction) -> bool:
        return self.reason(ref) is None

    def visible(self, reviews: Iterable[Interaction]) -> list[Interaction]:
        """The reviews a request may see, in their order."""
        return [r for r in reviews if self.allows(r)]


@dataclass(frozen=True)
class DroppedText:
    """A text of another user that the cutoff kept out of an input, and what was done instead."""

    text: str
    peer: str
    reason: str  # LATER or SAME_ITEM
    action: str  # e.g. "summary replaced by earlier quotes", "peer skipped on this facet"
    facet: str = ""

    def to_dict(self) -> dict:
        return asdict(self)
