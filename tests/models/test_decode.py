"""The fused CPU decode (models.decode) against the pure step loop (CausalLM.step): logits equal to
float32 rounding, identical greedy tokens, the same states, carried state both ways, generate's
automatic use of it and its fallback, and clear errors for bad input."""
from __future__ import annotations

import logging

import pytest
import torch

from ssmkit import log as ssmkit_log
from ssmkit.models import BackboneConfig, CausalLM
from ssmkit.models import decode as decode_mod
from ssmkit.models.decode import FusedDecoder, fused_unavailable_reason

V = 61

CASES = {  # name -> (mixer, mixer_cfg, CausalLM options)
    "mamba": ("mamba", {"d_state": 16, "dt_rank": 5}, {}),
    "mamba-biases-odd-widths": ("mamba", {"d_state": 7, "d_conv": 3, "bias": True, "expand": 3}, {}),
    "mamba-no-conv-bias-k1": ("mamba", {"d_state": 16, "d_conv": 1, "conv_bias": False}, {}),
    "mamba2": ("mamba2", {"d_state": 32, "head_dim": 16}, {}),
    "mamba2-groups-clamp": ("mamba2", {"d_state": 20, "head_dim": 8, "n_groups": 2, "bias": True,
                                       "dt_limit": (0.01, 0.05)}, {}),
    "hybrid": (("mamba", "mamba2", "mamba"), {"mamba2": {"head_dim": 16}}, {}),
    "gla": ("gla", {"n_heads": 4}, {}),
    "gla-no-gate-odd": ("gla", {"n_heads": 2, "output_gate": False, "expand_k": 0.75, "gate_low_rank": 5,
                                "gate_temperature": 4.0}, {}),
    "gla-gate-bias": ("gla", {"n_heads": 5, "gate_bias": True, "expand_v": 2.0}, {}),
    "hybrid-gla": (("gla", "mamba", "mamba2"), {"mamba2": {"head_dim": 16}}, {}),
    "hgrn2": ("hgrn2", {"expand_ratio": 8}, {}),
    "hgrn2-bound-scaled": ("hgrn2", {"expand_ratio": 20, "lower_bound": 0.3, "scale_q": True}, {}),
    "hybrid-hgrn2": (("hgrn2", "gla", "mamba"), {"hgrn2": {"expand_ratio": 10}}, {}),
    "linear_attention": ("linear_attention", {"n_heads": 4}, {}),
    "linear_attention-no-bias": ("linear_attention", {"n_heads": 5, "bias": False, "eps": 2.0}, {}),
    "hybrid-linear": (("linear_attention", "mamba2"), {"mamba2": {"head_dim": 16}}, {}),
    "retnet": ("retnet", {"n_heads": 4}, {}),
    "retnet-rmsnorm-bias": ("retnet", {"n_heads": 2, "norm": "rmsnorm", "bias": True, "value_factor": 1,
                                       "rope_base": 50.0}, {}),
    "hybrid-retnet": (("retnet", "gla", "mamba"), {"retnet": {"n_heads": 5}}, {}),
    "head-options": ("mamba", {}, {"embed_scale": 1.7, "logit_softcap": 3.0, "tie_embeddings": False}),
}


def _lm(case: str, d_model: int = 40, **bb) -> CausalLM:
    mixer, cfg, opts = CASES[case]
    torch.manual_seed(0)
    n_layers = len(mixer) if isinstance(mixer, tuple) else 2
    model = CausalLM(BackboneConfig(d_model=d_model, n_layers=n_layers, mixer=mixer, mixer_cfg=cfg, **bb), V, **opts)
    with torch.no_grad():  # larger-than-init weights, so the recurrences and the head matter
        for name, p in model.named_parameters():
            if name.endswith("weight") and p.dim() == 2:
                p.mul_(3.0)
    return model.eval()


@pytest.fixture(autouse=True)
def _needs_compiler():
    reason = decode_mod._library()
    if isinstance(reason, str):
        pytest.skip(f"the fused decode's C++ library cannot be built here: {reason}")


def _close(got: torch.Tensor, want: torch.Tensor, rel: float = 2e-5) -> None:
    assert got.shape == want.shape
    if want.numel() == 0:  # the conv state of a kernel of 1
        return
    scale = want.abs().max().clamp_min(1.0)
    assert (got - want).abs().max() <= rel * scale, f"max error {(got - want).abs().max():.3g}, scale {scale:.3g}"


def _states_close(got: tuple, want: tuple) -> None:
    for g, w in zip(got, want, strict=True):
        for a, b in zip(g, w, strict=True):
            assert a.shape == b.shape and a.dtype == b.dtype
            _close(a, b)


@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("batch", [1, 3])
@torch.no_grad()
def test_fused_steps_equal_the_step_loop(case, batch):
    lm = _lm(case)
    ids = torch.randint(0, V, (batch, 6), generator=torch.Generator().manual_seed(2))
    _, state = lm(ids, return_state=True)
    decoder = FusedDecoder(lm, state)
    token, ref_state = ids[:, -1], state
    for _ in range(8):
        want, ref_state = lm.step(token, ref_state)
        got = decoder.step(token)
        _close(got, want)
        assert torch.equal(got.argmax(-1), want.argmax(-1))
        token = want.argmax(-1)
    _states_close(decoder.state(), ref_state)


@torch.no_grad()
def test_the_decoder_copies_its_state_and_hands_back_copies():
    lm = _lm("mamba2")
    state = lm.init_state(2)
    before = [t.clone() for s in state for t in s]
    decoder = FusedDecoder(lm, state)
    decoder.step(torch.tensor([3, 4]))
    assert all(torch.equal(a, b) for a, b in zip(before, (t for s in state for t in s)))  # the input: untouched
    snapshot = decoder.state()
    decoder.step(torch.tensor([5, 6]))
    assert not torch.equal(snapshot[0][1], decoder.state()[0][1])  # the snapshot did not move with it


@pytest.mark.parametrize("case", ["mamba", "mamba2", "gla", "hgrn2-bound-scaled", "linear_attention",
                                  "retnet-rmsnorm-bias"])
@torch.no_grad()
def test_state_carries_between_the_fused_and_the_pure_step(case):
    lm = _lm(case)
    tokens = torch.randint(0, V, (2, 9), generator=torch.Generator().manual_seed(3))
    ref_state, ref = lm.init_state(2), []
    for t in range(9):
        logits, ref_state = lm.step(tokens[:, t], ref_state)
        ref.append(logits)
    # fused for 4 tokens, then the pure step from the fused state
    decoder = FusedDecoder(lm, lm.init_state(2))
    for t in range(4):
        _close(decoder.step(tokens[:, t]), ref[t])
    state = decoder.state()
    for t in range(4, 6):
        logits, state = lm.step(tokens[:, t], state)
        _close(logits, ref[t])
    # and fused again from the pure step's state
    decoder = FusedDecoder(lm, state)
    for t in range(6, 9):
        _close(decoder.step(tokens[:, t]), ref[t])
    _states_close(decoder.state(), ref_state)


@pytest.mark.parametrize("case", ["mamba", "mamba2", "hybrid", "hybrid-gla", "hybrid-hgrn2",
                                  "hybrid-linear", "hybrid-retnet"])
def test_generate_uses_the_fused_step_and_returns_the_step_loops_tokens(case, monkeypatch):
    lm = _lm(case)
    ids = torch.randint(0, V, (3, 5), generator=torch.Generator().manual_seed(4))
    mask = torch.ones_like(ids, dtype=torch.bool)
    mask[0, :2] = False  # a left-padded shorter prompt
    calls = []
    real = FusedDecoder.step
    monkeypatch.setattr(FusedDecoder, "step", lambda self, tok: calls.append(1) or real(self, tok))
    fused = lm.generate(ids, 7, mask=mask)
    assert len(calls) == 6  # every token after the first came from the fused step
    plain = lm.generate(ids, 7, mask=mask, fused_decode=False)
    assert len(calls) == 6
    assert torch.equal(fused, plain)
    stop = int(plain[1, 6])  # a stop token and a repetition penalty go through the same loop
    assert torch.equal(lm.generate(ids, 7, mask=mask, eos_token_id=stop, repetition_penalty=1.3),
                       lm.generate(ids, 7, mask=mask, eos_token_id=stop, repetition_penalty=1.3, fused_decode=False))


def _hooked() -> CausalLM:
    lm = _lm("mamba")
    lm.backbone.blocks[1].mixer.out_proj.register_forward_hook(lambda mod, inp, out: out * 0.5)
    return lm


FALLBACKS = {  # name -> (model, words of the reason)
    "hook": (_hooked, "hook"),
    "other mixer": (lambda: CausalLM(BackboneConfig(d_model=16, n_layers=2, mixer="s4d"), V).eval(), "s4d"),
    "swa": (lambda: CausalLM(BackboneConfig(d_model=16, n_layers=2, mixer="swa"), V).eval(), "swa"),
    "float64": (lambda: _lm("mamba").double(), "float32"),
    "ffn": (lambda: _lm("mamba", ffn_mult=2), "FFN"),
    "post-norm": (lambda: _lm("mamba", residual="post"), "pre-norm"),
    "layernorm": (lambda: _lm("mamba", norm="layernorm"), "RMSNorm"),
    "dropout in training": (lambda: _lm("mamba", dropout=0.1).train(), "dropout"),
}


def test_cpu_autocast_falls_back_to_the_step_loop():
    lm = _lm("mamba")
    assert fused_unavailable_reason(lm) is None
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert "autocast" in fused_unavailable_reason(lm)
        with pytest.raises(ValueError, match="autocast"):
            lm.generate(torch.tensor([[1, 2]]), 2, fused_decode=True)


@pytest.mark.parametrize("name", list(FALLBACKS))
def test_generate_falls_back_to_the_step_loop_with_the_reason(name, monkeypatch, caplog):
    make, words = FALLBACKS[name]
    lm = make()
    reason = fused_unavailable_reason(lm)
    assert reason is not None and words in reason
    monkeypatch.setattr(FusedDecoder, "step", lambda self, tok: pytest.fail("the fused step ran"))
    ids = torch.randint(0, V, (2, 4), generator=torch.Generator().manual_seed(5))
    if name != "dropout in training":  # sampling dropout twice gives different tokens
        monkeypatch.setattr(ssmkit_log, "_logged", set())  # log_once: as if first in this process
        with caplog.at_level(logging.INFO, logger="ssmkit"):
            out = lm.generate(ids, 4)
        assert f"the fused CPU decode does not apply ({reason})" in caplog.text
        assert torch.equal(out, lm.generate(ids, 4, fused_decode=False))
    with pytest.raises(ValueError, match="fused_decode=True"):
        lm.generate(ids, 4, fused_decode=True)
    with pytest.raises(ValueError, match="cannot run this model"):
        FusedDecoder(lm, lm.init_state(2))


def test_a_hook_is_honoured_by_generate():
    lm = _hooked()
    ids = torch.randint(0, V, (1, 4), generator=torch.Generator().manual_seed(6))
    with torch.no_grad():
        want, state = lm(ids, return_state=True)
        token = want[:, -1].argmax(-1)
        second, _ = lm.step(token, state)
    assert torch.equal(lm.generate(ids, 2)[0, -1], second.argmax(-1)[0])


@torch.no_grad()
def test_bad_input_gets_clear_errors():
    lm = _lm("mamba")
    with pytest.raises(ValueError, match=r"layer 1's state must be .*\(B = 2\), got \[\(\(3, 3, 80\)"):
        FusedDecoder(lm, (lm.backbone.blocks[0].mixer.init_state(2), lm.backbone.blocks[1].mixer.init_state(3)))
    with pytest.raises(ValueError, match="tuple of 2 layer states"):
        FusedDecoder(lm, lm.init_state(2)[:1])
    with pytest.raises(ValueError, match="state must be"):
        FusedDecoder(lm, tuple((s[0].double(), s[1].double()) for s in lm.init_state(2)))
    decoder = FusedDecoder(lm, lm.init_state(2))
    with pytest.raises(ValueError, match=r"token ids must be in \[0, 61\), got 61 in row 1"):
        decoder.step(torch.tensor([3, V]))
    with pytest.raises(ValueError, match=r"token ids must be in \[0, 61\), got -1 in row 0"):
        decoder.step(torch.tensor([-1, 2]))
    with pytest.raises(ValueError, match=r"token must be \(2,\) integer ids"):
        decoder.step(torch.tensor([1, 2, 3]))
    with pytest.raises(ValueError, match=r"token must be \(2,\) integer ids"):
        decoder.step(torch.tensor([1.0, 2.0]))
    with pytest.raises(ValueError, match="fused_decode"):
        lm.generate(torch.tensor([[1, 2]]), 2, fused_decode="yes")


PACKED = ("in_proj", "x_proj", "dt_proj", "out_proj", "q_proj", "k_proj", "v_proj", "gate_down", "gate_up",
          "r_proj", "o_proj", "f_proj", "i_proj", "g_proj")  # every matrix the fused decode reads per token


def _stored_as(lm: CausalLM, weights: str) -> CausalLM:
    """A copy of ``lm`` whose projection and head matrices hold the values ``weights`` stores."""
    import copy

    ref = copy.deepcopy(lm)
    with torch.no_grad():
        for name, mod in ref.named_modules():
            if isinstance(mod, torch.nn.Linear) and (name == "lm_head" or name.split(".")[-1] in PACKED):
                w, scale = decode_mod.pack(mod.weight, weights)
                if weights == "bfloat16":
                    mod.weight.copy_(w.view(torch.bfloat16).float())
                else:
                    mod.weight.copy_(w.float() * scale[:, None])
    return ref


@pytest.mark.parametrize("weights", ["bfloat16", "int8"])
@pytest.mark.parametrize("case", ["mamba", "mamba2", "gla-gate-bias", "hgrn2-bound-scaled", "linear_attention",
                                  "retnet", "head-options"])
@torch.no_grad()
def test_weight_storage_equals_the_step_loop_on_the_stored_values(case, weights):
    """bf16 / int8 storage changes the weights' values only: the fused decode then equals the float32
    step loop of a model holding exactly those values (to float32 rounding)."""
    lm = _lm(case)
    ref = _stored_as(lm, weights)
    assert not torch.equal(ref.lm_head.weight, lm.lm_head.weight)  # the storage did round
    ids = torch.randint(0, V, (2, 5), generator=torch.Generator().manual_seed(7))
    _, state = lm(ids, return_state=True)
    _, ref_state = ref(ids, return_state=True)  # a tied head rounds the embedding too
    decoder = FusedDecoder(lm, ref_state, weights=weights)
    assert decoder.weights == weights
    token = ids[:, -1]
    for _ in range(6):
        want, ref_state = ref.step(token, ref_state)
        got = decoder.step(token)
        _close(got, want, rel=3e-5)
        token = want.argmax(-1)
    full = FusedDecoder(lm, state).weight_bytes  # what a token reads shrinks with the storage
    assert decoder.weight_bytes < (0.6 if weights == "bfloat16" else 0.45) * full


def test_to_inference_sets_the_storage_generate_uses_and_repacks_changed_weights():
    lm = _lm("mamba")
    ids = torch.randint(0, V, (2, 4), generator=torch.Generator().manual_seed(8))
    assert lm.to_inference("bf16") is lm and lm.inference_weights == "bfloat16" and not lm.training
    out = lm.generate(ids, 5)
    with torch.no_grad():
        ref = _stored_as(lm, "bfloat16")
        logits, state = ref(ids, return_state=True)
        token = logits[:, -1].argmax(-1)
        decoder = FusedDecoder(lm, state)  # the model's storage by default
        want = [token]
        for _ in range(4):
            token = decoder.step(token).argmax(-1)
            want.append(token)
    assert decoder.weights == "bfloat16" and torch.equal(out[:, 4:], torch.stack(want, 1))
    with torch.no_grad():
        lm.lm_head.weight.mul_(-1.0)  # an in-place change: the packed copy must follow
    flipped = FusedDecoder(lm, lm.init_state(2)).step(torch.tensor([1, 2])).clone()
    plain = FusedDecoder(_stored_as(lm, "bfloat16"), lm.init_state(2), weights="float32")
    _close(flipped, plain.step(torch.tensor([1, 2])), rel=3e-5)
    with pytest.raises(ValueError, match=r"weights must be one of \['float32', 'bfloat16', 'int8'"):
        lm.to_inference("fp8")
