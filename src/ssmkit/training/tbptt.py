"""Forward and backward of one batch, whole or by truncated BPTT over chunks of its length.

Truncated BPTT (for ``tag`` / ``lm`` tasks over long windows): the length L is cut into chunks of
C positions (inputs, targets, mask and time deltas ``dt`` alike); each chunk runs
``model(x_chunk, state=carried, return_state=True)`` and is backpropagated at once, so activation
memory grows with C instead of L; the outgoing state is detached (``ssmkit.detach_state``) before
it enters the next chunk. The forward is exact (the
state continues the sequence, so the outputs equal the unchunked forward); only the gradient is
truncated at chunk boundaries. Gradients of the chunks accumulate and the loop makes one
optimizer step per batch, so steps, schedule, checkpoints and DDP do not depend on C.

Loss weighting: a task's loss is a mean over its ``loss_weight`` elements (scored targets, or
target values). Chunk k contributes ``mean_k * w_k * scale`` with ``scale = world / W`` (W the
global batch's weight, ``world`` the number of processes, whose gradients DDP averages), so the
summed gradient is the gradient of the global batch's mean loss: equal chunks or not, equal
process slices or not, and exactly the plain gradient when C >= L.
"""
from __future__ import annotations

import contextlib

import torch
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel

from ..layers.state import detach_state
from ..tasks.base import IGNORE, Batch, Task



def loss_weight(task: Task, batch: Batch) -> int:
    """The number of elements ``task.loss`` averages over for this batch."""
    if task.info.kind.real_valued:
        return batch.targets.numel()
    return int((batch.targets != IGNORE).sum())


def time_chunks(batch: Batch, chunk: int) -> list[Batch]:
    """Consecutive chunks of ``chunk`` positions (the last may be shorter); [batch] when chunk is 0 or >= L."""
    L = batch.inputs.shape[1]
    if chunk <= 0 or chunk >= L:
        return [batch]
    if batch.cu_seqlens is not None:
        raise ValueError("truncated BPTT (tbptt) cuts rows in time, but this batch is a packed row of documents "
                         "(cu_seqlens), each starting from a zero state: train packed batches with tbptt=0")

    def cut(t: Tensor | None, s: slice) -> Tensor | None:
        return None if t is None else t[:, s]

    return [Batch(cut(batch.inputs, s), cut(batch.targets, s), cut(batch.mask, s), cut(batch.dt, s))
            for s in (slice(i, i + chunk) for i in range(0, L, chunk))]


def forward_backward(
    task: Task,
    net: nn.Module,
    batch: Batch,
    *,
    chunk: int,
    scale: float,
    bf16: bool = False,
    keep_outputs: bool = False,
) -> tuple[Tensor, list[tuple[Batch, Tensor]]]:
    """Accumulate into ``.grad`` the gradient of ``scale * sum_k mean_k * w_k`` over the chunks.

    Returns (sum_k mean_k * w_k, detached, for logging; the (chunk, detached outputs) pairs when
    ``keep_outputs``). ``chunk`` 0 means the whole batch in one pass without state.
    """
    if chunk and not task.info.kind.per_position:
        raise ValueError(f"invalid config value for 'tbptt': truncated BPTT needs a per-position task "
                         f"(tag, lm), task {task.info.name!r} is '{task.info.kind}'")
    parts = time_chunks(batch, chunk)
    device = batch.inputs.device
    total = torch.zeros((), device=device, dtype=torch.float64)  # a float32 model's loss sums exactly here
    kept: list[tuple[Batch, Tensor]] = []
    state = None
    for k, part in enumerate(parts):
        last = k == len(parts) - 1
        # DDP all-reduces in backward: only once, after the last chunk has accumulated its gradient.
        sync = net.no_sync() if isinstance(net, DistributedDataParallel) and not last else contextlib.nullcontext()
        with sync:
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
                if len(parts) == 1:
                    out = net(part.inputs, **part.model_kwargs())
                else:
                    out, state = net(part.inputs, **part.model_kwargs(), state=state, return_state=True)
                w = loss_weight(task, part)
                # a chunk with nothing scored still joins the graph (DDP expects every parameter used)
                loss = task.loss(out, part) * w if w else out.sum() * 0.0
            (loss * scale).backward()
        total += loss.detach()
        if keep_outputs:
            kept.append((part, out.detach()))
        if state is not None:
            state = detach_state(state)
    return total, kept
