"""shapes3d: surface samplers against their definitions, random poses, normalization, fixed eval sets."""
from __future__ import annotations

import math

import pytest
import torch

from ssmkit.tasks import create_task
from ssmkit.tasks.shapes3d import MESHES, SHAPES, Shapes3DConfig, random_rotations, sample_shape


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_samples_lie_on_their_surfaces():
    sphere = sample_shape("sphere", 500, _gen())
    assert torch.allclose(sphere.norm(dim=1), torch.ones(500))
    cube = sample_shape("cube", 500, _gen())
    assert torch.allclose(cube.abs().amax(1), torch.ones(500))  # on a face: one coordinate is +-1
    torus = sample_shape("torus", 500, _gen())
    ring = torch.stack([torus[:, :2].norm(dim=1) - 1.0, torus[:, 2]], 1).norm(dim=1)
    assert torch.allclose(ring, torch.full((500,), 0.4), atol=1e-5)
    octa = sample_shape("octahedron", 500, _gen())
    assert torch.allclose(octa.abs().sum(1), torch.ones(500), atol=1e-5)


def test_mesh_sampling_is_uniform_by_area():
    # the cube's 6 faces get equal shares; the cylinder's lateral surface (area 4 pi) vs its caps (2 pi)
    cube = sample_shape("cube", 60_000, _gen(1))
    axis = cube.abs().argmax(1)  # the face a point is on: its +-1 coordinate
    faces = axis * 2 + (cube.gather(1, axis[:, None])[:, 0] > 0).long()
    share = torch.bincount(faces, minlength=6).float() / 60_000
    assert (share - 1 / 6).abs().max() < 0.01
    cyl = sample_shape("cylinder", 60_000, _gen(2))
    caps = ((cyl[:, 2].abs() - 1).abs() < 1e-5).float().mean()
    assert abs(float(caps) - 2 * math.pi / (6 * math.pi)) < 0.01
    assert len(MESHES) == 6 and set(MESHES) < set(SHAPES)


def test_rotations_are_proper_and_the_clouds_normalized_and_shuffled():
    R = random_rotations(64, _gen(3))
    assert torch.allclose(R @ R.transpose(1, 2), torch.eye(3).expand(64, 3, 3), atol=1e-5)
    assert torch.allclose(torch.linalg.det(R), torch.ones(64), atol=1e-5)
    task = create_task("shapes3d", n_points=64, n_train=16, n_eval=16)
    b = next(task.batches("test", 16))
    assert b.inputs.shape == (16, 64, 3) and b.targets.max() < 8 and task.info.layout.n_points == 64
    assert torch.allclose(b.inputs.norm(dim=-1).amax(1), torch.ones(16))
    assert b.inputs.mean(1).abs().max() < 0.15  # centred before scaling (then shuffled)
    assert torch.equal(next(task.batches("test", 16)).inputs, b.inputs)  # a fixed test set


@pytest.mark.parametrize("kw, field", [({"n_points": 0}, "n_points"), ({"scale_jitter": 1.0}, "scale_jitter"),
                                       ({"noise": -1}, "noise")])
def test_bad_settings_name_the_field(kw, field):
    with pytest.raises(ValueError, match=f"'{field}'"):
        Shapes3DConfig(**kw)
