"""Checkpoint interop: load Hugging Face / mamba_ssm Mamba checkpoints; save and load ssmkit's own.

Formats read by ``load_pretrained(path)`` (a local folder; nothing is downloaded):
- ssmkit: ``config.json`` with an ``"ssmkit"`` entry + ``model.safetensors`` (written by ``save_pretrained``);
- Hugging Face ``MambaForCausalLM`` / ``Mamba2ForCausalLM``: ``config.json`` with ``model_type``
  ``mamba`` / ``mamba2`` + ``model.safetensors`` or ``pytorch_model.bin``;
- the original mamba_ssm format: ``config.json`` with ``d_model``, ``n_layer``, ``ssm_cfg`` + ``pytorch_model.bin``.
``pytorch_model.bin`` is read with ``torch.load(weights_only=True)``: loading never unpickles code.
The mixers use the same parameter names as mamba_ssm, so only the block prefixes are renamed.
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
import re
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from ..config import build_config
from ..io import atomic_folder
from .backbone import BackboneConfig
from .lm import CausalLM

SSMKIT_FORMAT = 1


def _safetensors():
    try:
        import safetensors.torch as st
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ImportError("checkpoint I/O needs safetensors: pip install 'ssmkit[hf]'") from e
    return st


def _read_weights(folder: Path) -> dict[str, Tensor]:
    if (folder / "model.safetensors").exists():
        return _safetensors().load_file(str(folder / "model.safetensors"))
    if (folder / "pytorch_model.bin").exists():
        try:
            return torch.load(folder / "pytorch_model.bin", map_location="cpu", weights_only=True)
        except Exception as e:
            raise ValueError(f"cannot read {folder / 'pytorch_model.bin'} as a plain tensor checkpoint: {e}") from e
    raise FileNotFoundError(f"no model.safetensors or pytorch_model.bin in {folder}")


def _rename(key: str) -> str:
    """mamba_ssm / Hugging Face key -> ssmkit CausalLM key."""
    key = re.sub(r"^backbone\.embeddings?\.", "embedding.", key)
    key = re.sub(r"^backbone\.layers\.(\d+)\.", r"backbone.blocks.\1.", key)
    return key.replace("backbone.norm_f.", "backbone.norm.")


def _number(v: Any) -> float:
    """transformers writes non-finite floats as {"__float__": "Infinity"}."""
    return float(v["__float__"]) if isinstance(v, dict) and "__float__" in v else float(v)


def _hf_config(cfg: dict[str, Any]) -> tuple[BackboneConfig, int, bool]:
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
    return bb, cfg["vocab_size"], cfg.get("tie_word_embeddings", kind == "mamba")


def _mamba_ssm_config(cfg: dict[str, Any], weights: dict[str, Tensor]) -> tuple[BackboneConfig, int, bool]:
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
    vocab = weights["backbone.embedding.weight"].shape[0]  # padded to pad_vocab_size_multiple
    bb = BackboneConfig(d_model=cfg["d_model"], n_layers=cfg["n_layer"], mixer=kind, mixer_cfg=mixer_cfg,
                        norm="rmsnorm", norm_eps=1e-5)
    return bb, vocab, cfg.get("tie_embeddings", True)


def _load_state(model: CausalLM, weights: dict[str, Tensor], source: Path) -> None:
    expected = model.state_dict()
    tied = model.lm_head.weight is model.embedding.weight
    if tied and "lm_head.weight" not in weights and "embedding.weight" in weights:
        weights = {**weights, "lm_head.weight": weights["embedding.weight"]}
    missing = sorted(set(expected) - set(weights))
    unexpected = sorted(set(weights) - set(expected))
    shapes = [f"{k}: checkpoint {tuple(weights[k].shape)} vs model {tuple(v.shape)}"
              for k, v in expected.items() if k in weights and weights[k].shape != v.shape]
    if missing or unexpected or shapes:
        lines = [f"checkpoint {source} does not match the model it describes:"]
        lines += [f"  missing key: {k}" for k in missing] + [f"  unexpected key: {k}" for k in unexpected]
        lines += [f"  shape mismatch {s}" for s in shapes]
        raise ValueError("\n".join(lines))
    model.load_state_dict(weights)


def load_pretrained(path: str | os.PathLike) -> CausalLM:
    """Build a CausalLM from a local checkpoint folder in ssmkit, Hugging Face or mamba_ssm format.

    A malformed ``config.json`` (a missing, mistyped or out-of-range field) is a ``ValueError`` that
    names the file and the field; so is a weight holding NaN or Inf."""
    folder = Path(path)
    cfg_file = folder / "config.json"
    if not cfg_file.exists():
        raise FileNotFoundError(f"no config.json in {folder}")
    try:
        cfg = json.loads(cfg_file.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"corrupt config file {cfg_file}: {e}") from e
    if not isinstance(cfg, dict):
        raise ValueError(f"corrupt config file {cfg_file}: expected a JSON object, got {type(cfg).__name__}")
    weights = _read_weights(folder)
    try:
        if "ssmkit" in cfg:
            bb, vocab, tie = _ssmkit_config(cfg)
        elif cfg.get("model_type") in ("mamba", "mamba2"):
            bb, vocab, tie = _hf_config(cfg)
            weights = {_rename(k): v for k, v in weights.items()}
        elif "d_model" in cfg and "n_layer" in cfg:
            bb, vocab, tie = _mamba_ssm_config(cfg, weights)
            weights = {_rename(k): v for k, v in weights.items()}
        else:
            raise ValueError("unknown checkpoint format (expected ssmkit, Hugging Face mamba/mamba2 "
                             "or mamba_ssm config keys)")
        _check_field("vocab_size", vocab, int)
        _check_field("tie_embeddings", tie, bool)
        model = CausalLM(bb, vocab, tie_embeddings=tie)
    except KeyError as e:
        raise ValueError(f"{cfg_file}: missing field {e.args[0]!r}") from None
    except (TypeError, ValueError) as e:
        raise ValueError(f"{cfg_file}: {e}") from None
    _check_finite(weights, folder)
    _load_state(model, weights, folder)
    return model.eval()


def _check_field(name: str, value: Any, kind: type) -> None:
    ok = isinstance(value, kind) and (kind is bool or not isinstance(value, bool))
    if not ok or (kind is int and value <= 0):
        raise ValueError(f"field {name!r} must be {'a positive int' if kind is int else kind.__name__}, got {value!r}")


def _ssmkit_config(cfg: dict[str, Any]) -> tuple[BackboneConfig, int, bool]:
    backbone = cfg["backbone"]
    if not isinstance(backbone, dict):
        raise ValueError(f"field 'backbone' must be an object of BackboneConfig fields, got {backbone!r}")
    try:
        bb = build_config(BackboneConfig, backbone)
    except (TypeError, ValueError) as e:
        raise ValueError(f"field 'backbone': {e}") from None
    return bb, cfg["vocab_size"], cfg["tie_embeddings"]


def _check_finite(weights: dict[str, Tensor], folder: Path) -> None:
    """A weight holding NaN or Inf cannot give a usable model: name the first such tensor."""
    for name, t in weights.items():
        if t.is_floating_point() and not bool(torch.isfinite(t).all()):
            raise ValueError(f"{folder}: weight {name!r} contains NaN or Inf values (a diverged or corrupt checkpoint)")


def save_pretrained(model: CausalLM, path: str | os.PathLike) -> None:
    """Write ``config.json`` + ``model.safetensors`` as one atomic folder write (``ssmkit.io``): a
    reader, or a kill at any moment, finds the old pair or the new pair, never a mix; other files
    already in the folder are kept."""
    folder = Path(path)
    tied = model.lm_head.weight is model.embedding.weight
    state = {k: v.detach().contiguous() for k, v in model.state_dict().items() if not (tied and k == "lm_head.weight")}
    cfg = {"ssmkit": SSMKIT_FORMAT, "model": "CausalLM", "backbone": dataclasses.asdict(model.backbone.config),
           "vocab_size": model.vocab_size, "tie_embeddings": tied}
    st = _safetensors()
    with atomic_folder(folder, keep_existing=True) as tmp:
        st.save_file(state, str(tmp / "model.safetensors"))
        (tmp / "config.json").write_text(json.dumps(cfg, indent=2))
