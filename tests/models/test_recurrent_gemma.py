"""RecurrentGemma interop against transformers' RecurrentGemmaForCausalLM (a test extra): logits and
greedy generation of a small random model, export back, the first-token reset it needs, refusals."""
from __future__ import annotations

import dataclasses
import json

import pytest
import torch

from conftest import assert_close_rel, rel_err
from ssmkit.models import CausalLM
from ssmkit.models.pretrained import export_pretrained, load_pretrained, save_pretrained
from ssmkit.testing import measured_tol

transformers = pytest.importorskip("transformers", reason="interop tests need the test extra: pip install 'ssmkit[test]'")
pytest.importorskip("safetensors")

V = 64

# Logits against transformers' in float32, relative to the largest logit (error at the test's ids,
# seed 1; worst over id seeds 1-5), measured with torch 2.13.0 and transformers 5.25.0 on CPU.
LOGITS_MEASURED = (1.7e-7, 2.3e-7)
EXPORT_MEASURED = (2.5e-7, 2.6e-7)  # the exported model read by transformers, ids seed 2 (worst of 1-5)


def _hf_model(seed: int = 0, **cfg) -> "transformers.RecurrentGemmaForCausalLM":
    """3 layers (recurrent, recurrent, attention): multi-query local attention with a window of 5
    (shorter than the test's 13-token prompts), RoPE on half of each head."""
    torch.manual_seed(seed)
    config = transformers.RecurrentGemmaConfig(**{
        "vocab_size": V, "hidden_size": 32, "num_hidden_layers": 3, "num_attention_heads": 4, "num_key_value_heads": 1,
        "intermediate_size": 48, "attention_window_size": 5, "pad_token_id": 0, "bos_token_id": None,
        "eos_token_id": None, **cfg})
    model = transformers.RecurrentGemmaForCausalLM(config)
    with torch.no_grad():  # move every weight off its init (norms 0, biases 0) so that nothing is trivial
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return model.eval()


def _ids(seed: int = 1) -> torch.Tensor:
    return torch.randint(1, V, (2, 13), generator=torch.Generator().manual_seed(seed))


def test_logits_and_greedy_generation_match_transformers(tmp_path):
    hf = _hf_model()
    hf.save_pretrained(tmp_path)
    ours = load_pretrained(tmp_path)
    assert isinstance(ours, CausalLM)
    assert ours.backbone.config.layer_names() == ["rglru", "rglru", "attention"]
    ids = _ids()
    with torch.no_grad():
        expected = hf(ids).logits
        got = ours(ids)
    assert_close_rel(got, expected, measured_tol(*LOGITS_MEASURED), "logits")
    # 12 new tokens: the generation crosses the window of 5 and runs the recurrence from the prefill's state
    hf_gen = hf.generate(ids, max_new_tokens=12, do_sample=False, min_new_tokens=12)
    assert torch.equal(ours.generate(ids, 12), hf_gen)


def test_the_first_token_reset_is_what_makes_them_equal(tmp_path):
    """The same weights with the paper's update at t = 0 (no reset) diverge from the first token."""
    hf = _hf_model()
    hf.save_pretrained(tmp_path)
    ours = load_pretrained(tmp_path)
    bb = ours.backbone.config
    settings = {**bb.mixer_cfg, "rglru": {**bb.mixer_cfg["rglru"], "reset_at_start": False}}
    paper = CausalLM(dataclasses.replace(bb, mixer_cfg=settings), V, embed_scale=ours.embed_scale,
                     logit_softcap=ours.logit_softcap).eval()
    paper.load_state_dict(ours.state_dict())
    ids = _ids()
    with torch.no_grad():
        expected = hf(ids).logits
        assert rel_err(ours(ids)[:, 0], expected[:, 0]) < measured_tol(*LOGITS_MEASURED)
        assert rel_err(paper(ids)[:, 0], expected[:, 0]) > 1e-3


def test_export_reads_back_into_transformers(tmp_path):
    """An ssmkit model in RecurrentGemma's shape (here: loaded, then changed) exported and read by transformers."""
    _hf_model(seed=3).save_pretrained(tmp_path / "hf")
    ours = load_pretrained(tmp_path / "hf")
    torch.manual_seed(4)
    with torch.no_grad():
        for p in ours.parameters():
            p.add_(0.05 * torch.randn_like(p))
    export_pretrained(ours, tmp_path / "out", "recurrent_gemma")
    back = transformers.RecurrentGemmaForCausalLM.from_pretrained(tmp_path / "out").eval()
    ids = _ids(2)
    with torch.no_grad():
        assert_close_rel(back(ids).logits, ours(ids), measured_tol(*EXPORT_MEASURED), "exported logits")
    assert torch.equal(back.generate(ids, max_new_tokens=6, do_sample=False, min_new_tokens=6), ours.generate(ids, 6))
    again = load_pretrained(tmp_path / "out")  # and back into ssmkit, bit for bit
    assert torch.equal(again(ids), ours(ids))


def test_export_refuses_what_recurrent_gemma_cannot_hold(tmp_path):
    _hf_model().save_pretrained(tmp_path / "hf")
    ours = load_pretrained(tmp_path / "hf")
    ours.logit_softcap = None
    with pytest.raises(ValueError, match="cannot export to RecurrentGemma exactly: .*soft-caps its logits"):
        export_pretrained(ours, tmp_path / "out", "recurrent_gemma")
    with pytest.raises(ValueError, match="cannot export to RecurrentGemma exactly: .*soft-caps its logits"):
        save_pretrained(ours, tmp_path / "out", format="hf")  # format="hf" picks RecurrentGemma for these layers
    with pytest.raises(ValueError, match=r"Hugging Face Mamba exactly: its layers run \['attention', 'rglru'\]"):
        export_pretrained(ours, tmp_path / "out", "mamba")
    with pytest.raises(ValueError, match="no exporter for format 'mamba_ssm'"):
        export_pretrained(ours, tmp_path / "out", "mamba_ssm")


@pytest.mark.parametrize("field, value, message", [
    ("hidden_activation", "gelu", "'hidden_activation' = 'gelu' is not supported: .*tanh GELU"),
    ("block_types", ["recurrent", "mlp"], "'block_types' .* block type 'mlp'"),
    ("rope_parameters", {"rope_type": "linear", "rope_theta": 1e4, "factor": 2.0}, "'rope_type' = 'linear'"),
    ("logits_soft_cap", None, "'logits_soft_cap' = None is not supported"),
    ("embeddings_scale_by_sqrt_dim", False, "'embeddings_scale_by_sqrt_dim' = False"),
])
def test_unsupported_options_are_refused_naming_the_file_and_field(tmp_path, field, value, message):
    _hf_model().save_pretrained(tmp_path)
    cfg = json.loads((tmp_path / "config.json").read_text())
    cfg[field] = value
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match=message) as err:
        load_pretrained(tmp_path)
    assert str(tmp_path / "config.json") in str(err.value)


def test_missing_and_misshapen_tensors_are_named(tmp_path):
    import safetensors.torch as st

    _hf_model().save_pretrained(tmp_path)
    weights = st.load_file(str(tmp_path / "model.safetensors"))
    del weights["model.layers.0.temporal_block.rg_lru.recurrent_param"]
    weights["model.layers.2.temporal_block.k_proj.weight"] = torch.zeros(16, 32)
    weights["model.layers.0.extra"] = torch.zeros(1)
    st.save_file(weights, str(tmp_path / "model.safetensors"))
    with pytest.raises(ValueError) as err:
        load_pretrained(tmp_path)
    msg = str(err.value)
    assert str(tmp_path / "model.safetensors") in msg
    assert "missing key: model.layers.0.temporal_block.rg_lru.recurrent_param" in msg
    assert "unexpected key: model.layers.0.extra" in msg
    assert "shape mismatch model.layers.2.temporal_block.k_proj.weight: checkpoint (16, 32)" in msg
