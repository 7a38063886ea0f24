"""CausalLM and Backbone: recurrent generation equals repeated full forwards; hybrids; padding; the
FFN kinds, post-norm blocks and the head options of released models, written out."""
from __future__ import annotations

import pytest
import torch

from conftest import assert_close_rel
from ssmkit.models import Backbone, BackboneConfig, CausalLM

V = 17


def _lm(mixer: str = "s4d", n_layers: int = 2) -> CausalLM:
    torch.manual_seed(0)
    return CausalLM(BackboneConfig(d_model=16, n_layers=n_layers, mixer=mixer, mixer_cfg={"d_state": 8}), V).double().eval()


def test_greedy_generate_equals_argmax_of_repeated_forwards():
    lm = _lm()
    prompt = torch.randint(0, V, (3, 5), generator=torch.Generator().manual_seed(1))
    out = lm.generate(prompt, max_new_tokens=8)
    seq = prompt
    for _ in range(8):
        nxt = lm(seq)[:, -1].argmax(-1, keepdim=True)
        seq = torch.cat([seq, nxt], 1)
    assert torch.equal(out, seq)


def test_hybrid_pattern_and_step_equals_forward():
    cfg = BackboneConfig(d_model=8, n_layers=3, mixer="s4d,lru,s5", mixer_cfg={"d_state": 8})
    torch.manual_seed(0)
    bb = Backbone(cfg).double().eval()
    assert [type(b.mixer).__name__.lower() for b in bb.blocks] == ["s4d", "lru", "s5"]
    x = torch.randn(2, 9, 8, dtype=torch.float64)
    y, s = bb(x, return_state=True)
    state = bb.init_state(2, dtype=torch.float64)
    ys = []
    for t in range(9):
        y_t, state = bb.step(x[:, t], state)
        ys.append(y_t)
    assert_close_rel(torch.stack(ys, 1), y, 1e-10, "step vs forward")
    assert bb.state_size == sum(b.mixer.state_size for b in bb.blocks)


def _steps(bb: Backbone, x: torch.Tensor) -> torch.Tensor:
    state, ys = bb.init_state(x.shape[0], dtype=x.dtype), []
    for t in range(x.shape[1]):
        y_t, state = bb.step(x[:, t], state)
        ys.append(y_t)
    return torch.stack(ys, 1)


@pytest.mark.parametrize("ffn", ["gelu", "swiglu", "geglu_tanh"])
@pytest.mark.parametrize("residual", ["pre", "post"])
def test_ffn_kinds_and_residual_orders_written_out(ffn, residual):
    cfg = BackboneConfig(d_model=8, n_layers=1, mixer="lru", mixer_cfg={"d_state": 8}, ffn=ffn, ffn_hidden=12,
                         ffn_bias=ffn != "swiglu", residual=residual, final_norm=residual == "pre")
    torch.manual_seed(0)
    bb = Backbone(cfg).double().eval()
    x = torch.randn(2, 5, 8, dtype=torch.float64)
    block = bb.blocks[0]
    if ffn == "gelu":
        f = block.ffn
    else:
        act = torch.nn.functional.silu if ffn == "swiglu" else (lambda z: torch.nn.functional.gelu(z, approximate="tanh"))
        p = block.ffn
        assert (p.gate_proj.bias is None) == (ffn == "swiglu") and p.up_proj.weight.shape == (12, 8)
        f = lambda z: p.down_proj(act(p.gate_proj(z)) * p.up_proj(z))  # noqa: E731
    if residual == "pre":
        h = x + block.mixer(block.norm(x))
        expected = bb.norm(h + f(block.ffn_norm(h)))
    else:
        h = block.norm(x + block.mixer(x))
        expected = block.ffn_norm(h + f(h))
    assert_close_rel(bb(x), expected, 1e-13, f"{ffn} {residual}")
    assert_close_rel(_steps(bb, x), expected, 1e-12, f"{ffn} {residual} step")


def test_head_options_written_out():
    """embed_scale, embed_norm and logit_softcap: forward and step (generation) both apply them."""
    torch.manual_seed(0)
    cfg = BackboneConfig(d_model=16, n_layers=1, mixer="lru", mixer_cfg={"d_state": 8}, norm="layernorm")
    lm = CausalLM(cfg, V, embed_scale=4.0, embed_norm=True, logit_softcap=3.0).double().eval()
    ids = torch.randint(0, V, (2, 6), generator=torch.Generator().manual_seed(4))
    h = lm.backbone(lm.embed_norm(lm.embedding(ids) * 4.0))
    expected = 3.0 * torch.tanh(lm.lm_head(h) / 3.0)
    got = lm(ids)
    assert_close_rel(got, expected, 1e-13, "forward")
    assert got.abs().max() <= 3.0
    logits, state = lm(ids[:, :3], return_state=True)
    for t in range(3, 6):
        step_logits, state = lm.step(ids[:, t], state)
        assert_close_rel(step_logits, expected[:, t], 1e-12, f"step {t}")
    assert lm.head_options() == {"embed_scale": 4.0, "embed_norm": True, "logit_softcap": 3.0}


def test_left_padded_batch_generates_like_each_prompt_alone():
    lm = _lm()
    g = torch.Generator().manual_seed(2)
    a, b = torch.randint(0, V, (1, 6), generator=g), torch.randint(0, V, (1, 3), generator=g)
    batch = torch.cat([a, torch.cat([torch.zeros(1, 3, dtype=torch.long), b], 1)], 0)
    mask = torch.ones(2, 6, dtype=torch.bool)
    mask[1, :3] = False
    out = lm.generate(batch, 5, mask=mask)
    assert torch.equal(out[0, 6:], lm.generate(a, 5)[0, 6:])
    assert torch.equal(out[1, 6:], lm.generate(b, 5)[0, 3:])


def test_sampling_limits():
    lm = _lm()
    prompt = torch.randint(0, V, (2, 4), generator=torch.Generator().manual_seed(3))
    greedy = lm.generate(prompt, 6)
    g = torch.Generator().manual_seed(0)
    assert torch.equal(lm.generate(prompt, 6, temperature=1.0, top_k=1, generator=g), greedy)
    assert torch.equal(lm.generate(prompt, 6, temperature=1.0, top_p=1e-9, generator=g), greedy)
    s1 = lm.generate(prompt, 6, temperature=1.5, generator=torch.Generator().manual_seed(5))
    s2 = lm.generate(prompt, 6, temperature=1.5, generator=torch.Generator().manual_seed(5))
    assert torch.equal(s1, s2)
    assert ((s1 >= 0) & (s1 < V)).all()


def test_bad_arguments_are_named():
    lm = _lm()
    ids = torch.zeros(1, 3, dtype=torch.long)
    with pytest.raises(ValueError, match="'top_p'"):
        lm.generate(ids, 2, temperature=1.0, top_p=0.0)
    with pytest.raises(ValueError, match="token ids must be in"):
        lm(torch.full((1, 3), V))
    with pytest.raises(TypeError, match="integer"):
        lm(torch.zeros(1, 3))
    with pytest.raises(ValueError, match="'mixer'"):
        BackboneConfig(n_layers=3, mixer="s4d,lru")
    with pytest.raises(KeyError, match="registered mixers"):
        Backbone(BackboneConfig(mixer="nope"))
