"""A hybrid stack is a tuple of mixer names; mixer settings are shared by the mixers that have them
or given to one mixer by name."""
from __future__ import annotations

import dataclasses
import json

import pytest

from ssmkit.config import build_config, config_from_overrides
from ssmkit.models import Backbone, BackboneConfig


def test_one_name_stays_a_string_and_a_hybrid_is_a_tuple():
    assert BackboneConfig(mixer="mamba").mixer == "mamba"
    for given in ("s4d,mamba,attention", ["s4d", "mamba", "attention"], ("s4d", " mamba", "attention")):
        cfg = BackboneConfig(n_layers=3, mixer=given)
        assert cfg.mixer == ("s4d", "mamba", "attention") and cfg.mixer_label() == "s4d,mamba,attention"
    assert BackboneConfig(mixer=("lru",)).mixer == "lru"  # one name: every layer
    cfg = BackboneConfig(n_layers=4, mixer="mamba,mamba,mamba,attention")
    assert cfg.layer_names() == ["mamba", "mamba", "mamba", "attention"] and cfg.mixers() == ("mamba", "attention")


def test_hybrid_from_the_command_line_and_json():
    cfg = config_from_overrides(BackboneConfig, ["n_layers=3", "mixer=s4d,mamba,attention"])
    assert cfg.mixer == ("s4d", "mamba", "attention")
    data = json.loads(json.dumps(dataclasses.asdict(cfg)))
    assert data["mixer"] == ["s4d", "mamba", "attention"] and build_config(BackboneConfig, data) == cfg


@pytest.mark.parametrize("mixer, error, message", [
    ("s4d,nope", KeyError, "unknown mixer 'nope'; registered mixers"),
    ("s4d,,lru", ValueError, "empty mixer name"),
    (3, TypeError, "expected a mixer name or a tuple of names"),
    ("s4d,lru,s5", ValueError, "names 3 layers but n_layers=2"),
])
def test_bad_mixers_are_named(mixer, error, message):
    with pytest.raises(error, match=message):
        BackboneConfig(mixer=mixer)


def test_shared_settings_go_to_the_mixers_that_have_them():
    cfg = BackboneConfig(n_layers=2, mixer="mamba,attention", mixer_cfg={"d_state": 4, "mode": "chunked"})
    assert cfg.mixer_settings("mamba") == {"d_state": 4, "mode": "chunked"}
    assert cfg.mixer_settings("attention") == {}  # no d_state field and no chunked mode
    mamba, attention = (b.mixer for b in Backbone(cfg).blocks)
    assert mamba.config.d_state == 4 and attention.mixer_name == "attention"


def test_per_name_settings_override_the_shared_ones():
    cfg = BackboneConfig(n_layers=3, mixer="s4d,mamba,s4d",
                         mixer_cfg={"d_state": 8, "mamba": {"d_state": 4, "mode": "reference"}})
    assert cfg.mixer_settings("s4d") == {"d_state": 8}
    assert cfg.mixer_settings("mamba") == {"d_state": 4, "mode": "reference"}
    blocks = Backbone(cfg).blocks
    assert [b.mixer.config.d_state for b in blocks] == [8, 4, 8]


@pytest.mark.parametrize("mixer, mixer_cfg, error, message", [
    ("s4d", {"bogus": 1}, TypeError, r"'mixer.bogus': mixer 's4d' has no field 'bogus'; valid mixer keys: \[.*'d_state'"),
    ("mamba,attention", {"bogus": 1}, TypeError, r"no mixer of the stack \['mamba', 'attention'\] has a field 'bogus'"),
    ("mamba,attention", {"mode": "fastest"}, ValueError, "'fastest' is not a mode of any mixer of the stack"),
    ("s4d", {"mode": "fastest"}, ValueError, r"'fastest' is not a mode of 's4d'; expected auto or one of \['fft'"),
    ("mamba,attention", {"lru": {"d_state": 4}}, TypeError, "no layer of the stack runs mixer 'lru'"),
    ("mamba,attention", {"attention": {"d_state": 4}}, TypeError, "'mixer.attention.d_state': mixer 'attention' has no field"),
    ("mamba,attention", {"mamba": {"mode": "fft"}}, ValueError, "'mixer.mamba.mode': 'fft' is not a mode of 'mamba'"),
    ("mamba,attention", {"mamba": {"d_state": -1}}, ValueError, "d_state"),
])
def test_settings_no_mixer_takes_are_rejected(mixer, mixer_cfg, error, message):
    with pytest.raises(error, match=message):
        BackboneConfig(n_layers=len(mixer.split(",")), mixer=mixer, mixer_cfg=mixer_cfg)
