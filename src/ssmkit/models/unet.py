"""``arch=segmenter``: a U-shaped encoder-decoder over any registered mixer, per-pixel classes.

The U-Mamba / VM-UNet shape (Ma et al. 2024; Ruan & Xiang 2024) with ssmkit's 2-D scans:

    pixels (B, H*W, C) -> patches (B, h*w, p*p*C) -> Linear -> (B, h*w, D)               stage 0
    encoder: stage i at grid (h/2^i, w/2^i), width D*2^i: n_layers x Block(ScanMixer); between stages
             patch merging (each 2 x 2 group of tokens concatenated -> norm -> Linear 4C -> 2C)
    decoder: from the deepest stage up, patch expanding (Linear C -> 4 * C/2, each token into a
             2 x 2 group), the encoder's tokens of that stage concatenated (skip) -> Linear 2C -> C,
             n_layers x Block(ScanMixer)
    head:    norm -> Linear D -> p*p*classes, each token back into its p x p pixels -> (B, H*W, classes)

``block=conv`` is the baseline of docs/segmentation.md, a small CNN U-Net: the same patches, merging,
expanding, skips and head, with each Block replaced by a residual pair of 3 x 3 convolutions
(norm -> conv -> GELU -> conv), so that only how tokens are mixed differs; it uses no mixer.
"""
from __future__ import annotations

import dataclasses

import torch
from torch import Tensor, nn

from ..config import check
from ..layers.base import check_finite
from .backbone import BackboneConfig, Block, make_norm
from .kinds import TaskKind
from .registry import DataSpec, register_arch
from .scans import SCANS, ScanMixer
from .vision import PatchEmbed

BLOCKS = ("mixer", "conv")


@dataclasses.dataclass
class SegmenterConfig:
    scan: str = "cross"  # the 2-D scan of every stage: raster | vim | cross | s4nd (models.scans)
    patch: int = 2  # p: side of the square patches of stage 0; must divide H and W
    stages: int = 3  # resolutions of the U: stage i has (h / 2^i) x (w / 2^i) tokens of width D * 2^i
    block: str = "mixer"  # mixer: Blocks of ScanMixers; conv: 3 x 3 convolutions (the CNN U-Net baseline)

    def __post_init__(self) -> None:
        check(self.scan in SCANS, "scan", f"must be one of {SCANS}, got {self.scan!r}")
        check(self.patch >= 1, "patch", f"must be >= 1, got {self.patch}")
        check(self.stages >= 1, "stages", f"must be >= 1, got {self.stages}")
        check(self.block in BLOCKS, "block", f"must be one of {BLOCKS}, got {self.block!r}")


def merge_groups(x: Tensor, grid: tuple[int, int]) -> Tensor:
    """(B, h*w, C) row-major -> (B, h/2 * w/2, 4C): each 2 x 2 group of tokens concatenated."""
    B, _, C = x.shape
    h, w = grid
    x = x.view(B, h // 2, 2, w // 2, 2, C).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(B, (h // 2) * (w // 2), 4 * C)


def split_groups(x: Tensor, grid: tuple[int, int], factor: int) -> Tensor:
    """(B, h*w, f*f*C) -> (B, (f h) * (f w), C): each token's f*f*C values spread over an f x f group
    (the inverse of ``merge_groups`` for f = 2, and of ``PatchEmbed.patches`` for f = p)."""
    B, _, K = x.shape
    h, w = grid
    C = K // (factor * factor)
    x = x.view(B, h, w, factor, factor, C).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(B, h * factor * w * factor, C)


class ConvBlock(nn.Module):
    """(B, h*w, C) -> (B, h*w, C): x + conv3x3(GELU(conv3x3(norm(x)))) on the token grid."""

    def __init__(self, cfg: BackboneConfig, grid: tuple[int, int]) -> None:
        super().__init__()
        C = cfg.d_model
        self.grid = grid
        self.norm = make_norm(cfg)
        self.body = nn.Sequential(nn.Conv2d(C, C, 3, padding=1), nn.GELU(), nn.Conv2d(C, C, 3, padding=1))

    def forward(self, x: Tensor) -> Tensor:
        B, L, C = x.shape
        h, w = self.grid
        y = self.body(self.norm(x).transpose(1, 2).reshape(B, C, h, w))
        return x + y.reshape(B, C, L).transpose(1, 2)


class Stage(nn.Module):
    """``n_layers`` Blocks of ScanMixers (or ConvBlocks) at one grid and width: (B, h*w, C) -> same."""

    def __init__(self, cfg: BackboneConfig, scan: str, block: str, grid: tuple[int, int]) -> None:
        super().__init__()
        if block == "conv":
            self.layers = nn.ModuleList(ConvBlock(cfg, grid) for _ in range(cfg.n_layers))
        else:
            self.layers = nn.ModuleList(
                Block(n, cfg, mixer=ScanMixer(scan, n, cfg.d_model, grid, **cfg.mixer_settings(n)))
                for n in cfg.layer_names())

    def forward(self, x: Tensor) -> Tensor:
        for layer in self.layers:
            x = layer(x) if isinstance(layer, ConvBlock) else layer(x, None, None)[0]
        return x


class UNet(nn.Module):
    """Token grid (B, h*w, D) -> (B, h*w, D) through the encoder, the skips and the decoder."""

    def __init__(self, cfg: BackboneConfig, scan: str, block: str, grid: tuple[int, int], stages: int) -> None:
        super().__init__()
        h, w = grid
        self.grids = [(h >> i, w >> i) for i in range(stages)]
        widths = [cfg.d_model << i for i in range(stages)]
        at = [dataclasses.replace(cfg, d_model=c) for c in widths]
        self.encoder = nn.ModuleList(Stage(at[i], scan, block, self.grids[i]) for i in range(stages))
        self.merges = nn.ModuleList(
            nn.Sequential(nn.LayerNorm(4 * widths[i]), nn.Linear(4 * widths[i], widths[i + 1])) for i in range(stages - 1))
        self.expands = nn.ModuleList(nn.Linear(widths[i + 1], 4 * widths[i]) for i in range(stages - 1))
        self.fuses = nn.ModuleList(nn.Linear(2 * widths[i], widths[i]) for i in range(stages - 1))
        self.decoder = nn.ModuleList(Stage(at[i], scan, block, self.grids[i]) for i in range(stages - 1))
        self.norm = make_norm(cfg)

    @property
    def blocks(self) -> list[Block]:
        """Every mixer Block, encoder then decoder (none for ``block=conv``): what compare measures."""
        return [m for m in self.modules() if isinstance(m, Block)]

    def forward(self, x: Tensor) -> Tensor:
        skips = []
        for i, stage in enumerate(self.encoder):
            if i:
                x = self.merges[i - 1](merge_groups(x, self.grids[i - 1]))
            x = stage(x)
            skips.append(x)
        for i in reversed(range(len(self.decoder))):
            x = split_groups(self.expands[i](x), self.grids[i + 1], 2)
            x = self.decoder[i](self.fuses[i](torch.cat([x, skips[i]], -1)))
        return self.norm(x)


class Segmenter(nn.Module):
    """Per-pixel logits: ``model(inputs (B, H*W, C), mask=None) -> (B, H*W, classes)``."""

    def __init__(self, backbone: BackboneConfig, spec: DataSpec, cfg: SegmenterConfig) -> None:
        super().__init__()
        check(spec.image_shape is not None and spec.kind == TaskKind.TAG and spec.vocab_size is None, "arch",
              f"'segmenter' labels every pixel of an image: it needs a tag task with image inputs (mnist_segmentation); "
              f"this task is '{spec.kind}'" + ("" if spec.image_shape is not None else " without image_shape"))
        H, W, C = spec.image_shape
        p = cfg.patch
        check(H % p == 0 and W % p == 0, "patch", f"{p} does not divide the {H} x {W} image")
        h, w = H // p, W // p
        scale = 1 << (cfg.stages - 1)
        check(h % scale == 0 and w % scale == 0, "stages",
              f"{cfg.stages} stages halve the {h} x {w} patch grid {cfg.stages - 1} times: it must be divisible "
              f"by {scale} (lower stages or patch)")
        names = backbone.layer_names()
        if cfg.block == "mixer" and cfg.scan == "s4nd" and any(n != "s4nd" for n in names):
            raise ValueError(f"invalid config value for 'scan': 's4nd' needs mixer 's4nd' in every layer, got "
                             f"'{backbone.mixer_label()}'")
        self.image_shape, self.patch, self.n_out = (H, W, C), p, spec.n_out
        self.check_finite = backbone.check_finite
        self.embed = PatchEmbed((H, W, C), p, backbone.d_model)
        self.backbone = UNet(backbone, cfg.scan, cfg.block, (h, w), cfg.stages)
        self.head = nn.Linear(backbone.d_model, p * p * spec.n_out)

    def forward(self, inputs: Tensor, mask: Tensor | None = None) -> Tensor:
        H, W, C = self.image_shape
        if inputs.dim() != 3 or tuple(inputs.shape[1:]) != (H * W, C) or not inputs.is_floating_point():
            raise ValueError(f"arch 'segmenter' expects float images (B, H*W, C) = (B, {H * W}, {C}), got "
                             f"{inputs.dtype} {tuple(inputs.shape)}")
        if mask is not None and not bool(mask.all()):
            raise ValueError("arch 'segmenter' reads whole images: the mask marks padded pixels, which an image cannot have")
        if self.check_finite:
            check_finite(inputs, "the segmenter's input pixels")
        x = self.backbone(self.embed(inputs))
        return split_groups(self.head(x), self.backbone.grids[0], self.patch)


@register_arch("segmenter", SegmenterConfig)
def build_segmenter(backbone: BackboneConfig, spec: DataSpec, pool: str, cfg: SegmenterConfig) -> Segmenter:
    """U-shaped encoder-decoder of 2-D scans over any mixer (docs/segmentation.md)."""
    return Segmenter(backbone, spec, cfg)
