"""shapes3d: point clouds sampled from generated 3-D shapes in random poses; classify the shape.

No real shape set ships in a package that installs here (ModelNet and ShapeNet are downloads;
the PyPI names that mention them are download clients), so the clouds are generated, with the
nuisances of real scans. Eight classes, each a surface: sphere, cube, cylinder (with caps), cone
(with base), torus (radii 1 and 0.4), square pyramid, octahedron, tetrahedron. Per example:

1. ``n_points`` points uniform on the surface (by area: faces of the polyhedra and of the fine
   triangle fans of the cylinder and cone drawn in proportion to their area; the sphere as a
   normalized Gaussian; the torus by rejection on the tube angle, weight 1 + 0.4 cos phi);
2. a random pose: a uniform rotation (QR of a Gaussian matrix, signs fixed) and a scale per axis
   uniform in [1 - ``scale_jitter``, 1 + ``scale_jitter``];
3. Gaussian noise of std ``noise`` per coordinate, then centred and scaled into the unit ball
   (ModelNet's usual normalization), and the points shuffled (their order says nothing).

Inputs (B, n_points, 3) float; targets (B,) long; ``TaskInfo.layout`` a ``PointSet``.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Any, ClassVar

import torch
from torch import Tensor

from ..config import build_config, check
from ..models.layouts import PointSet
from .base import Batch, TaskInfo, register_task
from .synthetic import GeneratedTask

SHAPES = ("sphere", "cube", "cylinder", "cone", "torus", "pyramid", "octahedron", "tetrahedron")
_SEGMENTS = 48  # triangles around the cylinder and the cone


def _cube() -> Tensor:
    corners = torch.tensor([[x, y, z] for x in (-1.0, 1.0) for y in (-1.0, 1.0) for z in (-1.0, 1.0)])
    faces = []
    for axis in range(3):
        for side in (-1.0, 1.0):
            quad = corners[corners[:, axis] == side]  # 4 corners, ordered so that 0-1-3 and 0-3-2 tile it
            faces += [quad[[0, 1, 3]], quad[[0, 3, 2]]]
    return torch.stack(faces)


def _fan(apex_z: float | None) -> Tensor:
    """The cylinder (apex None: radius 1, z in [-1, 1], both caps) or the cone (apex at z = apex_z)."""
    a = torch.linspace(0, 2 * math.pi, _SEGMENTS + 1)
    ring = torch.stack([a.cos(), a.sin(), torch.full_like(a, -1.0)], 1)
    bottom, faces = torch.tensor([0.0, 0.0, -1.0]), []
    for i in range(_SEGMENTS):
        p, q = ring[i], ring[i + 1]
        faces.append(torch.stack([bottom, p, q]))
        if apex_z is None:
            p2, q2 = p + torch.tensor([0, 0, 2.0]), q + torch.tensor([0, 0, 2.0])
            faces += [torch.stack([p, q, q2]), torch.stack([p, q2, p2]), torch.stack([torch.tensor([0, 0, 1.0]), p2, q2])]
        else:
            faces.append(torch.stack([torch.tensor([0, 0, apex_z]), p, q]))
    return torch.stack(faces)


def _polyhedron(name: str) -> Tensor:
    if name == "pyramid":
        b = torch.tensor([[-1.0, -1, -1], [1, -1, -1], [1, 1, -1], [-1, 1, -1]])
        apex = torch.tensor([0.0, 0, 1])
        return torch.stack([b[[0, 1, 2]], b[[0, 2, 3]]] + [torch.stack([b[i], b[(i + 1) % 4], apex]) for i in range(4)])
    if name == "octahedron":
        v = torch.tensor([[1.0, 0, 0], [-1, 0, 0], [0, 1, 0], [0, -1, 0], [0, 0, 1], [0, 0, -1]])
        return torch.stack([torch.stack([v[i], v[j], v[k]]) for i in (0, 1) for j in (2, 3) for k in (4, 5)])
    v = torch.tensor([[1.0, 1, 1], [1, -1, -1], [-1, 1, -1], [-1, -1, 1]])  # tetrahedron
    return torch.stack([v[[0, 1, 2]], v[[0, 1, 3]], v[[0, 2, 3]], v[[1, 2, 3]]])


MESHES = {"cube": _cube(), "cylinder": _fan(None), "cone": _fan(1.0), "pyramid": _polyhedron("pyramid"),
          "octahedron": _polyhedron("octahedron"), "tetrahedron": _polyhedron("tetrahedron")}


def sample_mesh(triangles: Tensor, n: int, generator: torch.Generator) -> Tensor:
    """n points (n, 3) uniform on the surface of triangles (T, 3, 3)."""
    a, b, c = triangles.unbind(1)
    area = torch.linalg.cross(b - a, c - a).norm(dim=-1)
    face = torch.multinomial(area, n, replacement=True, generator=generator)
    r1, r2 = torch.rand(n, 1, generator=generator), torch.rand(n, 1, generator=generator)
    s = r1.sqrt()  # uniform barycentric coordinates (1 - s, s (1 - r2), s r2)
    return (1 - s) * a[face] + s * (1 - r2) * b[face] + s * r2 * c[face]


def sample_torus(n: int, generator: torch.Generator, R: float = 1.0, r: float = 0.4) -> Tensor:
    """n points uniform on the torus surface: the tube angle phi has density proportional to R + r cos phi."""
    out = []
    while sum(len(o) for o in out) < n:
        phi = torch.rand(2 * n, generator=generator) * 2 * math.pi
        keep = torch.rand(2 * n, generator=generator) * (R + r) < R + r * phi.cos()
        out.append(phi[keep])
    phi = torch.cat(out)[:n]
    theta = torch.rand(n, generator=generator) * 2 * math.pi
    return torch.stack([(R + r * phi.cos()) * theta.cos(), (R + r * phi.cos()) * theta.sin(), r * phi.sin()], 1)


def sample_shape(name: str, n: int, generator: torch.Generator) -> Tensor:
    """n points (n, 3) uniform on the surface of shape ``name`` in its canonical pose."""
    if name == "sphere":
        x = torch.randn(n, 3, generator=generator)
        return x / x.norm(dim=1, keepdim=True)
    if name == "torus":
        return sample_torus(n, generator)
    return sample_mesh(MESHES[name], n, generator)


def random_rotations(batch: int, generator: torch.Generator) -> Tensor:
    """(B, 3, 3) rotations uniform on SO(3): QR of a Gaussian matrix with R's diagonal made positive."""
    q, r = torch.linalg.qr(torch.randn(batch, 3, 3, generator=generator, dtype=torch.float64))
    q = q * torch.sign(torch.diagonal(r, dim1=1, dim2=2))[:, None, :]
    det = torch.linalg.det(q)
    q[:, :, 0] *= det[:, None]  # a reflection (det -1) becomes a rotation
    return q.float()


@dataclasses.dataclass
class Shapes3DConfig:
    n_points: int = 512  # N points per cloud
    scale_jitter: float = 0.2  # scale per axis uniform in [1 - jitter, 1 + jitter]
    noise: float = 0.01  # std of the Gaussian noise per coordinate (before normalizing into the unit ball)
    n_train: int = 8_000  # clouds per training epoch (generated afresh per epoch and seed)
    n_eval: int = 800  # clouds in each of val and test (fixed)

    FIXED_LENGTH: ClassVar[str] = "the points of one cloud (n_points)"

    def __post_init__(self) -> None:
        check(self.n_points >= 1, "n_points", f"must be >= 1, got {self.n_points}")
        check(0 <= self.scale_jitter < 1, "scale_jitter", f"must be in [0, 1), got {self.scale_jitter}")
        check(self.noise >= 0, "noise", f"must be >= 0, got {self.noise}")
        check(self.n_train >= 1 and self.n_eval >= 1, "n_train", "n_train and n_eval must be >= 1")


def shapes_batch(cfg: Shapes3DConfig, batch_size: int, generator: torch.Generator) -> Batch:
    """-> Batch(points (B, N, 3), labels (B,)): the recipe of the module docstring."""
    labels = torch.randint(0, len(SHAPES), (batch_size,), generator=generator)
    points = torch.stack([sample_shape(SHAPES[c], cfg.n_points, generator) for c in labels.tolist()])
    scale = 1 + cfg.scale_jitter * (2 * torch.rand(batch_size, 1, 3, generator=generator) - 1)
    points = (points * scale) @ random_rotations(batch_size, generator).transpose(1, 2)
    points = points + cfg.noise * torch.randn(points.shape, generator=generator)
    points = points - points.mean(1, keepdim=True)
    points = points / points.norm(dim=-1).amax(1)[:, None, None]
    shuffle = torch.rand(batch_size, cfg.n_points, generator=generator).argsort(1)
    return Batch(points[torch.arange(batch_size)[:, None], shuffle], labels)


@register_task("shapes3d", Shapes3DConfig)
class Shapes3D(GeneratedTask):
    def __init__(self, **cfg: Any) -> None:
        self.cfg = c = build_config(Shapes3DConfig, cfg)
        self.info = TaskInfo(
            name="shapes3d", kind="classify", length=c.n_points, source="generated (surfaces of 8 shapes)",
            sizes={"train": c.n_train, "val": c.n_eval, "test": c.n_eval}, n_classes=len(SHAPES), d_input=3,
            layout=PointSet(c.n_points),
            notes=(f"{c.n_points} points on a {'/'.join(SHAPES)}; random rotation, scale jitter "
                   f"{c.scale_jitter:g}, noise {c.noise:g}, unit ball"),
        )

    def make_batch(self, batch_size: int, generator: torch.Generator) -> Batch:
        return shapes_batch(self.cfg, batch_size, generator)
