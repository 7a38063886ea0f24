"""One process of the FSDP / context-parallel training tests; started by torchrun.

usage: ... parallel_worker.py OUT_DIR
Trains the tiny LM twice, under parallel=fsdp and under context_parallel=WORLD; rank 0 writes
OUT_DIR/<mode>.safetensors (final weights, gathered) and OUT_DIR/<mode>.json (fit's result).
"""
import json
import os
import sys

import torch
from safetensors.torch import save_file

from ssmkit.training import fit
from ssmkit.training.distributed import full_model_state
from tiny import TinyTask, parallel_config, tiny_model

if __name__ == "__main__":
    torch.set_num_threads(1)
    out, world = sys.argv[1], int(os.environ["WORLD_SIZE"])
    task = TinyTask("lm", n=10)
    for mode, extra in (("fsdp", {"parallel": "fsdp"}), ("cp", {"context_parallel": world})):
        model = tiny_model(task, mixer="mamba")
        result = fit(task, model, parallel_config(f"{out}/{mode}", **extra), log=lambda s: None)
        weights = full_model_state(model)  # a collective under FSDP
        if int(os.environ["RANK"]) == 0:
            save_file({k: v.contiguous() for k, v in weights.items()}, os.path.join(out, f"{mode}.safetensors"))
            with open(os.path.join(out, f"{mode}.json"), "w") as f:
                json.dump({k: v for k, v in result.items() if k != "train_seconds"}, f)
