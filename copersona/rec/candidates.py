"""First-stage candidate generators: collaborative-filtering models that retrieve the items a reranker reorders.

PERSONA4REC (Sec. 4.1.2) reranks candidates retrieved by two CF models, BPR-MF and LightGCN. Both are
taken from field libraries rather than written here:

- :class:`BPRGenerator`: matrix factorization trained with the BPR loss (Rendle et al., 2009) by
  ``implicit``'s CPU model.
- :class:`LightGCNGenerator`: LightGCN (He et al., 2020) from ``torch_geometric``, trained with the
  same BPR loss over its propagated embeddings.

A generator is fit on a users x items matrix of training interactions (a nonzero entry means the user
interacted with the item; values such as ratings are read as 1) and then scores every item for a
batch of users; :meth:`CandidateGenerator.top` turns the scores into a ranked candidate list that leaves
out the items each user already interacted with.

``implicit`` and ``torch_geometric`` are imported when a model is fit, so this module (and its
settings, which the config imports) loads without them.
"""

from __future__ import annotations

import warnings
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import scipy.sparse as sp

from copersona.config import _help


@dataclass
class BPRSettings:
    """BPR-MF candidate generator (``implicit``'s CPU BayesianPersonalizedRanking).

    Defaults: chosen on the validation targets of Amazon 2014 Musical Instruments (leave-one-out by time;
    about 5 training interactions per user), where ``implicit``'s own defaults (100 iterations, rate and
    regularization 0.01) stay near random; the paper gives no CF settings."""

    factors: int = _help("Latent factors per user and item (implicit adds one item-bias factor).", ge=1, default=64)
    iterations: int = _help("Epochs of SGD over the training interactions.", ge=1, default=300)
    learning_rate: float = _help("SGD learning rate.", ge=0, default=0.05)
    regularization: float = _help("L2 regularization of the factors.", ge=0, default=0.1)
    seed: int = _help("Random seed for initialization and sampling.", default=0)


@dataclass
class LightGCNSettings:
    """LightGCN candidate generator (``torch_geometric``'s LightGCN, BPR loss, Adam).

    Defaults: checked on the same validation targets as :class:`BPRSettings`; on data this sparse, more
    epochs or a higher rate overfit and rank worse."""

    embedding_dim: int = _help("Embedding size of users and items.", ge=1, default=64)
    num_layers: int = _help("Propagation layers, L; the final embedding averages layers 0..L.", ge=0, default=3)
    epochs: int = _help("Passes over the training interactions.", ge=1, default=50)
    learning_rate: float = _help("Adam learning rate.", ge=0, default=0.005)
    batch_size: int = _help(
        "Positive interactions per step, each paired with one sampled negative.", ge=1, default=2048
    )
    weight_decay: float = _help(
        "L2 regularization of the layer-0 embeddings of a batch's users and items (the BPR loss's lambda).",
        ge=0,
        default=1e-4,
    )
    seed: int = _help("Random seed for initialization, shuffling and negative sampling.", default=0)


def _binary(train: sp.spmatrix) -> sp.csr_matrix:
    """The interaction matrix as float32 CSR with 1 wherever an entry is stored and nonzero."""
    matrix = sp.csr_matrix(train, dtype=np.float32, copy=True)
    matrix.eliminate_zeros()  # an explicit zero is not an interaction
    matrix.data[:] = 1.0
    matrix.sum_duplicates()
    matrix.data[:] = 1.0  # repeated (user, item) entries count once
    return matrix


class CandidateGenerator(ABC):
    """A CF model that scores every item for a user; :meth:`top` ranks them into candidates."""

    name: ClassVar[str]
    settings_type: ClassVar[type]

    n_users: int = 0
    n_items: int = 0

    @abstractmethod
    def fit(self, train: sp.csr_matrix) -> None:
        """Train on a (users, items) matrix whose nonzero entries are interactions (values ignored)."""

    @abstractmethod
    def scores(self, users: np.ndarray) -> np.ndarray:
        """Scores of every item for ``users``: float32, shape ``(len(users), n_items)``, higher is better."""

    def top(self, users: np.ndarray, k: int, exclude: sp.csr_matrix) -> np.ndarray:
        """The ``k`` best items for each of ``users``, best first: int64, shape ``(len(users), k)``.

        ``exclude`` is a (users, items) matrix indexed like the training matrix; an item stored
        nonzero in row ``u`` (one the user interacted with before the target) is never returned for
        ``u``. Equal scores rank by item index, lower first; positions past the user's last
        non-excluded item are -1.
        """
        users = np.asarray(users, dtype=np.int64).reshape(-1)
        if k < 0:
            raise ValueError(f"k must be >= 0, got {k}")
        if exclude.shape[1] != self.n_items:
            raise ValueError(f"exclude has {exclude.shape[1]} item columns, the model {self.n_items}")
        scores = np.array(self.scores(users), dtype=np.float64)
        scores[np.isnan(scores)] = -np.inf  # a NaN would otherwise sort unpredictably
        banned = _binary(exclude[users]).toarray().astype(bool)
        # np.lexsort sorts by its last key first and is stable: excluded items go last, then by
        # score descending, and equal scores keep item-index order.
        order = np.lexsort((-scores, banned), axis=-1)[:, :k]
        allowed = self.n_items - banned.sum(axis=1)
        order[np.arange(order.shape[1])[None, :] >= allowed[:, None]] = -1
        return order.astype(np.int64)

    def _check_fitted(self) -> None:
        if not self.n_items:
            raise RuntimeError(f"{type(self).__name__} is not fitted")


class BPRGenerator(CandidateGenerator):
    r"""BPR-MF: matrix factorization trained with Bayesian Personalized Ranking (Rendle et al., 2009).

    The score of item :math:`i` for user :math:`u` is :math:`\hat{y}_{ui} = \mathbf{p}_u^\top \mathbf{q}_i + b_i`,
    learned by SGD on sampled triples (u, i, j) to maximise :math:`\ln \sigma(\hat{y}_{ui} - \hat{y}_{uj})` minus an
    L2 penalty. ``implicit`` draws (u, i) as a random training interaction and j as the item of another random
    interaction, so negatives come in proportion to item popularity (a j the user has is skipped). Fit by
    ``implicit``'s CPU model on one thread: its SGD is lock-free across threads (Hogwild), so with more threads
    the result would depend on scheduling and a seed would not fix it.

    Shapes: ``user_factors`` (n_users, factors + 1), ``item_factors`` (n_items, factors + 1); the extra
    column is 1 for users and the bias :math:`b_i` for items.
    """

    name = "bpr"
    settings_type = BPRSettings

    def __init__(self, settings: BPRSettings | None = None):
        self.settings = settings or BPRSettings()
        self.user_factors: np.ndarray | None = None
        self.item_factors: np.ndarray | None = None

    def fit(self, train: sp.csr_matrix) -> None:
        from implicit.cpu.bpr import BayesianPersonalizedRanking

        s = self.settings
        matrix = _binary(train)
        model = BayesianPersonalizedRanking(
            factors=s.factors,
            learning_rate=s.learning_rate,
            regularization=s.regularization,
            iterations=s.iterations,
            num_threads=1,
            random_state=s.seed,
        )
        model.fit(matrix, show_progress=False)
        self.user_factors = np.asarray(model.user_factors, dtype=np.float32)
        self.item_factors = np.asarray(model.item_factors, dtype=np.float32)
        self.n_users, self.n_items = matrix.shape

    def scores(self, users: np.ndarray) -> np.ndarray:
        self._check_fitted()
        return self.user_factors[np.asarray(users, dtype=np.int64)] @ self.item_factors.T


class LightGCNGenerator(CandidateGenerator):
    r"""LightGCN (He et al., 2020): embeddings smoothed over the user-item graph, trained with BPR.

    Users are nodes :math:`0..U-1` and items :math:`U..U+I-1` of one bipartite graph with an edge in each
    direction per interaction. Each layer averages neighbours with symmetric normalization,
    :math:`\mathbf{x}^{(l+1)}_i = \sum_{j \in \mathcal{N}(i)} \mathbf{x}^{(l)}_j / \sqrt{\deg(i)\deg(j)}`, and
    the final embedding is the mean over layers, :math:`\mathbf{x}_i = \frac{1}{L+1}\sum_{l=0}^{L}
    \mathbf{x}^{(l)}_i`; the score is :math:`\hat{y}_{ui} = \mathbf{x}_u^\top \mathbf{x}_i`.

    Training: each epoch shuffles the training interactions into batches of ``batch_size``; every positive
    (u, i) is paired with one item j drawn uniformly among those u has not interacted with (redrawn while it
    is one of u's; unlike ``implicit``'s BPR, not weighted by popularity), and Adam
    minimises the mean :math:`-\ln \sigma(\hat{y}_{ui} - \hat{y}_{uj})` plus ``weight_decay`` times the
    squared norm of the batch's layer-0 embeddings (``LightGCN.recommendation_loss``). Propagation runs
    over the whole training graph at every step (full-graph, as in the paper), as one sparse product per
    layer with the normalized adjacency.

    Shapes: ``user_embedding`` (n_users, embedding_dim), ``item_embedding`` (n_items, embedding_dim), the
    propagated embeddings after training.
    """

    name = "lightgcn"
    settings_type = LightGCNSettings

    def __init__(self, settings: LightGCNSettings | None = None):
        self.settings = settings or LightGCNSettings()
        self.user_embedding: np.ndarray | None = None
        self.item_embedding: np.ndarray | None = None

    def fit(self, train: sp.csr_matrix) -> None:
        import torch
        from torch_geometric.nn.models import LightGCN

        s = self.settings
        matrix = _binary(train)
        n_users, n_items = matrix.shape
        coo = matrix.tocoo()
        pos_users = torch.as_tensor(coo.row, dtype=torch.long)
        pos_items = torch.as_tensor(coo.col, dtype=torch.long)
        # Sorted (user * n_items + item) keys of the positives: a sampled negative is checked with one search.
        positive_keys = torch.sort(pos_users * n_items + pos_items).values
        adjacency = _normalized_adjacency(matrix)

        # fork_rng: seeding must fix this fit without resetting the caller's global torch RNG.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(s.seed)
            # normalize=False: the adjacency is normalized once above, not at every layer of every step.
            model = LightGCN(n_users + n_items, s.embedding_dim, s.num_layers, normalize=False)
            optimizer = torch.optim.Adam(model.parameters(), lr=s.learning_rate)
            model.train()
            for _ in range(s.epochs):
                for batch in torch.randperm(len(pos_users)).split(s.batch_size):
                    users, items = pos_users[batch], pos_items[batch]
                    negatives = _sample_negatives(users, n_items, positive_keys)
                    out = model.get_embedding(adjacency)
                    user_out = out[users]
                    pos_rank = (user_out * out[items + n_users]).sum(dim=-1)
                    neg_rank = (user_out * out[negatives + n_users]).sum(dim=-1)
                    node_id = torch.cat([users, items + n_users, negatives + n_users]).unique()
                    loss = model.recommendation_loss(pos_rank, neg_rank, node_id=node_id, lambda_reg=s.weight_decay)
                    optimizer.zero_grad()
                    loss.backward()
                    optimizer.step()
            model.eval()
            with torch.no_grad():
                out = model.get_embedding(adjacency).numpy().astype(np.float32)
        self.user_embedding, self.item_embedding = out[:n_users], out[n_users:]
        self.n_users, self.n_items = n_users, n_items

    def scores(self, users: np.ndarray) -> np.ndarray:
        self._check_fitted()
        return self.user_embedding[np.asarray(users, dtype=np.int64)] @ self.item_embedding.T


def _normalized_adjacency(matrix: sp.csr_matrix):
    r"""The symmetrically normalized adjacency :math:`D^{-1/2} A D^{-1/2}` of the user-item graph, where
    :math:`A = [[0, R], [R^\top, 0]]` holds an edge in each direction per interaction; a torch CSR tensor
    (N, N), N = n_users + n_items. This is what ``LGConv``'s own normalization computes from an edge list
    (``gcn_norm`` without self-loops), but done once; and a CSR matrix product propagates several times
    faster on CPU than the per-edge scatter of an edge list."""
    import torch

    adjacency = sp.bmat([[None, matrix], [matrix.T, None]], format="csr", dtype=np.float32)
    degree = np.asarray(adjacency.sum(axis=1)).ravel()
    scale = np.zeros_like(degree)
    scale[degree > 0] = degree[degree > 0] ** -0.5  # a node without edges keeps a zero row
    adjacency = (sp.diags(scale) @ adjacency @ sp.diags(scale)).tocsr()
    adjacency.sort_indices()
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta")
        return torch.sparse_csr_tensor(
            torch.as_tensor(adjacency.indptr, dtype=torch.long),
            torch.as_tensor(adjacency.indices, dtype=torch.long),
            torch.as_tensor(adjacency.data, dtype=torch.float32),
            size=adjacency.shape,
            check_invariants=True,
        )


def _sample_negatives(users, n_items: int, positive_keys, rounds: int = 10):
    """One item per user drawn uniformly from all items, redrawn (up to ``rounds`` times) while it is one of
    the user's positives; a user who interacted with (nearly) every item may keep a positive."""
    import torch

    negatives = torch.randint(n_items, users.shape)
    if len(positive_keys) == 0:
        return negatives
    for _ in range(rounds):
        keys = users * n_items + negatives
        at = torch.searchsorted(positive_keys, keys).clamp(max=len(positive_keys) - 1)
        hit = positive_keys[at] == keys
        if not hit.any():
            break
        negatives[hit] = torch.randint(n_items, (int(hit.sum()),))
    return negatives


_GENERATORS: dict[str, type[CandidateGenerator]] = {g.name: g for g in (BPRGenerator, LightGCNGenerator)}


def generator(name: str, settings=None) -> CandidateGenerator:
    """The candidate generator called ``name`` ("bpr" or "lightgcn"), unfitted, with ``settings``
    (its settings dataclass; ``None`` for the defaults)."""
    try:
        cls = _GENERATORS[name]
    except KeyError:
        raise ValueError(f"unknown candidate generator {name!r}; choose from {sorted(_GENERATORS)}") from None
    if settings is not None and not isinstance(settings, cls.settings_type):
        raise TypeError(f"{name} takes {cls.settings_type.__name__}, got {type(settings).__name__}")
    return cls(settings)
