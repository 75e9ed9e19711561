"""Rotations, projection and Procrustes: known values, round trips, the singular angles, gradients."""
import math

import pytest
import torch

from handlib.geometry import (axis_angle_to_matrix, axis_angle_to_quaternion, matrix_to_axis_angle,
                              matrix_to_quaternion, matrix_to_rotation_6d, procrustes, procrustes_align,
                              project_points, quaternion_to_axis_angle, quaternion_to_matrix,
                              rotation_6d_to_matrix, skew, unproject_points)


def random_axis_angles(n=500, seed=0, max_angle=math.pi):
    generator = torch.Generator().manual_seed(seed)
    axis = torch.nn.functional.normalize(torch.randn(n, 3, generator=generator), dim=-1)
    return axis * max_angle * torch.rand(n, 1, generator=generator)


def test_known_rotation_by_hand():
    # 90 degrees about z takes x to y; as a quaternion: (cos 45, 0, 0, sin 45).
    R = axis_angle_to_matrix(torch.tensor([0.0, 0.0, math.pi / 2]))
    assert torch.allclose(R @ torch.tensor([1.0, 0.0, 0.0]), torch.tensor([0.0, 1.0, 0.0]), atol=1e-7)
    q = axis_angle_to_quaternion(torch.tensor([0.0, 0.0, math.pi / 2]))
    assert torch.allclose(q, torch.tensor([math.cos(math.pi / 4), 0, 0, math.sin(math.pi / 4)]), atol=1e-7)
    assert torch.allclose(skew(torch.tensor([1.0, 2, 3])) @ torch.tensor([4.0, 5, 6]),
                          torch.linalg.cross(torch.tensor([1.0, 2, 3]), torch.tensor([4.0, 5, 6])))


def test_round_trips():
    aa = random_axis_angles(max_angle=3.1)
    R = axis_angle_to_matrix(aa)
    assert torch.allclose(R @ R.transpose(-1, -2), torch.eye(3).expand_as(R), atol=1e-6)
    assert torch.allclose(torch.linalg.det(R), torch.ones(len(R)), atol=1e-6)
    assert torch.allclose(matrix_to_axis_angle(R), aa, atol=1e-4)
    assert torch.allclose(quaternion_to_matrix(axis_angle_to_quaternion(aa)), R, atol=1e-6)
    assert torch.allclose(quaternion_to_axis_angle(matrix_to_quaternion(R)), aa, atol=1e-4)
    assert torch.allclose(rotation_6d_to_matrix(matrix_to_rotation_6d(R)), R, atol=1e-6)


def test_zero_and_pi_are_finite_and_exact():
    special = torch.tensor([[0.0, 0, 0], [1e-9, 0, 0], [math.pi, 0, 0], [0, 0, -math.pi], [0, math.pi - 1e-6, 0]])
    R = axis_angle_to_matrix(special)
    assert torch.isfinite(R).all()
    back = axis_angle_to_matrix(matrix_to_axis_angle(R))
    assert torch.allclose(back, R, atol=1e-5)
    assert torch.allclose(matrix_to_axis_angle(R)[2].abs(), torch.tensor([math.pi, 0, 0]), atol=1e-5)
    for function in (axis_angle_to_matrix, axis_angle_to_quaternion):
        x = torch.zeros(3, 3, requires_grad=True)
        function(x).square().sum().backward()
        assert torch.isfinite(x.grad).all()
    x = torch.zeros(4, 3, requires_grad=True)
    matrix_to_axis_angle(axis_angle_to_matrix(x)).sum().backward()
    assert torch.allclose(x.grad, torch.ones(4, 3), atol=1e-5)  # the round trip is the identity at zero too


def test_gradcheck():
    aa = (0.7 * torch.randn(4, 3, dtype=torch.float64)).requires_grad_(True)
    assert torch.autograd.gradcheck(axis_angle_to_matrix, (aa,))
    assert torch.autograd.gradcheck(lambda x: matrix_to_axis_angle(axis_angle_to_matrix(x)), (aa,))
    six = torch.randn(4, 6, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(rotation_6d_to_matrix, (six,))


def test_projection_by_hand_and_back():
    K = torch.tensor([[100.0, 0, 64], [0, 120.0, 32], [0, 0, 1]])
    points = torch.tensor([[[0.1, -0.05, 0.5], [0.0, 0.0, 2.0]]])
    pixels = project_points(points, K)
    assert torch.allclose(pixels, torch.tensor([[[84.0, 20.0], [64.0, 32.0]]]))
    assert torch.allclose(unproject_points(pixels, points[..., 2], K), points, atol=1e-6)


def test_procrustes_recovers_a_similarity():
    generator = torch.Generator().manual_seed(1)
    points = torch.randn(3, 21, 3, generator=generator)
    R = axis_angle_to_matrix(random_axis_angles(3, seed=2))
    target = 1.7 * points @ R.transpose(1, 2) + torch.tensor([0.1, -0.2, 0.5])
    s, rotation, t = procrustes(points, target)
    assert torch.allclose(s, torch.full((3,), 1.7), atol=1e-5)
    assert torch.allclose(rotation, R, atol=1e-5)
    assert torch.allclose(procrustes_align(points, target), target, atol=1e-5)
    # Rigid only: the scale stays 1; a mirrored target still gives a proper rotation.
    s, rotation, _ = procrustes(points, target * torch.tensor([-1.0, 1, 1]), scale=False)
    assert torch.allclose(s, torch.ones(3)) and torch.allclose(torch.linalg.det(rotation), torch.ones(3), atol=1e-5)
    # Zero weights ignore outliers.
    corrupted = target.clone()
    corrupted[:, 0] += 10.0
    weights = torch.ones(3, 21)
    weights[:, 0] = 0
    assert torch.allclose(procrustes(points, corrupted, weights=weights)[1], R, atol=1e-5)
    with pytest.raises(ValueError, match=r"weights: expected a tensor of shape \(3, 21\)"):
        procrustes(points, target, weights=weights[0])


@pytest.mark.parametrize("function,bad", [
    (axis_angle_to_matrix, torch.zeros(2, 4)), (quaternion_to_matrix, torch.zeros(2, 3)),
    (matrix_to_axis_angle, torch.zeros(2, 3, 4)), (rotation_6d_to_matrix, torch.zeros(5)),
])
def test_wrong_shapes_name_the_argument(function, bad):
    with pytest.raises(ValueError, match="expected shape"):
        function(bad)
    with pytest.raises(ValueError, match="points, target"):
        procrustes(torch.zeros(1, 5, 3), torch.zeros(1, 4, 3))
