"""torch.compile's speed-up of training steps (``ssmkit bench --suite compile``; docs/compile.md).

One training step of a small ``CausalLM`` per mixer (embedding -> ``n_layers`` blocks -> tied head,
cross-entropy, backward, AdamW update), eager beside ``torch.compile(backend="inductor")`` of the
forward and loss (autograd then runs the compiled backward), timed side by side in one run after the
compiled step has been built (the build time is reported on its own). Each row also checks that the
first compiled loss equals the eager loss of the same weights and batch.
"""
from __future__ import annotations

import copy
import dataclasses
import time

import torch
import torch.nn.functional as F

from ..models import BackboneConfig, CausalLM
from .timing import best_time

VOCAB = 256


@dataclasses.dataclass
class CompileRow:
    name: str
    length: int
    eager_s: float  # one training step
    compiled_s: float
    build_s: float  # the first compiled step: tracing and code generation
    loss_err: float  # |compiled - eager| first loss, relative

    @property
    def speedup(self) -> float:
        return self.eager_s / self.compiled_s


def _step_fn(model: CausalLM, loss_fn, ids: torch.Tensor):
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)

    def step() -> float:
        opt.zero_grad(set_to_none=True)
        loss = loss_fn(ids)
        loss.backward()
        opt.step()
        return float(loss.detach())

    return step


def bench_compile(mixers: list[str], lengths: list[int], batch: int = 8, d_model: int = 128, n_layers: int = 2,
                  backend: str = "inductor", repeats: int = 3) -> list[CompileRow]:
    rows = []
    for name in mixers:
        for L in lengths:
            torch.manual_seed(0)
            eager = CausalLM(BackboneConfig(d_model=d_model, n_layers=n_layers, mixer=name), VOCAB)
            compiled = copy.deepcopy(eager)
            ids = torch.randint(0, VOCAB, (batch, L + 1))

            def loss_of(model):
                return lambda ids: F.cross_entropy(model(ids[:, :-1]).flatten(0, 1), ids[:, 1:].flatten())

            torch._dynamo.reset()
            compiled_loss = torch.compile(loss_of(compiled), backend=backend)
            with torch.no_grad():
                first_eager = float(loss_of(eager)(ids))
            step_c = _step_fn(compiled, compiled_loss, ids)
            t0 = time.perf_counter()
            first_compiled = step_c()
            build = time.perf_counter() - t0
            step_e = _step_fn(eager, loss_of(eager), ids)
            err = abs(first_compiled - first_eager) / abs(first_eager)
            e, c = best_time(step_e, repeats), best_time(step_c, repeats)
            rows.append(CompileRow(name, L, e, c, build, err))
    return rows


def format_rows(rows: list[CompileRow]) -> str:
    out = ["| mixer | L | eager step ms | compiled step ms | speed-up | first compile s | loss rel. err |",
           "|---|---|---|---|---|---|---|"]
    for r in rows:
        out.append(f"| {r.name} | {r.length} | {1e3 * r.eager_s:.1f} | {1e3 * r.compiled_s:.1f} | "
                   f"{r.speedup:.2f}x | {r.build_s:.1f} | {r.loss_err:.1e} |")
    return "\n".join(out)
