"""linear_attention mixer: the paper's formula (elu+1 features, normalizer), its state, config."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from conftest import assert_close_rel

import ssmkit
from ssmkit.layers.base import _leaves

from .layer_helpers import assert_chunked_grads_match_reference


def make(d_model: int = 16, **cfg):
    torch.manual_seed(0)
    return ssmkit.create_mixer("linear_attention", d_model, **cfg).double()


def naive(m, x: torch.Tensor) -> torch.Tensor:
    """Katharopoulos et al. eq. 6 written out: φ(q_t)ᵀ Σ_{s≤t} φ(k_s) v_sᵀ / φ(q_t)ᵀ Σ_{s≤t} φ(k_s)."""
    B, L, D = x.shape
    heads = (B, L, m.n_heads, m.head_dim)
    q = F.elu(m.q_proj(x).view(heads)) + 1
    k = F.elu(m.k_proj(x).view(heads)) + 1
    v = m.v_proj(x).view(heads)
    scores = torch.einsum("bthk,bshk->bhts", q, k).tril()
    num = torch.einsum("bhts,bshv->bthv", scores, v)
    den = scores.sum(-1).transpose(1, 2)[..., None]  # (B, L, H, 1)
    return m.o_proj((num / (den + m.config.eps)).reshape(B, L, D))


@pytest.mark.parametrize("mode", ["chunked", "parallel", "reference"])
@pytest.mark.parametrize("n_heads", [1, 4])
def test_matches_paper_formula(mode, n_heads):
    m = make(n_heads=n_heads, chunk_size=4)
    x = torch.randn(2, 11, 16, dtype=torch.float64)
    assert_close_rel(m(x, mode=mode), naive(m, x), 1e-12, "y")


def test_state_is_kv_sum_and_normalizer():
    """S' = [Σ φ(k) vᵀ, Σ φ(k)]: the last value column is the paper's normalizer z."""
    m = make(n_heads=2)
    x = torch.randn(2, 9, 16, dtype=torch.float64)
    _, (S,) = m(x, return_state=True)
    heads = (2, 9, 2, 8)
    k = F.elu(m.k_proj(x).view(heads)) + 1
    v = m.v_proj(x).view(heads)
    assert S.shape == (2, 2, 8, 9)
    assert_close_rel(S[..., :-1], torch.einsum("bshk,bshv->bhkv", k, v), 1e-13, "S")
    assert_close_rel(S[..., -1], k.sum(1), 1e-13, "z")
    assert m.state_size == 2 * 8 * 9


def test_chunked_gradients_match_reference_with_initial_state():
    m = make(n_heads=2, chunk_size=4)
    assert_chunked_grads_match_reference(m)


def test_float32_long_sequence_matches_float64():
    m = make(d_model=32, n_heads=2)
    x = torch.randn(2, 300, 32, dtype=torch.float64)
    y64 = m(x)
    y32 = m.float()(x.float())
    assert_close_rel(y32, y64, 1e-4, "float32 y")


def test_tagged_parameters_are_the_state_projections():
    m = make()
    tagged = {n for n, p in m.named_parameters() if hasattr(p, "_optim")}
    assert tagged == {"q_proj.weight", "k_proj.weight"}
    assert all(t.shape[0] == 3 for t in _leaves(m.init_state(3)))


@pytest.mark.parametrize("cfg,field", [
    (dict(n_heads=3), "n_heads"), (dict(n_heads=0), "n_heads"), (dict(eps=0.0), "eps"),
    (dict(chunk_size=48), "chunk_size"),
])
def test_config_errors_name_the_field(cfg, field):
    with pytest.raises(ValueError, match=f"'{field}'"):
        ssmkit.create_mixer("linear_attention", 16, **cfg)
