"""Learn a delayed filter on an unbounded stream: RTRL vs truncated BPTT on the same tokens.

    python examples/online_rtrl.py                    # ~25 s on 2 idle CPU cores; writes online_rtrl.png

The stream: x_t ~ N(0, 1) per stream, target y_t = sum_k kappa_k x_{t-k}, a unit-energy Gaussian bump
of lags around ``--delay`` (so Var y = 1 and predicting 0 scores MSE 1). The student is an
``OnlineModel`` (linear encoder -> one ``--mixer`` layer -> linear readout) whose recurrence starts
with short memory (LRU ring |lambda| in [0.5, 0.9]), so it must learn slower modes.

- rtrl:       OnlineLearner, exact online gradient, an optimizer step every ``--update-every`` tokens;
- tbptt-W:    truncated BPTT, windows of ``--window`` tokens with the state carried across (one step
              per window): its gradient cannot see the dependence at lag ``--delay`` > W;
- tbptt-long: truncated BPTT with windows of ``--long-window`` tokens (near full BPTT).

All three see the same tokens and start from the same weights; the final loss is the mean MSE
over the last 10 % of the tokens. The loss curves go to ``--out`` (matplotlib, the plot extra).
"""
from __future__ import annotations

import argparse
import copy
import math
import time

import torch

from ssmkit.layers.state import detach_state
from ssmkit.training.online import SUPPORTED, OnlineLearner, build_online_model


class DelayedFilterStream:
    """B unbounded streams; ``next(n)`` -> (x (B, n, 1), y (B, n, 1)), continuing the previous call."""

    def __init__(self, streams: int, delay: int, seed: int) -> None:
        width = max(delay / 5, 1.0)
        lags = torch.arange(int(delay + 3 * width) + 1, dtype=torch.float64)
        k = torch.exp(-0.5 * ((lags - delay) / width) ** 2)
        self.kernel = (k / k.norm()).float()  # (K,)
        self.gen = torch.Generator().manual_seed(seed)
        self.past = torch.zeros(streams, len(lags) - 1)  # the last K-1 inputs, oldest first

    def next(self, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        x = torch.randn(self.past.shape[0], n, generator=self.gen)
        ext = torch.cat([self.past, x], 1)
        y = torch.nn.functional.conv1d(ext[:, None], self.kernel.flip(0)[None, None])[:, 0]
        self.past = ext[:, -self.past.shape[1]:]
        return x[..., None], y[..., None]


def train_rtrl(model, stream, args) -> list[float]:
    opt = torch.optim.Adam(model.parameters(), lr=args.lr)
    learner = OnlineLearner(model, opt, update_every=args.update_every, grad_clip=1.0)
    learner.reset(args.streams)
    losses = []
    for _ in range(0, args.tokens, args.log_every):
        x, y = stream.next(args.log_every)
        losses.append(learner.observe(x, y).mean().item())
    print(f"  rtrl memory (floats): {learner.memory()}")
    return losses


def train_tbptt(model, stream, args, window: int) -> list[float]:
    opt = torch.optim.Adam(model.parameters(), lr=args.lr)
    losses, state, acc = [], None, []
    for _ in range(0, args.tokens, window):
        x, y = stream.next(window)
        out, state = model(x, state, return_state=True)
        per_token = ((out - y) ** 2).mean(dim=(0, 2))  # (W,)
        opt.zero_grad(set_to_none=True)
        per_token.sum().backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        state = detach_state(state)
        acc.extend(per_token.tolist())
        while len(acc) >= args.log_every:
            losses.append(sum(acc[:args.log_every]) / args.log_every)
            acc = acc[args.log_every:]
    return losses


def plot(curves: dict[str, list[float]], args) -> None:
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as err:
        raise SystemExit("plotting needs matplotlib: pip install 'ssmkit[plot]' (or pass --no-plot)") from err
    fig, ax = plt.subplots(figsize=(7, 4))
    for name, ls in curves.items():
        ax.plot([(i + 1) * args.log_every for i in range(len(ls))], ls, label=name)
    ax.axhline(1.0, color="grey", lw=0.8, ls=":", label="predict 0")
    ax.set(xlabel="tokens per stream", ylabel="MSE (target variance 1)", yscale="log",
           title=f"{args.mixer}: delayed filter, lag {args.delay}, {args.streams} streams")
    ax.legend()
    fig.tight_layout()
    fig.savefig(args.out, dpi=120)
    print(f"wrote {args.out}")


def main(argv=None) -> dict[str, float]:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--mixer", default="lru", choices=SUPPORTED)
    p.add_argument("--tokens", type=int, default=8000, help="tokens per stream")
    p.add_argument("--streams", type=int, default=16)
    p.add_argument("--d-model", type=int, default=16)
    p.add_argument("--d-state", type=int, default=32)
    p.add_argument("--delay", type=int, default=16)
    p.add_argument("--window", type=int, default=4, help="truncated BPTT window (short)")
    p.add_argument("--long-window", type=int, default=64)
    p.add_argument("--update-every", type=int, default=4)
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--log-every", type=int, default=200)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="online_rtrl.png")
    p.add_argument("--no-plot", action="store_true")
    p.add_argument("--threads", type=int, default=1, help="torch threads (tiny tensors: 1 is fastest)")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)

    torch.manual_seed(args.seed)
    short_memory = {"lru": {"r_min": 0.5, "r_max": 0.9}, "rglru": {"a_min": 0.5, "a_max": 0.9},
                    "s4d": {"dt_min": 1e-2, "dt_max": 1e-1}, "dss": {"dt_min": 1e-2, "dt_max": 1e-1},
                    "s5": {"dt_min": 1e-2, "dt_max": 1e-1}}[args.mixer]
    state_cfg = {"lru_width": args.d_state} if args.mixer == "rglru" else {"d_state": args.d_state}
    base = build_online_model(args.mixer, 1, 1, args.d_model, 1, **state_cfg, **short_memory)
    runs = {"rtrl": lambda m, s: train_rtrl(m, s, args),
            f"tbptt-{args.window}": lambda m, s: train_tbptt(m, s, args, args.window),
            "tbptt-long": lambda m, s: train_tbptt(m, s, args, args.long_window)}
    curves, final = {}, {}
    for name, run in runs.items():
        t0 = time.perf_counter()
        curves[name] = run(copy.deepcopy(base), DelayedFilterStream(args.streams, args.delay, args.seed))
        tail = curves[name][-max(1, math.ceil(len(curves[name]) / 10)):]
        final[name] = sum(tail) / len(tail)
        print(f"{name:>12}: final MSE {final[name]:.4f}  (first {curves[name][0]:.4f}, "
              f"{time.perf_counter() - t0:.1f} s)")
    if not args.no_plot:
        plot(curves, args)
    return final


if __name__ == "__main__":
    FINAL = main()
