"""Structured dynamical systems: learn a flow from short windows, score long closed-loop roll-outs.

The volume-preserving Transformer's experiments (Brantner et al. 2023): trajectories of

- ``rigid_body``: Euler's equations of a free rigid body, m' = m × (m / I) for the angular momentum
  m in R^3 with moments of inertia I = (2, 1, 2/3) (the paper's); initial m uniform on the unit
  sphere. Invariants: the Casimir |m|^2 and the energy sum_i m_i^2 / (2 I_i). The flow preserves
  volume (its vector field is divergence-free: d m'_i / d m_i = 0).
- ``coupled_oscillators``: two unit masses on springs k_1 = 1, k_2 = 1.5 coupled by k = 0.5,
  z = (q_1, q_2, p_1, p_2), q'' = -K q; initial z ~ N(0, 0.7^2). Invariant: the energy
  (p_1^2 + p_2^2 + k_1 q_1^2 + k_2 q_2^2 + k (q_1 - q_2)^2) / 2. Hamiltonian, so symplectic and
  volume-preserving.

Each system is integrated with scipy's DOP853 (rtol 1e-10, atol 1e-12) and sampled every ``dt``
for ``steps`` samples per trajectory; trajectories are split into train / val / test by index
(initial conditions drawn from ``split_seed``) and cached. Inputs are the states z_t (B, L, C);
the targets (kind ``trajectory``) are the mean velocities over the next step, (z_{t+1} - z_t) / dt,
so a model predicts z_{t+1} = z_t + dt * output (a learned one-step integrator). Training windows
have ``length`` states (random starts per epoch); val and test score the same one-step error on
consecutive windows of their trajectories.

``rollout_metrics`` is the paper's test: the model reads the first ``length`` states of each test
trajectory and then runs on its own predictions (``step``-equivalent calls with the carried state)
for the rest of it, ``steps - length`` steps. Reported per horizon h (steps after the last observed
state): the relative error ||ẑ - z|| / ||z|| and each invariant's relative drift
|I(ẑ) - I(z_0)| / |I(z_0)|, means over the test trajectories.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable, ClassVar, Iterator

import numpy as np
import torch
from torch import Tensor

from ..config import build_config, check
from . import sources
from .base import Batch, Task, TaskInfo, register_task, split_generator
from .cache import cached_arrays

_FORMAT = 1  # version of the generator, part of the cache key
HORIZONS = (1, 10, 30, 100, 300, 1000, 3000)  # roll-out steps reported (those within the trajectory, and its end)


@dataclasses.dataclass(frozen=True)
class System:
    """A dynamical system: its vector field (numpy, any leading dims), initial conditions, invariants."""

    name: str
    dim: int
    field: Callable[[np.ndarray], np.ndarray]  # z (..., C) -> dz/dt (..., C)
    initial: Callable[[np.random.Generator, int], np.ndarray]  # (rng, n) -> (n, C)
    invariants: dict[str, Callable[[Any], Any]]  # name -> I(z (..., C)) -> (...), numpy or torch
    about: str


_INERTIA = (2.0, 1.0, 2.0 / 3.0)


def _rigid_field(m: np.ndarray) -> np.ndarray:
    w = m / np.asarray(_INERTIA)
    return np.cross(m, w)


def _sphere(rng: np.random.Generator, n: int) -> np.ndarray:
    g = rng.standard_normal((n, 3))
    return g / np.linalg.norm(g, axis=-1, keepdims=True)


_K1, _K2, _K = 1.0, 1.5, 0.5


def _oscillator_field(z: np.ndarray) -> np.ndarray:
    q1, q2, p1, p2 = (z[..., i] for i in range(4))
    return np.stack([p1, p2, -_K1 * q1 - _K * (q1 - q2), -_K2 * q2 - _K * (q2 - q1)], axis=-1)


SYSTEMS = {
    "rigid_body": System(
        "rigid_body", 3, _rigid_field, _sphere,
        {"casimir": lambda m: (m ** 2).sum(-1),
         "energy": lambda m: sum(m[..., i] ** 2 / (2 * _INERTIA[i]) for i in range(3))},
        "Euler's equations of a free rigid body, I = (2, 1, 2/3), m0 on the unit sphere"),
    "coupled_oscillators": System(
        "coupled_oscillators", 4, _oscillator_field, lambda rng, n: 0.7 * rng.standard_normal((n, 4)),
        {"energy": lambda z: (z[..., 2] ** 2 + z[..., 3] ** 2 + _K1 * z[..., 0] ** 2 + _K2 * z[..., 1] ** 2
                              + _K * (z[..., 0] - z[..., 1]) ** 2) / 2},
        "two unit masses, springs k1 = 1, k2 = 1.5, coupling k = 0.5, z0 ~ N(0, 0.49)"),
}


@dataclasses.dataclass
class DynamicsConfig:
    length: int = 32  # L: states per training window (and the roll-out's warm-up)
    steps: int = 512  # samples per trajectory
    dt: float = 0.1  # time between samples
    n_train: int = 128  # trajectories per split
    n_val: int = 16
    n_test: int = 16
    split_seed: int = 0

    LENGTH_KNOB: ClassVar[str] = "length = L states per window (the roll-out starts after L states)"

    def at_length(self, length: int) -> "DynamicsConfig":
        return dataclasses.replace(self, length=length)

    def __post_init__(self) -> None:
        check(self.length >= 1, "length", f"must be an int >= 1, got {self.length!r}")
        check(self.steps >= self.length + 2, "steps",
              f"must leave at least one roll-out step after a window: steps >= length + 2 = {self.length + 2}, "
              f"got {self.steps}")
        check(self.dt > 0, "dt", f"must be > 0, got {self.dt}")
        for field in ("n_train", "n_val", "n_test"):
            check(getattr(self, field) >= 1, field, f"must be an int >= 1, got {getattr(self, field)!r}")


def integrate(system: System, z0: np.ndarray, steps: int, dt: float) -> np.ndarray:
    """(n, C) initial states -> (n, steps, C) samples at t = 0, dt, ..., with scipy's DOP853."""
    integrate_ = sources.import_module("scipy.integrate", "scipy", f"the {system.name} task")
    n, C = z0.shape
    t = dt * np.arange(steps)
    sol = integrate_.solve_ivp(lambda _, y: system.field(y.reshape(n, C)).ravel(), (0.0, t[-1]), z0.ravel(),
                               method="DOP853", t_eval=t, rtol=1e-10, atol=1e-12)
    if not sol.success:
        raise RuntimeError(f"{system.name}: the integrator failed: {sol.message}")
    return sol.y.reshape(n, C, steps).transpose(0, 2, 1)


class DynamicsTask(Task):
    """One system's trajectories (``SYSTEMS``), windows for training and roll-outs for scoring."""

    def __init__(self, system: System, **cfg: Any) -> None:
        self.system = system
        self.cfg = c = build_config(DynamicsConfig, cfg)
        counts = {"train": c.n_train, "val": c.n_val, "test": c.n_test}
        settings = {"system": system.name, "format": _FORMAT, "steps": c.steps, "dt": c.dt, "seed": c.split_seed,
                    **counts}

        def build() -> dict[str, np.ndarray]:
            z0 = system.initial(np.random.default_rng(c.split_seed), sum(counts.values()))
            z = integrate(system, z0, c.steps, c.dt)
            ends = np.cumsum(list(counts.values()))
            return dict(zip(counts, np.split(z, ends[:-1])))

        data = cached_arrays(system.name, settings, build)
        self.trajectories = {s: torch.from_numpy(np.asarray(data[s])) for s in counts}  # (n, steps, C) float64
        per = max(1, c.steps // (c.length + 1))  # windows per trajectory
        self.info = TaskInfo(
            name=system.name, kind="trajectory", length=c.length, d_input=system.dim, n_classes=system.dim,
            source=f"integrated with scipy DOP853 (rtol 1e-10): {system.about}",
            sizes={s: n * per for s, n in counts.items()},
            notes=f"{c.steps} samples per trajectory, dt = {c.dt}; targets (z_t+1 - z_t) / dt; invariants "
                  f"{sorted(system.invariants)}; rollout_metrics: {c.steps - c.length} closed-loop steps",
        )

    def batches(self, split: str, batch_size: int, seed: int = 0, epoch: int = 0) -> Iterator[Batch]:
        self._check_split(split)
        z, L = self.trajectories[split], self.cfg.length
        n, steps = z.shape[:2]
        per = self.info.sizes[split] // n
        if split == "train":
            g = split_generator(split, seed, epoch, 0)
            traj = torch.randperm(n * per, generator=g) % n
            starts = torch.randint(0, steps - L, (n * per,), generator=g)
        else:
            traj = torch.arange(n).repeat_interleave(per)
            starts = (L + 1) * torch.arange(per).repeat(n)
        for i in range(0, n * per, batch_size):
            window = z[traj[i : i + batch_size, None], starts[i : i + batch_size, None] + torch.arange(L + 1)]
            yield Batch(window[:, :-1].float(), ((window[:, 1:] - window[:, :-1]) / self.cfg.dt).float())

    @torch.no_grad()
    def rollout_metrics(self, model: torch.nn.Module) -> dict[str, Any]:
        """Closed-loop roll-outs of the test trajectories (module doc): error and invariant drift per horizon."""
        device = next(model.parameters()).device
        z = self.trajectories["test"]
        L, dt = self.cfg.length, self.cfg.dt
        total = z.shape[1] - L  # predicted states: z_L .. z_{steps-1}
        was_training = model.training
        model.eval()
        try:
            out, state = model(z[:, :L].float().to(device), state=None, return_state=True)
            cur = z[:, L - 1].to(device) + dt * out[:, -1].double()
            preds = [cur]
            for _ in range(total - 1):
                out, state = model(cur[:, None].float(), state=state, return_state=True)
                cur = cur + dt * out[:, 0].double()
                preds.append(cur)
        finally:
            model.train(was_training)
        pred = torch.stack(preds, 1).cpu()  # (n, total, C) float64: the state accumulates in float64
        true = z[:, L:]
        horizons = sorted({h for h in HORIZONS if h <= total} | {total})
        at = torch.tensor(horizons) - 1
        error = ((pred - true).norm(dim=-1) / true.norm(dim=-1))[:, at].mean(0)
        drift = {}
        for name, inv in self.system.invariants.items():
            ref = inv(z[:, 0])[:, None]
            drift[name] = ((inv(pred[:, at]) - ref).abs() / ref.abs()).mean(0).tolist()
        return {"warmup": L, "dt": dt, "horizons": horizons, "error": error.tolist(), "invariant_drift": drift}


def _register(name: str) -> None:
    @register_task(name, DynamicsConfig)
    def make(**cfg: Any) -> DynamicsTask:
        return DynamicsTask(SYSTEMS[name], **cfg)


for _name in SYSTEMS:
    _register(_name)
