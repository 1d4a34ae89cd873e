"""The parametric branch's user encoders (Eqs. 9-12, DEP) and their graph inputs, on toy and real graphs."""

from __future__ import annotations

import copy
from dataclasses import dataclass, replace

import numpy as np
import pytest
import torch

pytest.importorskip("torch_geometric", reason="needs torch_geometric")

from copersona.config import PersonalizerSettings  # noqa: E402
from copersona.facets.records import RELIABILITY_LEVELS  # noqa: E402
from copersona.model.encoder import (  # noqa: E402
    CrossFacetAttention,
    DifferenceEncoder,
    GatedFacetConv,
    MeanOfNeighbours,
    PersonaEncoder,
)
from copersona.model.graph_inputs import PersonaGraph, anchor_embeddings, anchor_neighbour_edges  # noqa: E402
from copersona.model.personalizer import Personalizer  # noqa: E402
from copersona.store import Store  # noqa: E402

N, M, D, OUT = 7, 3, 8, 6
# In-neighbours of each user (row 0 of edge_index: the neighbour; row 1: the user it informs).
# User 5 informs others but has no neighbours itself; user 6 is fully isolated; edges are asymmetric.
NEIGHBOURS = {0: [1, 2], 1: [0], 2: [0, 1, 3], 3: [4], 4: [0, 1, 2, 3], 5: [], 6: []}
ISOLATED = [u for u, vs in NEIGHBOURS.items() if not vs]


def _edges(neighbours: dict[int, list[int]]) -> torch.Tensor:
    pairs = [(v, u) for u, vs in neighbours.items() for v in vs]
    return torch.tensor(pairs, dtype=torch.long).T.contiguous()


@pytest.fixture
def toy():
    torch.manual_seed(0)
    x = torch.randn(N, M, D)
    conv = GatedFacetConv(D, OUT, dropout=0.5).eval()  # eval(): dropout off, or nothing is reproducible
    return x, conv, _edges(NEIGHBOURS)


def _expected(conv: GatedFacetConv, x: torch.Tensor, gamma: torch.Tensor, u: int) -> torch.Tensor:
    """Eq. 11 for user ``u`` written out by hand (own state as the mean when ``u`` has no neighbours)."""
    mean = x[NEIGHBOURS[u]].mean(dim=0) if NEIGHBOURS[u] else x[u]
    g = gamma[u].unsqueeze(-1)
    return torch.relu(conv.linear(g * x[u] + (1 - g) * mean))


# -- shapes -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ShapeCase:
    name: str
    module: object  # () -> nn.Module
    inputs: object  # (x, levels, gamma, profiles, edges) -> args
    shape: tuple[int, ...]


SHAPES = [
    ShapeCase("conv", lambda: GatedFacetConv(D, OUT), lambda x, lv, g, p, e: (x, g, e), (N, M, OUT)),
    ShapeCase(
        "attention", lambda: CrossFacetAttention(OUT, M, heads=2), lambda x, lv, g, p, e: (x[..., :OUT],), (N, M, OUT)
    ),
    ShapeCase(
        "persona", lambda: PersonaEncoder(D, M, hidden=OUT, heads=2), lambda x, lv, g, p, e: (x, lv, e), (N, M * OUT)
    ),
    ShapeCase(
        "persona-per-facet",
        lambda: PersonaEncoder(D, M, hidden=OUT, heads=3, per_facet_gate=True),
        lambda x, lv, g, p, e: (x, lv, e),
        (N, M * OUT),
    ),
    ShapeCase("difference", lambda: DifferenceEncoder(D, hidden=OUT), lambda x, lv, g, p, e: (p, e), (N, OUT)),
    ShapeCase("mean", lambda: MeanOfNeighbours(), lambda x, lv, g, p, e: (p, e), (N, D)),
]


@pytest.mark.parametrize("case", SHAPES, ids=lambda c: c.name)
def test_output_shapes(case):
    torch.manual_seed(0)
    x, profiles = torch.randn(N, M, D), torch.randn(N, D)
    levels, gamma = torch.randint(0, len(RELIABILITY_LEVELS), (N, M)), torch.rand(N, M)
    module = case.module().eval()
    out = module(*case.inputs(x, levels, gamma, profiles, _edges(NEIGHBOURS)))
    assert out.shape == case.shape and out.dtype == torch.float32 and torch.isfinite(out).all()
    # The encoders' declared width is what the projector is built for.
    assert getattr(module, "out_channels", out.shape[-1]) == out.shape[-1]


# -- Eq. 11 and the gate's limits ------------------------------------------------------------------


@pytest.mark.parametrize("gamma_value", [0.0, 0.3, 1.0, None], ids=["0", "0.3", "1", "random"])
def test_conv_is_eq_11(toy, gamma_value):
    x, conv, edges = toy
    if gamma_value is None:
        gamma = torch.rand(N, M, generator=torch.Generator().manual_seed(1))
    else:
        gamma = torch.full((N, M), gamma_value)
    out = conv(x, gamma, edges)
    for u in range(N):
        assert torch.allclose(out[u], _expected(conv, x, gamma, u), atol=1e-6), u


def test_gate_one_keeps_the_users_own_state(toy):
    x, conv, edges = toy
    ones = torch.ones(N, M)
    out = conv(x, ones, edges)
    assert torch.allclose(out, torch.relu(conv.linear(x)), atol=1e-6)
    for u in range(N):
        others = torch.arange(N) != u
        scrambled = x.clone()
        scrambled[others] = 100 * torch.randn(N - 1, M, D)
        assert torch.equal(conv(scrambled, ones, edges)[u], out[u]), u


def test_gate_zero_reads_only_the_neighbours(toy):
    x, conv, edges = toy
    zeros = torch.zeros(N, M)
    out = conv(x, zeros, edges)
    for u, vs in NEIGHBOURS.items():
        if not vs:
            continue
        assert torch.allclose(out[u], torch.relu(conv.linear(x[vs].mean(dim=0))), atol=1e-6), u
        changed = x.clone()
        changed[u] = 100 * torch.randn(M, D)  # no self-loops: u is not among its own neighbours
        assert torch.equal(conv(changed, zeros, edges)[u], out[u]), u


def test_per_facet_gates_mix_each_facet_separately(toy):
    x, conv, edges = toy
    gamma = torch.zeros(N, M)
    gamma[:, 1] = 1.0  # facet 1 trusts the user, the others trust the neighbours
    out = conv(x, gamma, edges)
    u = 4
    changed = x.clone()
    changed[u, 1] += 10.0  # moves only facet 1's own state...
    after = conv(changed, gamma, edges)
    assert not torch.allclose(after[u, 1], out[u, 1])  # ...which facet 1 reads
    assert torch.equal(after[u, [0, 2]], out[u, [0, 2]])  # and the neighbour-gated facets do not


def test_user_without_neighbours_keeps_their_own_state(toy):
    x, conv, edges = toy
    own = torch.relu(conv.linear(x[ISOLATED]))
    for gamma in (torch.zeros(N, M), torch.ones(N, M), torch.rand(N, M)):
        out = conv(x, gamma, edges)
        assert torch.allclose(out[ISOLATED], own, atol=1e-6)
    # Not the zero vector a mean over an empty set would give:
    assert not torch.allclose(own, torch.relu(conv.linear(torch.zeros(len(ISOLATED), M, D))))
    # Same for the DEP baseline's peer mean: an isolated user differs from nobody.
    profiles = torch.randn(N, D)
    peers = MeanOfNeighbours()(profiles, edges)
    assert torch.equal(peers[ISOLATED], profiles[ISOLATED])
    for u, vs in NEIGHBOURS.items():
        if vs:
            assert torch.allclose(peers[u], profiles[vs].mean(dim=0), atol=1e-6)


def test_graph_without_any_edge(toy):
    x, conv, _ = toy
    empty = torch.zeros(2, 0, dtype=torch.long)
    assert torch.allclose(conv(x, torch.rand(N, M), empty), torch.relu(conv.linear(x)), atol=1e-6)


def test_aggregation_ignores_neighbour_order(toy):
    x, conv, edges = toy
    gamma = torch.rand(N, M)
    reference = conv(x, gamma, edges)
    for seed in range(5):
        shuffled = edges[:, torch.randperm(edges.shape[1], generator=torch.Generator().manual_seed(seed))]
        assert torch.allclose(conv(x, gamma, shuffled), reference, atol=1e-6)


def test_relabelling_users_permutes_the_output(toy):
    x, conv, edges = toy
    gamma = torch.rand(N, M)
    perm = torch.randperm(N, generator=torch.Generator().manual_seed(3))  # new row i is old user perm[i]
    new_of_old = torch.empty_like(perm)
    new_of_old[perm] = torch.arange(N)
    out = conv(x[perm], gamma[perm], new_of_old[edges])
    assert torch.allclose(out, conv(x, gamma, edges)[perm], atol=1e-6)


@pytest.mark.parametrize("z0, expect_own", [(40.0, True), (-40.0, False)], ids=["gate~1", "gate~0"])
def test_persona_encoder_follows_the_learned_gate(toy, z0, expect_own):
    """The whole encoder: a saturated gate makes a user's vector depend only on them / only on peers."""
    x, _, edges = toy
    torch.manual_seed(0)
    encoder = PersonaEncoder(D, M, hidden=OUT, heads=2).eval()
    with torch.no_grad():
        encoder.gate.z0.fill_(z0)
        encoder.gate.raw_increments.fill_(-40.0)  # softplus(-40) ~ 4e-18: every level at sigma(z0)
    levels = torch.randint(0, len(RELIABILITY_LEVELS), (N, M))
    out = encoder(x, levels, edges)
    u = 2  # has neighbours 0, 1, 3
    own, peers = x.clone(), x.clone()
    own[u] = 5 * torch.randn(M, D)
    peers[NEIGHBOURS[u]] = 5 * torch.randn(len(NEIGHBOURS[u]), M, D)
    after_own, after_peers = encoder(own, levels, edges)[u], encoder(peers, levels, edges)[u]
    if expect_own:
        assert torch.allclose(after_peers, out[u], atol=1e-6) and not torch.allclose(after_own, out[u], atol=1e-3)
    else:
        assert torch.allclose(after_own, out[u], atol=1e-6) and not torch.allclose(after_peers, out[u], atol=1e-3)


# -- the personalizer reads only the rows' 1-hop subgraph ------------------------------------------


def _toy_graph(n: int = 30, m: int = 3, d: int = 16) -> PersonaGraph:
    generator = torch.Generator().manual_seed(7)
    states = torch.randn(n, m, d, generator=generator)
    levels = torch.randint(0, len(RELIABILITY_LEVELS), (n, m), generator=generator)
    edge_index = anchor_neighbour_edges(states.numpy(), levels.numpy(), 4)
    keep = edge_index[1] % 5 != 0  # every fifth user loses their neighbours (isolated, yet informs others)
    return PersonaGraph(
        user_ids=[f"u{i:02d}" for i in range(n)],
        facet_keys=[f"f{j}" for j in range(m)],
        states=states,
        levels=levels,
        profiles=torch.randn(n, d, generator=generator),
        edge_index=edge_index[:, keep],
    )


@pytest.fixture(scope="module")
def store(built_store):
    with Store(built_store, read_only=True) as db:
        yield db


@pytest.fixture(scope="module")
def real_graph(store):
    return PersonaGraph.from_store(store, neighbours=5)


SETTINGS = PersonalizerSettings(
    soft_prompt_length=3, projector_hidden=32, encoder_hidden=16, attention_heads=2, graph_neighbours=5
)


@pytest.mark.parametrize("graph_source", ["toy", "store"])
@pytest.mark.parametrize("kind, gate", [("persona", "shared"), ("persona", "per-facet"), ("difference", "shared")])
def test_personalizer_on_a_batch_matches_the_whole_graph(request, graph_source, kind, gate):
    graph = _toy_graph() if graph_source == "toy" else request.getfixturevalue("real_graph")
    torch.manual_seed(0)
    personalizer = Personalizer(kind, graph, hidden_size=12, settings=replace(SETTINGS, gate=gate)).eval()
    if kind == "persona":  # mid-range gates: every prompt mixes user and neighbours, so a wrong neighbourhood shows
        with torch.no_grad():
            personalizer.encoder.gate.z0.fill_(-1.0)
    n = len(graph.user_ids)
    with torch.no_grad():
        everyone = personalizer(graph, torch.arange(n))
        assert everyone.shape == (n, 3, 12)
        for rows in ([0], [n - 1, 3, 5], [3, 3, 5], [10, 11, 12, 13, 14, 15], list(range(0, n, 4))):
            batch = personalizer(graph, torch.tensor(rows))
            assert batch.shape == (len(rows), 3, 12)
            torch.testing.assert_close(batch, everyone[rows], rtol=1e-5, atol=1e-6)
    # The users differ (the comparison above is not between identical prompts).
    assert (everyone - everyone.mean(dim=0)).abs().max() > 1e-3


def test_hidden_facets_take_the_placeholder_only_for_their_own_example(real_graph):
    torch.manual_seed(0)
    personalizer = Personalizer("persona", real_graph, hidden_size=12, settings=SETTINGS).eval()
    with torch.no_grad():
        personalizer.encoder.gate.z0.fill_(-1.0)
    rows = torch.tensor([3, 3, 5])
    hidden = torch.zeros((3, len(real_graph.facet_keys)), dtype=torch.bool)
    with torch.no_grad():
        plain = personalizer(real_graph, rows)
        torch.testing.assert_close(personalizer(real_graph, rows, hidden), plain)  # nothing hidden: the same
        hidden[0, :2] = True  # the first example of user 3 hides two facets; the second example does not
        masked = personalizer(real_graph, rows, hidden)
        # What hiding means: the user's own state on those facets is the placeholder, at level none.
        graph = copy.copy(real_graph)
        graph.states, graph.levels = real_graph.states.clone(), real_graph.levels.clone()
        graph.states[3, :2], graph.levels[3, :2] = real_graph.placeholder, 0
        expected = personalizer(graph, rows[:1])
    torch.testing.assert_close(masked[0], expected[0])
    assert (masked[0] - plain[0]).abs().max() > 1e-4
    torch.testing.assert_close(masked[1:], plain[1:])
    # The real store has placeholder facets, so the hidden state is the placeholder text's embedding.
    assert real_graph.placeholder.abs().sum() > 0


def test_unknown_encoder_or_gate_is_refused():
    graph = _toy_graph()
    with pytest.raises(ValueError, match="unknown encoder"):
        Personalizer("bogus", graph, 8, SETTINGS)
    with pytest.raises(ValueError, match="neither 'shared' nor 'per-facet'"):
        Personalizer("persona", graph, 8, PersonalizerSettings(gate="sometimes"))


# -- the graph inputs from a real store -------------------------------------------------------------


@pytest.mark.parametrize("k", [0, 1, 5, 100])
def test_persona_graph_from_the_real_store(store, k):
    graph = PersonaGraph.from_store(store, neighbours=k)
    schema_keys = [f.key for f in store.schema().facets]
    n, m = len(graph.user_ids), len(schema_keys)
    assert graph.facet_keys == schema_keys and n == len(set(graph.user_ids)) > 1
    assert graph.user_ids == sorted(graph.user_ids) and set(graph.user_ids) <= set(store.user_ids())
    d = graph.states.shape[-1]
    assert graph.states.shape == (n, m, d) and graph.states.dtype == torch.float32
    assert graph.levels.shape == (n, m) and graph.levels.dtype == torch.int64
    assert int(graph.levels.min()) >= 0 and int(graph.levels.max()) < len(RELIABILITY_LEVELS)
    assert graph.profiles.shape == (n, d) and graph.profiles.dtype == torch.float32
    assert torch.isfinite(graph.states).all() and torch.isfinite(graph.profiles).all()
    # Row i of every tensor is user i: compare against the store's own per-facet tables.
    for j, key in enumerate(schema_keys):
        ids, vectors, labels = store.facet_layer(key)
        assert ids == graph.user_ids
        assert np.allclose(graph.states[:, j].numpy(), vectors)
        assert [RELIABILITY_LEVELS[level] for level in graph.levels[:, j].tolist()] == labels

    edges = graph.edge_index
    assert edges.shape[0] == 2 and edges.dtype == torch.int64
    assert edges.numel() == 0 or (int(edges.min()) >= 0 and int(edges.max()) < n)
    assert not bool((edges[0] == edges[1]).any()), "self-loop"
    pairs = set(map(tuple, edges.T.tolist()))
    assert len(pairs) == edges.shape[1], "duplicate edge"
    in_degree = torch.bincount(edges[1], minlength=n)
    assert int(in_degree.max()) <= k
    # min_similarity is -1: every user gets min(k, n - 1) neighbours, the top ones by anchor cosine.
    assert torch.equal(in_degree, torch.full((n,), min(k, n - 1)))
    anchors = anchor_embeddings(graph.states.numpy(), graph.levels.numpy())
    cosine = anchors @ anchors.T
    np.fill_diagonal(cosine, -np.inf)
    for u in range(n):
        chosen = edges[0, edges[1] == u].tolist()
        if chosen:
            worst_chosen = min(cosine[u, v] for v in chosen)
            best_left = max((cosine[u, v] for v in range(n) if v != u and v not in chosen), default=-np.inf)
            assert worst_chosen >= best_left - 1e-5, u


def test_anchor_is_the_mean_of_observed_facets():
    states = np.array([[[3.0, 0.0], [0.0, 4.0], [5.0, 5.0]], [[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]]], dtype=np.float32)
    moderate, weak = RELIABILITY_LEVELS.index("moderate"), RELIABILITY_LEVELS.index("weak")
    levels = np.array([[moderate, moderate + 1, weak], [weak, 0, 0]])
    anchors = anchor_embeddings(states, levels)
    # User 0: mean of the two observed facets, (1.5, 2), normalized; user 1 observes none: mean of all three.
    assert np.allclose(anchors[0], [0.6, 0.8])
    assert np.allclose(anchors[1], np.array([2.0, 2.0]) / np.linalg.norm([2.0, 2.0]))
