"""No-LLM reference points of the rating task, fitted on training ratings only.

Training ratings are every rated interaction that is no validation or test target
(:meth:`~copersona.store.Store.training_ratings`), and a request for a target of day t sees
only those written before day t, so neither a held-out rating nor anything later reaches them:

* ``user-mean``: the user's mean rating over their profile;
* ``item-mean``: the item's mean rating by other users;
* ``rating-mf``: biased matrix factorization (global mean, user and item biases, latent factors;
  full-batch Adam on squared error). The examples are cut into ``rating_mf_blocks`` blocks by target
  day; each block's model is fitted on the ratings before the block's first day.

Each falls back to the global mean of the ratings it may see (recorded in the notes). Unlike the
LLM methods, whose inputs never hold another user's review of the target item, item-mean and
rating-mf use other users' earlier ratings of it: that is what collaborative filtering is.
"""

from __future__ import annotations

import bisect
import statistics
from abc import abstractmethod
from collections import defaultdict
from functools import cached_property

import numpy as np
import torch

from copersona.data.records import Example
from copersona.methods.base import Method, MethodInput, example_key
from copersona.retrieval.cutoff import day

# The scale predictions are clipped to.
LOWEST, HIGHEST = 1.0, 5.0


class RatingReference(Method):
    """A rating from training ratings alone; subclasses say how."""

    uses_generator = False
    role = "reference"
    tasks = ("rating",)

    @cached_property
    def ratings(self) -> list[tuple[str, str, int, float]]:
        """(user, item, day, rating) of the training ratings, by day."""
        return [(u, i, day(t), r) for u, i, t, r in self.resources.store.training_ratings()]

    def __init__(self, resources):
        super().__init__(resources)
        self.withheld: set[tuple[str, str]] = set()  # (user, item) ratings the requests' profiles do not hold

    def prepare(self, examples: list[Example]) -> None:
        """The training ratings the examples' profiles leave out (a history cap) are left out of every
        estimate, the global mean included."""
        shown = {(e.user_id, i.item_id) for e in examples for i in e.profile}
        users = {e.user_id for e in examples}
        withheld = {(u, i) for u, i, _, _ in self.ratings if u in users and (u, i) not in shown}
        if withheld != self.withheld:
            self.withheld = withheld
            for derived in ("_running_mean", "_by_item"):  # computed from the visible ratings
                self.__dict__.pop(derived, None)

    def visible_ratings(self) -> list[tuple[str, str, int, float]]:
        return [row for row in self.ratings if (row[0], row[1]) not in self.withheld]

    @cached_property
    def _running_mean(self) -> tuple[list[int], list[float]]:
        """Days, and the global mean of every rating up to and including each."""
        days, means, total = [], [], 0.0
        for n, (_, _, d, r) in enumerate(self.visible_ratings(), 1):
            total += r
            days.append(d)
            means.append(total / n)
        return days, means

    def global_mean(self, before_day: int) -> float | None:
        days, means = self._running_mean
        seen = bisect.bisect_left(days, before_day)
        return means[seen - 1] if seen else None

    @abstractmethod
    def estimate(self, example: Example) -> tuple[float | None, str]:
        """The rating, or None with the reason (then the global mean is used)."""

    def inputs(self, example: Example) -> MethodInput:
        rating, why = self.estimate(example)
        notes = []
        if rating is None:
            rating = self.global_mean(day(example.target.timestamp))
            notes.append(f"{why}: the global mean rating before the target")
        if rating is None:
            rating = (LOWEST + HIGHEST) / 2
            notes.append("no rating before the target at all: the middle of the scale")
        rating = float(np.clip(rating, LOWEST, HIGHEST))
        return MethodInput(
            method=self.name,
            example=example_key(example),
            messages=[],
            max_tokens=0,
            prediction=f"{round(rating):g}",
            rating=rating,
            notes=notes,
        )


class UserMean(RatingReference):
    name = "user-mean"
    description = "No LLM: the user's mean rating over their profile."

    def estimate(self, example: Example) -> tuple[float | None, str]:
        ratings = [i.rating for i in example.profile if i.rating is not None]
        return (statistics.fmean(ratings), "") if ratings else (None, "no rated profile review")


class ItemMean(RatingReference):
    name = "item-mean"
    description = "No LLM: the item's mean rating by other users before the target."

    @cached_property
    def _by_item(self) -> dict[str, list[tuple[int, str, float]]]:
        found: dict[str, list[tuple[int, str, float]]] = defaultdict(list)
        for user, item, d, rating in self.visible_ratings():
            found[item].append((d, user, rating))
        return found

    def estimate(self, example: Example) -> tuple[float | None, str]:
        before = day(example.target.timestamp)
        ratings = [
            r for d, u, r in self._by_item.get(example.target.item_id, []) if d < before and u != example.user_id
        ]
        return (statistics.fmean(ratings), "") if ratings else (None, "no earlier rating of the item")


class BiasedMF:
    """r(u, i) = mu + b_u + b_i + p_u . q_i, fitted by full-batch Adam on squared error plus L2."""

    def __init__(self, ratings: list[tuple[str, str, float]], *, factors: int, epochs: int, reg: float, seed: int = 0):
        self.users = {u: n for n, u in enumerate(sorted({u for u, _, _ in ratings}))}
        self.items = {i: n for n, i in enumerate(sorted({i for _, i, _ in ratings}))}
        users = torch.tensor([self.users[u] for u, _, _ in ratings])
        items = torch.tensor([self.items[i] for _, i, _ in ratings])
        values = torch.tensor([r for _, _, r in ratings], dtype=torch.float32)
        self.mean = float(values.mean())
        generator = torch.Generator().manual_seed(seed)
        self.p = (0.01 * torch.randn(len(self.users), factors, generator=generator)).requires_grad_()
        self.q = (0.01 * torch.randn(len(self.items), factors, generator=generator)).requires_grad_()
        self.bu = torch.zeros(len(self.users), requires_grad=True)
        self.bi = torch.zeros(len(self.items), requires_grad=True)
        optimizer = torch.optim.Adam([self.p, self.q, self.bu, self.bi], lr=0.05)
        for _ in range(epochs):
            optimizer.zero_grad()
            pu, qi, bu, bi = self.p[users], self.q[items], self.bu[users], self.bi[items]
            error = self.mean + bu + bi + (pu * qi).sum(dim=1) - values
            penalty = (pu.pow(2).sum(dim=1) + qi.pow(2).sum(dim=1) + bu.pow(2) + bi.pow(2)).mean()
            (error.pow(2).mean() + reg * penalty).backward()
            optimizer.step()

    @torch.no_grad()
    def predict(self, user: str, item: str) -> float:
        """Unknown users or items contribute no bias and no factors."""
        u, i = self.users.get(user), self.items.get(item)
        value = self.mean
        if u is not None:
            value += float(self.bu[u])
        if i is not None:
            value += float(self.bi[i])
        if u is not None and i is not None:
            value += float(self.p[u] @ self.q[i])
        return value


class RatingMF(RatingReference):
    name = "rating-mf"
    description = "No LLM: biased matrix factorization of the ratings before the target (fitted per time block)."

    def __init__(self, resources):
        super().__init__(resources)
        self._models: dict[int, BiasedMF | None] = {}  # by a block's first day
        self._block_starts: list[int] = []

    def prepare(self, examples: list[Example]) -> None:
        """Cut the examples into blocks by target day (equal counts), one model per block start."""
        withheld = self.withheld
        super().prepare(examples)
        if self.withheld != withheld:
            self._models = {}
        days = sorted({day(e.target.timestamp) for e in examples})
        blocks = min(self.config.methods.rating_mf_blocks, len(days))
        self._block_starts = sorted({days[(len(days) * b) // blocks] for b in range(blocks)}) if days else []

    def _model(self, before_day: int) -> BiasedMF | None:
        if before_day not in self._models:
            seen = [(u, i, r) for u, i, d, r in self.visible_ratings() if d < before_day]
            m = self.config.methods
            self._models[before_day] = (
                BiasedMF(seen, factors=m.rating_mf_factors, epochs=m.rating_mf_epochs, reg=m.rating_mf_reg)
                if seen
                else None
            )
        return self._models[before_day]

    def estimate(self, example: Example) -> tuple[float | None, str]:
        target_day = day(example.target.timestamp)
        position = bisect.bisect_right(self._block_starts, target_day)
        start = self._block_starts[position - 1] if position else target_day  # an example not prepared: its own day
        model = self._model(start)
        if model is None:
            return None, "no rating before the block"
        return model.predict(example.user_id, example.target.item_id), ""
