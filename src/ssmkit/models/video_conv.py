"""``arch=video_conv``: the learned non-sequence baseline of next-frame prediction, a CNN over a fixed
window of frames.

The frame-to-frame predictor with no memory beyond a window: to predict frame t + 1 it sees frames
t - context + 1 .. t (zeros before the clip's first frame) stacked as channels, read at full
resolution by ``layers`` 3 x 3 convolutions of width D with GELU between them. Two frames hold a
Moving MNIST digit's velocity, so ``context`` 2 is enough to move the digits; what a window cannot
hold is what was hidden longer ago (a digit under the other). With ``residual`` the last convolution
predicts the change from frame t and starts at zero, so the untrained model copies the last frame,
as ``arch=video`` does. It reads the same ``VideoFrames`` data and uses no mixer (``--mixer`` is
ignored).
"""
from __future__ import annotations

import dataclasses

from torch import Tensor, nn
from torch.nn import functional as F

from ..config import check
from ..layers.base import check_finite
from .backbone import BackboneConfig
from .kinds import TaskKind
from .layouts import VideoFrames, require_layout
from .registry import DataSpec, register_arch


@dataclasses.dataclass
class VideoConvConfig:
    context: int = 2  # frames seen when predicting the next one (the last `context`, zeros before the clip)
    layers: int = 4  # 3 x 3 convolutions, the first from `context` channels, the last to one
    residual: bool = True  # the last convolution predicts the change from the current frame

    def __post_init__(self) -> None:
        check(self.context >= 1, "context", f"must be >= 1, got {self.context}")
        check(self.layers >= 2, "layers", f"must be >= 2 (one from the frames, one to the prediction), got {self.layers}")


def frame_windows(frames: Tensor, context: int) -> Tensor:
    """(B, T, H*W) -> (B, T, context, H*W): at t, frames t - context + 1 .. t (zeros before frame 0)."""
    padded = F.pad(frames, (0, 0, context - 1, 0))
    return padded.unfold(1, context, 1).transpose(2, 3)


class VideoConv(nn.Module):
    """``model(frames (B, T, H*W), mask=None) -> next frames (B, T, H*W)`` from a window of frames."""

    def __init__(self, backbone: BackboneConfig, spec: DataSpec, cfg: VideoConvConfig) -> None:
        super().__init__()
        layout = require_layout(spec.layout, VideoFrames, "video_conv", "moving_mnist")
        check(spec.kind == TaskKind.PREDICT, "arch", f"'video_conv' predicts next frames (kind 'predict'), not '{spec.kind}'")
        self.cfg, self.frame = cfg, (layout.height, layout.width)
        self.check_finite = backbone.check_finite
        D = backbone.d_model
        widths = [cfg.context] + [D] * (cfg.layers - 1) + [1]
        convs: list[nn.Module] = []
        for i, (a, b) in enumerate(zip(widths[:-1], widths[1:])):
            convs += [nn.Conv2d(a, b, 3, padding=1)] + ([nn.GELU()] if i < cfg.layers - 1 else [])
        self.body = nn.Sequential(*convs)
        if cfg.residual:  # zero change at the start: the untrained model copies the last frame exactly
            nn.init.zeros_(convs[-1].weight)
            nn.init.zeros_(convs[-1].bias)

    def forward(self, inputs: Tensor, mask: Tensor | None = None) -> Tensor:
        H, W = self.frame
        if inputs.dim() != 3 or inputs.shape[-1] != H * W or not inputs.is_floating_point():
            raise ValueError(f"arch 'video_conv' expects float frames (B, T, H*W) = (B, T, {H * W}), got "
                             f"{inputs.dtype} {tuple(inputs.shape)}")
        if mask is not None and not bool(mask.all()):
            raise ValueError("arch 'video_conv' reads whole clips: the mask marks padded frames")
        if self.check_finite:
            check_finite(inputs, "the video model's input frames")
        B, T, _ = inputs.shape
        windows = frame_windows(inputs, self.cfg.context).reshape(B * T, self.cfg.context, H, W)
        out = self.body(windows).view(B, T, H * W)
        return inputs + out if self.cfg.residual else out


@register_arch("video_conv", VideoConvConfig)
def build_video_conv(backbone: BackboneConfig, spec: DataSpec, pool: str, cfg: VideoConvConfig) -> VideoConv:
    """A CNN over the last frames: the learned non-sequence baseline of next-frame prediction (docs/video.md)."""
    return VideoConv(backbone, spec, cfg)
