"""Volume-preserving Transformer layer (Brantner, de Romemont, Kraus, Li 2023, "Volume-Preserving
Transformers for Learning Time Series Data with Structure", arXiv 2312.11166), as a causal mixer.

On a window of T inputs Z = [z_1 .. z_T] (D x T) the paper's volume-preserving attention replaces
the softmax by a Cayley transform of the correlations:

    C = Z^T A Z  (T x T, A learned D x D),    C~ = tril(C, -1) - tril(C, -1)^T  (skew-symmetric)
    Λ(Z) = Cayley(C~) = (I - C~)(I + C~)^{-1}  in SO(T),          attention(Z) = Z Λ(Z)

(I + C~ is always invertible: a skew-symmetric matrix has imaginary eigenvalues), and the
volume-preserving feed-forward layers are shears with triangular weights, applied per column:

    lower: z <- z + tanh(L z + b),  L strictly lower triangular;   upper: the same with U strictly upper

each with a unit-triangular Jacobian (determinant 1). The block has no add (residual) connection
around the attention. As a causal mixer, position t reads the last column of the window ending at
t: y_t = FF(Z_t Λ(Z_t) e_T) with Z_t = [z_{t-T+1} .. z_t]: what the paper's model predicts from the
last T states. Before T tokens the window holds zeros in place of the missing ones, which is
exactly the shorter window (a zero column zeroes its row and column of C~, so Λ is block diagonal
and the zero column adds nothing).

Volume preservation as the paper states it (``window_map``, tests/layers/test_vpt.py, float64):
Λ(Z) is orthogonal with determinant +1, so for each Z the attention acts on vec(Z) as Λ(Z)^T ⊗ I_D,
of determinant 1, and the feed-forward layers' Jacobian determinant is exactly 1 (the whole window
map with Λ held at its value has Jacobian determinant 1). The derivative of Λ with respect to Z is
not part of the paper's statement: the full nonlinear window map's Jacobian determinant differs
from 1 (docs/math/vpt.md shows it and a test holds it).

State: ``VPTState(z)``: the last T - 1 inputs (B, T - 1, D), zeros before a row's first token;
(T - 1) D floats. Modes: ``solve`` (the one column Λ e_T = (I - C~) w with (I + C~) w = e_T) and
``reference`` (the whole Cayley matrix by an explicit inverse). Cost O(L T^2 (D + T)).
"""
from __future__ import annotations

import dataclasses
from typing import NamedTuple

import torch
from torch import Tensor, nn

from ..config import check
from ..core.precision import float32_core
from ._window import call_lengths, check_window_field, state_dtype, tail
from .base import MixerConfig, SequenceMixer, tag_ssm_param
from .call import ForwardCall
from .registry import register_mixer


class VPTState(NamedTuple):
    z: Tensor  # (B, T - 1, D) the last T - 1 inputs, right-aligned, zeros before a row's first token


@dataclasses.dataclass
class VPTConfig(MixerConfig):
    window: int = 16  # T: inputs the attention correlates (the paper's sequence length; 1: Λ = [1])
    ffn_layers: int = 1  # pairs of volume-preserving feed-forward layers (lower, upper) after the attention

    def __post_init__(self) -> None:
        check_window_field(self.window, "window")
        check(self.ffn_layers >= 0, "ffn_layers", f"must be an int >= 0, got {self.ffn_layers!r}")


def skew(C: Tensor) -> Tensor:
    """C (..., T, T) -> tril(C, -1) - tril(C, -1)^T: the skew-symmetric matrix of the lower correlations."""
    low = C.tril(-1)
    return low - low.transpose(-1, -2)


def cayley(K: Tensor) -> Tensor:
    """(I - K)(I + K)^{-1} for skew-symmetric K (..., T, T): an orthogonal matrix of determinant +1."""
    eye = torch.eye(K.shape[-1], dtype=K.dtype, device=K.device)
    return (eye - K) @ torch.linalg.inv(eye + K)


class TriangularShear(nn.Module):
    """z <- z + tanh(W z + b) with W strictly lower (or upper) triangular: Jacobian unit-triangular."""

    def __init__(self, d_model: int, lower: bool) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(d_model, d_model) * 0.02)
        self.bias = nn.Parameter(torch.zeros(d_model))
        ones = torch.ones(d_model, d_model, dtype=torch.bool)
        self.register_buffer("tri", ones.tril(-1) if lower else ones.triu(1), persistent=False)

    def forward(self, z: Tensor) -> Tensor:
        return z + torch.tanh(z @ (self.weight * self.tri).T + self.bias)


@register_mixer("vpt")
class VolumePreservingTransformer(SequenceMixer):
    """Cayley (volume-preserving) attention over the last T inputs + triangular shears, no add connection."""
    cp_state = ("halo",)  # the window of the last T - 1 inputs (docs/distributed.md)

    Config = VPTConfig
    projection_params = ("A",)  # z A once per token (benchmarks/projections.py)
    config: VPTConfig
    modes = ("solve", "reference")
    block_fields = ("window",)

    def __init__(self, d_model: int, mode: str = "auto", **cfg) -> None:
        super().__init__(d_model, mode, **cfg)
        # inputs of a normed stack have |z|^2 ~ D, so entries ~ 0.1 / D keep C~ ~ 0.1 at init: Λ near I
        self.A = tag_ssm_param(nn.Parameter(torch.randn(d_model, d_model) * (0.1 / d_model)))
        self.ffn = nn.Sequential(*(TriangularShear(d_model, lower) for _ in range(self.config.ffn_layers)
                                   for lower in (True, False)))

    def _zero_state(self, batch_size, device, dtype) -> VPTState:
        return VPTState(torch.zeros(batch_size, self.config.window - 1, self.d_model, device=device, dtype=dtype))

    @property
    def state_size(self) -> int:
        return (self.config.window - 1) * self.d_model

    def attention_matrix(self, Z: Tensor) -> Tensor:
        """Λ(Z) (..., T, T) for windows Z (..., T, D) (rows of Z are the paper's columns z_i)."""
        return cayley(skew(Z @ self.A @ Z.transpose(-1, -2)))

    def window_map(self, Z: Tensor) -> Tensor:
        """The paper's map on whole windows: Z (..., T, D) -> FF applied to every column of Z Λ(Z)."""
        return self.ffn(self.attention_matrix(Z).transpose(-1, -2) @ Z)

    def _step(self, x_t: Tensor, state: VPTState, dt: Tensor | None) -> tuple[Tensor, VPTState]:
        y, new = self._forward(x_t[:, None], state, ForwardCall("solve"))
        return y[:, 0], new

    def _forward(self, x: Tensor, state: VPTState | None, call: ForwardCall) -> tuple[Tensor, VPTState]:
        B, L, _ = x.shape
        T = self.config.window
        st = self.init_state(B, x.device, state_dtype(x)) if state is None else VPTState(*state)
        ext = torch.cat([st.z, x.to(st.z.dtype)], 1)  # (B, T - 1 + L, D)
        y = self._readout(ext, call.mode)
        real = call_lengths(call.lengths, B, L, x.device)
        return self.ffn(y).to(x.dtype), VPTState(tail(ext, T - 1 + real, T - 1))

    @float32_core
    def _readout(self, ext: Tensor, mode: str) -> Tensor:
        """ext (B, T - 1 + L, D) -> the last column of Z Λ(Z) for the window Z (T, D) ending at each
        new token (B, L, D)."""
        T = self.config.window
        Z = ext.unfold(1, T, 1).transpose(-1, -2)  # (B, L, T, D)
        ZA = (ext @ self.A).unfold(1, T, 1).transpose(-1, -2)  # z_i A once per token, not once per window
        K = skew(ZA @ Z.transpose(-1, -2))  # C~ (B, L, T, T)
        if mode == "reference":
            col = cayley(K)[..., -1:]
        else:
            eye = torch.eye(T, dtype=K.dtype, device=K.device)
            w = torch.linalg.solve(eye + K, eye[:, -1:].expand(*K.shape[:-1], 1))  # (I + C~) w = e_T
            col = w - K @ w  # Λ e_T = (I - C~) w
        return (col.transpose(-1, -2) @ Z)[..., 0, :]


__all__ = ["TriangularShear", "VPTConfig", "VPTState", "VolumePreservingTransformer", "cayley", "skew"]
