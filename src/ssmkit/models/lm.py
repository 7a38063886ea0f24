"""Causal language model over any backbone, with recurrent generation.

``generate`` runs the prompt through the parallel ``forward`` once (prefill), then one ``step``
per new token, so its cost per token does not grow with the context (for recurrent mixers).
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from ..config import check
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

    def head_options(self) -> dict:
        """The constructor's keyword options besides the backbone, the vocabulary and the tying
        (what ``save_pretrained`` writes beside them)."""
        return {"embed_scale": self.embed_scale, "embed_norm": self.embed_norm is not None,
                "logit_softcap": self.logit_softcap}

    def init_state(self, batch_size: int, device=None, dtype=None) -> tuple:
        return self.backbone.init_state(batch_size, device, dtype)

    @torch.no_grad()
    def generate(
        self,
        input_ids: Tensor,
        max_new_tokens: int,
        mask: Tensor | None = None,
        temperature: float = 0.0,
        top_k: int | None = None,
        top_p: float | None = None,
        generator: torch.Generator | None = None,
    ) -> Tensor:
        """Continue each prompt by ``max_new_tokens`` tokens; returns (B, L + max_new_tokens).

        temperature 0 is greedy (argmax); otherwise sample from softmax(logits / temperature),
        restricted to the ``top_k`` most likely tokens and/or the smallest set whose probability
        reaches ``top_p`` (nucleus). ``mask`` (B, L) marks real prompt tokens: prompts of
        different lengths are left-padded (the new tokens follow the last real token of each row).
        """
        check(max_new_tokens >= 0, "max_new_tokens", f"must be >= 0, got {max_new_tokens}")
        check(temperature >= 0, "temperature", f"must be >= 0, got {temperature}")
        check(top_k is None or top_k >= 1, "top_k", f"must be >= 1, got {top_k}")
        check(top_p is None or 0 < top_p <= 1, "top_p", f"must be in (0, 1], got {top_p}")
        logits, state = self(input_ids, mask=mask, return_state=True)
        if mask is None:
            last = logits[:, -1]
        else:
            idx = mask.long().cumsum(1).argmax(1)  # last real position of each row
            last = logits[torch.arange(len(idx), device=idx.device), idx]
        out = [input_ids]
        for i in range(max_new_tokens):
            token = self._pick(last, temperature, top_k, top_p, generator)
            out.append(token[:, None])
            if i + 1 < max_new_tokens:
                last, state = self.step(token, state)
        return torch.cat(out, dim=1)

    @staticmethod
    def _pick(logits: Tensor, temperature: float, top_k: int | None, top_p: float | None, generator) -> Tensor:
        if temperature == 0:
            return logits.argmax(-1)
        logits = logits.float() / temperature
        if top_k is not None and top_k < logits.shape[-1]:
            kth = logits.topk(top_k, dim=-1).values[:, -1:]
            logits = logits.masked_fill(logits < kth, float("-inf"))
        if top_p is not None and top_p < 1:
            sorted_logits, order = logits.sort(dim=-1, descending=True)
            probs = sorted_logits.softmax(-1)
            # drop a token when the tokens before it already reach top_p (the first always stays)
            drop = probs.cumsum(-1) - probs >= top_p
            logits = logits.scatter(-1, order, sorted_logits.masked_fill(drop, float("-inf")))
        probs = logits.softmax(-1)
        return torch.multinomial(probs, 1, generator=generator)[:, 0]

    def _check_ids(self, ids: Tensor) -> None:
        if ids.dtype not in (torch.long, torch.int, torch.int32, torch.int64):
            raise TypeError(f"token ids must be an integer tensor, got {ids.dtype}")
        if ids.numel() and (int(ids.min()) < 0 or int(ids.max()) >= self.vocab_size):
            raise ValueError(
                f"token ids must be in [0, {self.vocab_size}), got range [{int(ids.min())}, {int(ids.max())}]"
            )
