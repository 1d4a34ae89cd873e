"""Typed records of facet disentanglement: the schema, cluster evidence and per-user facet states."""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from copersona.data.records import Interaction

Reliability = Literal["none", "weak", "moderate", "strong"]
RELIABILITY_LEVELS: tuple[Reliability, ...] = ("none", "weak", "moderate", "strong")
# Labels whose facet text is the neutral placeholder: no evidence a graph layer links on.
PLACEHOLDER_LEVELS: tuple[Reliability, ...] = ("none", "weak")


class Facet(BaseModel):
    """One axis of the facet schema (Sec. 3.1): name, definition, value specification, rubric."""

    name: str = Field(min_length=1, max_length=60)
    definition: str = Field(min_length=1, max_length=400)
    values: str = Field(default="", max_length=300, description="Categorical values or ordinal scale.")
    rubric: str = Field(default="", max_length=400, description="How evidence is read on this axis.")
    evidence_clusters: list[int] = Field(default_factory=list)

    @field_validator("name", "definition", "values", "rubric")
    @classmethod
    def _strip(cls, value: str) -> str:
        return " ".join(value.split())

    @property
    def key(self) -> str:
        """A stable identifier: the lower-cased name with non-alphanumerics collapsed to '_'."""
        return re.sub(r"[^a-z0-9]+", "_", self.name.lower()).strip("_")

    def query_text(self) -> str:
        """What the facet is about, as one text to embed (definition, values and rubric)."""
        return " ".join(p for p in (f"{self.name}: {self.definition}", self.values, self.rubric) if p)


class FacetSchema(BaseModel):
    """The global facet schema and where it came from."""

    facets: list[Facet]
    source: Literal["induced", "builtin", "file"]
    note: str = ""


class ClusterEvidence(BaseModel):
    """The evidence package S_k = (T_k, E_k) of one user cluster (Sec. 3.1, App. C)."""

    cluster_id: int
    size: int
    top_terms: list[str]
    medoid_user_ids: list[str]
    excerpts: list[str]
    style: dict[str, float]


class ReviewRef(BaseModel):
    """The review a piece of facet evidence was taken from: its item and when it was written."""

    model_config = ConfigDict(frozen=True)

    item_id: str
    timestamp: int

    @classmethod
    def of(cls, interaction: Interaction) -> ReviewRef:
        return cls(item_id=interaction.item_id, timestamp=interaction.timestamp)


_SPACES = re.compile(r"\s+")


def normalize_space(text: str) -> str:
    return _SPACES.sub(" ", text).strip()


def source_of(text: str, reviews: Iterable[Interaction]) -> ReviewRef | None:
    """The earliest of ``reviews`` that contains ``text`` verbatim (up to whitespace), or None.

    The earliest, because a sentence a user repeated existed from its first writing on.
    """
    wanted = normalize_space(text)
    for review in sorted(reviews, key=lambda r: (r.timestamp, r.item_id)):
        if wanted in normalize_space(review.text):
            return ReviewRef.of(review)
    return None


class FacetSummary(BaseModel):
    """User u's state on facet m: summary s, quotes ev, reliability r, facet text t = [s; ev].

    Every piece of evidence says which reviews it rests on (``summary_sources``; ``quote_sources``,
    one per quote), so a request for a target written at time t can leave out what a peer wrote on
    or after t, or about the target item (:mod:`copersona.retrieval.cutoff`).
    """

    user_id: str
    facet_key: str
    summary: str
    quotes: list[str] = Field(default_factory=list)
    reliability: Reliability
    method: Literal["extractive", "abstractive"]
    fallback: str = Field(default="", description="Why a fallback was used ('' when none was).")
    dropped_quotes: int = Field(default=0, description="Quotes rejected because they are not verbatim.")
    summary_sources: list[ReviewRef] = Field(
        default_factory=list, description="The reviews the summary rests on (extractive: its sentences' reviews)."
    )
    quote_sources: list[ReviewRef] = Field(default_factory=list, description="Each quote's review, in quote order.")

    def facet_text(self, placeholder: str) -> str:
        """Eq. 4's t = [s; ev], or the neutral placeholder where evidence is none or weak."""
        if self.reliability in PLACEHOLDER_LEVELS:
            return placeholder
        extra = [q for q in self.quotes if q not in self.summary]
        return " ".join([self.summary, *extra]).strip() or placeholder
