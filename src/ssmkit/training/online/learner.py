"""Online learning on an unbounded stream: one token in, one loss, gradients accumulated forward in time.

Dimension legend: B streams learned in parallel, D model width.

Per token the learner runs the encoder, each layer's RTRL step (``traces.LayerRTRL``), the
readout and the loss; ONE backward of that token's loss gives the readout's and the output
blocks' gradients directly and delta_t = d loss_t / d h_t of each layer, which the traces turn
into the recurrence's gradients. Every ``update_every`` tokens the accumulated gradient is
written to ``.grad`` and the optimizer steps. What it holds does not grow with the stream:
``memory()`` counts it.

Exactness (docs/online.md): with one recurrent layer every gradient equals BPTT's on the same
stream (summed per-token loss, no update in between), including a linear encoder below LRU / S5 /
S4D. With a stack, each layer's own parameters are exact given the error that reaches it, but
that error is the lower layers' instantaneous one (Zucchet et al. 2023): approximate below the top.
"""
from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

from .families import online_family
from .model import OnlineModel
from .traces import LayerRTRL

LossFn = Callable[[Tensor, Tensor], Tensor]


def mse(pred: Tensor, target: Tensor) -> Tensor:
    """Mean squared error of one token: pred, target (B, D_out)."""
    return ((pred - target) ** 2).mean()


class OnlineLearner:
    """Real-time recurrent learning of an ``OnlineModel`` on B parallel streams.

    ``update_every`` k > 0: an optimizer step after every k tokens (the gradient of their summed
    loss); 0: gradients only accumulate until ``flush_gradients()`` (the exactness test).
    ``grad_clip``: clip the global gradient norm before each step (None: no clipping).
    """

    def __init__(self, model: OnlineModel, optimizer: torch.optim.Optimizer | None = None, *,
                 loss_fn: LossFn = mse, update_every: int = 1, grad_clip: float | None = None) -> None:
        if not isinstance(model, OnlineModel):
            raise TypeError(f"model must be an OnlineModel (see build_online_model), got {type(model).__name__}")
        if not isinstance(update_every, int) or update_every < 0:
            raise ValueError(f"update_every must be an int >= 0, got {update_every!r}")
        if update_every and optimizer is None:
            raise ValueError("update_every > 0 needs an optimizer (or pass update_every=0 to only accumulate)")
        self.model, self.optimizer, self.loss_fn = model, optimizer, loss_fn
        self.update_every, self.grad_clip = update_every, grad_clip
        self.rtrl = []
        for i, layer in enumerate(model.layers):
            fam = online_family(layer)
            if i > 0:
                mode = "spatial"
            elif model.encoder is None:
                mode = "none"
            else:
                mode = "encoder" if fam.input_row is not None else "spatial"
            self.rtrl.append(LayerRTRL(fam, mode, model.encoder))
        self.tokens = 0
        self.batch = 0

    def reset(self, batch_size: int) -> None:
        """Start ``batch_size`` new streams: zero states, traces and accumulated gradients."""
        p = next(self.model.parameters())
        for r in self.rtrl:
            r.reset(batch_size, p.dtype, p.device)
        self.batch, self.tokens = batch_size, 0

    def step(self, x_t: Tensor, target_t: Tensor) -> float:
        """One token of every stream: x_t (B, D_in), target_t as ``loss_fn`` expects. Returns the loss."""
        if x_t.ndim != 2:
            raise ValueError(f"x_t must have shape (B, D_in), got {tuple(x_t.shape)}")
        if self.batch == 0:
            self.reset(x_t.shape[0])
        if x_t.shape[0] != self.batch:
            raise ValueError(f"x_t has batch {x_t.shape[0]} but the learner holds {self.batch} streams (reset())")
        m = self.model
        with torch.enable_grad():
            h = x_t if m.encoder is None else m.encoder(x_t)
            for r in self.rtrl:
                y = r.forward(h, x_t if r.input_mode == "encoder" else None)
                h = h + y if m.residual else y
            loss = self.loss_fn(m.readout(h), target_t)
            loss.backward()
        for r in self.rtrl:
            r.accumulate()
        self.tokens += 1
        if self.update_every and self.tokens % self.update_every == 0:
            self.apply()
        return loss.item()

    def observe(self, x: Tensor, targets: Tensor) -> Tensor:
        """A chunk of C tokens: x (B, C, D_in), targets (B, C, ...) -> per-token losses (C,)."""
        if x.ndim != 3:
            raise ValueError(f"x must have shape (B, C, D_in), got {tuple(x.shape)}")
        return torch.tensor([self.step(x[:, t], targets[:, t]) for t in range(x.shape[1])])

    def flush_gradients(self) -> None:
        """Write the recurrences' accumulated gradients into the parameters' ``.grad``."""
        for r in self.rtrl:
            r.flush()

    def apply(self) -> None:
        """flush_gradients, then one optimizer step, zero_grad, and re-read the intermediates."""
        self.flush_gradients()
        if self.grad_clip is not None:
            nn.utils.clip_grad_norm_(self.model.parameters(), self.grad_clip)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        for r in self.rtrl:
            r.refresh()

    # ----------------------------------------------------------------- memory
    def held_tensors(self) -> dict[str, tuple[int, ...]]:
        """Name -> shape of every tensor held between tokens (states, traces, carries, accumulators)."""
        out = {}
        for i, r in enumerate(self.rtrl):
            out.update({f"layer{i}.{k}": tuple(v.shape) for k, v in r.held().items()})
            out.update({f"layer{i}.{k}": tuple(v.shape) for k, v in r.accumulators().items()})
        return out

    def memory(self) -> dict[str, int]:
        """Floats held (a complex number counts two): per stream (state, traces) and per model."""
        def floats(t: Tensor) -> int:
            return t.numel() * (2 if t.is_complex() else 1)

        state = trace = acc = 0
        for r in self.rtrl:
            for k, v in r.held().items():
                per_seq = floats(v) // max(self.batch, 1)
                if k == "h" or k.startswith("carry"):
                    state += per_seq
                else:
                    trace += per_seq
            acc += sum(floats(v) for v in r.accumulators().values())
        return {"state_floats_per_stream": state, "trace_floats_per_stream": trace,
                "per_stream": state + trace, "accumulator_floats": acc}
