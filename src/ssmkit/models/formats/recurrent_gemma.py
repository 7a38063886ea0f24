"""Hugging Face ``RecurrentGemmaForCausalLM`` (Griffin: RG-LRU and local-attention blocks), read and written.

The model is ssmkit's pre-norm ``CausalLM`` with, per layer, ``rglru`` or ``attention`` (the
config's ``block_types`` pattern, repeated) and a GeGLU MLP (tanh GELU, biases), and around it the
embedding scale √D rounded to bfloat16 (transformers' ``normalizer``) and the logit soft-cap.
Conventions that differ (docs/interop.md):

- RMSNorm: transformers multiplies by (1 + w); ssmkit stores that factor: w_ssmkit = 1 + w;
- RG-LRU: Λ = -recurrent_param (a = σ(-recurrent_param)^(8 r)), the gate weights (H, in, out)
  stored (H, out, in), biases (H, W/H) flattened, ``conv_1d`` -> ``conv1d``; and the first-token
  reset of the official code (``reset_at_start=True``);
- local attention: multi-query (``n_kv_heads``), RoPE on the first half of each head
  (``rope_fraction``), the window (``window``), a bias on o_proj only (``out_bias``);
- the MLP's ``intermediate_size`` is twice its hidden width (transformers halves it).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from ...io import atomic_folder
from ..backbone import BackboneConfig
from ..lm import CausalLM
from .common import Built, Checkpoint, Map, Maps, expect, refuse, safetensors_module, tied_head_is_embedding, write_state

KINDS = {"recurrent": "rglru", "attention": "attention"}
ACTIVATION = "gelu_pytorch_tanh"  # the gate branch of the recurrent block and the MLP


def embed_scale(d_model: int) -> float:
    """√D as transformers' RecurrentGemma stores it: a bfloat16 buffer."""
    return float(torch.tensor(d_model**0.5, dtype=torch.bfloat16))


def _rope(cfg: dict[str, Any]) -> tuple[float, float]:
    """(rope_theta, partial_rotary_factor) from transformers 5's ``rope_parameters`` or 4's top-level keys."""
    rope = cfg.get("rope_parameters") or {}
    expect(rope, "rope_type", "default", ("default",), "transformers' RecurrentGemma has the default RoPE only")
    theta = rope.get("rope_theta", cfg.get("rope_theta", 10000.0))
    return float(theta), float(rope.get("partial_rotary_factor", cfg.get("partial_rotary_factor", 0.5)))


def _backbone(cfg: dict[str, Any]) -> BackboneConfig:
    expect(cfg, "hidden_activation", ACTIVATION, (ACTIVATION,),
           "ssmkit's RG-LRU gate branch and GeGLU MLP use the tanh GELU of RecurrentGemma")
    expect(cfg, "embeddings_scale_by_sqrt_dim", True, (True,),
           "transformers' RecurrentGemma always multiplies the embeddings by sqrt(hidden_size)")
    D, H, n = cfg["hidden_size"], cfg["num_attention_heads"], cfg["num_hidden_layers"]
    if cfg.get("head_dim", D // H) != D // H or D % H:
        refuse("head_dim", cfg.get("head_dim"), f"ssmkit's attention heads have hidden_size / num_attention_heads = {D / H} dims")
    types = cfg.get("block_types", ("recurrent", "recurrent", "attention"))
    for t in types:
        if t not in KINDS:
            refuse("block_types", types, f"block type {t!r} is neither 'recurrent' nor 'attention'")
    names = tuple(KINDS[t] for t in (list(types) * n)[:n])
    theta, fraction = _rope(cfg)
    rglru = dict(lru_width=cfg.get("lru_width") or D, num_heads=H, conv_kernel=cfg.get("conv1d_width", 4),
                 c=8.0, reset_at_start=True)
    attention = dict(n_heads=H, n_kv_heads=cfg.get("num_key_value_heads") or H, rope_base=theta,
                     rope_fraction=fraction, window=cfg.get("attention_window_size", 2048),
                     bias=cfg.get("attention_bias", False), out_bias=True)
    mixer_cfg = {k: v for k, v in (("rglru", rglru), ("attention", attention)) if k in names}
    return BackboneConfig(d_model=D, n_layers=n, mixer=names, mixer_cfg=mixer_cfg, norm="rmsnorm",
                          norm_eps=cfg.get("rms_norm_eps", 1e-6), ffn="geglu_tanh",
                          ffn_hidden=cfg.get("intermediate_size", 3 * D) // 2, ffn_bias=True)


def _maps(model: CausalLM) -> Maps:
    """ssmkit key -> transformers' key and conversions."""
    plus_one = dict(read=lambda t: t + 1.0, write=lambda t: t - 1.0)
    maps: Maps = {"embedding.weight": Map("model.embed_tokens.weight"),
                  "backbone.norm.weight": Map("model.final_norm.weight", **plus_one),
                  "lm_head.weight": None if model.tied else Map("lm_head.weight")}
    for i, block in enumerate(model.backbone.blocks):
        ours, theirs = f"backbone.blocks.{i}.", f"model.layers.{i}."
        maps[ours + "norm.weight"] = Map(theirs + "temporal_pre_norm.weight", **plus_one)
        maps[ours + "ffn_norm.weight"] = Map(theirs + "channel_pre_norm.weight", **plus_one)
        for p in ("gate_proj", "up_proj", "down_proj"):
            for w in ("weight", "bias"):
                maps[f"{ours}ffn.{p}.{w}"] = Map(f"{theirs}mlp_block.{p}.{w}")
        mixer = block.mixer
        for name in mixer.state_dict():
            maps[ours + "mixer." + name] = _mixer_map(name, theirs + "temporal_block.", mixer)
    return maps


def _mixer_map(name: str, prefix: str, mixer) -> Map:
    if mixer.mixer_name == "attention" or name.split(".")[0] in ("linear_x", "linear_y", "linear_out"):
        return Map(prefix + name)
    lru = prefix + "rg_lru."
    if name.startswith("conv1d."):
        return Map(prefix + name.replace("conv1d.", "conv_1d."))
    if name == "a_param":
        return Map(lru + "recurrent_param", read=torch.neg, write=torch.neg)
    gate = {"gate_a": "recurrent_gate", "gate_x": "input_gate"}[name.split(".")[0]]
    if name.endswith(".weight"):  # (H, in, out) in transformers, (H, out, in) here
        return Map(f"{lru}{gate}_weight", read=lambda t: t.transpose(1, 2), write=lambda t: t.transpose(1, 2))
    H = mixer.config.num_heads
    return Map(f"{lru}{gate}_bias", read=lambda t: t.flatten(), write=lambda t: t.view(H, -1))


def build(cfg: dict[str, Any], ckpt: Checkpoint) -> Built:
    bb = _backbone(cfg)
    cap = cfg.get("logits_soft_cap", 30.0)
    if not isinstance(cap, (int, float)) or isinstance(cap, bool) or cap <= 0:
        refuse("logits_soft_cap", cap, "transformers' RecurrentGemma always soft-caps its logits: a number > 0")
    model = CausalLM(bb, cfg["vocab_size"], tie_embeddings=cfg.get("tie_word_embeddings", True),
                     embed_scale=embed_scale(bb.d_model), logit_softcap=float(cap))
    ignored = tied_head_is_embedding(ckpt, "lm_head.weight", "model.embed_tokens.weight") if model.tied else set()
    return Built(model, _maps(model), ignored)


def _require(ok: bool, what: str) -> None:
    if not ok:
        raise ValueError(f"cannot export to RecurrentGemma exactly: {what}")


def _config(model: CausalLM) -> dict[str, Any]:
    """transformers' RecurrentGemmaConfig of ``model``; refuses what that config cannot say."""
    bb = model.backbone.config
    names = bb.layer_names()
    _require(set(names) <= set(KINDS.values()), f"its layers run {sorted(set(names))}; RecurrentGemma has rglru and attention")
    _require(bb.norm == "rmsnorm" and bb.residual == "pre" and bb.final_norm, "RecurrentGemma has pre-norm RMSNorm blocks and a final norm")
    _require(bb.ffn == "geglu_tanh" and bb.ffn_bias and bb.ffn_width() > 0, "RecurrentGemma's MLP is GeGLU (tanh GELU) with biases")
    _require(model.embed_scale == embed_scale(bb.d_model) and model.embed_norm is None,
             f"RecurrentGemma scales the embeddings by {embed_scale(bb.d_model)} (√D in bfloat16) and has no embedding norm")
    _require(model.logit_softcap is not None, "RecurrentGemma soft-caps its logits (logit_softcap must be set)")
    # every layer of a kind is built from that kind's settings: its first layer stands for all
    first = {b.mixer.mixer_name: b.mixer for b in reversed(model.backbone.blocks)}
    lru, att = first.get("rglru"), first.get("attention")
    H = att.n_heads if att is not None else lru.config.num_heads  # one head count for both in transformers
    if lru is not None:
        c = lru.config
        _require(c.reset_at_start and c.c == 8.0 and c.num_heads == H,
                 f"RecurrentGemma's RG-LRU has reset_at_start, c = 8 and num_heads = the attention heads ({H})")
    if att is not None:
        _require(att.config.window is not None and att.config.out_bias is True,
                 "RecurrentGemma's attention has a window and a bias on o_proj only")
    D = bb.d_model
    return {
        "model_type": "recurrent_gemma", "architectures": ["RecurrentGemmaForCausalLM"],
        "vocab_size": model.vocab_size, "hidden_size": D, "num_hidden_layers": bb.n_layers,
        "num_attention_heads": H, "num_key_value_heads": H if att is None else att.n_kv_heads, "head_dim": D // H,
        "lru_width": D if lru is None else lru.lru_width, "conv1d_width": 4 if lru is None else lru.config.conv_kernel,
        "attention_window_size": 2048 if att is None else att.config.window,
        "attention_bias": False if att is None else att.config.bias,
        "intermediate_size": 2 * bb.ffn_width(), "rms_norm_eps": bb.norm_eps,
        "logits_soft_cap": model.logit_softcap, "hidden_activation": ACTIVATION,
        "block_types": [{"rglru": "recurrent", "attention": "attention"}[n] for n in names],
        "rope_parameters": {"rope_type": "default", "rope_theta": 10000.0 if att is None else att.config.rope_base,
                            "partial_rotary_factor": 0.5 if att is None else att.rotary_dim / att.head_dim},
        "tie_word_embeddings": model.tied,
    }


def export(model: CausalLM, folder: Path) -> None:
    """Write ``model`` as a RecurrentGemmaForCausalLM folder (config.json + model.safetensors)."""
    cfg = _config(model)
    state = write_state(model, _maps(model))
    with atomic_folder(folder, keep_existing=True) as tmp:
        safetensors_module().save_file(state, str(tmp / "model.safetensors"))
        (tmp / "config.json").write_text(json.dumps(cfg, indent=2))
