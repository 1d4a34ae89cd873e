"""Typed records of the recommendation task: items, aspect tuples, personas, alignments, candidates.

PERSONA4REC (paper 003, Sec. 3.1) reasons offline over items: an objective summary per item (Eq. 1),
an aspect tuple per review (Eq. 2), 2-7 personas per item (Eq. 3), and for each training
interaction the persona that best explains it (Eq. 5). Online, a user embedding is compared with
the personas of each candidate item (Eq. 10).
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

RecSplit = Literal["train", "validation", "test"]

#: The aspect slots of Eq. 2, in order.
ASPECT_SLOTS: tuple[str, ...] = ("category_preference", "purchase_purpose", "quality_criteria", "usage_context")
#: Tuples with a larger share of empty slots are dropped (Sec. 3.1.1: "more than 75% null").
MAX_NULL_SHARE = 0.75


class RecItem(BaseModel):
    """An item: its metadata and the objective summary s_i of Eq. 1."""

    item_id: str
    title: str = ""
    category: str = ""
    description: str = ""
    summary: str = ""


class AspectTuple(BaseModel):
    """a_{u,i} of Eq. 2: what one review says about the four slots (None: the review is silent).

    Unknown keys are refused, so an LLM answer of another shape fails validation (and falls back)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    category_preference: str | None = Field(default=None, max_length=300)
    purchase_purpose: str | None = Field(default=None, max_length=300)
    quality_criteria: str | None = Field(default=None, max_length=300)
    usage_context: str | None = Field(default=None, max_length=300)

    def slots(self) -> dict[str, str | None]:
        return {slot: getattr(self, slot) for slot in ASPECT_SLOTS}

    def null_share(self) -> float:
        return sum(not value for value in self.slots().values()) / len(ASPECT_SLOTS)

    def informative(self) -> bool:
        return self.null_share() <= MAX_NULL_SHARE

    def text(self) -> str:
        """The tuple as one text (filled slots only), as it is embedded and shown."""
        return "; ".join(f"{slot.replace('_', ' ')}: {value}" for slot, value in self.slots().items() if value)


class Persona(BaseModel):
    """pi_i^(k) of Eq. 3: a kind of buyer of an item, with the evidence behind it."""

    item_id: str
    index: int = Field(ge=0)
    name: str = Field(max_length=120)
    description: str = Field(max_length=800)
    rationale: str = Field(max_length=800)
    members: list[str] = Field(default_factory=list, description="Users whose training reviews formed it.")

    def text(self) -> str:
        """The unified text template that is embedded (Sec. 3.1.1)."""
        return f"Persona: {self.name}\nDescription: {self.description}\nWhy they like it: {self.rationale}"


class Alignment(BaseModel):
    """(u, i, pi+) of Eq. 5: the persona of item i that best explains user u's interaction."""

    user_id: str
    item_id: str
    persona_index: int
    justification: str = ""
    method: Literal["cluster", "judge", "judge-fallback"] = "cluster"


class Candidates(BaseModel):
    """A first-stage generator's top-k for one user and split, best first, and where the target is."""

    generator: str
    split: RecSplit
    user_id: str
    items: list[str]
    target: str
