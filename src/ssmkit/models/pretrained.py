"""Checkpoint interop: which format a folder holds, and its loader or exporter (``models.formats``).

``load_pretrained(path)`` reads a local folder (nothing is downloaded) in any of these formats,
detected from ``config.json`` (``"ssmkit"`` entry, ``model_type``, or mamba_ssm's keys) or named
with ``format=``:

- ``ssmkit``: written by ``save_pretrained``;
- ``mamba``: Hugging Face ``MambaForCausalLM`` / ``Mamba2ForCausalLM`` (``model_type`` mamba, mamba2);
- ``mamba_ssm``: the original mamba_ssm format (``d_model``, ``n_layer``, ``ssm_cfg``);
- ``recurrent_gemma``: Hugging Face ``RecurrentGemmaForCausalLM``;
- ``fla``: flash-linear-attention causal LMs (``model_type`` gla, delta_net, gated_deltanet, hgrn2,
  rwkv6, retnet);
- ``s4``: state-spaces/s4's standalone S4D sequence models (``example.py``; no config.json, so it
  is always named).
The language-model formats give a ``CausalLM``, ``s4`` a ``SequenceModel``. ``export_pretrained``
writes a model back where the mapping is exact (``mamba``: Hugging Face Mamba / Mamba-2;
``recurrent_gemma``; ``fla`` for GLA and DeltaNet / Gated DeltaNet); ``save_pretrained(...,
format="hf")`` picks the transformers one of those for the model's layers. Every error names the file, the field or tensor, and the reason; an option ssmkit
does not compute is refused, never approximated (docs/interop.md).
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Callable

from torch import nn

from .formats import fla, mamba, recurrent_gemma, s4, ssmkit_format
from .formats.common import Built, Checkpoint, check_finite, read_state, read_weights
from .lm import CausalLM

Builder = Callable[[dict[str, Any], Checkpoint], Built]
BUILDERS: dict[str, Builder] = {
    "ssmkit": ssmkit_format.build,
    "mamba": mamba.build_hf,
    "mamba_ssm": mamba.build_mamba_ssm,
    "recurrent_gemma": recurrent_gemma.build,
    "fla": fla.build,
}
EXPORTERS: dict[str, Callable[[CausalLM, Path], None]] = {
    "mamba": mamba.export_hf,
    "recurrent_gemma": recurrent_gemma.export,
    "fla": fla.export,
}
# ``save_pretrained(format="hf")``: the transformers model class that holds a stack of these mixers
HF_EXPORTERS = {"mamba": "mamba", "mamba2": "mamba", "rglru": "recurrent_gemma", "attention": "recurrent_gemma"}
SAVE_FORMATS = ("ssmkit", "hf")
FORMATS = (*BUILDERS, "s4")


def detect_format(cfg: dict[str, Any]) -> str:
    """The format of a checkpoint from its config.json."""
    if "ssmkit" in cfg:
        return "ssmkit"
    kind = cfg.get("model_type")
    if kind in ("mamba", "mamba2"):
        return "mamba"
    if kind == "recurrent_gemma":
        return "recurrent_gemma"
    if kind in fla.MODEL_TYPES:
        return "fla"
    if kind is not None:
        raise ValueError(f"field 'model_type' = {kind!r} is not a model type ssmkit loads; loadable: "
                         f"mamba, mamba2, recurrent_gemma, {', '.join(fla.MODEL_TYPES)} (docs/interop.md)")
    if "d_model" in cfg and "n_layer" in cfg:
        return "mamba_ssm"
    raise ValueError("unknown checkpoint format (expected ssmkit, Hugging Face mamba/mamba2/recurrent_gemma, "
                     "flash-linear-attention or mamba_ssm config keys)")


def _read_config(folder: Path) -> dict[str, Any]:
    cfg_file = folder / "config.json"
    if not cfg_file.exists():
        raise FileNotFoundError(f"no config.json in {folder} (state-spaces/s4 checkpoints have none: "
                                "load them with format='s4')")
    try:
        cfg = json.loads(cfg_file.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"corrupt config file {cfg_file}: {e}") from e
    if not isinstance(cfg, dict):
        raise ValueError(f"corrupt config file {cfg_file}: expected a JSON object, got {type(cfg).__name__}")
    return cfg


def load_pretrained(path: str | os.PathLike, format: str | None = None, **options: Any) -> nn.Module:
    """Build a model from a local checkpoint (folder; for ``s4`` also the file itself).

    ``format``: one of ``FORMATS``, or None to detect it from config.json. ``options``: the format's
    own (``s4``: ``prenorm``, which its checkpoints do not record). A malformed or unsupported
    ``config.json`` field is a ``ValueError`` naming the file and the field; a missing, unexpected,
    misshapen or non-finite tensor one naming the weights file and the tensor."""
    if format is not None and format not in FORMATS:
        raise ValueError(f"unknown format {format!r}; expected one of {list(FORMATS)}")
    if format == "s4":
        return s4.load(Path(path), **options)
    if options:
        raise TypeError(f"unexpected options {sorted(options)}: only format='s4' takes options (prenorm)")
    folder = Path(path)
    cfg = _read_config(folder)
    ckpt = read_weights(folder)
    cfg_file = folder / "config.json"
    try:
        built = BUILDERS[format or detect_format(cfg)](cfg, ckpt)
    except KeyError as e:
        raise ValueError(f"{cfg_file}: missing field {e.args[0]!r}") from None
    except (TypeError, ValueError) as e:
        raise ValueError(f"{cfg_file}: {e}") from None
    check_finite(ckpt)
    built.model.load_state_dict(read_state(built.model, built.maps, ckpt, built.ignored))
    return built.model.eval()


def save_pretrained(model: CausalLM, path: str | os.PathLike, format: str = "ssmkit") -> None:
    """Write ``model`` as config.json + model.safetensors (one atomic folder write).

    ``format="ssmkit"``: ssmkit's own (any model); ``format="hf"``: the Hugging Face transformers
    folder of its architecture, which that class's ``from_pretrained`` loads —
    ``MambaForCausalLM`` (mamba layers), ``Mamba2ForCausalLM`` (mamba2), ``RecurrentGemmaForCausalLM``
    (rglru and attention); a model those classes cannot hold exactly is refused, naming what differs."""
    if format not in SAVE_FORMATS:
        raise ValueError(f"unknown save format {format!r}; expected one of {list(SAVE_FORMATS)} "
                         "(peers' formats: export_pretrained)")
    if format == "ssmkit":
        ssmkit_format.save(model, Path(path))
        return
    names = model.backbone.config.layer_names()
    targets = {HF_EXPORTERS.get(n) for n in names}
    if None in targets or len(targets) != 1:
        raise ValueError(f"cannot save as a Hugging Face transformers model: its layers run {sorted(set(names))}; "
                         "format='hf' writes MambaForCausalLM (mamba), Mamba2ForCausalLM (mamba2) and "
                         "RecurrentGemmaForCausalLM (rglru, attention) models")
    EXPORTERS[targets.pop()](model, Path(path))


def export_pretrained(model: CausalLM, path: str | os.PathLike, format: str) -> None:
    """Write ``model`` in a peer's format (``recurrent_gemma``, ``fla``), readable by that peer's
    ``from_pretrained``; a model the format cannot hold exactly is refused, naming what differs."""
    if format not in EXPORTERS:
        raise ValueError(f"no exporter for format {format!r}; formats that can be written: {list(EXPORTERS)}")
    EXPORTERS[format](model, Path(path))
