"""Typed records that every stage exchanges: interactions, users, examples and load reports.

An interaction is one (x, y) pair of the paper's Sec. 2.1: x is the item context (title,
description, category) plus the review title and rating; y is the review text the user wrote.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

Split = Literal["train", "validation", "test"]


class Interaction(BaseModel):
    """One review a user wrote about one item, with the item's context."""

    model_config = ConfigDict(frozen=True)

    user_id: str
    item_id: str
    timestamp: int = Field(description="Unix seconds; orders a user's history.")
    rating: float | None = None
    review_title: str = ""
    text: str = ""
    item_title: str = ""
    item_description: str = ""
    item_category: str = ""

    def profile_line(self) -> str:
        """The interaction as one line of a user's profile text (rating, title, text)."""
        rating = f"{self.rating:g}/5" if self.rating is not None else "unrated"
        title = f" {self.review_title}." if self.review_title else ""
        return f"[{rating}]{title} {self.text}".strip()


class User(BaseModel):
    """A user and their history, oldest first."""

    user_id: str
    interactions: list[Interaction]


class Example(BaseModel):
    """A personalization example: the user's profile (earlier reviews) and a target review."""

    user_id: str
    split: Split
    profile: list[Interaction]
    target: Interaction
    # A free request answered in the user's voice instead of the target's review (served requests):
    # the target then only dates the request and names no real item.
    instruction: str = ""
    # "review": write the target's review (given its rating and title); "rating": predict the
    # target's rating from the item alone (response prediction).
    task: Literal["review", "rating"] = "review"

    def query(self) -> Interaction:
        """What self-history retrieval matches on: the target item, or the free request's words.

        For the rating task only the item: the rating is the answer, and the target's title and
        text were written with it.
        """
        if self.task == "rating":
            return self.request_target()
        if not self.instruction:
            return self.target
        return self.target.model_copy(update={"item_title": self.instruction, "item_description": ""})

    def request_target(self) -> Interaction:
        """The target as the request may show it: for the rating task, the item without the review."""
        if self.task != "rating":
            return self.target
        return self.target.model_copy(update={"rating": None, "review_title": "", "text": ""})


# How many problems of each kind a report keeps with file and line; the counts are always complete.
MAX_ISSUES_KEPT = 50


@dataclass
class LoadReport:
    """What a loader read, kept, and why it did not keep the rest.

    Every dropped record is counted under a reason; the first ``MAX_ISSUES_KEPT`` per reason are
    kept with file and line so a user can look at them. ``flagged`` counts records that were kept
    but changed or incomplete (a truncated text, a missing rating), by reason.
    """

    source: str
    read: int = 0
    kept: int = 0
    dropped: Counter = field(default_factory=Counter)
    issues: list[dict] = field(default_factory=list)
    flagged: Counter = field(default_factory=Counter)
    notes: list[str] = field(default_factory=list)

    def drop(self, reason: str, path: str = "", line: int | None = None, detail: str = "") -> None:
        """Count one record that was not kept, and remember where it was."""
        self.dropped[reason] += 1
        if self.dropped[reason] <= MAX_ISSUES_KEPT:
            self.issues.append({"reason": reason, "file": path, "line": line, "detail": detail[:200]})

    def to_dict(self) -> dict:
        return {
            "source": self.source,
            "read": self.read,
            "kept": self.kept,
            "dropped": dict(self.dropped),
            "issues": self.issues,
            "flagged": dict(self.flagged),
            "notes": self.notes,
        }

    def summary_line(self) -> str:
        reasons = ", ".join(f"{k}: {v}" for k, v in self.dropped.most_common())
        caveats = ", ".join(f"{k}: {v}" for k, v in self.flagged.most_common())
        return (
            f"{self.source}: read {self.read}, kept {self.kept}"
            + (f" (dropped {reasons})" if reasons else "")
            + (f" (kept with caveats {caveats})" if caveats else "")
        )
