"""Speed, memory and state size of mixers vs sequence length, measured side by side in one run.

- ``bench_lti``: the LTI families beside a bare FFT convolution of the same shape (their floor);
- ``bench_mixers``: any mixers beside causal softmax attention, with the crossover length;
- ``bench_decode``: the cost of one generated token after contexts of growing length.
Read the ratios between rows of one run (see ``timing``), not absolute seconds. Before a row runs,
its memory (and, after its first length, its time) is predicted (``measure.CellPredictor``); a row
that would not fit ``Limits`` is recorded as skipped with the reason, so a suite never takes the
machine down. ``rows_json`` is what the ``ssmkit bench`` command writes beside each table.
"""
from __future__ import annotations

import dataclasses
import gc
from typing import Any, Callable

import torch

from ..layers import create_mixer, sized_for
from .measure import PROBE_LENGTHS, CellPredictor, machine, mb, skip_reason
from .projections import projection_fns, time_projections
from .timing import best_time, peak_rss_mb


@dataclasses.dataclass
class BenchRow:
    name: str
    length: int
    forward_s: float | None  # None: skipped
    backward_s: float | None  # forward + backward
    state_size: int | None = None
    peak_mb: float | None = None
    predicted_mb: float | None = None  # predicted before measuring (measure.CellPredictor)
    skipped: str | None = None  # why the row was not measured
    # The row's matmul floor (benchmarks/projections.py): its projections alone, same shape, same run.
    proj_forward_s: float | None = None
    proj_backward_s: float | None = None  # forward + backward of the projections
    projections: str | None = None  # what was counted ("none": the mixer has no projection)

    @property
    def forward_over_projections(self) -> float | None:
        return _ratio(self.forward_s, self.proj_forward_s)

    @property
    def backward_over_projections(self) -> float | None:
        return _ratio(self.backward_s, self.proj_backward_s)

    @property
    def backward_over_forward(self) -> float | None:
        return _ratio(self.backward_s, self.forward_s)


def _ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


@dataclasses.dataclass
class Limits:
    """What one benchmark row may use: ``memory_mb`` (None: half of the available memory, see
    ``measure.fits``) and ``seconds`` for the row's predicted time (its forward + backward, or its
    forward alone when only that is measured)."""

    memory_mb: float | None = None
    seconds: float | None = 600.0

    @property
    def memory_bytes(self) -> float | None:
        return None if self.memory_mb is None else self.memory_mb * 2**20


def bare_fft_conv(u: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """The floor for an LTI layer: causal conv of u (B, H, L) with k (H, L) by rfft/irfft."""
    n = 2 * u.shape[-1]
    return torch.fft.irfft(torch.fft.rfft(u, n=n) * torch.fft.rfft(k, n=n), n=n)[..., : u.shape[-1]]


class _MixerRows:
    """One mixer at growing lengths: built once, sized for the longest length asked (hyena's
    max_len), each length's memory and time predicted before it runs (``measure.CellPredictor``)."""

    def __init__(self, name: str, lengths: list[int], batch: int, d_model: int, **cfg: Any) -> None:
        torch.manual_seed(0)
        self.name, self.batch, self.d_model, self.longest = name, batch, d_model, max(lengths)
        self.mixer = create_mixer(name, d_model, **sized_for(name, max(lengths), **cfg))
        params = {p.untyped_storage().data_ptr() for p in self.mixer.parameters()}

        def build(L: int):
            x = torch.randn(batch, L, d_model, requires_grad=True)
            return lambda: self.mixer(x)

        grows = self.mixer.state_size_at(2 * PROBE_LENGTHS[-1]) > self.mixer.state_size_at(PROBE_LENGTHS[-1])
        self.predict = CellPredictor(build, grows, params)

    def row(self, L: int, backward: bool, repeats: int, limits: Limits, projections: bool = False) -> BenchRow:
        """One length; with ``projections`` the mixer's projections alone are timed too (its floor)."""
        predicted = self.predict.bytes(L, backward) / 2**20
        state = self.mixer.state_size_at(L)
        reason = self.predict.skip(f"{self.name} at L = {L}", L, backward, limits.seconds, limits.memory_bytes)
        if reason is not None:
            return BenchRow(self.name, L, None, None, state, None, predicted, reason)
        gc.collect()
        x = torch.randn(self.batch, L, self.d_model)
        with torch.no_grad():
            fwd = best_time(lambda: self.mixer(x), repeats)
            peak = peak_rss_mb(lambda: self.mixer(x))
        xg = x.clone().requires_grad_(True)
        bwd = best_time(lambda: self.mixer(xg).sum().backward(), repeats) if backward else None
        self.predict.measured(L, bwd if backward else fwd)
        if L < self.longest:  # what autograd keeps at this length predicts the longer ones
            self.predict.calibrate(L)
        row = BenchRow(self.name, L, fwd, bwd, state, peak, predicted)
        if projections:
            names = [n for n, _, _ in projection_fns(self.mixer)]
            row.projections = ", ".join(names) if names else "none"
            row.proj_forward_s, row.proj_backward_s = time_projections(self.mixer, self.batch, L, repeats, backward)
        return row


def bench_lti(
    mixers: list[str], lengths: list[int], batch: int = 2, d_model: int = 512, d_state: int = 64,
    backward: bool = True, repeats: int = 3, limits: Limits | None = None,
) -> list[BenchRow]:
    limits = limits or Limits()
    rows: list[BenchRow] = []
    runners = [_MixerRows(n, lengths, batch, d_model, d_state=d_state) for n in mixers]
    for L in lengths:
        u, k = torch.randn(batch, d_model, L), torch.randn(d_model, L)
        fwd = best_time(lambda: bare_fft_conv(u, k), repeats)
        ug, kg = u.clone().requires_grad_(True), k.clone().requires_grad_(True)
        bwd = best_time(lambda: bare_fft_conv(ug, kg).sum().backward(), repeats) if backward else None
        rows.append(BenchRow("fft_conv (bare)", L, fwd, bwd, None, peak_rss_mb(lambda: bare_fft_conv(u, k))))
        rows += [r.row(L, backward, repeats, limits) for r in runners]
    return rows


def bench_mixers(
    mixers: list[str], lengths: list[int], batch: int = 2, d_model: int = 512, baseline: str = "attention",
    backward: bool = True, repeats: int = 1, limits: Limits | None = None,
    on_row: Callable[[BenchRow], object] | None = None, projections: bool = True,
) -> list[BenchRow]:
    """Every mixer's default (auto) mode at each length, the baseline first in each group; a row
    predicted not to fit ``limits`` is recorded as skipped with the reason. With ``projections``
    each measured row also times the mixer's projections alone (its matmul floor, same input shape,
    right after the row: ``benchmarks/projections.py``)."""
    limits = limits or Limits()
    names = [baseline] + [m for m in mixers if m != baseline]
    runners = [_MixerRows(n, lengths, batch, d_model) for n in names]
    rows = []
    for L in lengths:
        for r in runners:
            rows.append(r.row(L, backward, repeats, limits, projections))
            if on_row is not None:
                on_row(rows[-1])
    return rows


def crossover(rows: list[BenchRow], name: str, baseline: str, backward: bool = True) -> int | None:
    """The shortest measured length from which ``name`` is faster than ``baseline`` at every longer length."""
    def t(r: BenchRow) -> float | None:
        return r.backward_s if backward else r.forward_s  # None when skipped

    times = {(r.name, r.length): t(r) for r in rows}
    lengths = sorted({r.length for r in rows})
    faster = [times.get((name, L)) is not None and times.get((baseline, L)) is not None
              and times[(name, L)] < times[(baseline, L)] for L in lengths]
    for i, L in enumerate(lengths):
        if all(faster[i:]):
            return L
    return None


def bench_decode(mixers: list[str], contexts: list[int], batch: int = 1, d_model: int = 512,
                 steps: int = 16, limits: Limits | None = None) -> list[BenchRow]:
    """Seconds per generated token (``step``) after a prefill of each context length; a prefill
    predicted not to fit ``limits`` (memory of its forward) is recorded as skipped."""
    limits = limits or Limits()
    rows = []
    for name in mixers:
        runner = _MixerRows(name, contexts, batch, d_model)
        m = runner.mixer.eval()
        for L in contexts:
            predicted = runner.predict.bytes(L, backward=False)
            reason = skip_reason(f"{name} prefill at L = {L}", predicted, None, None, limits.memory_bytes)
            if reason is not None:
                rows.append(BenchRow(name, L, None, None, m.state_size_at(L), None, predicted / 2**20, reason))
                continue
            with torch.no_grad():
                _, state = m(torch.randn(batch, L, d_model), return_state=True)
                x_t = torch.randn(batch, d_model)

                def decode() -> None:
                    s = state
                    for _ in range(steps):
                        _, s = m.step(x_t, s)

                rows.append(BenchRow(name, L, best_time(decode, 2) / steps, None, m.state_size_at(L),
                                     None, predicted / 2**20))
    return rows


def _num(v: float | None, fmt: str) -> str:
    return "-" if v is None else mb(v * 2**20) if fmt == "MB" else format(v, fmt)


def format_rows(rows: list[BenchRow], baseline: str, projections: bool = False) -> str:
    """Markdown table with each row's time as a ratio to the baseline row at that length, the
    memory predicted before the row ran beside the peak measured, and skipped rows with the reason.
    With ``projections``: the projections' forward seconds (the row's matmul floor), the row's
    forward and forward + backward over its projections' (same pass), and forward + backward over
    forward; a mixer without projections says so in the note."""
    base = {r.length: r for r in rows if r.name == baseline}
    proj_head = "proj fwd s | fwd / proj | fwd+bwd / proj | fwd+bwd / fwd | " if projections else ""
    lines = [
        f"| mixer | L | fwd s | fwd / {baseline} | fwd+bwd s | fwd+bwd / {baseline} | {proj_head}state floats | "
        "peak MB (fwd) | predicted MB | note |",
        "|---|---|---|---|---|---|---|---|---|---|" + ("---|" * 4 if projections else ""),
    ]
    for r in rows:
        b = base.get(r.length)
        rf = r.forward_s / b.forward_s if b and r.forward_s and b.forward_s else None
        rb = r.backward_s / b.backward_s if b and r.backward_s and b.backward_s else None
        notes = [f"skipped: {r.skipped}"] if r.skipped else []
        proj = ""
        if projections:
            proj = (f"{_num(r.proj_forward_s, '.4f')} | {_num(r.forward_over_projections, '.2f')} | "
                    f"{_num(r.backward_over_projections, '.2f')} | {_num(r.backward_over_forward, '.2f')} | ")
            if r.projections == "none":
                notes.append("no projections (no nn.Linear)")
        lines.append(
            f"| {r.name} | {r.length} | {_num(r.forward_s, '.4f')} | {_num(rf, '.2f')} | "
            f"{_num(r.backward_s, '.4f')} | {_num(rb, '.2f')} | {proj}{_num(r.state_size, 'd')} | "
            f"{_num(r.peak_mb, '.0f')} | {_num(r.predicted_mb, 'MB')} | {'; '.join(notes)} |"
        )
    return "\n".join(lines)


def rows_json(rows: list[Any], **meta: Any) -> dict[str, Any]:
    """A suite's rows (dataclasses) with the machine and the settings, as written beside its table;
    a ``BenchRow`` with a projection time also carries its ratios (``fwd_over_proj``, ...)."""
    def row(r: Any) -> dict[str, Any]:
        d = dataclasses.asdict(r)
        if isinstance(r, BenchRow) and r.projections is not None:
            d.update(fwd_over_proj=r.forward_over_projections, fwd_bwd_over_proj=r.backward_over_projections,
                     fwd_bwd_over_fwd=r.backward_over_forward)
        return d

    return {"machine": machine(), **meta, "rows": [row(r) for r in rows]}
