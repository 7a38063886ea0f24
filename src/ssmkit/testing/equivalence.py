"""The equivalence checker behind ``ssmkit check`` and the registry-wide test.

For one registered mixer, in float64 on random input, it compares against the ``reference`` mode
(or the first mode when a family has none):
  mode:<m>          every other mode's output and final state
  step              token-by-token ``step`` from ``init_state``
  split:<m>         forward on a prefix, then on the rest with the carried state
  state:<m>         forward from a non-zero initial state vs stepping from it
  mask:<m>          a padded batch (pads left, middle and right) vs each row run unpadded
  grad:<m>          gradients of input, parameters and initial state vs the reference mode
  packed:<m>        one packed row of 3 documents (``cu_seqlens``) from per-document initial states vs
                    each document run alone: outputs, per-document final states (and one step
                    from each), gradients of input, parameters and initial states; for a mode in
                    the family's ``packed_modes`` also the native one-pass reset (no states in or
                    out) vs each document alone from zeros: outputs, input and parameter gradients
Each row is the max relative error (see ``ssmkit.testing.tolerances.rel_err``) and PASS/FAIL at ``tol``.

Every mode the class declares (``mixer.modes``) is checked: a mode that cannot run here is a FAIL
row that names the reason, never a silent omission. The one exception is written down in
``HARDWARE_MODES``: modes that by definition need hardware this machine may lack (none today).

Chunk boundaries. A chunked path is only tested where the input crosses its chunks. So each of the
mixer's chunk-length config fields (any int field whose name holds "chunk": ``chunk_size``,
``scan_chunk``; and the window / segment / block lengths the class names in ``block_fields``) is
lowered to ``crossing_chunk(L)``: the largest power of two C (capped at the
field's default) with at least 3 whole chunks and a remainder in L (L = 13: C = 4). Chunk lengths
that no config field reaches (the selective scan's 64-step chunks and its C++ kernel's 64-step
backward checkpoints, S4's 128 Krylov columns) are crossed by the second of ``DEFAULT_LENGTHS``,
389 = 3·128 + 5 = 6·64 + 5.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Iterable

import torch
from torch import Tensor

from .tolerances import rel_err
from ..layers import SequenceMixer, create_mixer, get_mixer_class, index_state
from ..layers.base import _leaves
from ..layers.state import map_state


# float64 relative error allowed by default: measured at most 6e-14 at the default lengths (s4
# gradients), 1.9e-13 at L = 1, 2, 7 (mamba2 gradients with chunk 1) and 3.8e-13 at L = 2048 (s4d
# gradients); 1e-11 leaves a margin of 25x at L = 2048 and > 150x at the defaults.
DEFAULT_TOL = 1e-11

# Lengths ``ssmkit check`` and the registry-wide test run: 13 crosses 3 chunks of 4 (with the chunk
# fields lowered) plus a remainder; 389 = 3·128 + 5 crosses the op-internal chunks (see the module doc).
DEFAULT_LENGTHS = (13, 389)

# Mode name -> the hardware it needs by definition; such a mode that cannot run is reported (n/a,
# with the reason), not failed. Only the Triton kernels: every other mode runs on a CPU (the C++
# scan needs only a compiler, which scripts/setup.sh's machines have), so an unavailable one is a
# FAIL. Under TRITON_INTERPRET=1 (the test suite on a CPU) the Triton modes run and are checked.
# A peer's mode (PEER_MODES) never runs float64, the dtype of these checks: testing/peers.py checks it.
HARDWARE_MODES: dict[str, str] = {
    "triton": "a CUDA GPU (or the Triton interpreter, TRITON_INTERPRET=1)",
    "fla": "flash-linear-attention, float32 and a GPU (ssmkit check --peers checks it in float32)",
    "fla_recurrent": "flash-linear-attention, float32 and a GPU or the interpreter (ssmkit check --peers checks it)",
}
PEER_MODES = ("fla", "fla_recurrent")


@dataclasses.dataclass
class CheckResult:
    mixer: str
    check: str
    error: float
    tol: float
    detail: str = ""
    setting: str = ""  # the length and the chunk fields the check ran with, e.g. "L=13 chunk_size=4"
    allowed: bool = False  # did not run, for the reason in ``detail``, which HARDWARE_MODES allows

    @property
    def passed(self) -> bool:
        return self.allowed or self.error <= self.tol  # NaN fails

    def __str__(self) -> str:
        status = "n/a " if self.allowed else "PASS" if self.passed else "FAIL"
        extra = f"  ({self.detail})" if self.detail else ""
        error = "-" if self.allowed else f"{self.error:.2e}"
        return f"{self.mixer:<18} {self.setting:<22} {self.check:<18} {error:>10}  {status}{extra}"


def crossing_chunk(length: int) -> int:
    """The largest power of two C with at least 3 whole chunks of C in ``length`` and a remainder
    (13 -> 4, 17 -> 4, 7 -> 2); without a remainder when none exists (16 -> 4); 1 below 3."""
    fits = [1 << k for k in range(length.bit_length()) if length // (1 << k) >= 3]
    with_rest = [c for c in fits if length % c]
    return max(with_rest or fits or [1])


def chunk_fields(name: str) -> dict[str, int]:
    """The chunk-length fields of mixer ``name``'s Config with their defaults: int fields whose name
    holds "chunk", and the window / segment / block lengths the class names in ``block_fields``."""
    cls = get_mixer_class(name)
    return {f.name: f.default for f in dataclasses.fields(cls.Config)
            if ("chunk" in f.name or f.name in cls.block_fields) and isinstance(f.default, int)}


def crossing_config(name: str, length: int) -> dict[str, int]:
    """Mixer ``name``'s chunk fields set so that ``length`` crosses at least 3 chunk boundaries with
    a remainder (never above a field's default: the default's own boundaries stay tested too)."""
    c = crossing_chunk(length)
    return {field: min(default, c) for field, default in chunk_fields(name).items()}


def _state_err(a: Any, b: Any) -> float:
    """Max relative error over the state's tensors; inf (a FAIL row) when the structures differ."""
    la, lb = list(_leaves(a)), list(_leaves(b))
    if len(la) != len(lb) or any(x.shape != y.shape for x, y in zip(la, lb)):
        return float("inf")
    return max((rel_err(x, y) for x, y in zip(la, lb)), default=0.0)


def _grown_err(a: Tensor, b: Tensor) -> float:
    """rel_err of two tensors of a growing state (a KV cache, an input history) that differ only in
    the length T of one dim: the shorter is zero-filled to the longer's T, after its slots
    (left-aligned caches) or before them (right-aligned histories), whichever matches better.
    A row's state in a batch differs from the row's own state by exactly such zeros
    (docs/architecture.md)."""
    if a.shape == b.shape:
        return rel_err(a, b)
    diff = [d for d in range(a.dim()) if a.shape[d] != b.shape[d]]
    if a.dim() != b.dim() or len(diff) != 1:
        return float("inf")
    d = diff[0]
    short, long_ = (a, b) if a.shape[d] < b.shape[d] else (b, a)
    zeros = short.new_zeros(*short.shape[:d], long_.shape[d] - short.shape[d], *short.shape[d + 1:])
    if long_ is a:
        return min(rel_err(long_, torch.cat([short, zeros], d)), rel_err(long_, torch.cat([zeros, short], d)))
    return min(rel_err(torch.cat([short, zeros], d), long_), rel_err(torch.cat([zeros, short], d), long_))


def _grads_err(actual: list[Tensor], expected: list[Tensor]) -> float:
    """Max over the gradient tensors of |actual - expected| relative to the tensor's largest entry,
    floored at 1e-3 of the largest entry of them all. A gradient far below the others is what is left
    when O(1) terms cancel, so its absolute error is their rounding: it is 0 in exact arithmetic for A
    of a selective scan over one-token documents (one step from the zero state never reads A), and
    eps-sized for the linear Transformer's q and k there (o = v q·k / (q·k + eps)); a per-tensor
    relative error would call that rounding 100% (measured: 1e-9 to 1). Below the floor the
    tolerance still holds at 1e-3 of the largest gradient's scale."""
    floor = 1e-3 * max((float(e.abs().max()) for e in expected if e.numel()), default=0.0)
    worst = 0.0
    for a, e in zip(actual, expected):
        if e.numel():
            worst = max(worst, float((a - e).abs().max()) / max(float(e.abs().max()), floor, 1e-300))
    return worst


def _packed_err(mixer: SequenceMixer, x: Tensor, mode: str, gen: torch.Generator) -> tuple[float, str]:
    """packed == separate for one row x (1, L, D) cut into up to 3 documents (see the module doc)."""
    L = x.shape[1]
    cuts = sorted(torch.randperm(L - 1, generator=gen)[: min(2, L - 1)].add(1).tolist())
    offsets = [0, *cuts, L]
    docs = [(a, b) for a, b in zip(offsets, offsets[1:])]
    n = len(docs)
    s0 = _random_state(mixer, x.new_zeros(n, 1, x.shape[2]), gen)
    w = torch.randn(x.shape, generator=gen, dtype=x.dtype)
    nxt = torch.randn(n, x.shape[2], generator=gen, dtype=x.dtype)
    cu = torch.tensor(offsets, dtype=torch.int32)
    growing = mixer._growing_state_dims()

    def native(packed: bool) -> tuple[Tensor, list[Tensor]]:
        xx = x.detach().requires_grad_(True)
        if packed:
            y = mixer(xx, cu_seqlens=cu, mode=mode)
        else:
            y = torch.cat([mixer(xx[:, a:b], mode=mode) for a, b in docs], 1)
        params = [p for p in mixer.parameters() if p.requires_grad]
        grads = torch.autograd.grad((y * w).sum(), [xx, *params], allow_unused=True)
        return y.detach(), [torch.zeros(()) if g is None else g for g in grads]

    def run(packed: bool):
        xx = x.detach().requires_grad_(True)
        s_in = map_state(lambda t: t.detach().requires_grad_(t.is_floating_point() or t.is_complex()), s0)
        mixer.zero_grad(set_to_none=True)
        if packed:
            y, final = mixer(xx, s_in, cu_seqlens=cu, return_state=True, mode=mode)
            finals = [index_state(final, slice(i, i + 1)) for i in range(n)]
        else:
            outs = [mixer(xx[:, a:b], index_state(s_in, slice(i, i + 1)), return_state=True, mode=mode)
                    for i, (a, b) in enumerate(docs)]
            y, finals = torch.cat([o[0] for o in outs], 1), [o[1] for o in outs]
        # A growing state (KV cache, input history) of a batch keeps slots past a shorter row's
        # tokens (zeros, their values compared above), so a gradient into those slots of the initial
        # state depends on the batch: only the fixed-size state tensors enter the loss.
        loss = (y * w).sum() + sum((t.real.sum() + (t.imag.sum() if t.is_complex() else 0))
                                   for f in finals for i, t in enumerate(_leaves(f))
                                   if t.requires_grad and i not in growing)
        leaves = [t for t in _leaves(s_in) if t.requires_grad]
        params = [p for p in mixer.parameters() if p.requires_grad]
        grads = torch.autograd.grad(loss, [xx, *leaves, *params], allow_unused=True)
        with torch.no_grad():  # one more token from each document's final state
            after = [mixer.step(nxt[i : i + 1], f)[0] for i, f in enumerate(finals)] if mixer.causal else []
        return y.detach(), finals, [torch.zeros(()) if g is None else g for g in grads], after

    y_p, f_p, g_p, a_p = run(True)
    y_s, f_s, g_s, a_s = run(False)
    errs = {
        "out": rel_err(y_p, y_s),
        "state": max(max((_grown_err(a, b) for a, b in zip(_leaves(fp), _leaves(fs))), default=0.0)
                     if len(_leaves(fp)) == len(_leaves(fs)) else float("inf") for fp, fs in zip(f_p, f_s)),
        "step": max((rel_err(a, b) for a, b in zip(a_p, a_s)), default=0.0),
        "grad": _grads_err(g_p, g_s),
    }
    if mode in mixer.packed_modes:
        (y_n, g_n), (y_1, g_1) = native(True), native(False)
        errs["native out"] = rel_err(y_n, y_1)
        errs["native grad"] = _grads_err(g_n, g_1)
    worst = max(errs, key=lambda k: errs[k])
    native_note = ", native reset" if mode in mixer.packed_modes else ""
    return errs[worst], f"documents {[b - a for a, b in docs]}{native_note}, worst: {worst}"


def _run_steps(mixer: SequenceMixer, x: Tensor, state: Any) -> tuple[Tensor, Any]:
    ys = []
    for t in range(x.shape[1]):
        y_t, state = mixer.step(x[:, t], state)
        ys.append(y_t)
    return torch.stack(ys, dim=1), state


def _random_state(mixer: SequenceMixer, x: Tensor, gen: torch.Generator) -> Any:
    """A reachable non-zero state: the state after a random prefix run with the reference mode."""
    prefix = torch.randn(x.shape[0], 5, x.shape[2], generator=gen, dtype=x.dtype)
    _, state = mixer(prefix, return_state=True, mode=_ref_mode(mixer))
    return state


def _ref_mode(mixer: SequenceMixer) -> str:
    return "reference" if "reference" in mixer.modes else mixer.modes[0]


def _perturb(mixer: SequenceMixer, gen: torch.Generator, scale: float) -> None:
    """Move parameters off their structured init so that zero-initialized pieces are exercised."""
    with torch.no_grad():
        for p in mixer.parameters():
            p.add_(scale * torch.randn(p.shape, generator=gen, dtype=p.dtype))


def _grads(mixer: SequenceMixer, x: Tensor, state: Any, mode: str, w: Tensor) -> list[Tensor]:
    x = x.detach().requires_grad_(True)
    # integer state fields (positions, lengths) carry no gradient
    state_in = map_state(lambda t: t.detach().requires_grad_(t.is_floating_point() or t.is_complex()), state)
    leaves = [t for t in _leaves(state_in) if t.requires_grad]
    mixer.zero_grad(set_to_none=True)
    y, final = mixer(x, state_in, return_state=True, mode=mode)
    loss = (y * w).sum() + sum((t.real.sum() + (t.imag.sum() if t.is_complex() else 0))
                               for t in _leaves(final) if t.requires_grad)
    params = [p for p in mixer.parameters() if p.requires_grad]
    grads = torch.autograd.grad(loss, [x, *leaves, *params], allow_unused=True)
    return [torch.zeros(()) if g is None else g for g in grads]


def check_mixer(
    name: str,
    d_model: int = 8,
    batch: int = 2,
    length: int = DEFAULT_LENGTHS[0],
    tol: float = DEFAULT_TOL,
    seed: int = 0,
    modes: Iterable[str] | None = None,
    perturb: float = 0.02,
    cross_chunks: bool = True,
    **cfg: Any,
) -> list[CheckResult]:
    """Run every equivalence check for mixer ``name`` in float64; returns one row per check.

    ``modes`` (default: every declared mode) are compared with the reference mode. With
    ``cross_chunks`` the chunk fields not given in ``cfg`` are set by ``crossing_config``.
    """
    if cross_chunks:
        cfg = crossing_config(name, length) | cfg
    setting = " ".join([f"L={length}", *(f"{k}={cfg[k]}" for k in chunk_fields(name) if k in cfg)])
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    mixer = create_mixer(name, d_model, **cfg).double().eval()
    if perturb:
        _perturb(mixer, gen, perturb)
    x = torch.randn(batch, length, d_model, generator=gen, dtype=torch.float64)
    ref = _ref_mode(mixer)
    results: list[CheckResult] = []

    def add(check: str, err: float, detail: str = "", allowed: bool = False) -> None:
        results.append(CheckResult(name, check, err, tol, detail, setting, allowed))

    runnable = []
    for m in mixer.modes if modes is None else modes:
        reason = mixer.mode_unavailable_reason(m, x)
        if reason is None:
            runnable.append(m)
        elif m in HARDWARE_MODES:
            add(f"mode:{m}", float("nan"), f"needs {HARDWARE_MODES[m]}: {reason}", allowed=True)
        else:
            add(f"mode:{m}", float("inf"), f"cannot run: {reason}")
    modes = runnable

    with torch.no_grad():
        y_ref, s_ref = mixer(x, return_state=True, mode=ref)
        for m in modes:
            if m == ref:  # the reference against itself cannot fail
                continue
            y, s = mixer(x, return_state=True, mode=m)
            add(f"mode:{m}", max(rel_err(y, y_ref), _state_err(s, s_ref)))
        if mixer.causal:
            y_s, s_s = _run_steps(mixer, x, mixer.init_state(batch, dtype=x.dtype))
            add("step", max(rel_err(y_s, y_ref), _state_err(s_s, s_ref)))
        k = int(torch.randint(1, length, (1,), generator=gen)) if length > 1 else 0
        s0 = _random_state(mixer, x, gen)
        y_s0, s_s0 = _run_steps(mixer, x, s0)
        # Padding on the left, in the middle and on the right of different rows.
        mask = torch.ones(batch, length + 4, dtype=torch.bool)
        mask[0, :2] = False
        mask[0, 7:9] = False
        mask[-1, -3:] = False
        mask[-1, 3] = False
        xp = torch.randn(batch, length + 4, d_model, generator=gen, dtype=x.dtype)
        for m in modes:
            if length > 1:  # a split needs two non-empty parts
                y1, s1 = mixer(x[:, :k], return_state=True, mode=m)
                y2, s2 = mixer(x[:, k:], s1, return_state=True, mode=m)
                err = max(rel_err(torch.cat([y1, y2], 1), y_ref), _state_err(s2, s_ref))
                add(f"split:{m}", err, f"at {k}")
            y, s = mixer(x, s0, return_state=True, mode=m)
            add(f"state:{m}", max(rel_err(y, y_s0), _state_err(s, s_s0)))
            y, s = mixer(xp, s0, mask=mask, return_state=True, mode=m)
            err = 0.0
            for b in range(batch):
                xb = xp[b : b + 1, mask[b]]
                yb, sb = mixer(xb, index_state(s0, slice(b, b + 1)), return_state=True, mode=m)
                err = max(err, rel_err(y[b : b + 1, mask[b]], yb), _state_err(index_state(s, slice(b, b + 1)), sb))
                err = max(err, y[b, ~mask[b]].abs().max().item() if (~mask[b]).any() else 0.0)
            add(f"mask:{m}", err)

    for m in modes:
        add(f"packed:{m}", *_packed_err(mixer, x[:1], m, gen))

    w = torch.randn(x.shape, generator=gen, dtype=x.dtype)
    g_ref = _grads(mixer, x, s0, ref, w)
    for m in modes:
        if m == ref:
            continue
        g = _grads(mixer, x, s0, m, w)
        add(f"grad:{m}", max(rel_err(a, b) for a, b in zip(g, g_ref)))
    return results
