"""DPL (App. B; Qiu et al. 2025): a difference-aware profile against representative users.

Representative users are the medoids of KMeans clusters of whole-profile embeddings (the same
embedder as CoPersona, as the paper asks for fairness). A user is contrasted with the nearest
``dpl_compare`` representatives on DPL's three dimensions:

* writing style: review and sentence length, lexical diversity, punctuation and exclamations;
* emotional style: rating level and spread;
* semantic style: the terms the user uses more, and less, than the representatives (TF-IDF).

Representatives are other users: a request sees only their reviews that its evidence cutoff
allows (written before the target's day, not about the target item), and a representative with
none is passed over for the next nearest.

By default the profile states these measured differences (no LLM; a 135M generator cannot write
them); with ``methods.profile_writer = "llm"`` the generator writes it from both sides' reviews.
"""

from __future__ import annotations

from functools import cached_property

import numpy as np
from sklearn.cluster import KMeans
from sklearn.feature_extraction.text import TfidfVectorizer

from copersona.data.records import Example, Interaction
from copersona.data.sanitize import sanitize
from copersona.facets.profile import STYLE_FEATURES, recent, style_features
from copersona.methods.writer import ProfileMethod
from copersona.store import StoreError

_FEATURE = {name: i for i, name in enumerate(STYLE_FEATURES)}
# Reviews of each side shown to an LLM writer.
WRITER_REVIEWS = 3


def _document(interactions: list[Interaction]) -> str:
    return " ".join(i.text for i in interactions)


def _describe_style(user: np.ndarray, others: np.ndarray) -> tuple[str, str]:
    """The writing and emotional lines: the user's value, then the representatives'."""

    def pair(name: str, scale: float = 1.0, digits: int = 0) -> str:
        return f"{user[_FEATURE[name]] * scale:.{digits}f} (others {others[_FEATURE[name]] * scale:.{digits}f})"

    writing = (
        f"Writing style: {pair('review_length')} characters per review; {pair('sentence_length')} words per "
        f"sentence; lexical diversity {pair('lexical_diversity', digits=2)}; {pair('punctuation_rate', 100, 1)} "
        f"punctuation marks and {pair('exclamation_rate', 1000, 1)} exclamation marks per 100/1000 characters."
    )
    emotional = (
        f"Emotional style: average rating {pair('rating_mean', digits=1)}, rating spread "
        f"{pair('rating_std', digits=1)}."
    )
    return writing, emotional


class DPL(ProfileMethod):
    name = "dpl"
    description = "A difference-aware profile against representative users (clustering medoids) + retrieved reviews."
    block_title = "How this customer differs from representative customers:"
    shows_peer_words = True
    part = "difference profile"

    @cached_property
    def profile_vectors(self) -> dict[str, np.ndarray]:
        user_ids, vectors = self.resources.store.profile_vectors()
        if not user_ids:
            raise StoreError(f"{self.resources.store.path}: no profile vectors; run `copersona build` first")
        return dict(zip(user_ids, vectors))

    @cached_property
    def _representatives_memo(self) -> dict[str | None, list[str]]:
        return {}

    def representatives(self, without: str | None = None) -> list[str]:
        """Medoids of KMeans clusters of the profile embeddings, one per cluster; ``without``: clustered
        without that user's stored vector (a request whose persona is derived from a shorter profile
        must not be shaped by the stored one)."""
        if without not in self._representatives_memo:
            self._representatives_memo[without] = self._medoids(without)
        return self._representatives_memo[without]

    def _medoids(self, without: str | None) -> list[str]:
        user_ids = sorted(u for u in self.profile_vectors if u != without)
        vectors = np.vstack([self.profile_vectors[u] for u in user_ids])
        clusters = min(self.config.methods.dpl_clusters, len(user_ids))
        labels = KMeans(n_clusters=clusters, n_init=4, random_state=0).fit_predict(vectors)
        medoids = []
        for cluster in range(clusters):
            members = np.flatnonzero(labels == cluster)
            centroid = vectors[members].mean(axis=0)
            medoids.append(user_ids[members[np.argmax(vectors[members] @ centroid)]])
        return sorted(medoids)

    @cached_property
    def tfidf(self) -> TfidfVectorizer:
        profiles = self.resources.profiles
        return TfidfVectorizer(stop_words="english", sublinear_tf=True, min_df=2).fit(
            [_document(p) for p in profiles.values()]
        )

    @cached_property
    def _feature_memo(self) -> dict[tuple, tuple[np.ndarray, np.ndarray]]:
        return {}

    def _features(self, representative: str, reviews: tuple[Interaction, ...]) -> tuple[np.ndarray, np.ndarray]:
        """A representative's style vector and TF-IDF row over the reviews a request may see (memoized)."""
        key = (representative, tuple(r.item_id for r in reviews))
        if key not in self._feature_memo:
            row = self.tfidf.transform([_document(list(reviews))]).toarray().ravel()
            self._feature_memo[key] = (style_features(list(reviews)), row)
        return self._feature_memo[key]

    def compared_with(self, example: Example) -> list[tuple[str, tuple[Interaction, ...]]]:
        """The representatives nearest the user in profile space (never the user), with the reviews
        of theirs the request may see; representatives with none are passed over."""
        cutoff = self.resources.cutoff(example)
        profiles = self.resources.profiles
        persona = self.resources.persona(example)
        candidates = self.representatives(example.user_id if persona.derived else None)
        candidates = [r for r in candidates if r != example.user_id]
        vector = persona.profile_vector
        if vector is not None:  # a request without a profile vector: all representatives, in id order
            similarity = {r: float(self.profile_vectors[r] @ vector) for r in candidates}
            candidates.sort(key=lambda r: (-similarity[r], r))
        visible = ((r, tuple(cutoff.visible(profiles[r]))) for r in candidates)
        return [(r, reviews) for r, reviews in visible if reviews][: self.config.methods.dpl_compare]

    def text_key(self, example: Example) -> tuple:
        compared = tuple((r, tuple(i.item_id for i in reviews)) for r, reviews in self.compared_with(example))
        return (*super().text_key(example), compared)

    def computed_profile(self, example: Example) -> str:
        """The measured differences on the three dimensions."""
        compared = self.compared_with(example)
        if not compared:
            return ""
        features = [self._features(r, reviews) for r, reviews in compared]
        other_style = np.mean([style for style, _ in features], axis=0)
        writing, emotional = _describe_style(style_features(example.profile), other_style)
        user_terms = self.tfidf.transform([_document(example.profile)]).toarray().ravel()
        difference = user_terms - np.mean([terms for _, terms in features], axis=0)
        terms = self.tfidf.get_feature_names_out()
        count = self.config.methods.dpl_terms
        more = [terms[i] for i in np.argsort(-difference, kind="stable")[:count] if difference[i] > 0]
        fewer = [terms[i] for i in np.argsort(difference, kind="stable")[:count] if difference[i] < 0]
        semantic = f"Semantic style: writes more than the others about {', '.join(more) or 'nothing in particular'}"
        semantic += f"; less about {', '.join(fewer)}." if fewer else "."
        return f"Compared with {len(compared)} representative reviewers:\n{writing}\n{emotional}\n{semantic}"

    def writer_prompt(self, example: Example) -> str:
        own = "\n".join(sanitize(i.profile_line()) for i in recent(example.profile, WRITER_REVIEWS))
        others = "\n".join(
            sanitize(i.profile_line()) for _, reviews in self.compared_with(example) for i in recent(list(reviews), 1)
        )
        return (
            "Compare the target customer's reviews with other customers' reviews. In three sentences, "
            "say how the target customer differs in writing style, emotional style (sentiment, ratings) "
            f"and semantic style (topics, aspects).\nTarget customer:\n<data>\n{own}\n</data>\n"
            f"Other customers:\n<data>\n{others}\n</data>"
        )
