"""Speed, memory and state size of mixers vs sequence length, measured side by side in one run.

- ``bench_lti``: the LTI families beside a bare FFT convolution of the same shape (their floor);
- ``bench_mixers``: any mixers beside causal softmax attention, with the crossover length;
- ``bench_decode``: the cost of one generated token after contexts of growing length;
- ``bench_generate``: the same for a whole ``CausalLM``'s generation loop (``stream``).
Read the ratios between rows of one run (see ``timing``), not absolute seconds.
"""
from __future__ import annotations

import dataclasses
import gc
import time
from typing import Any

import torch

from ..layers import create_mixer
from .timing import best_time, peak_rss_mb


@dataclasses.dataclass
class BenchRow:
    name: str
    length: int
    forward_s: float
    backward_s: float | None  # forward + backward
    state_size: int | None = None
    peak_mb: float | None = None


def bare_fft_conv(u: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """The floor for an LTI layer: causal conv of u (B, H, L) with k (H, L) by rfft/irfft."""
    n = 2 * u.shape[-1]
    return torch.fft.irfft(torch.fft.rfft(u, n=n) * torch.fft.rfft(k, n=n), n=n)[..., : u.shape[-1]]


def _mixer_row(name: str, L: int, batch: int, d_model: int, backward: bool, repeats: int, **cfg: Any) -> BenchRow:
    gc.collect()
    m = create_mixer(name, d_model, **cfg)
    x = torch.randn(batch, L, d_model)
    with torch.no_grad():
        fwd = best_time(lambda: m(x), repeats)
        peak = peak_rss_mb(lambda: m(x))
    xg = x.clone().requires_grad_(True)
    bwd = best_time(lambda: m(xg).sum().backward(), repeats) if backward else None
    return BenchRow(name, L, fwd, bwd, m.state_size_at(L), peak)


def bench_lti(
    mixers: list[str], lengths: list[int], batch: int = 2, d_model: int = 512, d_state: int = 64,
    backward: bool = True, repeats: int = 3,
) -> list[BenchRow]:
    rows: list[BenchRow] = []
    for L in lengths:
        u, k = torch.randn(batch, d_model, L), torch.randn(d_model, L)
        fwd = best_time(lambda: bare_fft_conv(u, k), repeats)
        ug, kg = u.clone().requires_grad_(True), k.clone().requires_grad_(True)
        bwd = best_time(lambda: bare_fft_conv(ug, kg).sum().backward(), repeats) if backward else None
        rows.append(BenchRow("fft_conv (bare)", L, fwd, bwd, None, peak_rss_mb(lambda: bare_fft_conv(u, k))))
        rows += [_mixer_row(n, L, batch, d_model, backward, repeats, d_state=d_state) for n in mixers]
    return rows


def bench_mixers(
    mixers: list[str], lengths: list[int], batch: int = 2, d_model: int = 512, baseline: str = "attention",
    backward: bool = True, repeats: int = 1,
) -> list[BenchRow]:
    """Every mixer's default (auto) mode at each length, the baseline first in each group."""
    names = [baseline] + [m for m in mixers if m != baseline]
    return [_mixer_row(n, L, batch, d_model, backward, repeats) for L in lengths for n in names]


def crossover(rows: list[BenchRow], name: str, baseline: str, backward: bool = True) -> int | None:
    """The shortest measured length from which ``name`` is faster than ``baseline`` at every longer length."""
    def t(r: BenchRow) -> float | None:
        return r.backward_s if backward else r.forward_s

    times = {(r.name, r.length): t(r) for r in rows}
    lengths = sorted({r.length for r in rows})
    faster = [times.get((name, L)) is not None and times.get((baseline, L)) is not None
              and times[(name, L)] < times[(baseline, L)] for L in lengths]
    for i, L in enumerate(lengths):
        if all(faster[i:]):
            return L
    return None


def bench_decode(mixers: list[str], contexts: list[int], batch: int = 1, d_model: int = 512,
                 steps: int = 16) -> list[BenchRow]:
    """Seconds per generated token (``step``) after a prefill of each context length."""
    rows = []
    for name in mixers:
        m = create_mixer(name, d_model).eval()
        for L in contexts:
            with torch.no_grad():
                _, state = m(torch.randn(batch, L, d_model), return_state=True)
                x_t = torch.randn(batch, d_model)

                def decode() -> None:
                    s = state
                    for _ in range(steps):
                        _, s = m.step(x_t, s)

                rows.append(BenchRow(name, L, best_time(decode, 2) / steps, None, m.state_size_at(L)))
    return rows


def format_rows(rows: list[BenchRow], baseline: str) -> str:
    """Markdown table with each row's time as a ratio to the baseline row at that length."""
    base = {r.length: r for r in rows if r.name == baseline}
    lines = [
        f"| mixer | L | fwd s | fwd / {baseline} | fwd+bwd s | fwd+bwd / {baseline} | state floats | peak MB |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        b = base.get(r.length)
        rf = f"{r.forward_s / b.forward_s:.2f}" if b else "-"
        rb = f"{r.backward_s / b.backward_s:.2f}" if b and r.backward_s and b.backward_s else "-"
        bw = f"{r.backward_s:.4f}" if r.backward_s is not None else "-"
        lines.append(
            f"| {r.name} | {r.length} | {r.forward_s:.4f} | {rf} | {bw} | {rb} | "
            f"{r.state_size if r.state_size is not None else '-'} | "
            f"{f'{r.peak_mb:.0f}' if r.peak_mb is not None else '-'} |"
        )
    return "\n".join(lines)


def bench_generate(mixers: list[str], contexts: list[int], batch: int = 1, d_model: int = 512,
                   n_layers: int = 2, tokens: int = 32, vocab: int = 256) -> list[BenchRow]:
    """Seconds per token of ``CausalLM.stream`` (after the prefill) with prompts of each length:
    the decode loop users run, embedding, blocks, head and greedy pick included."""
    from ..models import BackboneConfig, CausalLM

    rows = []
    for name in mixers:
        torch.manual_seed(0)
        lm = CausalLM(BackboneConfig(d_model=d_model, n_layers=n_layers, mixer=name), vocab).eval()
        for L in contexts:
            ids = torch.randint(0, vocab, (batch, L))

            def decode() -> None:
                it = lm.stream(ids, tokens + 1)
                next(it)  # the prefill and the first token, not timed below
                decode.t0 = time.perf_counter()
                for _ in it:
                    pass
                decode.seconds = time.perf_counter() - decode.t0

            best = float("inf")
            for _ in range(3):
                decode()
                best = min(best, decode.seconds)
            state = sum(b.mixer.state_size_at(L) for b in lm.backbone.blocks)  # after the prompt
            rows.append(BenchRow(name, L, best / tokens, None, state))
    return rows
