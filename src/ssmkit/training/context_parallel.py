"""Context parallelism: one long sequence split over the R processes of a group, exact by state passing.

Rank r holds the r-th contiguous chunk of every sequence (``split_sequence``). Each layer whose state
passing is affine (a mixer's ``cp_state``, docs/distributed.md) runs, per chunk:

1. the chunk lengths are all-gathered: a count tensor (positions) entering rank r is the tokens
   before it. Halo tensors (a short conv's last inputs, a window) and history tensors (a KV cache
   that keeps every token): one run from the zero state at the true position gives each chunk's
   outgoing values, which do not depend on the incoming ones (a halo is the chunk's own last
   inputs, a history gains the chunk's slots); after one all-gather every rank knows its exact
   incoming values (a history: the initial one plus every earlier chunk's).
2. the affine tensors: with those halo / count values fixed, the outgoing state is
   ``s_out = m * s_in + c`` ("diag", elementwise) or ``P @ s_in + c`` ("matrix", (K, V) states). Runs
   of the chunk from the probe states 0, 1 (and, for a matrix, the basis columns) read c and m (or
   P) off the final states; the summaries (c, m / P) are all-gathered and every rank scans them,
   s_{j+1} = m_j * s_j + c_j from the sequence's initial state, up to its own incoming state.
3. the chunk is run once more from its true incoming state: its outputs and final state equal the
   single-process run's, and gradients flow into the incoming state, back through the scan and the
   all-gather (whose backward sums every rank's gradient of each summary) to the ranks that made it.

Every rank's gradients of the parameters (and of a given initial state) are its share of the
total: summing them over the group gives the single-process gradient (``reduce_gradients``).
Costs per layer: the chunk runs 3 times (4 with halo / count tensors; a matrix state needs
ceil(K / V) probes instead of one) and the summary runs are recomputed in the backward pass
(activation checkpointing: they keep only their inputs), so a rank's activation memory is that of
one plain run of its chunk; and two all-gathers of state-sized summaries, independent of L.
"""
from __future__ import annotations

import contextlib
import dataclasses
import functools
import math
from typing import Any, Iterator

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from ..layers.base import SequenceMixer
from ..layers.state import State, flatten_state, map_state
from ..models.backbone import Block
from ..tasks.base import Batch

KINDS = ("halo", "count", "history", "diag", "matrix", "dense", "scaled", "stabilizer")
# A stabilizer m's state is the true state exp(m) * (its "scaled" tensors); this probe stands for
# m = -inf (no incoming state) and stays finite, so that exp(m + ...) is 0 with no NaN in the backward.
NO_STABILIZER = -1e30


@dataclasses.dataclass(frozen=True)
class Comm:
    """This process's place in the context-parallel group (``group`` None: the default group)."""

    rank: int
    world: int
    group: Any = None

    @classmethod
    def of(cls, group: Any = None) -> "Comm":
        return cls(dist.get_rank(group), dist.get_world_size(group), group)


class _Gather(torch.autograd.Function):
    """(R, n): every rank's 1-D ``t``; backward sums every rank's gradient of row r into rank r."""

    @staticmethod
    def forward(ctx, comm: Comm, t: Tensor) -> Tensor:  # type: ignore[override]
        ctx.comm = comm
        out = [torch.empty_like(t) for _ in range(comm.world)]
        dist.all_gather(out, t.contiguous(), group=comm.group)
        return torch.stack(out)

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[None, Tensor]:  # type: ignore[override]
        grad = grad.contiguous()
        dist.all_reduce(grad, group=ctx.comm.group)
        return None, grad[ctx.comm.rank]


class _Tie(torch.autograd.Function):
    """y unchanged, with ``others`` in its graph: every rank's backward then reaches every all-gather
    (rank 0 uses none of the gathered summaries, yet the others wait for its share of the backward)."""

    @staticmethod
    def forward(ctx, y: Tensor, *others: Tensor) -> Tensor:  # type: ignore[override]
        ctx.likes = [(o.shape, o.dtype, o.device) for o in others]
        return y.view_as(y)

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor, ...]:  # type: ignore[override]
        return (grad, *(torch.zeros(s, dtype=t, device=d) for s, t, d in ctx.likes))


def _pack(tensors: list[Tensor]) -> Tensor:
    return torch.cat([(torch.view_as_real(t) if t.is_complex() else t).reshape(-1) for t in tensors])


def _unpack(flat: Tensor, likes: list[Tensor]) -> list[Tensor]:
    out, at = [], 0
    for like in likes:
        n = like.numel() * (2 if like.is_complex() else 1)
        part = flat[at:at + n]
        at += n
        out.append(torch.view_as_complex(part.reshape(*like.shape, 2)) if like.is_complex() else part.reshape(like.shape))
    return out


def _rebuild(template: State, leaves: list[Tensor]) -> State:
    it = iter(leaves)
    return map_state(lambda _: next(it), template)


def halo_tokens(t: Tensor) -> int:
    """The inputs a halo tensor holds: W for (B, W, ...), 1 for a (B, C) token shift."""
    return t.shape[1] if t.dim() >= 3 else 1


def check_supported(mixer: nn.Module, where: str = "the mixer") -> tuple[str, ...]:
    """The mixer's ``cp_state``, or a ValueError naming it and why it cannot be split exactly."""
    kinds = getattr(mixer, "cp_state", None)
    name = getattr(mixer, "mixer_name", "") or type(mixer).__name__
    if kinds is None:
        reason = getattr(mixer, "cp_refusal", "it is not a SequenceMixer")
        raise ValueError(f"context parallelism cannot split {where} ({name!r}) exactly: {reason} "
                         f"(docs/distributed.md lists the families that can)")
    bad = [k for k in kinds if k not in KINDS]
    if bad:
        raise ValueError(f"{name}.cp_state names unknown kinds {bad}; expected some of {KINDS}")
    if "stabilizer" in kinds and (kinds.count("stabilizer") != 1 or not hasattr(mixer, "cp_log_decay")
                                  or any(k in ("diag", "matrix", "dense") for k in kinds)):
        raise ValueError(f"{name}.cp_state: a stabilized state needs one 'stabilizer', 'scaled' tensors, only halo / "
                         "count tensors besides, and the mixer's cp_log_decay(x, state)")
    return kinds


def mixer_forward(mixer: SequenceMixer, comm: Comm, x: Tensor, state: State | None = None,
                  mask: Tensor | None = None, *, dt: Tensor | None = None, return_state: bool = False,
                  mode: str | None = None) -> Tensor | tuple[Tensor, State]:
    """The mixer over this rank's chunk x (B, Lc, D) of a sequence split over ``comm``; ``state`` is
    the state before the whole sequence (None: zero). Returns y (B, Lc, D) and, with
    ``return_state``, the state after this rank's chunk (the last rank's: the sequence's final state)."""
    kinds = check_supported(mixer)
    if mask is not None:
        raise ValueError("context parallelism takes unmasked sequences: mask must be None (pack or trim padding "
                         "before splitting the sequence over ranks)")
    run = functools.partial(SequenceMixer.forward, mixer, dt=dt, return_state=True, mode=mode)
    B = x.shape[0]
    zero = mixer.init_state(B, x.device)
    init_leaves, _ = flatten_state(state if state is not None else zero)
    zero_leaves, _ = flatten_state(zero)
    if len(kinds) != len(zero_leaves):
        raise ValueError(f"{type(mixer).__name__}.cp_state names {len(kinds)} tensors, its state has {len(zero_leaves)}")
    incoming = list(init_leaves)
    gathered: list[Tensor] = []

    # every chunk's length first: a count tensor (positions) entering rank r is the tokens before it,
    # and the zero-state run below must see its true positions (rotary keys in a window or cache)
    lengths = _lengths(x.shape[1], comm, x.device)
    for i, kind in enumerate(kinds):
        if kind == "count":
            incoming[i] = init_leaves[i] + sum(lengths[:comm.rank])
    fixed = [i for i, k in enumerate(kinds) if k in ("halo", "history")]
    if fixed:
        need = max((halo_tokens(zero_leaves[i]) for i in fixed if kinds[i] == "halo"), default=0)
        short = [j for j in range(comm.world - 1) if lengths[j] < need]
        if short:  # every rank knows every length, so every rank raises here together
            raise ValueError(f"context parallelism: {type(mixer).__name__} passes the last {need} inputs between "
                             f"chunks, but rank(s) {short} hold fewer tokens ({[lengths[j] for j in short]}); "
                             f"use a sequence of at least {need} tokens per rank")
        start = [incoming[i] if kinds[i] == "count" else zero_leaves[i] for i in range(len(kinds))]
        out = _final_state(run, x, _rebuild(zero, start))
        # a history tensor (a KV cache) holds token t in slot t (counted by the state's count tensor):
        # this chunk's are slots [before, before + len), padded to the longest chunk for the gather
        before, held = _history_slots(kinds, init_leaves, incoming)
        outs = [out[i] if kinds[i] == "halo" else _pad_slots(out[i][:, before:before + x.shape[1]], max(lengths))
                for i in fixed]
        table = _Gather.apply(comm, _pack(outs))
        gathered.append(table)
        rows = [_unpack(table[j], outs) for j in range(comm.world)]
        for n, i in enumerate(fixed):
            if kinds[i] == "halo":
                incoming[i] = init_leaves[i] if comm.rank == 0 else rows[comm.rank - 1][n]
            else:
                incoming[i] = torch.cat([init_leaves[i][:, :held],
                                         *(rows[j][n][:, :lengths[j]] for j in range(comm.rank))], 1)

    if "stabilizer" in kinds:
        summary = _stabilized_summary(mixer, run, x, kinds, incoming, zero_leaves, zero)
        table = _Gather.apply(comm, _pack(summary))
        gathered.append(table)
        _scan_stabilized(kinds, incoming, [_unpack(table[j], summary) for j in range(comm.rank)])

    affine = [i for i, k in enumerate(kinds) if k in ("diag", "matrix", "dense")]
    if affine:
        summaries = _summaries(run, x, kinds, incoming, zero_leaves, affine, zero)
        table = _Gather.apply(comm, _pack(summaries))
        gathered.append(table)
        for n, i in enumerate(affine):
            s = init_leaves[i]
            for j in range(comm.rank):
                c, m = _unpack(table[j], summaries)[2 * n: 2 * n + 2]
                s = _apply(kinds[i], m, s) + c
            incoming[i] = s

    y, final = run(x, _rebuild(zero, incoming))
    y = _Tie.apply(y, *gathered) if gathered else y
    return (y, final) if return_state else y


def _lengths(length: int, comm: Comm, device: torch.device) -> list[int]:
    """Every rank's chunk length (a small all-gather outside autograd)."""
    mine = torch.tensor([length], dtype=torch.int64, device=device)
    every = [torch.empty_like(mine) for _ in range(comm.world)]
    dist.all_gather(every, mine, group=comm.group)
    return [int(t) for t in every]


def _history_slots(kinds: tuple[str, ...], init_leaves: list[Tensor], incoming: list[Tensor]) -> tuple[int, int]:
    """(tokens before this chunk, tokens the initial state holds), read off the one count tensor that
    numbers a history's slots; (0, 0) without a history."""
    if "history" not in kinds:
        return 0, 0
    if kinds.count("count") != 1:
        raise ValueError(f"cp_state {kinds}: a history needs exactly one count tensor to number its slots")
    i = kinds.index("count")
    held = init_leaves[i]
    if held.numel() and not bool((held == held.flatten()[0]).all()):
        raise ValueError("context parallelism: the initial state's rows hold different numbers of tokens; "
                         "split rows that start equally")
    first = int(held.flatten()[0]) if held.numel() else 0
    return int(incoming[i].flatten()[0]) if incoming[i].numel() else 0, first


def _pad_slots(t: Tensor, slots: int) -> Tensor:
    """t (B, T, ...) with zeros appended along dim 1 up to ``slots``."""
    return torch.cat([t, t.new_zeros(t.shape[0], slots - t.shape[1], *t.shape[2:])], 1) if t.shape[1] < slots else t


def _final_state(run, x: Tensor, state: State) -> list[Tensor]:
    """The state after the chunk, as a list; checkpointed (only x and ``state`` are kept for the
    backward pass, the run is recomputed there), so a summary run costs no activation memory."""
    return checkpoint(lambda xx, ss: flatten_state(run(xx, ss)[1])[0], x, state, use_reentrant=False)


def _summaries(run, x: Tensor, kinds: tuple[str, ...], incoming: list[Tensor], zero_leaves: list[Tensor],
               affine: list[int], zero: State) -> list[Tensor]:
    """[c, m or P] per affine tensor, from runs of the chunk from probe states: 0 (gives c), 1 (m + c),
    and for a matrix state the basis columns (P e_j + c), one run each, so that the backward pass
    recomputes one run at a time."""
    probes = 1
    for i in affine:
        if kinds[i] == "matrix":
            K, V = zero_leaves[i].shape[-2:]
            probes = max(probes, math.ceil(K / V))
        elif kinds[i] == "dense":
            probes = max(probes, _real_width(zero_leaves[i]))

    def probe(p: int) -> list[Tensor]:  # p = -1: the zero probe
        leaves = []
        for i, (kind, leaf) in enumerate(zip(kinds, zero_leaves)):
            if i not in affine:
                leaves.append(incoming[i])
            elif p < 0:
                leaves.append(torch.zeros_like(leaf))
            else:
                leaves.append(torch.ones_like(leaf) if kind == "diag" else _basis(leaf, p) if kind == "matrix"
                              else _unit(leaf, p))
        return _final_state(run, x, _rebuild(zero, leaves))

    base = probe(-1)
    outs = [probe(p) for p in range(probes)]
    result = []
    for i in affine:
        c = base[i]
        if kinds[i] == "diag":
            result += [c, outs[0][i] - c]
        elif kinds[i] == "dense":  # column j of P is f(e_j) - c, on the real view of a complex state
            result += [c, torch.stack([_real(outs[j][i] - c) for j in range(_real_width(c))], dim=-1)]
        else:
            K = c.shape[-2]
            cols = torch.cat([o[i] - c for o in outs], dim=-1)[..., :K]  # column p*V + v is P e_{p*V+v}
            result += [c, cols]
    return result


def _stabilized_summary(mixer, run, x: Tensor, kinds: tuple[str, ...], incoming: list[Tensor],
                        zero_leaves: list[Tensor], zero: State) -> list[Tensor]:
    """[log F, then per scaled / stabilizer tensor its value after the chunk from no incoming state].

    The true state T = exp(m) * S (S the scaled tensors) passes as T_out = F T_in + T_chunk, F the
    chunk's decay (the family's ``cp_log_decay``). Run from m = -inf (``NO_STABILIZER``) and S = 0,
    the chunk returns T_chunk in its own stabilized form (S_c, m_c): m_c is the sequential
    recursion's input-only term, so the scan below reproduces the single-process stabilizer."""
    leaves = []
    for i, (kind, leaf) in enumerate(zip(kinds, zero_leaves)):
        if kind == "stabilizer":
            leaves.append(torch.full_like(leaf, NO_STABILIZER))
        else:
            leaves.append(torch.zeros_like(leaf) if kind == "scaled" else incoming[i])
    out = _final_state(run, x, _rebuild(zero, leaves))
    log_decay = mixer.cp_log_decay(x, _rebuild(zero, incoming))
    return [log_decay, *(out[i] for i, k in enumerate(kinds) if k in ("scaled", "stabilizer"))]


def _scan_stabilized(kinds: tuple[str, ...], incoming: list[Tensor], rows: list[list[Tensor]]) -> None:
    """Fold the earlier ranks' summaries into ``incoming`` (in place), in stabilized form:
    m' = max(m + log F, m_c), S' = S exp(m + log F - m') + S_c exp(m_c - m')."""
    group = [i for i, k in enumerate(kinds) if k in ("scaled", "stabilizer")]
    st = kinds.index("stabilizer")
    for log_decay, *parts in rows:
        chunk = dict(zip(group, parts))
        m_new = torch.maximum(incoming[st] + log_decay, chunk[st])
        keep, add = torch.exp(incoming[st] + log_decay - m_new), torch.exp(chunk[st] - m_new)
        for i in group:
            if i != st:
                pad = (...,) + (None,) * (incoming[i].dim() - keep.dim())
                incoming[i] = incoming[i] * keep[pad] + chunk[i] * add[pad]
        incoming[st] = m_new


def _apply(kind: str, m: Tensor, s: Tensor) -> Tensor:
    """The linear part of a summary applied to a state."""
    if kind == "diag":
        return m * s
    if kind == "matrix":  # (..., K, K) @ (..., K, V)
        return m @ s
    out = (m @ _real(s).unsqueeze(-1)).squeeze(-1)  # dense: (..., N', N') @ (..., N'), N' the real width
    return torch.view_as_complex(out.unflatten(-1, (-1, 2))) if s.is_complex() else out


def _real(t: Tensor) -> Tensor:
    """A (..., N) state as real numbers: (..., 2N) for a complex one (re, im interleaved)."""
    return torch.view_as_real(t).flatten(-2) if t.is_complex() else t


def _real_width(t: Tensor) -> int:
    return t.shape[-1] * (2 if t.is_complex() else 1)


def _unit(leaf: Tensor, j: int) -> Tensor:
    """A (B, ..., N) probe: the j-th real basis vector along the last dim, for every leading index (a
    complex state's map need only be real-linear: j = 2n is the real unit of entry n, 2n + 1 the imaginary)."""
    e = torch.zeros_like(_real(leaf))
    e[..., j] = 1
    return torch.view_as_complex(e.unflatten(-1, (-1, 2))) if leaf.is_complex() else e


def _basis(leaf: Tensor, p: int) -> Tensor:
    """A (B, ..., K, V) probe whose column v is the basis vector e_{p*V + v} (zero past K)."""
    K, V = leaf.shape[-2:]
    e = torch.zeros(K, V, dtype=leaf.dtype, device=leaf.device)
    for v in range(V):
        if p * V + v < K:
            e[p * V + v, v] = 1
    return e.expand_as(leaf).clone()


def split_sequence(t: Tensor | None, comm: Comm, dim: int = 1) -> Tensor | None:
    """This rank's contiguous chunk of ``t`` along ``dim`` (the first L % R ranks get one more)."""
    if t is None:
        return None
    if t.shape[dim] < comm.world:
        raise ValueError(f"context parallelism over {comm.world} ranks needs sequences of at least {comm.world} "
                         f"tokens, got length {t.shape[dim]}")
    return t.tensor_split(comm.world, dim=dim)[comm.rank]


def split_batch(batch: Batch, comm: Comm) -> Batch:
    """This rank's chunk of every row of a per-position batch (inputs, targets, mask and dt alike)."""
    return Batch(*(split_sequence(t, comm) for t in (batch.inputs, batch.targets, batch.mask, batch.dt)))


def mixers_of(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """(name, mixer) of every residual block of ``model`` (``models.backbone.Block``)."""
    return [(f"{name}.mixer", m.mixer) for name, m in model.named_modules() if isinstance(m, Block)]


def enable(model: nn.Module, comm: Comm) -> nn.Module:
    """Run every block's mixer of ``model`` context-parallel over ``comm`` (in place; ``disable``
    undoes it). Every other part of a model (embeddings, norms, FFNs, per-token heads) is per token.
    Refuses, naming the layers and why, when a mixer cannot be split exactly."""
    mixers = mixers_of(model)
    if not mixers:
        raise ValueError(f"context parallelism found no residual blocks (models.backbone.Block) in "
                         f"{type(model).__name__}")
    for name, mixer in mixers:
        check_supported(mixer, name)
    for _, mixer in mixers:
        mixer.forward = functools.partial(mixer_forward, mixer, comm)
    return model


def disable(model: nn.Module) -> nn.Module:
    for _, mixer in mixers_of(model):
        mixer.__dict__.pop("forward", None)
    return model


@contextlib.contextmanager
def paused(model: nn.Module) -> Iterator[None]:
    """The plain model inside (evaluation scores whole rows, each rank its own slice of them)."""
    comms = {id(m): m.forward.args[1] for _, m in mixers_of(model) if "forward" in m.__dict__}
    disable(model)
    try:
        yield
    finally:
        for _, m in mixers_of(model):
            if id(m) in comms:
                m.forward = functools.partial(mixer_forward, m, comms[id(m)])


def reduce_gradients(model: nn.Module, comm: Comm, average: bool = False) -> None:
    """Sum (or average) every parameter's gradient over the group: each rank holds its share."""
    params = [p for p in model.parameters() if p.grad is not None]
    if not params:
        return
    flat = torch.cat([p.grad.reshape(-1) for p in params])
    dist.all_reduce(flat, group=comm.group)
    if average:
        flat /= comm.world
    for p, g in zip(params, flat.split([p.numel() for p in params])):
        p.grad.copy_(g.view_as(p.grad))
