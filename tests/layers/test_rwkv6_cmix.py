"""rwkv6_cmix: RWKV-LM's RWKV_CMix_x060 written out (with a carried token), widths, config."""
from __future__ import annotations

import pytest
import torch

import ssmkit
from conftest import assert_close_rel


def test_is_rwkv_lm_channel_mix_with_carried_token():
    torch.manual_seed(0)
    m = ssmkit.create_mixer("rwkv6_cmix", 8, hidden=12).double()
    with torch.no_grad():
        m.time_maa_k.uniform_(0, 1)
        m.time_maa_r.uniform_(0, 1)
    x = torch.randn(2, 7, 8, dtype=torch.float64)
    x_prev = torch.randn(2, 8, dtype=torch.float64)
    xx = torch.cat([x_prev[:, None], x[:, :-1]], 1) - x  # time_shift(x) - x, continuing x_prev
    k = torch.relu(m.key(x + xx * m.time_maa_k)) ** 2
    want = torch.sigmoid(m.receptance(x + xx * m.time_maa_r)) * m.value(k)
    y, (last,) = m(x, (x_prev,), return_state=True)
    assert_close_rel(y, want, 1e-14, "y")
    assert torch.equal(last, x[:, -1])
    assert_close_rel(m(x[:, 3:], (x[:, 2],)), want[:, 3:], 1e-14, "continued from the carried token")


def test_default_hidden_width_and_state():
    m = ssmkit.create_mixer("rwkv6_cmix", 16)
    assert m.hidden == 64 and m.key.weight.shape == (64, 16)  # 3.5 * 16 = 56 -> 64 (multiple of 32)
    assert m.state_size == 16 == sum(t[0].numel() for t in m.init_state(1))
    with pytest.raises(ValueError, match="'hidden'"):
        ssmkit.create_mixer("rwkv6_cmix", 16, hidden=0)
