"""Where a doc_lm model's bits go, and whether its carried state is right (docs/recurrent_transformers.md).

    PYTHONPATH=src python scripts/probe_carried_state.py results/compare-doc_lm_sweep/runs/doc_lm-L128-*-seed0

For each run folder (a `ssmkit compare` or `ssmkit train` run of task doc_lm) it prints:
- bits per character of the test split with 32-character windows (one segment of the segment
  models: no carried state is read) and with 1,024-character windows, and the 1,024 windows' bits
  per character by segment of 32 (segment k reads the state carried over k segments);
- the max relative difference between one 1,024-character call and 32 calls of 32 characters with
  the state carried (0 when the carried state is exact), and the mean size |M| of a carried memory
  (RMT's memory tokens, Infini-attention's memory matrix rows) of the first layer after k segments.
And once: the bits per character of unigram and bigram character models counted on the training
scenes (add-one smoothing), as a floor of what a model has learned.
"""
from __future__ import annotations

import dataclasses
import math
import sys

import torch

from ssmkit.runs import build_model, build_task, find_checkpoint, read_run
from ssmkit.training import read_checkpoint
from ssmkit.training.checkpoint import MODEL

SEGMENT, LONG = 32, 1024
SHOWN = (0, 1, 2, 3, 7, 15, 31)  # segments of the long window printed


def at_length(run, length: int):
    return dataclasses.replace(run, task_cfg={**run.task_cfg, "length": length})


@torch.no_grad()
def bits_by_position(task, model, length: int) -> tuple[float, torch.Tensor]:
    """(bits per character of the test split, bits per character at each window position)."""
    nll = torch.zeros(length, dtype=torch.float64)
    count = torch.zeros(length, dtype=torch.float64)
    for b in task.batches("test", 64):
        logp = torch.log_softmax(model(b.inputs, mask=b.mask).double(), -1)
        real = b.targets >= 0
        nll += (-logp.gather(-1, b.targets.clamp_min(0)[..., None])[..., 0] * real).sum(0)
        count += real.sum(0)
    return (nll.sum() / count.sum()).item() / math.log(2), nll / count.clamp_min(1) / math.log(2)


@torch.no_grad()
def carried(task, model) -> tuple[float, list[float]]:
    """One LONG call against LONG / SEGMENT calls with the state carried; |M| after each segment."""
    b = next(iter(task.batches("test", 16)))
    x = b.inputs if b.mask is None else b.inputs[b.mask.all(1)]
    whole = model(x)
    state, parts, sizes = None, [], []
    for s in range(0, LONG, SEGMENT):
        y, state = model(x[:, s : s + SEGMENT], state=state, return_state=True)
        parts.append(y)
        mem = getattr(state[0], "mem", None)
        sizes.append(mem.norm(dim=-1).mean().item() if mem is not None else math.nan)
    return ((torch.cat(parts, 1) - whole).abs().max() / whole.abs().max()).item(), sizes


def ngram_bits(task) -> tuple[float, float]:
    """Unigram and bigram bits per character of the test text, counted on the training text."""
    train, test = task.text["train"].long(), task.text["test"].long()
    V = task.info.vocab_size
    uni = torch.bincount(train, minlength=V).double() + 1
    bi = torch.bincount(train[:-1] * V + train[1:], minlength=V * V).double().view(V, V) + 1
    uni_bits = -(uni / uni.sum()).log2()[test[1:]].mean().item()
    bi_bits = -(bi / bi.sum(1, keepdim=True)).log2()[test[:-1], test[1:]].mean().item()
    return uni_bits, bi_bits


def main(folders: list[str]) -> None:
    torch.set_num_threads(1)
    for i, folder in enumerate(folders):
        step, run_file = find_checkpoint(folder)
        run = read_run(run_file)
        weights = read_checkpoint(step)[1][MODEL]
        out = {}
        for length in (SEGMENT, LONG):
            task = build_task(at_length(run, length))
            model = build_model(task, at_length(run, length))
            model.load_state_dict(weights)
            model.eval()
            out[length] = bits_by_position(task, model, length)
            if i == 0 and length == SEGMENT:
                print("n-gram floor (bits per character): unigram %.3f, bigram %.3f" % ngram_bits(task))
        by_segment = out[LONG][1].view(-1, SEGMENT).mean(1)
        diff, sizes = carried(task, model)
        print(f"{run.model.mixer_label():17s} bpc {SEGMENT}: {out[SEGMENT][0]:.4f}  {LONG}: {out[LONG][0]:.4f}  "
              f"by segment {','.join(str(k + 1) for k in SHOWN)}: " + " ".join(f"{by_segment[k]:.3f}" for k in SHOWN))
        print(f"{'':17s} one call vs {LONG // SEGMENT} carried calls: max rel diff {diff:.1e}; |M| after segments "
              f"{','.join(str(k + 1) for k in SHOWN)}: " + " ".join(f"{sizes[k]:.3g}" for k in SHOWN), flush=True)


if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    main(sys.argv[1:])
