"""Typed records of facet disentanglement: the schema, cluster evidence and per-user facet states."""

from __future__ import annotations

import re
from typing import Literal

from pydantic import BaseModel, Field, field_validator

Reliability = Literal["none", "weak", "moderate", "strong"]
RELIABILITY_LEVELS: tuple[Reliability, ...] = ("none", "weak", "moderate", "strong")


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


class FacetSummary(BaseModel):
    """User u's state on facet m: summary s, quotes ev, reliability r, facet text t = [s; ev]."""

    user_id: str
    facet_key: str
    summary: str
    quotes: list[str] = Field(default_factory=list)
    reliability: Reliability
    method: Literal["extractive", "abstractive"]
    fallback: str = Field(default="", description="Why a fallback was used ('' when none was).")
    dropped_quotes: int = Field(default=0, description="Quotes rejected because they are not verbatim.")

    def facet_text(self, placeholder: str) -> str:
        """Eq. 4's t = [s; ev], or the neutral placeholder where evidence is none or weak."""
        if self.reliability in ("none", "weak"):
            return placeholder
        extra = [q for q in self.quotes if q not in self.summary]
        return " ".join([self.summary, *extra]).strip() or placeholder
