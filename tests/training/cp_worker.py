"""One process of the context-parallel tests; started by torchrun (python -m torch.distributed.run).

usage: torchrun --nproc_per_node 3 cp_worker.py OUT_DIR NAME [NAME ...]   (NAME: a mixer, or "model": a hybrid LM)
Every process builds the same float64 mixer, runs the whole sequence alone (the reference) and its
own chunk context-parallel, over all 3 processes (L = 19: chunks of 7, 6, 6) and then over ranks
0 and 1 (a subgroup, L = 14); rank 0 writes OUT_DIR/cp.json: {"3" | "2": per mixer and quantity
(outputs, the final state, gradients of x, of the parameters and of the initial state) the largest
relative error over the ranks, or the error message when the mixer was refused}.
"""
import json
import os
import sys

import torch
import torch.distributed as dist
import torch.nn.functional as F

from ssmkit import create_mixer
from ssmkit.layers.state import flatten_state
from ssmkit.models import BackboneConfig
from ssmkit.models.lm import CausalLM
from ssmkit.testing.equivalence import _perturb, _random_state, crossing_config
from ssmkit.testing.tolerances import rel_err
from ssmkit.training import context_parallel as cp

LENGTHS = {3: 19, 2: 14}
# Window-like fields lowered so that each rank's chunk holds a whole window (their defaults are 63 and 127).
SMALL = {"swa": {"window": 4}, "h3": {"d_shift": 4}, "transformer_xl": {"segment_len": 3, "mem_len": 3}, "vpt": {"window": 4},
         "s4": {"d_state": 8}}  # s4: a dense transition costs one probe run per real state entry


def real(t: torch.Tensor) -> torch.Tensor:
    return torch.view_as_real(t) if t.is_complex() else t


def zero_if_none(t: torch.Tensor) -> torch.Tensor:
    return torch.zeros_like(t) if t.grad is None else t.grad


def case(name: str, L: int, comm: cp.Comm) -> dict:
    gen = torch.Generator().manual_seed(0)
    cfg = {**crossing_config(name, min(LENGTHS.values()) // 3), **SMALL.get(name, {})}  # the same mixer for 2 and 3
    torch.manual_seed(0)
    mixer = create_mixer(name, 8, **cfg).double()
    _perturb(mixer, gen, 0.1)
    x = torch.randn(2, L, 8, generator=gen, dtype=torch.float64)
    state0 = _random_state(mixer, x, gen)
    wy = torch.randn(x.shape, generator=gen, dtype=torch.float64)
    ws = [torch.randn(real(t).shape, generator=gen, dtype=torch.float64) for t in flatten_state(state0)[0]]
    state0 = [t.detach().requires_grad_(t.is_floating_point() or t.is_complex()) for t in flatten_state(state0)[0]]

    def rebuild(leaves):
        return cp._rebuild(mixer.init_state(2), leaves)

    def loss(y, w, final):
        total = (y * w).sum()
        if final is not None:
            total = total + sum((real(t) * v).sum() for t, v in zip(flatten_state(final)[0], ws))
        return total

    def grads(xx):
        return [xx.grad, *(zero_if_none(t) for t in [*mixer.parameters(), *state0])]

    # the reference: the whole sequence in one process
    xr = x.clone().requires_grad_(True)
    y_ref, final_ref = mixer(xr, rebuild(state0), return_state=True)
    loss(y_ref, wy, final_ref).backward()
    ref = [t.clone() for t in grads(xr)]
    mixer.zero_grad(set_to_none=True)
    for s in state0:
        s.grad = None

    # context parallel: this rank's chunk
    xc = cp.split_sequence(x, comm).clone().requires_grad_(True)
    y, final = cp.mixer_forward(mixer, comm, xc, rebuild(state0), return_state=True)
    last = comm.rank == comm.world - 1
    loss(y, cp.split_sequence(wy, comm), final if last else None).backward()
    cp.reduce_gradients(mixer, comm)
    shared = [zero_if_none(s) for s in state0]
    for s in shared:
        dist.all_reduce(s, group=comm.group)
    errors = {
        "y": rel_err(y, cp.split_sequence(y_ref, comm)),
        "grad_x": rel_err(xc.grad, cp.split_sequence(ref[0], comm)),
        "grad_params": max(rel_err(zero_if_none(p), r) for p, r in zip(mixer.parameters(), ref[1:])),
        "grad_state": max((rel_err(g, r) for g, r in zip(shared, ref[1 + len(list(mixer.parameters())):])),
                          default=0.0),
    }
    if last:
        errors["state"] = max(rel_err(real(a), real(b)) for a, b in zip(flatten_state(final)[0],
                                                                         flatten_state(final_ref)[0]))
    return errors


def model_case(L: int, comm: cp.Comm) -> dict:
    """A hybrid causal LM (mamba, rwkv6, with FFNs) made context-parallel by ``cp.enable``."""
    torch.manual_seed(0)
    model = CausalLM(BackboneConfig(d_model=8, n_layers=2, mixer=("mamba", "rwkv6"), ffn_mult=2), 11).double()
    ids = torch.randint(0, 11, (2, L), generator=torch.Generator().manual_seed(1))
    F.cross_entropy(model(ids).flatten(0, 1), ids.flatten(), reduction="sum").backward()
    ref = [p.grad.clone() for p in model.parameters()]
    with torch.no_grad():
        logits_ref = model(ids)
    model.zero_grad(set_to_none=True)
    cp.enable(model, comm)
    mine = cp.split_sequence(ids, comm)
    logits = model(mine)
    F.cross_entropy(logits.flatten(0, 1), mine.flatten(), reduction="sum").backward()
    cp.reduce_gradients(model, comm)
    cp.disable(model)
    with torch.no_grad():
        again = model(ids)  # disabled: the plain model again
    return {"y": rel_err(logits, cp.split_sequence(logits_ref, comm)), "disabled": rel_err(again, logits_ref),
            "grad_params": max(rel_err(p.grad, r) for p, r in zip(model.parameters(), ref))}


def run_all(names: list[str], L: int, comm: cp.Comm) -> dict:
    """{name: the largest error of each quantity over the ranks, or {"refused": message}}."""
    results = {}
    for name in names:
        try:
            errors = model_case(L, comm) if name == "model" else case(name, L, comm)
        except ValueError as e:  # a refusal: every rank raises it at the same point
            errors = {"refused": str(e)}
        parts = [None] * comm.world
        dist.all_gather_object(parts, errors, group=comm.group)
        merged: dict = {}
        for part in parts:
            for k, v in part.items():
                merged[k] = v if isinstance(v, str) else max(v, merged.get(k, 0.0))
        results[name] = merged
    return results


if __name__ == "__main__":
    torch.set_num_threads(1)
    out, names = sys.argv[1], sys.argv[2:]
    dist.init_process_group("gloo")
    pair = dist.new_group([0, 1])  # every rank creates it; ranks 0 and 1 run the 2-rank cases in it
    results = {"3": run_all(names, LENGTHS[3], cp.Comm.of())}
    if dist.get_rank() < 2:
        results["2"] = run_all(names, LENGTHS[2], cp.Comm.of(pair))
    if dist.get_rank() == 0:
        with open(os.path.join(out, "cp.json"), "w") as f:
            json.dump(results, f, indent=1)
    dist.barrier()  # nobody closes its connections while another still reads from them
    dist.destroy_process_group()
