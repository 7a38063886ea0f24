"""bf16 / int8 weight storage of the fused decode on a *trained* model: bits per character and
logits against float32 (docs/performance.md, section 4).

The generate suite's 130m-shaped models carry transformers' random initialisation, whose
recurrences amplify any perturbation along the sequence (rounding only the embedding moves the
last prompt position's logits by tens of percent there), so their error says nothing about a
trained model. This script trains a small CausalLM (mamba or mamba2, 4 layers, D = 256) on the
shakespeare character task for a fixed number of AdamW steps (seeded), then runs the val text
teacher-forced through the fused decode in float32, bfloat16 and int8 storage (B rows of
consecutive text, each after a float32 prefill of ``--prefill`` characters), and prints bits per
character, the largest logit error relative to the largest float32 logit, and the fraction of
positions whose argmax agrees with float32's.

    OMP_NUM_THREADS=2 PYTHONPATH=src python scripts/weight_storage_error.py --kind mamba
"""
from __future__ import annotations

import argparse
import math
import time

import torch
import torch.nn.functional as F

from ssmkit.models import BackboneConfig, CausalLM
from ssmkit.models.decode import FusedDecoder
from ssmkit.tasks.base import IGNORE
from ssmkit.tasks.text import Shakespeare


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--kind", default="mamba", choices=("mamba", "mamba2"))
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--rows", type=int, default=4)
    p.add_argument("--prefill", type=int, default=64)
    p.add_argument("--tokens", type=int, default=512, help="teacher-forced decode steps per row")
    args = p.parse_args()
    torch.manual_seed(0)
    task = Shakespeare(length=128)
    cfg = {"d_state": 16} if args.kind == "mamba" else {"d_state": 64, "head_dim": 32}
    lm = CausalLM(BackboneConfig(d_model=256, n_layers=4, mixer=args.kind, mixer_cfg=cfg), task.info.vocab_size)
    torch.nn.init.normal_(lm.embedding.weight, std=0.02)  # tied: logits start near uniform (as transformers)
    opt = torch.optim.AdamW(lm.parameters(), lr=1e-3)
    t0, step = time.time(), 0
    while step < args.steps:
        for batch in task.batches("train", 16, seed=0, epoch=step):
            loss = F.cross_entropy(lm(batch.inputs).flatten(0, 1), batch.targets.flatten(), ignore_index=IGNORE)
            opt.zero_grad()
            loss.backward()
            opt.step()
            step += 1
            if step == args.steps:
                break
    print(f"{args.kind}: {args.steps} steps in {time.time() - t0:.0f} s, last train loss {loss.item():.3f} nats")
    lm.eval()
    text = task.text["val"]
    span = args.prefill + args.tokens + 1
    rows = torch.stack([text[i * span : (i + 1) * span] for i in range(args.rows)])  # (B, span)
    with torch.no_grad():
        _, state = lm(rows[:, : args.prefill], return_state=True)
        decoders = {w: FusedDecoder(lm, state, weights=w) for w in ("float32", "bfloat16", "int8")}
        nll = dict.fromkeys(decoders, 0.0)
        error, agree = dict.fromkeys(decoders, 0.0), dict.fromkeys(decoders, 0)
        for t in range(args.prefill, args.prefill + args.tokens):
            logits = {w: d.step(rows[:, t]).clone() for w, d in decoders.items()}
            ref = logits["float32"]
            for w, lg in logits.items():
                nll[w] += F.cross_entropy(lg, rows[:, t + 1], reduction="sum").item()
                error[w] = max(error[w], float((lg - ref).abs().max() / ref.abs().max()))
                agree[w] += int((lg.argmax(-1) == ref.argmax(-1)).sum())
    n = args.rows * args.tokens
    print("| storage | weight MB read per token | val bits/char | max logit error | argmax agreement |")
    print("|---|---|---|---|---|")
    for w, d in decoders.items():
        print(f"| {w} | {d.weight_bytes / 2**20:.2f} | {nll[w] / n / math.log(2):.4f} | {error[w]:.1e} | "
              f"{agree[w] / n:.4f} |")


if __name__ == "__main__":
    main()
