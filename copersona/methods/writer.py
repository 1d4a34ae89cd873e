"""Profiles written by the generator (PAG's summary, DPL's difference profile), batched and cached.

Used when ``methods.profile_writer = "llm"``; every answer is cached in the store by the LLM
client, so a rerun or a second method over the same profiles costs nothing.
"""

from __future__ import annotations

from collections.abc import Callable

from copersona.backends.llm import Request
from copersona.data.records import Interaction
from copersona.methods.base import Resources

# Profiles are short, factual texts: low temperature, a few sentences.
WRITER_TEMPERATURE = 0.2
WRITER_MAX_TOKENS = 256


class ProfileWriter:
    """Asks the generator to write one text per profile from ``prompt_of(profile)``."""

    def __init__(self, resources: Resources, prompt_of: Callable[[list[Interaction]], str]):
        self.resources = resources
        self.prompt_of = prompt_of
        self._written: dict[tuple, str] = {}

    @staticmethod
    def _key(profile: list[Interaction]) -> tuple:
        return (profile[0].user_id, len(profile)) if profile else ()

    def _request(self, profile: list[Interaction]) -> Request:
        return Request.chat(
            [{"role": "user", "content": self.prompt_of(profile)}],
            temperature=WRITER_TEMPERATURE,
            max_tokens=WRITER_MAX_TOKENS,
            seed=self.resources.config.generation.seed,
        )

    def write_all(self, profiles: list[list[Interaction]]) -> None:
        """Write every profile not written yet, as one batch."""
        todo = list({self._key(p): p for p in profiles if p and self._key(p) not in self._written}.values())
        for profile, completion in zip(todo, self.resources.llm.generate([self._request(p) for p in todo])):
            self._written[self._key(profile)] = completion.text.strip()

    def written(self, profile: list[Interaction]) -> str:
        if not profile:
            return ""
        if self._key(profile) not in self._written:
            self.write_all([profile])
        return self._written[self._key(profile)]
