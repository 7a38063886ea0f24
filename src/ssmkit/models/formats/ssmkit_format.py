"""ssmkit's own checkpoint: ``config.json`` with an ``"ssmkit"`` entry + ``model.safetensors``.

The config holds the ``BackboneConfig`` fields, the vocabulary, whether the head is tied and the
CausalLM's head options (``CausalLM.head_options``; absent in files written before they existed,
which then mean the defaults). The tensors keep ssmkit's own names; a tied head is stored once.
"""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

from ...config import build_config
from ...io import atomic_folder
from ..backbone import BackboneConfig
from ..lm import CausalLM
from .common import Built, Checkpoint, Map, Maps, safetensors_module

SSMKIT_FORMAT = 1


def check_field(name: str, value: Any, kind: type) -> None:
    """``value`` of config field ``name`` is a ``kind`` (an int: a positive one)."""
    ok = isinstance(value, kind) and (kind is bool or not isinstance(value, bool))
    if not ok or (kind is int and value <= 0):
        raise ValueError(f"field {name!r} must be {'a positive int' if kind is int else kind.__name__}, got {value!r}")


def build(cfg: dict[str, Any], ckpt: Checkpoint) -> Built:
    backbone = cfg["backbone"]
    if not isinstance(backbone, dict):
        raise ValueError(f"field 'backbone' must be an object of BackboneConfig fields, got {backbone!r}")
    try:
        bb = build_config(BackboneConfig, backbone)
    except (TypeError, ValueError) as e:
        raise ValueError(f"field 'backbone': {e}") from None
    vocab, tie = cfg["vocab_size"], cfg["tie_embeddings"]
    check_field("vocab_size", vocab, int)
    check_field("tie_embeddings", tie, bool)
    head = {k: cfg[k] for k in ("embed_scale", "embed_norm", "logit_softcap") if k in cfg}
    model = CausalLM(bb, vocab, tie_embeddings=tie, **head)
    maps: Maps = {k: Map(k) for k in model.state_dict()}
    if model.tied:
        maps["lm_head.weight"] = None
    return Built(model, maps)


def save(model: CausalLM, folder: Path) -> None:
    """Write ``config.json`` + ``model.safetensors`` as one atomic folder write (``ssmkit.io``): a
    reader, or a kill at any moment, finds the old pair or the new pair, never a mix; other files
    already in the folder are kept."""
    state = {k: v.detach().contiguous() for k, v in model.state_dict().items()
             if not (model.tied and k == "lm_head.weight")}
    cfg = {"ssmkit": SSMKIT_FORMAT, "model": "CausalLM", "backbone": dataclasses.asdict(model.backbone.config),
           "vocab_size": model.vocab_size, "tie_embeddings": model.tied, **model.head_options()}
    st = safetensors_module()
    with atomic_folder(folder, keep_existing=True) as tmp:
        st.save_file(state, str(tmp / "model.safetensors"))
        (tmp / "config.json").write_text(json.dumps(cfg, indent=2))
