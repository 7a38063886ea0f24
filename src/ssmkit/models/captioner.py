"""``arch=captioner``: image to text, a prefix model over any mixer (VL-Mamba / Cobra style).

VL-Mamba (Qiao et al. 2024) and Cobra (Zhao et al. 2024) encode the image into patch tokens, project
them into the language model's space, and let a causal Mamba language model read them as a prefix
before the text. Here, on an ``ImageCaption`` task (``digit_captions``):

    pixels (B, H*W, 1) -> patches -> Linear + learned positions -> ScanStack (``encoder_layers``
    layers of the run's mixer in the 2-D ``scan``, non-causal) -> projector MLP      (B, h*w, D)
    caption tokens (B, T) -> Embedding                                               (B, T, D)
    [image tokens ; caption tokens] -> Backbone (causal, the run's layers) -> LM head at the caption
    positions -> logits (B, T, V): position i predicts caption token i + 1

``generate`` runs the prefix (image tokens and BOS) through the parallel forward once, then one
recurrent ``step`` per token, as ``CausalLM.generate`` does: a recurrent mixer's cost per token does
not grow with the prefix. With ``eval_decode=greedy`` (the default) an evaluation forward
(``model.eval()``) returns the logits of the greedy generation instead of the teacher-forced ones, so
``ssmkit train``/``eval`` score the generated captions; training is always teacher-forced.
"""
from __future__ import annotations

import dataclasses

import torch
from torch import Tensor, nn

from ..config import check
from ..layers.base import check_finite
from .backbone import Backbone, BackboneConfig
from .kinds import TaskKind
from .layouts import ImageCaption, require_layout
from .registry import DataSpec, register_arch
from .scans import SCANS
from .vision import PatchEmbed, ScanStack

DECODES = ("greedy", "teacher")
_TASKS = "digit_captions"


@dataclasses.dataclass
class CaptionerConfig:
    scan: str = "vim"  # the image encoder's 2-D scan (models.scans)
    patch: int = 4  # p: side of the square patches; must divide H and W
    encoder_layers: int = 1  # layers of the image encoder (the run's n_layers are the text decoder's)
    eval_decode: str = "greedy"  # evaluation forward: greedy generation | teacher (teacher-forced)

    def __post_init__(self) -> None:
        check(self.scan in SCANS, "scan", f"must be one of {SCANS}, got {self.scan!r}")
        check(self.patch >= 1, "patch", f"must be >= 1, got {self.patch}")
        check(self.encoder_layers >= 1, "encoder_layers", f"must be >= 1, got {self.encoder_layers}")
        check(self.eval_decode in DECODES, "eval_decode", f"must be one of {DECODES}, got {self.eval_decode!r}")


def split_inputs(arch: str, inputs: Tensor, mask: Tensor | None, layout: ImageCaption) -> tuple[Tensor, Tensor]:
    """Packed inputs (B, H*W + T, 1) -> pixels (B, H*W, 1), caption tokens (B, T) long; checked."""
    H, W, C = layout.image_shape
    P, T = H * W, layout.max_tokens
    if inputs.dim() != 3 or tuple(inputs.shape[1:]) != (P + T, C) or not inputs.is_floating_point():
        raise ValueError(f"arch '{arch}' expects a packed image and caption (B, H*W + T, 1) = (B, {P} + {T}, {C}), "
                         f"got {inputs.dtype} {tuple(inputs.shape)}; a caption longer than T = {T} tokens does not fit "
                         "(the task's max_tokens)")
    if mask is not None and not bool(mask.all()):
        raise ValueError(f"arch '{arch}' reads whole images and fixed caption slots: the mask must be all True")
    tokens = inputs[:, P:, 0]
    if bool((tokens != tokens.round()).any() | (tokens < 0).any() | (tokens >= layout.vocab_size).any()):
        raise ValueError(f"arch '{arch}': caption positions must hold token ids in [0, {layout.vocab_size})")
    return inputs[:, :P], tokens.long()


class Captioner(nn.Module):
    """``model(inputs (B, H*W + T, 1), mask=None) -> logits (B, T, V)``; ``generate(pixels) -> (B, T)``."""

    def __init__(self, backbone: BackboneConfig, spec: DataSpec, cfg: CaptionerConfig) -> None:
        super().__init__()
        self.layout = layout = require_layout(spec.layout, ImageCaption, "captioner", _TASKS)
        check(spec.kind == TaskKind.LM, "arch", f"'captioner' generates text (kind 'lm'), not '{spec.kind}'")
        H, W, C = layout.image_shape
        check(H % cfg.patch == 0 and W % cfg.patch == 0, "patch", f"{cfg.patch} does not divide the {H} x {W} image")
        check("s4nd" not in backbone.mixers(), "mixer",
              "'captioner' runs the text decoder's mixer causally over tokens, which S4ND (a 2-D layer) cannot")
        check(cfg.scan != "s4nd", "scan", "'s4nd' needs mixer 's4nd', which the text decoder cannot run")
        self.cfg = cfg
        self.check_finite = backbone.check_finite
        D = backbone.d_model
        self.embed = PatchEmbed((H, W, C), cfg.patch, D)
        h, w = self.embed.grid
        self.pos = nn.Embedding(h * w, D)
        nn.init.normal_(self.pos.weight, std=0.02)
        self.encoder = ScanStack(dataclasses.replace(backbone, n_layers=cfg.encoder_layers, mixer=backbone.layer_names()[0]),
                                 cfg.scan, (h, w), 0)
        self.projector = nn.Sequential(nn.Linear(D, D), nn.GELU(), nn.Linear(D, D))
        self.token_embed = nn.Embedding(layout.vocab_size, D)
        self.backbone = Backbone(backbone)
        self.head = nn.Linear(D, layout.vocab_size)

    def prefix(self, pixels: Tensor) -> Tensor:
        """Pixels (B, H*W, 1) -> the projected image tokens (B, h*w, D)."""
        if self.check_finite:
            check_finite(pixels, "the captioner's input pixels")
        return self.projector(self.encoder(self.embed(pixels) + self.pos.weight))

    def forward(self, inputs: Tensor, mask: Tensor | None = None) -> Tensor:
        pixels, tokens = split_inputs("captioner", inputs, mask, self.layout)
        if not self.training and self.cfg.eval_decode == "greedy":
            return self.generate(pixels, return_logits=True)
        image = self.prefix(pixels)
        h = self.backbone(torch.cat([image, self.token_embed(tokens)], 1))
        return self.head(h[:, image.shape[1]:])

    @torch.no_grad()
    def generate(self, pixels: Tensor, return_logits: bool = False) -> Tensor:
        """Greedy captions of pixels (B, H*W, 1): tokens (B, T) after BOS (EOS then PAD once a row has
        ended), or with ``return_logits`` the logits (B, T, V) each token was chosen from."""
        B, T = pixels.shape[0], self.layout.max_tokens
        image = self.prefix(pixels)
        bos = torch.full((B, 1), self.layout.bos, dtype=torch.long, device=pixels.device)
        h, state = self.backbone(torch.cat([image, self.token_embed(bos)], 1), return_state=True)
        logits = self.head(h[:, -1])
        tokens, all_logits = [], []
        ended = torch.zeros(B, dtype=torch.bool, device=pixels.device)
        for i in range(T):
            token = torch.where(ended, self.layout.pad, logits.argmax(-1))
            tokens.append(token)
            all_logits.append(logits)
            ended = ended | (token == self.layout.eos)
            if i + 1 < T:
                h, state = self.backbone.step(self.token_embed(token), state)
                logits = self.head(h)
        return torch.stack(all_logits, 1) if return_logits else torch.stack(tokens, 1)


@register_arch("captioner", CaptionerConfig)
def build_captioner(backbone: BackboneConfig, spec: DataSpec, pool: str, cfg: CaptionerConfig) -> Captioner:
    """Image prefix + causal mixer stack that writes the caption (docs/captions.md)."""
    return Captioner(backbone, spec, cfg)
