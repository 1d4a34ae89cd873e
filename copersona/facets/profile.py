"""Per-user profile texts, sentences and writing-style features (Sec. 3.1, App. C)."""

from __future__ import annotations

import re
import unicodedata

import numpy as np

from copersona.data.records import Interaction

# A sentence ends at . ! ? (or a run of them) followed by space, or directly by a capital letter:
# reviews often lack the space ("affordable.I did not realize").
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+|(?<=[a-z][.!?])(?=[A-Z])|\n+")
_WORD = re.compile(r"[A-Za-z0-9']+")
_PUNCTUATION = set("!?.,;:-()\"'")
# Fewer characters than this is not a sentence worth quoting ("Great.", "5 stars").
MIN_SENTENCE_CHARS = 20
# Sentences written to a language model rather than about a product: the phrasings of prompt
# injection ("Ignore all previous instructions", "You are now an AI assistant", "Reply only
# with ..."). They say nothing about the writer's persona, and an extractive summary that picked
# one (its wording is about writing, so it ranks high for a style facet) would carry it into
# every peer's prompt. Matched on wording that addresses a model, not on any product vocabulary.
_ADDRESSES_A_MODEL = re.compile(
    r"\b(?:ignore|disregard|forget|override)\b[\w\s,']{0,30}?\b(?:(?:all|any|the)\s+)?"
    r"(?:previous|prior|above|earlier|preceding|your)\s+(?:\w+\s+)?"
    r"(?:instructions?|prompts?|rules|guidelines|directives|context)\b"
    r"|\b(?:system|developer)\s+prompt\b"
    r"|\byou\s+are\s+(?:now\s+)?(?:an?\s+)?(?:ai|assistant|chatbot|language\s+model|llm|gpt)\b"
    r"|\bas\s+an?\s+(?:ai|language\s+model|llm)\b"
    r"|\b(?:respond|reply|answer|output)\s+only\s+with\b"
    r"|\bnew\s+instructions?\s*:"
    r"|\b(?:jailbreak|prompt\s+injection|do\s+anything\s+now)\b",
    re.IGNORECASE,
)

STYLE_FEATURES = (
    "review_length",
    "sentence_length",
    "punctuation_rate",
    "exclamation_rate",
    "emoji_rate",
    "lexical_diversity",
    "rating_mean",
    "rating_std",
)


def recent(interactions: list[Interaction], count: int) -> list[Interaction]:
    """The ``count`` most recent interactions, oldest first (histories are stored chronologically)."""
    return interactions[-count:] if count > 0 else []


def profile_text(interactions: list[Interaction], max_reviews: int, max_chars: int) -> str:
    """tau_u: up to ``max_reviews`` recent reviews (rating, title, text), truncated for stability."""
    return "\n".join(i.profile_line() for i in recent(interactions, max_reviews))[:max_chars]


def split_sentences(text: str) -> list[str]:
    """Sentences of a review, verbatim (so they can serve as quotes), without very short ones."""
    parts = (p.strip() for p in _SENTENCE_END.split(text))
    return [p for p in parts if len(p) >= MIN_SENTENCE_CHARS]


def addresses_a_model(sentence: str) -> bool:
    """Whether ``sentence`` is worded as an instruction to a language model (see ``_ADDRESSES_A_MODEL``)."""
    return _ADDRESSES_A_MODEL.search(sentence) is not None


def word_count(text: str) -> int:
    return len(_WORD.findall(text))


def _is_emoji(char: str) -> bool:
    return unicodedata.category(char) == "So" or 0x1F300 <= ord(char) <= 0x1FAFF


def style_features(interactions: list[Interaction]) -> np.ndarray:
    """The writing-style vector of App. C, in the order of ``STYLE_FEATURES``.

    Rates are per character; lexical diversity is the mean type/token ratio of the reviews
    (per review, so that long histories are not penalised); ratings that are missing are ignored.
    """
    texts = [i.text for i in interactions if i.text]
    chars = sum(len(t) for t in texts) or 1
    words_per_review = [_WORD.findall(t.lower()) for t in texts]
    sentences = [s for t in texts for s in re.split(r"[.!?]+", t) if s.strip()]
    ratings = [i.rating for i in interactions if i.rating is not None]
    diversity = [len(set(w)) / len(w) for w in words_per_review if w]
    return np.array(
        [
            chars / max(len(texts), 1),
            sum(len(w) for w in words_per_review) / max(len(sentences), 1),
            sum(c in _PUNCTUATION for t in texts for c in t) / chars,
            sum(t.count("!") for t in texts) / chars,
            sum(_is_emoji(c) for t in texts for c in t) / chars,
            float(np.mean(diversity)) if diversity else 0.0,
            float(np.mean(ratings)) if ratings else 0.0,
            float(np.std(ratings)) if ratings else 0.0,
        ],
        dtype=np.float64,
    )
