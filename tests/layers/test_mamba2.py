"""Mamba-2 (Dao & Gu 2024): the layer equals the SSD layer's equations written out naively in float64
(every mode, from a carried state, grouped B/C and norm, a clamped step, chunks crossed with a
remainder), its state layout, mamba_ssm / Hugging Face parameter names and shapes, its
initialization, config errors."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

import ssmkit
from conftest import assert_close_rel

D, P, N, G, K = 8, 4, 3, 2, 4  # d_model, head_dim, d_state, n_groups, d_conv
E = 2 * D  # expand * d_model
H = E // P  # heads, H / G = 2 heads per group


def make(seed: int = 0, perturb: float = 0.1, **cfg) -> torch.nn.Module:
    torch.manual_seed(seed)
    cfg = {"d_state": N, "d_conv": K, "expand": 2, "head_dim": P, "n_groups": G, "chunk_size": 4,
           "bias": True, **cfg}
    m = ssmkit.create_mixer("mamba2", D, **cfg).double()
    g = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():  # off the structured init, so that every parameter matters
        for p in m.parameters():
            p.add_(perturb * torch.randn(p.shape, generator=g, dtype=p.dtype))
    return m


def naive_mamba2(m, u: torch.Tensor, conv0: torch.Tensor, h0: torch.Tensor):
    """in_proj -> [z, xBC, dt]; causal depthwise conv + SiLU on xBC; per head h (group h // (H/G)):
    h_t = exp(Δ_t A) h_{t-1} + Δ_t x_t B_tᵀ, y_t = h_t C_t + D x_t; RMSNorm per group of y ⊙ silu(z)."""
    Bsz, L, _ = u.shape
    proj = u @ m.in_proj.weight.T + m.in_proj.bias
    z, xbc, dt = proj[..., :E], proj[..., E:2 * E + 2 * G * N], proj[..., 2 * E + 2 * G * N:]
    hist = torch.cat([conv0, xbc], dim=1)  # the K-1 inputs before xbc, oldest first
    w, b = m.conv1d.weight[:, 0, :], m.conv1d.bias
    A = -torch.exp(m.A_log)  # (H,)
    lo, hi = m.config.dt_limit
    h, ys = h0, []
    for t in range(L):
        xc = F.silu(b + sum(w[:, j] * hist[:, t + j] for j in range(K)))
        x, Bt, Ct = xc[:, :E].view(Bsz, H, P), xc[:, E:E + G * N].view(Bsz, G, N), xc[:, E + G * N:].view(Bsz, G, N)
        delta = F.softplus(dt[:, t] + m.dt_bias).clamp(lo, hi)  # (B, H)
        y = torch.empty(Bsz, H, P, dtype=u.dtype)
        h = h.clone()
        for head in range(H):
            grp = head // (H // G)
            h[:, head] = (torch.exp(delta[:, head] * A[head])[:, None, None] * h[:, head]
                          + (delta[:, head, None] * x[:, head])[..., None] * Bt[:, grp, None, :])
            y[:, head] = (h[:, head] * Ct[:, grp, None, :]).sum(-1) + m.D[head] * x[:, head]
        gated = (y.reshape(Bsz, E) * F.silu(z[:, t])).view(Bsz, G, E // G)
        normed = gated / torch.sqrt(gated.pow(2).mean(-1, keepdim=True) + m.config.norm_eps)
        ys.append((normed.reshape(Bsz, E) * m.norm.weight) @ m.out_proj.weight.T + m.out_proj.bias)
    return torch.stack(ys, 1), (hist[:, L:], h)


CLAMP = (0.005, 0.05)  # inside the range of the test's steps softplus(dt + bias): both bounds act


@pytest.mark.parametrize("dt_limit", [(0.0, float("inf")), CLAMP], ids=["no-clamp", "clamp"])
@pytest.mark.parametrize("mode", ["reference", "quadratic", "chunked"])
def test_layer_equals_the_equations_written_out(mode, dt_limit):
    m = make(dt_limit=dt_limit)
    g = torch.Generator().manual_seed(3)
    u = torch.randn(2, 13, D, generator=g, dtype=torch.float64)  # 3 chunks of 4 and a remainder
    conv0 = torch.randn(2, K - 1, E + 2 * G * N, generator=g, dtype=torch.float64)
    h0 = torch.randn(2, H, P, N, generator=g, dtype=torch.float64)
    y_ref, (c_ref, h_ref) = naive_mamba2(m, u, conv0, h0)
    y, (c, h) = m(u, (conv0, h0), return_state=True, mode=mode)
    assert_close_rel(y, y_ref, 1e-10, "y")
    assert_close_rel(c, c_ref, 1e-12, "conv state")
    assert_close_rel(h, h_ref, 1e-10, "ssm state")


def test_clamp_is_active():
    """The clamped test above must clamp: some softplus(dt + bias) fall below and some above CLAMP."""
    m = make(dt_limit=CLAMP)
    u = torch.randn(2, 13, D, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    raw = F.softplus(m.in_proj(u)[..., -H:] + m.dt_bias)
    assert (raw < CLAMP[0]).any() and (raw > CLAMP[1]).any()


def test_state_layout():
    """(conv_state (B, d_conv-1, E + 2 G N): the last inputs of the convolution over [x, B, C];
    ssm_state (B, H, P, N)), zeros from init_state, and state_size counts both."""
    m = make()
    u = torch.randn(3, 9, D, dtype=torch.float64)
    _, (conv, h) = m(u, return_state=True)
    xbc = m.in_proj(u)[..., E:2 * E + 2 * G * N]
    assert conv.shape == (3, K - 1, E + 2 * G * N) and h.shape == (3, H, P, N)
    assert torch.equal(conv, xbc[:, -(K - 1):])
    zeros = m.init_state(3)
    assert [t.shape for t in zeros] == [(3, K - 1, E + 2 * G * N), (3, H, P, N)] and not any(t.any() for t in zeros)
    assert m.state_size == (E + 2 * G * N) * (K - 1) + E * N


def test_parameter_names_and_shapes_match_mamba_ssm():
    m = ssmkit.create_mixer("mamba2", 32, d_state=16, d_conv=4, expand=2, head_dim=16, n_groups=2)
    inner, heads, conv_dim = 64, 4, 64 + 2 * 2 * 16
    shapes = {name: tuple(p.shape) for name, p in m.named_parameters()}
    assert shapes == {
        "in_proj.weight": (2 * inner + 2 * 2 * 16 + heads, 32), "conv1d.weight": (conv_dim, 1, 4),
        "conv1d.bias": (conv_dim,), "dt_bias": (heads,), "A_log": (heads,), "D": (heads,),
        "norm.weight": (inner,), "out_proj.weight": (32, inner),
    }


def test_initialization():
    """softplus(dt_bias) log-uniform in [dt_min, dt_max], -A = exp(A_log) uniform in A_init_range,
    D = 1, norm weight 1; dt_bias, A_log, D are tagged."""
    torch.manual_seed(0)
    m = ssmkit.create_mixer("mamba2", 256, head_dim=4, dt_min=1e-3, dt_max=1e-1, A_init_range=(2.0, 8.0))
    dt = F.softplus(m.dt_bias.double())
    assert dt.min() >= 1e-3 * (1 - 1e-6) and dt.max() <= 1e-1 * (1 + 1e-6)
    assert abs(dt.log().mean() - math.log(1e-2)) < 0.5 and dt.log().std() > 0.8  # 128 heads
    A = torch.exp(m.A_log.double())
    assert A.min() >= 2.0 * (1 - 1e-6) and A.max() <= 8.0 * (1 + 1e-6) and A.std() > 1.0
    assert torch.equal(m.D, torch.ones(128)) and torch.equal(m.norm.weight, torch.ones(512))
    for p in (m.dt_bias, m.A_log, m.D):
        assert p._optim == {"weight_decay": 0.0, "lr": 1e-3}


@pytest.mark.parametrize("cfg, field", [
    (dict(head_dim=5), "head_dim"), (dict(n_groups=3), "n_groups"), (dict(chunk_size=0), "chunk_size"),
    (dict(dt_limit=(0.5, 0.1)), "dt_limit"), (dict(A_init_range=(0.0, 1.0)), "A_init_range"),
    (dict(dt_min=0.2, dt_max=0.1), "dt_min"),
])
def test_bad_config_names_the_field(cfg, field):
    with pytest.raises(ValueError, match=field):
        ssmkit.create_mixer("mamba2", 8, **cfg)
