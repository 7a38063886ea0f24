"""flash-linear-attention (fla) causal LMs: GLA, DeltaNet, Gated DeltaNet, HGRN2, RWKV-6, RetNet.

Every fla model is embeddings -> blocks -> norm -> lm_head, a block being
x + attn(attn_norm(x)) then x + mlp(mlp_norm(x)): ssmkit's pre-norm ``CausalLM``. The MLP is fla's
``GatedMLP`` (SwiGLU without biases: ``ffn="swiglu"``) of width ``intermediate_size`` or
hidden_ratio · 2/3 · D rounded up to 256. RWKV-6 differs: LayerNorms with bias, a LayerNorm on the
embeddings (``norm_first``: ``embed_norm``) and, as the second half of each block, RWKV-6 channel
mixing (token shift, squared ReLU) of width hidden_ratio · D rounded up to 32; so fla RWKV-6 block i
is ssmkit blocks 2i (``rwkv6``) and 2i + 1 (``rwkv6_cmix``). The layers' own options and names:
``fla_layers``. Options refused for every family: hybrid softmax-attention layers (``attn``),
attention residuals (``attnres_block_size``), an MLP activation other than swish (RWKV-6: sqrelu).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ...io import atomic_folder
from ..backbone import BackboneConfig
from ..lm import CausalLM
from .common import Built, Checkpoint, Map, Maps, expect, refuse, safetensors_module, tied_head_is_embedding, write_state
from .fla_layers import FAMILIES, Family, rwkv6_ffn_maps

MODEL_TYPES = tuple(FAMILIES)


def mlp_width(cfg: dict[str, Any], family: Family, rwkv: bool) -> int:
    """fla's MLP width: ``intermediate_size``, else from ``hidden_ratio`` as GatedMLP / RWKV6FeedForward round it."""
    if cfg.get("intermediate_size") is not None:
        return cfg["intermediate_size"]
    D, ratio = cfg["hidden_size"], cfg.get("hidden_ratio", family.hidden_ratio)
    if rwkv:
        return 32 * -(-int(D * (3.5 if ratio is None else ratio)) // 32)
    return 256 * -(-int(D * (4 if ratio is None else ratio) * 2 / 3) // 256)


def _backbone(kind: str, cfg: dict[str, Any], eps: float) -> BackboneConfig:
    family = FAMILIES[kind]
    settings = family.settings(cfg, eps)
    D, n = cfg["hidden_size"], cfg["num_hidden_layers"]
    width = mlp_width(cfg, family, kind == "rwkv6")
    if kind == "rwkv6":
        mixers = ("rwkv6", "rwkv6_cmix") * n
        return BackboneConfig(d_model=D, n_layers=2 * n, mixer=mixers, norm="layernorm", norm_eps=eps,
                              mixer_cfg={"rwkv6": settings, "rwkv6_cmix": {"hidden": width}})
    return BackboneConfig(d_model=D, n_layers=n, mixer=family.mixer, mixer_cfg={family.mixer: settings},
                          norm="rmsnorm", norm_eps=eps, ffn="swiglu", ffn_hidden=width, ffn_bias=False)


def _maps(kind: str, model: CausalLM, cfg: dict[str, Any]) -> Maps:
    """ssmkit key -> fla's key (and conversions)."""
    family = FAMILIES[kind]
    maps: Maps = {"embedding.weight": Map("model.embeddings.weight"),
                  "lm_head.weight": None if model.tied else Map("lm_head.weight")}
    norms = ("weight", "bias") if kind == "rwkv6" else ("weight",)
    maps.update({f"backbone.norm.{w}": Map(f"model.norm.{w}") for w in norms})
    if model.embed_norm is not None:
        maps.update({f"embed_norm.{w}": Map(f"model.layers.0.pre_norm.{w}") for w in norms})
    blocks = model.backbone.blocks
    for i, block in enumerate(blocks):
        ours = f"backbone.blocks.{i}."
        if kind == "rwkv6":  # fla block i//2: time mixing (even), channel mixing (odd)
            theirs, time = f"model.layers.{i // 2}.", i % 2 == 0
            norm, layer = ("attn_norm", "attn") if time else ("ffn_norm", "ffn")
            inner = family.maps(block.mixer, f"{theirs}{layer}.", cfg) if time else rwkv6_ffn_maps(f"{theirs}{layer}.")
        else:
            theirs, norm = f"model.layers.{i}.", "attn_norm"
            inner = family.maps(block.mixer, f"{theirs}attn.", cfg)
            maps[ours + "ffn_norm.weight"] = Map(theirs + "mlp_norm.weight")
            maps.update({f"{ours}ffn.{p}.weight": Map(f"{theirs}mlp.{p}.weight")
                         for p in ("gate_proj", "up_proj", "down_proj")})
        maps.update({f"{ours}norm.{w}": Map(f"{theirs}{norm}.{w}") for w in norms})
        maps.update({ours + "mixer." + k: m for k, m in inner.items()})
    return maps


def build(cfg: dict[str, Any], ckpt: Checkpoint) -> Built:
    kind = cfg["model_type"]
    family = FAMILIES[kind]
    if cfg.get("attn") is not None:
        refuse("attn", cfg["attn"], "hybrid layers of softmax attention: this loader maps fla's recurrent layers only")
    if cfg.get("attnres_block_size") is not None:
        refuse("attnres_block_size", cfg["attnres_block_size"], "attention residuals: ssmkit's blocks add plain residuals")
    act = "sqrelu" if kind == "rwkv6" else "swish"
    expect(cfg, "hidden_act", act, (act,), f"fla's {kind} MLP with another activation: ssmkit's is {act}")
    eps = cfg.get("norm_eps", family.norm_eps)
    bb = _backbone(kind, cfg, eps)
    embed_norm = kind == "rwkv6" and cfg.get("norm_first", True)
    model = CausalLM(bb, cfg["vocab_size"], tie_embeddings=cfg.get("tie_word_embeddings", False), embed_norm=embed_norm)
    ignored = tied_head_is_embedding(ckpt, "lm_head.weight", "model.embeddings.weight") if model.tied else set()
    return Built(model, _maps(kind, model, cfg), ignored)


def _kind(model: CausalLM) -> str:
    """The fla model type of an ssmkit model, or a ValueError saying why it has none."""
    names = model.backbone.config.layer_names()
    if names == ["rwkv6", "rwkv6_cmix"] * (len(names) // 2):
        return "rwkv6"
    found = set(names)
    if len(found) == 1:
        (name,) = found
        if name == "deltanet":
            return "gated_deltanet" if model.backbone.blocks[0].mixer.config.gated else "delta_net"
        for kind, family in FAMILIES.items():
            if family.mixer == name and kind != "rwkv6":
                return kind
    raise ValueError(f"cannot export to fla: its layers run {names}; fla's models have one of "
                     f"{sorted({f.mixer for f in FAMILIES.values()})} in every layer (RWKV-6: rwkv6, rwkv6_cmix alternating)")


def _check_shell(kind: str, model: CausalLM) -> None:
    """The blocks around the layers are fla's: refuse anything else, naming what fla has."""
    bb = model.backbone.config
    if kind == "rwkv6":
        ok, blocks = bb.norm == "layernorm" and bb.ffn_width() == 0, "LayerNorm blocks alternating time and channel mixing"
    else:
        ok = bb.norm == "rmsnorm" and bb.ffn == "swiglu" and not bb.ffn_bias and bb.ffn_width() > 0
        ok, blocks = ok and model.embed_norm is None, "RMSNorm blocks with a SwiGLU MLP without biases"
    if not (ok and bb.residual == "pre" and bb.final_norm and model.embed_scale == 1.0 and model.logit_softcap is None):
        raise ValueError(f"cannot export to fla {kind} exactly: fla's model has pre-norm {blocks}, a final norm, "
                         "no embedding scale and no logit soft-cap")


def _config(kind: str, model: CausalLM) -> dict[str, Any]:
    """fla's config.json of ``model`` (which ``_kind`` found to be an fla ``kind``)."""
    _check_shell(kind, model)
    bb = model.backbone.config
    blocks = model.backbone.blocks
    rwkv = kind == "rwkv6"
    extra = {"norm_first": model.embed_norm is not None, "norm_bias": True} if rwkv else {}
    return {"model_type": kind, "vocab_size": model.vocab_size, "hidden_size": bb.d_model,
            "num_hidden_layers": bb.n_layers // 2 if rwkv else bb.n_layers,
            "intermediate_size": blocks[1].mixer.hidden if rwkv else bb.ffn_width(),
            "hidden_act": "sqrelu" if rwkv else "swish", "norm_eps": bb.norm_eps, "tie_word_embeddings": model.tied,
            "fuse_norm": True, **extra, **FAMILIES[kind].config(blocks[0].mixer, bb.norm_eps)}


def export(model: CausalLM, folder: Path) -> None:
    """Write ``model`` as an fla causal-LM folder (config.json + model.safetensors) for fla's
    ``AutoModelForCausalLM.from_pretrained``."""
    kind = _kind(model)
    cfg = _config(kind, model)
    state = write_state(model, _maps(kind, model, cfg))
    with atomic_folder(folder, keep_existing=True) as tmp:
        safetensors_module().save_file(state, str(tmp / "model.safetensors"))
        (tmp / "config.json").write_text(json.dumps(cfg, indent=2))
