"""GSS: Mehta, Gupta, Cutkosky, Neyshabur 2023, "Long Range Language Modeling via Gated State
Spaces" (the Gated State Space layer of their Fig. 1).

With F = expand * D (gate width) and H = d_ssm (the reduced SSM width):

    v  = GELU(W_v x)                    (B, L, F)   gate branch
    u  = GELU(W_u x)                    (B, L, H)   SSM branch
    y  = DSS(u)                         (B, L, H)   per channel: h_t = dA h_{t-1} + dB u_t,
                                                    y_t = Re(C h_t) + D u_t
    uc = W_c y                          (B, L, F)
    o  = W_o (uc * v)                   (B, L, D)

The SSM is this library's DSS recurrence (``layers/dss.py``; variant ``exp`` by default), run by
its own modes (fft / chunked / reference) with its state handling, so GSS inherits exact state carry,
padding and ``step``. The paper's pre-norm and residual (``shortcut``) belong to the model's block.
docs/math/gss.md.
"""
from __future__ import annotations

import dataclasses

import torch.nn.functional as F
from torch import Tensor, nn

from ..config import check
from .base import SequenceMixer
from .call import ForwardCall
from .dss import DSS, DSSConfig
from .registry import register_mixer


@dataclasses.dataclass
class GSSConfig(DSSConfig):
    variant: str = "exp"  # DSS kernel of the SSM branch: "exp" | "softmax"
    expand: int = 4  # F = expand * D: width of the gate branch (the paper's F/E = 4096/1024)
    d_ssm: int | None = None  # H: width of the SSM branch; None: max(1, D // 4) (the paper's 256/1024)

    def __post_init__(self) -> None:
        super().__post_init__()
        check(self.expand >= 1, "expand", f"must be an int >= 1, got {self.expand!r}")
        h = self.d_ssm
        check(h is None or h >= 1, "d_ssm", f"must be None or an int >= 1, got {h!r}")


class _DSSCore(DSS):
    """The DSS recurrence and its D skip, without DSS's GELU + GLU head (GSS has its own)."""

    def __init__(self, d_model: int, **cfg) -> None:
        super().__init__(d_model, **cfg)
        del self.output_linear, self.activation, self.dropout

    def _post(self, y: Tensor, u: Tensor) -> Tensor:
        return y + self.D * u


@register_mixer("gss")
class GSS(SequenceMixer):
    """Gated State Space layer (B, L, D) -> (B, L, D); state (h,) of the DSS core, h (B, H, N/2) complex."""
    cp_state = ("diag",)  # context parallelism (docs/distributed.md)

    Config = GSSConfig
    config: GSSConfig
    modes = DSS.modes
    packed_modes = DSS.packed_modes  # the DSS core's; the gate and projections act per token

    def __init__(self, d_model: int, mode: str = "auto", **cfg) -> None:
        super().__init__(d_model, mode, **cfg)
        c = self.config
        E, H = c.expand * d_model, c.d_ssm or max(1, d_model // 4)
        self.gate_proj = nn.Linear(d_model, E)
        self.ssm_in = nn.Linear(d_model, H)
        self.ssm = _DSSCore(H, **{f.name: getattr(c, f.name) for f in dataclasses.fields(DSSConfig)})
        self.ssm_out = nn.Linear(H, E)
        self.dropout = nn.Dropout(c.dropout)
        self.out_proj = nn.Linear(E, d_model)

    def _zero_state(self, batch_size, device, dtype):
        return self.ssm._zero_state(batch_size, device, dtype)

    @property
    def state_size(self) -> int:
        return self.ssm.state_size

    def _gate(self, y: Tensor, x: Tensor) -> Tensor:
        return self.out_proj(self.dropout(self.ssm_out(y) * F.gelu(self.gate_proj(x))))

    def _forward(self, x: Tensor, state, call: ForwardCall):
        y, state = self.ssm._forward(F.gelu(self.ssm_in(x)), state, call)
        return self._gate(y, x), state

    def _step(self, x_t: Tensor, state, dt: Tensor | None):
        y, state = self.ssm._step(F.gelu(self.ssm_in(x_t)), state, dt)
        return self._gate(y, x_t), state
