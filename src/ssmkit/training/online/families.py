"""How each diagonal mixer's one-token step splits into what real-time recurrent learning needs.

Dimension legend: B batch, D layer width, N state elements (S = the state's shape without B:
(N,) for LRU / S5 / RG-LRU, (H, N) for S4D / DSS), K row length of a row parameter.

A family adapter reads a layer through its own attributes and methods (no copy of its math where
the layer exposes it) and presents its step as

    h_t = a_t * h_{t-1} + b_t,      (a_t, b_t) = recur(q, z_t, e_t)       every factor (B, *S)

- ``q``: *element parameters*, intermediates of shape S (or broadcastable to it) computed from the
  raw parameters by the layer's own parameterization (LRU lambda, S4D dA, RG-LRU log sigma(Lambda));
- ``z_t[..., n] = sum_k M[n, k] U_t[..., n, k]``: products of a *row parameter* M (S + (K,)) with
  this step's signal U_t, so that state element n reads only its own row (LRU gamma B against x_t,
  RG-LRU's block-diagonal gate weights against the conv output);
- ``e_t``: other element-wise signals of this step (RG-LRU's gated input u_t).

``recur`` is element-wise in n: that is what makes every sensitivity a trace of the state's shape
(docs/online.md). ``post(h_t, x_t)`` is the layer's own output block, instantaneous in h_t.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ...layers._diagonal_lti import DiagonalLTI
from ...layers.base import SequenceMixer
from ...layers.lru import LRU
from ...layers.rglru import RGLRU
from ...layers.s5 import S5
from ...ops.short_conv import short_conv_step

SUPPORTED = ("lru", "s4d", "dss", "s5", "rglru")


class Family:
    """Adapter base: one mixer's step in the (q, M, U, e) form above."""

    name = ""
    input_row: str | None = None  # the row whose signal U is the layer input x itself (exact encoder trace)

    def __init__(self, mixer: SequenceMixer) -> None:
        self.mixer = mixer

    def init(self, batch: int, dtype: torch.dtype, device) -> tuple[Tensor, tuple]:
        """(h0 (B, *S), carry): the zero state and the family's own per-sequence buffers."""
        return self.mixer.init_state(batch, device=device, dtype=dtype)[-1], ()

    def intermediates(self) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
        """({name: q (S)}, {name: M (S + (K,))}) from the raw parameters, in the autograd graph."""
        raise NotImplementedError

    def signals(self, x: Tensor, carry: tuple) -> tuple[dict[str, Tensor], dict[str, Tensor], tuple]:
        """x (B, D) -> ({row: U (B, *S', K) broadcastable to B, *S, K}, {name: e (B, *S)}, new carry)."""
        raise NotImplementedError

    def recur(self, q: dict[str, Tensor], z: dict[str, Tensor], e: dict[str, Tensor]) -> tuple[Tensor, Tensor]:
        """(a_t, b_t), element-wise in the state index."""
        raise NotImplementedError

    def post(self, h: Tensor, x: Tensor) -> Tensor:
        """The layer's output block: h (B, *S), x (B, D) -> y (B, D)."""
        raise NotImplementedError

    def encoder_grad(self, M: Tensor, G: Tensor) -> Tensor:
        """Map the accumulated input trace G (S + (K_raw,)) through M to d loss / d encoder (D, K_raw)."""
        raise NotImplementedError(f"{self.name}: no exact input trace")


class LRUFamily(Family):
    """LRU: a = lambda (N,), b = (gamma B) x_t; then the layer's ``output_block``."""

    name = "lru"
    input_row = "M"
    mixer: LRU

    def intermediates(self):
        return {"lam": self.mixer.eigenvalues()}, {"M": self.mixer.input_matrix()}

    def signals(self, x, carry):
        return {"M": x[:, None, :]}, {}, carry

    def recur(self, q, z, e):
        return q["lam"], z["M"]

    def post(self, h, x):
        return self.mixer.output_block(h, x)

    def encoder_grad(self, M, G):
        # z_n = sum_d M[n, d] x_d: d loss / d E[d, k] = Re sum_n conj(M[n, d]) G[n, k]
        return (M.conj().T @ G).real


class S5Family(LRUFamily):
    """S5: a = dLambda (P',), b = dB x_t with dB = ((dLambda - 1) / Lambda) B~; then its output block."""

    name = "s5"
    mixer: S5

    def intermediates(self):
        dA, dB = self.mixer.discrete()
        return {"lam": dA}, {"M": dB}


class DiagonalLTIFamily(Family):
    """S4D / DSS: per channel h, a = dA (H, N), b = dB * u_h, a row of length K = 1 against u_h."""

    name = "s4d"
    input_row = "dB"
    mixer: DiagonalLTI

    def intermediates(self):
        s = self.mixer.discrete_system()
        return {"dA": s.dA}, {"dB": s.dB[..., None]}

    def signals(self, x, carry):
        return {"dB": x[:, :, None, None]}, {}, carry

    def recur(self, q, z, e):
        return q["dA"], z["dB"]

    def post(self, h, x):
        return self.mixer.output_block(h, x)

    def encoder_grad(self, M, G):
        # z_{h,n} = dB[h, n] x_h: d loss / d E[h, k] = Re sum_n conj(dB[h, n]) G[h, n, k]
        return (M.conj() * G).sum(-2).real


class RGLRUFamily(Family):
    """RG-LRU (Griffin): gates r, i from block-diagonal rows against the conv output u_t.

    carry = (conv_state (B, K-1, W), x_hist (B, K-1, D+1)): the conv's last inputs and the layer's
    last inputs with a 1 appended (zeros before the stream starts), which the exact trace of the
    conv and linear_x parameters reads (``rglru_pre``).
    """

    name = "rglru"
    mixer: RGLRU

    def init(self, batch, dtype, device):
        conv_state, h = self.mixer.init_state(batch, device=device, dtype=dtype)
        x_hist = torch.zeros(batch, self.mixer.config.conv_kernel - 1, self.mixer.d_model + 1,
                             dtype=dtype, device=device)
        return h, (conv_state, x_hist)

    def _blocks(self) -> tuple[int, int]:
        H = self.mixer.config.num_heads
        return H, self.mixer.lru_width // H

    def intermediates(self):
        m = self.mixer
        W = m.lru_width
        q = {"log_sig": F.logsigmoid(m.a_param), "ba": m.gate_a.bias, "bx": m.gate_x.bias}
        return q, {"Wa": m.gate_a.weight.reshape(W, -1), "Wx": m.gate_x.weight.reshape(W, -1)}

    def signals(self, x, carry):
        m = self.mixer
        conv_state, x_hist = carry
        # The conv / linear_x weights enter detached: their exact gradient comes from the block
        # trace (rglru_pre), while x keeps its graph for the spatial error of the layers below.
        xb = F.linear(x, m.linear_x.weight.detach(), m.linear_x.bias.detach())
        u, conv_state = short_conv_step(xb, m.conv1d.weight[:, 0, :].detach(), m.conv1d.bias.detach(), conv_state)
        H, P = self._blocks()
        U = u.unflatten(-1, (H, P))[:, :, None, :].expand(-1, H, P, P).flatten(1, 2)  # (B, W, P): row n's block
        ones = torch.ones_like(x[:, :1])
        x_hist = torch.cat([x_hist, torch.cat([x.detach(), ones], -1)[:, None]], 1)[:, 1:]
        return {"Wa": U, "Wx": U}, {"u": u}, (conv_state, x_hist)

    def recur(self, q, z, e):
        r, i = torch.sigmoid(z["Wa"] + q["ba"]), torch.sigmoid(z["Wx"] + q["bx"])
        log_a = self.mixer.config.c * r * q["log_sig"]
        return torch.exp(log_a), torch.sqrt(-torch.expm1(2 * log_a)) * (i * e["u"])

    def post(self, h, x):
        m = self.mixer
        return m.linear_out(F.gelu(m.linear_y(x), approximate="tanh") * h)


def online_family(mixer: nn.Module) -> Family:
    """The adapter for ``mixer``; a clear error for a mixer without an element-wise recurrence."""
    name = getattr(mixer, "mixer_name", type(mixer).__name__)
    if isinstance(mixer, LRU):
        return LRUFamily(mixer)
    if isinstance(mixer, S5):
        return S5Family(mixer)
    if isinstance(mixer, DiagonalLTI):
        return DiagonalLTIFamily(mixer)
    if isinstance(mixer, RGLRU):
        return RGLRUFamily(mixer)
    raise ValueError(
        f"online learning (RTRL) needs an element-wise (diagonal) recurrence; mixer {name!r} is not "
        f"supported. Supported mixers: {', '.join(SUPPORTED)}"
    )
