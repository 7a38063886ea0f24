"""Selective scan: every mode against the reference loop (outputs, final state, every gradient)."""
from __future__ import annotations

import logging
import re

import pytest
import torch
import torch.nn.functional as F
from conftest import assert_close_rel

import ssmkit.log
import ssmkit.ops.selective_scan as ss
from ssmkit.ops.selective_scan import selective_scan, selective_scan_reference
import ssmkit.ops.selective_scan.chunked as chunked
from ssmkit.benchmarks.measure import saved_bytes
from ssmkit.ops.selective_scan.chunked import BOUND, MAX_CHUNK, chunk_spans

FAST = ["chunked", "cpp"]
NAMES = ["u", "delta", "A", "B", "C", "D", "z", "delta_bias", "initial_state"]


@pytest.fixture(params=FAST)
def mode(request):
    if request.param == "cpp" and (reason := ss.cpp_unavailable_reason()) is not None:
        pytest.skip(f"the C++ kernel cannot be built here: {reason}")
    return request.param


def make(L, G=1, width=6, N=4, batch=2, dtype=torch.float64, full=True, seed=0, dt_scale=1.0):
    """Inputs of the scan as a dict; ``full`` adds D, z, delta_bias (with softplus) and h0."""
    g = torch.Generator().manual_seed(seed)

    def rnd(*shape):
        return torch.randn(*shape, generator=g, dtype=torch.float64).to(dtype)

    positive_dt = dt_scale * torch.rand(batch, L, width, generator=g).to(dtype)
    x = {
        "u": rnd(batch, L, width),
        "delta": rnd(batch, L, width) if full else positive_dt,
        "A": -torch.rand(width, N, generator=g).to(dtype) * 2 - 0.1,
        "B": rnd(batch, L, G, N) if G > 1 else rnd(batch, L, N),
        "C": rnd(batch, L, G, N) if G > 1 else rnd(batch, L, N),
    }
    if full:
        x |= {"D": rnd(width), "z": rnd(batch, L, width), "delta_bias": rnd(width) - 1,
              "initial_state": rnd(batch, width, N)}  # fmt: skip
    return x


def run(x, mode, softplus=None):
    """Raw deltas (``make(full=True)``, any sign) go through the softplus; positive ones as they are."""
    softplus = bool((x["delta"] < 0).any()) if softplus is None else softplus
    return selective_scan(**x, delta_softplus=softplus, mode=mode)


def outputs_and_grads(x, mode):
    """(y, final state, and the gradient of a loss using both w.r.t. every input)."""
    x = {k: v.detach().clone().requires_grad_(True) for k, v in x.items()}
    y, h = run(x, mode)
    weights = torch.linspace(-1, 1, y.numel(), dtype=y.dtype).reshape(y.shape)
    loss = (weights * y).sum() + (h * h).sum()
    grads = torch.autograd.grad(loss, list(x.values()))
    return {"y": y, "final_state": h} | {f"d{k}": gr for k, gr in zip(x, grads)}


def compare(x, mode, rtol):
    expected = outputs_and_grads(x, "reference")
    actual = outputs_and_grads(x, mode)
    for name in expected:
        assert_close_rel(actual[name], expected[name], rtol, name=f"{mode} {name}")


@pytest.mark.parametrize("full", [False, True], ids=["bare", "D-z-bias-softplus-h0"])
@pytest.mark.parametrize("G", [1, 2], ids=lambda g: f"G{g}")
@pytest.mark.parametrize("L", [1, 7, 13, 64, 129], ids=lambda n: f"L{n}")
def test_matches_reference_float64(mode, L, G, full):
    compare(make(L, G, full=full), mode, 1e-10)


@pytest.mark.parametrize("G,width", [(1, 37), (2, 40)], ids=["G1-D37", "G2-D40"])
def test_matches_reference_wide_float64(mode, G, width):
    """Widths that are not a multiple of the kernel's channel block (16), groups of 20 channels."""
    compare(make(13, G, width=width, N=3), mode, 1e-10)


@pytest.mark.parametrize("G,width", [(1, 130), (2, 160)], ids=["G1-D130", "G2-D160"])
def test_matches_reference_wide_blocks_float64(mode, G, width):
    """The kernel's forward takes 64-channel blocks when every thread still gets one (with one
    thread: whenever D/G >= 64); the tails are 2 and 16 channels. 70 steps cross a checkpoint."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        compare(make(70, G, width=width, N=3, batch=1), mode, 1e-10)
    finally:
        torch.set_num_threads(threads)


@pytest.mark.parametrize("G", [1, 2], ids=lambda g: f"G{g}")
@pytest.mark.parametrize("L", [13, 129], ids=lambda n: f"L{n}")
def test_matches_reference_float32(mode, L, G):
    compare(make(L, G, width=20, dtype=torch.float32), mode, 1e-4)


# float32 at 5e-4: with |dt A| ~ 300 the chunked backward's dq = g+ e^q - g- e^-q subtracts two
# terms of the size of the decayed contributions, and dA sums those over the steps (seen 1.6e-4).
@pytest.mark.parametrize(
    "dtype,rtol", [(torch.float64, 1e-10), (torch.float32, 5e-4)], ids=["f64", "f32"]
)
def test_strong_decay_stays_finite(mode, dtype, rtol):
    """|dt A| up to ~300 per step: the chunked mode must cut short chunks, not overflow."""
    x = make(40, width=5, N=3, dtype=dtype, full=False, seed=1, dt_scale=3.0)
    x["A"] = x["A"] * 50
    compare(x, mode, rtol)


def test_optional_inputs_one_at_a_time(mode):
    full = make(13, 2)
    for name in ["D", "z", "delta_bias", "initial_state"]:
        x = {k: v for k, v in full.items() if k in NAMES[:5] or k == name}
        compare(x, mode, 1e-10)


def test_only_one_output_used(mode):
    """Gradients when the loss uses only y or only the final state."""
    x = {k: v.requires_grad_(True) for k, v in make(13, 2).items()}
    for pick in (0, 1):
        losses = []
        for m in ("reference", mode):
            out = run(x, m)[pick]
            losses.append(torch.autograd.grad(out.sin().sum(), list(x.values()), materialize_grads=True))
        for name, a, e in zip(x, losses[1], losses[0]):
            assert_close_rel(a, e, 1e-10, name=f"{mode} d{name} (output {pick} only)")


def test_zero_step_is_identity(mode):
    """dt = 0 leaves the state unchanged: the masking rule the Mamba layer relies on."""
    x = make(9, 2, full=False)
    x["delta"] = F.softplus(x["delta"])
    padded = {k: v.clone() for k, v in x.items()}
    for k in ("u", "delta", "B", "C"):
        padded[k] = torch.cat([x[k][:, :4], torch.randn_like(x[k][:, :3]), x[k][:, 4:]], dim=1)
    padded["delta"][:, 4:7] = 0
    y, h = run(x, mode, softplus=False)
    yp, hp = run(padded, mode, softplus=False)
    assert_close_rel(hp, h, 1e-12, name="final state")
    assert_close_rel(torch.cat([yp[:, :4], yp[:, 7:]], 1), y, 1e-12, name="outputs of real steps")


def test_split_sequence_continues(mode):
    x = make(29, 2)
    y, h = run(x, mode)
    first = {k: (v[:, :11] if k in ("u", "delta", "z", "B", "C") else v) for k, v in x.items()}
    second = {k: (v[:, 11:] if k in ("u", "delta", "z", "B", "C") else v) for k, v in x.items()}
    y1, h1 = run(first, mode)
    y2, h2 = run(second | {"initial_state": h1}, mode)
    assert_close_rel(torch.cat([y1, y2], 1), y, 1e-10, name="split outputs")
    assert_close_rel(h2, h, 1e-10, name="split final state")


def test_cpp_gradcheck():
    if (reason := ss.cpp_unavailable_reason()) is not None:
        pytest.skip(f"the C++ kernel cannot be built here: {reason}")
    g = torch.Generator().manual_seed(3)
    Bsz, L, D, N, G = 1, 5, 4, 2, 2

    def r(*shape):
        return torch.randn(*shape, generator=g, dtype=torch.float64, requires_grad=True)

    args = (r(Bsz, L, D), torch.rand(Bsz, L, D, generator=g, dtype=torch.float64).requires_grad_(True),
            (-torch.rand(D, N, generator=g, dtype=torch.float64)).requires_grad_(True),
            r(Bsz, L, G, N), r(Bsz, L, G, N), r(D), r(Bsz, L, D), r(Bsz, D, N))  # fmt: skip
    # the custom op (torch.library) and its registered autograd; the chunk states are not an output
    assert torch.autograd.gradcheck(lambda *a: ss.cpp._forward_op(*a, True)[:2], args)
    torch.library.opcheck(ss.cpp._forward_op, (*args, True))  # fake impl, schema, autograd registration


@pytest.mark.parametrize("bound", [None, 1.5], ids=["chunks-of-4", "clamped-and-cut-by-bound"])
def test_chunked_gradcheck(monkeypatch, bound):
    """The chunked backward (per-chunk recomputation, in reverse) against finite differences, with
    chunks of 4 steps; then with a bound of 1.5 that cuts chunks and clamps the steps above it."""
    monkeypatch.setattr(chunked, "MAX_CHUNK", 4)
    if bound is not None:
        monkeypatch.setitem(chunked.BOUND, torch.float64, bound)
    x = make(11, 2, width=4, N=3, batch=2, dt_scale=1.0)
    if bound is not None:
        x["A"] = x["A"] * 2  # some |dt A| above the bound: clamped steps, chunks of one step
    names = list(x)
    args = tuple(v.detach().clone().requires_grad_(True) for v in x.values())

    def f(*a):
        return selective_scan(**dict(zip(names, a)), delta_softplus=True, mode="chunked")

    assert torch.autograd.gradcheck(f, args)


def test_chunked_gradient_of_states_only(monkeypatch):
    """Across chunks, the initial state's gradient when only the final state is used (y unused)."""
    monkeypatch.setattr(chunked, "MAX_CHUNK", 3)
    x = make(10, 1, width=3, N=2, batch=1)
    h0 = x["initial_state"].detach().clone().requires_grad_(True)
    grads = []
    for m in ("reference", "chunked"):
        _, h = run(x | {"initial_state": h0}, m)
        grads.append(torch.autograd.grad((h * h).sum(), h0)[0])
    assert_close_rel(grads[1], grads[0], 1e-12, name="d initial_state")


def test_chunked_saves_no_state_per_step():
    """Memory O(B D N C): what autograd keeps is (B, L, D)- and (B, L, N)-sized tensors plus one
    (B, D, N) state per chunk, never a (B, L, D, N) tensor (here twice all of those together)."""
    L, D, N = 512, 32, 16
    x = {k: v.detach().clone().requires_grad_(True) for k, v in make(L, 1, width=D, N=N, batch=1).items()}
    kept = saved_bytes(lambda: run(x, "chunked"))
    allowed = (10 * L * D + 2 * L * N + -(-L // MAX_CHUNK) * D * N + D * N + 4 * D) * 8  # float64
    assert kept <= allowed < L * D * N * 8, f"{kept} bytes saved for backward, expected <= {allowed}"


def test_reference_groups_and_single_step():
    """Channel d reads group d // (D/G); one step from zero is y = C (dt B u) + D u."""
    x = make(5, 2, width=6, full=False)
    y, h = selective_scan_reference(**x)
    for grp, channels in enumerate([slice(0, 3), slice(3, 6)]):
        part = {"u": x["u"][..., channels], "delta": x["delta"][..., channels], "A": x["A"][channels],
                "B": x["B"][:, :, grp], "C": x["C"][:, :, grp]}  # fmt: skip
        yg, hg = selective_scan_reference(**part)
        assert_close_rel(y[..., channels], yg, 1e-14, name=f"group {grp} outputs")
        assert_close_rel(h[:, channels], hg, 1e-14, name=f"group {grp} state")
    x = make(1, width=3, N=2)
    y, _ = selective_scan_reference(**x, delta_softplus=True)
    dt = F.softplus(x["delta"] + x["delta_bias"])[:, 0]  # (B, D)
    decay = torch.exp(dt[..., None] * x["A"])
    h = decay * x["initial_state"] + (dt * x["u"][:, 0])[..., None] * x["B"][:, 0, None]
    expected = ((h * x["C"][:, 0, None]).sum(-1) + x["D"] * x["u"][:, 0]) * F.silu(x["z"][:, 0])
    assert_close_rel(y[:, 0], expected, 1e-14, name="single step")


def test_chunk_spans_respect_bound():
    step = [0.5] * 100 + [100.0] + [7.0] * 30
    spans = chunk_spans(step, bound=20.0)
    assert spans[0][0] == 0 and spans[-1][1] == len(step)
    for (a, b), (c, _) in zip(spans, spans[1:]):
        assert b == c and a < b
    for a, b in spans:
        assert b - a <= MAX_CHUNK
        assert b - a == 1 or sum(min(s, 20.0) for s in step[a:b]) <= 20.0
    assert (100, 101) in spans  # a step over the bound stands alone
    assert BOUND[torch.float32] < 88  # e^bound must stay finite in float32


def _bad(**change):
    x = make(5, 2)
    x |= change
    return x


@pytest.mark.parametrize(
    "x,error,words",
    [
        (_bad(u=torch.zeros(2, 5)), ValueError, "u must be (B, L, D)"),
        (_bad(u=torch.zeros(2, 0, 6, dtype=torch.float64)), ValueError, "empty sequence"),
        (_bad(delta=torch.zeros(2, 5, 7, dtype=torch.float64)), ValueError, "delta must have shape"),
        (_bad(A=torch.zeros(5, 4, dtype=torch.float64)), ValueError, "A must be (D, N)"),
        (_bad(B=torch.zeros(2, 5, 3, dtype=torch.float64)), ValueError, "B must be (B, L, N)"),
        (_bad(C=torch.zeros(2, 5, 4, 4, dtype=torch.float64)), ValueError, "C has G = 4 groups"),
        (_bad(C=torch.zeros(2, 5, 4, dtype=torch.float64)), ValueError, "B has 2 groups but C has 1"),
        (_bad(D=torch.zeros(5, dtype=torch.float64)), ValueError, "D must have shape (6,)"),
        (_bad(initial_state=torch.zeros(2, 6, 3, dtype=torch.float64)), ValueError, "initial_state"),
        (_bad(z=torch.zeros(2, 5, 6)), TypeError, "z has dtype torch.float32"),
        (_bad(A=torch.zeros(6, 4, dtype=torch.complex128)), TypeError, "A has dtype torch.complex128"),
    ],
    ids=["u-rank", "empty", "delta-shape", "A-width", "B-state", "C-groups", "B-C-groups",
         "D-shape", "h0-shape", "z-dtype", "A-complex"],  # fmt: skip
)
def test_bad_inputs_raise_clear_errors(x, error, words):
    with pytest.raises(error, match=re.escape(words)):
        run(x, "reference")


def test_modes_that_cannot_run_say_why():
    x = make(5)
    with pytest.raises(ValueError, match="no mode 'fft'"):
        run(x, "fft")
    half = {k: v.to(torch.bfloat16) for k, v in x.items()}
    with pytest.raises(RuntimeError, match="float32/float64 CPU"):
        run(half, "cpp")


def test_auto_falls_back_to_chunked_and_logs_once(monkeypatch, caplog):
    monkeypatch.setattr(ss, "cpp_unavailable_reason", lambda: "no compiler (test)")
    monkeypatch.setattr(ssmkit.log, "_logged", set())
    x = make(7)
    with caplog.at_level(logging.WARNING):
        assert ss.MODES.resolve("auto", x["u"]) == "chunked"
        y, h = run(x, "auto")
        assert ss.MODES.resolve("auto", x["u"]) == "chunked"
    assert [r.getMessage().count("no compiler (test)") for r in caplog.records] == [1]
    yr, hr = run(x, "reference")
    assert_close_rel(y, yr, 1e-10, name="auto fallback output")
    with pytest.raises(RuntimeError, match="no compiler"):
        run(x, "cpp")


def test_auto_takes_cpp_when_it_can():
    if (reason := ss.cpp_unavailable_reason()) is not None:
        pytest.skip(f"the C++ kernel cannot be built here: {reason}")
    assert ss.MODES.resolve("auto", torch.zeros(1, 1, 1)) == "cpp"
    assert ss.MODES.resolve("auto", torch.zeros(1, 1, 1, dtype=torch.bfloat16)) == "chunked"
