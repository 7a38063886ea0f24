"""Backbones built from any registered mixer, and the models on top of them."""
from .backbone import Backbone, BackboneConfig
from .kinds import TaskKind
from .lm import CausalLM
from .registry import DataSpec, create_model, list_archs, register_arch
from .pretrained import load_pretrained, save_pretrained
from .sequence_model import SequenceModel
from . import graph  # noqa: F401,E402  (registers the 'graph' architecture)
from . import vision  # noqa: F401  (registers arch "vision")
from . import timeseries  # registers the forecaster and ts_classifier architectures
from . import caption_slots, captioner, event_frames, events, point_cloud, pointnet, unet, video, video_conv  # noqa: F401  (register their architectures)

__all__ = [
    "Backbone", "BackboneConfig", "CausalLM", "DataSpec", "SequenceModel", "TaskKind", "create_model", "list_archs",
    "load_pretrained", "register_arch", "save_pretrained",
]
