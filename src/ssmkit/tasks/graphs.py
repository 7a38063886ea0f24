"""Graph tasks on real graphs bundled with networkx (a torch dependency: nothing to download).

karate_club: semi-supervised node classification on Zachary's karate club (Zachary 1977; 34
members, 78 friendships), label = the club each member joined after the split ('Mr. Hi' 0,
'Officer' 1). ``n_train_per_class`` labelled nodes per class train, ``n_val`` nodes validate, the
rest test; all drawn (stratified for train) from ``split_seed``, so the split is the same for every
run. Node features: ``identity`` (one-hot node id, the featureless convention of Kipf & Welling
2017), ``structural`` (degree / max degree, clustering coefficient, core number / max core,
PageRank / max PageRank) or ``both``. One example per split: the whole graph (B = 1, L = 34),
targets IGNORE outside the split's nodes.

graph_epidemic: a temporal graph task generated on a real graph (``graph``: karate,
les_miserables, florentine, davis). An SIR epidemic starts from ``n_seeds`` uniformly drawn
infected nodes; per step, a susceptible node is infected by each infected neighbour independently
with probability ``infect`` (so with 1 - (1 - infect)^k for k infected neighbours), and an infected
node recovers with probability ``recover``. The input at step t is, per node, [infected at t,
degree / max degree]: susceptible and recovered look alike, so telling them apart needs the node's
history. The target at step t is the state at t + 1 (0 S, 1 I, 2 R): inputs (B, T*n, 2) and
targets (B, T*n), time-major (snapshot t holds positions t*n .. t*n + n - 1). ``reference_accuracy``
scores the Bayes-optimal predictor that knows the true state (the history determines it) and the
graph-blind persistence predictor (next state = current state).

Both give their model the graph through ``build_model`` (``DataSpec.graph``, a ``GraphSpec``);
the default ``sequence`` architecture ignores it (a graph-blind baseline). See docs/graphs.md.
"""
from __future__ import annotations

import dataclasses
from typing import Any, ClassVar, Iterator

import torch
from torch import Tensor

from ..config import build_config, check
from ..models import BackboneConfig, create_model
from ..models.graph_structure import Graph, GraphSpec
from .base import IGNORE, Batch, Task, TaskInfo, register_task, split_generator

GRAPHS = ("karate", "les_miserables", "florentine", "davis")
FEATURES = ("identity", "structural", "both")
S, I, R = 0, 1, 2


def _networkx(name: str) -> Any:
    try:
        import networkx as nx
    except ImportError:  # a torch dependency, so only a broken environment gets here
        raise ImportError(f"graph {name!r} comes from networkx, which is not installed; "
                          "install it with `pip install networkx`") from None
    check(name in GRAPHS, "graph", f"must be one of {GRAPHS}, got {name!r}")
    return {"karate": nx.karate_club_graph, "les_miserables": nx.les_miserables_graph,
            "florentine": nx.florentine_families_graph, "davis": nx.davis_southern_women_graph}[name]()


def load_graph(name: str) -> tuple[Graph, Any]:
    """(Graph on nodes 0..n-1 in networkx's node order, the networkx graph)."""
    G = _networkx(name)
    index = {v: i for i, v in enumerate(G.nodes())}
    return Graph.from_edges(len(index), [(index[u], index[v]) for u, v in G.edges()], name), G


def structural_features(G: Any) -> Tensor:
    """(n, 4) float: degree / max, clustering coefficient, core number / max, PageRank / max."""
    import networkx as nx

    nodes = list(G.nodes())
    cols = [dict(G.degree()), nx.clustering(G), nx.core_number(G), nx.pagerank(G)]
    x = torch.tensor([[float(c[v]) for c in cols] for v in nodes], dtype=torch.float32)
    scale = x.amax(0).clamp_min(1e-12)
    scale[1] = 1.0  # clustering is already in [0, 1]
    return x / scale


class GraphTask(Task):
    """A task on one fixed ``graph`` whose inputs hold ``snapshots`` time-major snapshots of it."""

    graph: Graph
    snapshots: int = 1

    def build_model(self, backbone: BackboneConfig, pool: str = "mean", arch: str = "sequence", **arch_cfg: Any):
        """As ``Task.build_model``, with the graph in the ``DataSpec`` (``graph`` architecture)."""
        spec = dataclasses.replace(self.info.data_spec(), graph=GraphSpec(self.graph, self.snapshots))
        return create_model(arch, backbone, spec, pool, **arch_cfg)


# ---------------------------------------------------------------- karate club node classification


@dataclasses.dataclass
class KarateConfig:
    features: str = "identity"  # identity | structural | both
    n_train_per_class: int = 2  # labelled training nodes per club
    n_val: int = 8  # validation nodes; the remaining nodes are the test set
    split_seed: int = 0  # draws the split (fixed for every run)

    FIXED_LENGTH: ClassVar[str] = "one token per node of the graph"

    def __post_init__(self) -> None:
        check(self.features in FEATURES, "features", f"must be one of {FEATURES}, got {self.features!r}")
        check(1 <= self.n_train_per_class <= 8, "n_train_per_class", f"must be in 1..8, got {self.n_train_per_class}")
        check(1 <= self.n_val <= 16, "n_val", f"must be in 1..16 (34 nodes in all), got {self.n_val}")


def node_split(labels: Tensor, n_train_per_class: int, n_val: int, seed: int) -> dict[str, Tensor]:
    """Disjoint sorted node indices per split: ``n_train_per_class`` of each class for train,
    ``n_val`` of the rest for val, the remainder for test, all drawn from ``seed``."""
    gen = torch.Generator().manual_seed(seed)
    train = []
    for c in labels.unique().tolist():
        members = (labels == c).nonzero().flatten()
        if len(members) <= n_train_per_class:
            raise ValueError(f"class {c} has {len(members)} nodes: too few for n_train_per_class={n_train_per_class}")
        train.append(members[torch.randperm(len(members), generator=gen)[:n_train_per_class]])
    train_nodes = torch.cat(train)
    rest = torch.tensor(sorted(set(range(len(labels))) - set(train_nodes.tolist())), dtype=torch.long)
    rest = rest[torch.randperm(len(rest), generator=gen)]
    if len(rest) <= n_val:
        raise ValueError(f"n_val={n_val} leaves no test nodes ({len(rest)} unlabelled nodes)")
    return {"train": train_nodes.sort().values, "val": rest[:n_val].sort().values, "test": rest[n_val:].sort().values}


@register_task("karate_club", KarateConfig)
class KarateClub(GraphTask):
    def __init__(self, **cfg: Any) -> None:
        self.cfg = c = build_config(KarateConfig, cfg)
        self.graph, G = load_graph("karate")
        clubs = sorted({G.nodes[v]["club"] for v in G.nodes()})  # ['Mr. Hi', 'Officer']
        self.labels = torch.tensor([clubs.index(G.nodes[v]["club"]) for v in G.nodes()], dtype=torch.long)
        n = self.graph.n_nodes
        parts = {"identity": [torch.eye(n)], "structural": [structural_features(G)],
                 "both": [torch.eye(n), structural_features(G)]}[c.features]
        self.features = torch.cat(parts, -1)  # (n, F)
        self.split = node_split(self.labels, c.n_train_per_class, c.n_val, c.split_seed)
        sizes = {k: len(v) for k, v in self.split.items()}
        self.info = TaskInfo(
            name="karate_club", kind="tag", length=n, source="networkx.karate_club_graph (Zachary 1977)",
            sizes={"train": 1, "val": 1, "test": 1}, n_classes=2, d_input=self.features.shape[1],
            notes=(f"one graph of {n} nodes, {self.graph.n_edges} edges; labelled nodes train/val/test "
                   f"{sizes['train']}/{sizes['val']}/{sizes['test']}; {c.features} features"),
        )

    def batches(self, split: str, batch_size: int, seed: int = 0, epoch: int = 0) -> Iterator[Batch]:
        self._check_split(split)
        targets = torch.full((1, self.graph.n_nodes), IGNORE, dtype=torch.long)
        nodes = self.split[split]
        targets[0, nodes] = self.labels[nodes]
        yield Batch(self.features[None].clone(), targets)


# ---------------------------------------------------------------- SIR epidemic on a real graph


@dataclasses.dataclass
class EpidemicConfig:
    graph: str = "karate"  # karate | les_miserables | florentine | davis
    steps: int = 16  # T snapshots per example
    infect: float = 0.5  # per infected neighbour and step
    recover: float = 0.3  # per step
    n_seeds: int = 1  # nodes infected at t = 0
    n_train: int = 2048  # examples per training epoch (generated afresh per epoch and seed)
    n_eval: int = 256  # examples in each of val and test (fixed)

    FIXED_LENGTH: ClassVar[str] = "one token per node of the graph"

    def __post_init__(self) -> None:
        check(self.graph in GRAPHS, "graph", f"must be one of {GRAPHS}, got {self.graph!r}")
        check(self.steps >= 1, "steps", f"must be >= 1, got {self.steps}")
        check(0.0 < self.infect <= 1.0, "infect", f"must be in (0, 1], got {self.infect}")
        check(0.0 <= self.recover <= 1.0, "recover", f"must be in [0, 1], got {self.recover}")
        check(self.n_seeds >= 1, "n_seeds", f"must be >= 1, got {self.n_seeds}")
        check(self.n_train >= 1 and self.n_eval >= 1, "n_train", "n_train and n_eval must be >= 1")


def transition_probs(state: Tensor, adjacency: Tensor, infect: float, recover: float) -> Tensor:
    """(B, n) states -> (B, n, 3) probabilities of the next state (S, I, R) of every node."""
    k = (state == I).to(adjacency.dtype) @ adjacency  # infected neighbours
    p_inf = 1 - (1 - infect) ** k
    p = torch.zeros(*state.shape, 3, dtype=adjacency.dtype)
    s, i, r = state == S, state == I, state == R
    p[..., S] = torch.where(s, 1 - p_inf, 0.0)
    p[..., I] = torch.where(s, p_inf, torch.where(i, 1 - recover, 0.0))
    p[..., R] = torch.where(i, recover, torch.where(r, 1.0, 0.0))
    return p


def simulate_sir(graph: Graph, cfg: EpidemicConfig, batch_size: int, generator: torch.Generator) -> Tensor:
    """(B, T + 1, n) long states S/I/R of ``batch_size`` independent epidemics."""
    n, a = graph.n_nodes, graph.adjacency(torch.float64)
    check(cfg.n_seeds <= n, "n_seeds", f"{cfg.n_seeds} exceeds the {n} nodes of graph {graph.name!r}")
    state = torch.zeros(batch_size, n, dtype=torch.long)
    seeds = torch.rand(batch_size, n, generator=generator).argsort(1)[:, : cfg.n_seeds]
    state.scatter_(1, seeds, I)
    states = [state]
    for _ in range(cfg.steps):
        p = transition_probs(state, a, cfg.infect, cfg.recover)
        u = torch.rand(batch_size, n, 1, generator=generator, dtype=torch.float64)
        state = (u >= p.cumsum(-1)).sum(-1).clamp_max(2)  # inverse-CDF draw of the next state
        states.append(state)
    return torch.stack(states, 1)


@register_task("graph_epidemic", EpidemicConfig)
class GraphEpidemic(GraphTask):
    def __init__(self, **cfg: Any) -> None:
        self.cfg = c = build_config(EpidemicConfig, cfg)
        self.graph, _ = load_graph(c.graph)
        check(c.n_seeds <= self.graph.n_nodes, "n_seeds", f"{c.n_seeds} exceeds the {self.graph.n_nodes} nodes")
        self.snapshots = c.steps
        deg = self.graph.degree().float()
        self.degree_feature = deg / deg.max().clamp_min(1)
        n = self.graph.n_nodes
        self.info = TaskInfo(
            name="graph_epidemic", kind="tag", length=c.steps * n,
            source=f"generated: SIR epidemic on networkx's {c.graph} graph",
            sizes={"train": c.n_train, "val": c.n_eval, "test": c.n_eval}, n_classes=3, d_input=2,
            notes=(f"{c.steps} snapshots x {n} nodes ({self.graph.n_edges} edges); predict each node's next "
                   f"S/I/R state from its infection history; infect {c.infect}, recover {c.recover}"),
        )

    def make_batch(self, batch_size: int, generator: torch.Generator) -> Batch:
        states = simulate_sir(self.graph, self.cfg, batch_size, generator)  # (B, T+1, n)
        B, T, n = batch_size, self.cfg.steps, self.graph.n_nodes
        infected = (states[:, :T] == I).float()
        x = torch.stack([infected, self.degree_feature.expand(B, T, n)], -1)  # (B, T, n, 2)
        return Batch(x.reshape(B, T * n, 2), states[:, 1:].reshape(B, T * n))

    def batches(self, split: str, batch_size: int, seed: int = 0, epoch: int = 0) -> Iterator[Batch]:
        self._check_split(split)
        total = self.info.sizes[split]
        for index, start in enumerate(range(0, total, batch_size)):
            yield self.make_batch(min(batch_size, total - start), split_generator(split, seed, epoch, index))

    def reference_accuracy(self, split: str = "test", batch_size: int = 256) -> dict[str, float]:
        """Two reference predictors on ``split`` as ``batches(split, batch_size)`` draws it:

        - ``oracle``: the Bayes-optimal prediction from the true current state of every node (the
          input history determines it), as its expected accuracy (sum of the top probabilities);
        - ``persistence``: the next state = the current true state (own history, no graph).
        """
        a = self.graph.adjacency(torch.float64)
        oracle, same, count = 0.0, 0, 0
        for index, start in enumerate(range(0, self.info.sizes[split], batch_size)):
            size = min(batch_size, self.info.sizes[split] - start)
            states = simulate_sir(self.graph, self.cfg, size, split_generator(split, 0, 0, index))
            p = transition_probs(states[:, :-1].flatten(0, 1), a, self.cfg.infect, self.cfg.recover)
            oracle += float(p.max(-1).values.sum())
            same += int((states[:, 1:] == states[:, :-1]).sum())
            count += p.shape[0] * p.shape[1]
        return {"oracle": oracle / count, "persistence": same / count}
