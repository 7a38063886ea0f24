"""Serialization (Hilbert and Z-order are bijections on the grid; Hilbert steps to adjacent cells),
FPS and kNN against brute force, arch=point_cloud per order, arch=pointnet, bad settings named."""
from __future__ import annotations

import itertools

import pytest
import torch

from ssmkit.models import BackboneConfig, DataSpec, create_model
from ssmkit.models.layouts import PointSet
from ssmkit.models.serialize import (
    ORDERS, farthest_point_sample, hilbert_index, knn_groups, serial_order, voxel_cells, z_order_index,
)

SPEC = DataSpec("classify", 8, None, 3, 0, layout=PointSet(64))


@pytest.mark.parametrize("bits", [1, 2, 3])
def test_curves_are_bijections_on_the_grid_and_hilbert_moves_to_a_neighbour(bits):
    side = 1 << bits
    cells = torch.tensor(list(itertools.product(range(side), repeat=3)))
    for index in (hilbert_index(cells, bits), z_order_index(cells, bits)):
        assert sorted(index.tolist()) == list(range(side ** 3))
    walk = cells[hilbert_index(cells, bits).argsort()]
    assert ((walk[1:] - walk[:-1]).abs().sum(1) == 1).all()  # every step of the curve: one adjacent cell
    z = cells[z_order_index(cells, bits).argsort()]
    assert z[:8].tolist() == [[a, b, c] for a in (0, 1) for b in (0, 1) for c in (0, 1)]  # x the high bit


def test_farthest_point_sampling_and_knn_match_brute_force():
    g = torch.Generator().manual_seed(0)
    pts = torch.rand(2, 40, 3, generator=g, dtype=torch.float64)
    idx = farthest_point_sample(pts, 6)
    for b in range(2):
        chosen = [0]
        for _ in range(5):
            d = torch.cdist(pts[b], pts[b, chosen]).amin(1)
            chosen.append(int(d.argmax()))
        assert idx[b].tolist() == chosen
    centers = pts[:, :3]
    groups = knn_groups(pts, centers, 4)
    d = torch.cdist(centers, pts)
    want = pts[0, d[0, 1].argsort()[:4]] - centers[0, 1]
    assert torch.allclose(groups[0, 1], want)


def test_serial_orders_are_permutations_and_trans_reverses_the_axes():
    c = torch.rand(3, 20, 3, generator=torch.Generator().manual_seed(1)) * 2 - 1
    for order in ORDERS:
        perm = serial_order(c, order, 4, torch.Generator().manual_seed(0))
        assert torch.equal(perm.sort(1).values, torch.arange(20).expand(3, 20))
    cells = voxel_cells(c, 4)
    perm = serial_order(c, "trans_z", 4)
    keys = z_order_index(cells.flip(-1), 4)
    assert (keys.gather(1, perm).diff(dim=1) >= 0).all()


@pytest.mark.parametrize("mixer, orders", [("mamba", ("hilbert", "trans_hilbert")), ("s4d", ("z",)),
                                           ("attention", ("random",)), ("s4d", ("fps", "trans_z"))])
def test_logits_for_every_order(mixer, orders):
    torch.manual_seed(0)
    model = create_model("point_cloud", BackboneConfig(d_model=8, n_layers=1, mixer=mixer), SPEC, n_groups=8,
                         group_size=4, orders=orders, grid_bits=3)
    x = torch.rand(2, 64, 3) * 2 - 1
    assert model.tokens(x).shape == (2, 8 * len(orders), 8)
    assert model(x).shape == (2, 8)
    model.eval()
    assert torch.equal(model(x), model(x))  # evaluation is deterministic, random order included


def test_pointnet_is_invariant_to_the_point_order():
    torch.manual_seed(0)
    model = create_model("pointnet", BackboneConfig(d_model=8, n_layers=1), SPEC)
    x = torch.rand(2, 64, 3)
    assert torch.allclose(model(x), model(x[:, torch.randperm(64)]), atol=1e-6)


@pytest.mark.parametrize("cfg, spec, message", [
    ({"n_groups": 65}, SPEC, "'n_groups': 65 patches need at least as many points; the task gives 64"),
    ({"group_size": 100}, SPEC, "'group_size'"),
    ({"orders": ("spiral",)}, SPEC, "'orders'"),
    ({}, DataSpec("classify", 8, None, 3, 0), "'point_cloud' reads PointSet data"),
], ids=["groups", "group-size", "order", "not-points"])
def test_bad_settings_are_named(cfg, spec, message):
    with pytest.raises(ValueError, match=message):
        create_model("point_cloud", BackboneConfig(d_model=8, n_layers=1), spec, **cfg)


def test_bad_inputs_are_named():
    model = create_model("point_cloud", BackboneConfig(d_model=8, n_layers=1), SPEC, n_groups=8, group_size=4)
    with pytest.raises(ValueError, match=r"\(B, 64, 3\)"):
        model(torch.rand(2, 63, 3))
