"""``arch=vision``: images as patch tokens read by a stack of any registered mixer in a chosen scan order.

    pixels (B, H*W, C) row-major -> patches (B, h*w, p*p*C) -> Linear -> (B, h*w, D) [+ learned positions]
    [vim: class token inserted at position h*w // 2] -> n_layers x Block(ScanMixer) -> norm -> readout -> Linear

with h = H / p, w = W / p. The patch embedding is ViT's (a Linear over each p x p patch, the same map
as a stride-p convolution). Scan orders (``models.scans``, docs/vision.md): ``raster`` (causal,
row-major), ``vim`` (Vision Mamba: bidirectional, class token in the middle), ``cross`` (VMamba's
four directions merged), ``s4nd`` (S4ND's 2-D kernel; mixer ``s4nd`` only).

Readout (``arch.readout``): ``auto`` is the class token for ``vim`` and the run's ``pool`` (``mean``
by default) otherwise; ``mean`` averages the patch tokens, ``last`` reads the last patch in row-major order (the
one a causal raster scan has fed everything into), ``cls`` the class token (``vim`` only).
The image tasks (``smnist``, ``sfashion``, ``digits``) give ``DataSpec.image_shape``; a task without
it (``psmnist``: the pixels are scrambled) cannot be read as an image.
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

READOUTS = ("auto", "mean", "last", "cls")


@dataclasses.dataclass
class VisionConfig:
    scan: str = "vim"  # raster | vim | cross | s4nd (see models.scans)
    patch: int = 4  # p: side of the square patches; must divide the image's height and width
    pos_embed: bool = True  # a learned embedding per patch position, added after the patch embedding
    readout: str = "auto"  # auto | mean | last | cls (see the module docstring)

    def __post_init__(self) -> None:
        check(self.scan in SCANS, "scan", f"must be one of {SCANS}, got {self.scan!r}")
        check(isinstance(self.patch, int) and not isinstance(self.patch, bool) and self.patch >= 1, "patch",
              f"must be an int >= 1, got {self.patch!r}")
        check(self.readout in READOUTS, "readout", f"must be one of {READOUTS}, got {self.readout!r}")
        check(self.readout != "cls" or self.scan == "vim", "readout", f"'cls' needs scan 'vim' (the only scan with a "
              f"class token), got scan {self.scan!r}")


class PatchEmbed(nn.Module):
    """Row-major pixels (B, H*W, C) -> patch tokens (B, h*w, D), row-major over the h x w grid."""

    def __init__(self, image_shape: tuple[int, int, int], patch: int, d_model: int) -> None:
        super().__init__()
        H, W, C = image_shape
        self.image_shape, self.patch = (H, W, C), patch
        self.grid = (H // patch, W // patch)
        self.proj = nn.Linear(patch * patch * C, d_model)

    def patches(self, x: Tensor) -> Tensor:
        """(B, H*W, C) -> (B, h*w, p*p*C): each patch's pixels row-major, channels last."""
        C, p, (h, w) = self.image_shape[2], self.patch, self.grid
        x = x.reshape(x.shape[0], h, p, w, p, C).permute(0, 1, 3, 2, 4, 5)  # (B, h, w, p, p, C)
        return x.reshape(x.shape[0], h * w, p * p * C)

    def forward(self, x: Tensor) -> Tensor:
        return self.proj(self.patches(x))


class ScanStack(nn.Module):
    """(B, L, D) -> (B, L, D): ``n_layers`` residual ``Block``s around ``ScanMixer``s, then a norm."""

    def __init__(self, cfg: BackboneConfig, scan: str, grid: tuple[int, int], extra_tokens: int) -> None:
        super().__init__()
        D = cfg.d_model
        self.blocks = nn.ModuleList(
            Block(n, cfg, mixer=ScanMixer(scan, n, D, grid, extra_tokens, **cfg.mixer_settings(n))) for n in cfg.layer_names())
        self.norm = make_norm(cfg) if cfg.final_norm else nn.Identity()
        self.check_finite = cfg.check_finite

    def forward(self, x: Tensor) -> Tensor:
        if self.check_finite:  # once for the stack; its blocks' mixers do not check
            check_finite(x, "the scan stack's input x (B, L, D)")
        for block in self.blocks:
            x, _ = block(x, None, None)
        return self.norm(x)


class VisionModel(nn.Module):
    """Image classifier: ``model(inputs (B, H*W, C), mask=None) -> logits (B, n_out)``."""

    def __init__(self, backbone: BackboneConfig, spec: DataSpec, pool: str, cfg: VisionConfig) -> None:
        super().__init__()
        if spec.image_shape is None:
            raise ValueError("arch 'vision' needs image inputs: this task's DataSpec has no image_shape (its "
                             "sequence is not an image read row-major, e.g. psmnist scrambles the pixels); "
                             "use smnist, sfashion or digits")
        if spec.kind != TaskKind.CLASSIFY:
            raise ValueError(f"arch 'vision' classifies images; the task's kind is '{spec.kind}'")
        if spec.vocab_size is not None:
            raise ValueError("arch 'vision' reads pixel values (B, H*W, C); this task gives token ids "
                             "(protocol=tokens): set task.protocol=values")
        H, W, C = spec.image_shape
        p = cfg.patch
        if H % p or W % p:
            raise ValueError(f"arch.patch={p} does not divide the {H} x {W} image (height and width must "
                             f"be multiples of the patch size)")
        names = backbone.layer_names()
        if cfg.scan == "s4nd" and any(n != "s4nd" for n in names):
            raise ValueError(f"arch.scan='s4nd' runs the S4ND layer's 2-D kernel and needs mixer 's4nd' in "
                             f"every layer, got mixer '{backbone.mixer_label()}'")
        D = backbone.d_model
        self.config, self.image_shape = cfg, (H, W, C)
        self.embed = PatchEmbed((H, W, C), p, D)
        h, w = self.embed.grid
        self.n_patches = h * w
        # an Embedding table, so that the optimizer groups give it no weight decay (as ViT and Vim do)
        self.pos = nn.Embedding(h * w, D) if cfg.pos_embed else None
        if self.pos is not None:
            nn.init.normal_(self.pos.weight, std=0.02)
        self.cls = nn.Parameter(torch.randn(D) * 0.02) if cfg.scan == "vim" else None
        self.cls_index = h * w // 2 if cfg.scan == "vim" else None  # Vim: the middle of the patch sequence
        extra = 1 if cfg.scan == "vim" else 0
        self.backbone = ScanStack(backbone, cfg.scan, (h, w), extra)
        self.readout = cfg.readout if cfg.readout != "auto" else ("cls" if cfg.scan == "vim" else pool)
        if self.readout not in ("mean", "last", "cls"):
            raise ValueError(f"pool must be 'mean' or 'last' for arch 'vision', got {pool!r}")
        self.head = nn.Linear(D, spec.n_out)

    def tokens(self, inputs: Tensor) -> Tensor:
        """Pixels (B, H*W, C) -> the sequence the stack reads (B, h*w [+ 1], D)."""
        x = self.embed(inputs)
        if self.pos is not None:
            x = x + self.pos.weight
        if self.cls is not None:
            i = self.cls_index
            x = torch.cat([x[:, :i], self.cls.expand(x.shape[0], 1, -1), x[:, i:]], dim=1)
        return x

    def features(self, inputs: Tensor) -> Tensor:
        """(B, H*W, C) -> (B, h*w [+ 1], D): the normed output of the stack."""
        return self.backbone(self.tokens(inputs))

    def forward(self, inputs: Tensor, mask: Tensor | None = None) -> Tensor:
        self._check(inputs, mask)
        h = self.features(inputs)
        if self.readout == "cls":
            return self.head(h[:, self.cls_index])
        if self.cls is not None:  # patches only
            h = torch.cat([h[:, : self.cls_index], h[:, self.cls_index + 1 :]], dim=1)
        return self.head(h[:, -1] if self.readout == "last" else h.mean(1))

    def _check(self, inputs: Tensor, mask: Tensor | None) -> None:
        H, W, C = self.image_shape
        if not isinstance(inputs, Tensor) or inputs.dim() != 3 or tuple(inputs.shape[1:]) != (H * W, C):
            got = tuple(inputs.shape) if isinstance(inputs, Tensor) else type(inputs).__name__
            raise ValueError(f"arch 'vision' expects images flattened row-major to (B, H*W, C) = "
                             f"(B, {H * W}, {C}) for image_shape {(H, W, C)}, got {got}")
        if not inputs.is_floating_point():
            raise TypeError(f"arch 'vision' expects float pixel values, got {inputs.dtype}")
        if mask is not None and not bool(mask.all()):
            raise ValueError("arch 'vision' reads whole images: the mask marks padded pixels, which an image "
                             "cannot have")


@register_arch("vision", VisionConfig)
def build_vision(backbone: BackboneConfig, spec: DataSpec, pool: str, cfg: VisionConfig) -> VisionModel:
    """Patch embedding + a stack of any registered mixer in scan order ``cfg.scan`` (docs/vision.md)."""
    return VisionModel(backbone, spec, pool, cfg)
