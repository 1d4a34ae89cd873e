"""First-stage candidate generators on the real Musical Instruments ratings, left out one by time per user."""

from __future__ import annotations

from dataclasses import fields, replace

import numpy as np
import pytest
import scipy.sparse as sp
from runner import MI

from copersona.rec.candidates import (
    BPRGenerator,
    BPRSettings,
    CandidateGenerator,
    LightGCNGenerator,
    LightGCNSettings,
    generator,
)
from copersona.rec.metrics import rank_of, ranking_metrics

pytest.importorskip("implicit")
pytest.importorskip("torch_geometric")
torch = pytest.importorskip("torch")

K = 20

# name, settings for the quick fits (determinism, tiny matrices), whether it must beat popularity at HR@20.
# BPR-MF lands near popularity on data this sparse (about 6 training interactions per user), so only
# LightGCN is held to it; both must clear random by a wide margin.
GENERATORS = [
    pytest.param("bpr", BPRSettings(iterations=20), False, id="bpr"),
    pytest.param("lightgcn", LightGCNSettings(epochs=3), True, id="lightgcn"),
]


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the machine is shared; a graph of 2,329 nodes needs no more (and runs faster)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def loo(data_dir):
    """Leave-one-out by time: each user's last rating (file order among same-day ratings) is the target,
    the ones before it train. Returns (train matrix, test users, their target items)."""
    pd = pytest.importorskip("pandas")
    ratings = pd.read_csv(
        data_dir / MI / "ratings_full.csv",
        header=None,
        names=["user", "item", "rating", "time", "helpful_num", "helpful_den"],
    )
    ratings["u"] = pd.factorize(ratings["user"], sort=True)[0]
    ratings["i"] = pd.factorize(ratings["item"], sort=True)[0]
    ratings = ratings.sort_values(["u", "time"], kind="stable")
    last = ratings.groupby("u").cumcount(ascending=False) == 0
    train, test = ratings[~last], ratings[last]
    shape = (ratings["u"].nunique(), ratings["i"].nunique())
    matrix = sp.csr_matrix((train["rating"].to_numpy(np.float32), (train["u"], train["i"])), shape=shape)
    return matrix, test["u"].to_numpy(), test["i"].to_numpy()


@pytest.fixture(scope="module")
def fitted(loo, one_thread):
    """Each generator with its default settings, fit once on the training interactions."""
    train = loo[0]
    models = {}
    for name in ("bpr", "lightgcn"):
        models[name] = generator(name)
        models[name].fit(train)
    return models


class Fixed(CandidateGenerator):
    """Given scores, no model: exercises :meth:`CandidateGenerator.top` alone."""

    name = "fixed"

    def __init__(self, scores):
        self.table = np.asarray(scores, dtype=np.float32)
        self.n_users, self.n_items = self.table.shape

    def fit(self, train):
        pass

    def scores(self, users):
        return self.table[users]


def _hr_ndcg(candidates, targets):
    metrics = ranking_metrics([rank_of(row, t) for row, t in zip(candidates, targets)], cutoffs=(K,))
    return metrics[f"hr@{K}"], metrics[f"ndcg@{K}"]


@pytest.mark.parametrize("name, quick, beats_popularity", GENERATORS)
def test_top_is_k_distinct_unseen_items_best_first(fitted, loo, name, quick, beats_popularity):
    train, users, _ = loo
    model = fitted[name]
    top = model.top(users, K, exclude=train)
    assert top.shape == (len(users), K) and top.dtype == np.int64
    assert top.min() >= 0  # every user has far more than K unseen items: no padding
    assert all(len(set(row)) == K for row in top)
    seen = train[users].tolil().rows
    assert not any(set(row) & set(items) for row, items in zip(top.tolist(), seen))
    ranked_scores = np.take_along_axis(model.scores(users), top, axis=1)
    assert np.all(np.diff(ranked_scores, axis=1) <= 0)


@pytest.mark.parametrize("name, quick, beats_popularity", GENERATORS)
def test_finds_held_out_items_better_than_chance(fitted, loo, name, quick, beats_popularity):
    train, users, targets = loo
    hr, ndcg = _hr_ndcg(fitted[name].top(users, K, exclude=train), targets)
    chance = K / train.shape[1]  # about 0.022: K random unseen items of 900
    assert hr > 3 * chance and ndcg > 0
    if beats_popularity:
        popularity = np.asarray((train > 0).sum(axis=0), dtype=np.float32)
        popular = Fixed(np.repeat(popularity, train.shape[0], axis=0)).top(users, K, exclude=train)
        assert hr > _hr_ndcg(popular, targets)[0]


@pytest.mark.parametrize("name, quick, beats_popularity", GENERATORS)
def test_same_seed_same_candidates(loo, name, quick, beats_popularity):
    train, users, _ = loo
    runs = []
    for seed in (0, 0, 1):
        model = generator(name, replace(quick, seed=seed))
        model.fit(train)
        runs.append((model.scores(users), model.top(users, K, exclude=train)))
    (scores, top), (scores_again, top_again), (other_scores, _) = runs
    np.testing.assert_array_equal(scores, scores_again)
    np.testing.assert_array_equal(top, top_again)
    assert not np.array_equal(scores, other_scores)  # the seed is what fixed them


@pytest.mark.parametrize("name, quick, beats_popularity", GENERATORS)
def test_nearly_every_item_seen(name, quick, beats_popularity):
    # User 0 has seen all items but item 4, user 1 every item, user 2 none; users 3-5 give the models data.
    seen = np.array(
        [
            [1, 1, 1, 1, 0, 1],
            [1, 1, 1, 1, 1, 1],
            [0, 0, 0, 0, 0, 0],
            [1, 0, 1, 0, 0, 0],
            [0, 1, 0, 1, 1, 0],
            [0, 0, 0, 0, 1, 1],
        ],
        dtype=np.float32,
    )
    train = sp.csr_matrix(seen * 5)  # ratings, read as interactions
    model = generator(name, quick)
    model.fit(train)
    top = model.top(np.arange(6), 4, exclude=train)
    assert top[0].tolist() == [4, -1, -1, -1]
    assert top[1].tolist() == [-1, -1, -1, -1]
    assert sorted(top[2]) == sorted(set(top[2])) and top[2].min() >= 0
    for user in (3, 4, 5):
        unseen = set(np.flatnonzero(seen[user] == 0))
        assert set(top[user][top[user] >= 0]) == unseen  # 3 or 4 unseen items: all of them, then padding


@pytest.mark.parametrize(
    "scores, exclude, k, expected",
    [
        ([[0.5, 0.5, 0.5, 0.5]], [[0, 0, 0, 0]], 3, [[0, 1, 2]]),  # ties: lower item index first
        ([[0.1, 0.9, 0.9, 0.3]], [[0, 0, 1, 0]], 3, [[1, 3, 0]]),
        ([[0.1, 0.9, 0.9, 0.3]], [[0, 1, 1, 0]], 4, [[3, 0, -1, -1]]),  # k beyond the unseen items: -1
        ([[np.nan, 0.2, -np.inf, 0.1]], [[0, 0, 0, 1]], 3, [[1, 0, 2]]),  # NaN ranks with the lowest
        ([[-np.inf, -np.inf]], [[1, 0]], 2, [[1, -1]]),  # a seen item never fills a slot, whatever the scores
        ([[0.3, 0.2, 0.1]], [[0, 0, 0]], 0, np.zeros((1, 0))),
    ],
)
def test_top_ranks_given_scores(scores, exclude, k, expected):
    top = Fixed(scores).top(np.array([0]), k, exclude=sp.csr_matrix(np.array(exclude, dtype=np.float32)))
    assert top.dtype == np.int64
    np.testing.assert_array_equal(top, np.asarray(expected, dtype=np.int64))


def test_top_reads_each_users_own_exclusions():
    scores = np.tile(np.array([0.9, 0.8, 0.7, 0.6], dtype=np.float32), (3, 1))
    exclude = sp.csr_matrix(np.array([[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 0, 0]], dtype=np.float32))
    np.testing.assert_array_equal(Fixed(scores).top(np.array([2, 0, 1]), 2, exclude), [[0, 1], [1, 2], [0, 2]])


def test_registry_and_settings():
    assert type(generator("bpr")) is BPRGenerator and type(generator("lightgcn")) is LightGCNGenerator
    assert generator("bpr", BPRSettings(factors=8)).settings.factors == 8
    with pytest.raises(ValueError, match="bpr"):
        generator("als")
    with pytest.raises(TypeError):
        generator("bpr", LightGCNSettings())
    for settings in (BPRSettings, LightGCNSettings):
        assert all(f.metadata["help"] for f in fields(settings))  # the CLI prints them


@pytest.mark.parametrize("name", ["bpr", "lightgcn"])
def test_unfitted_model_says_so(name):
    with pytest.raises(RuntimeError, match="not fitted"):
        generator(name).scores(np.array([0]))
