"""The prepared GPU benchmark (``ssmkit bench --suite gpu``): on one CUDA device, in one run,

1. the referee: every Triton mode (ssmkit's ``triton``, flash-linear-attention's ``fla`` and
   ``fla_recurrent``) against the float64 reference on the device (``testing.peers``, float32,
   outputs, final state, gradients) at two lengths; a kernel that fails is reported and left out
   of the timings (never used);
2. per kernel (selective scan, SSD, chunked gated linear attention with a decay per key channel
   (GLA) and per head (RetNet)) and length: forward and forward+backward seconds of the ``triton``
   mode, the pure-PyTorch ``chunked`` mode and the installed peers (fla's chunk kernels; mamba_ssm's
   ``selective_scan_fn`` and Triton ``mamba_chunk_scan_combined`` when they import), with the
   triton mode's relative difference to ``chunked`` at that size, and the forward's achieved
   bandwidth (the bytes of its inputs and outputs over its time) as a fraction of the device's
   peak HBM bandwidth where the device is known;
3. a CausalLM (mamba, mamba2, gla) training step in tokens/s, and its decode step per token, eager
   and replayed from a CUDA graph with a static state buffer.

It writes ``gpu.json`` and ``gpu.md`` (the tables) to ``--out``, and stops starting new
measurements once ``--budget-s`` is spent (each left-out row is listed). Without CUDA it measures
nothing and says so (exit 2). Nothing here is a test: the numbers are what the device gave.
"""
from __future__ import annotations

import dataclasses
import json
import math
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

DEFAULT_LENGTHS = (2048, 8192, 32768)
# Peak HBM bandwidth (bytes/s) by device name: the vendors' data sheets (SXM parts).
PEAK_BANDWIDTH = {"H200": 4.8e12, "H100": 3.35e12, "A100": 2.0e12}


@dataclasses.dataclass(frozen=True)
class KernelCase:
    """One op at one size: ``make(L, device)`` builds its float32 inputs (a dict of the op's
    keyword arguments); ``bytes_moved(L)`` counts its forward's inputs and outputs."""
    name: str
    op: str
    sizes: dict[str, int]
    modes: tuple[str, ...]

    def make(self, L: int, device: str, gen: torch.Generator) -> dict[str, Any]:
        s = self.sizes
        r = lambda *shape: torch.randn(*shape, generator=gen, device=device)  # noqa: E731
        if self.op == "selective_scan":
            B, D, N = s["B"], s["D"], s["N"]
            return {"u": r(B, L, D), "delta": r(B, L, D), "A": -torch.rand(D, N, generator=gen, device=device) - 0.1,
                    "B": r(B, L, N), "C": r(B, L, N), "D": r(D), "z": r(B, L, D), "delta_bias": r(D),
                    "delta_softplus": True}
        if self.op == "ssd":
            B, H, P, G, N = s["B"], s["H"], s["P"], s["G"], s["N"]
            return {"x": r(B, L, H, P), "dt": torch.rand(B, L, H, generator=gen, device=device) * 0.1,
                    "A": -torch.rand(H, generator=gen, device=device) - 0.5, "B": r(B, L, G, N), "C": r(B, L, G, N),
                    "D": r(H)}
        B, H, K, V = s["B"], s["H"], s["K"], s["V"]
        decay = (B, L, H, K) if self.name == "gla" else (B, L, H)
        return {"q": r(B, L, H, K), "k": r(B, L, H, K) * K**-0.5, "v": r(B, L, H, V),
                "log_decay": -torch.rand(*decay, generator=gen, device=device) * 0.1, "scale": K**-0.5}

    def bytes_moved(self, L: int) -> int:
        """float32 bytes the forward must read and write at least (inputs, output, final state)."""
        s = self.sizes
        if self.op == "selective_scan":
            B, D, N = s["B"], s["D"], s["N"]
            return 4 * (B * L * (4 * D + 2 * N) + B * D * N)  # u, delta, z, y; B, C; final state
        if self.op == "ssd":
            B, H, P, G, N = s["B"], s["H"], s["P"], s["G"], s["N"]
            return 4 * (B * L * (2 * H * P + H + 2 * G * N) + B * H * P * N)
        B, H, K, V = s["B"], s["H"], s["K"], s["V"]
        decay = K if self.name == "gla" else 1
        return 4 * (B * L * H * (2 * K + 2 * V + decay) + B * H * K * V)


# B·D of the selective scan: a 1024-wide Mamba layer (expand 2: D = 2048), batch 8, N = 16 (the
# Mamba paper's state size for its scan benchmark); the other kernels at the same token count.
CASES = (
    KernelCase("selective_scan", "selective_scan", {"B": 8, "D": 2048, "N": 16}, ("triton", "chunked")),
    KernelCase("ssd", "ssd", {"B": 8, "H": 32, "P": 64, "G": 1, "N": 128}, ("triton", "chunked")),
    KernelCase("gla", "linear_attention", {"B": 8, "H": 16, "K": 64, "V": 128}, ("triton", "chunked", "fla")),
    KernelCase("retnet", "linear_attention", {"B": 8, "H": 16, "K": 64, "V": 128}, ("triton", "chunked", "fla")),
)
LM_MIXERS = ("mamba", "mamba2", "gla")


@dataclasses.dataclass
class GpuPlan:
    lengths: tuple[int, ...] = DEFAULT_LENGTHS
    out: Path = Path("results/gpu")
    budget_s: float = 330.0
    repeats: int = 5
    check_lengths: tuple[int, ...] = (37, 1000)
    cases: tuple[KernelCase, ...] = CASES
    lm_mixers: tuple[str, ...] = LM_MIXERS

    def __post_init__(self) -> None:
        if not self.lengths or any(L < 1 for L in self.lengths):
            raise ValueError(f"gpu suite: lengths must be positive, got {self.lengths}")
        if self.budget_s <= 0 or self.repeats < 1:
            raise ValueError(f"gpu suite: budget_s must be > 0 and repeats >= 1, got {self.budget_s}, {self.repeats}")


def cuda_unavailable_reason() -> str | None:
    """Why the suite cannot run here (None when a CUDA device is present)."""
    if not torch.cuda.is_available():
        return (f"the gpu suite needs a CUDA device, and torch {torch.__version__} sees none "
                f"(torch.cuda.is_available() is False); nothing was measured")
    return None


def peak_bandwidth(device_name: str) -> float | None:
    for key, value in PEAK_BANDWIDTH.items():
        if key in device_name:
            return value
    return None


def _cuda_time(fn: Callable[[], Any], repeats: int) -> float:
    """Median seconds of ``fn`` over ``repeats`` calls after two warm-ups, by CUDA events."""
    for _ in range(2):
        fn()
    times = []
    for _ in range(repeats):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end) / 1e3)
    return statistics.median(times)


def _peers(case: KernelCase) -> dict[str, Callable[..., Any]]:
    """mamba_ssm's kernels for the op of ``case``, when mamba_ssm imports (it needs a CUDA build)."""
    peers: dict[str, Callable[..., Any]] = {}
    try:
        if case.op == "selective_scan":
            from mamba_ssm.ops.selective_scan_interface import selective_scan_fn

            def scan(u, delta, A, B, C, D, z, delta_bias, delta_softplus):
                t = lambda x: x.transpose(1, 2).contiguous()  # noqa: E731  (B, D, L) layout
                return selective_scan_fn(t(u), t(delta), A, t(B), t(C), D, t(z), delta_bias, delta_softplus,
                                         return_last_state=True)

            peers["mamba_ssm"] = scan
        elif case.op == "ssd":
            from mamba_ssm.ops.triton.ssd_combined import mamba_chunk_scan_combined

            peers["mamba_ssm"] = lambda x, dt, A, B, C, D: mamba_chunk_scan_combined(
                x, dt, A, B, C, chunk_size=64, D=D, return_final_states=True)
    except Exception:  # noqa: BLE001  (not installed, or its CUDA extension does not load)
        return {}
    return peers


def _loss(result: Any) -> Tensor:
    out = result[0] if isinstance(result, tuple) else result
    return out.float().sum()


def bench_kernels(plan: GpuPlan, device: str, failed_modes: set[tuple[str, str]], clock: Callable[[], float],
                  skipped: list[str]) -> list[dict[str, Any]]:
    import importlib

    rows = []
    bandwidth = peak_bandwidth(torch.cuda.get_device_name())
    for case in plan.cases:
        module = importlib.import_module(f"ssmkit.ops.{case.op}")
        op, modes = getattr(module, case.op), module.MODES
        for L in plan.lengths:
            inputs = case.make(L, device, torch.Generator(device).manual_seed(0))
            like = next(v for v in inputs.values() if isinstance(v, Tensor))
            impls: dict[str, Callable[..., Any]] = {}
            for mode in case.modes:
                reason = modes.unavailable_reason(mode, like)
                if (case.op, mode) in failed_modes:
                    skipped.append(f"{case.name} L={L} {mode}: failed the referee check, not timed")
                elif reason is not None:
                    skipped.append(f"{case.name} L={L} {mode}: {reason}")
                else:
                    impls[mode] = lambda m=mode, **kw: op(**kw, mode=m)
            impls.update(_peers(case))
            base = None
            for name, fn in impls.items():
                if clock() > plan.budget_s:
                    skipped.append(f"{case.name} L={L} {name}: the time budget ({plan.budget_s:.0f} s) was spent")
                    continue
                row: dict[str, Any] = {"kernel": case.name, "L": L, "impl": name, **case.sizes}
                try:
                    with torch.no_grad():
                        row["fwd_s"] = _cuda_time(lambda: fn(**inputs), plan.repeats)
                        out = fn(**inputs)
                    leaves = {k: v.detach().requires_grad_(True) if isinstance(v, Tensor) else v
                              for k, v in inputs.items()}
                    row["fwd_bwd_s"] = _cuda_time(lambda: _loss(fn(**leaves)).backward(), plan.repeats)
                    row["peak_gib"] = torch.cuda.max_memory_allocated() / 2**30
                    torch.cuda.reset_peak_memory_stats()
                    y = (out[0] if isinstance(out, tuple) else out).float()
                    if name == "chunked":
                        base = y
                    elif base is not None and name == "triton":
                        row["rel_diff_vs_chunked"] = float((y - base).abs().max() / base.abs().max())
                    gbps = case.bytes_moved(L) / row["fwd_s"]
                    row["fwd_bandwidth_gbs"] = gbps / 1e9
                    row["fwd_bandwidth_of_peak"] = None if bandwidth is None else gbps / bandwidth
                except Exception as err:  # noqa: BLE001  (an out-of-memory or a peer's crash is a row)
                    row["error"] = f"{type(err).__name__}: {str(err).splitlines()[0][:200]}"
                    torch.cuda.empty_cache()
                rows.append(row)
    return rows


def _graph_step(lm, token: Tensor, state: Any) -> Callable[[], Tensor]:
    """A decode step captured in a CUDA graph: static token and state buffers; each replay runs one
    step and copies the new state into the buffers (``step`` itself stays pure)."""
    from ssmkit.layers.state import flatten_state, map_state

    static = map_state(torch.clone, state)
    buffers = flatten_state(static)[0]

    def step() -> Tensor:
        logits, new_state = lm.step(token, static)
        for buf, new in zip(buffers, flatten_state(new_state)[0]):
            buf.copy_(new)
        return logits

    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(3):
            step()
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        logits = step()
    return lambda: (graph.replay(), logits)[1]


def bench_lm(plan: GpuPlan, device: str, clock: Callable[[], float], skipped: list[str]) -> list[dict[str, Any]]:
    from ssmkit.models import CausalLM
    from ssmkit.models.backbone import BackboneConfig

    rows = []
    vocab, d_model, n_layers, batch, L = 32000, 1024, 8, 8, 2048
    for name in plan.lm_mixers:
        if clock() > plan.budget_s:
            skipped.append(f"CausalLM {name}: the time budget was spent")
            continue
        row: dict[str, Any] = {"mixer": name, "d_model": d_model, "n_layers": n_layers, "batch": batch, "L": L}
        try:
            lm = CausalLM(BackboneConfig(d_model=d_model, n_layers=n_layers, mixer=name), vocab).to(device)
            opt = torch.optim.AdamW(lm.parameters(), lr=1e-4)
            ids = torch.randint(0, vocab, (batch, L), device=device)

            def train_step() -> None:
                with torch.autocast("cuda", dtype=torch.bfloat16):
                    loss = torch.nn.functional.cross_entropy(lm(ids[:, :-1]).flatten(0, 1).float(), ids[:, 1:].flatten())
                loss.backward()
                opt.step()
                opt.zero_grad(set_to_none=True)

            row["train_tokens_per_s"] = batch * (L - 1) / _cuda_time(train_step, 3)
            lm.eval()
            with torch.no_grad():
                state = lm.init_state(1, device=device)
                token = torch.zeros(1, dtype=torch.long, device=device)
                steps = 64

                def eager() -> None:
                    s = state
                    for _ in range(steps):
                        _, s = lm.step(token, s)

                row["decode_ms_per_token_eager"] = 1e3 * _cuda_time(eager, 3) / steps
                try:
                    replay = _graph_step(lm, token, state)
                    row["decode_ms_per_token_graph"] = 1e3 * _cuda_time(lambda: [replay() for _ in range(steps)],
                                                                        3) / steps
                except Exception as err:  # noqa: BLE001
                    row["graph_error"] = f"{type(err).__name__}: {str(err).splitlines()[0][:200]}"
        except Exception as err:  # noqa: BLE001
            row["error"] = f"{type(err).__name__}: {str(err).splitlines()[0][:200]}"
        torch.cuda.empty_cache()
        rows.append(row)
    return rows


def to_markdown(result: dict[str, Any]) -> str:
    """The tables of a result (as ``run`` writes it): referee rows, kernel timings, CausalLM."""
    lines = [f"# GPU benchmark: {result['device']}", "", f"torch {result['torch']}, triton {result['triton']}; "
             f"{result['seconds']:.0f} s in all", "", "## Referee (float32 vs the float64 reference)", "",
             "| op | setting | check | max rel err | result |", "|---|---|---|---|---|"]
    for r in result["referee"]:
        error = r["error"] if isinstance(r["error"], str) else f"{r['error']:.2e}"
        lines.append(f"| {r['op']} | {r['setting']} | {r['check']} | {error} | {r['result']} {r['detail']} |")
    lines += ["", "## Kernels (float32; seconds are medians of CUDA-event timings)", "",
              "| kernel | L | impl | fwd ms | fwd+bwd ms | fwd GB/s | of peak | vs chunked (rel diff) | note |",
              "|---|---|---|---|---|---|---|---|---|"]
    for r in result["kernels"]:
        fmt = lambda key, scale=1e3: "-" if r.get(key) is None else f"{scale * r[key]:.3f}"  # noqa: E731
        of_peak = "-" if r.get("fwd_bandwidth_of_peak") is None else f"{100 * r['fwd_bandwidth_of_peak']:.0f} %"
        diff = "-" if "rel_diff_vs_chunked" not in r else f"{r['rel_diff_vs_chunked']:.1e}"
        lines.append(f"| {r['kernel']} | {r['L']} | {r['impl']} | {fmt('fwd_s')} | {fmt('fwd_bwd_s')} | "
                     f"{fmt('fwd_bandwidth_gbs', 1)} | {of_peak} | {diff} | {r.get('error', '')} |")
    lines += ["", "## CausalLM", "", "| mixer | train tokens/s | decode ms/token (eager) | decode ms/token (CUDA graph) "
              "| note |", "|---|---|---|---|---|"]
    for r in result["lm"]:
        fmt = lambda key: "-" if r.get(key) is None else f"{r[key]:.3f}"  # noqa: E731
        note = r.get("error") or r.get("graph_error") or ""
        lines.append(f"| {r['mixer']} | {fmt('train_tokens_per_s')} | {fmt('decode_ms_per_token_eager')} | "
                     f"{fmt('decode_ms_per_token_graph')} | {note} |")
    if result["skipped"]:
        lines += ["", "## Not measured", ""] + [f"- {s}" for s in result["skipped"]]
    return "\n".join(lines) + "\n"


def run(plan: GpuPlan) -> dict[str, Any]:
    """Run the suite (CUDA required: RuntimeError with the reason otherwise) and write gpu.json and
    gpu.md to ``plan.out``. Returns the result."""
    reason = cuda_unavailable_reason()
    if reason is not None:
        raise RuntimeError(reason)
    import triton

    from ssmkit.testing.peers import check_peers

    t0 = time.perf_counter()
    clock = lambda: time.perf_counter() - t0  # noqa: E731
    device = "cuda"
    referee = [r for L in plan.check_lengths for r in check_peers(length=L, device=device)]
    failed = {(r.mixer, r.check.split(":")[0]) for r in referee if not r.passed}
    skipped: list[str] = []
    kernels = bench_kernels(plan, device, failed, clock, skipped)
    lm = bench_lm(plan, device, clock, skipped)
    result = {
        "device": torch.cuda.get_device_name(), "torch": torch.__version__, "triton": triton.__version__,
        "python": platform.python_version(), "seconds": clock(), "lengths": list(plan.lengths),
        "referee": [{"op": r.mixer, "setting": r.setting, "check": r.check,
                     "error": r.error if math.isfinite(r.error) else str(r.error),
                     "result": "n/a" if r.allowed else "PASS" if r.passed else "FAIL", "detail": r.detail}
                    for r in referee],
        "kernels": kernels, "lm": lm, "skipped": skipped,
    }
    plan.out.mkdir(parents=True, exist_ok=True)
    (plan.out / "gpu.json").write_text(json.dumps(result, indent=1))
    (plan.out / "gpu.md").write_text(to_markdown(result))
    return result
