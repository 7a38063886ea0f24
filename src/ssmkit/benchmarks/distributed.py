"""Memory per process of one training step on one long sequence: one process, or R under torchrun with
the sequence split over them (context parallelism), with or without activation checkpointing.

    python -m ssmkit.benchmarks.distributed --length 65536
    torchrun --standalone --nproc_per_node 4 -m ssmkit.benchmarks.distributed --length 65536

Each process builds the same causal LM (seeded), takes its chunk of a random token sequence
(B = 1), and runs forward + loss + backward once after a warm-up step at 256 tokens (library
start-up is not counted). One length per run: a process that has run a longer step keeps its freed
pages, and the resident set would no longer show the next step's needs. Rank 0 prints one JSON line:

- ``saved_mb``: the largest over the ranks of the bytes autograd saves for backward (each storage once,
  ``measure.saved_bytes``): exact, what the sequence adds to training memory;
- ``peak_rss_mb``: the largest over the ranks of the rise of the process's peak resident set
  (VmHWM, reset before the step through /proc/self/clear_refs) above the resident set before it;
  what the operating system had to provide, temporaries included;
- ``seconds``: the step's wall time on the slowest rank (the processes share this machine's cores).
"""
from __future__ import annotations

import argparse
import json
import os
import time

import torch
import torch.distributed as dist
import torch.nn.functional as F

from ..models import BackboneConfig
from ..models.lm import CausalLM
from ..training import context_parallel as cp
from ..training.loop import checkpoint_blocks
from .measure import saved_bytes


def _rss_kb(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"/proc/self/status has no {field}")


def _reset_peak() -> None:
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # resets VmHWM to the current resident set


def step_memory(model: CausalLM, ids: torch.Tensor) -> tuple[float, float, float]:
    """(saved MB, peak RSS rise MB, seconds) of one forward + loss + backward on ``ids`` (B, L)."""
    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    _reset_peak()
    before = _rss_kb("VmRSS")
    start = time.perf_counter()
    out: list[torch.Tensor] = []
    saved = saved_bytes(lambda: out.append(F.cross_entropy(model(ids).flatten(0, 1), ids.flatten())), params)
    out[0].backward()
    seconds = time.perf_counter() - start
    peak = _rss_kb("VmHWM") - before
    model.zero_grad(set_to_none=True)
    return saved / 2**20, peak / 2**10, seconds


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--length", type=int, default=65536, help="the sequence length L")
    ap.add_argument("--mixer", default="mamba")
    ap.add_argument("--d-model", type=int, default=128)
    ap.add_argument("--n-layers", type=int, default=2)
    ap.add_argument("--vocab", type=int, default=256)
    ap.add_argument("--checkpoint", action="store_true", help="activation checkpointing per block")
    args = ap.parse_args(argv)
    torch.manual_seed(0)
    torch.set_num_threads(1)
    world = int(os.environ.get("WORLD_SIZE", "1"))
    comm = None
    if world > 1:
        dist.init_process_group("gloo")
        comm = cp.Comm.of()
    model = CausalLM(BackboneConfig(d_model=args.d_model, n_layers=args.n_layers, mixer=args.mixer), args.vocab)
    checkpoint_blocks(model, args.checkpoint)
    if comm is not None:
        cp.enable(model, comm)
    gen = torch.Generator().manual_seed(0)
    for i, L in enumerate([256, args.length]):
        ids = torch.randint(0, args.vocab, (1, L), generator=gen)
        mine = ids if comm is None else cp.split_sequence(ids, comm)
        row = torch.tensor(step_memory(model, mine), dtype=torch.float64)
        if comm is not None:
            dist.all_reduce(row, op=dist.ReduceOp.MAX)
        if i > 0 and (comm is None or comm.rank == 0):
            saved, peak, seconds = row.tolist()
            print(json.dumps({"ranks": world, "L": L, "mixer": args.mixer, "d_model": args.d_model,
                              "n_layers": args.n_layers, "checkpoint": args.checkpoint,
                              "saved_mb": round(saved, 1), "peak_rss_mb": round(peak, 1),
                              "seconds": round(seconds, 2)}), flush=True)
    if comm is not None:
        dist.barrier()
        dist.destroy_process_group()


if __name__ == "__main__":
    main()
