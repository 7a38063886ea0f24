"""The equivalence checker behind ``ssmkit check`` and the registry-wide test.

For one registered mixer, in float64 on random input, it compares against the ``reference`` mode
(or the first mode when a family has none):
  mode:<m>          every mode's output and final state
  step              token-by-token ``step`` from ``init_state``
  split:<m>         forward on a prefix, then on the rest with the carried state
  state:<m>         forward from a non-zero initial state vs stepping from it
  mask:<m>          a padded batch (pads left, middle and right) vs each row run unpadded
  grad:<m>          gradients of input, parameters and initial state vs the reference mode
Each row is the max relative error (see ``ssmkit.testing.tolerances.rel_err``) and PASS/FAIL at ``tol``.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Iterable

import torch
from torch import Tensor

from .tolerances import rel_err
from ..layers import SequenceMixer, create_mixer, index_state
from ..layers.base import _leaves
from ..layers.state import map_state


@dataclasses.dataclass
class CheckResult:
    mixer: str
    check: str
    error: float
    tol: float
    detail: str = ""

    @property
    def passed(self) -> bool:
        return self.error <= self.tol  # NaN fails

    def __str__(self) -> str:
        status = "PASS" if self.passed else "FAIL"
        extra = f"  ({self.detail})" if self.detail else ""
        return f"{self.mixer:<18} {self.check:<22} {self.error:10.2e}  {status}{extra}"


def _state_err(a: Any, b: Any) -> float:
    """Max relative error over the state's tensors; inf (a FAIL row) when the structures differ."""
    la, lb = list(_leaves(a)), list(_leaves(b))
    if len(la) != len(lb) or any(x.shape != y.shape for x, y in zip(la, lb)):
        return float("inf")
    return max((rel_err(x, y) for x, y in zip(la, lb)), default=0.0)


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
    length: int = 13,
    tol: float = 1e-9,
    seed: int = 0,
    modes: Iterable[str] | None = None,
    perturb: float = 0.02,
    **cfg: Any,
) -> list[CheckResult]:
    """Run every equivalence check for mixer ``name`` in float64; returns one row per check."""
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    mixer = create_mixer(name, d_model, **cfg).double().eval()
    if perturb:
        _perturb(mixer, gen, perturb)
    x = torch.randn(batch, length, d_model, generator=gen, dtype=torch.float64)
    ref = _ref_mode(mixer)
    modes = list(modes) if modes is not None else mixer.available_modes(x)
    results: list[CheckResult] = []

    def add(check: str, err: float, detail: str = "") -> None:
        results.append(CheckResult(name, check, err, tol, detail))

    with torch.no_grad():
        y_ref, s_ref = mixer(x, return_state=True, mode=ref)
        for m in modes:
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

    w = torch.randn(x.shape, generator=gen, dtype=x.dtype)
    g_ref = _grads(mixer, x, s0, ref, w)
    for m in modes:
        if m == ref:
            continue
        g = _grads(mixer, x, s0, m, w)
        add(f"grad:{m}", max(rel_err(a, b) for a, b in zip(g, g_ref)))
    return results
