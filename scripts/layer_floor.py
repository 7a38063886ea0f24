"""One mixer's forward and forward + backward beside its projections alone (its matmul floor), in
CPU seconds of the calling thread (``time.thread_time``: what other processes on a loaded machine
move least; run with OMP_NUM_THREADS=1), best of REPEATS after a warm-up call, allocator tuned as
``ssmkit bench`` does (docs/performance.md, issue 19):

    OMP_NUM_THREADS=1 PYTHONPATH=src python scripts/layer_floor.py MIXER L B D REPEATS [LABEL]

Run it once per checkout (PYTHONPATH of each) to compare two versions in one session.
"""
import sys
import time

import torch

import ssmkit
from ssmkit.benchmarks.projections import time_projections
from ssmkit.benchmarks.timing import best_time
from ssmkit.runtime import tune_allocator

tune_allocator()
name, L, B, D, reps = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
label = sys.argv[6] if len(sys.argv) > 6 else ""
torch.manual_seed(0)
m = ssmkit.create_mixer(name, D)
x = torch.randn(B, L, D)
xg = x.clone().requires_grad_()


def best(f) -> float:
    return best_time(f, reps, time.thread_time)


def forward() -> None:
    with torch.no_grad():
        m(x)


f = best(forward)
b = best(lambda: m(xg).sum().backward())
p, q = time_projections(m, B, L, reps, clock=time.thread_time)
print(f"{label} {name} L={L} B={B} D={D}: fwd {f:.4f} fwd+bwd {b:.4f} proj {p:.4f} proj fwd+bwd {q:.4f} | "
      f"fwd/proj {f / p:.2f} fwd+bwd/proj fwd+bwd {b / q:.2f} fwd+bwd/fwd {b / f:.2f}")
