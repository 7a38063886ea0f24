"""Graph structure, node orders and the node-sequence ``graph`` architecture."""
import pytest
import torch

from ssmkit.models import BackboneConfig, DataSpec, create_model
from ssmkit.models.graph import GraphModel
from ssmkit.models.graph_structure import (Graph, GraphSpec, bfs_order, degree_order, inverse_order, node_order,
                                           random_order)
from ssmkit.tasks.graphs import load_graph


@pytest.fixture(scope="module")
def karate() -> Graph:
    return load_graph("karate")[0]


def two_components() -> Graph:
    # a path 0-1-2-3 with a chord 1-3, and a triangle 4-5-6 with a tail 6-7
    return Graph.from_edges(8, [(0, 1), (1, 2), (2, 3), (1, 3), (4, 5), (5, 6), (4, 6), (6, 7)], "two")


def assert_valid_bfs(graph: Graph, order: list[int], root: int | None = None) -> None:
    """A BFS order of every component: a new component starts only when the placed nodes' are
    closed; within one, each node's earliest-placed neighbour (its BFS parent) is placed no earlier
    than the previous node's parent (the characterization of BFS orderings), so distances from the
    root never decrease."""
    assert sorted(order) == list(range(graph.n_nodes))
    nbrs = graph.neighbours()
    pos = {v: k for k, v in enumerate(order)}
    if root is not None:
        assert order[0] == root
    dist: dict[int, int] = {}
    last_parent = 0
    for k, v in enumerate(order):
        placed = [pos[u] for u in nbrs[v] if pos[u] < k]
        if not placed:  # a new root: every neighbour of the nodes placed so far is placed
            assert all(pos[u] < k for w in order[:k] for u in nbrs[w]), f"node {v} starts a component too early"
            dist[v], last_parent = 0, k
            continue
        assert min(placed) >= last_parent, f"node {v}: its parent comes before the previous node's parent"
        last_parent = min(placed)
        dist[v] = dist[order[last_parent]] + 1
        assert dist[v] >= dist[order[k - 1]], f"node {v}: BFS distance decreased"


def test_graph_from_edges_merges_and_validates():
    g = Graph.from_edges(3, [(0, 1), (1, 0), (1, 2), (0, 1)])
    assert g.n_edges == 2 and g.degree().tolist() == [1, 2, 1]
    assert g.edges.tolist() == [[0, 1, 1, 2], [1, 0, 2, 1]]
    assert torch.equal(g.adjacency(), g.adjacency().T)
    p = g.mean_operator()
    assert torch.allclose(p.sum(1), torch.ones(3))
    with pytest.raises(ValueError, match="self-loop"):
        Graph.from_edges(3, [(1, 1)])
    with pytest.raises(ValueError, match="outside 0..2"):
        Graph.from_edges(3, [(0, 3)])
    with pytest.raises(ValueError, match="at least one node"):
        Graph.from_edges(0, [])
    with pytest.raises(ValueError, match="permutation"):
        g.relabel(torch.tensor([0, 0, 1]))
    with pytest.raises(ValueError, match="snapshots"):
        GraphSpec(g, 0)


def test_degree_order_is_sorted_with_ties_by_index_or_shuffled(karate):
    deg = karate.degree()
    order = degree_order(karate)
    assert sorted(order.tolist()) == list(range(34))
    assert (deg[order].diff() >= 0).all()
    for a, b in zip(order[:-1].tolist(), order[1:].tolist()):
        assert deg[a] < deg[b] or a < b  # ties by index
    shuffled = [degree_order(karate, torch.Generator().manual_seed(s)) for s in range(3)]
    for o in shuffled:
        assert sorted(o.tolist()) == list(range(34)) and (deg[o].diff() >= 0).all()
    assert not all(torch.equal(o, order) for o in shuffled)  # ties broken at random
    assert order[-1] == 33 and order[-2] == 0  # Mr. Hi (16) and the officer (17) come last


@pytest.mark.parametrize("root", [None, 5])
def test_bfs_order_is_a_valid_bfs(karate, root):
    order = bfs_order(karate, root)
    expected_root = int(karate.degree().argmax()) if root is None else root
    assert_valid_bfs(karate, order.tolist(), expected_root)
    for s in range(3):  # augmentation: random root, shuffled neighbours, still a BFS
        assert_valid_bfs(karate, bfs_order(karate, None, torch.Generator().manual_seed(s)).tolist())


def test_bfs_visits_every_component_and_checks_its_root():
    g = two_components()
    order = bfs_order(g).tolist()
    assert order[:4] == [1, 0, 2, 3] and set(order[4:]) == {4, 5, 6, 7} and order[4] == 6
    assert_valid_bfs(g, order, 1)
    assert_valid_bfs(g, bfs_order(g, 7).tolist(), 7)
    with pytest.raises(ValueError, match="BFS root 8"):
        bfs_order(g, 8)
    with pytest.raises(ValueError, match="unknown node order 'zigzag'"):
        node_order(g, "zigzag")


def test_random_order_and_inverse(karate):
    a, b = (random_order(karate, torch.Generator().manual_seed(1)) for _ in range(2))
    assert torch.equal(a, b) and sorted(a.tolist()) == list(range(34))
    orders = torch.stack([torch.randperm(7) for _ in range(3)])
    inv = inverse_order(orders)
    x = torch.randn(3, 7)
    assert torch.equal(x.gather(1, orders).gather(1, inv), x)


def _model(graph: Graph, snapshots: int = 1, mixer: str = "s4d", d_input: int = 3, **cfg) -> GraphModel:
    torch.manual_seed(0)
    spec = DataSpec("tag", 4, d_input=d_input, graph=GraphSpec(graph, snapshots))
    return create_model("graph", BackboneConfig(d_model=8, n_layers=2, mixer=mixer), spec, **cfg).double().eval()


def test_node_layers_scatter_outputs_back_to_node_order(karate):
    model = _model(karate)
    h = torch.randn(5, 34, 8, dtype=torch.float64)
    orders = torch.stack([torch.randperm(34) for _ in range(5)])
    assert torch.equal(model._node_layers(h, None, [], orders), h)  # gather + scatter is the identity
    pointwise = torch.nn.Linear(8, 8).double()
    block = lambda x, m: pointwise(x)  # noqa: E731  (a layer that does not mix positions)
    assert torch.allclose(model._node_layers(h, None, [block], orders), pointwise(h), rtol=0, atol=1e-14)


@pytest.mark.parametrize("order, local, bidirectional", [
    ("degree", "mean", True), ("degree", "gnn", False), ("bfs", "gnn", True), ("bfs", "mean", False),
], ids=["degree-mean-bi", "degree-gnn-causal", "bfs-gnn-bi", "bfs-mean-causal"])
def test_relabelling_nodes_permutes_the_outputs(karate, order, local, bidirectional):
    """Deterministic orders are equivariant: renaming node order[k] to k (after a random renaming)
    gives the same node sequence, so every node gets the same output under its new name."""
    g0 = karate.relabel(torch.randperm(34, generator=torch.Generator().manual_seed(3)))
    cfg = dict(order=order, local=local, bidirectional=bidirectional, hops=2)
    m0 = _model(g0, **cfg)
    pi = inverse_order(m0.order)  # node v -> its position in m0's order
    g1 = g0.relabel(pi)
    m1 = _model(g1, **cfg)
    m1.load_state_dict(m0.state_dict())
    assert torch.equal(m1.order, torch.arange(34))  # the renamed graph's order is the identity
    x0 = torch.randn(2, 34, 3, dtype=torch.float64)
    x1 = torch.empty_like(x0)
    x1[:, pi] = x0
    y0, y1 = m0(x0), m1(x1)
    assert torch.allclose(y1[:, pi], y0, rtol=0, atol=1e-12)
    assert not torch.allclose(y1, y0, atol=1e-3)  # the renaming did move the outputs


def test_temporal_time_mode_is_equivariant_to_any_relabelling(karate):
    pi = torch.randperm(34, generator=torch.Generator().manual_seed(4))
    m0 = _model(karate, snapshots=3, temporal="time")
    m1 = _model(karate.relabel(pi), snapshots=3, temporal="time")
    m1.load_state_dict(m0.state_dict())
    x0 = torch.randn(2, 3, 34, 3, dtype=torch.float64)
    x1 = torch.empty_like(x0)
    x1[:, :, pi] = x0
    y0, y1 = m0(x0.flatten(1, 2)).unflatten(1, (3, 34)), m1(x1.flatten(1, 2)).unflatten(1, (3, 34))
    assert torch.allclose(y1[:, :, pi], y0, rtol=0, atol=1e-12)


@pytest.mark.parametrize("temporal", ["time", "time_nodes"])
def test_temporal_outputs_never_see_later_snapshots(temporal):
    g = two_components()
    model = _model(g, snapshots=4, temporal=temporal, mixer="mamba", bidirectional=True)
    x = torch.randn(1, 4 * 8, 3, dtype=torch.float64)
    y = model(x)
    x2 = x.clone()
    x2[:, 2 * 8:] += 1.0  # change snapshots 2 and 3
    y2 = model(x2)
    assert torch.allclose(y2[:, : 2 * 8], y[:, : 2 * 8], rtol=0, atol=1e-12)
    assert not torch.allclose(y2[:, 2 * 8:], y[:, 2 * 8:], atol=1e-6)
    if temporal == "time_nodes":  # node layers mix a snapshot: a change at one node reaches the others
        x3 = x.clone()
        x3[:, 3 * 8 + 7] += 1.0
        assert not torch.allclose(model(x3)[:, 3 * 8: 3 * 8 + 4], y[:, 3 * 8: 3 * 8 + 4], atol=1e-9)


def test_augmentation_draws_orders_in_training_only(karate):
    model = _model(karate, order="random")
    x = torch.randn(1, 34, 3, dtype=torch.float64)
    assert torch.equal(model(x), model(x))  # eval: the fixed permutation of order_seed
    model.train()
    torch.manual_seed(1)
    a = model.node_orders(3)
    assert len({tuple(r.tolist()) for r in a}) == 3  # one order per example
    torch.manual_seed(1)
    assert torch.equal(model.node_orders(3), a)  # the run's seed fixes them
    model.cfg.augment = False
    assert torch.equal(model.node_orders(2), model.order.expand(2, -1))


def test_padded_nodes_do_not_change_real_nodes(karate):
    model = _model(karate, mixer="mamba", order="bfs")
    x = torch.randn(1, 34, 3, dtype=torch.float64)
    mask = torch.ones(1, 34, dtype=torch.bool)
    mask[0, [3, 17]] = False
    y = model(x, mask)
    x2 = x.clone()
    x2[0, [3, 17]] = 5.0
    # with hops=0 only the mixer sees the nodes; the masked ones must not reach the others
    model0 = _model(karate, mixer="mamba", order="bfs", hops=0)
    assert torch.allclose(model0(x2, mask)[mask], model0(x, mask)[mask], rtol=0, atol=1e-12)
    assert y.shape == (1, 34, 4)


def test_bad_configs_and_inputs_are_named(karate):
    for cfg, field in [({"order": "zigzag"}, "order"), ({"local": "conv"}, "local"), ({"hops": -1}, "hops"),
                       ({"combine": "mul"}, "combine"), ({"temporal": "space"}, "temporal"),
                       ({"root": -2}, "root"), ({"root": 34}, "root")]:
        with pytest.raises(ValueError, match=f"'{field}'"):
            _model(karate, **cfg)
    with pytest.raises(ValueError, match="needs a graph task"):
        create_model("graph", BackboneConfig(d_model=8, n_layers=1), DataSpec("tag", 2, d_input=3))
    with pytest.raises(ValueError, match="per node"):
        create_model("graph", BackboneConfig(d_model=8, n_layers=1),
                     DataSpec("classify", 2, d_input=3, graph=GraphSpec(karate)))
    model = _model(karate)
    with pytest.raises(ValueError, match=r"\(B, 34, 3\)"):
        model(torch.randn(1, 33, 3, dtype=torch.float64))
    with pytest.raises(ValueError, match="float"):
        model(torch.zeros(1, 34, dtype=torch.long))
    with pytest.raises(ValueError, match="mask"):
        model(torch.randn(1, 34, 3, dtype=torch.float64), torch.ones(1, 33, dtype=torch.bool))
