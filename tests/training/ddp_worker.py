"""One process of the 2-process DDP test; started by torchrun (python -m torch.distributed.run).

usage: python -m torch.distributed.run --standalone --nproc_per_node 2 ddp_worker.py OUT_DIR
Rank 0 writes OUT_DIR/weights.safetensors (final weights) and OUT_DIR/result.json.
"""
import dataclasses
import json
import os
import sys

import torch
from safetensors.torch import save_file

from ssmkit.training import fit
from tiny import TinyTask, ddp_config, tiny_model

if __name__ == "__main__":
    torch.set_num_threads(1)
    out = sys.argv[1]
    task = TinyTask("lm", n=10)
    model = tiny_model(task)
    result = fit(task, model, ddp_config(out), log=lambda s: None)
    # evaluation batches of one row: rank 1 scores nothing, yet every rank must get every metric
    cfg = dataclasses.replace(ddp_config(out), eval_batch_size=1, checkpoint_dir="")
    batch1 = fit(task, tiny_model(task), cfg, log=lambda s: None)
    with open(os.path.join(out, f"batch1-rank{os.environ['RANK']}.json"), "w") as f:
        json.dump({k: v for k, v in batch1.items() if k != "train_seconds"}, f)
    if int(os.environ["RANK"]) == 0:
        save_file({k: v.contiguous() for k, v in model.state_dict().items()}, os.path.join(out, "weights.safetensors"))
        with open(os.path.join(out, "result.json"), "w") as f:
            json.dump(result, f)
