"""Mamba (Gu & Dao 2023): the layer equals the paper's equations written out naively in float64 (in
every mode, from a carried state), its state layout, mamba_ssm / Hugging Face parameter names and
shapes, the dt initialization and scaling, cpp == chunked on the layer with gradients, config errors."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

import ssmkit
from conftest import assert_close_rel
from ssmkit.ops import selective_scan

D, E, N, K, R = 6, 12, 4, 4, 3  # d_model, expand * d_model, d_state, d_conv, dt_rank


def make(seed: int = 0, perturb: float = 0.1, **cfg) -> torch.nn.Module:
    torch.manual_seed(seed)
    cfg = {"d_state": N, "d_conv": K, "expand": 2, "dt_rank": R, "conv_bias": True, "bias": True, **cfg}
    m = ssmkit.create_mixer("mamba", D, **cfg).double()
    g = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():  # off the structured init, so that every parameter matters
        for p in m.parameters():
            p.add_(perturb * torch.randn(p.shape, generator=g, dtype=p.dtype))
    return m


def naive_mamba(m, u: torch.Tensor, conv0: torch.Tensor, h0: torch.Tensor):
    """The paper's Algorithm 2 with mamba_ssm's projections, one token and one tap at a time."""
    Bsz, L, _ = u.shape
    xz = u @ m.in_proj.weight.T + m.in_proj.bias
    x, z = xz[..., :E], xz[..., E:]
    hist = torch.cat([conv0, x], dim=1)  # the K-1 inputs before x, oldest first, then x
    w, b = m.conv1d.weight[:, 0, :], m.conv1d.bias  # (E, K): tap K-1 meets the current input
    A = -torch.exp(m.A_log)  # (E, N)
    h, ys = h0, []
    for t in range(L):
        conv = b + sum(w[:, j] * hist[:, t + j] for j in range(K))  # causal depthwise convolution
        xc = F.silu(conv)  # (B, E)
        proj = xc @ m.x_proj.weight.T
        delta_r, Bt, Ct = proj[:, :R], proj[:, R:R + N], proj[:, R + N:]
        delta = F.softplus(delta_r @ m.dt_proj.weight.T + m.dt_proj.bias)  # Δ (B, E)
        h = torch.exp(delta[..., None] * A) * h + (delta * xc)[..., None] * Bt[:, None, :]  # ZOH A, Euler B
        y = (h * Ct[:, None, :]).sum(-1) + m.D * xc
        ys.append((y * F.silu(z[:, t])) @ m.out_proj.weight.T + m.out_proj.bias)
    return torch.stack(ys, 1), (hist[:, L:], h)


@pytest.mark.parametrize("mode", ["reference", "chunked", "cpp"])
def test_layer_equals_the_equations_written_out(mode):
    if mode == "cpp" and (reason := selective_scan.MODES.unavailable_reason("cpp")) is not None:
        pytest.skip(f"the C++ kernel cannot run here: {reason}")
    m = make()
    g = torch.Generator().manual_seed(3)
    u = torch.randn(2, 13, D, generator=g, dtype=torch.float64)
    conv0 = torch.randn(2, K - 1, E, generator=g, dtype=torch.float64)
    h0 = torch.randn(2, E, N, generator=g, dtype=torch.float64)
    y_ref, (c_ref, h_ref) = naive_mamba(m, u, conv0, h0)
    y, (c, h) = m(u, (conv0, h0), return_state=True, mode=mode)
    assert_close_rel(y, y_ref, 1e-10, "y")
    assert_close_rel(c, c_ref, 1e-12, "conv state")
    assert_close_rel(h, h_ref, 1e-10, "ssm state")


def test_state_layout():
    """(conv_state (B, d_conv-1, E): the last d_conv-1 inputs of the convolution, oldest first;
    ssm_state (B, E, N)), zeros from init_state, and state_size counts both."""
    m = make()
    u = torch.randn(3, 9, D, dtype=torch.float64)
    _, (conv, h) = m(u, return_state=True)
    x = m.in_proj(u)[..., :E]
    assert conv.shape == (3, K - 1, E) and h.shape == (3, E, N)
    assert torch.equal(conv, x[:, -(K - 1):])
    zeros = m.init_state(3)
    assert [t.shape for t in zeros] == [(3, K - 1, E), (3, E, N)] and not any(t.any() for t in zeros)
    assert m.state_size == E * (K - 1 + N)
    short = u[:, :1]  # fewer tokens than the window: the older slots keep the zeros before them
    _, (conv, _) = m(short, return_state=True)
    assert not conv[:, :-1].any() and torch.equal(conv[:, -1], m.in_proj(short)[:, 0, :E])


def test_parameter_names_and_shapes_match_mamba_ssm():
    m = ssmkit.create_mixer("mamba", 16, d_state=8, d_conv=4, expand=2)  # dt_rank = ceil(16 / 16) = 1
    shapes = {name: tuple(p.shape) for name, p in m.named_parameters()}
    assert shapes == {
        "in_proj.weight": (64, 16), "conv1d.weight": (32, 1, 4), "conv1d.bias": (32,),
        "x_proj.weight": (1 + 2 * 8, 32), "dt_proj.weight": (32, 1), "dt_proj.bias": (32,),
        "A_log": (32, 8), "D": (32,), "out_proj.weight": (16, 32),
    }
    assert m.dt_rank == math.ceil(16 / 16)


def test_initialization():
    """A = -(1..N) per channel (S4D-Real), D = 1, softplus(dt bias) log-uniform in [dt_min, dt_max],
    dt_proj weights uniform in ±dt_scale / sqrt(dt_rank); the SSM parameters are tagged."""
    torch.manual_seed(0)
    m = ssmkit.create_mixer("mamba", 64, d_state=8, dt_min=1e-3, dt_max=1e-1, dt_scale=2.0, dt_rank=4)
    assert torch.equal(m.A_log, torch.log(torch.arange(1.0, 9.0)).expand(128, 8))
    assert torch.equal(m.D, torch.ones(128))
    dt = F.softplus(m.dt_proj.bias.double())
    assert dt.min() >= 1e-3 * (1 - 1e-6) and dt.max() <= 1e-1 * (1 + 1e-6)
    log_dt = dt.log()  # log-uniform: mean and spread of U(log 1e-3, log 1e-1), 128 draws
    assert abs(log_dt.mean() - math.log(1e-2)) < 0.5 and log_dt.std() > 0.8
    std = 4**-0.5 * 2.0
    w = m.dt_proj.weight
    assert w.abs().max() <= std and w.abs().max() > 0.9 * std
    for p in (m.A_log, m.D, m.dt_proj.bias):
        assert p._optim == {"weight_decay": 0.0, "lr": 1e-3}


def test_dt_init_floor():
    torch.manual_seed(0)
    m = ssmkit.create_mixer("mamba", 16, dt_min=1e-6, dt_max=1e-5, dt_init_floor=1e-4)
    assert_close_rel(F.softplus(m.dt_proj.bias.double()), torch.full((32,), 1e-4, dtype=torch.float64), 1e-5, "dt")


def test_cpp_equals_chunked_on_the_layer_with_gradients():
    if (reason := selective_scan.MODES.unavailable_reason("cpp")) is not None:
        pytest.skip(f"the C++ kernel cannot run here: {reason}")
    m = make(seed=1)
    g = torch.Generator().manual_seed(4)
    x = torch.randn(2, 70, D, generator=g, dtype=torch.float64)  # past the kernel's 64-step checkpoints
    s0 = (torch.randn(2, K - 1, E, generator=g, dtype=torch.float64), torch.randn(2, E, N, generator=g, dtype=torch.float64))
    mask = torch.ones(2, 70, dtype=torch.bool)
    mask[1, 40:] = False
    w = torch.randn(2, 70, D, generator=g, dtype=torch.float64)
    out = {}
    for mode in ("cpp", "chunked"):
        xg, sg = x.clone().requires_grad_(), [t.clone().requires_grad_() for t in s0]
        y, s = m(xg, tuple(sg), mask=mask, return_state=True, mode=mode)
        loss = (y * w).sum() + s[0].sum() + 0.5 * s[1].sum()
        out[mode] = (y, s, torch.autograd.grad(loss, [xg, *sg, *m.parameters()]))
    (y_c, s_c, g_c), (y_p, s_p, g_p) = out["cpp"], out["chunked"]
    assert_close_rel(y_c, y_p, 1e-10, "y")
    for a, b, name in zip(s_c, s_p, ("conv", "ssm")):
        assert_close_rel(a, b, 1e-10, f"{name} state")
    names = ["x", "conv0", "h0", *dict(m.named_parameters())]
    for a, b, name in zip(g_c, g_p, names, strict=True):
        assert_close_rel(a, b, 1e-9, f"grad {name}")


@pytest.mark.parametrize("cfg, field", [
    (dict(d_state=0), "d_state"), (dict(d_conv=0), "d_conv"), (dict(expand=0), "expand"),
    (dict(dt_rank=0), "dt_rank"), (dict(dt_min=0.2, dt_max=0.1), "dt_min"), (dict(ssm_lr=0.0), "ssm_lr"),
])
def test_bad_config_names_the_field(cfg, field):
    with pytest.raises(ValueError, match=field):
        ssmkit.create_mixer("mamba", 8, **cfg)
