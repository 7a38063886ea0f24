"""``arch=video``: next-frame prediction over any mixer with a spatio-temporal scan.

Frames (B, T, H*W) of a ``VideoFrames`` task (``moving_mnist``) are cut into p x p patches (the
vision patch embedding, a learned position per patch), giving T grids of h x w tokens, then:

- ``order=factorized``: each layer is a 2-D scan inside every frame (``scan``, any of
  ``models.scans``: non-causal within the frame) followed by a causal mixer along time at every
  patch position ((B*h*w, T, D) sequences), so that frame t's outputs see frames <= t only;
- ``order=joint``: VideoMamba's spatial-first order (Li et al. 2024: frame after frame, each
  row-major, one sequence of T*h*w tokens) read by one causal mixer per layer. Causal over the
  whole sequence, so token (t, i, j) has seen the frames before t and frame t up to patch (i, j).

A Linear maps each token of frame t to its p x p pixels of frame t + 1; with ``residual`` the head
predicts the change from frame t, initialized to zero (so the untrained model copies the last frame).
Output (B, T, H*W), trained with MSE against the next frames (kind ``predict``).
"""
from __future__ import annotations

import dataclasses

import torch
from torch import Tensor, nn

from ..config import check
from ..layers.base import check_finite
from .backbone import BackboneConfig, Block, make_norm
from .kinds import TaskKind
from .layouts import VideoFrames, require_layout
from .registry import DataSpec, register_arch
from .scans import SCANS, ScanMixer
from .unet import split_groups
from .vision import PatchEmbed

ORDERS = ("factorized", "joint")


@dataclasses.dataclass
class VideoConfig:
    order: str = "factorized"  # factorized | joint (see the module docstring)
    scan: str = "cross"  # factorized: the 2-D scan inside each frame (models.scans)
    patch: int = 4  # p: side of the square patches; must divide the frame's height and width
    residual: bool = True  # the head predicts the change from the current frame

    def __post_init__(self) -> None:
        check(self.order in ORDERS, "order", f"must be one of {ORDERS}, got {self.order!r}")
        check(self.scan in SCANS, "scan", f"must be one of {SCANS}, got {self.scan!r}")
        check(self.patch >= 1, "patch", f"must be >= 1, got {self.patch}")


class SpaceTimeLayer(nn.Module):
    """One layer over (B, T, h*w, D): factorized (a 2-D scan per frame, then a causal mixer along time
    per patch) or joint (one causal mixer over the T*h*w tokens, frame after frame)."""

    def __init__(self, name: str, cfg: BackboneConfig, order: str, scan: str, grid: tuple[int, int]) -> None:
        super().__init__()
        self.order = order
        settings = cfg.mixer_settings(name)
        self.space = Block(name, cfg, mixer=ScanMixer(scan, name, cfg.d_model, grid, **settings)) if order == "factorized" else None
        self.time = Block(name, cfg)

    @property
    def blocks(self) -> list[Block]:
        return [b for b in (self.space, self.time) if b is not None]

    def forward(self, x: Tensor) -> Tensor:
        B, T, P, D = x.shape
        if self.space is None:
            return self.time(x.reshape(B, T * P, D), None, None)[0].view(B, T, P, D)
        x = self.space(x.reshape(B * T, P, D), None, None)[0].view(B, T, P, D)
        x = x.transpose(1, 2).reshape(B * P, T, D)
        return self.time(x, None, None)[0].view(B, P, T, D).transpose(1, 2)


class SpaceTimeStack(nn.Module):
    """``n_layers`` SpaceTimeLayers and a final norm: (B, T, h*w, D) -> same."""

    def __init__(self, cfg: BackboneConfig, order: str, scan: str, grid: tuple[int, int]) -> None:
        super().__init__()
        self.layers = nn.ModuleList(SpaceTimeLayer(n, cfg, order, scan, grid) for n in cfg.layer_names())
        self.norm = make_norm(cfg)

    @property
    def blocks(self) -> list[Block]:
        """Every mixer Block (what compare measures)."""
        return [b for layer in self.layers for b in layer.blocks]

    def forward(self, x: Tensor) -> Tensor:
        for layer in self.layers:
            x = layer(x)
        return self.norm(x)


class VideoModel(nn.Module):
    """``model(frames (B, T, H*W), mask=None) -> next frames (B, T, H*W)``."""

    def __init__(self, backbone: BackboneConfig, spec: DataSpec, cfg: VideoConfig) -> None:
        super().__init__()
        layout = require_layout(spec.layout, VideoFrames, "video", "moving_mnist")
        check(spec.kind == TaskKind.PREDICT, "arch", f"'video' predicts next frames (kind 'predict'), not '{spec.kind}'")
        H, W, p = layout.height, layout.width, cfg.patch
        check(H % p == 0 and W % p == 0, "patch", f"{p} does not divide the {H} x {W} frame")
        check("s4nd" not in backbone.mixers(), "mixer",
              "'video' runs every layer's mixer along time as well, which S4ND (a 2-D layer) cannot; choose another mixer")
        check(cfg.scan != "s4nd", "scan", "'s4nd' needs mixer 's4nd', which 'video' cannot run along time")
        self.cfg, self.frame = cfg, (H, W)
        self.check_finite = backbone.check_finite
        D = backbone.d_model
        self.embed = PatchEmbed((H, W, 1), p, D)
        self.grid = self.embed.grid
        self.pos = nn.Embedding(self.grid[0] * self.grid[1], D)
        nn.init.normal_(self.pos.weight, std=0.02)
        self.backbone = SpaceTimeStack(backbone, cfg.order, cfg.scan, self.grid)
        self.head = nn.Linear(D, p * p)
        if cfg.residual:  # zero change at the start: the untrained model copies the last frame exactly
            nn.init.zeros_(self.head.weight)
            nn.init.zeros_(self.head.bias)

    def forward(self, inputs: Tensor, mask: Tensor | None = None) -> Tensor:
        H, W = self.frame
        if inputs.dim() != 3 or inputs.shape[-1] != H * W or not inputs.is_floating_point():
            raise ValueError(f"arch 'video' expects float frames (B, T, H*W) = (B, T, {H * W}), got "
                             f"{inputs.dtype} {tuple(inputs.shape)}")
        if mask is not None and not bool(mask.all()):
            raise ValueError("arch 'video' reads whole clips: the mask marks padded frames")
        if self.check_finite:
            check_finite(inputs, "the video model's input frames")
        B, T, _ = inputs.shape
        x = self.embed(inputs.reshape(B * T, H * W, 1)) + self.pos.weight  # (B*T, h*w, D)
        x = self.backbone(x.view(B, T, -1, x.shape[-1]))
        pixels = split_groups(self.head(x.flatten(0, 1)), self.grid, self.cfg.patch).view(B, T, H * W)
        return inputs + pixels if self.cfg.residual else pixels


@register_arch("video", VideoConfig)
def build_video(backbone: BackboneConfig, spec: DataSpec, pool: str, cfg: VideoConfig) -> VideoModel:
    """Next-frame prediction with a spatio-temporal scan over any mixer (docs/video.md)."""
    return VideoModel(backbone, spec, cfg)
