"""flash-linear-attention's token-mixing layers, one ``Family`` per model type: which ssmkit mixer
and settings a config gives (refusing the options ssmkit does not compute), how the layer's
tensors are named, and the config fields an export writes back.

Read from flash-linear-attention 0.6.0 (``fla/layers/{gla,delta_net,gated_deltanet,hgrn2,rwkv6,
multiscale_retention}.py``); each mapping is checked against fla's own models in
tests/models/test_fla.py. The reasons for each refusal: docs/interop.md.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable

import torch
from torch import Tensor

from ...layers.base import SequenceMixer
from ...layers.retnet import retention_decay_logits
from .common import Map, expect, refuse

Cfg = dict[str, Any]


def _width(D: int, expand: float, key: str) -> float:
    """An ssmkit ``expand_*`` that gives fla's width round(D · expand) through int(D · expand)."""
    width = round(D * expand)
    if int(D * expand) != width:
        refuse(key, expand, f"hidden_size * {key} = {D * expand} is not an integer width")
    return expand


def _same(mixer: SequenceMixer, prefix: str) -> dict[str, Map]:
    """Every tensor of the mixer under the same name after ``prefix``."""
    return {k: Map(prefix + k) for k in mixer.state_dict()}


def _no(cfg: Cfg, key: str, default: Any, reason: str) -> None:
    """Refuse ``cfg[key]`` unless it is fla's ``default`` (an fla option ssmkit's layer does not have)."""
    expect(cfg, key, default, (default,), reason)


def _equal_heads(cfg: Cfg, key: str) -> None:
    if cfg.get(key) not in (None, cfg.get("num_heads")):
        refuse(key, cfg[key], "grouped key-value heads: ssmkit's layer gives every head its own keys and values")


def _same_eps(m: SequenceMixer, eps: float, what: str) -> None:
    """fla's layers take the model's one norm_eps: refuse a layer norm with another."""
    if m.config.norm_eps != eps:
        raise ValueError(f"cannot export to fla {what} exactly: fla uses one norm_eps for the blocks and the "
                         f"layers; the model has {eps} and {m.config.norm_eps}")


def _fused_norm(cfg: Cfg, gate: str) -> str:
    """fla's name of the gated per-head RMSNorm: fused with a swish output gate, or plain."""
    fused = cfg.get("fuse_norm", True) and cfg.get("use_output_gate", True) and gate == "swish"
    return "g_norm_swish_gate.weight" if fused else "g_norm.weight"


# ---------------------------------------------------------------------------------------- GLA
def _gla_settings(cfg: Cfg, eps: float) -> Cfg:
    _equal_heads(cfg, "num_kv_heads")
    _no(cfg, "feature_map", None, "a feature map on q and k: ssmkit's GLA has none")
    _no(cfg, "use_short_conv", False, "short convolutions on q, k, v: ssmkit's GLA has none")
    _no(cfg, "clamp_min", None, "a floor on the log decay: ssmkit's GLA does not clamp")
    _no(cfg, "elementwise_affine", True, "a norm without weight: ssmkit's GLA norm has one")
    _no(cfg, "use_gk", True, "a GLA without key decay gates")
    _no(cfg, "use_gv", False, "value decay gates (older GLA layers): ssmkit's GLA gates the keys only")
    D = cfg["hidden_size"]
    return dict(n_heads=cfg.get("num_heads", 4), expand_k=_width(D, cfg.get("expand_k", 0.5), "expand_k"),
                expand_v=_width(D, cfg.get("expand_v", 1.0), "expand_v"), gate_low_rank=16, gate_temperature=16.0,
                norm_eps=eps, output_gate=cfg.get("use_output_gate", True), gate_bias=False)


def _gla_maps(mixer: SequenceMixer, p: str, cfg: Cfg) -> dict[str, Map]:
    maps = _same(mixer, p)
    maps.update({"gate_down.weight": Map(p + "gk_proj.0.weight"), "gate_up.weight": Map(p + "gk_proj.1.weight"),
                 "gate_up.bias": Map(p + "gk_proj.1.bias"), "norm.weight": Map(p + _fused_norm(cfg, "swish"))})
    if mixer.r_proj is not None:
        maps["r_proj.weight"] = Map(p + "g_proj.weight")
    return maps


def _gla_config(m: SequenceMixer, eps: float) -> Cfg:
    _same_eps(m, eps, "GLA")
    c = m.config
    if (c.gate_bias and c.output_gate) or c.gate_low_rank != 16 or c.gate_temperature != 16.0:
        raise ValueError("cannot export to fla GLA exactly: fla's GLA has no output-gate bias (gate_bias=False), "
                         "a gate rank of 16 and a gate temperature of 16")
    return dict(num_heads=m.n_heads, expand_k=m.n_heads * m.key_dim / m.d_model,
                expand_v=m.n_heads * m.value_dim / m.d_model, use_output_gate=c.output_gate)


# ---------------------------------------------------------------------------------------- DeltaNet
def _delta_common(cfg: Cfg) -> None:
    _no(cfg, "use_short_conv", True, "no short convolutions: ssmkit's DeltaNet always has them")
    _no(cfg, "allow_neg_eigval", False, "beta in (0, 2) (negative eigenvalues): ssmkit's beta is in (0, 1)")


def _deltanet_settings(cfg: Cfg, eps: float) -> Cfg:
    _delta_common(cfg)
    _no(cfg, "use_beta", True, "a fixed beta = 1: ssmkit's DeltaNet learns beta")
    _no(cfg, "qk_norm", "l2", "sum-normalized q and k: ssmkit's DeltaNet L2-normalizes them")
    _no(cfg, "qk_activation", "silu", "q, k activations other than SiLU")
    D = cfg["hidden_size"]
    return dict(num_heads=cfg.get("num_heads", 16), expand_k=_width(D, cfg.get("expand_k", 1.0), "expand_k"),
                expand_v=_width(D, cfg.get("expand_v", 1.0), "expand_v"), gated=False, d_conv=cfg.get("conv_size", 4),
                conv_bias=False, output_gate=cfg.get("use_gate", False), norm_eps=eps)


def _gated_deltanet_settings(cfg: Cfg, eps: float) -> Cfg:
    _delta_common(cfg)
    _equal_heads(cfg, "num_v_heads")
    expect(cfg, "output_gate_activation", "swish", ("swish", "silu"), "a sigmoid output gate: ssmkit's is swish")
    D, H, K = cfg["hidden_size"], cfg.get("num_heads", 6), cfg.get("head_dim", 256)
    V = int(K * cfg.get("expand_v", 2.0))
    return dict(num_heads=H, expand_k=_width(D, H * K / D, "head_dim"), expand_v=_width(D, H * V / D, "expand_v"),
                gated=True, d_conv=cfg.get("conv_size", 4), conv_bias=False, output_gate=cfg.get("use_gate", True),
                norm_eps=eps)


def _deltanet_maps(mixer: SequenceMixer, p: str, cfg: Cfg) -> dict[str, Map]:
    return _same(mixer, p)  # ssmkit's DeltaNet uses fla's names


def _deltanet_config(m: SequenceMixer, eps: float) -> Cfg:
    _same_eps(m, eps, "DeltaNet")
    c = m.config
    if c.conv_bias:
        raise ValueError("cannot export to fla DeltaNet exactly: fla's model has no short-convolution bias")
    shared = dict(num_heads=m.n_heads, use_gate=c.output_gate, conv_size=c.d_conv)
    if c.gated:
        return dict(shared, head_dim=m.head_k, expand_v=m.head_v / m.head_k)
    return dict(shared, expand_k=m.key_width / m.d_model, expand_v=m.value_width / m.d_model)


# ---------------------------------------------------------------------------------------- HGRN2
HGRN2_NORM_EPS = 1e-5


def _hgrn2_settings(cfg: Cfg, eps: float) -> Cfg:
    _no(cfg, "use_short_conv", False, "short convolutions: ssmkit's HGRN2 has none")
    _no(cfg, "elementwise_affine", True, "a norm without weight: ssmkit's HGRN2 norm has one")
    expect(cfg, "use_lower_bound", True, (False,),  # fla's default is True
           "learned lower bounds of the forget gates (the model's lower_bounds, per channel, shared across layers "
           "through a softmax over layers and a cumulative sum): ssmkit's HGRN2 has a fixed scalar bound per layer")
    D, E = cfg["hidden_size"], cfg.get("expand_ratio", 128)
    if E is None:
        E = D // cfg["num_heads"]
    if D % E:
        refuse("expand_ratio", E, f"hidden_size {D} is not a multiple of it (fla's forget width would differ from hidden_size)")
    # fla's layer reads out with its kernels' default scale K^-1/2 and normalizes with
    # rms_norm_linear's default eps 1e-5, whatever norm_eps says
    return dict(expand_ratio=E, lower_bound=0.0, norm_eps=HGRN2_NORM_EPS, scale_q=True)


def _hgrn2_maps(mixer: SequenceMixer, p: str, cfg: Cfg) -> dict[str, Map]:
    maps = _same(mixer, p)
    maps["norm.weight"] = Map(p + "g_norm.weight")
    return maps


def _hgrn2_config(m: SequenceMixer, eps: float) -> Cfg:
    c = m.config
    if c.lower_bound != 0.0 or not c.scale_q or c.norm_eps != HGRN2_NORM_EPS:
        raise ValueError("cannot export to fla HGRN2 exactly: fla bounds the forget gates by learned per-channel "
                         f"values (ssmkit's lower_bound must be 0), scales q (scale_q) and its output norm's eps is "
                         f"{HGRN2_NORM_EPS}")
    return dict(expand_ratio=m.head_dim, use_lower_bound=False)


# ---------------------------------------------------------------------------------------- RWKV-6
RWKV_ORDER = "rwkvg"  # fla's order of the five ddlerp mixes (x_bias rows, both x_proj blocks)
OURS = "wkvrg"  # ssmkit's (RWKV-LM's) order: time_maa_w1 column blocks, time_maa_w2[0..4]


def _rwkv6_settings(cfg: Cfg, eps: float) -> Cfg:
    _no(cfg, "norm_bias", True, "LayerNorms without bias: ssmkit's LayerNorm has one")
    D = cfg["hidden_size"]
    return dict(num_heads=cfg.get("num_heads", 4), expand_k=_width(D, cfg.get("expand_k", 0.5), "expand_k"),
                expand_v=_width(D, cfg.get("expand_v", 1.0), "expand_v"), mix_lora_rank=cfg.get("proj_low_rank_dim", 32),
                decay_lora_rank=cfg.get("gate_low_rank_dim", 64), norm_eps=eps)


def _blocks(t: Tensor, dim: int, order_from: str, order_to: str) -> Tensor:
    """t with its 5 blocks of the mixes along ``dim`` (dim of size 5 R) reordered from one order to the other."""
    blocks = t.unflatten(dim, (5, -1))
    index = torch.tensor([order_from.index(c) for c in order_to], device=t.device)
    return blocks.index_select(dim, index).flatten(dim, dim + 1)


def _w1_read(t: Tensor) -> Tensor:
    """fla's x_proj.0.linear.weight (5R, D), blocks in fla's order -> time_maa_w1 (D, 5R) in RWKV-LM's."""
    return _blocks(t, 0, RWKV_ORDER, OURS).T


def _w1_write(t: Tensor) -> Tensor:
    return _blocks(t.T, 0, OURS, RWKV_ORDER)


def _w2_read(t: Tensor) -> Tensor:
    """fla's x_proj.2.weight (D, 5R), blocks in fla's order -> time_maa_w2 (5, R, D) in RWKV-LM's."""
    return _blocks(t, 1, RWKV_ORDER, OURS).view(t.shape[0], 5, -1).permute(1, 2, 0)


def _w2_write(t: Tensor) -> Tensor:
    return _blocks(t.permute(2, 0, 1).reshape(t.shape[2], -1), 1, OURS, RWKV_ORDER)


def _rwkv6_maps(mixer: SequenceMixer, p: str, cfg: Cfg) -> dict[str, Map]:
    T = dict(read=lambda t: t.T, write=lambda t: t.T)
    maps = {
        "time_maa_x": Map(p + "x_proj.0.mu"),
        "time_maa_w1": Map(p + "x_proj.0.linear.weight", read=_w1_read, write=_w1_write),
        "time_maa_w2": Map(p + "x_proj.2.weight", read=_w2_read, write=_w2_write),
        "time_decay": Map(p + "w_proj.linear.lora.2.bias"),
        "time_decay_w1": Map(p + "w_proj.linear.lora.0.weight", **T),
        "time_decay_w2": Map(p + "w_proj.linear.lora.2.weight", **T),
        "time_faaaa": Map(p + "bonus"),
        "receptance.weight": Map(p + "r_proj.linear.weight"), "key.weight": Map(p + "k_proj.linear.weight"),
        "value.weight": Map(p + "v_proj.linear.weight"), "gate.weight": Map(p + "g_proj.linear.weight"),
        "output.weight": Map(p + "o_proj.weight"),
        "ln_x.weight": Map(p + "g_norm.weight"), "ln_x.bias": Map(p + "g_norm.bias"),
    }
    maps.update({f"time_maa_{c}": Map(p + "x_bias", part=RWKV_ORDER.index(c)) for c in OURS})
    return maps


def rwkv6_ffn_maps(p: str) -> dict[str, Map]:
    """fla's RWKV6FeedForward -> ssmkit's rwkv6_cmix."""
    return {"time_maa_k": Map(p + "key.mu"), "key.weight": Map(p + "key.linear.weight"),
            "time_maa_r": Map(p + "receptance.mu"), "receptance.weight": Map(p + "receptance.linear.weight"),
            "value.weight": Map(p + "value.weight")}


def _rwkv6_config(m: SequenceMixer, eps: float) -> Cfg:
    _same_eps(m, eps, "RWKV-6")
    c = m.config
    H = m.n_heads
    return dict(num_heads=H, expand_k=H * m.head_k / m.d_model, expand_v=H * m.head_v / m.d_model,
                proj_low_rank_dim=c.mix_lora_rank, gate_low_rank_dim=c.decay_lora_rank)


# ---------------------------------------------------------------------------------------- RetNet
def _retnet_settings(cfg: Cfg, eps: float) -> Cfg:
    _equal_heads(cfg, "num_kv_heads")
    _no(cfg, "feature_map", None, "a feature map on q and k: ssmkit's RetNet has none")
    _no(cfg, "use_short_conv", False, "short convolutions: ssmkit's RetNet has none")
    _no(cfg, "use_output_gate", True, "no output gate: ssmkit's RetNet has the paper's swish gate")
    _no(cfg, "elementwise_affine", True, "a norm without weight: ssmkit's norm has one")
    _no(cfg, "expand_k", 1.0, "keys of other than hidden_size / num_heads dims per head (ssmkit's RetNet)")
    ev = cfg.get("expand_v", 2.0)
    if ev != int(ev) or ev < 1:
        refuse("expand_v", ev, "ssmkit's RetNet takes a whole value_factor >= 1")
    return dict(n_heads=cfg.get("num_heads", 8), value_factor=int(ev), rope_base=10000.0, norm_eps=eps,
                norm="rmsnorm", bias=False, learn_decay=False)


def _retnet_maps(mixer: SequenceMixer, p: str, cfg: Cfg) -> dict[str, Map]:
    maps = _same(mixer, p)
    maps["rms_norm.weight"] = Map(p + _fused_norm(cfg, "swish"))
    maps["decay_logit"] = None  # fla's decays are fixed, the paper's: the layer's own
    return maps


def _retnet_config(m: SequenceMixer, eps: float) -> Cfg:
    _same_eps(m, eps, "RetNet")
    c = m.config
    fixed = torch.equal(m.decay_logit.detach(), retention_decay_logits(m.n_heads).to(m.decay_logit))
    if c.norm != "rmsnorm" or c.bias or c.rope_base != 10000.0 or not fixed:
        raise ValueError("cannot export to fla RetNet exactly: fla's has the per-head RMSNorm (norm='rmsnorm'), "
                         "no biases, RoPE base 10000 and the paper's fixed decays")
    return dict(num_heads=m.n_heads, expand_k=1.0, expand_v=float(c.value_factor))


@dataclasses.dataclass(frozen=True)
class Family:
    """One fla model type: the ssmkit mixer, its settings from a config, its tensor names, the
    config fields of an export, fla's default MLP ratio and norm eps."""

    mixer: str
    settings: Callable[[Cfg, float], Cfg]
    maps: Callable[[SequenceMixer, str, Cfg], dict[str, Map | None]]
    config: Callable[[SequenceMixer, float], Cfg]
    hidden_ratio: float = 4.0
    norm_eps: float = 1e-6


FAMILIES = {
    "gla": Family("gla", _gla_settings, _gla_maps, _gla_config),
    "delta_net": Family("deltanet", _deltanet_settings, _deltanet_maps, _deltanet_config),
    "gated_deltanet": Family("deltanet", _gated_deltanet_settings, _deltanet_maps, _deltanet_config),
    "hgrn2": Family("hgrn2", _hgrn2_settings, _hgrn2_maps, _hgrn2_config),
    "rwkv6": Family("rwkv6", _rwkv6_settings, _rwkv6_maps, _rwkv6_config, hidden_ratio=3.5, norm_eps=1e-5),
    "retnet": Family("retnet", _retnet_settings, _retnet_maps, _retnet_config, hidden_ratio=2.0),
}
