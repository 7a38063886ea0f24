"""flash-linear-attention interop (a test extra): fla's own causal LMs of every family ssmkit loads,
against ssmkit's load of their checkpoints, and ssmkit's export read back by fla; refused options.

fla's models run their Triton kernels; on a CPU the Triton interpreter runs them (TRITON_INTERPRET=1,
set before triton is imported), with each kernel's autotuning reduced to its first config (the
interpreter has no device to time configs on; every config computes the same values).
"""
from __future__ import annotations

import json
import os

import pytest
import torch

from conftest import assert_close_rel
from ssmkit.models import CausalLM
from ssmkit.models.pretrained import export_pretrained, load_pretrained
from ssmkit.testing import measured_tol

os.environ["TRITON_INTERPRET"] = "1"  # before triton is imported: fla's kernels run on the CPU, interpreted
fla_models = pytest.importorskip("fla.models", reason="fla interop tests need the test extra: pip install 'ssmkit[test]'")
transformers = pytest.importorskip("transformers")
st = pytest.importorskip("safetensors.torch")

V = 64

# config class, fla options. Small: D = 32, 2 layers, 2 heads; the options ssmkit maps, each once.
CASES = {
    "gla": ("GLAConfig", dict(num_heads=2)),
    "gla-no-output-gate": ("GLAConfig", dict(num_heads=2, use_output_gate=False)),
    "delta_net": ("DeltaNetConfig", dict(num_heads=2, use_gate=True)),
    "delta_net-no-gate": ("DeltaNetConfig", dict(num_heads=2)),
    "gated_deltanet": ("GatedDeltaNetConfig", dict(num_heads=2, head_dim=16)),
    "hgrn2": ("HGRN2Config", dict(expand_ratio=8, use_lower_bound=False)),
    "rwkv6": ("RWKV6Config", dict(num_heads=2)),
    "retnet": ("RetNetConfig", dict(num_heads=2, tie_word_embeddings=True)),
}

# Logits against fla's in float32, relative to the largest logit: (error at the test's ids, seed 1;
# worst over id seeds 1-5), measured with torch 2.13.0, flash-linear-attention 0.6.0 and triton 3.9.0
# (interpreter) on CPU. "export": ssmkit's changed model, exported and run by fla, against ssmkit.
MEASURED = {
    "gla": (8.0e-7, 1.9e-6), "gla-no-output-gate": (9.1e-7, 1.4e-6), "delta_net": (6.3e-7, 6.3e-7),
    "delta_net-no-gate": (8.3e-7, 8.3e-7), "gated_deltanet": (7.6e-7, 7.8e-7), "hgrn2": (9.1e-7, 9.1e-7),
    "rwkv6": (1.7e-7, 2.7e-7), "retnet": (6.4e-7, 9.3e-7),
}
EXPORT_MEASURED = {
    "gla": (7.6e-7, 1.5e-6), "gla-no-output-gate": (8.4e-7, 5.0e-6), "delta_net": (1.0e-6, 1.1e-6),
    "delta_net-no-gate": (7.2e-7, 7.2e-7), "gated_deltanet": (7.4e-7, 1.2e-6), "hgrn2": (7.4e-7, 9.5e-7),
    "rwkv6": (2.8e-7, 2.8e-7), "retnet": (1.7e-6, 1.7e-6),
}


@pytest.fixture(autouse=True)
def first_config_only(triton_first_config):
    """The interpreter cannot time configs: every autotuned kernel runs its first config (conftest)."""


def _fla_model(case: str, seed: int = 0):
    name, options = CASES[case]
    torch.manual_seed(seed)
    config = getattr(fla_models, name)(vocab_size=V, hidden_size=32, num_hidden_layers=2, **options)
    model = transformers.AutoModelForCausalLM.from_config(config)
    with torch.no_grad():  # move every weight off its init (zero LoRAs, unit norms) so that nothing is trivial
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return model.eval()


def _ids(seed: int = 1) -> torch.Tensor:
    return torch.randint(1, V, (2, 13), generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("case", list(CASES))
def test_logits_match_fla_and_export_reads_back(case, tmp_path):
    peer = _fla_model(case)
    peer.save_pretrained(tmp_path / "fla")
    ours = load_pretrained(tmp_path / "fla")
    assert isinstance(ours, CausalLM)
    ids = _ids()
    with torch.no_grad():
        assert_close_rel(ours(ids), peer(ids).logits, measured_tol(*MEASURED[case]), f"{case} logits")
    torch.manual_seed(5)
    with torch.no_grad():  # an ssmkit model of fla's shape that fla has never seen (RetNet's decays stay fixed)
        for p in ours.parameters():
            if p.requires_grad:
                p.add_(0.05 * torch.randn_like(p))
    export_pretrained(ours, tmp_path / "out", "fla")
    back = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "out").eval()
    assert type(back) is type(peer)
    with torch.no_grad():
        assert_close_rel(back(ids).logits, ours(ids), measured_tol(*EXPORT_MEASURED[case]), f"{case} export")
    assert torch.equal(load_pretrained(tmp_path / "out")(ids), ours(ids)), "export then load: bit for bit"


def test_step_by_step_generation_equals_the_loaded_forward(tmp_path):
    """The loaded model's recurrent generation (prefill, then one step a token) equals full forwards."""
    _fla_model("rwkv6").save_pretrained(tmp_path)
    ours = load_pretrained(tmp_path).double()
    ids = _ids()
    out = ours.generate(ids, 5)
    seq = ids
    for _ in range(5):
        seq = torch.cat([seq, ours(seq)[:, -1].argmax(-1, keepdim=True)], 1)
    assert torch.equal(out, seq)


def _write(folder, cfg: dict) -> None:
    """A checkpoint folder with ``cfg`` as config.json (the refusals below happen before any tensor is read)."""
    folder.mkdir(exist_ok=True)
    (folder / "config.json").write_text(json.dumps(cfg))
    st.save_file({"model.embeddings.weight": torch.zeros(V, 32)}, str(folder / "model.safetensors"))


BASE = dict(hidden_size=32, num_hidden_layers=1, vocab_size=V, num_heads=2)
REFUSED = [
    ("gla", "num_kv_heads", 1, "grouped key-value heads"),
    ("gla", "feature_map", "relu", "a feature map"),
    ("gla", "use_short_conv", True, "short convolutions"),
    ("gla", "clamp_min", -5.0, "a floor on the log decay"),
    ("gla", "attn", {"layers": [0], "num_heads": 2}, "hybrid layers of softmax attention"),
    ("gla", "attnres_block_size", 2, "attention residuals"),
    ("gla", "hidden_act", "powlu", "another activation"),
    ("delta_net", "allow_neg_eigval", True, "negative eigenvalues"),
    ("delta_net", "qk_norm", "sum", "sum-normalized"),
    ("delta_net", "use_beta", False, "a fixed beta"),
    ("delta_net", "use_short_conv", False, "no short convolutions"),
    ("gated_deltanet", "num_v_heads", 4, "grouped key-value heads"),
    ("gated_deltanet", "output_gate_activation", "sigmoid", "a sigmoid output gate"),
    ("hgrn2", "use_lower_bound", True, "learned lower bounds"),
    ("hgrn2", "use_short_conv", True, "short convolutions"),
    ("rwkv6", "norm_bias", False, "LayerNorms without bias"),
    ("retnet", "expand_k", 0.5, "keys of other than"),
    ("retnet", "use_output_gate", False, "no output gate"),
    ("retnet", "expand_v", 1.5, "a whole value_factor"),
]


@pytest.mark.parametrize("kind, field, value, reason", REFUSED, ids=[f"{k}-{f}" for k, f, _, _ in REFUSED])
def test_options_ssmkit_lacks_are_refused_naming_file_field_and_reason(tmp_path, kind, field, value, reason):
    cfg = dict(BASE, model_type=kind, **{field: value})
    if kind == "hgrn2":
        cfg.update(expand_ratio=16)
    _write(tmp_path, cfg)
    with pytest.raises(ValueError) as err:
        load_pretrained(tmp_path)
    msg = str(err.value)
    assert str(tmp_path / "config.json") in msg and f"field {field!r} = {value!r} is not supported" in msg
    assert reason in msg


def test_unknown_model_type_and_hgrn2_default_are_named(tmp_path):
    _write(tmp_path, dict(BASE, model_type="gsa"))
    with pytest.raises(ValueError, match="'model_type' = 'gsa' is not a model type ssmkit loads; loadable: .*gla"):
        load_pretrained(tmp_path)
    _write(tmp_path, dict(BASE, model_type="hgrn2", expand_ratio=16))  # fla's default use_lower_bound=True
    with pytest.raises(ValueError, match="'use_lower_bound' = True"):
        load_pretrained(tmp_path)


def test_export_refuses_models_fla_cannot_hold(tmp_path):
    from ssmkit.models import BackboneConfig

    mamba = CausalLM(BackboneConfig(d_model=16, n_layers=1, mixer="lru", mixer_cfg={"d_state": 8}), V)
    with pytest.raises(ValueError, match="cannot export to fla: its layers run \\['lru'\\]"):
        export_pretrained(mamba, tmp_path, "fla")
    gla = CausalLM(BackboneConfig(d_model=32, n_layers=1, mixer="gla", mixer_cfg={"n_heads": 2}, ffn="swiglu",
                                  ffn_hidden=64, ffn_bias=False, norm_eps=1e-5), V)
    with pytest.raises(ValueError, match="fla's GLA has no output-gate bias"):
        export_pretrained(gla, tmp_path, "fla")
    gla_mlp = CausalLM(BackboneConfig(d_model=32, n_layers=1, mixer="gla", mixer_cfg={"n_heads": 2}, ffn_mult=2), V)
    with pytest.raises(ValueError, match="pre-norm RMSNorm blocks with a SwiGLU MLP without biases"):
        export_pretrained(gla_mlp, tmp_path, "fla")
