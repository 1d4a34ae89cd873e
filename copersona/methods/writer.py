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
from copersona.data.records import Example
from copersona.data.sanitize import sanitize
from copersona.methods.base import Resources, profile_key
from copersona.methods.prompts import Context, PromptMethod, fenced
from copersona.retrieval import TokenBudget

# Profiles are short, factual texts: low temperature, a few sentences.
WRITER_TEMPERATURE = 0.2
WRITER_MAX_TOKENS = 256


class ProfileWriter:
    """Asks the generator to write one text per example from ``prompt_of(example)``; equal prompts are written once."""

    def __init__(self, resources: Resources, prompt_of: Callable[[Example], str]):
        self.resources = resources
        self.prompt_of = prompt_of
        self._written: dict[str, str] = {}  # by prompt

    def _request(self, prompt: str) -> Request:
        return Request.chat(
            [{"role": "user", "content": prompt}],
            temperature=WRITER_TEMPERATURE,
            max_tokens=WRITER_MAX_TOKENS,
            seed=self.resources.config.generation.seed,
        )

    def write_all(self, examples: list[Example]) -> None:
        """Write every text not written yet, as one batch."""
        todo = list(dict.fromkeys(self.prompt_of(e) for e in examples if e.profile))
        todo = [prompt for prompt in todo if prompt not in self._written]
        for prompt, completion in zip(todo, self.resources.llm.generate([self._request(p) for p in todo])):
            self._written[prompt] = completion.text.strip()

    def written(self, example: Example) -> str:
        if not example.profile:
            return ""
        prompt = self.prompt_of(example)
        if prompt not in self._written:
            self.write_all([example])
        return self._written[prompt]


class ProfileMethod(PromptMethod):
    """A method whose context is one text about the user's profile (PAG's profile, DPL's difference).

    The text is computed from the reviews (``methods.profile_writer = "extractive"``) or written by
    the generator (``"llm"``, batched in ``prepare``), once per profile, and fenced as data.
    """

    block_title: ClassVar[str]
    part: ClassVar[str]  # the name of the text in ``--explain`` and in notes

    @abstractmethod
    def computed_profile(self, example: Example) -> str:
        """The text computed from the reviews, without an LLM."""

    @abstractmethod
    def writer_prompt(self, example: Example) -> str:
        """What the generator is asked when it writes the text."""

    def text_key(self, example: Example) -> tuple:
        """What the text depends on (memo key): the user's profile; methods that read other users add their cutoff."""
        return profile_key(example.profile)

    @cached_property
    def writer(self) -> ProfileWriter:
        return ProfileWriter(self.resources, self.writer_prompt)

    @cached_property
    def _texts(self) -> dict[tuple, str]:
        return {}

    @property
    def _written_by_llm(self) -> bool:
        return self.config.methods.profile_writer == "llm"

    def profile_text(self, example: Example) -> str:
        key = self.text_key(example)
        if key not in self._texts:
            self._texts[key] = self.writer.written(example) if self._written_by_llm else self.computed_profile(example)
        return self._texts[key]

    def prepare(self, examples: list[Example]) -> None:
        if self._written_by_llm:
            self.writer.write_all([e for e in examples if e.profile])  # one batch
        super().prepare(examples)

    def stored_texts(self, example: Example) -> list[str]:
        return [sanitize(self.profile_text(example))] if example.profile else []

    def context(self, example: Example, budget: TokenBudget) -> Context:
        if not example.profile:
            return Context(parts={self.part: ""}, notes=[f"empty history: no {self.part}"])
        text = budget.fit(sanitize(self.profile_text(example)), budget.limit("per_review"), self.part)
        if not text:
            return Context(parts={self.part: ""}, notes=[f"empty {self.part}"])
        return Context(fenced(self.block_title, text, budget), {self.part: text})
