"""The loop's view of torch.distributed: one process, or one of several started by ``torchrun``.

``setup`` reads torchrun's environment (WORLD_SIZE, RANK, LOCAL_RANK, MASTER_ADDR/PORT) and joins
the process group with NCCL on CUDA or gloo on CPU. Every rank walks the same global batches (the
data stream is a pure function of seed and epoch) and takes its own contiguous slice of rows
(``shard``), so the global batch is ``batch_size`` whatever the number of processes; gradients
are averaged by DistributedDataParallel, or by FSDP2 (``parallel="fsdp"``: ``fully_shard`` per
residual block and on the root, so each process holds 1/world of the parameters, gradients and
optimizer state). Rank 0 alone writes logs and full checkpoints; under FSDP the full weights and
optimizer state are gathered to it first (``full_model_state``) for ``checkpoint_format=full``, while
the default sharded checkpoints have every process write its own shards (``sharded_checkpoint.py``).

The group is joined once per process and left at interpreter exit (``atexit``), not after each
``fit``: a second ``fit`` in the same process (a comparison of several runs under torchrun) would
otherwise join a new default group over the same rendezvous store, whose stale keys can pair the
processes wrongly and hang them; and a group still alive while the interpreter shuts down aborts
the process from a gloo thread ("terminate called without an active exception"). Garbage is
collected before the group is destroyed: without it a finished 2-process FSDP run aborted so at
exit in 3 of 46 runs here, with it in none of 80 (the suspect: FSDP state, with its collectives'
work objects, left for interpreter finalization).
"""
from __future__ import annotations

import atexit
import dataclasses
import gc
import os

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel

from ..tasks.base import Batch


@dataclasses.dataclass(frozen=True)
class Dist:
    rank: int = 0
    world: int = 1
    device: torch.device = torch.device("cpu")
    owns_group: bool = False  # ssmkit joined the group (and leaves it at exit)

    @property
    def main(self) -> bool:
        return self.rank == 0


def resolve_device(name: str, local_rank: int = 0) -> torch.device:
    """auto -> cuda:LOCAL_RANK when CUDA is available, else cpu; cuda -> cuda:LOCAL_RANK."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda":
        name = f"cuda:{local_rank}"
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"device {name!r} asked for, but torch {torch.__version__} sees no CUDA device")
    return device


def setup(device: str) -> Dist:
    """Join the process group when torchrun started several processes; a plain run gets world 1."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if not dist.is_initialized() and world == 1:
        return Dist(device=resolve_device(device))
    owns = False
    if not dist.is_initialized():
        target = resolve_device(device, int(os.environ.get("LOCAL_RANK", "0")))
        if target.type == "cuda":
            torch.cuda.set_device(target)
        dist.init_process_group("nccl" if target.type == "cuda" else "gloo")
        atexit.register(_leave_group)
        owns = True
    else:
        target = resolve_device(device, int(os.environ.get("LOCAL_RANK", "0")))
    return Dist(dist.get_rank(), dist.get_world_size(), target, owns)


def current(device: torch.device) -> Dist:
    """This process's place in an already joined group (world 1 when there is none)."""
    if not dist.is_initialized():
        return Dist(device=device)
    return Dist(dist.get_rank(), dist.get_world_size(), device)


def teardown(d: Dist, clean: bool = True) -> None:
    """The end of a ``fit``: after a clean run every process waits until all have left their last
    collective; after an error nobody waits, since the others may never arrive. The group stays
    joined for the next ``fit`` of this process (module doc)."""
    if d.world > 1 and clean:
        dist.barrier()


def _leave_group() -> None:
    """At interpreter exit, before Python tears down its threads: destroy the group ssmkit joined."""
    if dist.is_initialized():
        gc.collect()  # FSDP state freed while the interpreter is whole (module doc)
        dist.destroy_process_group()


def wrap(model: nn.Module, d: Dist, parallel: str = "ddp") -> nn.Module:
    """Over several processes: DistributedDataParallel (it broadcasts rank 0's weights), or FSDP2
    (``fully_shard`` on every residual block, then the root; in place: the model's parameters become
    sharded DTensors, so build the optimizer afterwards). One process: the model."""
    if d.world == 1:
        return model
    if parallel == "fsdp":
        return shard_model(model)
    return DistributedDataParallel(model, device_ids=[d.device.index] if d.device.type == "cuda" else None)


def shard_model(model: nn.Module) -> nn.Module:
    """FSDP2 per ``models.backbone.Block`` and on the root. The layers' optimizer tags (``_optim``) live
    on the parameter objects, which sharding replaces: they are carried over by name."""
    from torch.distributed.fsdp import fully_shard

    from ..models.backbone import Block

    tags = {n: p._optim for n, p in model.named_parameters() if hasattr(p, "_optim")}
    for m in [m for m in model.modules() if isinstance(m, Block)]:
        fully_shard(m)
    fully_shard(model)
    for n, p in model.named_parameters():
        if n in tags:
            p._optim = tags[n]
    return model


def is_sharded(model: nn.Module) -> bool:
    from torch.distributed.fsdp import FSDPModule

    return isinstance(model, FSDPModule)


def full_model_state(model: nn.Module) -> dict[str, Tensor]:
    """The full weights on the CPU (under FSDP a collective; rank 0 gets them, the others an empty dict)."""
    if not is_sharded(model):
        return model.state_dict()
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    return get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))


def model_state(model: nn.Module, sharded: bool) -> dict[str, Tensor]:
    """A copy of the weights to keep (the best-val ones): ``sharded`` (sharded checkpoints) each process's
    shards, no collective; else the full weights on the CPU, on rank 0 only under FSDP (a collective)."""
    if not sharded:
        return {k: t.detach().to("cpu", copy=True) for k, t in full_model_state(model).items()}
    from torch.distributed.checkpoint.state_dict import get_model_state_dict

    return {k: t.detach().clone() for k, t in get_model_state_dict(model).items()}


def load_model_state(model: nn.Module, state: dict[str, Tensor], sharded: bool) -> None:
    """Load ``model_state``'s copy back (under FSDP without ``sharded``: rank 0's, broadcast)."""
    if not sharded:
        load_full_model_state(model, state, from_rank0=True)
        return
    from torch.distributed.checkpoint.state_dict import set_model_state_dict

    set_model_state_dict(model, state)


def as_layout(state: dict[str, Tensor], model: nn.Module, sharded: bool) -> dict[str, Tensor]:
    """A ``model_state`` copy of one layout turned into the other (a resume that changes
    ``checkpoint_format``): full tensors held by every process become this process's shards; shards
    become the full tensors (gathered: a collective). Plain tensors of an unsharded model stay."""
    from torch.distributed.tensor import DTensor, distribute_tensor

    if sharded:
        from torch.distributed.checkpoint.state_dict import get_model_state_dict

        like = get_model_state_dict(model)
        return {k: distribute_tensor(state[k].to(v.device), v.device_mesh, v.placements)
                if isinstance(v, DTensor) and not isinstance(state[k], DTensor) else state[k]
                for k, v in like.items()}
    return {k: (v.full_tensor() if isinstance(v, DTensor) else v).to("cpu") for k, v in state.items()}


def load_full_model_state(model: nn.Module, state: dict[str, Tensor], from_rank0: bool = False) -> None:
    """Load full weights (``full_model_state``'s, or a checkpoint's); under FSDP each process keeps
    its shards, of its own copy or (``from_rank0``: only rank 0 holds them) of rank 0's, broadcast."""
    if not is_sharded(model):
        model.load_state_dict(state)
        return
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict

    set_model_state_dict(model, state, options=StateDictOptions(full_state_dict=True, broadcast_from_rank0=from_rank0))


def load_full_optimizer_state(model: nn.Module, opt: torch.optim.Optimizer, state: dict) -> None:
    """Load a full optimizer state (``full_optimizer_state``'s numbering) into ``opt``; under FSDP
    every process passes the whole state and keeps its shards."""
    if not is_sharded(model):
        opt.load_state_dict(state)
        return
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_optimizer_state_dict

    names = [n for g in opt.param_groups for n in g["names"]]
    by_name = {"state": {names[int(i)]: v for i, v in state["state"].items()},
               "param_groups": [{**g, "params": [names[int(i)] for i in g["params"]]} for g in state["param_groups"]]}
    set_optimizer_state_dict(model, opt, by_name, options=StateDictOptions(full_state_dict=True))


def full_optimizer_state(model: nn.Module, opt: torch.optim.Optimizer) -> dict:
    """``opt.state_dict()`` (parameters numbered in group order); under FSDP gathered in full to rank 0
    and numbered the same way, so the checkpoint does not depend on the parallelism."""
    if not is_sharded(model):
        return opt.state_dict()
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_optimizer_state_dict

    full = get_optimizer_state_dict(model, opt, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
    if not full:
        return {}
    number = {n: i for i, n in enumerate(n for g in opt.param_groups for n in g["names"])}
    groups = [{**g, "params": [number[n] for n in g["params"]]} for g in full["param_groups"]]
    return {"state": {number[n]: v for n, v in full["state"].items()}, "param_groups": groups}


def shard(batch: Batch, d: Dist) -> Batch:
    """This rank's contiguous slice of the global batch's rows (the first B % world ranks get one more)."""
    if d.world == 1:
        return batch
    if batch.cu_seqlens is not None:
        raise ValueError(f"a packed batch (one row of documents, cu_seqlens) cannot be split over {d.world} "
                         "processes by rows; train packed batches in one process, or padded batches with DDP")

    def part(t: Tensor | None) -> Tensor | None:
        return None if t is None else t.tensor_split(d.world)[d.rank]

    return Batch(part(batch.inputs), part(batch.targets), part(batch.mask), part(batch.dt))


def all_sum(values: list[float], d: Dist) -> list[float]:
    """Sums of ``values`` over the ranks (float64, so counts and sums stay exact)."""
    if d.world == 1:
        return list(values)
    t = torch.tensor(values, dtype=torch.float64, device=d.device)
    dist.all_reduce(t)
    return t.tolist()


def all_names(names: list[str], d: Dist) -> list[str]:
    """The sorted union of ``names`` over the ranks (a rank that scored no rows has none of its own)."""
    if d.world == 1:
        return sorted(names)
    gathered: list[list[str]] = [[] for _ in range(d.world)]
    dist.all_gather_object(gathered, list(names))
    return sorted({n for part in gathered for n in part})


def all_gather_bytes(data: bytes, d: Dist) -> list[bytes]:
    """Every rank's ``data`` (all of the same length, e.g. RNG states), in rank order."""
    if d.world == 1:
        return [data]
    mine = torch.frombuffer(bytearray(data), dtype=torch.uint8).to(d.device)
    out = [torch.empty_like(mine) for _ in range(d.world)]
    dist.all_gather(out, mine)
    return [bytes(t.cpu().numpy().tobytes()) for t in out]


def barrier(d: Dist) -> None:
    if d.world > 1:
        dist.barrier()
