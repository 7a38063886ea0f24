"""RWKV-6 "Finch" time mixing (Peng et al. 2024, "Eagle and Finch: RWKV with Matrix-Valued States
and Dynamic Recurrence"), the block's attention replacement (channel mixing lives in the block).

With the token shift Δx_t = x_{t-1} - x_t (x_{-1} from the state) and the data-dependent lerp

    ddlerp_□(x_t) = x_t + Δx_t ⊙ (μ_□ + tanh((x_t + Δx_t ⊙ μ_x) A_□) B_□)   □ ∈ {w, k, v, r, g}
    r, k, v  = W_r ddlerp_r, W_k ddlerp_k, W_v ddlerp_v;   g = silu(W_g ddlerp_g)
    w_t      = exp(-exp(d + tanh(ddlerp_w A_d) B_d))           per channel, the decay in (0, 1)
    o_t      = r_tᵀ (S_{t-1} + diag(u) k_t v_tᵀ),   S_t = diag(w_t) S_{t-1} + k_t v_tᵀ   per head
    y        = W_o (GroupNorm_H(o) ⊙ g)

(paper eqs. 15-20; initialization and names follow the authors' RWKV-LM ``RWKV_Tmix_x060``:
time_maa_* (μ and the LoRA A, B of the mixing), time_decay (d) and time_decay_w1/w2 (A_d, B_d),
time_faaaa (u), receptance/key/value/gate/output, ln_x). r, k, w, u have H K = expand_k · D channels and
v, g, the norm H V = expand_v · D (RWKV-LM: both D; flash-linear-attention's RWKV-6 models default to
expand_k = 0.5). The state is (x_prev (B, D), S (B, H, K, V)). Padded steps get log w = 0 and k = 0:
identities on S. Derivation: docs/math/rwkv6.md.
"""
from __future__ import annotations

import dataclasses

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..config import check
from ..ops import rwkv6 as rwkv6_op
from ..ops.rwkv6 import rwkv6, rwkv6_step
from .base import MixerConfig, SequenceMixer, tag_ssm_param
from .call import ForwardCall
from .registry import register_mixer


@dataclasses.dataclass
class RWKV6Config(MixerConfig):
    num_heads: int | None = None  # H; None: heads of 64 key channels (RWKV's head_size), at least one
    expand_k: float = 1.0  # H K = int(expand_k * D): receptance, key, decay and bonus width
    expand_v: float = 1.0  # H V = int(expand_v * D): value, gate and norm width
    mix_lora_rank: int = 32  # rank of the ddlerp LoRA (RWKV-LM: 32, 64 at D = 4096)
    decay_lora_rank: int = 64  # rank of the decay LoRA (RWKV-LM: 64, 128 at D = 4096)
    layer_idx: int = 0  # position of this layer in the stack: the init depends on depth
    n_layers: int = 2  # layers in the stack
    norm_eps: float = 64e-5  # GroupNorm eps: RWKV-LM's 1e-5 · head_size_divisor² (8²)
    chunk_size: int = 32  # chunk length of the chunked mode (rounded down to a power of two)
    ssm_lr: float | None = None  # lr of the tagged time_* parameters (None: the optimizer's)

    def __post_init__(self) -> None:
        check(self.num_heads is None or self.num_heads >= 1, "num_heads",
              f"must be None or >= 1, got {self.num_heads}")
        check(self.expand_k > 0, "expand_k", f"must be > 0, got {self.expand_k}")
        check(self.expand_v > 0, "expand_v", f"must be > 0, got {self.expand_v}")
        check(self.mix_lora_rank >= 1, "mix_lora_rank", f"must be >= 1, got {self.mix_lora_rank}")
        check(self.decay_lora_rank >= 1, "decay_lora_rank", f"must be >= 1, got {self.decay_lora_rank}")
        check(self.n_layers >= 1, "n_layers", f"must be >= 1, got {self.n_layers}")
        check(0 <= self.layer_idx < self.n_layers, "layer_idx",
              f"must be in [0, n_layers={self.n_layers}), got {self.layer_idx}")
        check(self.norm_eps > 0, "norm_eps", f"must be > 0, got {self.norm_eps}")
        check(self.chunk_size >= 1, "chunk_size", f"must be >= 1, got {self.chunk_size}")
        check(self.ssm_lr is None or self.ssm_lr > 0, "ssm_lr", f"must be None or > 0, got {self.ssm_lr}")


@register_mixer("rwkv6")
class RWKV6(SequenceMixer):
    """Finch time mixing. Modes: ``chunked`` (dyadic matmul form), ``reference`` (loop)."""
    cp_state = ("halo", "diag")  # context parallelism: token shift, S decays along K

    Config = RWKV6Config
    config: RWKV6Config
    modes = rwkv6_op.MODES  # chunked, reference
    packed_modes = ("chunked", "reference")  # the token shift and the op reset at a document start

    def __init__(self, d_model: int, mode: str = "auto", **cfg) -> None:
        super().__init__(d_model, mode, **cfg)
        c = self.config
        D = d_model
        Kw, Vw = int(c.expand_k * D), int(c.expand_v * D)
        check(Kw >= 1 and Vw >= 1, "expand_k", f"key and value widths must be >= 1, got {Kw} and {Vw}")
        H = c.num_heads if c.num_heads is not None else max(1, Kw // 64)
        for name, width in (("expand_k", Kw), ("expand_v", Vw)):
            check(width % H == 0, "num_heads", f"must divide int({name} * d_model) = {width}, got {H}")
        self.n_heads, self.head_k, self.head_v = H, Kw // H, Vw // H
        # RWKV_Tmix_x060.__init__, with n_embd = D and dim_att = Kw (keys) / Vw (values)
        depth = c.layer_idx / max(c.n_layers - 1, 1)  # ratio_0_to_1
        shallow = 1.0 - c.layer_idx / c.n_layers  # ratio_1_to_almost0
        ddd = torch.arange(D) / D
        self.time_maa_x = nn.Parameter(1.0 - ddd.pow(shallow))
        self.time_maa_w = nn.Parameter(1.0 - ddd.pow(shallow))
        self.time_maa_k = nn.Parameter(1.0 - ddd.pow(shallow))
        self.time_maa_v = nn.Parameter(1.0 - (ddd.pow(shallow) + 0.3 * depth))
        self.time_maa_r = nn.Parameter(1.0 - ddd.pow(0.5 * shallow))
        self.time_maa_g = nn.Parameter(1.0 - ddd.pow(0.5 * shallow))
        R, Rd = c.mix_lora_rank, c.decay_lora_rank
        self.time_maa_w1 = nn.Parameter(torch.zeros(D, 5 * R))
        self.time_maa_w2 = nn.Parameter(torch.empty(5, R, D).uniform_(-0.01, 0.01))
        n = torch.arange(Kw) / max(Kw - 1, 1)
        self.time_decay = nn.Parameter(-6 + 5 * n.pow(0.7 + 1.3 * depth))
        self.time_decay_w1 = nn.Parameter(torch.zeros(D, Rd))
        self.time_decay_w2 = nn.Parameter(torch.empty(Rd, Kw).uniform_(-0.01, 0.01))
        zigzag = ((torch.arange(Kw) + 1) % 3 - 1) * 0.1
        self.time_faaaa = nn.Parameter((depth * (1 - n) + zigzag).view(H, self.head_k))
        self.receptance = nn.Linear(D, Kw, bias=False)
        self.key = nn.Linear(D, Kw, bias=False)
        self.value = nn.Linear(D, Vw, bias=False)
        self.gate = nn.Linear(D, Vw, bias=False)
        self.output = nn.Linear(Vw, D, bias=False)
        self.ln_x = nn.GroupNorm(H, Vw, eps=c.norm_eps)
        # RWKV-LM trains every time_* parameter without weight decay
        for name, p in self.named_parameters():
            if name.startswith("time_"):
                tag_ssm_param(p, lr=c.ssm_lr)

    def _mix(self, x: Tensor, x_prev: Tensor) -> tuple[Tensor, ...]:
        """x (..., D), x_prev (..., D) the previous token -> r, k (..., H, K), v (..., H, V), g (..., H V),
        log w (..., H, K)."""
        dx = x_prev - x
        xxx = torch.tanh((x + dx * self.time_maa_x) @ self.time_maa_w1)  # (..., 5R)
        m = torch.einsum("...fr,frd->f...d", xxx.unflatten(-1, (5, -1)), self.time_maa_w2)
        mw, mk, mv, mr, mg = m.unbind(0)
        xw = x + dx * (self.time_maa_w + mw)
        xk = x + dx * (self.time_maa_k + mk)
        xv = x + dx * (self.time_maa_v + mv)
        xr = x + dx * (self.time_maa_r + mr)
        xg = x + dx * (self.time_maa_g + mg)
        keys = (self.n_heads, self.head_k)
        r = self.receptance(xr).unflatten(-1, keys)
        k = self.key(xk).unflatten(-1, keys)
        v = self.value(xv).unflatten(-1, (self.n_heads, self.head_v))
        g = F.silu(self.gate(xg))
        w = self.time_decay + torch.tanh(xw @ self.time_decay_w1) @ self.time_decay_w2
        return r, k, v, g, -torch.exp(w).unflatten(-1, keys)

    def _output(self, o: Tensor, g: Tensor) -> Tensor:
        """o (..., H, V), g (..., D) -> (..., D): per-head GroupNorm, gate, output projection."""
        # GroupNorm over the heads written as a per-head layer_norm plus the affine: same values,
        # and torch's group_norm backward is about twice as slow without a spatial extent
        o = F.layer_norm(o, o.shape[-1:], eps=self.ln_x.eps).flatten(-2)
        return self.output(torch.addcmul(self.ln_x.bias, o, self.ln_x.weight) * g)

    def _forward(self, x: Tensor, state, call: ForwardCall):
        batch, L, D = x.shape
        x_prev, S = (x.new_zeros(batch, D), None) if state is None else state
        shifted = call.zero_starts(torch.cat([x_prev[:, None], x[:, :-1]], dim=1))  # x_{t-1}; 0 at a document start
        r, k, v, g, log_w = self._mix(x, shifted)
        if call.lengths is None:
            last = x[:, -1]
        else:  # x_prev for the next call is each row's last real token
            last = torch.cat([x_prev[:, None], x], dim=1)[torch.arange(batch, device=x.device), call.lengths]
        # log w = 0, k = 0: padded steps leave S unchanged
        o, S = rwkv6(r, call.zero_pads(k), v, call.zero_pads(log_w), self.time_faaaa, S, mode=call.mode,
                     chunk_size=self.config.chunk_size, starts=call.starts)
        return self._output(o, g), (last, S)

    def _step(self, x_t: Tensor, state, dt: Tensor | None):
        x_prev, S = state
        r, k, v, g, log_w = self._mix(x_t, x_prev)
        o, S = rwkv6_step(r, k, v, log_w, self.time_faaaa, S)
        return self._output(o, g), (x_t, S)

    def _zero_state(self, batch_size, device, dtype):
        return (
            torch.zeros(batch_size, self.d_model, device=device, dtype=dtype),
            torch.zeros(batch_size, self.n_heads, self.head_k, self.head_v, device=device, dtype=dtype),
        )

    @property
    def state_size(self) -> int:
        return self.d_model + self.n_heads * self.head_k * self.head_v
