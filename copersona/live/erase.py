"""Erasure: a user forgotten everywhere the store holds them, and the graph repaired around the gap.

Their reviews, facet states (summaries, quotes, embeddings), profile vector, soft prompts and
edges in both directions are deleted; so is every LLM-cache entry whose request or answer holds
their words, and cluster evidence forgets them. "Holds their words" is any run of
:data:`SHINGLE_WORDS` consecutive words of one of their texts (or a whole text shorter than that,
of at least :data:`MIN_SHORT_WORDS` words; one or two words identify no one): prompts carry
reviews truncated and sanitized, so whole-text matching would miss them; an unrelated cache
entry that shares a phrase is dropped too, which costs only a recomputation. Users who had them
as a neighbour get their rows of that facet layer searched again (with exact search, equal to a
rebuild's). Then the file is compacted, so the words are gone from its bytes.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from dataclasses import dataclass, field

from copersona.config import BuildConfig
from copersona.generate import UnknownUser
from copersona.graph.multiplex import refresh_sources
from copersona.store import Store

SHINGLE_WORDS = 5
MIN_SHORT_WORDS = 3
_WORD = re.compile(r"[^\W_]+")


def _words(text: str) -> list[str]:
    return _WORD.findall(text.lower())


def _strings(value) -> Iterable[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for item in value.values():
            yield from _strings(item)
    elif isinstance(value, list):
        for item in value:
            yield from _strings(item)


class WordMatcher:
    """Whether a text (or a JSON document's strings) holds a run of someone's words."""

    def __init__(self, texts: Iterable[str], size: int = SHINGLE_WORDS):
        self.size = size
        self.shingles: set[tuple[str, ...]] = set()
        self.short: set[tuple[str, ...]] = set()
        for text in texts:
            words = _words(text)
            if len(words) >= size:
                self.shingles.update(tuple(words[i : i + size]) for i in range(len(words) - size + 1))
            elif len(words) >= MIN_SHORT_WORDS:
                self.short.add(tuple(words))

    def __call__(self, text: str) -> bool:
        try:
            document = json.loads(text)
        except ValueError:
            document = text
        for string in _strings(document):
            words = _words(string)
            if any(tuple(words[i : i + self.size]) in self.shingles for i in range(len(words) - self.size + 1)):
                return True
            if self.short and any(
                tuple(words[i : i + len(short)]) == short for short in self.short for i in range(len(words))
            ):
                return True
        return False


@dataclass
class Erasure:
    """What forgetting one user removed and repaired."""

    user_id: str
    removed: dict[str, int] = field(default_factory=dict)
    neighbours_recomputed: int = 0
    bytes_after: int = 0


def erase_user(store: Store, user_id: str) -> Erasure:
    """Forget ``user_id`` (see the module docstring); one transaction, then compaction."""
    history, _ = store.history(user_id)
    if not history:
        raise UnknownUser(f"{store.path}: no user {user_id!r}")
    texts = [t for i in history for t in (i.text, i.review_title) if t]
    texts += [t for s in store.facet_states(user_id=user_id) for t in (s.summary, *s.quotes) if t]
    graph = BuildConfig.from_dict(store.get_meta("build_config") or {}).graph
    report = Erasure(user_id)
    with store.transaction():
        affected = store.in_edges(user_id)
        report.removed = store.delete_user_rows(user_id, WordMatcher(texts))
        for facet_key, sources in affected.items():
            report.neighbours_recomputed += refresh_sources(store, graph, facet_key, sources)
    report.bytes_after = store.compact()["bytes"]
    return report
