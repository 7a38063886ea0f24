"""Checkpoint interop against Hugging Face transformers (a test extra): logits and greedy generation."""
from __future__ import annotations

import json

import pytest
import torch

from conftest import assert_close_rel
from ssmkit.models import CausalLM, BackboneConfig
from ssmkit.testing import measured_tol
from ssmkit.models.pretrained import load_pretrained, save_pretrained

transformers = pytest.importorskip("transformers", reason="interop tests need the test extra: pip install 'ssmkit[test]'")
pytest.importorskip("safetensors")

V = 64

# Logits against transformers' (error at the test's ids, seed 1; worst over id seeds 1-5), relative
# to the largest logit, measured with torch 2.13.0 and transformers 5.25.0 on CPU. transformers'
# Mamba and Mamba2 compute partly in float32 whatever the model's dtype (A.float(), dt.float(),
# B.float() in the scan, the RMS norms in float32, logits .float(); its own float64 run differs from
# its float32 run by 2e-7 / 8e-7), so the float64 comparison cannot reach float64 precision: it
# checks our float64 path (weights, conv, scan kernels in double) at transformers' float32 floor.
LOGITS_MEASURED = {
    ("mamba", torch.float32): (2.7e-7, 2.7e-7), ("mamba", torch.float64): (1.1e-7, 1.1e-7),
    ("mamba2", torch.float32): (3.4e-7, 3.5e-7), ("mamba2", torch.float64): (3.2e-7, 3.2e-7),
}
BIN_MEASURED = (7.7e-8, 7.7e-8)  # the pytorch_model.bin route, float32, one input


def _hf_mamba(kind: str):
    torch.manual_seed(0)
    if kind == "mamba":
        cfg = transformers.MambaConfig(vocab_size=V, hidden_size=32, state_size=8, num_hidden_layers=2,
                                       expand=2, conv_kernel=4, eos_token_id=None, pad_token_id=0, bos_token_id=None)
        model = transformers.MambaForCausalLM(cfg)
    else:
        cfg = transformers.Mamba2Config(vocab_size=V, hidden_size=32, state_size=16, num_hidden_layers=2,
                                        expand=2, head_dim=16, num_heads=4, n_groups=2, conv_kernel=4,
                                        chunk_size=16, eos_token_id=None, pad_token_id=0, bos_token_id=None)
        model = transformers.Mamba2ForCausalLM(cfg)
    with torch.no_grad():  # move every weight off its init so that nothing is trivially zero/one
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return model.eval()


@pytest.fixture(params=["mamba", "mamba2"])
def hf_model(request):
    return request.param, _hf_mamba(request.param)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["float32", "float64"])
def test_logits_and_greedy_generation_match_transformers(hf_model, dtype, tmp_path):
    kind, hf = hf_model
    hf.save_pretrained(tmp_path)
    ours = load_pretrained(tmp_path).to(dtype)
    hf = hf.to(dtype)
    assert ours.backbone.config.mixer == kind
    ids = torch.randint(1, V, (2, 23), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = hf(ids).logits
        got = ours(ids)
    assert got.dtype == dtype
    assert_close_rel(got, expected, measured_tol(*LOGITS_MEASURED[kind, dtype]), f"{kind} {dtype} logits")
    hf_gen = hf.generate(ids, max_new_tokens=12, do_sample=False, min_new_tokens=12)
    assert torch.equal(ours.generate(ids, 12), hf_gen)


def test_pytorch_bin_and_mamba_ssm_formats(tmp_path):
    hf = _hf_mamba("mamba")
    sd = hf.state_dict()
    (tmp_path / "hf").mkdir()
    torch.save(sd, tmp_path / "hf" / "pytorch_model.bin")
    (tmp_path / "hf" / "config.json").write_text(hf.config.to_json_string())
    ids = torch.randint(1, V, (1, 9), generator=torch.Generator().manual_seed(2))
    ref = load_pretrained(tmp_path / "hf")(ids)
    with torch.no_grad():
        assert_close_rel(ref, hf(ids).logits, measured_tol(*BIN_MEASURED), "pytorch_model.bin")
    # the original mamba_ssm layout: embedding (singular), its own config keys
    orig = {k.replace("backbone.embeddings.", "backbone.embedding."): v for k, v in sd.items()}
    (tmp_path / "orig").mkdir()
    torch.save(orig, tmp_path / "orig" / "pytorch_model.bin")
    cfg = {"d_model": 32, "n_layer": 2, "vocab_size": V, "ssm_cfg": {"d_state": 8}, "rms_norm": True,
           "residual_in_fp32": True, "fused_add_norm": True, "pad_vocab_size_multiple": 8, "tie_embeddings": True}
    (tmp_path / "orig" / "config.json").write_text(json.dumps(cfg))
    # the same weights in the same model: the same computation, bit for bit
    assert torch.equal(load_pretrained(tmp_path / "orig")(ids), ref), "mamba_ssm format"


def test_save_and_load_roundtrip(tmp_path):
    torch.manual_seed(0)
    lm = CausalLM(BackboneConfig(d_model=16, n_layers=2, mixer="mamba2,s4d", mixer_cfg={"d_state": 8}), V).eval()
    save_pretrained(lm, tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.json", "model.safetensors"]
    back = load_pretrained(tmp_path)
    ids = torch.randint(0, V, (2, 7))
    assert torch.equal(back(ids), lm(ids))


def test_mismatched_checkpoint_lists_what_differs(tmp_path):
    hf = _hf_mamba("mamba")
    hf.save_pretrained(tmp_path)
    cfg = json.loads((tmp_path / "config.json").read_text())
    cfg["state_size"] = 4
    cfg["num_hidden_layers"] = 1
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ValueError) as err:
        load_pretrained(tmp_path)
    msg = str(err.value)
    assert "model.safetensors does not match the model its config describes" in msg
    assert "unexpected key: backbone.layers.1." in msg  # the checkpoint's own names
    assert ("shape mismatch backbone.layers.0.mixer.A_log: checkpoint (64, 8) does not give the model's "
            "backbone.blocks.0.mixer.A_log (64, 4)") in msg


def test_corrupt_files_are_named(tmp_path):
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(ValueError, match="corrupt config file"):
        load_pretrained(tmp_path)
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(FileNotFoundError, match="no model.safetensors or pytorch_model.bin"):
        load_pretrained(tmp_path)
    (tmp_path / "pytorch_model.bin").write_bytes(b"\x80\x04garbage")
    with pytest.raises(ValueError, match="pytorch_model.bin"):
        load_pretrained(tmp_path)


def _small_lm(seed: int) -> CausalLM:
    torch.manual_seed(seed)
    return CausalLM(BackboneConfig(d_model=16, n_layers=1, mixer="s4d", mixer_cfg={"d_state": 8}), V).eval()


def test_save_keeps_other_files_and_replaces_the_pair(tmp_path):
    save_pretrained(_small_lm(0), tmp_path)
    (tmp_path / "README.md").write_text("my notes")
    new = _small_lm(1)
    save_pretrained(new, tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["README.md", "config.json", "model.safetensors"]
    ids = torch.randint(0, V, (1, 5))
    assert torch.equal(load_pretrained(tmp_path)(ids), new(ids))
    assert not [p for p in tmp_path.parent.iterdir() if p.name.startswith(f".{tmp_path.name}.")]


def test_a_kill_between_the_two_files_leaves_the_old_model(tmp_path):
    """SIGKILL after model.safetensors is written and before config.json: the folder still loads the old pair."""
    import os
    import signal
    import subprocess
    import sys
    from pathlib import Path

    old = _small_lm(0)
    save_pretrained(old, tmp_path / "m")
    code = (
        "import os, signal, torch, pathlib\n"
        "import safetensors.torch as st\n"
        "from ssmkit.models import CausalLM, BackboneConfig\n"
        "from ssmkit.models.pretrained import save_pretrained\n"
        "real = st.save_file\n"
        "def save_then_die(*a, **k):\n"
        "    real(*a, **k)\n"
        "    os.kill(os.getpid(), signal.SIGKILL)\n"
        "st.save_file = save_then_die\n"
        "torch.manual_seed(1)\n"
        f"lm = CausalLM(BackboneConfig(d_model=16, n_layers=1, mixer='s4d', mixer_cfg={{'d_state': 8}}), {V})\n"
        f"save_pretrained(lm, {str(tmp_path / 'm')!r})\n"
    )
    src = str(Path(__file__).resolve().parents[2] / "src")
    env = {**os.environ, "PYTHONPATH": src + os.pathsep + os.environ.get("PYTHONPATH", "")}
    run = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert run.returncode == -signal.SIGKILL, run.stderr
    ids = torch.randint(0, V, (1, 5))
    assert torch.equal(load_pretrained(tmp_path / "m")(ids), old(ids))
    save_pretrained(_small_lm(2), tmp_path / "m")  # a later save still works beside the dead writer's leftovers


def test_malformed_config_names_the_file_and_field(tmp_path):
    save_pretrained(_small_lm(0), tmp_path)
    cfg_file = tmp_path / "config.json"
    good = json.loads(cfg_file.read_text())
    cases = [
        ({k: v for k, v in good.items() if k != "vocab_size"}, "missing field 'vocab_size'"),
        ({**good, "vocab_size": "64"}, "field 'vocab_size' must be a positive int"),
        ({**good, "tie_embeddings": 1}, "field 'tie_embeddings' must be bool"),
        ({**good, "backbone": {**good["backbone"], "d_model": -3}}, "field 'backbone'.*d_model"),
        ({**good, "backbone": {**good["backbone"], "width": 3}}, "field 'backbone'.*unknown config key"),
        ({**good, "backbone": [1, 2]}, "field 'backbone' must be an object"),
        ([1, 2], "expected a JSON object"),
    ]
    for cfg, message in cases:
        cfg_file.write_text(json.dumps(cfg))
        with pytest.raises(ValueError, match=message) as err:
            load_pretrained(tmp_path)
        assert str(cfg_file) in str(err.value) or "corrupt config file" in str(err.value)


def test_nan_weights_are_refused_naming_the_tensor(tmp_path):
    lm = _small_lm(0)
    with torch.no_grad():
        lm.backbone.blocks[0].mixer.D[3] = float("nan")
    save_pretrained(lm, tmp_path)
    with pytest.raises(ValueError, match=r"weight 'backbone\.blocks\.0\.mixer\.D' contains NaN"):
        load_pretrained(tmp_path)


@pytest.mark.parametrize("kind", ["mamba", "mamba2"])
@pytest.mark.parametrize("tie", [True, False], ids=["tied", "untied"])
def test_save_pretrained_hf_round_trip_through_transformers(kind, tie, tmp_path):
    """An ssmkit model written with format="hf" loads in transformers with equal logits and greedy
    generations, and loads back into ssmkit bit for bit."""
    torch.manual_seed(3)
    mixer_cfg = {"d_state": 8} if kind == "mamba" else {"d_state": 16, "head_dim": 16, "n_groups": 2, "chunk_size": 16}
    ours = CausalLM(BackboneConfig(d_model=32, n_layers=2, mixer=kind, mixer_cfg=mixer_cfg), V, tie_embeddings=tie)
    with torch.no_grad():
        for p in ours.parameters():
            p.add_(0.05 * torch.randn_like(p))
    ours.eval()
    save_pretrained(ours, tmp_path, format="hf")
    # the class by name: once flash-linear-attention is imported (test_fla, in the same worker) it
    # registers its own Mamba with AutoModelForCausalLM for model_type "mamba"
    cls = {"mamba": transformers.MambaForCausalLM, "mamba2": transformers.Mamba2ForCausalLM}[kind]
    hf = cls.from_pretrained(tmp_path).eval()
    assert json.loads((tmp_path / "config.json").read_text())["architectures"] == [cls.__name__]
    ids = torch.randint(1, V, (2, 23), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        got, expected = ours(ids), hf(ids).logits
    assert_close_rel(got, expected, measured_tol(*LOGITS_MEASURED[kind, torch.float32]), f"{kind} hf export logits")
    assert torch.equal(ours.generate(ids, 8), hf.generate(ids, max_new_tokens=8, do_sample=False, min_new_tokens=8))
    back = load_pretrained(tmp_path)
    assert back.tied == tie
    for (k, a), b in zip(ours.state_dict().items(), back.state_dict().values(), strict=True):
        assert torch.equal(a, b), k


def test_save_pretrained_hf_refuses_what_transformers_cannot_hold(tmp_path):
    lm = CausalLM(BackboneConfig(d_model=16, n_layers=2, mixer="s4d"), V)
    with pytest.raises(ValueError, match=r"cannot save as a Hugging Face.*\['s4d'\]"):
        save_pretrained(lm, tmp_path / "a", format="hf")
    lm = CausalLM(BackboneConfig(d_model=16, n_layers=2, mixer="mamba", ffn_mult=2), V)
    with pytest.raises(ValueError, match="no MLP"):
        save_pretrained(lm, tmp_path / "b", format="hf")
    with pytest.raises(ValueError, match="unknown save format 'onnx'"):
        save_pretrained(lm, tmp_path / "c", format="onnx")
    assert not (tmp_path / "b").exists()


def test_eos_and_repetition_penalty_generate_like_transformers(tmp_path):
    hf = _hf_mamba("mamba")
    hf.save_pretrained(tmp_path)
    ours = load_pretrained(tmp_path)
    ids = torch.randint(1, V, (2, 9), generator=torch.Generator().manual_seed(4))
    free = ours.generate(ids, 12)
    eos = int(free[0, 9 + 3])
    for opts in ({"repetition_penalty": 1.3}, {"eos_token_id": eos, "pad_token_id": 0},
                 {"eos_token_id": eos, "pad_token_id": 0, "repetition_penalty": 0.7}):
        theirs = hf.generate(ids, max_new_tokens=12, do_sample=False, **opts)
        assert torch.equal(ours.generate(ids, 12, **opts), theirs), opts
