"""Greedy generation: ssmkit beside Hugging Face transformers on the same weights, and the floor
that reading every weight once per token sets.

For each kind (``mamba``, ``mamba2``) a transformers model of the asked shape (default: the
130m models: 24 layers, D = 768, vocabulary 50,280) gets random weights, is saved with
``save_pretrained`` and loaded by ``ssmkit.models.pretrained.load_pretrained``; both continue the
same random prompt greedily and the tokens must be identical (a row says when they are not).
ssmkit runs twice: as ``generate`` runs by default (the fused CPU decode, ``models.decode``, where
it applies) and with ``fused_decode=False`` (``model.step`` per token: the step loop); where the
fused decode applies, also with the weights it reads stored as bfloat16 and as int8
(``CausalLM.to_inference``), each row then giving, over the float32 greedy continuation fed to both
(teacher forcing), the largest logit error relative to the largest float32 logit and the fraction
of steps whose argmax agrees with float32's.
Tokens/s is new tokens (x batch) over the seconds of the whole ``generate`` call (prefill
included), best of ``repeats``; decode tokens/s leaves the prefill out: (new - 1) tokens (x batch)
over the whole call's seconds minus those of a call that generates one token (the prefill and
the first pick), each best of ``repeats``. The floor: a decode step reads every weight once for the whole
batch (the tied embedding once, as the LM head), so tokens/s cannot pass B x read bandwidth /
weight bytes (states and activations are small beside the weights at these sizes); the read
bandwidth is measured in the same run, before each kind's rows (a sum over a 256 MB tensor, the
threads of the run).
Before building, 5x the weights (both models, the save, the load: measured) is checked against the
memory limits (``measure.fits``).
"""
from __future__ import annotations

import dataclasses
import tempfile
import time
from typing import Any

import torch

from ..models.decode import fused_unavailable_reason
from .measure import fits, mb
from .speed import Limits

SHAPES = {  # the released 130m models' shapes (state-spaces/mamba-130m, mamba2-130m)
    "mamba": dict(state_size=16, expand=2, conv_kernel=4),
    "mamba2": dict(state_size=128, expand=2, conv_kernel=4, head_dim=64, n_groups=1, chunk_size=256),
}


@dataclasses.dataclass
class GenerateRow:
    name: str  # "<kind> ssmkit", "<kind> ssmkit step loop" or "<kind> transformers"
    kind: str
    prompt: int
    new_tokens: int
    seconds: float | None
    tokens_per_s: float | None
    weight_mb: float
    floor_tokens_per_s: float  # B x read bandwidth / weight bytes
    same_tokens: bool | None  # the other rows: identical to ssmkit's greedy tokens
    skipped: str | None = None
    decode_tokens_per_s: float | None = None  # the prefill left out (module doc)
    logit_error: float | None = None  # bf16 / int8 rows: max |logits - float32's| / max |float32's|
    agreement: float | None = None  # bf16 / int8 rows: fraction of steps with float32's argmax


def read_bandwidth(nbytes: int = 256 * 2**20, repeats: int = 3) -> float:
    """Bytes/s of reading one large float32 tensor (a sum), best of ``repeats``."""
    x = torch.ones(nbytes // 4)
    x.sum()
    best = min(_timed(lambda: x.sum()) for _ in range(repeats))
    return nbytes / best


def _timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def hf_model(kind: str, layers: int, d_model: int, vocab: int, seed: int = 0) -> Any:
    """A transformers Mamba / Mamba2 causal LM of this shape with random (seeded) weights."""
    try:
        import transformers
    except ImportError as e:
        raise ImportError("the generate suite compares against transformers: pip install 'ssmkit[test]'") from e
    torch.manual_seed(seed)
    ids = dict(eos_token_id=None, pad_token_id=0, bos_token_id=None, tie_word_embeddings=True)
    if kind == "mamba":
        cfg = transformers.MambaConfig(vocab_size=vocab, hidden_size=d_model, num_hidden_layers=layers,
                                       **SHAPES[kind], **ids)
        return transformers.MambaForCausalLM(cfg).eval()
    if kind == "mamba2":
        head_dim = min(SHAPES[kind]["head_dim"], 2 * d_model)
        shape = dict(SHAPES[kind], head_dim=head_dim, num_heads=2 * d_model // head_dim)
        cfg = transformers.Mamba2Config(vocab_size=vocab, hidden_size=d_model, num_hidden_layers=layers,
                                        **shape, **ids)
        return transformers.Mamba2ForCausalLM(cfg).eval()
    raise ValueError(f"generate suite: kind must be 'mamba' or 'mamba2', got {kind!r}")


def _weight_bytes(model: torch.nn.Module) -> int:
    return sum(p.numel() * p.element_size() for p in model.parameters())  # a tied matrix once


def bench_generate(kinds: tuple[str, ...] = ("mamba", "mamba2"), layers: int = 24, d_model: int = 768,
                   vocab: int = 50280, prompt: int = 64, new_tokens: int = 64, batch: int = 1,
                   repeats: int = 1, limits: Limits | None = None) -> list[GenerateRow]:
    """Rows (ssmkit, then transformers) per kind; see the module doc."""
    from ..models.pretrained import load_pretrained

    limits = limits or Limits()
    rows: list[GenerateRow] = []
    for kind in kinds:
        bandwidth = read_bandwidth()  # per kind, next to its rows: a shared machine's load drifts
        hf = hf_model(kind, layers, d_model, vocab)
        wbytes = _weight_bytes(hf)
        floor = batch * bandwidth / wbytes  # one step of the whole batch reads the weights once
        # Both models, transformers' save and the load beside them: 2.46 GB peak measured at 493 MB
        # of weights (the 130m shape), so 5x the weights.
        reason = fits(5 * wbytes, f"{kind} ssmkit + transformers (5x the weights)", limits.memory_bytes)
        if reason is not None:
            rows.append(GenerateRow(f"{kind} ssmkit", kind, prompt, new_tokens, None, None, wbytes / 2**20,
                                    floor, None, reason))
            continue
        with tempfile.TemporaryDirectory() as folder:
            hf.save_pretrained(folder)
            ours = load_pretrained(folder).eval()
        ids = torch.randint(1, vocab, (batch, prompt), generator=torch.Generator().manual_seed(1))
        runs = {
            "ssmkit": lambda n: ours.generate(ids, n),
            "ssmkit step loop": lambda n: ours.generate(ids, n, fused_decode=False),
            "transformers": lambda n: hf.generate(ids, max_new_tokens=n, min_new_tokens=n, do_sample=False),
        }
        tokens = {}
        for name, run in runs.items():
            with torch.no_grad():
                tokens[name] = run(new_tokens)
                seconds = min(_timed(lambda: run(new_tokens)) for _ in range(repeats))
                first = min(_timed(lambda: run(1)) for _ in range(repeats))
            same = None if name == "ssmkit" else torch.equal(tokens[name], tokens["ssmkit"])
            decode = batch * (new_tokens - 1) / (seconds - first) if new_tokens > 1 and seconds > first else None
            rows.append(GenerateRow(f"{kind} {name}", kind, prompt, new_tokens, seconds,
                                    batch * new_tokens / seconds, wbytes / 2**20, floor, same,
                                    decode_tokens_per_s=decode))
        if fused_unavailable_reason(ours) is None:
            rows += _storage_rows(ours, ids, tokens["ssmkit"], kind, new_tokens, repeats, bandwidth, batch)
        del hf, ours
    return rows


def _storage_rows(model, ids, reference, kind, new_tokens, repeats, bandwidth, batch) -> list[GenerateRow]:
    """The bf16 and int8 rows (module doc); ``reference``: float32's greedy ids (B, L + n)."""
    from ..models.decode import FusedDecoder

    rows = []
    prompt = ids.shape[1]
    for weights in ("bfloat16", "int8"):
        model.to_inference(weights)
        try:
            with torch.no_grad():
                out = model.generate(ids, new_tokens)
                seconds = min(_timed(lambda: model.generate(ids, new_tokens)) for _ in range(repeats))
                first = min(_timed(lambda: model.generate(ids, 1)) for _ in range(repeats))
                _, state = model(ids, return_state=True)
                exact, stored = FusedDecoder(model, state, "float32"), FusedDecoder(model, state, weights)
                error, agree = 0.0, 0
                for t in range(prompt, reference.shape[1] - 1):
                    want = exact.step(reference[:, t]).clone()
                    got = stored.step(reference[:, t])
                    error = max(error, float((got - want).abs().max() / want.abs().max()))
                    agree += int((got.argmax(-1) == want.argmax(-1)).sum())
        finally:
            model.to_inference("float32")
        steps = batch * (reference.shape[1] - 1 - prompt)
        decode = batch * (new_tokens - 1) / (seconds - first) if new_tokens > 1 and seconds > first else None
        wbytes = stored.weight_bytes
        rows.append(GenerateRow(f"{kind} ssmkit {weights}", kind, prompt, new_tokens, seconds,
                                batch * new_tokens / seconds, wbytes / 2**20, batch * bandwidth / wbytes,
                                torch.equal(out, reference), decode_tokens_per_s=decode, logit_error=error,
                                agreement=agree / steps if steps else None))
    return rows


def _ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a and b else None


def format_rows(rows: list[GenerateRow]) -> str:
    """Markdown table; ``/ transformers`` compares tokens/s (whole call, then decode only) with the
    peer's of the same kind; ``of floor`` is decode tokens/s over the floor (of the row's own weight
    bytes: bf16 / int8 rows read fewer); ``same tokens`` is against ssmkit's float32 tokens."""
    peer = {r.kind: r for r in rows if r.name.endswith("transformers")}
    lines = ["| model | prompt + new | tokens/s | / transformers | decode tokens/s | decode / transformers | weight MB | "
             "floor tokens/s | decode of floor | same tokens | logit error | argmax agreement | note |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        p = peer.get(r.kind)
        vs = _ratio(r.tokens_per_s, p and p.tokens_per_s)
        vs_decode = _ratio(r.decode_tokens_per_s, p and p.decode_tokens_per_s)
        of_floor = _ratio(r.decode_tokens_per_s, r.floor_tokens_per_s)
        lines.append(
            f"| {r.name} | {r.prompt} + {r.new_tokens} | {_f(r.tokens_per_s, '.1f')} | {_f(vs, '.2f')} | "
            f"{_f(r.decode_tokens_per_s, '.1f')} | {_f(vs_decode, '.2f')} | "
            f"{mb(r.weight_mb * 2**20)} | {_f(r.floor_tokens_per_s, '.1f')} | {_f(of_floor, '.2f')} | "
            f"{'-' if r.same_tokens is None else 'yes' if r.same_tokens else 'NO'} | "
            f"{_f(r.logit_error, '.1e')} | {_f(r.agreement, '.3f')} | "
            f"{'skipped: ' + r.skipped if r.skipped else ''} |")
    return "\n".join(lines)


def _f(v: float | None, fmt: str) -> str:
    return "-" if v is None else format(v, fmt)
