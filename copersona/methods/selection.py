"""Choosing CoPersona's answer among candidates with a persona scorer that never sees the target.

A 135M generator writes worse reviews than the user's own most relevant past review (copy-self), and
it cannot edit that review either (asked to, it answers like a chat assistant). What it writes is
still sometimes closer to how the user writes than that old review. So the answer is chosen, per
request, between:

* the **retrieved answer**: the request's review title as the opening sentence, then the user's own
  past review that self-history retrieval ranks first (the prompt's last few-shot turn);
* the **generated answer**: the same opening, then what the generator wrote for the prompt.

The request's review title is part of x' (every method's prompt shows it); both candidates open with
it, so the choice is between the bodies. The scorer is the minimum-Bayes-risk rule with the user's
history as the sample of what they write: a candidate's score is its mean ROUGE-1 F-measure against
the user's other past reviews. The review the retrieved answer copies is left out of that sample, or
it would always win by matching itself. The generated answer replaces the retrieved one only when it
scores higher by more than a margin (``methods.copersona_select_margin``, 0.1, chosen on validation
of both data sets pooled over three sampling seeds, ``scripts/choose_margin.py``: a small generator's
answers look typical of a user more often than they are better). Nothing of the target but its
request (item, rating, review title) is read.
"""

from __future__ import annotations

import functools
import statistics
from dataclasses import dataclass

#: Which candidate a selected answer is, as named in a prediction's notes.
RETRIEVED = "retrieved"
GENERATED = "generated"


def opening(review_title: str) -> str:
    """The review title as a sentence: ends with a full stop unless it ends a sentence already."""
    title = " ".join(review_title.split())
    if not title:
        return ""
    return title if title[-1] in ".!?" else f"{title}."


def opened(review_title: str, body: str) -> str:
    """``body`` after the review title's sentence (just the body when there is no title)."""
    return " ".join(part for part in (opening(review_title), body.strip()) if part)


@functools.cache
def _rouge1():
    from rouge_score import rouge_scorer

    return rouge_scorer.RougeScorer(["rouge1"], use_stemmer=True)


@dataclass(frozen=True)
class Selection:
    """The chosen candidate's name and text, and every candidate's score."""

    chosen: str
    text: str
    scores: dict[str, float]

    @property
    def note(self) -> str:
        return f"answer: the {self.chosen} candidate (persona scorer)"


class PersonaScorer:
    """Mean ROUGE-1 F-measure of a candidate against the user's past reviews (their persona sample)."""

    def score(self, candidate: str, persona: list[str]) -> float:
        scorer = _rouge1()
        return statistics.fmean(scorer.score(review, candidate)["rouge1"].fmeasure for review in persona)

    def choose(self, candidates: dict[str, str], persona: list[str], margin: float = 0.0) -> Selection | None:
        """The candidate closest to ``persona``: the first named unless another scores higher by more
        than ``margin`` (the first of the others on a tie); None without a persona to score against or
        without a non-empty candidate."""
        present = {name: text for name, text in candidates.items() if text.strip()}
        persona = [review for review in persona if review.strip()]
        if not present or not persona:
            return None
        scores = {name: self.score(text, persona) for name, text in present.items()}
        incumbent = next(iter(scores))
        chosen = max(scores, key=lambda name: scores[name] - (0.0 if name == incumbent else margin))
        return Selection(chosen, present[chosen], scores)
