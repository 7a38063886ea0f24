"""state-spaces/s4's standalone S4D sequence models (``example.py``'s ``S4Model`` with
``models/s4/s4d.py``'s ``S4D``), read into a ``SequenceModel`` that classifies (mean pooling).

The checkpoint is ``torch.save({"model": state_dict, "acc": ..., "epoch": ...})`` (example.py's
``ckpt.pth``) or the bare state dict; it has no config, so the sizes come from the tensors
(d_input and d_model from ``encoder.weight``, N from ``kernel.C``, the classes from
``decoder.weight``, the layers from ``s4_layers.<i>``) and ``prenorm``, which changes the
computation but is not stored, must be given. The model:

    encoder Linear(d_input, H) -> n_layers x [ S4D, dropout, residual, LayerNorm ] -> mean over L -> decoder

with the LayerNorm after the residual (prenorm=False: ``residual="post"``) or before the layer
(prenorm=True: ``residual="pre"``, and no final norm: example.py has none). ``S4D``'s tensors map
one to one onto ssmkit's ``s4d`` (ZOH, B = 1, conjugate pairs folded): ``kernel.{log_dt, log_A_real,
A_imag, C}`` -> the layer's own, ``output_linear.0`` (a width-1 Conv1d) -> ``output_linear`` (a Linear).
Refused: checkpoints of the full S4 block (``models/s4/s4.py``'s ``S4Block``, as example.py can use
instead, or the training framework's ``src/``): their kernels store C̃ = C (I - dA^L) for a training
length, transformed A and dt (``inv_dt``, ``A_real`` ...), gates and other options this loader does
not map.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from ..backbone import BackboneConfig
from ..kinds import TaskKind
from ..sequence_model import SequenceModel
from .common import Checkpoint, Map, Maps, check_finite, read_state, read_torch_file

CHECKPOINT = "ckpt.pth"
LAYER = "s4_layers.{}."


def _state_dict(ckpt: Checkpoint) -> dict[str, Tensor]:
    """example.py's {"model": state_dict, "acc", "epoch"} or a bare state dict."""
    tensors = ckpt.tensors
    if isinstance(tensors, dict) and isinstance(tensors.get("model"), dict):
        tensors = tensors["model"]
    if not isinstance(tensors, dict) or not all(isinstance(t, Tensor) for t in tensors.values()):
        raise ValueError(f"{ckpt.file}: expected example.py's checkpoint ({{'model': state_dict, ...}}) or a state dict")
    return tensors


def _size(sd: dict[str, Tensor], key: str, dim: int, file: Path) -> int:
    if key not in sd:
        raise ValueError(f"{file}: missing key {key!r} (state-spaces/s4 example.py's S4Model has it; "
                         "the sizes are read from it)")
    return sd[key].shape[dim]


def _maps(model: SequenceModel) -> Maps:
    maps: Maps = {"encoder.weight": Map("encoder.weight"), "encoder.bias": Map("encoder.bias"),
                  "head.weight": Map("decoder.weight"), "head.bias": Map("decoder.bias")}
    for i, block in enumerate(model.backbone.blocks):
        ours, theirs = f"backbone.blocks.{i}.", LAYER.format(i)
        maps.update({f"{ours}norm.{w}": Map(f"norms.{i}.{w}") for w in ("weight", "bias")})
        for name in ("log_dt", "log_A_real", "A_imag", "C"):
            maps[f"{ours}mixer.{name}"] = Map(f"{theirs}kernel.{name}")
        maps[f"{ours}mixer.D"] = Map(theirs + "D")
        maps[f"{ours}mixer.output_linear.weight"] = Map(
            theirs + "output_linear.0.weight", read=lambda t: t[:, :, 0], write=lambda t: t[:, :, None])
        maps[f"{ours}mixer.output_linear.bias"] = Map(theirs + "output_linear.0.bias")
    return maps


def load(path: Path, prenorm: bool | None = None, **options: Any) -> SequenceModel:
    """The S4Model of ``path`` (example.py's ``ckpt.pth``, or a folder holding it); ``prenorm`` as
    the model was trained (example.py's ``--prenorm``)."""
    if options:
        raise TypeError(f"unexpected options {sorted(options)} for format 's4' (it takes prenorm)")
    file = path / CHECKPOINT if path.is_dir() else path
    ckpt = read_torch_file(file)
    sd = _state_dict(ckpt)
    ckpt = Checkpoint(sd, file)
    if not isinstance(prenorm, bool):
        raise ValueError(f"{file}: state-spaces/s4 checkpoints do not record prenorm, which changes the computation: "
                         "pass prenorm=True or prenorm=False (example.py's --prenorm)")
    full = sorted(k for k in sd if k.startswith(LAYER.format(0)) and (".layer." in k or "inv_dt" in k))
    if full:
        raise ValueError(f"{file}: tensor {full[0]!r} belongs to the full S4 block (models/s4/s4.py), not the "
                         "standalone S4D this loader maps (docs/interop.md)")
    n_layers = len({k.split(".")[1] for k in sd if k.startswith("s4_layers.")})
    d_input, H = _size(sd, "encoder.weight", 1, file), _size(sd, "encoder.weight", 0, file)
    N = 2 * _size(sd, LAYER.format(0) + "kernel.C", 1, file)
    bb = BackboneConfig(d_model=H, n_layers=n_layers, mixer="s4d", mixer_cfg={"d_state": N},
                        norm="layernorm", norm_eps=1e-5, residual="pre" if prenorm else "post", final_norm=False)
    model = SequenceModel(bb, TaskKind.CLASSIFY, _size(sd, "decoder.weight", 0, file), d_input=d_input, pool="mean")
    check_finite(ckpt)
    model.load_state_dict(read_state(model, _maps(model), ckpt))
    return model.eval()
