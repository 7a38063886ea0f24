"""torch.export and ONNX export of a ``CausalLM``: its forward (prefill) and its ``step`` (the decode
graph), the way a recurrent model is deployed to CPU servers (docs/compile.md).

- ``export_forward(lm, ids)``: ``torch.export`` of ids (B, L) -> (logits (B, L, V), *state leaves),
  for the example's shapes;
- ``export_step(lm, batch_size)``: ``torch.export`` of (token (B,), *state leaves) -> (logits (B, V),
  *new state leaves): one decode step, the state passed in and out as a flat list of tensors
  (``state_leaves`` / ``state_from_leaves`` convert);
- ``export_step_onnx(lm, path, batch_size)``: the same graph through ``torch.onnx.export(...,
  dynamo=True)`` into an ONNX file that onnxruntime runs.
What cannot be exported is refused before tracing, naming the layer, its mixer and mode, and the
reason (``ExportError``): a state that grows with the tokens seen (attention's KV cache, Hyena's
input history) has no fixed-shape step graph; a complex-valued state (S4, S4D, DSS, LRU, S5, ...) or
complex arithmetic (S4ND) and a linear solve (VPT) have no ONNX form. Mamba's forward exports with
its compiled C++ scan as a custom op (``ssmkit::selective_scan_cpp_forward``, run by the exported
program where ssmkit is imported); its step is plain PyTorch.
"""
from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import Tensor, nn

from ..layers.state import State, flatten_state, map_state
from .lm import CausalLM

# mixer -> why its step has no fixed-shape graph
GROWING_STATE = {
    "attention": "its KV cache grows with every token, so the state's shape depends on the tokens seen",
    "hyena": "its input history grows with every token, so the state's shape depends on the tokens seen",
}
# mixer -> why its step has no ONNX form (an op without an ONNX operator)
NO_ONNX = {
    "s4nd": "its step computes the 2-D kernels with complex arithmetic, which ONNX has no operators for",
    "vpt": "its Cayley transform solves a linear system (torch.linalg.solve), which has no ONNX operator",
}


class ExportError(ValueError):
    """A model (a layer's mixer and mode) that cannot be exported in the asked form."""


def state_leaves(state: State) -> list[Tensor]:
    """The tensors of a (nested) state, in order."""
    return flatten_state(state)[0]


def state_from_leaves(template: State, leaves: list[Tensor] | tuple[Tensor, ...]) -> State:
    """The state of ``template``'s structure holding ``leaves`` (the inverse of ``state_leaves``)."""
    it = iter(leaves)
    state = map_state(lambda _: next(it), template)
    if next(it, None) is not None:
        raise ValueError(f"more state tensors than the state holds ({len(state_leaves(template))})")
    return state


def _layers(lm: CausalLM):
    for i, block in enumerate(lm.backbone.blocks):
        yield i, block.mixer.mixer_name, block.mixer


def check_exportable(lm: CausalLM, what: str) -> None:
    """Raise ``ExportError`` naming every layer that cannot be exported as ``what`` ("forward",
    "step", "onnx step"), its mixer, the mode it runs and the reason."""
    p = next(lm.parameters())
    like = torch.zeros(1, 1, lm.backbone.config.d_model, dtype=p.dtype, device=p.device)
    problems = []
    for i, name, mixer in _layers(lm):
        mode = mixer.resolve_mode(mixer.mode, like)
        if what != "forward" and name in GROWING_STATE:
            problems.append(f"layer {i} ({name}, mode '{mode}'): {GROWING_STATE[name]}")
        if what == "onnx step" and name in NO_ONNX:
            problems.append(f"layer {i} ({name}, mode '{mode}'): {NO_ONNX[name]}")
        elif what == "onnx step":
            complex_state = any(t.is_complex() for t in state_leaves(mixer.init_state(1)))
            if complex_state:
                problems.append(f"layer {i} ({name}, mode '{mode}'): its state is complex-valued and ONNX "
                                "has no complex tensors in onnxruntime")
    if problems:
        raise ExportError(f"cannot export the {what} of this CausalLM: " + "; ".join(problems))


class _Step(nn.Module):
    def __init__(self, lm: CausalLM, template: State) -> None:
        super().__init__()
        self.lm, self.template = lm, template
        self.eval()

    def forward(self, token: Tensor, *leaves: Tensor) -> tuple[Tensor, ...]:
        logits, state = self.lm.step(token, state_from_leaves(self.template, leaves))
        return (logits, *state_leaves(state))


class _Forward(nn.Module):
    def __init__(self, lm: CausalLM) -> None:
        super().__init__()
        self.lm = lm
        self.eval()

    def forward(self, ids: Tensor) -> tuple[Tensor, ...]:
        logits, state = self.lm(ids, return_state=True)
        return (logits, *state_leaves(state))


def export_forward(lm: CausalLM, ids: Tensor) -> torch.export.ExportedProgram:
    """``torch.export`` of the prefill ids (B, L) -> (logits, *final state leaves) at ids' shapes."""
    check_exportable(lm, "forward")
    with torch.no_grad():
        return torch.export.export(_Forward(lm), (ids,), strict=False)


def step_example(lm: CausalLM, batch_size: int) -> tuple[Tensor, ...]:
    """(token (B,), *state leaves): inputs of the exported step (the zero state, token 0)."""
    p = next(lm.parameters())
    return (torch.zeros(batch_size, dtype=torch.long, device=p.device),
            *state_leaves(lm.init_state(batch_size, p.device, p.dtype)))


def export_step(lm: CausalLM, batch_size: int = 1) -> torch.export.ExportedProgram:
    """``torch.export`` of one decode step: (token (B,), *state leaves) -> (logits (B, V), *new leaves)."""
    check_exportable(lm, "step")
    template = lm.init_state(batch_size)
    with torch.no_grad():
        return torch.export.export(_Step(lm, template), step_example(lm, batch_size), strict=False)


def export_step_onnx(lm: CausalLM, path: str | os.PathLike, batch_size: int = 1) -> Path:
    """The decode step as an ONNX file (``torch.onnx.export(..., dynamo=True)``); inputs ``token``,
    ``state_0``..., outputs ``logits``, ``new_state_0``...; needs the onnx and onnxscript packages."""
    check_exportable(lm, "onnx step")
    try:
        import onnxscript  # noqa: F401  (torch.onnx's dynamo exporter needs it)
    except ImportError as e:
        raise ImportError("ONNX export needs onnx and onnxscript: pip install 'ssmkit[onnx]'") from e
    example = step_example(lm, batch_size)
    n = len(example) - 1
    path = Path(path)
    with torch.no_grad():
        program = torch.onnx.export(
            _Step(lm, lm.init_state(batch_size)), example, dynamo=True,
            input_names=["token", *(f"state_{i}" for i in range(n))],
            output_names=["logits", *(f"new_state_{i}" for i in range(n))],
        )
    program.save(str(path))
    return path
