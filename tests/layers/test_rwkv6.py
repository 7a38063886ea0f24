"""RWKV-6 time mixing: init and forward vs a transcription of RWKV-LM's RWKV_Tmix_x060, chunked vs
reference across several chunks (outputs, states, all gradients), config errors."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from conftest import assert_close_rel

import ssmkit
from ssmkit.testing.equivalence import check_mixer
from ssmkit.testing import check_mixer


def make(d_model: int = 8, seed: int = 0, perturb: float = 0.3, **cfg):
    torch.manual_seed(seed)
    m = ssmkit.create_mixer("rwkv6", d_model, **cfg).double()
    g = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():  # the LoRA A matrices start at zero: move off the init
        for p in m.parameters():
            p.add_(perturb * torch.randn(p.shape, generator=g, dtype=p.dtype))
    return m


def rwkv_lm_forward(m, x: torch.Tensor, x_prev: torch.Tensor, S0: torch.Tensor):
    """RWKV_Tmix_x060.forward (jit_func, the WKV CUDA kernel's loop, jit_func_2) written out; keys
    of N_k and values of N_v channels per head (expand_k, expand_v)."""
    B, T, C = x.shape
    H, Nk, Nv = m.n_heads, m.head_k, m.head_v
    xx = torch.cat([x_prev[:, None], x[:, :-1]], dim=1) - x  # time_shift(x) - x, with a state
    xxx = x + xx * m.time_maa_x
    xxx = torch.tanh(xxx @ m.time_maa_w1).view(B * T, 5, -1).transpose(0, 1)
    xxx = torch.bmm(xxx, m.time_maa_w2).view(5, B, T, -1)
    mw, mk, mv, mr, mg = xxx.unbind(dim=0)
    xw = x + xx * (m.time_maa_w + mw)
    xk = x + xx * (m.time_maa_k + mk)
    xv = x + xx * (m.time_maa_v + mv)
    xr = x + xx * (m.time_maa_r + mr)
    xg = x + xx * (m.time_maa_g + mg)
    r, k, v = m.receptance(xr), m.key(xk), m.value(xv)
    g = F.silu(m.gate(xg))
    w = m.time_decay + torch.tanh(xw @ m.time_decay_w1) @ m.time_decay_w2
    w = torch.exp(-torch.exp(w))  # the kernel's decay
    u = m.time_faaaa
    y = torch.zeros(B, T, H * Nv, dtype=x.dtype)
    S = S0.clone()  # (B, H, N_k, N_v): state[i][j] with i the key channel, as in the kernel
    for t in range(T):
        for h in range(H):
            sk, sv = slice(h * Nk, (h + 1) * Nk), slice(h * Nv, (h + 1) * Nv)
            kv = torch.einsum("bi,bj->bij", k[:, t, sk], v[:, t, sv])
            y[:, t, sv] = torch.einsum("bi,bij->bj", r[:, t, sk], S[:, h] + u[h][:, None] * kv)
            S[:, h] = w[:, t, sk][..., None] * S[:, h] + kv
    y = m.ln_x(y.view(B * T, H * Nv)).view(B, T, H * Nv)
    return m.output(y * g), S


@pytest.mark.parametrize("expand_k", [1.0, 0.5], ids=["K=V", "K=V/2"])
@pytest.mark.parametrize("mode", ["chunked", "reference"])
def test_layer_is_rwkv_lm_time_mix(mode, expand_k):
    m = make(d_model=8, num_heads=2, chunk_size=4, expand_k=expand_k)
    x = torch.randn(2, 11, 8, dtype=torch.float64)
    x_prev = torch.randn(2, 8, dtype=torch.float64)
    S0 = 0.3 * torch.randn(2, 2, m.head_k, 4, dtype=torch.float64)
    y, (last, S) = m(x, (x_prev, S0), return_state=True, mode=mode)
    y_ref, S_ref = rwkv_lm_forward(m, x, x_prev, S0)
    assert_close_rel(y, y_ref, 1e-12, "y")
    assert_close_rel(S, S_ref, 1e-12, "final S")
    assert torch.equal(last, x[:, -1])


def test_narrow_keys_keep_every_equivalence():
    """expand_k = 0.5 (flash-linear-attention's RWKV-6 default): K = V/2 per head."""
    m = ssmkit.create_mixer("rwkv6", 16, expand_k=0.5, num_heads=2)
    assert (m.head_k, m.head_v, m.time_decay.shape, m.output.weight.shape) == (4, 8, (8,), (16, 16))
    failed = [str(r) for r in check_mixer("rwkv6", d_model=16, expand_k=0.5, num_heads=2) if not r.passed]
    assert not failed, "\n".join(failed)


def test_init_is_rwkv_lm():
    """RWKV_Tmix_x060.__init__'s loops for layer 1 of 3 at n_embd = dim_att = 8, head size 4."""
    m = ssmkit.create_mixer("rwkv6", 8, num_heads=2, layer_idx=1, n_layers=3)
    n_embd, layer_id, n_layer = 8, 1, 3
    ratio_0_to_1 = layer_id / (n_layer - 1)
    ratio_1_to_almost0 = 1.0 - (layer_id / n_layer)
    ddd = torch.tensor([i / n_embd for i in range(n_embd)])
    want = {
        "time_maa_x": 1.0 - torch.pow(ddd, ratio_1_to_almost0),
        "time_maa_w": 1.0 - torch.pow(ddd, ratio_1_to_almost0),
        "time_maa_k": 1.0 - torch.pow(ddd, ratio_1_to_almost0),
        "time_maa_v": 1.0 - (torch.pow(ddd, ratio_1_to_almost0) + 0.3 * ratio_0_to_1),
        "time_maa_r": 1.0 - torch.pow(ddd, 0.5 * ratio_1_to_almost0),
        "time_maa_g": 1.0 - torch.pow(ddd, 0.5 * ratio_1_to_almost0),
        "time_decay": torch.tensor(
            [-6 + 5 * (n / (n_embd - 1)) ** (0.7 + 1.3 * ratio_0_to_1) for n in range(n_embd)]),
        "time_faaaa": torch.tensor(
            [ratio_0_to_1 * (1 - (n / (n_embd - 1))) + ((n + 1) % 3 - 1) * 0.1 for n in range(n_embd)]
        ).view(2, 4),
    }
    for name, value in want.items():
        assert_close_rel(getattr(m, name).detach(), value, 1e-6, name)
    assert (m.time_maa_w1 == 0).all() and (m.time_decay_w1 == 0).all()
    assert m.time_maa_w2.shape == (5, 32, 8) and m.time_maa_w2.abs().max() <= 0.01
    assert m.time_decay_w2.shape == (64, 8) and m.time_decay_w2.abs().max() <= 0.01
    assert m.ln_x.num_groups == 2 and m.ln_x.eps == pytest.approx(64e-5)


def test_chunked_vs_reference_across_chunks():
    """The registry checker with chunks of 4 over 17 tokens and active LoRAs: modes, step, split,
    state, masks and the gradients of input, parameters and initial state."""
    results = check_mixer("rwkv6", length=17, perturb=0.3, chunk_size=4)
    failed = [str(r) for r in results if not r.passed]
    assert not failed, "\n".join(failed)


def test_masked_rows_keep_the_last_real_token_as_shift_state():
    m = make(d_model=8)
    x = torch.randn(3, 9, 8, dtype=torch.float64)
    mask = torch.ones(3, 9, dtype=torch.bool)
    mask[0, 5:] = False
    mask[1, :] = False  # a row with no real token keeps its incoming state
    x_prev = torch.randn(3, 8, dtype=torch.float64)
    S0 = torch.randn(3, 1, 8, 8, dtype=torch.float64)
    _, (last, S) = m(x, (x_prev, S0), mask=mask, return_state=True)
    assert torch.equal(last[0], x[0, 4]) and torch.equal(last[1], x_prev[1]) and torch.equal(last[2], x[2, -1])
    assert_close_rel(S[1], S0[1], 1e-15, "state of an all-padding row")


def test_float32_long_sequence_matches_float64_reference():
    m = make(d_model=16, chunk_size=32, perturb=0.1)
    x = torch.randn(2, 200, 16, dtype=torch.float64)
    y64 = m(x, mode="reference")
    y32 = m.float()(x.float(), mode="chunked")
    assert y32.dtype == torch.float32
    assert_close_rel(y32, y64, 1e-4, "float32 chunked vs float64 reference")


def test_heads_tags_and_state_size():
    assert ssmkit.create_mixer("rwkv6", 8).n_heads == 1
    m = ssmkit.create_mixer("rwkv6", 128)
    assert (m.n_heads, m.head_k, m.head_v) == (2, 64, 64)
    tagged = {n for n, p in m.named_parameters() if hasattr(p, "_optim")}
    assert tagged == {n for n, _ in m.named_parameters() if n.startswith("time_")}
    assert "time_decay" in tagged and "receptance.weight" not in tagged
    assert m.state_size == sum(t[0].numel() for t in m.init_state(2)) == 128 + 2 * 64 * 64


@pytest.mark.parametrize(
    "cfg, field",
    [
        ({"num_heads": 3}, "num_heads"),
        ({"num_heads": 0}, "num_heads"),
        ({"layer_idx": 2, "n_layers": 2}, "layer_idx"),
        ({"n_layers": 0}, "n_layers"),
        ({"mix_lora_rank": 0}, "mix_lora_rank"),
        ({"decay_lora_rank": 0}, "decay_lora_rank"),
        ({"chunk_size": 0}, "chunk_size"),
        ({"norm_eps": 0.0}, "norm_eps"),
        ({"ssm_lr": 0.0}, "ssm_lr"),
    ],
    ids=lambda v: v if isinstance(v, str) else None,
)
def test_config_errors_name_the_field(cfg, field):
    with pytest.raises(ValueError, match=f"'{field}'"):
        ssmkit.create_mixer("rwkv6", 8, **cfg)
