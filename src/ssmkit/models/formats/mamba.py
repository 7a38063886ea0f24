"""Hugging Face ``MambaForCausalLM`` / ``Mamba2ForCausalLM`` and the original mamba_ssm checkpoints.

- Hugging Face: ``config.json`` with ``model_type`` ``mamba`` / ``mamba2``; tensors
  ``backbone.embeddings``, ``backbone.layers.<i>.{norm, mixer}``, ``backbone.norm_f``, ``lm_head``;
- mamba_ssm: ``config.json`` with ``d_model``, ``n_layer``, ``ssm_cfg``; the embedding is
  ``backbone.embedding`` (singular), the vocabulary padded to ``pad_vocab_size_multiple``.
The mixers use mamba_ssm's parameter names, so only the block prefixes are renamed. ``export_hf``
writes the Hugging Face form back (``save_pretrained(..., format="hf")``), refusing a model those
configs cannot describe (other mixers, an MLP, other norms).
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from ...io import atomic_folder

from ..backbone import BackboneConfig
from ..lm import CausalLM
from .common import Built, Checkpoint, Map, Maps, safetensors_module, tied_head_is_embedding, write_state


def _number(v: Any) -> float:
    """transformers writes non-finite floats as {"__float__": "Infinity"}."""
    return float(v["__float__"]) if isinstance(v, dict) and "__float__" in v else float(v)


def _maps(model: CausalLM, embedding: str) -> Maps:
    """ssmkit key -> the checkpoint's: embedding, backbone.layers.<i>, backbone.norm_f."""
    def peer(key: str) -> str:
        if key.startswith("embedding."):
            return embedding + key[len("embedding."):]
        if key.startswith("backbone.blocks."):
            return "backbone.layers." + key[len("backbone.blocks."):]
        return key.replace("backbone.norm.", "backbone.norm_f.")

    maps: Maps = {k: Map(peer(k)) for k in model.state_dict()}
    if model.tied:
        maps["lm_head.weight"] = None
    return maps


def build_hf(cfg: dict[str, Any], ckpt: Checkpoint) -> Built:
    kind = cfg["model_type"]
    if cfg.get("hidden_act", "silu") != "silu":
        raise ValueError(f"unsupported hidden_act {cfg['hidden_act']!r} (Mamba uses silu)")
    D = cfg["hidden_size"]
    common = dict(d_state=cfg["state_size"], d_conv=cfg.get("conv_kernel", 4), expand=cfg.get("expand", 2),
                  conv_bias=cfg.get("use_conv_bias", True), bias=cfg.get("use_bias", False))
    if kind == "mamba":
        rank = cfg.get("time_step_rank", "auto")
        mixer_cfg = dict(common, dt_rank=math.ceil(D / 16) if rank == "auto" else int(rank))
    else:
        if cfg["num_heads"] * cfg["head_dim"] != common["expand"] * D:
            raise ValueError(f"num_heads*head_dim={cfg['num_heads'] * cfg['head_dim']} != expand*hidden_size")
        mixer_cfg = dict(common, head_dim=cfg["head_dim"], n_groups=cfg.get("n_groups", 1),
                         chunk_size=cfg.get("chunk_size", 64), norm_eps=cfg.get("layer_norm_epsilon", 1e-5),
                         dt_limit=tuple(_number(v) for v in cfg.get("time_step_limit", (0.0, float("inf")))))
    bb = BackboneConfig(d_model=D, n_layers=cfg["num_hidden_layers"], mixer=kind, mixer_cfg=mixer_cfg,
                        norm="rmsnorm", norm_eps=cfg.get("layer_norm_epsilon", 1e-5))
    model = CausalLM(bb, cfg["vocab_size"], tie_embeddings=cfg.get("tie_word_embeddings", kind == "mamba"))
    ignored = tied_head_is_embedding(ckpt, "lm_head.weight", "backbone.embeddings.weight") if model.tied else set()
    return Built(model, _maps(model, "backbone.embeddings."), ignored)


def build_mamba_ssm(cfg: dict[str, Any], ckpt: Checkpoint) -> Built:
    if cfg.get("attn_layer_idx"):
        raise ValueError("mamba_ssm checkpoints with attention layers are not supported yet")
    if cfg.get("d_intermediate", 0):
        raise ValueError("mamba_ssm checkpoints with MLP blocks (d_intermediate > 0) are not supported yet")
    if not cfg.get("rms_norm", True):
        raise ValueError("mamba_ssm checkpoints with LayerNorm (rms_norm=false) are not supported yet")
    ssm = dict(cfg.get("ssm_cfg", {}))
    layer = ssm.pop("layer", "Mamba1")
    kind = {"Mamba1": "mamba", "Mamba2": "mamba2"}.get(layer)
    if kind is None:
        raise ValueError(f"unknown mamba_ssm layer {layer!r}; expected Mamba1 or Mamba2")
    names = {"d_state": "d_state", "d_conv": "d_conv", "expand": "expand", "headdim": "head_dim",
             "ngroups": "n_groups", "chunk_size": "chunk_size", "dt_rank": "dt_rank", "conv_bias": "conv_bias",
             "bias": "bias"}
    mixer_cfg = {names[k]: v for k, v in ssm.items() if k in names and v != "auto"}
    if kind == "mamba2":
        mixer_cfg.setdefault("d_state", 128)
        mixer_cfg.setdefault("head_dim", 64)
    embedding = "backbone.embedding.weight"
    if embedding not in ckpt.tensors:
        raise ValueError(f"{ckpt.file}: missing key {embedding!r} (its rows give the padded vocabulary)")
    vocab = ckpt.tensors[embedding].shape[0]  # padded to pad_vocab_size_multiple
    bb = BackboneConfig(d_model=cfg["d_model"], n_layers=cfg["n_layer"], mixer=kind, mixer_cfg=mixer_cfg,
                        norm="rmsnorm", norm_eps=1e-5)
    model = CausalLM(bb, vocab, tie_embeddings=cfg.get("tie_embeddings", True))
    ignored = tied_head_is_embedding(ckpt, "lm_head.weight", embedding) if model.tied else set()
    return Built(model, _maps(model, "backbone.embedding."), ignored)


def _require(ok: bool, what: str) -> None:
    if not ok:
        raise ValueError(f"cannot export to Hugging Face Mamba exactly: {what}")


def _hf_config(model: CausalLM) -> dict[str, Any]:
    """transformers' MambaConfig / Mamba2Config of ``model`` (the inverse of ``build_hf``); refuses
    what those configs cannot say."""
    bb = model.backbone.config
    kinds = set(bb.layer_names())
    _require(kinds in ({"mamba"}, {"mamba2"}), f"its layers run {sorted(kinds)}; MambaForCausalLM has mamba in "
             "every layer, Mamba2ForCausalLM mamba2")
    (kind,) = kinds
    _require(bb.norm == "rmsnorm" and bb.residual == "pre" and bb.final_norm and bb.ffn_width() == 0,
             "its blocks are pre-norm RMSNorm + mixer with a final norm and no MLP")
    _require(model.embed_scale == 1.0 and model.embed_norm is None and model.logit_softcap is None,
             "it has no embedding scale, embedding norm or logit soft-cap")
    c = model.backbone.blocks[0].mixer.config
    D = bb.d_model
    cfg: dict[str, Any] = {
        "model_type": kind, "vocab_size": model.vocab_size, "hidden_size": D, "num_hidden_layers": bb.n_layers,
        "state_size": c.d_state, "conv_kernel": c.d_conv, "expand": c.expand, "use_conv_bias": c.conv_bias,
        "use_bias": c.bias, "layer_norm_epsilon": bb.norm_eps, "hidden_act": "silu",
        "tie_word_embeddings": model.tied, "residual_in_fp32": True,
        "bos_token_id": None, "eos_token_id": None, "pad_token_id": None,
    }
    if kind == "mamba":
        cfg.update(architectures=["MambaForCausalLM"], time_step_rank=model.backbone.blocks[0].mixer.dt_rank)
    else:
        _require(c.norm_eps == bb.norm_eps, f"transformers' Mamba-2 has one layer_norm_epsilon for the blocks "
                 f"({bb.norm_eps}) and the gated norm ({c.norm_eps})")
        cfg.update(architectures=["Mamba2ForCausalLM"], head_dim=c.head_dim, num_heads=c.expand * D // c.head_dim,
                   n_groups=c.n_groups, chunk_size=c.chunk_size, time_step_limit=list(c.dt_limit), rms_norm=True)
    return cfg


def export_hf(model: CausalLM, folder: Path) -> None:
    """Write ``model`` as a Hugging Face MambaForCausalLM / Mamba2ForCausalLM folder (config.json +
    model.safetensors) that ``transformers.MambaForCausalLM`` / ``Mamba2ForCausalLM.from_pretrained`` load."""
    cfg = _hf_config(model)
    state = write_state(model, _maps(model, "backbone.embeddings."))
    with atomic_folder(folder, keep_existing=True) as tmp:
        safetensors_module().save_file(state, str(tmp / "model.safetensors"))
        (tmp / "config.json").write_text(json.dumps(cfg, indent=2))
