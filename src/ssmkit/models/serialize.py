"""Point-cloud serialization: space-filling curves over a voxel grid, farthest point sampling, kNN.

PointMamba (Liang et al. 2024) turns an unordered point set into sequences a causal mixer can read:
patch centres from farthest point sampling, their k nearest neighbours as patches, and the centres
ordered along space-filling curves over a voxel grid, so that tokens near in the sequence are near in
space. Shapes: B batch, N points, G groups (patch centres), K neighbours per group.

- ``hilbert_index``: Skilling's algorithm ("Programming the Hilbert curve", AIP Conf. Proc. 707,
  2004): axes -> "transpose" by undoing the excess work and Gray-encoding, then the bits interleaved
  from the most significant; consecutive indices are adjacent cells (tested), a bijection from the
  (2^bits)^3 cells onto 0 .. 2^(3 bits) - 1;
- ``z_order_index``: Morton order, the coordinates' bits interleaved (x most significant per level);
- ``ORDERS``: ``hilbert`` / ``z`` on (x, y, z), ``trans_hilbert`` / ``trans_z`` on the axes reversed
  (z, y, x), PointMamba's "Trans-Hilbert"; ``fps`` the sampling order itself; ``random`` a uniform
  permutation (no spatial order: the ablation).
"""
from __future__ import annotations

import torch
from torch import Tensor

ORDERS = ("hilbert", "trans_hilbert", "z", "trans_z", "fps", "random")


def hilbert_index(cells: Tensor, bits: int) -> Tensor:
    """Integer cells (..., n) in [0, 2^bits) -> their index (...,) along the n-D Hilbert curve."""
    X = [c.clone() for c in cells.long().unbind(-1)]
    n = len(X)
    q = 1 << (bits - 1)
    while q > 1:  # inverse undo excess work
        p = q - 1
        for i in range(n):
            high = (X[i] & q) != 0
            t = (X[0] ^ X[i]) & p
            X[0] = torch.where(high, X[0] ^ p, X[0] ^ t)
            if i:
                X[i] = torch.where(high, X[i], X[i] ^ t)
        q >>= 1
    for i in range(1, n):  # Gray encode
        X[i] = X[i] ^ X[i - 1]
    t = torch.zeros_like(X[0])
    q = 1 << (bits - 1)
    while q > 1:
        t = torch.where((X[n - 1] & q) != 0, t ^ (q - 1), t)
        q >>= 1
    X = [x ^ t for x in X]
    return interleave(X, bits)


def z_order_index(cells: Tensor, bits: int) -> Tensor:
    """Integer cells (..., n) in [0, 2^bits) -> their Morton (Z-order) index (...,)."""
    return interleave(list(cells.long().unbind(-1)), bits)


def interleave(coords: list[Tensor], bits: int) -> Tensor:
    """The bits of n coordinates interleaved, most significant level first, coordinate 0 first."""
    index = torch.zeros_like(coords[0])
    for b in reversed(range(bits)):
        for c in coords:
            index = (index << 1) | ((c >> b) & 1)
    return index


def voxel_cells(points: Tensor, bits: int) -> Tensor:
    """Points (..., 3) in [-1, 1] -> integer voxel cells (..., 3) of the 2^bits grid over that cube."""
    side = 1 << bits
    return ((points.clamp(-1, 1) + 1) / 2 * side).long().clamp(0, side - 1)


def serial_order(centers: Tensor, order: str, bits: int, generator: torch.Generator | None = None) -> Tensor:
    """Centres (B, G, 3) -> the permutation (B, G) that reads them in ``order`` (ties: sampling order)."""
    B, G, _ = centers.shape
    if order == "fps":
        return torch.arange(G, device=centers.device).expand(B, G)
    if order == "random":
        keys = torch.rand(B, G, generator=generator).to(centers.device)
        return keys.argsort(1)
    cells = voxel_cells(centers, bits)
    if order.startswith("trans_"):
        cells = cells.flip(-1)
    index = hilbert_index(cells, bits) if order.endswith("hilbert") else z_order_index(cells, bits)
    return torch.sort(index, dim=1, stable=True).indices


def farthest_point_sample(points: Tensor, n: int) -> Tensor:
    """Indices (B, n) of n points chosen greedily, each the farthest from those chosen before,
    starting from point 0 (points (B, N, 3) arrive in random order, so the start is random)."""
    B, N, _ = points.shape
    chosen = torch.zeros(B, n, dtype=torch.long, device=points.device)
    dist = torch.full((B, N), float("inf"), dtype=points.dtype, device=points.device)
    rows = torch.arange(B, device=points.device)
    last = torch.zeros(B, dtype=torch.long, device=points.device)
    for i in range(1, n):
        d = (points - points[rows, last][:, None]).pow(2).sum(-1)
        dist = torch.minimum(dist, d)
        last = dist.argmax(1)
        chosen[:, i] = last
    return chosen


def knn_groups(points: Tensor, centers: Tensor, k: int) -> Tensor:
    """The k nearest points (B, G, k, 3) of every centre (B, G, 3), relative to the centre, nearest first."""
    idx = torch.cdist(centers, points).topk(k, dim=-1, largest=False).indices  # (B, G, k)
    B = points.shape[0]
    near = points[torch.arange(B, device=points.device)[:, None, None], idx]
    return near - centers[:, :, None]
