"""CausalLM.generate / stream: stop tokens, stopping criteria, streaming, repetition penalty, batched
prompts of different lengths (models.generation). Greedy decoding against repeated full forwards;
transformers' own processors and generate are the reference in tests/models/test_pretrained.py."""
from __future__ import annotations

import pytest
import torch

from ssmkit.models import BackboneConfig, CausalLM
from ssmkit.models.generation import penalize_repeats

V = 17


def _lm(mixer: str = "s4d") -> CausalLM:
    torch.manual_seed(0)
    return CausalLM(BackboneConfig(d_model=16, n_layers=2, mixer=mixer, mixer_cfg={"d_state": 8}), V).double().eval()


def _prompt(B=3, L=5, seed=1):
    return torch.randint(0, V, (B, L), generator=torch.Generator().manual_seed(seed))


def test_stream_yields_the_tokens_generate_returns():
    lm, ids = _lm(), _prompt()
    it = lm.stream(ids, 7)
    first = next(it)  # available before the rest is computed
    assert first.shape == (3,) and torch.is_grad_enabled()  # grad mode is not left off between tokens
    tokens = [first, *it]
    assert torch.equal(torch.cat([ids, torch.stack(tokens, 1)], 1), lm.generate(ids, 7))


def test_eos_finishes_rows_pads_them_and_stops_when_all_are_done():
    lm, ids = _lm(), _prompt()
    free = lm.generate(ids, 10)[:, 5:]
    eos = int(free[0, 2])  # row 0 emits it at its third token
    out = lm.generate(ids, 10, eos_token_id=eos, pad_token_id=0)[:, 5:]
    for b in range(3):
        hits = (free[b] == eos).nonzero()
        end = int(hits[0]) + 1 if len(hits) else 10
        assert torch.equal(out[b, :end], free[b, :end])  # identical up to and including its eos
        assert (out[b, end:] == 0).all()  # then padding
    done_at = max(int((free[b] == eos).nonzero()[0]) + 1 if (free[b] == eos).any() else 10 for b in range(3))
    assert out.shape[1] == done_at  # the loop ends when the last row is finished


def test_stopping_criteria_per_row():
    lm, ids = _lm(), _prompt()
    free = lm.generate(ids, 6)
    # stop a row once it has 3 new tokens whose sum is even (a rule of the ids seen so far)
    rule = lambda seq: (seq.shape[1] - 5 >= 3) & (seq[:, 5:].sum(1) % 2 == 0)  # noqa: E731
    out = lm.generate(ids, 6, stopping_criteria=rule, pad_token_id=V - 1)
    for b in range(3):
        stop = next((t for t in range(8, 12) if t <= free.shape[1] and rule(free[b:b + 1, :t]).item()), None)
        if stop is None:
            assert torch.equal(out[b], free[b, :out.shape[1]])
        else:
            assert torch.equal(out[b, :stop], free[b, :stop]) and (out[b, stop:] == V - 1).all()


def test_repetition_penalty_is_ctrl_rule_and_changes_greedy_output():
    logits = torch.tensor([[2.0, -2.0, 1.0, -1.0]])
    seen = torch.tensor([[True, True, False, False]])
    assert torch.equal(penalize_repeats(logits, seen, 2.0), torch.tensor([[1.0, -4.0, 1.0, -1.0]]))
    lm, ids = _lm(), _prompt()
    penalized = lm.generate(ids, 8, repetition_penalty=1.7)
    seq = ids  # the rule applied by hand over repeated full forwards
    for _ in range(8):
        last = lm(seq)[:, -1]
        seen = torch.zeros(3, V, dtype=torch.bool).scatter_(1, seq, True)
        last = torch.where(seen, torch.where(last > 0, last / 1.7, last * 1.7), last)
        seq = torch.cat([seq, last.argmax(-1, keepdim=True)], 1)
    assert torch.equal(penalized, seq)
    assert not torch.equal(penalized, lm.generate(ids, 8))


def test_left_padded_prompts_of_different_lengths_with_eos_and_penalty():
    lm = _lm()
    g = torch.Generator().manual_seed(2)
    a, b = torch.randint(0, V, (1, 6), generator=g), torch.randint(0, V, (1, 3), generator=g)
    batch = torch.cat([a, torch.cat([torch.full((1, 3), 5), b], 1)], 0)  # pad id 5 must not count as seen
    mask = torch.ones(2, 6, dtype=torch.bool)
    mask[1, :3] = False
    opts = dict(repetition_penalty=1.5, eos_token_id=[3, 4], pad_token_id=0)
    out = lm.generate(batch, 6, mask=mask, **opts)
    ra, rb = lm.generate(a, 6, **opts)[0, 6:], lm.generate(b, 6, **opts)[0, 3:]
    n = out.shape[1] - 6
    assert torch.equal(out[0, 6:], torch.cat([ra, torch.zeros(n - len(ra), dtype=torch.long)])[:n])
    assert torch.equal(out[1, 6:], torch.cat([rb, torch.zeros(n - len(rb), dtype=torch.long)])[:n])


def test_bad_generation_options_are_named():
    lm, ids = _lm(), _prompt()
    with pytest.raises(ValueError, match="'repetition_penalty'"):
        lm.stream(ids, 3, repetition_penalty=0.0)
    with pytest.raises(ValueError, match=r"eos_token_id must be token ids in \[0, 17\)"):
        lm.generate(ids, 3, eos_token_id=17)
    with pytest.raises(ValueError, match="stopping_criteria needs pad_token_id"):
        lm.generate(ids, 3, stopping_criteria=lambda s: False)
    with pytest.raises(ValueError, match="'max_new_tokens'"):
        lm.stream(ids, -1)
    with pytest.raises(TypeError, match="unexpected keyword"):
        lm.generate(ids, 3, eos_id=2)
