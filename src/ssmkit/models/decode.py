"""Fused CPU decode for ``CausalLM``: one compiled call per generated token, no allocation.

The pure step loop (``CausalLM.step``) costs a few hundred small PyTorch ops per token and a
matrix-vector product through MKL that reads the weights at well under the machine's bandwidth;
at B = 1 a token's floor is reading every weight once. ``FusedDecoder`` runs the embedding, each
block (RMSNorm, mixer, residual), the final norm and the LM head in one C++ call per token
(``decode.cpp`` with ``decode_common.h`` and ``decode_mixers.h``; the recurrences are the ops'
in-place steps, ``ops/<op>/step_inplace.h`` of selective_scan, ssd and linear_attention), reading
the model's own weight tensors and writing states, activations and logits into buffers allocated
once. The decoder owns a copy of the state it was
given: ``SequenceMixer.step`` stays pure, and ``FusedDecoder.state()`` hands back a copy.

It applies (``fused_unavailable_reason`` is None) to a float32 CPU model in eval mode (or without
dropout) whose blocks are the default pre-norm RMSNorm blocks without FFN over ``mamba``,
``mamba2``, ``gla``, ``hgrn2``, ``linear_attention`` or ``retnet`` mixers, with no embedding
norm, no forward hooks, CPU autocast off, and a C++ compiler at hand (the library is built once
per machine, ``ops._cpp``). ``CausalLM.generate`` / ``stream`` use it automatically then
(``fused_decode=None``), log once why not otherwise, and take ``fused_decode=False`` to run the
step loop, ``True`` to insist (an error says why it cannot). Inference only: the logits carry no
autograd graph.

Weight-only storage for inference (``weights``, or ``CausalLM.to_inference(weights=...)``): the
matrices read every token (the projections and the LM head) stored as ``"bfloat16"`` (rounded to
nearest even) or ``"int8"`` (symmetric, one float32 scale per output row: max |w| / 127), halving
or quartering the bytes a token reads (a tied embedding is the head's matrix: its lookup reads
the stored row); everything else (norms, conv, A, D, an untied embedding, states, activations and
every sum) stays float32. The packed copies are made once per parameter and kept while its
values do not change (``_packed``). The prefill (the parallel forward) runs in
float32 either way. docs/performance.md has the measured logit error and greedy agreement.
"""
from __future__ import annotations

import ctypes
import functools
import pathlib
from typing import TYPE_CHECKING

import torch
from torch import Tensor, nn
from torch.utils.weak import WeakIdKeyDictionary

from ..layers.gla import GLA
from ..layers.hgrn2 import HGRN2
from ..layers.linear_attention import LinearAttention
from ..layers.retnet import RetNet
from ..layers.mamba import Mamba
from ..layers.mamba2 import Mamba2
from ..ops._cpp import load_library
from .backbone import Backbone, Block

if TYPE_CHECKING:
    from .lm import CausalLM

_HERE = pathlib.Path(__file__).parent
SOURCE = _HERE / "decode.cpp"
HEADERS = (_HERE / "decode_common.h", _HERE / "decode_mixers.h",
           *(_HERE.parent / "ops" / p for p in ("kernel_math.h", "selective_scan/step_inplace.h",
                                                "ssd/step_inplace.h", "linear_attention/step_inplace.h")))
_KINDS = {Mamba: 1, Mamba2: 2, GLA: 3, HGRN2: 4, LinearAttention: 5, RetNet: 6}  # the ``kind`` of decode.cpp
WEIGHTS = {"float32": 0, "bfloat16": 1, "int8": 2}  # the ``fmt`` of decode.cpp's Mat
_ALIASES = {"fp32": "float32", "bf16": "bfloat16"}


class _Mat(ctypes.Structure):
    """``Mat`` of decode.cpp: a weight matrix in one of ``WEIGHTS``."""
    _fields_ = [("w", ctypes.c_void_p), ("scale", ctypes.c_void_p), ("fmt", ctypes.c_int64)]


class _Layer(ctypes.Structure):
    """``Layer`` of decode.cpp, field for field."""
    _fields_ = [(n, ctypes.c_int64) for n in ("kind", "E", "N", "R", "K", "H", "P", "G", "n_in", "C")]
    _fields_ += [(n, ctypes.c_double) for n in ("norm_eps", "inner_eps", "dt_lo", "dt_hi")]
    _fields_ += [("norm_w", ctypes.c_void_p), ("in_w", _Mat), ("in_b", ctypes.c_void_p), ("conv_w", ctypes.c_void_p),
                 ("conv_b", ctypes.c_void_p), ("x_w", _Mat), ("dt_w", _Mat)]
    _fields_ += [(n, ctypes.c_void_p) for n in ("dt_b", "A", "Dv", "gnorm_w")]
    _fields_ += [("out_w", _Mat)] + [(n, ctypes.c_void_p) for n in ("out_b", "conv_state", "ssm_state")]
    _fields_ += [(n, ctypes.c_int64) for n in ("Kh", "Vh", "rank")] + [("inv_tau", ctypes.c_double)]
    _fields_ += [(n, _Mat) for n in ("q_w", "k_w", "v_w", "g1_w", "g2_w")] + [("g2_b", ctypes.c_void_p)]
    _fields_ += [("r_w", _Mat), ("r_b", ctypes.c_void_p), ("onorm_w", ctypes.c_void_p), ("o_w", _Mat)]
    _fields_ += [("f_w", _Mat), ("beta", ctypes.c_double), ("q_scale", ctypes.c_double),
                 ("norm_all_w", ctypes.c_void_p)]
    _fields_ += [(n, ctypes.c_void_p) for n in ("q_b", "k_b", "v_b", "o_b", "inv_freq", "log_decay_hk", "offset")]
    _fields_ += [("group_norm", ctypes.c_int64), ("gn_b", ctypes.c_void_p)]


def weight_format(weights: str) -> str:
    """The canonical name of a weight format (``"bf16"`` -> ``"bfloat16"``), checked."""
    name = _ALIASES.get(weights, weights)
    if name not in WEIGHTS:
        raise ValueError(f"weights must be one of {[*WEIGHTS, *_ALIASES]}, got {weights!r}")
    return name


# parameter -> {format: (its version when packed, packed matrix, scales | None)}; weak, so a
# model's packed copies go with it
_packed = WeakIdKeyDictionary()


def pack(weight: Tensor, weights: str) -> tuple[Tensor, Tensor | None]:
    """A float32 matrix (O, I) in ``weights``' storage: (float32 itself | bfloat16 bits as int16
    | int8, None | the int8 rows' float32 scales (O,))."""
    w = weight.detach().contiguous()
    if weights == "float32":
        return w, None
    if weights == "bfloat16":
        return w.to(torch.bfloat16).view(torch.int16), None
    scale = w.abs().amax(dim=1) / 127.0
    scale = torch.where(scale > 0, scale, torch.ones_like(scale))  # an all-zero row stays zeros
    return torch.round(w / scale[:, None]).clamp(-127, 127).to(torch.int8), scale.contiguous()


def _packed_of(param: Tensor, weights: str) -> tuple[Tensor, Tensor | None]:
    if weights == "float32":
        return pack(param, weights)
    entry = _packed.setdefault(param, {})
    cached = entry.get(weights)
    if cached is None or cached[0] != param._version:
        cached = (param._version, *pack(param, weights))
        entry[weights] = cached
    return cached[1], cached[2]

@functools.cache
def _library() -> ctypes.CDLL | str:
    lib = load_library("ssmkit_decode", SOURCE, HEADERS)
    if isinstance(lib, str):
        return lib
    lib.ssmkit_decode_workspace.argtypes = [ctypes.c_int64, ctypes.c_void_p, ctypes.c_int64, ctypes.c_int64]
    lib.ssmkit_decode_workspace.restype = ctypes.c_int64
    step = lib.ssmkit_decode_step_f32
    step.argtypes = [ctypes.c_int64] * 4 + [ctypes.c_void_p] * 3 + [ctypes.c_double, ctypes.c_void_p,
                                                                    ctypes.c_double] + [ctypes.c_void_p] * 4
    step.restype = ctypes.c_int64
    return lib


def _has_hooks(model: nn.Module) -> bool:
    from torch.nn.modules import module as module_mod

    if module_mod._global_forward_hooks or module_mod._global_forward_pre_hooks:
        return True
    return any(m._forward_hooks or m._forward_pre_hooks for m in model.modules())


def _eps(norm: nn.RMSNorm) -> float:
    return norm.eps if norm.eps is not None else torch.finfo(torch.float32).eps


def fused_unavailable_reason(model: CausalLM) -> str | None:
    """None when ``FusedDecoder`` can run ``model``, else why not (one sentence)."""
    from .lm import CausalLM

    params = list(model.parameters())
    if any(p.device.type != "cpu" for p in params):
        return "the model is not on the CPU"
    if any(p.dtype != torch.float32 for p in params):
        return f"its weights are not all float32 ({sorted({str(p.dtype) for p in params})})"
    if type(model).step is not CausalLM.step or type(model.backbone) is not Backbone:
        return "the model or its backbone is a subclass with its own step"
    if model.embed_norm is not None:
        return "it has an embedding norm"
    if _has_hooks(model):
        return "a forward hook is registered (the fused step would skip it)"
    if torch.is_autocast_enabled("cpu"):
        return "CPU autocast is on (the step loop then runs its matrices in the autocast dtype)"
    cfg = model.backbone.config
    if model.training and cfg.dropout > 0:
        return "it is in training mode with dropout"
    if not isinstance(model.backbone.norm, (nn.RMSNorm, nn.Identity)):
        return "its final norm is not RMSNorm"
    for i, block in enumerate(model.backbone.blocks):
        if type(block) is not Block or block.post or block.ffn is not None or not isinstance(block.norm, nn.RMSNorm):
            return f"block {i} is not a pre-norm RMSNorm block without FFN"
        if type(block.mixer) not in _KINDS:
            name = getattr(block.mixer, "mixer_name", None) or type(block.mixer).__name__
            return (f"layer {i} is {name}; the fused step covers mamba, mamba2, gla, hgrn2, linear_attention "
                    "and retnet")
        if block.norm.weight is None:
            return f"block {i}'s norm has no weight"
    lib = _library()
    return lib if isinstance(lib, str) else None


def _ptr(t: Tensor | None) -> int | None:
    return None if t is None else t.data_ptr()


class FusedDecoder:
    """One token per call for every row of a batch; see the module doc.

    ``state``: the model's state for ``batch_size`` rows (``CausalLM.init_state`` or the one a
    forward returned); it is copied, never modified."""

    def __init__(self, model: CausalLM, state: tuple, weights: str | None = None) -> None:
        self.weights = weight_format(weights if weights is not None else model.inference_weights)
        reason = fused_unavailable_reason(model)
        if reason is not None:
            raise ValueError(f"the fused decode cannot run this model: {reason}")
        blocks = model.backbone.blocks
        if not isinstance(state, (tuple, list)) or len(state) != len(blocks):
            raise ValueError(f"state must be a tuple of {len(blocks)} layer states (CausalLM.init_state), "
                             f"got {type(state).__name__} of length {len(state) if hasattr(state, '__len__') else '-'}")
        batch = state[0][0].shape[0]
        self.model, self.batch_size = model, batch
        self._keep: list[Tensor] = []  # every tensor a pointer in the layer table refers to
        self._state = []
        for i, (block, s) in enumerate(zip(blocks, state)):
            expected = block.mixer.init_state(batch)
            if (not isinstance(s, (tuple, list)) or len(s) != len(expected)
                    or any(not isinstance(t, Tensor) or t.shape != e.shape or t.dtype != e.dtype or t.device != e.device
                           for t, e in zip(s, expected))):
                got = [(tuple(t.shape), t.dtype) if isinstance(t, Tensor) else type(t).__name__ for t in s]
                raise ValueError(f"layer {i}'s state must be {[(tuple(e.shape), e.dtype) for e in expected]} "
                                 f"(B = {batch}), got {got}")
            self._state.append(tuple(t.detach().clone(memory_format=torch.contiguous_format) for t in s))
        self._layers = (_Layer * len(blocks))(*(self._layer(b, s) for b, s in zip(blocks, self._state)))
        D, V = model.backbone.config.d_model, model.vocab_size
        lib = _library()
        self._step = lib.ssmkit_decode_step_f32
        work = lib.ssmkit_decode_workspace(len(blocks), ctypes.addressof(self._layers), batch, D)
        self._x, self._work = torch.empty(batch, D), torch.empty(work)
        self._logits = torch.empty(batch, V)
        self._tokens = torch.empty(batch, dtype=torch.long)
        final = model.backbone.norm
        self._final_w = self._hold(final.weight) if isinstance(final, nn.RMSNorm) else None
        self._final_eps = _eps(final) if isinstance(final, nn.RMSNorm) else 0.0
        self._head = self._mat(model.lm_head.weight)
        # a tied embedding is the head's matrix, in its storage; an untied one is looked up in float32
        self._embedding = self._head if model.tied else _Mat(self._hold(model.embedding.weight), None, 0)

    def _hold(self, t: Tensor | None) -> int | None:
        if t is None:
            return None
        t = t.detach().contiguous()
        self._keep.append(t)
        return t.data_ptr()

    def _mat(self, weight: Tensor) -> _Mat:
        w, scale = _packed_of(weight, self.weights)
        return _Mat(self._hold(w), self._hold(scale), WEIGHTS[self.weights])

    @property
    def weight_bytes(self) -> int:
        """Bytes of the weights a token reads (every matrix and vector once; an untied embedding not:
        a lookup reads one row)."""
        embedding, seen, total = self._embedding.w, set(), 0
        for t in self._keep:
            ptr = t.data_ptr()
            if ptr not in seen and (ptr != embedding or self.model.tied):
                seen.add(ptr)
                total += t.numel() * t.element_size()
        return total

    def _layer(self, block: Block, state: tuple[Tensor, ...]) -> _Layer:
        m = block.mixer
        c = m.config
        h = self._hold
        kind = _KINDS[type(m)]
        layer = _Layer(kind=kind, norm_eps=_eps(block.norm), norm_w=h(block.norm.weight),
                       ssm_state=_ptr(state[0] if kind == 6 else state[-1]))
        if kind == 3:  # GLA: its state is (S,)
            layer.H, layer.Kh, layer.Vh, layer.rank = m.n_heads, m.key_dim, m.value_dim, c.gate_low_rank
            layer.inv_tau, layer.inner_eps = 1.0 / c.gate_temperature, _eps(m.norm)
            layer.q_w, layer.k_w, layer.v_w = (self._mat(p.weight) for p in (m.q_proj, m.k_proj, m.v_proj))
            layer.g1_w, layer.g2_w, layer.g2_b = self._mat(m.gate_down.weight), self._mat(m.gate_up.weight), \
                h(m.gate_up.bias)
            if m.r_proj is not None:
                layer.r_w, layer.r_b = self._mat(m.r_proj.weight), h(m.r_proj.bias)
            layer.onorm_w, layer.o_w = h(m.norm.weight), self._mat(m.o_proj.weight)
            return layer
        if kind == 4:  # HGRN2: its state is (S,), K = V = the head size
            layer.H, layer.Kh, layer.Vh = m.n_heads, m.head_dim, m.head_dim
            layer.beta, layer.q_scale, layer.inner_eps = c.lower_bound, m._scale(), _eps(m.norm)
            layer.f_w, layer.q_w, layer.v_w = (self._mat(p.weight) for p in (m.f_proj, m.q_proj, m.i_proj))
            layer.norm_all_w, layer.o_w = h(m.norm.weight), self._mat(m.o_proj.weight)
            return layer
        if kind == 5:  # linear attention: its state is (S',) (B, H, K, V + 1)
            layer.H, layer.Kh, layer.Vh, layer.inner_eps = m.n_heads, m.head_dim, m.head_dim, c.eps
            layer.q_w, layer.k_w, layer.v_w, layer.o_w = (self._mat(p.weight) for p in
                                                          (m.q_proj, m.k_proj, m.v_proj, m.o_proj))
            layer.q_b, layer.k_b, layer.v_b, layer.o_b = (h(p.bias) for p in (m.q_proj, m.k_proj, m.v_proj, m.o_proj))
            return layer
        if kind == 6:  # RetNet: its state is (S, offset), both advanced in place
            H, K = m.n_heads, m.key_dim
            layer.H, layer.Kh, layer.Vh, layer.q_scale, layer.inner_eps = H, K, m.value_dim, K**-0.5, c.norm_eps
            layer.q_w, layer.k_w, layer.v_w, layer.r_w, layer.o_w = (
                self._mat(p.weight) for p in (m.q_proj, m.k_proj, m.v_proj, m.g_proj, m.o_proj))
            layer.q_b, layer.k_b, layer.v_b, layer.r_b, layer.o_b = (
                h(p.bias) for p in (m.q_proj, m.k_proj, m.v_proj, m.g_proj, m.o_proj))
            # as attention.rope computes them (float64), and log gamma per key of each head
            layer.inv_freq = h(c.rope_base ** (-torch.arange(0, K // 2, dtype=torch.float64) * 2 / K))
            with torch.no_grad():
                layer.log_decay_hk = h(m.log_decay().float()[:, None].expand(H, K))
            layer.offset = _ptr(state[1])
            norm = m.group_norm if c.norm == "groupnorm" else m.rms_norm
            layer.group_norm, layer.onorm_w = int(c.norm == "groupnorm"), h(norm.weight)
            layer.gn_b = h(norm.bias) if c.norm == "groupnorm" else None
            return layer
        layer.E, layer.N, layer.K, layer.n_in = m.d_inner, c.d_state, c.d_conv, m.in_proj.out_features
        layer.in_w, layer.in_b = self._mat(m.in_proj.weight), h(m.in_proj.bias)
        layer.conv_w, layer.conv_b = h(m.conv1d.weight[:, 0, :]), h(m.conv1d.bias)
        layer.Dv, layer.out_w, layer.out_b = h(m.D), self._mat(m.out_proj.weight), h(m.out_proj.bias)
        layer.conv_state = _ptr(state[0])
        with torch.no_grad():
            if kind == 1:
                layer.R, layer.C = m.dt_rank, m.d_inner
                layer.x_w, layer.dt_w = self._mat(m.x_proj.weight), self._mat(m.dt_proj.weight)
                layer.dt_b = h(m.dt_proj.bias)
                layer.A = h(-torch.exp(m.A_log))
            else:
                layer.H, layer.P, layer.G, layer.C = m.n_heads, c.head_dim, c.n_groups, m.conv_dim
                layer.inner_eps, (layer.dt_lo, layer.dt_hi) = c.norm_eps, c.dt_limit
                layer.dt_b, layer.A, layer.gnorm_w = h(m.dt_bias), h(-torch.exp(m.A_log)), h(m.norm.weight)
        return layer

    def step(self, token: Tensor) -> Tensor:
        """token (B,) integer ids -> logits (B, V). The logits are the decoder's buffer, overwritten
        by the next step: clone them to keep them."""
        if token.shape != (self.batch_size,) or token.dtype not in (torch.long, torch.int32):
            raise ValueError(f"token must be ({self.batch_size},) integer ids, got {token.dtype} {tuple(token.shape)}")
        self._tokens.copy_(token)
        bad = self._step(self.batch_size, self.model.backbone.config.d_model, self.model.vocab_size,
                         len(self._state), ctypes.addressof(self._layers), self._tokens.data_ptr(),
                         ctypes.addressof(self._embedding), self.model.embed_scale, self._final_w, self._final_eps,
                         ctypes.addressof(self._head),
                         self._x.data_ptr(), self._logits.data_ptr(), self._work.data_ptr())
        if bad:
            raise ValueError(f"token ids must be in [0, {self.model.vocab_size}), got {int(token[bad - 1])} "
                             f"in row {bad - 1}")
        softcap = self.model.logit_softcap
        return self._logits if softcap is None else torch.tanh(self._logits / softcap) * softcap

    def state(self) -> tuple:
        """A copy of the current state, in ``CausalLM.init_state``'s form."""
        return tuple(tuple(t.clone() for t in s) for s in self._state)
