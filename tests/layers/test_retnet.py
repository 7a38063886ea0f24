"""retnet mixer: the paper's parallel retention, its decays, positions across calls, config."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from conftest import assert_close_rel

import ssmkit
from ssmkit.testing.equivalence import check_mixer
from ssmkit.layers.attention import rope

from .layer_helpers import assert_chunked_grads_match_reference


def make(d_model: int = 16, **cfg):
    torch.manual_seed(0)
    return ssmkit.create_mixer("retnet", d_model, **cfg).double()


def naive(m, x: torch.Tensor, start: int = 0) -> torch.Tensor:
    """Sun et al. eqs. 5 and 8–9: (Q Kᵀ ∘ D) V per head with D_nm = γ^(n−m), GroupNorm, swish gate."""
    B, L, _ = x.shape
    H, K, V = m.n_heads, m.key_dim, m.value_dim
    pos = torch.arange(start, start + L).expand(B, L)
    q = rope(m.q_proj(x).view(B, L, H, K), pos, m.config.rope_base)
    k = rope(m.k_proj(x).view(B, L, H, K), pos, m.config.rope_base)
    v = m.v_proj(x).view(B, L, H, V)
    gamma = torch.exp(m.log_decay())  # the paper's values up to float32 storage, see below
    n = torch.arange(L)
    D = torch.where(n[:, None] >= n[None, :], gamma[:, None, None] ** (n[:, None] - n[None, :]), 0.0)
    o = torch.einsum("bthk,bshk,hts,bshv->bthv", q, k, D, v) * K**-0.5
    if m.config.norm == "rmsnorm":  # fla's: per head, one weight shared by the heads, no bias
        normed = o * torch.rsqrt(o.pow(2).mean(-1, keepdim=True) + m.config.norm_eps) * m.rms_norm.weight
    else:
        normed = F.group_norm(o.reshape(B * L, H * V), H, m.group_norm.weight, m.group_norm.bias, m.config.norm_eps)
    return m.o_proj(F.silu(m.g_proj(x)) * normed.reshape(B, L, H * V))


@pytest.mark.parametrize("mode", ["chunked", "parallel", "reference"])
@pytest.mark.parametrize("n_heads", [1, 4])
def test_matches_paper_parallel_retention(mode, n_heads):
    m = make(n_heads=n_heads, chunk_size=4)
    with torch.no_grad():
        m.group_norm.weight.uniform_(0.5, 1.5)
        m.group_norm.bias.normal_()
    x = torch.randn(2, 11, 16, dtype=torch.float64)
    assert_close_rel(m(x, mode=mode), naive(m, x), 1e-12, "y")


@pytest.mark.parametrize("mode", ["chunked", "parallel", "reference"])
def test_rmsnorm_option_matches_the_formula(mode):
    m = make(n_heads=4, chunk_size=4, norm="rmsnorm")
    assert not hasattr(m, "group_norm") and m.rms_norm.weight.shape == (m.value_dim,)
    with torch.no_grad():
        m.rms_norm.weight.uniform_(0.5, 1.5)
    x = torch.randn(2, 11, 16, dtype=torch.float64)
    assert_close_rel(m(x, mode=mode), naive(m, x), 1e-12, "y")
    failed = [str(r) for r in check_mixer("retnet", norm="rmsnorm") if not r.passed]
    assert not failed, "\n".join(failed)


def test_decays_are_the_papers_and_frozen_by_default():
    """γ_h = 1 - 2^(-5-h); stored as a float32 logit (the default dtype), so 1 - γ to ~1e-7."""
    m = make(d_model=64, n_heads=8)
    gamma = torch.exp(m.log_decay())
    assert_close_rel(1 - gamma, 2.0 ** (-5.0 - torch.arange(8, dtype=torch.float64)), 1e-6, "1 - gamma")
    assert not m.decay_logit.requires_grad and hasattr(m.decay_logit, "_optim")
    learned = make(learn_decay=True, ssm_lr=1e-3)
    assert learned.decay_logit.requires_grad and learned.decay_logit._optim["lr"] == 1e-3
    learned(torch.randn(1, 5, 16, dtype=torch.float64)).sum().backward()
    assert learned.decay_logit.grad is not None and learned.decay_logit.grad.abs().sum() > 0


def test_positions_continue_across_calls_and_masks():
    """The second call's rotary positions start where the first stopped, per row with masks."""
    m = make(n_heads=2)
    x = torch.randn(2, 12, 16, dtype=torch.float64)
    _, state = m(x[:, :5], return_state=True)
    assert torch.equal(state[1], torch.full((2,), 5.0, dtype=torch.float64))
    y2 = m(x[:, 5:], state)
    assert_close_rel(y2, m(x)[:, 5:], 1e-12, "split vs whole")
    restarted = m(x[:, 5:], (state[0], torch.zeros(2, dtype=torch.float64)))  # positions 0…6
    assert (restarted - y2).abs().max() > 1e-3, "the offset must move the rotary positions"
    mask = torch.ones(2, 12, dtype=torch.bool)
    mask[1, :4] = False
    _, (_, seen) = m(x, mask=mask, return_state=True)
    assert seen.tolist() == [12.0, 8.0]


def test_chunked_gradients_match_reference_with_initial_state():
    m = make(n_heads=2, chunk_size=4, learn_decay=True)
    assert_chunked_grads_match_reference(m)


def test_float32_long_sequence_matches_float64():
    m = make(d_model=32, n_heads=2)
    x = torch.randn(2, 300, 32, dtype=torch.float64)
    y64 = m(x)
    assert_close_rel(m.float()(x.float()), y64, 1e-4, "float32 y")


@pytest.mark.parametrize("cfg,field", [
    (dict(n_heads=3), "n_heads"), (dict(n_heads=16), "n_heads"), (dict(value_factor=0), "value_factor"),
    (dict(norm_eps=0.0), "norm_eps"), (dict(chunk_size=6), "chunk_size"), (dict(ssm_lr=0.0), "ssm_lr"),
])
def test_config_errors_name_the_field(cfg, field):
    with pytest.raises(ValueError, match=f"'{field}'"):
        ssmkit.create_mixer("retnet", 16, **cfg)
