"""The one interface every method of the harness implements, and the resources methods share.

A method turns an example into the generator's input (chat messages and an answer budget), or,
for the no-LLM reference points, directly into a prediction. It never calls the generator for the
final answer itself: the harness batches, caches and times generation the same way for all.
"""

from __future__ import annotations

import functools
import math
import statistics
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from functools import cached_property
from typing import ClassVar

from copersona.backends.embed import Embedder
from copersona.backends.llm import LLM
from copersona.config import HarnessConfig
from copersona.data.records import Example, Interaction
from copersona.data.sanitize import SpecialTokens
from copersona.facets.profile import word_count
from copersona.graph.personas import Personas, RequestPersona
from copersona.retrieval import (
    DroppedText,
    EvidenceCutoff,
    HistoryRetriever,
    PeerIndex,
    TokenBudget,
    Truncation,
    load_retriever,
)
from copersona.retrieval.history import BM25Retriever
from copersona.retrieval.review_vectors import ReviewVectors
from copersona.store import Store

Message = dict[str, str]

# Distinct texts whose token counts are remembered (a few MB at most).
TOKEN_COUNT_CACHE = 1 << 18


def profile_key(profile: list[Interaction]) -> tuple:
    """Identifies a profile: a contiguous run of a user's history, fixed by its user, length and ends
    (a history up to some point, or its most recent reviews under a history cap)."""
    if not profile:
        return ()
    return (profile[0].user_id, len(profile), profile[0].item_id, profile[-1].item_id, profile[-1].timestamp)


def example_key(example: Example) -> str:
    """Identifies an example across methods and runs: user and target item."""
    return f"{example.user_id}/{example.target.item_id}"


@dataclass
class MethodInput:
    """What a method built for one example, with everything ``--explain`` shows."""

    method: str
    example: str
    messages: list[Message]
    max_tokens: int
    prediction: str | None = None  # set by reference methods, which use no generator
    rating: float | None = None  # a reference method's rating (the rating task), set with ``prediction``
    parts: dict[str, str] = field(default_factory=dict)  # named components, in prompt order
    truncations: list[Truncation] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # fallbacks taken (no peers, empty history, ...)
    dropped: list[DroppedText] = field(default_factory=list)  # other users' texts the evidence cutoff kept out

    def to_dict(self) -> dict:
        return {
            "method": self.method,
            "example": self.example,
            "messages": self.messages,
            "max_tokens": self.max_tokens,
            "prediction": self.prediction,
            "rating": self.rating,
            "parts": self.parts,
            "truncations": [t.to_dict() for t in self.truncations],
            "notes": self.notes,
            "dropped": [d.to_dict() for d in self.dropped],
        }


def review_words(interactions: list[Interaction]) -> list[int]:
    return [word_count(i.text) for i in interactions if i.text]


class Resources:
    """What methods share, loaded lazily once: store records, tokenizer, retriever, peers, models.

    ``count_tokens`` and ``context_window`` are the generator's, so budgets are in its tokens.
    """

    def __init__(
        self,
        store: Store,
        config: HarnessConfig,
        *,
        count_tokens: Callable[[str], int],
        context_window: int,
        embedder: Callable[[], Embedder],
        llm: Callable[[], LLM] | None = None,
        special_tokens: Iterable[str] = (),
    ):
        self.store = store
        self.config = config
        # The generator's own control tokens, removed from every message a method builds.
        self.special_tokens = SpecialTokens(special_tokens)
        # Memoized: a stored text (a review, a peer's package) is counted once, whichever request places it.
        self.count_tokens = functools.lru_cache(maxsize=TOKEN_COUNT_CACHE)(count_tokens)
        self.context_window = context_window
        self._embedder_factory = embedder
        self._llm_factory = llm

    @cached_property
    def embedder(self) -> Embedder:
        return self._embedder_factory()

    @cached_property
    def llm(self) -> LLM:
        if self._llm_factory is None:
            raise RuntimeError("this method needs the generator, and none was given")
        return self._llm_factory()

    @cached_property
    def bm25(self) -> BM25Retriever:
        """The one BM25 retriever (and its per-profile indexes) every method shares."""
        return BM25Retriever()

    @cached_property
    def retriever(self) -> HistoryRetriever:
        """The configured self-history retriever."""
        name = self.config.retrieval.retriever
        return self.bm25 if name == "bm25" else load_retriever(name, lambda: self.embedder)

    @cached_property
    def peers(self) -> PeerIndex:
        return PeerIndex(self.store, self.config.peers.quotes)

    @cached_property
    def personas(self) -> Personas:
        """Each request's place in the graph: the stored persona, or one derived from its profile."""
        return Personas(
            self.store,
            self.config,
            lambda: self.embedder,
            lambda user: self.peers.neighbours(user, None),
            lambda: self.profiles,
        )

    def persona(self, example: Example) -> RequestPersona:
        return self.personas.of(example)

    @cached_property
    def review_vectors(self) -> ReviewVectors:
        """Every persona profile review embedded (stored once per data and embedder)."""
        return ReviewVectors(self.store, self.profiles, self.embedder)

    @cached_property
    def profiles(self) -> dict[str, list[Interaction]]:
        """Every user's persona profile (before the held-out block): what peers may show of themselves,
        as far as a request's :meth:`cutoff` allows."""
        return self.store.profiles()

    def cutoff(self, example: Example) -> EvidenceCutoff:
        """What of other users' evidence a request for ``example`` may see (``[harness.peers]``)."""
        return EvidenceCutoff.for_target(example.target, self.config.peers)

    @cached_property
    def population_words(self) -> int:
        """Median review length over all profiles: the length target when a method knows no user."""
        words = [w for profile in self.profiles.values() for w in review_words(profile)]
        return int(statistics.median(words)) if words else 60

    def target_words(self, profile: list[Interaction] | None) -> int:
        """The user's median review length (the population's without a profile)."""
        words = review_words(profile or [])
        return int(statistics.median(words)) if words else self.population_words

    def answer_tokens(self, words: int) -> int:
        g = self.config.generation
        return max(g.min_new_tokens, min(g.max_new_tokens, math.ceil(words * g.tokens_per_target_word)))

    def budget(self, answer_tokens: int) -> TokenBudget:
        return TokenBudget.for_window(self.count_tokens, self.config.budget, self.context_window, answer_tokens)


class Method(ABC):
    """One way of turning an example into generator input (a row of the paper's tables)."""

    name: ClassVar[str]
    description: ClassVar[str]
    uses_generator: ClassVar[bool] = True
    # "baseline" (a method of the field), "ours" (CoPersona and its variants), or "reference" (no LLM).
    role: ClassVar[str] = "baseline"
    # The personalizer whose soft prompt goes before this method's input ("persona": the gated graph
    # encoder; "difference": DEP's), or None. Such a method needs a trained model (copersona train).
    soft_prompt: ClassVar[str | None] = None
    # Puts other users' reviews themselves into its input (copy-peer, DPL's representatives):
    # refused where [harness.peers] quotes = "none".
    shows_peer_words: ClassVar[bool] = False
    # The tasks it answers: "review" (write the target's review) and/or "rating" (predict its stars).
    tasks: ClassVar[tuple[str, ...]] = ("review",)

    def __init__(self, resources: Resources):
        self.resources = resources
        self.config = resources.config
        # Generates an intermediate text (a draft) with the method's generator and the harness's
        # decoding: (messages, max_tokens) -> text. Set by the runtime; only multi-pass methods use it.
        self.draft: Callable[[list[Message], int], str] | None = None

    def prepare(self, examples: list[Example]) -> None:  # noqa: B027 - most methods need nothing offline
        """Precompute what ``inputs`` needs for these examples (offline, batched)."""

    @abstractmethod
    def inputs(self, example: Example) -> MethodInput:
        """The generator input for one example (or, for reference methods, the prediction)."""

    def selects(self, example: Example) -> bool:
        """Whether the answer to ``example`` is chosen by :meth:`answer` after generation (then it is not
        streamed piece by piece: the generated text may not be the answer)."""
        return False

    def answer(
        self, example: Example, inp: MethodInput, generated: str, max_tokens: int | None = None
    ) -> tuple[str, list[str]]:
        """The final answer of a selecting method from the generated text, and notes saying which
        candidate it kept; under a request's answer cap (``max_tokens``) only candidates within it."""
        return generated, []

    def training_input(self, example: Example) -> MethodInput:
        """The input a fine-tuning step trains on: the method's input (a multi-pass method's first pass)."""
        return self.inputs(example)
