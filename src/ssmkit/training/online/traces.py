"""Exact real-time recurrent learning inside one diagonal recurrent layer.

Dimension legend: B batch, D layer width, S the state's shape without B, K a row's length.

Per step (derivation in docs/online.md), with s_v = d h_t / d v the local (diagonal) derivative of
the step at fixed h_{t-1}, obtained by ONE autograd call on the element-wise step:

    e^q_t = a_t e^q_{t-1} + s_q                         (B, *S)       element parameter q
    e^M_t = a_t e^M_{t-1} + s_z U_t                     (B, *S, K)    row parameter M
    R_t   = a_t R_{t-1}   + s_z [x_raw_t, 1]            (B, *S, K+1)  exact linear encoder below

and, once the instantaneous error delta_t = d loss_t / d h_t (PyTorch's conjugate convention) is
known, G^v += sum_B conj(e^v_t) delta_t. ``flush`` hands G^q, G^M to ONE autograd backward through
the layer's parameterization (q and M from the raw parameters), so no derivative of a
parameterization is written by hand. Memory: the state, the traces and the carry, all of fixed
size; nothing is kept per step.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from .families import Family, RGLRUFamily
from .rglru_pre import RGLRUPreTrace


def _detach(t: tuple) -> tuple:
    return tuple(v.detach() for v in t)


class LayerRTRL:
    """States, traces and gradient accumulators of one layer for a batch of B streams.

    ``input_mode``: "none" (nothing trainable below: the input is data), "encoder" (a linear encoder
    directly below, exact through the input trace R), "spatial" (the instantaneous error flows into
    the input, Zucchet et al.'s approximation for the layers below).
    """

    def __init__(self, family: Family, input_mode: str, encoder: nn.Linear | None = None) -> None:
        self.fam = family
        self.input_mode = input_mode
        self.encoder = encoder
        self.refresh()
        self.pre = RGLRUPreTrace(family) if isinstance(family, RGLRUFamily) else None
        self.batch = 0

    # ----------------------------------------------------------------- parameters
    def refresh(self) -> None:
        """Re-read the intermediates after the raw parameters changed (an optimizer step)."""
        with torch.no_grad():
            q, M = self.fam.intermediates()
        # detached: an intermediate may be a raw parameter itself (RG-LRU's gate biases), which
        # must not also collect the per-token gradient of the step's graph
        self.q = {k: v.detach() for k, v in q.items()}
        self.M = {k: v.detach() for k, v in M.items()}

    def reset(self, batch: int, dtype: torch.dtype, device) -> None:
        """Zero state and traces for ``batch`` new streams; the gradient accumulators too."""
        self.batch = batch
        self.h, self.carry = self.fam.init(batch, dtype, device)
        shape = self.h.shape
        self.e_q = {k: torch.zeros(shape, dtype=self.h.dtype, device=device) for k in self.q}
        self.e_M = {k: torch.zeros(*shape, v.shape[-1], dtype=self.h.dtype, device=device) for k, v in self.M.items()}
        self.R = None
        if self.input_mode == "encoder":
            self.R = torch.zeros(*shape, self.encoder.in_features + 1, dtype=self.h.dtype, device=device)
        if self.pre is not None:
            self.pre.reset(batch, dtype, device)
        self.zero_accumulators()

    def zero_accumulators(self) -> None:
        self.G_q = {k: torch.zeros_like(v) for k, v in self.q.items()}
        self.G_M = {k: torch.zeros_like(v) for k, v in self.M.items()}
        self.G_R = None if self.R is None else torch.zeros_like(self.R[0])
        if self.pre is not None:
            self.pre.zero_accumulator()

    # ----------------------------------------------------------------- one token
    def forward(self, x: Tensor, x_raw: Tensor | None) -> Tensor:
        """x (B, D) the layer input (with its graph), x_raw (B, K_raw) the encoder's input -> y (B, D).

        Updates the traces to step t; the new state is ``self.h_t`` (requires grad), whose gradient
        after the step's backward is delta_t (read by ``accumulate``).
        """
        fam, h_prev = self.fam, self.h
        x_rec = x if self.input_mode == "spatial" else x.detach()
        U, e, carry = fam.signals(x_rec, self.carry)
        # Local derivatives: leaves of shape (B, *S) so that the one vector-Jacobian product with
        # ones returns the diagonal (the step is element-wise); conj turns PyTorch's conjugate
        # gradient of a holomorphic step into its derivative (a no-op for real states).
        with torch.enable_grad():
            q = {k: v.detach().expand(h_prev.shape).clone().requires_grad_() for k, v in self.q.items()}
            z = {k: (self.M[k] * u.detach()).sum(-1).requires_grad_() for k, u in U.items()}
            el = {k: v.detach().requires_grad_() for k, v in e.items()}
            a, b = fam.recur(q, z, el)
            phi = a * h_prev + b
            leaves = [*q.values(), *z.values(), *el.values()]
            grads = torch.autograd.grad(phi, leaves, torch.ones_like(phi), allow_unused=True)
        s = [torch.zeros_like(v) if g is None else g.conj() for v, g in zip(leaves, grads)]
        s_q = dict(zip(q, s[:len(q)]))
        s_z = dict(zip(z, s[len(q):len(q) + len(z)]))
        s_e = dict(zip(el, s[len(q) + len(z):]))
        a = a.detach()
        with torch.no_grad():
            for k in self.e_q:
                self.e_q[k] = a * self.e_q[k] + s_q[k]
            for k in self.e_M:
                self.e_M[k] = a[..., None] * self.e_M[k] + s_z[k][..., None] * U[k].detach()
            if self.R is not None:
                xr = torch.cat([x_raw, torch.ones_like(x_raw[:, :1])], -1)  # (B, K_raw + 1)
                self.R = a[..., None] * self.R + s_z[fam.input_row][..., None] * _expand_input(xr, self.R)
            if self.pre is not None:
                self.pre.update(a, s_z, s_e, self.M, self.carry, _detach(carry))
        # The graph of this step: h_{t-1} and the parameters are constants (their influence is in
        # the traces); only x's instantaneous path stays, in spatial mode.
        zg = {k: (self.M[k] * u).sum(-1) for k, u in U.items()}
        a_g, b_g = fam.recur(self.q, zg, e)
        h = a_g * h_prev + b_g
        if not h.requires_grad:
            h.requires_grad_()
        h.retain_grad()
        self.h_t, self.carry = h, _detach(carry)
        return fam.post(h, x)

    def accumulate(self) -> None:
        """After the step's backward: G += sum_B conj(trace) delta_t; the state moves on, detached."""
        h = self.h_t
        delta = torch.zeros_like(h) if h.grad is None else h.grad
        with torch.no_grad():
            for k, e in self.e_q.items():
                self.G_q[k] += (e.conj() * delta).sum(0).sum_to_size(self.G_q[k].shape)
            for k, e in self.e_M.items():
                self.G_M[k] += (e.conj() * delta[..., None]).sum(0).sum_to_size(self.G_M[k].shape)
            if self.R is not None:
                self.G_R += (self.R.conj() * delta[..., None]).sum(0)
            if self.pre is not None:
                self.pre.accumulate(delta)
        self.h, self.h_t = h.detach(), None

    # ----------------------------------------------------------------- gradients
    def flush(self) -> None:
        """Add the accumulated gradients to the raw parameters' ``.grad`` and zero the accumulators."""
        q, M = self.fam.intermediates()
        tensors = [*q.values(), *M.values()]
        grads = [*self.G_q.values(), *self.G_M.values()]
        pairs = [(t, g) for t, g in zip(tensors, grads) if t.requires_grad]
        if pairs:
            torch.autograd.backward([t for t, _ in pairs], [g.to(t.dtype) for t, g in pairs])
        if self.G_R is not None:
            g = self.fam.encoder_grad(self.M[self.fam.input_row], self.G_R)  # (D, K_raw + 1)
            _add_grad(self.encoder.weight, g[:, :-1])
            if self.encoder.bias is not None:
                _add_grad(self.encoder.bias, g[:, -1])
        if self.pre is not None:
            self.pre.flush()
        self.zero_accumulators()

    # ----------------------------------------------------------------- bookkeeping
    def held(self) -> dict[str, Tensor]:
        """Every tensor this layer holds, by name (per-sequence ones first dimension B)."""
        out = {"h": self.h, **{f"e_{k}": v for k, v in self.e_q.items()}, **{f"e_{k}": v for k, v in self.e_M.items()}}
        out.update({f"carry{i}": v for i, v in enumerate(self.carry)})
        if self.R is not None:
            out["R"] = self.R
        if self.pre is not None:
            out.update(self.pre.held())
        return out

    def accumulators(self) -> dict[str, Tensor]:
        out = {**{f"G_{k}": v for k, v in self.G_q.items()}, **{f"G_{k}": v for k, v in self.G_M.items()}}
        if self.G_R is not None:
            out["G_R"] = self.G_R
        if self.pre is not None:
            out["G_pre"] = self.pre.G
        return out


def _expand_input(xr: Tensor, R: Tensor) -> Tensor:
    """x_raw (B, K) as (B, 1.., K) against R (B, *S, K): the input row of every state element."""
    return xr.reshape(xr.shape[0], *([1] * (R.ndim - 2)), xr.shape[-1])


def _add_grad(p: nn.Parameter, g: Tensor) -> None:
    g = g.to(p.dtype).reshape(p.shape)
    p.grad = g.clone() if p.grad is None else p.grad + g
