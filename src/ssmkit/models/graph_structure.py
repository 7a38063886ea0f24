"""A fixed undirected graph and the node orders that turn it into a sequence.

A node-sequence model (Graph-Mamba, Wang et al. 2024; Behrouz & Hashemi 2024) runs a sequence
mixer over the nodes of a graph, so the nodes need an order. The policies here:

- ``degree``: ascending degree (Graph-Mamba: the best-connected nodes come last and so see the
  most context from a causal scan); ties by node index, or in random order for augmentation;
- ``random``: a uniformly random permutation (augmentation, or a fixed one from a seed);
- ``bfs``: breadth-first from a root (the highest-degree node unless given), neighbours visited by
  ascending index; each further component from its own root by the same rule. Augmentation draws
  the root uniformly and visits neighbours in random order.

Every order is a permutation ``order`` (n,) with ``order[k]`` = the node at position k; the
inverse (``inverse_order``) maps a node to its position.
"""
from __future__ import annotations

import dataclasses
from collections import deque
from typing import Iterable

import torch
from torch import Tensor

ORDERS = ("degree", "random", "bfs")


@dataclasses.dataclass(frozen=True, eq=False)
class Graph:
    """An undirected simple graph on the nodes 0..n-1.

    ``edges`` (2, E) long holds every edge in both directions, without self-loops or repeats,
    sorted by (source, target). Build it with ``Graph.from_edges``.
    """

    n_nodes: int
    edges: Tensor
    name: str = ""

    @classmethod
    def from_edges(cls, n_nodes: int, pairs: Iterable[tuple[int, int]], name: str = "") -> "Graph":
        """The graph of the undirected ``pairs`` (u, v); repeats and either direction are merged."""
        if n_nodes < 1:
            raise ValueError(f"a graph needs at least one node, got n_nodes={n_nodes}")
        seen: set[tuple[int, int]] = set()
        for u, v in pairs:
            u, v = int(u), int(v)
            if not (0 <= u < n_nodes and 0 <= v < n_nodes):
                raise ValueError(f"edge ({u}, {v}) names a node outside 0..{n_nodes - 1}")
            if u == v:
                raise ValueError(f"edge ({u}, {v}) is a self-loop; the graph must be simple")
            seen.update({(u, v), (v, u)})
        edges = torch.tensor(sorted(seen), dtype=torch.long).reshape(-1, 2).T.contiguous()
        return cls(n_nodes, edges, name)

    @property
    def n_edges(self) -> int:
        """Undirected edges."""
        return self.edges.shape[1] // 2

    def degree(self) -> Tensor:
        """(n,) long."""
        return torch.bincount(self.edges[0], minlength=self.n_nodes)

    def neighbours(self) -> list[list[int]]:
        """Each node's neighbours, ascending."""
        out: list[list[int]] = [[] for _ in range(self.n_nodes)]
        for u, v in self.edges.T.tolist():
            out[u].append(v)
        return out

    def adjacency(self, dtype: torch.dtype = torch.float32) -> Tensor:
        """(n, n) dense 0/1 matrix."""
        a = torch.zeros(self.n_nodes, self.n_nodes, dtype=dtype)
        a[self.edges[0], self.edges[1]] = 1
        return a

    def mean_operator(self, dtype: torch.dtype = torch.float32) -> Tensor:
        """(n, n) row-normalized adjacency D^-1 A: (P x)_v is the mean of x over v's neighbours
        (0 for an isolated node)."""
        a = self.adjacency(dtype)
        return a / a.sum(1, keepdim=True).clamp_min(1)

    def relabel(self, perm: Tensor) -> "Graph":
        """The same graph with node v renamed ``perm[v]``."""
        perm = torch.as_tensor(perm, dtype=torch.long)
        if sorted(perm.tolist()) != list(range(self.n_nodes)):
            raise ValueError(f"relabel needs a permutation of 0..{self.n_nodes - 1}")
        return Graph.from_edges(self.n_nodes, perm[self.edges].T.tolist(), self.name)


@dataclasses.dataclass(frozen=True, eq=False)
class GraphSpec:
    """What a graph model needs of its task's data (``DataSpec.graph``): the fixed ``graph`` and
    how many time-major snapshots of node signals each input holds (inputs (B, T*n, F); T = 1 is
    one static graph)."""

    graph: Graph
    snapshots: int = 1  # T

    def __post_init__(self) -> None:
        if self.snapshots < 1:
            raise ValueError(f"GraphSpec.snapshots must be >= 1, got {self.snapshots}")

    @property
    def length(self) -> int:
        """L = T * n positions per input."""
        return self.snapshots * self.graph.n_nodes


def degree_order(graph: Graph, generator: torch.Generator | None = None) -> Tensor:
    """Nodes by ascending degree; ties by index, or in random order when ``generator`` is given."""
    deg = graph.degree()
    if generator is None:
        return torch.sort(deg, stable=True).indices
    shuffle = torch.randperm(graph.n_nodes, generator=generator)
    return shuffle[torch.sort(deg[shuffle], stable=True).indices]


def bfs_order(graph: Graph, root: int | None = None, generator: torch.Generator | None = None) -> Tensor:
    """Breadth-first order from ``root`` (None: the highest-degree node, smallest index first), then
    each unvisited component from its own highest-degree node. With ``generator``, the first root
    (when not given) is uniform and neighbours are visited in random order."""
    n = graph.n_nodes
    if root is not None and not 0 <= root < n:
        raise ValueError(f"BFS root {root} is not a node of the graph (0..{n - 1})")
    nbrs = graph.neighbours()
    if generator is not None:
        nbrs = [[ns[i] for i in torch.randperm(len(ns), generator=generator).tolist()] for ns in nbrs]
        if root is None:
            root = int(torch.randint(n, (1,), generator=generator))
    by_degree = torch.sort(-graph.degree(), stable=True).indices.tolist()  # highest degree first
    seen = [False] * n
    order: list[int] = []
    for start in ([root] if root is not None else []) + by_degree:
        if seen[start]:
            continue
        seen[start] = True
        queue = deque([start])
        while queue:
            u = queue.popleft()
            order.append(u)
            for v in nbrs[u]:
                if not seen[v]:
                    seen[v] = True
                    queue.append(v)
    return torch.tensor(order, dtype=torch.long)


def random_order(graph: Graph, generator: torch.Generator | None = None) -> Tensor:
    """A uniformly random permutation of the nodes."""
    return torch.randperm(graph.n_nodes, generator=generator)


def node_order(graph: Graph, policy: str, generator: torch.Generator | None = None, root: int | None = None) -> Tensor:
    """The order ``policy`` (one of ``ORDERS``) of ``graph``'s nodes: (n,) long, a permutation.
    ``generator`` draws the random choices (ties, root, permutation); ``root`` is for ``bfs``."""
    if policy == "degree":
        return degree_order(graph, generator)
    if policy == "bfs":
        return bfs_order(graph, root, generator)
    if policy == "random":
        return random_order(graph, generator)
    raise ValueError(f"unknown node order {policy!r}; expected one of {ORDERS}")


def inverse_order(order: Tensor) -> Tensor:
    """(…, n) positions: ``inverse_order(order)[..., order[..., k]] = k``."""
    inv = torch.empty_like(order)
    inv.scatter_(-1, order, torch.arange(order.shape[-1], device=order.device).expand_as(order).contiguous())
    return inv
