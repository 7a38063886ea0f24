"""What ``ssmkit compare`` measures on a trained model and on bare mixers, beside accuracy.

On the trained model and one training batch (B x L tokens):

- train tokens/s: forward + loss + backward, best of 3 after a warm-up call (no optimizer step);
- inference tokens/s: the forward alone under ``no_grad`` in eval mode, best of 3;
- activation memory: bytes of the tensors saved for backward by one training forward (each
  storage once, parameters excluded), through ``torch.autograd.graph.saved_tensors_hooks``:
  exact and the same on every device, it is what the architecture adds to training memory;
- peak memory: CUDA: the most allocated during one training step; CPU: parameters + gradients +
  activation memory (the resident set cannot show it: a warm allocator reuses freed pages);
- state size: floats of recurrent state per sequence after L tokens, summed over the layers
  (``state_size_at(L)``: attention's KV cache grows with L, a recurrent state does not).

Beyond the training length (``evaluate_lengths``) the trained model is scored on the test split
of the same task built at each longer length; the bare mixers are timed at a paper width
(``speed_curve``). Neither may take the machine down: before each length the memory of one row
is predicted from the bytes saved for backward at three short lengths (exact for an operator
whose memory is a polynomial of degree <= 2 in L, and an upper bound of an inference forward),
and the time from the last measured length (linear for a constant-size state, quadratic for a
growing one). A length predicted to need more than half the available memory, or more than the
time budget, is skipped and recorded with that reason.
"""
from __future__ import annotations

import os
import platform
import time
from typing import Any, Callable

import torch

from ..layers import create_mixer, sized_for
from ..runtime import available_memory
from ..tasks import Task, create_task
from ..tasks.length import at_length
from ..training import evaluate
from .timing import best_time

MEMORY_FRACTION = 0.5  # of the available memory a predicted evaluation or timing may use
PROBE_LENGTHS = (64, 128, 256)


def state_floats(model: torch.nn.Module, length: int) -> int:
    """Floats of recurrent state per sequence after ``length`` tokens, summed over the layers."""
    return sum(block.mixer.state_size_at(length) for block in model.backbone.blocks)


def saved_bytes(fn: Callable[[], object], exclude: set[int] = frozenset()) -> int:
    """Bytes of the tensors autograd saves for backward while ``fn`` runs, each storage counted once
    (storages whose data_ptr is in ``exclude``, e.g. the parameters, are not counted)."""
    storages: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        st = t.untyped_storage()
        if st.data_ptr() not in exclude:
            storages[st.data_ptr()] = st.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        fn()
    return sum(storages.values())


def measure_speed(task: Task, model: torch.nn.Module, batch_size: int, repeats: int = 3) -> dict[str, Any]:
    """Train and inference tokens/s, activation and peak memory of ``model`` on one training batch
    (see the module docstring)."""
    device = next(model.parameters()).device
    batch = next(iter(task.batches("train", batch_size, seed=0))).to(device)
    tokens = batch.inputs.shape[0] * batch.inputs.shape[1]
    was_training = model.training

    def train_step() -> None:
        model.zero_grad(set_to_none=True)
        task.loss(model(batch.inputs, **batch.model_kwargs()), batch).backward()

    def forward() -> None:
        with torch.no_grad():
            model(batch.inputs, **batch.model_kwargs())

    model.train()
    params = list(model.parameters())
    param_bytes = sum(p.numel() * p.element_size() for p in params)
    activation = saved_bytes(lambda: task.loss(model(batch.inputs, **batch.model_kwargs()), batch),
                             exclude={p.untyped_storage().data_ptr() for p in params})
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        train_step()
        torch.cuda.synchronize(device)
        peak, kind = torch.cuda.max_memory_allocated(device), "cuda: max allocated in one training step"
    else:
        peak, kind = 2 * param_bytes + activation, "cpu: parameters + gradients + activations"

    def timed(fn: Callable[[], None]) -> float:
        if device.type != "cuda":
            return best_time(fn, repeats)

        def synced() -> None:
            fn()
            torch.cuda.synchronize(device)

        return best_time(synced, repeats)

    train_s = timed(train_step)
    model.eval()
    infer_s = timed(forward)
    model.zero_grad(set_to_none=True)
    model.train(was_training)
    return {"train_tokens_per_s": tokens / train_s, "inference_tokens_per_s": tokens / infer_s,
            "activation_mb": activation / 2**20, "peak_memory_mb": peak / 2**20, "peak_memory_kind": kind,
            "measured_batch": [batch_size, batch.inputs.shape[1]]}


def available_bytes() -> int | None:
    """Memory the CPU can still give (``ssmkit.runtime.available_memory``); None where unknown."""
    return available_memory(torch.device("cpu"))


def quadratic_fit(points: list[tuple[int, float]]) -> Callable[[int], float]:
    """The polynomial of degree <= 2 through three (L, bytes) points, as a function of L (>= 0)."""
    (x0, y0), (x1, y1), (x2, y2) = points

    def f(x: int) -> float:
        return max(0.0, y0 * (x - x1) * (x - x2) / ((x0 - x1) * (x0 - x2))
                   + y1 * (x - x0) * (x - x2) / ((x1 - x0) * (x1 - x2))
                   + y2 * (x - x0) * (x - x1) / ((x2 - x0) * (x2 - x1)))

    return f


def row_bytes(forward: Callable[[int], Callable[[], object]], exclude: set[int]) -> Callable[[int], float]:
    """Predicted bytes of one row at length L: ``forward(L)`` builds a training forward of one row,
    whose saved tensors are measured at ``PROBE_LENGTHS`` and fitted (``fit_bytes``)."""
    return fit_bytes([(L, float(saved_bytes(forward(L), exclude))) for L in PROBE_LENGTHS])


def fit_bytes(points: list[tuple[int, float]]) -> Callable[[int], float]:
    """The quadratic through the three longest (L, bytes) points (module doc). A fit that bends
    down (concave: padding to powers of two, fixed buffers) is not trusted beyond them: the
    prediction is at least the straight line through the two longest."""
    points = sorted(points)[-3:]
    fit = quadratic_fit(points)
    (x1, y1), (x2, y2) = points[-2:]
    return lambda L: max(fit(L), y2 + (y2 - y1) * (L - x2) / (x2 - x1))


def mb(n: float) -> str:
    """n bytes as MB for a table or a message: no decimals from 10 MB on, 3 significant digits below."""
    v = n / 2**20
    return f"{v:,.0f}" if v >= 10 else f"{v:.3g}"


def fits(predicted: float, what: str, limit: float | None = None) -> str | None:
    """None when ``predicted`` bytes fit in ``MEMORY_FRACTION`` of the available memory (and under
    ``limit`` bytes when given), else why not."""
    avail = available_bytes()
    if avail is not None and predicted > MEMORY_FRACTION * avail:
        return (f"predicted {mb(predicted)} MB for {what} > {MEMORY_FRACTION:.0%} of the "
                f"{mb(avail)} MB available")
    if limit is not None and predicted > limit:
        return f"predicted {mb(predicted)} MB for {what} > the {mb(limit)} MB limit"
    return None


def skip_reason(what: str, predicted_bytes: float, predicted_s: float | None, budget_s: float | None,
                limit: float | None = None) -> str | None:
    """Why one measurement (``what``) must not run: predicted memory that does not fit (``fits``) or
    predicted seconds over ``budget_s``; None when it may run."""
    reason = fits(predicted_bytes, what, limit)
    if reason is None and None not in (predicted_s, budget_s) and predicted_s > budget_s:
        reason = f"predicted {predicted_s:,.0f} s for {what} > the {budget_s:g} s budget"
    return reason


class CellPredictor:
    """Memory and time predictions of one benchmark row (a mixer or an op at growing lengths).

    Memory: the bytes saved for backward by ``build(L)`` (a training call at length L), fitted at
    ``PROBE_LENGTHS`` and at the lengths ``calibrate`` measured (``fit_bytes``); forward + backward is predicted as ``BACKWARD_FACTOR`` times
    that (the gradients mirror the saved activations, plus transients) and a forward alone as the
    saved bytes (an upper bound: without autograd nothing is kept). Time: from the last measured
    length of the same row (``predicted_seconds``), None before the first."""

    BACKWARD_FACTOR = 2.0

    def __init__(self, build: Callable[[int], Callable[[], object]], grows: bool,
                 exclude: set[int] = frozenset()) -> None:
        self.build, self.exclude = build, exclude
        self.points = [(L, float(saved_bytes(build(L), exclude))) for L in PROBE_LENGTHS]
        self.saved = fit_bytes(self.points)
        self.grows = grows
        self.last: tuple[int, float] | None = None  # (length, seconds) last measured

    def calibrate(self, length: int) -> None:
        """Measure the saved bytes at ``length`` (a row that ran there) and refit on the longest
        points: the short probes can sit below a family's chunk, where its memory still grows
        quadratically (mLSTM's (T, T) chunks), and a quadratic from them overshoots 10-100x."""
        self.points.append((length, float(saved_bytes(self.build(length), self.exclude))))
        self.saved = fit_bytes(self.points)

    def bytes(self, length: int, backward: bool) -> float:
        return (self.BACKWARD_FACTOR if backward else 1.0) * self.saved(length)

    def seconds(self, length: int) -> float | None:
        return predicted_seconds(self.last, length, self.grows)

    def skip(self, what: str, length: int, backward: bool, budget_s: float | None,
             limit: float | None = None) -> str | None:
        return skip_reason(what, self.bytes(length, backward), self.seconds(length), budget_s, limit)

    def measured(self, length: int, seconds: float) -> None:
        self.last = (length, seconds)


def _grows(state_at: Callable[[int], int]) -> bool:
    """Whether a state grows with the length (a KV cache): its cost per token then grows too."""
    return state_at(2 * PROBE_LENGTHS[-1]) > state_at(PROBE_LENGTHS[-1])


def predicted_seconds(last: tuple[int, float] | None, length: int, grows: bool) -> float | None:
    """Time at ``length`` from the last measured (length, seconds): x (L'/L)^2 if the state grows, else x L'/L."""
    if last is None:
        return None
    L, t = last
    return t * (length / L) ** (2 if grows else 1)


def evaluate_lengths(model: torch.nn.Module, run: Any, lengths: list[int], batch_size: int, budget_s: float,
                     log: Callable[[str], None] = print) -> list[dict[str, Any]]:
    """The test metrics of a trained ``model`` on ``run``'s task rebuilt at each of ``lengths`` (each
    longer than the training length), or the reason a length was skipped (module doc)."""
    if not lengths:
        return []
    device = next(model.parameters()).device
    params = {p.untyped_storage().data_ptr() for p in model.parameters()}

    def forward(L: int) -> Callable[[], object]:
        task = create_task(run.task, **at_length(run.task, run.task_cfg, L))
        batch = next(iter(task.batches("test", 1))).to(device)
        return lambda: model(batch.inputs, **batch.model_kwargs())

    per_row = row_bytes(forward, params)
    grows = _grows(lambda L: state_floats(model, L))
    out, last = [], None  # last: (length, seconds per test example)
    for L in lengths:
        task = create_task(run.task, **at_length(run.task, run.task_cfg, L))
        n = max(1, task.info.sizes.get("test", 0))
        rows = min(batch_size, n)
        while rows > 1 and fits(rows * per_row(L), f"{rows} rows of {L} tokens"):
            rows //= 2
        reason = fits(per_row(L), f"one row of {L} tokens")
        per_example = predicted_seconds(last, L, grows)
        guess = None if per_example is None else per_example * n
        if reason is None and guess is not None and guess > budget_s:
            reason = f"predicted {guess:.0f} s for the test split at L = {L} > the {budget_s:g} s budget (--eval-seconds)"
        if reason is not None:
            log(f"   eval at L = {L}: skipped ({reason})")
            out.append({"length": L, "skipped": reason})
            continue
        t0 = time.perf_counter()
        metrics = evaluate(task, model, "test", rows)
        seconds = time.perf_counter() - t0
        last = (L, seconds / n)
        log(f"   eval at L = {L}: " + ", ".join(f"{k} {v:.4f}" for k, v in metrics.items()) + f" ({seconds:.1f} s)")
        out.append({"length": L, "metrics": metrics, "seconds": seconds, "batch": rows,
                    "state_floats": state_floats(model, L)})
    return out


def speed_curve(name: str, lengths: list[int], d_model: int, batch: int = 1, budget_s: float = 30.0,
                log: Callable[[str], None] = print) -> list[dict[str, Any]]:
    """Forward seconds (inference: best of 3, of 1 above a predicted second), activation memory (MB saved for backward) and state
    floats of the bare mixer ``name`` at width ``d_model`` at each length; lengths predicted not to
    fit the memory or the time budget are recorded as skipped with the reason."""
    torch.manual_seed(0)
    mixer = create_mixer(name, d_model, **sized_for(name, max(lengths)))
    params = {p.untyped_storage().data_ptr() for p in mixer.parameters()}

    def forward(L: int) -> Callable[[], object]:
        x = torch.randn(batch, L, d_model, requires_grad=True)
        return lambda: mixer(x)

    per_call = row_bytes(forward, params)
    grows = _grows(mixer.state_size_at)
    rows, last = [], None
    for L in sorted(lengths):
        guess = predicted_seconds(last, L, grows)
        reason = skip_reason(f"{name} at L = {L}", per_call(L), guess, budget_s)
        if reason is not None:
            log(f"   {name} L = {L}: skipped ({reason})")
            rows.append({"length": L, "skipped": reason, "state_floats": mixer.state_size_at(L),
                         "predicted_mb": per_call(L) / 2**20})
            continue
        x = torch.randn(batch, L, d_model)
        with torch.no_grad():  # best of 3 where a call is short, so one slow call (other load) does not count
            seconds = best_time(lambda: mixer(x), 3 if guess is None or guess < 1.0 else 1)
        last = (L, seconds)
        activation = saved_bytes(forward(L), params) / 2**20
        log(f"   {name} L = {L}: forward {seconds:.3f} s, {activation:.0f} MB saved for backward")
        rows.append({"length": L, "forward_s": seconds, "activation_mb": activation,
                     "state_floats": mixer.state_size_at(L)})
    return rows


def machine() -> dict[str, Any]:
    """Where the measurements ran."""
    return {"platform": platform.platform(), "processor": platform.machine(), "cpu_count": os.cpu_count(),
            "torch_threads": torch.get_num_threads(),
            "cuda": torch.cuda.get_device_name() if torch.cuda.is_available() else None}
