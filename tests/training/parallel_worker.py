"""One process of the FSDP / context-parallel training tests; started by torchrun.

usage: ... parallel_worker.py OUT_DIR
Trains the tiny LM under parallel=fsdp and under context_parallel=WORLD, then resumes the FSDP run
from its step-2 checkpoint under FSDP (as after a kill); rank 0 writes OUT_DIR/<mode>.safetensors
(final weights, gathered) and OUT_DIR/<mode>.json (fit's result), mode = fsdp, cp, fsdp-resumed.
"""
import json
import os
import sys

import torch
import torch.distributed as dist
from safetensors.torch import save_file

from ssmkit.training import fit
from ssmkit.training.distributed import full_model_state
from tiny import PARALLEL_MIXER as MIXER
from tiny import TinyTask, parallel_config, tiny_model

if __name__ == "__main__":
    torch.set_num_threads(1)
    out, world = sys.argv[1], int(os.environ["WORLD_SIZE"])
    task = TinyTask("lm", n=10)
    runs = (("fsdp", "fsdp", {"parallel": "fsdp"}, False), ("cp", "cp", {"context_parallel": world}, False),
            ("fsdp-resumed", "fsdp", {"parallel": "fsdp"}, f"{out}/fsdp/ck/step-00000002"))
    for mode, folder, extra, resume in runs:
        model = tiny_model(task, mixer=MIXER[folder], seed=1 if resume else 0)
        result = fit(task, model, parallel_config(f"{out}/{folder}", **extra), log=lambda s: None, resume=resume)
        weights = full_model_state(model)  # a collective under FSDP
        if int(os.environ["RANK"]) == 0:
            save_file({k: v.contiguous() for k, v in weights.items()}, os.path.join(out, f"{mode}.safetensors"))
            with open(os.path.join(out, f"{mode}.json"), "w") as f:
                json.dump({k: v for k, v in result.items() if k != "train_seconds"}, f)
    dist.barrier()  # nobody leaves (and closes its connections) while rank 0 still writes and reads
