"""Token generation for ``CausalLM``: the settings Hugging Face users expect, over a recurrent step.

``stream`` prefills the prompts with the parallel forward, then runs one ``step`` per token and
yields each new token (B,) as soon as it is chosen; ``CausalLM.generate`` collects them. The cost
of a token does not grow with the context for recurrent mixers (the state has a fixed size;
``ssmkit bench --suite generate`` measures it). Per token, in order:

1. repetition penalty p (CTRL, Keskar et al. 2019, as transformers applies it): the logit of every
   token already in the row (its real prompt tokens and what it generated) is divided by p when
   positive and multiplied by p when negative;
2. greedy argmax at temperature 0; otherwise softmax(logits / temperature) restricted to the
   ``top_k`` most likely tokens and / or the nucleus of probability ``top_p``, then sampled;
3. a row that produced one of ``eos_token_id``, or for which ``stopping_criteria(ids)`` is True,
   is finished: it receives ``pad_token_id`` from then on (default: the first eos id), and the
   loop ends when every row is finished (``generate`` then returns fewer than max_new_tokens).
Prompts of different lengths are left-padded with ``mask`` (B, L) marking the real tokens.

The steps after the prefill run fused on the CPU when the model allows (``models.decode``: one
compiled call per token, state in preallocated buffers; same tokens, logits equal to float32
rounding); ``fused_decode=False`` runs ``model.step`` instead, ``True`` raises when it cannot run,
``None`` (the default) falls back to ``model.step`` and logs why once.
"""
from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from ..config import check
from ..log import log_once

if TYPE_CHECKING:
    from .lm import CausalLM

# ids so far (B, L + t) -> (B,) bool: True where a row should stop (or one bool for every row)
StoppingCriteria = Callable[[Tensor], "Tensor | bool"]


def _eos_ids(eos_token_id: int | list[int] | tuple[int, ...] | None, vocab: int) -> list[int]:
    ids = [] if eos_token_id is None else [eos_token_id] if isinstance(eos_token_id, int) else list(eos_token_id)
    for i in ids:
        if not isinstance(i, int) or isinstance(i, bool) or not 0 <= i < vocab:
            raise ValueError(f"eos_token_id must be token ids in [0, {vocab}), got {eos_token_id!r}")
    return ids


def penalize_repeats(logits: Tensor, seen: Tensor, penalty: float) -> Tensor:
    """logits (B, V), seen (B, V) bool: the tokens each row has seen -> penalized logits."""
    scaled = torch.where(logits > 0, logits / penalty, logits * penalty)
    return torch.where(seen, scaled, logits)


def pick(logits: Tensor, temperature: float, top_k: int | None, top_p: float | None, generator) -> Tensor:
    """The next token (B,) from logits (B, V): argmax at temperature 0, else top-k / nucleus sampling."""
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
    return torch.multinomial(logits.softmax(-1), 1, generator=generator)[:, 0]


def stream(
    model: CausalLM,
    input_ids: Tensor,
    max_new_tokens: int,
    mask: Tensor | None = None,
    temperature: float = 0.0,
    top_k: int | None = None,
    top_p: float | None = None,
    generator: torch.Generator | None = None,
    *,
    eos_token_id: int | list[int] | None = None,
    pad_token_id: int | None = None,
    repetition_penalty: float = 1.0,
    stopping_criteria: StoppingCriteria | None = None,
    fused_decode: bool | None = None,
) -> Iterator[Tensor]:
    """An iterator of the next token of every row (B,), until ``max_new_tokens`` or every row is
    finished; the arguments are checked here, before the first token."""
    check(isinstance(max_new_tokens, int) and max_new_tokens >= 0, "max_new_tokens",
          f"must be an int >= 0, got {max_new_tokens!r}")
    check(temperature >= 0, "temperature", f"must be >= 0, got {temperature}")
    check(top_k is None or top_k >= 1, "top_k", f"must be >= 1, got {top_k}")
    check(top_p is None or 0 < top_p <= 1, "top_p", f"must be in (0, 1], got {top_p}")
    check(repetition_penalty > 0, "repetition_penalty", f"must be > 0 (1 = off), got {repetition_penalty}")
    if input_ids.dim() != 2 or input_ids.shape[1] == 0:
        raise ValueError(f"input_ids must be (B, L) with L >= 1 prompt tokens, got shape {tuple(input_ids.shape)}")
    if mask is not None and (mask.shape != input_ids.shape or mask.dtype != torch.bool):
        raise ValueError(f"mask must be a bool tensor of input_ids' shape {tuple(input_ids.shape)}, "
                         f"got {mask.dtype} {tuple(mask.shape)}")
    V = model.vocab_size
    eos = _eos_ids(eos_token_id, V)
    pad = pad_token_id if pad_token_id is not None else (eos[0] if eos else None)
    if pad is not None and not (isinstance(pad, int) and 0 <= pad < V):
        raise ValueError(f"pad_token_id must be a token id in [0, {V}), got {pad!r}")
    if stopping_criteria is not None and pad is None:
        raise ValueError("stopping_criteria needs pad_token_id (or eos_token_id): the token a finished row "
                         "receives while the others continue")
    check(fused_decode in (None, True, False), "fused_decode", f"must be None, True or False, got {fused_decode!r}")
    fused = fused_decode
    if fused_decode is not False:
        from .decode import fused_unavailable_reason

        reason = fused_unavailable_reason(model)
        if reason is not None and fused_decode:
            raise ValueError(f"fused_decode=True but the fused CPU decode cannot run this model: {reason}")
        if reason is not None:
            weights = getattr(model, "inference_weights", "float32")
            log_once(f"generate: the fused CPU decode does not apply ({reason}); running model.step per token"
                     + (f" with float32 weights (inference_weights={weights!r} applies to the fused decode only)"
                        if weights != "float32" else ""), logging.WARNING if weights != "float32" else logging.INFO)
        fused = reason is None
    return _loop(model, input_ids, max_new_tokens, mask, temperature, top_k, top_p, generator, eos, pad,
                 repetition_penalty, stopping_criteria, fused)


@torch.no_grad()  # on a generator function torch turns grad off around each resumption only
def _loop(model, input_ids, max_new_tokens, mask, temperature, top_k, top_p, generator, eos, pad,
          repetition_penalty, stopping_criteria, fused) -> Iterator[Tensor]:
    V = model.vocab_size
    logits, state = model(input_ids, mask=mask, return_state=True)
    if fused:
        from .decode import FusedDecoder

        decoder = FusedDecoder(model, state)
    B = input_ids.shape[0]
    if mask is None:
        last = logits[:, -1]
    else:
        idx = mask.long().cumsum(1).argmax(1)  # last real position of each row
        last = logits[torch.arange(B, device=idx.device), idx]
    seen = None if repetition_penalty == 1.0 else _seen_of_real(input_ids, mask, V)
    eos_t = torch.tensor(eos, device=input_ids.device, dtype=torch.long)
    done = torch.zeros(B, dtype=torch.bool, device=input_ids.device)
    ids = input_ids
    for i in range(max_new_tokens):
        if seen is not None:
            last = penalize_repeats(last, seen, repetition_penalty)
        token = pick(last, temperature, top_k, top_p, generator)
        if pad is not None:
            token = torch.where(done, torch.full_like(token, pad), token)
        yield token
        if seen is not None:
            seen[torch.arange(B), token] = True
        if eos:
            done = done | torch.isin(token, eos_t)
        if stopping_criteria is not None:
            ids = torch.cat([ids, token[:, None]], dim=1)
            stop = stopping_criteria(ids)
            done = done | (stop if isinstance(stop, Tensor) else torch.full_like(done, bool(stop)))
        if (eos or stopping_criteria is not None) and bool(done.all()):
            return
        if i + 1 < max_new_tokens:
            if fused:
                last = decoder.step(token)
            else:
                last, state = model.step(token, state)


def _seen_of_real(input_ids: Tensor, mask: Tensor | None, V: int) -> Tensor:
    """(B, V) bool: the tokens at the real positions of each row."""
    real = torch.ones_like(input_ids) if mask is None else mask.long()
    counts = torch.zeros(input_ids.shape[0], V, dtype=torch.long, device=input_ids.device)
    return counts.scatter_add_(1, input_ids.long(), real) > 0
