"""``arch=point_cloud``: PointMamba-style classification of point sets over any mixer stack.

PointMamba (Liang et al. 2024), over ssmkit's mixers (``models.serialize`` for the geometry):

    points (B, N, 3) -> G centres by farthest point sampling -> the k nearest points of each, relative
    -> patch token = max over the k points of MLP(point) (a mini-PointNet) + MLP(centre)   (B, G, D)
    -> for each order of ``orders`` (space-filling curves over a 2^grid_bits voxel grid): the tokens
       sorted along it, scaled and shifted by that order's learned (gamma, beta) (the order indicator)
    -> the sequences concatenated (B, len(orders) * G, D) -> Backbone (causal mixers)
    -> mean over the tokens -> Linear -> logits (B, classes)

PointMamba's default reads Hilbert then Trans-Hilbert; ``orders`` chooses the orders, so their
effect can be measured (docs/point_clouds.md). The non-sequence baseline is ``arch=pointnet``.
"""
from __future__ import annotations

import dataclasses

import torch
from torch import Tensor, nn

from ..config import check
from .backbone import Backbone, BackboneConfig
from .kinds import TaskKind
from .layouts import PointSet, require_layout
from .registry import DataSpec, register_arch
from .serialize import ORDERS, farthest_point_sample, knn_groups, serial_order

_TASKS = "shapes3d"


@dataclasses.dataclass
class PointCloudConfig:
    n_groups: int = 32  # G: patch centres from farthest point sampling
    group_size: int = 16  # k: points per patch (nearest neighbours of the centre)
    orders: tuple[str, ...] = ("hilbert", "trans_hilbert")  # serializations, concatenated (models.serialize.ORDERS)
    grid_bits: int = 6  # the voxel grid of the curves: 2^grid_bits cells per axis over [-1, 1]

    def __post_init__(self) -> None:
        check(self.n_groups >= 1, "n_groups", f"must be >= 1, got {self.n_groups}")
        check(self.group_size >= 1, "group_size", f"must be >= 1, got {self.group_size}")
        check(len(self.orders) >= 1 and all(o in ORDERS for o in self.orders), "orders",
              f"must be one or more of {ORDERS}, got {self.orders!r}")
        check(1 <= self.grid_bits <= 16, "grid_bits", f"must be in 1..16, got {self.grid_bits}")


def check_points(arch: str, inputs: Tensor, mask: Tensor | None, n_points: int) -> None:
    if inputs.dim() != 3 or inputs.shape[1:] != (n_points, 3) or not inputs.is_floating_point():
        raise ValueError(f"arch '{arch}' expects float points (B, N, 3) = (B, {n_points}, 3), got "
                         f"{inputs.dtype} {tuple(inputs.shape)}")
    if mask is not None and not bool(mask.all()):
        raise ValueError(f"arch '{arch}' reads whole point sets: the mask marks padded points")


class PointPatchEmbed(nn.Module):
    """Patches (B, G, k, 3) and centres (B, G, 3) -> tokens (B, G, D)."""

    def __init__(self, d_model: int) -> None:
        super().__init__()
        self.point_mlp = nn.Sequential(nn.Linear(3, d_model), nn.GELU(), nn.Linear(d_model, d_model))
        self.center_mlp = nn.Sequential(nn.Linear(3, d_model), nn.GELU(), nn.Linear(d_model, d_model))

    def forward(self, patches: Tensor, centers: Tensor) -> Tensor:
        return self.point_mlp(patches).amax(2) + self.center_mlp(centers)


class PointCloudModel(nn.Module):
    """``model(points (B, N, 3), mask=None) -> logits (B, classes)``."""

    def __init__(self, backbone: BackboneConfig, spec: DataSpec, cfg: PointCloudConfig) -> None:
        super().__init__()
        layout = require_layout(spec.layout, PointSet, "point_cloud", _TASKS)
        check(spec.kind == TaskKind.CLASSIFY, "arch", f"'point_cloud' classifies point sets, the task's kind is '{spec.kind}'")
        check(layout.n_points >= cfg.n_groups, "n_groups",
              f"{cfg.n_groups} patches need at least as many points; the task gives {layout.n_points}")
        check(layout.n_points >= cfg.group_size, "group_size",
              f"{cfg.group_size} points per patch exceed the task's {layout.n_points} points")
        self.cfg, self.n_points = cfg, layout.n_points
        D = backbone.d_model
        self.embed = PointPatchEmbed(D)
        self.order_scale = nn.Parameter(torch.ones(len(cfg.orders), D))
        self.order_shift = nn.Parameter(torch.zeros(len(cfg.orders), D))
        self.backbone = Backbone(backbone)
        self.head = nn.Linear(D, spec.n_out)

    def tokens(self, points: Tensor) -> Tensor:
        """Points (B, N, 3) -> the serialized sequences (B, len(orders) * G, D)."""
        B = points.shape[0]
        rows = torch.arange(B, device=points.device)[:, None]
        centers = points[rows, farthest_point_sample(points, self.cfg.n_groups)]
        tokens = self.embed(knn_groups(points, centers, self.cfg.group_size), centers)
        # order=random: a fresh permutation per training forward, one fixed permutation at evaluation
        generator = None if self.training else torch.Generator().manual_seed(0)
        seqs = []
        for i, order in enumerate(self.cfg.orders):
            perm = serial_order(centers, order, self.cfg.grid_bits, generator)
            seqs.append(tokens[rows, perm] * self.order_scale[i] + self.order_shift[i])
        return torch.cat(seqs, 1)

    def forward(self, inputs: Tensor, mask: Tensor | None = None) -> Tensor:
        check_points("point_cloud", inputs, mask, self.n_points)
        return self.head(self.backbone(self.tokens(inputs)).mean(1))


@register_arch("point_cloud", PointCloudConfig)
def build_point_cloud(backbone: BackboneConfig, spec: DataSpec, pool: str, cfg: PointCloudConfig) -> PointCloudModel:
    """PointMamba-style serialized patches over any mixer (docs/point_clouds.md)."""
    return PointCloudModel(backbone, spec, cfg)
