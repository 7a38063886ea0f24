"""What ``ssmkit compare`` measures on a trained model and on bare mixers, beside accuracy.

On the trained model and one training batch (B x L tokens):

- train tokens/s: forward + loss + backward, best of 3 after a warm-up call (no optimizer step);
- inference tokens/s: the forward alone under ``no_grad`` in eval mode, best of 3;
- activation memory: bytes of the tensors saved for backward by one training forward (each
  storage once, parameters excluded), through ``torch.autograd.graph.saved_tensors_hooks``:
  exact and the same on every device, it is what the architecture adds to training memory;
- peak memory: CUDA: the most allocated during one training step; CPU: parameters + gradients +
  activation memory (the resident set cannot show it: a warm allocator reuses freed pages);
- state size: floats of recurrent state per sequence after L tokens, summed over the layers
  (``state_size_at(L)``: attention's KV cache grows with L, a recurrent state does not).

``speed_vs_length`` times the bare mixers at a few lengths (``speed.bench_mixers``) and measures
their activation memory the same way.
"""
from __future__ import annotations

import dataclasses
import os
import platform
from typing import Any, Callable

import torch

from ..layers import create_mixer
from ..tasks import Task
from . import speed
from .timing import best_time


def state_floats(model: torch.nn.Module, length: int) -> int:
    """Floats of recurrent state per sequence after ``length`` tokens, summed over the layers."""
    return sum(block.mixer.state_size_at(length) for block in model.backbone.blocks)


def saved_bytes(fn: Callable[[], object], exclude: set[int] = frozenset()) -> int:
    """Bytes of the tensors autograd saves for backward while ``fn`` runs, each storage counted once
    (storages whose data_ptr is in ``exclude``, e.g. the parameters, are not counted)."""
    storages: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        st = t.untyped_storage()
        if st.data_ptr() not in exclude:
            storages[st.data_ptr()] = st.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        fn()
    return sum(storages.values())


def measure_speed(task: Task, model: torch.nn.Module, batch_size: int, repeats: int = 3) -> dict[str, Any]:
    """Train and inference tokens/s, activation and peak memory of ``model`` on one training batch
    (see the module docstring)."""
    device = next(model.parameters()).device
    batch = next(iter(task.batches("train", batch_size, seed=0))).to(device)
    tokens = batch.inputs.shape[0] * batch.inputs.shape[1]
    was_training = model.training

    def train_step() -> None:
        model.zero_grad(set_to_none=True)
        task.loss(model(batch.inputs, mask=batch.mask), batch).backward()

    def forward() -> None:
        with torch.no_grad():
            model(batch.inputs, mask=batch.mask)

    model.train()
    params = list(model.parameters())
    param_bytes = sum(p.numel() * p.element_size() for p in params)
    activation = saved_bytes(lambda: task.loss(model(batch.inputs, mask=batch.mask), batch),
                             exclude={p.untyped_storage().data_ptr() for p in params})
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        train_step()
        torch.cuda.synchronize(device)
        peak, kind = torch.cuda.max_memory_allocated(device), "cuda: max allocated in one training step"
    else:
        peak, kind = 2 * param_bytes + activation, "cpu: parameters + gradients + activations"

    def timed(fn: Callable[[], None]) -> float:
        if device.type != "cuda":
            return best_time(fn, repeats)

        def synced() -> None:
            fn()
            torch.cuda.synchronize(device)

        return best_time(synced, repeats)

    train_s = timed(train_step)
    model.eval()
    infer_s = timed(forward)
    model.zero_grad(set_to_none=True)
    model.train(was_training)
    return {"train_tokens_per_s": tokens / train_s, "inference_tokens_per_s": tokens / infer_s,
            "activation_mb": activation / 2**20, "peak_memory_mb": peak / 2**20, "peak_memory_kind": kind,
            "measured_batch": [batch_size, batch.inputs.shape[1]]}


def mixer_activation_mb(name: str, length: int, batch: int, d_model: int) -> float:
    """Activation memory (MB) of one bare mixer's forward on (batch, length, d_model) inputs."""
    torch.manual_seed(0)
    mixer = create_mixer(name, d_model)
    x = torch.randn(batch, length, d_model, requires_grad=True)
    params = {p.untyped_storage().data_ptr() for p in mixer.parameters()}
    return saved_bytes(lambda: mixer(x), exclude=params) / 2**20


def speed_vs_length(mixers: list[str], lengths: list[int], batch: int, d_model: int) -> list[dict[str, Any]]:
    """Seconds (``speed.bench_mixers`` rows) and activation memory of each bare mixer at each length."""
    rows = [dataclasses.asdict(r) for r in speed.bench_mixers(mixers, lengths, batch=batch, d_model=d_model)]
    for row in rows:
        row["activation_mb"] = mixer_activation_mb(row["name"], row["length"], batch, d_model)
    return rows


def machine() -> dict[str, Any]:
    """Where the measurements ran."""
    return {"platform": platform.platform(), "processor": platform.machine(), "cpu_count": os.cpu_count(),
            "torch_threads": torch.get_num_threads(),
            "cuda": torch.cuda.get_device_name() if torch.cuda.is_available() else None}
