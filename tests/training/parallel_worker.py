"""One process of the FSDP / context-parallel training tests; started by torchrun.

usage: ... parallel_worker.py OUT_DIR
Trains the tiny LM under parallel=fsdp (sharded checkpoints, the default), under parallel=fsdp with
checkpoint_format=full, and under context_parallel=WORLD; then an FSDP run that stops after its
step-2 checkpoint (every process raises while fetching batch 3, as a crash would end it) and is
resumed in its run folder. Rank 0 writes OUT_DIR/<mode>.safetensors (final weights, gathered) and
OUT_DIR/<mode>.json (fit's result), mode = fsdp, fsdp-full, cp, fsdp-resumed, to-sharded, to-full
(the two FSDP runs' last checkpoints resumed with the other checkpoint_format); and
OUT_DIR/fsdp-outputs.safetensors: the FSDP model's logits on the first 4 examples.
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


class Stopped(Exception):
    pass


class StoppingTask(TinyTask):
    """Raises while fetching training batch 3: the run ends after its step-2 checkpoint."""

    def __init__(self, *args, **kw):
        super().__init__(*args, **kw)
        self.left = 2

    def batches(self, split, batch_size, seed=0, epoch=0):
        for batch in super().batches(split, batch_size, seed, epoch):
            if split == "train":
                if self.left == 0:
                    raise Stopped
                self.left -= 1
            yield batch


def keep(out, mode, model, result):
    weights = full_model_state(model)  # a collective under FSDP
    if int(os.environ["RANK"]) == 0:
        save_file({k: v.contiguous() for k, v in weights.items()}, os.path.join(out, f"{mode}.safetensors"))
        with open(os.path.join(out, f"{mode}.json"), "w") as f:
            json.dump({k: v for k, v in result.items() if k != "train_seconds"}, f)


if __name__ == "__main__":
    torch.set_num_threads(1)
    out, world = sys.argv[1], int(os.environ["WORLD_SIZE"])
    task = TinyTask("lm", n=10)
    runs = (("fsdp", {"parallel": "fsdp"}), ("fsdp-full", {"parallel": "fsdp", "checkpoint_format": "full"}),
            ("cp", {"context_parallel": world}))
    for mode, extra in runs:
        model = tiny_model(task, mixer=MIXER[mode.split("-")[0]])
        result = fit(task, model, parallel_config(f"{out}/{mode}", **extra), log=lambda s: None)
        keep(out, mode, model, result)
        if mode == "fsdp":
            with torch.no_grad():
                logits = model(task.x[:4])
            if int(os.environ["RANK"]) == 0:
                save_file({"logits": logits.contiguous()}, os.path.join(out, "fsdp-outputs.safetensors"))
    # a resume that changes checkpoint_format turns the kept best-val weights into the other layout: resumed at
    # its last step, a run only loads them (full -> shards, shards -> full) and scores them
    for mode, source, fmt in (("to-sharded", "fsdp-full", "auto"), ("to-full", "fsdp", "full")):
        model = tiny_model(task, mixer=MIXER["fsdp"], seed=1)
        result = fit(task, model, parallel_config(f"{out}/{mode}", parallel="fsdp", checkpoint_format=fmt),
                     log=lambda s: None, resume=f"{out}/{source}/ck/step-00000004")
        keep(out, mode, model, result)
    cfg = parallel_config(f"{out}/fsdp-cut", parallel="fsdp")
    try:
        fit(StoppingTask("lm", n=10), tiny_model(task, mixer=MIXER["fsdp"]), cfg, log=lambda s: None)
        raise AssertionError("the stopping run did not stop")
    except Stopped:
        pass
    model = tiny_model(task, mixer=MIXER["fsdp"], seed=1)  # all of it must come from the checkpoint
    keep(out, "fsdp-resumed", model, fit(task, model, cfg, log=lambda s: None, resume=True))
    dist.barrier()  # nobody leaves (and closes its connections) while rank 0 still writes and reads
