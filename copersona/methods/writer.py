"""Methods whose context is one text about the user's profile, and the generator writing it.

With ``methods.profile_writer = "llm"`` the generator writes the text (PAG's summary, DPL's
difference profile), batched; every answer is cached in the store by the LLM client, so a rerun or
a second method over the same profiles costs nothing.
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Callable
from functools import cached_property
from typing import ClassVar

from copersona.backends.llm import Request
from copersona.data.records import Example, Interaction
from copersona.methods.base import Resources, profile_key
from copersona.methods.prompts import PromptMethod, fenced, sanitize
from copersona.retrieval import TokenBudget

# Profiles are short, factual texts: low temperature, a few sentences.
WRITER_TEMPERATURE = 0.2
WRITER_MAX_TOKENS = 256


class ProfileWriter:
    """Asks the generator to write one text per profile from ``prompt_of(profile)``."""

    def __init__(self, resources: Resources, prompt_of: Callable[[list[Interaction]], str]):
        self.resources = resources
        self.prompt_of = prompt_of
        self._written: dict[tuple, str] = {}

    def _request(self, profile: list[Interaction]) -> Request:
        return Request.chat(
            [{"role": "user", "content": self.prompt_of(profile)}],
            temperature=WRITER_TEMPERATURE,
            max_tokens=WRITER_MAX_TOKENS,
            seed=self.resources.config.generation.seed,
        )

    def write_all(self, profiles: list[list[Interaction]]) -> None:
        """Write every profile not written yet, as one batch."""
        todo = list({profile_key(p): p for p in profiles if p and profile_key(p) not in self._written}.values())
        for profile, completion in zip(todo, self.resources.llm.generate([self._request(p) for p in todo])):
            self._written[profile_key(profile)] = completion.text.strip()

    def written(self, profile: list[Interaction]) -> str:
        if not profile:
            return ""
        if profile_key(profile) not in self._written:
            self.write_all([profile])
        return self._written[profile_key(profile)]


class ProfileMethod(PromptMethod):
    """A method whose context is one text about the user's profile (PAG's profile, DPL's difference).

    The text is computed from the reviews (``methods.profile_writer = "extractive"``) or written by
    the generator (``"llm"``, batched in ``prepare``), once per profile, and fenced as data.
    """

    block_title: ClassVar[str]
    part: ClassVar[str]  # the name of the text in ``--explain`` and in notes

    @abstractmethod
    def computed_profile(self, profile: list[Interaction]) -> str:
        """The text computed from the reviews, without an LLM."""

    @abstractmethod
    def writer_prompt(self, profile: list[Interaction]) -> str:
        """What the generator is asked when it writes the text."""

    @cached_property
    def writer(self) -> ProfileWriter:
        return ProfileWriter(self.resources, self.writer_prompt)

    @cached_property
    def _texts(self) -> dict[tuple, str]:
        return {}

    @property
    def _written_by_llm(self) -> bool:
        return self.config.methods.profile_writer == "llm"

    def profile_text(self, profile: list[Interaction]) -> str:
        key = profile_key(profile)
        if key not in self._texts:
            self._texts[key] = self.writer.written(profile) if self._written_by_llm else self.computed_profile(profile)
        return self._texts[key]

    def prepare(self, examples: list[Example]) -> None:
        if self._written_by_llm:
            self.writer.write_all([e.profile for e in examples if e.profile])  # one batch
        super().prepare(examples)

    def stored_texts(self, example: Example) -> list[str]:
        return [sanitize(self.profile_text(example.profile))] if example.profile else []

    def context(self, example: Example, budget: TokenBudget) -> tuple[list[str], dict[str, str], list[str]]:
        if not example.profile:
            return [], {self.part: ""}, [f"empty history: no {self.part}"]
        text = budget.fit(sanitize(self.profile_text(example.profile)), budget.limit("per_review"), self.part)
        if not text:
            return [], {self.part: ""}, [f"empty {self.part}"]
        return fenced(self.block_title, text, budget), {self.part: text}, []
