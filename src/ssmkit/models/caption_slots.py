"""``arch=caption_slots``: the non-sequence baseline of the caption task, every token from the image at once.

A small CNN (``models.conv.small_cnn``, width D, pooled to a 2 x 4 grid of cells so that it keeps where
the digits are) reads the image, and one Linear per caption position, all computed together as one
Linear(8 D -> T * V), gives the logits of every caption token (B, T, V) independently: no token sees
another, nothing is generated step by step. It reads the same ``ImageCaption`` inputs as
``arch=captioner`` (the caption positions of the inputs are ignored) and uses no mixer.
"""
from __future__ import annotations

from torch import Tensor, nn

from ..config import check
from .backbone import BackboneConfig
from .captioner import split_inputs
from .conv import small_cnn
from .kinds import TaskKind
from .layouts import ImageCaption, require_layout
from .registry import DataSpec, NoConfig, register_arch

_CELLS = (2, 4)


class CaptionSlots(nn.Module):
    """``model(inputs (B, H*W + T, 1), mask=None) -> logits (B, T, V)``."""

    def __init__(self, backbone: BackboneConfig, spec: DataSpec) -> None:
        super().__init__()
        self.layout = require_layout(spec.layout, ImageCaption, "caption_slots", "digit_captions")
        check(spec.kind == TaskKind.LM, "arch", f"'caption_slots' writes text (kind 'lm'), not '{spec.kind}'")
        D = backbone.d_model
        self.cnn = small_cnn(self.layout.image_shape[2], D, _CELLS)
        self.head = nn.Sequential(nn.Linear(D * _CELLS[0] * _CELLS[1], 4 * D), nn.GELU(),
                                  nn.Linear(4 * D, self.layout.max_tokens * self.layout.vocab_size))

    def forward(self, inputs: Tensor, mask: Tensor | None = None) -> Tensor:
        pixels, _ = split_inputs("caption_slots", inputs, mask, self.layout)
        H, W, C = self.layout.image_shape
        image = pixels.view(-1, H, W, C).permute(0, 3, 1, 2)
        return self.head(self.cnn(image)).view(-1, self.layout.max_tokens, self.layout.vocab_size)


@register_arch("caption_slots")
def build_caption_slots(backbone: BackboneConfig, spec: DataSpec, pool: str, cfg: NoConfig) -> CaptionSlots:
    """A CNN and one classifier per caption position: the non-sequence baseline (docs/captions.md)."""
    return CaptionSlots(backbone, spec)
