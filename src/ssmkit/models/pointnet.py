"""``arch=pointnet``: the non-sequence baseline of the point-cloud tasks (PointNet, Qi et al. 2017).

A shared MLP lifts every point (3 -> D -> D -> 2D, GELU), a max over the points gives one
order-invariant feature (B, 2D), and an MLP (2D -> D -> classes) classifies it. No input or feature
transform nets (the T-nets), no mixer (the run's mixer is ignored): the yardstick that reads the set
as a set, against which ``arch=point_cloud`` reads it as sequences.
"""
from __future__ import annotations

from torch import Tensor, nn

from ..config import check
from .backbone import BackboneConfig
from .kinds import TaskKind
from .layouts import PointSet, require_layout
from .point_cloud import check_points
from .registry import DataSpec, NoConfig, register_arch


class PointNet(nn.Module):
    """``model(points (B, N, 3), mask=None) -> logits (B, classes)``."""

    def __init__(self, backbone: BackboneConfig, spec: DataSpec) -> None:
        super().__init__()
        self.n_points = require_layout(spec.layout, PointSet, "pointnet", "shapes3d").n_points
        check(spec.kind == TaskKind.CLASSIFY, "arch", f"'pointnet' classifies point sets, the task's kind is '{spec.kind}'")
        D = backbone.d_model
        self.point_mlp = nn.Sequential(nn.Linear(3, D), nn.GELU(), nn.Linear(D, D), nn.GELU(), nn.Linear(D, 2 * D))
        self.head = nn.Sequential(nn.Linear(2 * D, D), nn.GELU(), nn.Linear(D, spec.n_out))

    def forward(self, inputs: Tensor, mask: Tensor | None = None) -> Tensor:
        check_points("pointnet", inputs, mask, self.n_points)
        return self.head(self.point_mlp(inputs).amax(1))


@register_arch("pointnet")
def build_pointnet(backbone: BackboneConfig, spec: DataSpec, pool: str, cfg: NoConfig) -> PointNet:
    """PointNet without T-nets: shared per-point MLP + max pooling (docs/point_clouds.md)."""
    return PointNet(backbone, spec)
