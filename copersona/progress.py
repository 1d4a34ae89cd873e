"""How long work reports its progress: a stage with a total, advanced as it goes, and messages.

A leaf module (it imports nothing of CoPersona) so that every layer, from the build to the
runtime and the trainer, can take a :class:`Progress` without importing another layer.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager


class Progress:
    """Receives progress; the CLI shows bars, the library default shows nothing."""

    @contextmanager
    def stage(self, name: str, total: int | None = None) -> Iterator[Callable[..., None]]:
        """Yields ``advance(n, status=None)``; ``status`` is a short live note (e.g. the current loss)."""
        yield lambda advance, status=None: None

    def message(self, text: str) -> None:
        """A line for the user (what a stage found or decided)."""
