"""Typed records of Persona-DB's hierarchy (History -> Distilled -> Induced -> Cache)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from copersona.facets.records import ReviewRef

Level = Literal["cache", "induced", "distilled"]
#: Most abstract first: the order retrieval fills a small context in.
LEVELS: tuple[Level, ...] = ("cache", "induced", "distilled")


class PersonaUnit(BaseModel):
    """One entry of a user's persona database, with the reviews it rests on.

    * ``distilled``: the facts and preferences of one review;
    * ``induced``: a trait seen across several reviews;
    * ``cache``: the user's index card: persona ``keys`` (what users are joined on) and their
      rating tendency.
    """

    model_config = ConfigDict(frozen=True)

    level: Level
    text: str = Field(min_length=1, max_length=800)
    sources: tuple[ReviewRef, ...]
    keys: tuple[str, ...] = ()  # the cache unit's persona keys
    made_by: str = "extractive"  # "extractive", the LLM's model id, or "extractive (fallback: ...)"


class Persona(BaseModel):
    """A user's refined persona: every level's units, built from one profile."""

    user_id: str
    profile: str  # digest of the refiner and the profile reviews (see PersonaDB.digest)
    units: list[PersonaUnit]

    def level(self, level: Level) -> list[PersonaUnit]:
        return [u for u in self.units if u.level == level]

    @property
    def keys(self) -> tuple[str, ...]:
        return next((u.keys for u in self.units if u.level == "cache"), ())
