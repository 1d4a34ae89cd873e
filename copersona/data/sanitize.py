"""Untrusted text (reviews, titles, descriptions, other users' facet texts) made safe for a prompt.

Two passes: :func:`sanitize` removes the template markers of every common chat-template family
and our own fence tags from each field before it is placed; :class:`SpecialTokens` removes the
generator's own control tokens from every message a method builds.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

# Turn and role markers of the common chat-template families, whatever the generator: ChatML and
# Llama 3 (<|im_start|>, <|eot_id|>), Llama 2 and Mistral ([INST], <<SYS>>), Gemma
# (<start_of_turn>), <s>, and our own fence tags. Spaces inside a marker ("</data >", "[ /INST ]")
# do not hide it.
_TEMPLATE_MARKERS = re.compile(
    r"<\|[^|>]{1,40}\|>"
    r"|\[\s*/?\s*INST\s*\]"
    r"|<<\s*/?\s*SYS\s*>>"
    r"|<\s*/?\s*(?:s|data|review|start_of_turn|end_of_turn)\s*>",
    re.IGNORECASE,
)


def sanitize(text: str) -> str:
    """Text of strangers (reviews, titles, descriptions) made safe to place in a prompt: template
    markers and fence tags removed. The generator's own special tokens go in a last pass over the
    whole input (:class:`SpecialTokens`)."""
    return _TEMPLATE_MARKERS.sub(" ", text).strip()


class SpecialTokens:
    """Removes a generator's own control tokens (e.g. SmolLM2's ``<file_sep>``) from its input.

    Applied to every message a method builds, so no field of any method can carry them; our own
    layout never contains them. Only tokens that look like markup (brackets, pipes) are listed,
    so a tokenizer that marks a plain word special cannot erase that word from reviews.
    """

    def __init__(self, tokens: Iterable[str] = ()):
        markup = sorted({t for t in tokens if t.strip() and any(c in t for c in "<>[]|")}, key=len, reverse=True)
        self._pattern = re.compile("|".join(map(re.escape, markup))) if markup else None

    def __call__(self, text: str) -> str:
        return self._pattern.sub(" ", text) if self._pattern is not None else text
