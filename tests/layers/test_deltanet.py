"""DeltaNet / Gated DeltaNet mixer: the layer vs its equations written out token by token, chunked
vs reference across several chunks (outputs, states, all gradients), init, config errors."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from conftest import assert_close_rel

import ssmkit
from ssmkit.testing import check_mixer

VARIANTS = {
    "deltanet": {},
    "gated": {"gated": True},
    "gated_no_output_gate": {"gated": True, "output_gate": False},
}


def make(d_model: int = 8, seed: int = 0, perturb: float = 0.3, **cfg):
    torch.manual_seed(seed)
    m = ssmkit.create_mixer("deltanet", d_model, **cfg).double()
    g = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():  # move off the init so that every parameter matters
        for p in m.parameters():
            p.add_(perturb * torch.randn(p.shape, generator=g, dtype=p.dtype))
    return m


def written_out(m, x: torch.Tensor, S0: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The layer's equations with the papers' (V, K) state, one token at a time, independent of
    the ops: full-length F.conv1d with causal padding, explicit matrices."""
    B, L, _ = x.shape
    H, K, V = m.n_heads, m.head_k, m.head_v

    def conv(lin, conv1d):
        u = lin(x).transpose(1, 2)  # (B, C, L)
        y = F.conv1d(F.pad(u, (conv1d.kernel_size[0] - 1, 0)), conv1d.weight, conv1d.bias, groups=u.shape[1])
        return F.silu(y.transpose(1, 2))

    q = conv(m.q_proj, m.q_conv1d).view(B, L, H, K)
    k = conv(m.k_proj, m.k_conv1d).view(B, L, H, K)
    v = conv(m.v_proj, m.v_conv1d).view(B, L, H, V)
    q = q / torch.sqrt((q * q).sum(-1, keepdim=True) + 1e-6)
    k = k / torch.sqrt((k * k).sum(-1, keepdim=True) + 1e-6)
    beta = torch.sigmoid(x @ m.b_proj.weight.T)
    if m.config.gated:
        alpha = torch.exp(-torch.exp(m.A_log) * F.softplus(x @ m.a_proj.weight.T + m.dt_bias))
    else:
        alpha = torch.ones_like(beta)
    out = torch.zeros(B, L, H, V, dtype=x.dtype)
    S_final = torch.zeros(B, H, V, K, dtype=x.dtype)
    eye = torch.eye(K, dtype=x.dtype)
    for b in range(B):
        for h in range(H):
            S = S0[b, h].T.clone()  # (V, K)
            for t in range(L):
                kt, bt = k[b, t, h], beta[b, t, h]
                S = alpha[b, t, h] * S @ (eye - bt * torch.outer(kt, kt)) + bt * torch.outer(v[b, t, h], kt)
                out[b, t, h] = S @ q[b, t, h] / K**0.5
            S_final[b, h] = S
    o = out * torch.rsqrt(out.pow(2).mean(-1, keepdim=True) + m.config.norm_eps) * m.o_norm.weight
    if m.config.output_gate:
        o = o * F.silu(x @ m.g_proj.weight.T).view(B, L, H, V)
    return o.flatten(2) @ m.o_proj.weight.T, S_final.transpose(-1, -2)


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_layer_is_its_equations(variant):
    m = make(num_heads=2, chunk_size=4, **VARIANTS[variant])
    x = torch.randn(2, 11, 8, dtype=torch.float64)
    S0 = 0.3 * torch.randn(2, 2, 4, 4, dtype=torch.float64)
    state = (*m.init_state(2, dtype=torch.float64)[:3], S0)
    y, (_, _, _, S) = m(x, state, return_state=True, mode="chunked")
    y_ref, S_ref = written_out(m, x, S0)
    assert_close_rel(y, y_ref, 1e-12, "y")
    assert_close_rel(S, S_ref, 1e-12, "final S")


@pytest.mark.parametrize("variant", ["deltanet", "gated"])
def test_chunked_vs_reference_across_chunks(variant):
    """The registry checker with chunks of 4 over 17 tokens: modes, step, split, state, masks and
    the gradients of input, parameters and initial state."""
    results = check_mixer("deltanet", length=17, perturb=0.3, chunk_size=4, **VARIANTS[variant])
    failed = [str(r) for r in results if not r.passed]
    assert not failed, "\n".join(failed)


def test_float32_long_sequence_matches_float64_reference():
    m = make(d_model=16, gated=True, chunk_size=16, perturb=0.1)
    x = torch.randn(2, 200, 16, dtype=torch.float64)
    y64 = m(x, mode="reference")
    y32 = m.float()(x.float(), mode="chunked")
    assert y32.dtype == torch.float32
    assert_close_rel(y32, y64, 1e-4, "float32 chunked vs float64 reference")


def test_heads_derived_from_key_width():
    assert ssmkit.create_mixer("deltanet", 8).n_heads == 1
    m = ssmkit.create_mixer("deltanet", 128, expand_v=2.0)
    assert (m.n_heads, m.head_k, m.head_v) == (2, 64, 128)
    assert ssmkit.create_mixer("deltanet", 8, num_heads=4).head_k == 2


def test_gated_init_and_tags():
    m = ssmkit.create_mixer("deltanet", 32, gated=True, num_heads=4)
    A = torch.exp(m.A_log)
    assert ((A > 0) & (A <= 16)).all()
    dt = F.softplus(m.dt_bias)
    assert ((dt >= 1e-4 - 1e-9) & (dt <= 0.1 + 1e-6)).all()
    tagged = {n for n, p in m.named_parameters() if hasattr(p, "_optim")}
    assert tagged == {"A_log", "dt_bias", "a_proj.weight", "b_proj.weight"}
    assert all(p._optim["weight_decay"] == 0.0 for n, p in m.named_parameters() if n in tagged)
    plain = ssmkit.create_mixer("deltanet", 32)
    assert {n for n, p in plain.named_parameters() if hasattr(p, "_optim")} == {"b_proj.weight"}
    assert not hasattr(plain, "A_log")


def test_gated_decay_and_beta_ranges():
    m = make(d_model=16, gated=True, num_heads=2, perturb=0.0)
    x = 3 * torch.randn(2, 9, 16, dtype=torch.float64)
    q, k, v, beta, log_alpha = m._heads(m.q_proj(x), m.k_proj(x), m.v_proj(x), x)
    assert ((beta > 0) & (beta < 1)).all()
    assert (log_alpha <= 0).all()
    assert_close_rel(k.norm(dim=-1), torch.ones(2, 9, 2, dtype=torch.float64), 1e-3, "unit keys")


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_state_size_counts_init_state(variant):
    m = ssmkit.create_mixer("deltanet", 16, num_heads=2, **VARIANTS[variant])
    assert m.state_size == sum(t[0].numel() for t in m.init_state(3))


@pytest.mark.parametrize(
    "cfg, field",
    [
        ({"num_heads": 3}, "num_heads"),
        ({"num_heads": 0}, "num_heads"),
        ({"expand_k": 0.0}, "expand_k"),
        ({"expand_v": -1.0}, "expand_v"),
        ({"d_conv": 0}, "d_conv"),
        ({"chunk_size": 0}, "chunk_size"),
        ({"A_init_range": (5.0, 1.0)}, "A_init_range"),
        ({"dt_min": 0.5, "dt_max": 0.1}, "dt_min"),
        ({"norm_eps": 0.0}, "norm_eps"),
        ({"ssm_lr": -1.0}, "ssm_lr"),
    ],
    ids=lambda v: v if isinstance(v, str) else None,
)
def test_config_errors_name_the_field(cfg, field):
    with pytest.raises(ValueError, match=f"'{field}'"):
        ssmkit.create_mixer("deltanet", 8, **cfg)
