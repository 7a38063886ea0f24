"""Causal language model over any backbone, with recurrent generation.

``generate`` runs the prompt through the parallel ``forward`` once (prefill), then one ``step``
per new token, so its cost per token does not grow with the context (for recurrent mixers); on
the CPU that step runs fused where it can (``models.decode``).
"""
from __future__ import annotations

from collections.abc import Iterator

import torch
from torch import Tensor, nn

from ..config import check
from ..layers.base import checks_values
from .generation import stream
from .backbone import Backbone, BackboneConfig, make_norm


class CausalLM(nn.Module):
    """token ids (B, L) -> logits (B, L, V) via embedding, ``Backbone`` and a (tied) LM head.

    What some released models add around the stack (all off by default):
    ``embed_scale`` multiplies the embeddings (RecurrentGemma: √D rounded to bfloat16, as its code),
    ``embed_norm`` applies a norm of the backbone's kind to them (flash-linear-attention's RWKV-6
    ``pre_norm``), ``logit_softcap`` c maps the logits to c·tanh(logits / c) (RecurrentGemma: 30)."""

    def __init__(
        self, backbone: BackboneConfig, vocab_size: int, tie_embeddings: bool = True, *,
        embed_scale: float = 1.0, embed_norm: bool = False, logit_softcap: float | None = None,
    ) -> None:
        super().__init__()
        check(vocab_size > 1, "vocab_size", f"must be > 1, got {vocab_size}")
        check(embed_scale > 0, "embed_scale", f"must be > 0, got {embed_scale}")
        check(logit_softcap is None or logit_softcap > 0, "logit_softcap", f"must be None or > 0, got {logit_softcap}")
        self.vocab_size = vocab_size
        self.embed_scale, self.logit_softcap = float(embed_scale), logit_softcap
        self.embedding = nn.Embedding(vocab_size, backbone.d_model)
        self.embed_norm = make_norm(backbone) if embed_norm else None
        self.backbone = Backbone(backbone)
        self.lm_head = nn.Linear(backbone.d_model, vocab_size, bias=False)
        if tie_embeddings:
            self.lm_head.weight = self.embedding.weight
        self.inference_weights = "float32"  # the fused decode's weight storage (to_inference)

    @property
    def tied(self) -> bool:
        """Whether the LM head is the embedding matrix."""
        return self.lm_head.weight is self.embedding.weight

    def _embed(self, ids: Tensor) -> Tensor:
        x = self.embedding(ids)
        if self.embed_scale != 1.0:
            x = x * self.embed_scale
        return x if self.embed_norm is None else self.embed_norm(x)

    def _logits(self, h: Tensor) -> Tensor:
        logits = self.lm_head(h)
        if self.logit_softcap is None:
            return logits
        return torch.tanh(logits / self.logit_softcap) * self.logit_softcap

    def forward(
        self, input_ids: Tensor, state: tuple | None = None, mask: Tensor | None = None, *,
        cu_seqlens: Tensor | None = None, return_state: bool = False,
    ) -> Tensor | tuple[Tensor, tuple]:
        """input_ids (B, L) -> logits (B, L, V). ``cu_seqlens`` (N + 1,) int32: input_ids (1, L) is one
        packed row of N documents, each run as if alone (state: one row per document; docs/packing.md)."""
        self._check_ids(input_ids)
        h, state = self.backbone(self._embed(input_ids), state, mask, cu_seqlens=cu_seqlens, return_state=True)
        logits = self._logits(h)
        return (logits, state) if return_state else logits

    def step(self, token: Tensor, state: tuple) -> tuple[Tensor, tuple]:
        """token (B,) -> (logits (B, V), new_state)."""
        self._check_ids(token)
        h, state = self.backbone.step(self._embed(token), state)
        return self._logits(h), state

    def to_inference(self, weights: str = "bfloat16") -> CausalLM:
        """Eval mode, and the storage of the weights the fused CPU decode reads every token:
        ``"float32"``, ``"bfloat16"`` / ``"bf16"`` or ``"int8"`` (weight-only: activations and sums stay
        float32; ``models.decode``). The parameters themselves stay float32 (the prefill, training,
        saving and ``step`` use them); generation falls back to ``step`` in float32, and says so,
        where the fused decode cannot run. Returns the model."""
        from .decode import weight_format

        self.inference_weights = weight_format(weights)
        return self.eval()

    def head_options(self) -> dict:
        """The constructor's keyword options besides the backbone, the vocabulary and the tying
        (what ``save_pretrained`` writes beside them)."""
        return {"embed_scale": self.embed_scale, "embed_norm": self.embed_norm is not None,
                "logit_softcap": self.logit_softcap}

    def init_state(self, batch_size: int, device=None, dtype=None) -> tuple:
        return self.backbone.init_state(batch_size, device, dtype)

    @torch.no_grad()
    def generate(self, input_ids: Tensor, max_new_tokens: int, mask: Tensor | None = None,
                 temperature: float = 0.0, top_k: int | None = None, top_p: float | None = None,
                 generator: torch.Generator | None = None, **options) -> Tensor:
        """Continue each prompt by up to ``max_new_tokens`` tokens; returns (B, L + n), n <= max_new_tokens
        (fewer when every row finished early).

        temperature 0 is greedy (argmax); otherwise sample from softmax(logits / temperature),
        restricted to the ``top_k`` most likely tokens and/or the smallest set whose probability
        reaches ``top_p`` (nucleus). ``mask`` (B, L) marks real prompt tokens: prompts of
        different lengths are left-padded (the new tokens follow the last real token of each row).
        ``options``: ``eos_token_id`` (int or list), ``pad_token_id``, ``repetition_penalty``,
        ``stopping_criteria`` (ids (B, L + t) -> (B,) bool), ``fused_decode`` (None: the fused CPU
        step of ``models.decode`` where it applies, else ``step``; False: always ``step``; True: fused
        or an error); ``models.generation`` has the rules.
        """
        tokens = list(self.stream(input_ids, max_new_tokens, mask, temperature, top_k, top_p, generator, **options))
        return torch.cat([input_ids, *(t[:, None] for t in tokens)], dim=1)

    def stream(self, input_ids: Tensor, max_new_tokens: int, mask: Tensor | None = None,
               temperature: float = 0.0, top_k: int | None = None, top_p: float | None = None,
               generator: torch.Generator | None = None, **options) -> Iterator[Tensor]:
        """``generate``, one token (B,) at a time, each yielded as soon as it is chosen."""
        return stream(self, input_ids, max_new_tokens, mask, temperature, top_k, top_p, generator, **options)

    def _check_ids(self, ids: Tensor) -> None:
        if ids.dtype not in (torch.long, torch.int, torch.int32, torch.int64):
            raise TypeError(f"token ids must be an integer tensor, got {ids.dtype}")
        # the range is read on the host for CPU tensors only: on a GPU, step stays free of host syncs
        if ids.numel() and checks_values(ids) and (int(ids.min()) < 0 or int(ids.max()) >= self.vocab_size):
            raise ValueError(
                f"token ids must be in [0, {self.vocab_size}), got range [{int(ids.min())}, {int(ids.max())}]"
            )
