"""Node-sequence graph model: any registered mixer over the nodes of a graph (Graph-Mamba style).

Graph-Mamba (Wang et al. 2024) and Graph Mamba (Behrouz & Hashemi 2024) turn a graph into a
sequence: a local, neighbourhood-aggregating encoder gives each node a token, a node order makes
the tokens a sequence, a selective SSM mixes it, and the outputs go back to their nodes. Here:

1. ``local``: ``mean`` concatenates the hop-averaged features [x, Px, ..., P^k x] (P = D^-1 A, the
   neighbour mean; SIGN-style, no weights in the propagation) and projects them to D; ``gnn``
   projects x to D and applies k learned residual GraphSAGE-mean layers h += MLP([z, Pz]),
   z = norm(h). ``hops`` = k (0: no message passing; the graph then reaches the model through the
   order only).
2. ``order`` (``graph_structure.ORDERS``): degree, random or BFS. With ``augment``, every training
   forward draws a fresh order per example (degree ties shuffled, a new random permutation, BFS
   from a random root with shuffled neighbours); evaluation uses the deterministic order
   (``random``: one fixed permutation from ``order_seed``).
3. A pre-norm residual stack of the backbone's mixers over the ordered nodes, each layer
   ``bidirectional`` (layers/bidirectional.py, two copies of the mixer: a node order is not
   causal) or causal.
4. Outputs are scattered back to node order; a linear head gives per-node logits (B, n, n_out).

Temporal graphs (``GraphSpec.snapshots`` T > 1, inputs (B, T*n, F) time-major, GraphSSM-style,
Li et al. 2024): the local encoder runs on each snapshot, then a causal stack runs over time for
every node ((B*n, T, D) sequences: the output at t never sees t' > t); ``temporal=time_nodes``
follows each time layer with an ordered node-sequence layer inside each snapshot (as in 1-3).
Outputs are (B, T*n, n_out). See docs/graphs.md.
"""
from __future__ import annotations

import dataclasses

import torch
from torch import Tensor, nn

from ..config import check
from ..layers.base import check_finite, skip_finite_checks
from ..layers.bidirectional import COMBINES, Bidirectional
from ..layers.registry import create_mixer
from .backbone import BackboneConfig, make_norm
from .ffn import make_ffn
from .graph_structure import ORDERS, GraphSpec, inverse_order, node_order
from .kinds import TaskKind
from .registry import DataSpec, register_arch

LOCALS = ("mean", "gnn")
TEMPORALS = ("time", "time_nodes")


@dataclasses.dataclass
class GraphConfig:
    order: str = "degree"  # node order: degree | random | bfs
    augment: bool = True  # training: a fresh random order per example and forward (see module docstring)
    root: int = -1  # BFS root at evaluation; -1: the highest-degree node
    order_seed: int = 0  # the fixed permutation of order=random at evaluation
    local: str = "mean"  # neighbourhood encoder: mean (hop averages) | gnn (learned GraphSAGE-mean layers)
    hops: int = 2  # k: neighbourhood radius of the local encoder
    bidirectional: bool = True  # node-sequence layers run both directions (time layers are always causal)
    combine: str = "add"  # how the two directions merge: add | concat
    temporal: str = "time"  # temporal graphs: time (a stack over time per node) | time_nodes (+ node layers)

    def __post_init__(self) -> None:
        check(self.order in ORDERS, "order", f"must be one of {ORDERS}, got {self.order!r}")
        check(self.local in LOCALS, "local", f"must be one of {LOCALS}, got {self.local!r}")
        check(self.hops >= 0, "hops", f"must be >= 0, got {self.hops}")
        check(self.root >= -1, "root", f"must be a node index or -1 (highest degree), got {self.root}")
        check(self.combine in COMBINES, "combine", f"must be one of {COMBINES}, got {self.combine!r}")
        check(self.temporal in TEMPORALS, "temporal", f"must be one of {TEMPORALS}, got {self.temporal!r}")


class LocalEncoder(nn.Module):
    """(..., n, F) node features -> (..., n, D) tokens that have seen their ``hops``-neighbourhood."""

    def __init__(self, kind: str, d_input: int, d_model: int, hops: int) -> None:
        super().__init__()
        self.kind, self.hops = kind, hops
        self.proj = nn.Linear(d_input * (hops + 1) if kind == "mean" else d_input, d_model)
        self.layers = nn.ModuleList()
        if kind == "gnn":
            for _ in range(hops):
                self.layers.append(nn.ModuleDict({
                    "norm": nn.LayerNorm(d_model),
                    "mlp": nn.Sequential(nn.Linear(2 * d_model, d_model), nn.GELU(), nn.Linear(d_model, d_model)),
                }))

    def forward(self, x: Tensor, op: Tensor) -> Tensor:
        """``op`` (n, n) is the neighbour-mean operator P; it acts on the node axis (-2)."""
        if self.kind == "mean":
            hops = [x]
            for _ in range(self.hops):
                hops.append(op @ hops[-1])
            return self.proj(torch.cat(hops, -1))
        h = self.proj(x)
        for layer in self.layers:
            z = layer["norm"](h)
            h = h + layer["mlp"](torch.cat([z, op @ z], -1))
        return h


class BidirectionalMixer(Bidirectional):
    """layers.Bidirectional with the state accounting that ``ssmkit compare`` reads."""

    @property
    def state_size(self) -> int:
        return self.fwd.state_size + self.bwd.state_size

    def state_size_at(self, length: int) -> int:
        return self.fwd.state_size_at(length) + self.bwd.state_size_at(length)


class MixerBlock(nn.Module):
    """x <- x + mixer(norm(x)) [+ x + ffn(norm(x))], the residual block of models.backbone, for
    a causal or a bidirectional mixer. (B, L, D) -> (B, L, D)."""

    def __init__(self, name: str, cfg: BackboneConfig, bidirectional: bool, combine: str) -> None:
        super().__init__()
        self.norm = make_norm(cfg)
        if bidirectional:
            self.mixer = BidirectionalMixer(name, cfg.d_model, combine, **cfg.mixer_settings(name))
        else:
            self.mixer = create_mixer(name, cfg.d_model, **cfg.mixer_settings(name))
        skip_finite_checks(self.mixer)  # GraphModel checks its input once (BackboneConfig.check_finite)
        self.drop = nn.Dropout(cfg.dropout)
        self.ffn = make_ffn(cfg.ffn, cfg.d_model, cfg.ffn_width(), cfg.ffn_bias)
        if self.ffn is not None:
            self.ffn_norm = make_norm(cfg)

    def forward(self, x: Tensor, mask: Tensor | None) -> Tensor:
        x = x + self.drop(self.mixer(self.norm(x), mask=mask))
        return x if self.ffn is None else x + self.drop(self.ffn(self.ffn_norm(x)))


class MixerStack(nn.Module):
    """One ``MixerBlock`` per layer name of the backbone config (and a final norm when asked)."""

    def __init__(self, cfg: BackboneConfig, bidirectional: bool, combine: str, final_norm: bool = True) -> None:
        super().__init__()
        check(cfg.residual == "pre", "residual", f"the graph model's blocks are pre-norm; got {cfg.residual!r}")
        self.blocks = nn.ModuleList(MixerBlock(n, cfg, bidirectional, combine) for n in cfg.layer_names())
        self.norm = make_norm(cfg) if final_norm and cfg.final_norm else nn.Identity()


class GraphModel(nn.Module):
    """Per-node logits of a graph task: (B, T*n, F) -> (B, T*n, n_out) (T = 1: a static graph)."""

    def __init__(self, backbone: BackboneConfig, spec: DataSpec, cfg: GraphConfig) -> None:
        super().__init__()
        gs = spec.graph
        check(isinstance(gs, GraphSpec), "arch",
              "'graph' needs a graph task (its DataSpec.graph, set by the task's build_model, e.g. "
              f"karate_club or graph_epidemic); this task gave {type(gs).__name__}")
        check(spec.kind == TaskKind.TAG, "arch", f"'graph' predicts per node (task kind 'tag'), not '{spec.kind}'")
        check(spec.vocab_size is None, "arch", "'graph' takes float node features, not token ids")
        n = gs.graph.n_nodes
        check(cfg.root < n, "root", f"{cfg.root} is not a node of the {n}-node graph")
        self.cfg, self.graph, self.snapshots, self.d_input = cfg, gs.graph, gs.snapshots, spec.d_input
        # the graph is data, not a weight: rebuilt from the task, left out of checkpoints
        self.register_buffer("op", gs.graph.mean_operator(), persistent=False)
        fixed = node_order(gs.graph, cfg.order, torch.Generator().manual_seed(cfg.order_seed)
                           if cfg.order == "random" else None, None if cfg.root < 0 else cfg.root)
        self.register_buffer("order", fixed, persistent=False)
        self.local = LocalEncoder(cfg.local, spec.d_input, backbone.d_model, cfg.hops)
        temporal = gs.snapshots > 1
        # backbone: the node stack of a static graph, the (causal) time stack of a temporal one
        self.backbone = MixerStack(backbone, cfg.bidirectional and not temporal, cfg.combine)
        self.node_stack = (MixerStack(backbone, cfg.bidirectional, cfg.combine, final_norm=False)
                           if temporal and cfg.temporal == "time_nodes" else None)
        self.head = nn.Linear(backbone.d_model, spec.n_out)
        self.check_finite = backbone.check_finite

    def node_orders(self, batch: int) -> Tensor:
        """(batch, n) node order of each example: fresh random ones when training with ``augment``
        (drawn from torch's global generator, so the run's seed fixes them), else the fixed one."""
        if not (self.training and self.cfg.augment):
            return self.order.expand(batch, -1)
        gen = torch.Generator().manual_seed(int(torch.randint(2**62, (1,))))
        rows = [node_order(self.graph, self.cfg.order, gen) for _ in range(batch)]
        return torch.stack(rows).to(self.order.device)

    def forward(self, inputs: Tensor, mask: Tensor | None = None) -> Tensor:
        B, L, F = self._check(inputs, mask)
        n, T = self.graph.n_nodes, self.snapshots
        h = self.local(inputs.reshape(B, T, n, F), self.op.to(inputs.dtype))  # (B, T, n, D)
        m = None if mask is None else mask.reshape(B, T, n)
        if T == 1:
            h = self._node_layers(h[:, 0], None if m is None else m[:, 0], self.backbone.blocks)[:, None]
            h = self.backbone.norm(h)
        else:
            orders = self.node_orders(B) if self.node_stack is not None else None
            D = h.shape[-1]
            for i, block in enumerate(self.backbone.blocks):
                ht = h.transpose(1, 2).reshape(B * n, T, D)  # one time series per node
                mt = None if m is None else m.transpose(1, 2).reshape(B * n, T)
                h = block(ht, mt).reshape(B, n, T, D).transpose(1, 2)
                if self.node_stack is not None:
                    hn = self._node_layers(h.reshape(B * T, n, D), None if m is None else m.reshape(B * T, n),
                                           self.node_stack.blocks[i: i + 1], orders.repeat_interleave(T, 0))
                    h = hn.reshape(B, T, n, D)
            h = self.backbone.norm(h)
        return self.head(h).reshape(B, L, -1)

    def _node_layers(self, h: Tensor, mask: Tensor | None, blocks, orders: Tensor | None = None) -> Tensor:
        """(B', n, D) -> (B', n, D): gather into node order, run ``blocks``, scatter back."""
        orders = self.node_orders(h.shape[0]) if orders is None else orders
        idx = orders[..., None].expand(-1, -1, h.shape[-1])
        x = h.gather(1, idx)
        mo = None if mask is None else mask.gather(1, orders)
        for block in blocks:
            x = block(x, mo)
        back = inverse_order(orders)[..., None].expand(-1, -1, h.shape[-1])
        return x.gather(1, back)

    def _check(self, inputs: Tensor, mask: Tensor | None) -> tuple[int, int, int]:
        n, T = self.graph.n_nodes, self.snapshots
        if inputs.dim() != 3 or not inputs.is_floating_point():
            raise ValueError(f"graph model inputs must be float (B, L, F), got {tuple(inputs.shape)} {inputs.dtype}")
        B, L, F = inputs.shape
        if L != T * n or F != self.d_input:
            raise ValueError(f"graph model inputs must be (B, {T * n}, {self.d_input}) = (B, T*n, F) for {T} "
                             f"snapshot(s) of the {n}-node graph, got {tuple(inputs.shape)}")
        if mask is not None and tuple(mask.shape) != (B, L):
            raise ValueError(f"mask must be (B, L) = {(B, L)}, got {tuple(mask.shape)}")
        if self.check_finite:
            check_finite(inputs, "the graph model's inputs (B, T*n, F)")
        return B, L, F


@register_arch("graph", GraphConfig)
def build_graph_model(backbone: BackboneConfig, spec: DataSpec, pool: str, cfg: GraphConfig) -> GraphModel:
    """Node-sequence model over a graph task's fixed graph (``pool`` is unused: the head is per node)."""
    return GraphModel(backbone, spec, cfg)
