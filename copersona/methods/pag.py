"""PAG (App. B; Richardson et al.): a profile summarizing the user's recent reviews, plus retrieval.

The profile is written either extractively (default: the sentences of the recent reviews closest
to their TF-IDF centroid, in order; no LLM) or by the generator, as in the paper; the second only
makes sense with a generator that can summarize, and its answers are cached in the store.
"""

from __future__ import annotations

import numpy as np
from sklearn.feature_extraction.text import TfidfVectorizer

from copersona.data.records import Example, Interaction
from copersona.data.sanitize import sanitize
from copersona.facets.profile import recent, split_sentences
from copersona.methods.writer import ProfileMethod

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


class PAG(ProfileMethod):
    name = "pag"
    description = "A profile of the user's recent reviews (extractive or LLM-written) + retrieved reviews."
    block_title = "What this customer's past reviews say:"
    part = "profile"

    def computed_profile(self, example: Example) -> str:
        reviews = recent(example.profile, PROFILE_REVIEWS)
        return " ".join(central_sentences(reviews, self.config.methods.pag_profile_sentences))

    def writer_prompt(self, example: Example) -> str:
        reviews = "\n".join(sanitize(i.profile_line()) for i in recent(example.profile, PROFILE_REVIEWS))
        return (
            "Summarize this customer's preferences and writing style in three sentences, from their "
            f"reviews below. Write only the summary.\n<data>\n{reviews}\n</data>"
        )
