"""A mixer's matmul floor: its per-token weight matmuls alone, timed on inputs of the row's shape.

What counts as a projection (each applied once to a (B, L, in) input, as the layer applies it
once per token):

- every ``nn.Linear`` inside the mixer (with its bias);
- every ``BlockDiagonalLinear`` (xLSTM's headwise q/k/v, Griffin's gates), through its own forward;
- the input-to-hidden weights ``weight_ih_l<k>`` of an RNN (``torch.nn``'s or ssmkit's LSTM, GRU): the per-token
  projection the RNN runs as one matmul over the sequence (the recurrent ``weight_hh`` is not a
  per-token projection and is left out);
- parameters a family names in ``projection_params`` (a class attribute: names of (out, in)
  matrices the layer multiplies every token by, e.g. LRU's complex B and C as real and imaginary
  parts).

Depthwise convolutions, norms, decays, state transitions and the sequence operator are not
projections: they are what the row adds above this floor. A mixer with none of the above has no
floor here (``projection_fns`` returns an empty list and the row says so).
"""
from __future__ import annotations

import time
from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..layers._block_diagonal import BlockDiagonalLinear
from .timing import best_time

Projection = tuple[str, int, Callable[[Tensor], Tensor]]  # (name, input width, apply)


def projection_fns(mixer: nn.Module) -> list[Projection]:
    """The mixer's projections as (name, input width, function of a (..., in) tensor), in module order."""
    out: list[Projection] = []
    for name, mod in mixer.named_modules():
        if isinstance(mod, nn.Linear):
            out.append((name, mod.in_features, mod))
        elif isinstance(mod, BlockDiagonalLinear):
            blocks, _, size = mod.weight.shape
            out.append((name, blocks * size, mod))
        else:
            for pname, p in mod.named_parameters(recurse=False):
                if pname.startswith("weight_ih_l"):  # torch.nn RNNs and ssmkit's RNNWeights
                    out.append((f"{name}.{pname}", p.shape[1], lambda x, w=p: F.linear(x, w)))
    for pname in getattr(mixer, "projection_params", ()):
        w = mixer.get_parameter(pname)
        out.append((pname, w.shape[1], lambda x, w=w: F.linear(x, w)))
    return out


def time_projections(mixer: nn.Module, batch: int, length: int, repeats: int = 1,
                     backward: bool = True, clock: Callable[[], float] = time.perf_counter
                     ) -> tuple[float | None, float | None]:
    """(forward s, forward + backward s) of all of ``mixer``'s projections applied to random
    (batch, length, in) inputs, best of ``repeats`` by ``clock`` (``timing.best_time``); (None,
    None) when it has none.

    One (batch, length, widest in) buffer serves every projection (a narrower input is a
    column slice of it, read in place by the matmul); in the backward each input is a leaf of its
    own, so the input gradients are computed as in the layer, and the weights get gradients too."""
    projs = projection_fns(mixer)
    if not projs:
        return None, None
    buf = torch.randn(batch, length, max(w for _, w, _ in projs))
    views = [buf[..., :w] for _, w, _ in projs]

    def forward() -> None:
        with torch.no_grad():
            for (_, _, fn), x in zip(projs, views):
                fn(x)

    fwd = best_time(forward, repeats, clock)
    if not backward:
        return fwd, None
    leaves = [v.detach().requires_grad_(True) for v in views]

    def forward_backward() -> None:
        sum(fn(x).sum() for (_, _, fn), x in zip(projs, leaves)).backward()

    bwd = best_time(forward_backward, repeats, clock)
    for x in leaves:
        x.grad = None
    mixer.zero_grad(set_to_none=True)
    return fwd, bwd
