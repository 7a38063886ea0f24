"""Presets build valid configs with the papers' numbers; key=value overrides are typed, and unknown
or ill-typed keys are rejected with the valid ones listed."""
from __future__ import annotations

import dataclasses

import pytest

from ssmkit.runs import RunConfig, apply_overrides, get_preset, list_presets, preset_summary
from ssmkit.layers.registry import get_mixer_class
from ssmkit.models import BackboneConfig
from ssmkit.training import TrainConfig


@pytest.mark.parametrize("name", list_presets())
@pytest.mark.parametrize("mixer", [None, "s4d", "attention", "lstm", "mamba"], ids=str)
def test_every_preset_builds_a_valid_config_for_any_mixer(name, mixer):
    run = get_preset(name, mixer)
    assert isinstance(run.model, BackboneConfig) and isinstance(run.train, TrainConfig)
    assert run.source and preset_summary(name)
    if mixer is not None:
        assert run.model.mixer == mixer
    fields = {f.name for f in dataclasses.fields(get_mixer_class(run.model.mixer).Config)}
    assert set(run.model.mixer_cfg) <= fields  # settings a mixer lacks (d_state for attention) are not passed
    assert RunConfig.from_json(run.to_json()) == run


def test_s4_lra_numbers_match_the_s4_configs():
    listops = get_preset("s4_lra_listops")
    assert (listops.task, listops.model.mixer, listops.model.d_model, listops.model.n_layers) == ("listops", "s4", 128, 8)
    assert (listops.train.lr, listops.train.ssm_lr, listops.train.weight_decay) == (0.01, 0.001, 0.05)
    assert (listops.train.batch_size, listops.train.epochs, listops.model.mixer_cfg["d_state"]) == (50, 40, 64)
    pathx = get_preset("s4_lra_pathx")
    assert (pathx.model.d_model, pathx.train.lr, pathx.train.batch_size, pathx.model.mixer_cfg["dt_min"]) == \
        (256, 0.001, 16, 0.0001)
    assert get_preset("s4_lra_pathfinder", "attention").model.mixer_cfg == {}


def test_mamba_and_zoology_presets():
    sc = get_preset("mamba_selective_copy")
    assert sc.task_cfg == {"n_noise": 4096, "n_copy": 16, "vocab_size": 16}
    assert (sc.train.steps, sc.train.lr, sc.train.batch_size, sc.train.min_lr_ratio) == (400_000, 1e-4, 64, 1.0)
    ih_mamba, ih_attn = get_preset("mamba_induction_heads"), get_preset("mamba_induction_heads", "attention")
    assert (ih_mamba.train.lr, ih_attn.train.lr) == (1e-3, 2e-4)
    assert (ih_mamba.train.steps, ih_attn.train.steps) == (25 * 8192, 50 * 8192)
    mqar = get_preset("zoology_mqar")
    assert (mqar.model.n_layers, get_preset("zoology_mqar", "mamba").model.n_layers) == (2, 4)
    assert mqar.train.weight_decay == 0.1 and mqar.task_cfg["vocab_size"] == 8192


def test_unknown_preset_lists_the_presets():
    with pytest.raises(KeyError, match="s4_lra_listops"):
        get_preset("no_such_preset")


def test_overrides_are_typed_and_routed():
    run = apply_overrides(get_preset("copy_memory_demo"), [
        "d_model=16", "n_layers=1", "lr=1e-3", "bf16=true", "betas=0.8,0.9", "task.delay=5", "mixer.d_state=8",
        "mixer.mode=chunked", "pool=last"])
    assert (run.model.d_model, run.model.n_layers, run.train.lr, run.train.bf16) == (16, 1, 1e-3, True)
    assert run.train.betas == (0.8, 0.9) and run.task_cfg == {"delay": 5} and run.pool == "last"
    assert run.model.mixer_cfg == {"d_state": 8, "mode": "chunked"}


@pytest.mark.parametrize("override, error, message", [
    ("foo=1", TypeError, r"unknown config key 'foo'; valid keys: model: \[.*'d_model'.*training: \[.*'lr'"),
    ("lr=fast", ValueError, "invalid value for 'lr': 'fast' is not a float"),
    ("steps=2.5", ValueError, "invalid value for 'steps': '2.5' is not an int"),
    ("steps=0", ValueError, "'steps': must be > 0"),
    ("n_layers=x", ValueError, "'n_layers'"),
    ("bf16=maybe", ValueError, "'bf16'.*a bool"),
    ("mixer.bogus=1", TypeError, r"mixer 's4d' has no field 'bogus'; valid mixer keys: \[.*'d_state'"),
    ("mixer.d_state=x", ValueError, "mixer.d_state: .*not an int"),
    ("mixer.mode=fastest", ValueError, r"'fastest' is not a mode of 's4d'; expected auto or one of \['fft'"),
    ("task.bogus=1", TypeError, r"task 'copy_memory' has no field 'bogus'; valid task keys: \[.*'delay'"),
    ("task.delay=-1", ValueError, "task.delay: .*must be >= 1"),
    ("pool=max", ValueError, "'pool': must be one of"),
    ("no_equals_sign", ValueError, "not of the form key=value"),
], ids=lambda v: v if isinstance(v, str) and "=" in v or v == "no_equals_sign" else "")
def test_bad_overrides_are_rejected_with_what_is_valid(override, error, message):
    with pytest.raises(error, match=message):
        apply_overrides(get_preset("copy_memory_demo"), [override])


def test_changing_the_mixer_rejects_settings_it_does_not_have():
    with pytest.raises(TypeError, match="mixer 'attention'"):
        apply_overrides(get_preset("copy_memory_demo"), ["mixer=attention", "mixer.d_state=8"])


def test_recurrent_transformer_presets_set_windows_of_32_where_a_mixer_has_them():
    assert get_preset("doc_lm_sweep").model.mixer_cfg == {"segment_len": 32, "mem_len": 32}
    assert get_preset("doc_lm_sweep", "swa").model.mixer_cfg == {"window": 32}
    assert get_preset("doc_lm_sweep", "mamba").model.mixer_cfg == {}
    hybrid = get_preset("doc_lm_sweep", ("rmt", "mamba", "block_recurrent"))
    assert hybrid.model.mixer_cfg == {"rmt": {"segment_len": 32}, "block_recurrent": {"block_len": 32}}
    assert hybrid.model.n_layers == 3
    rollout = get_preset("rigid_body_rollout")
    assert (rollout.task, rollout.model.mixer, rollout.task_cfg) == ("rigid_body", "vpt", {"length": 32})
