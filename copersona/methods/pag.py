"""PAG (App. B; Richardson et al.): a profile summarizing the user's recent reviews, plus retrieval.

The profile is written either extractively (default: the sentences of the recent reviews closest
to their TF-IDF centroid, in order; no LLM) or by the generator, as in the paper; the second only
makes sense with a generator that can summarize, and its answers are cached in the store.
"""

from __future__ import annotations

from functools import cached_property

import numpy as np
from sklearn.feature_extraction.text import TfidfVectorizer

from copersona.data.records import Example, Interaction
from copersona.facets.profile import recent, split_sentences
from copersona.methods.prompts import PromptMethod, fenced, sanitize
from copersona.methods.writer import ProfileWriter
from copersona.retrieval import TokenBudget

# Recent reviews a profile is written from (App. C summarizes "up to 6 historical reviews").
PROFILE_REVIEWS = 6


def central_sentences(reviews: list[Interaction], count: int) -> list[str]:
    """The ``count`` sentences nearest the TF-IDF centroid of all the reviews' sentences, in order."""
    sentences = [s for review in reviews for s in split_sentences(review.text)]
    if len(sentences) <= count:
        return sentences
    try:
        matrix = TfidfVectorizer(stop_words="english", sublinear_tf=True).fit_transform(sentences)
    except ValueError:  # nothing but stop words
        return sentences[:count]
    centroid = np.asarray(matrix.mean(axis=0)).ravel()
    scores = matrix @ centroid
    chosen = sorted(np.argsort(-scores, kind="stable")[:count])
    return [sentences[i] for i in chosen]


def writer_prompt(profile: list[Interaction]) -> str:
    reviews = "\n".join(sanitize(i.profile_line()) for i in recent(profile, PROFILE_REVIEWS))
    return (
        "Summarize this customer's preferences and writing style in three sentences, from their "
        f"reviews below. Write only the summary.\n<data>\n{reviews}\n</data>"
    )


class PAG(PromptMethod):
    name = "pag"
    description = "A profile of the user's recent reviews (extractive or LLM-written) + retrieved reviews."

    @cached_property
    def writer(self) -> ProfileWriter:
        return ProfileWriter(self.resources, writer_prompt)

    def prepare(self, examples: list[Example]) -> None:
        if self.config.methods.profile_writer == "llm":
            self.writer.write_all([e.profile for e in examples])

    def profile(self, example: Example) -> str:
        if self.config.methods.profile_writer == "llm":
            return self.writer.written(example.profile)
        reviews = recent(example.profile, PROFILE_REVIEWS)
        return " ".join(central_sentences(reviews, self.config.methods.pag_profile_sentences))

    def context(self, example: Example, budget: TokenBudget) -> tuple[list[str], dict[str, str], list[str]]:
        text = budget.fit(sanitize(self.profile(example)), budget.limit("per_review"), "profile")
        if not text:
            return [], {"profile": ""}, ["empty profile"]
        return fenced("What this customer's past reviews say:", text, budget), {"profile": text}, []
