"""The pose prior: anatomical frames, limits, conversions, the penalty and its gradient, the
samplers (determinism, coupling, grasp types, palm towards / away from the camera), left hands."""
import math

import numpy as np
import pytest
import torch

from handlib.geometry import axis_angle_to_matrix
from handlib.mano import load_mano
from handlib.mano.layer import ASSET_DIR, ManoLayer
from handlib.mano.prior import GRASPS, KINDS, HandPosePrior, anatomical_frames, joint_limits


@pytest.fixture(scope="module")
def prior():
    return HandPosePrior.from_model(ASSET_DIR / "MANO_RIGHT.pkl")


def test_joint_limits_are_anatomical():
    limits = np.rad2deg(joint_limits())
    assert limits.shape == (15, 3, 2) and np.all(limits[..., 0] < limits[..., 1])
    index_mcp, index_pip, index_dip = limits[0], limits[1], limits[2]
    assert index_mcp[0].tolist() == [-20, 90] and index_pip[0].tolist() == [0, 110]
    assert index_dip[0, 1] == 80 and index_mcp[1].tolist() == [-20, 20]
    assert np.all(np.abs(limits[:12, 2]) <= 10)  # fingers barely twist


def test_frames_are_orthonormal_and_right_handed(prior):
    f = prior.frames.double()
    assert torch.allclose(f @ f.transpose(1, 2), torch.eye(3, dtype=torch.float64).expand(15, 3, 3), atol=1e-6)
    assert torch.allclose(torch.linalg.det(f), torch.ones(15, dtype=torch.float64), atol=1e-6)
    # MANO's convention, stated in the course: +z flexes the four fingers on the flat right hand.
    assert torch.all(f[:12, 0, 2] > 0.9)


def test_positive_flexion_curls_towards_the_palm(prior):
    model = load_mano(ASSET_DIR / "MANO_RIGHT.pkl")
    layer = ManoLayer(model)
    angles = torch.zeros(1, 15, 3)
    angles[:, :12, 0] = math.radians(60)  # flex every finger joint by 60 degrees
    bent = layer(hand_pose=prior.to_axis_angle(angles))
    flat = layer()
    tips = [8, 12, 16, 20]  # index, middle, ring, pinky tips in the course order
    moved = bent.joints[0, tips] - flat.joints[0, tips]
    assert torch.all(moved @ prior.palm_normal > 0.02)  # > 2 cm towards the palm


def test_conversions_round_trip_and_are_linear(prior):
    angles = torch.randn(5, 15, 3)
    assert torch.allclose(prior.to_anatomical(prior.to_axis_angle(angles)), angles, atol=1e-5)
    pose = torch.randn(5, 45)
    assert torch.allclose(prior.to_axis_angle(prior.to_anatomical(pose)), pose, atol=1e-5)
    with pytest.raises(ValueError, match="pose"):
        prior.to_anatomical(torch.zeros(5, 48))
    with pytest.raises(ValueError, match="angles"):
        prior.to_axis_angle(torch.zeros(5, 45))


def test_limit_violation_value_and_gradient(prior):
    assert prior.limit_violation(torch.zeros(2, 45)).abs().max() == 0  # the flat hand is allowed
    angles = torch.zeros(1, 15, 3, dtype=torch.float64)
    angles[0, 1, 0] = math.radians(-30)  # index PIP bent backwards by 30 degrees: 30 beyond the limit 0
    pose = prior.to_axis_angle(angles.float()).double()
    assert torch.isclose(prior.limit_violation(pose), torch.tensor([math.radians(30) ** 2], dtype=torch.float64),
                         rtol=1e-4).all()
    pose.requires_grad_(True)
    prior_double = HandPosePrior.from_model(ASSET_DIR / "MANO_RIGHT.pkl")
    prior_double.frames, prior_double.limits = prior_double.frames.double(), prior_double.limits.double()
    assert torch.autograd.gradcheck(prior_double.limit_violation, (pose,))
    clamped = prior.clamp(pose.detach().float())
    assert prior.limit_violation(clamped).max() < 1e-8


def test_samples_are_deterministic_within_limits_and_varied(prior):
    a, b = prior.sample_poses(300, generator=3), prior.sample_poses(300, generator=3)
    assert a.shape == (300, 45) and a.dtype == torch.float32 and torch.equal(a, b)
    assert not torch.equal(a, prior.sample_poses(300, generator=4))
    assert prior.limit_violation(a).max() < 1e-8
    assert a.std(0).min() > 0.005  # every coordinate varies
    for kind in KINDS:
        assert prior.sample_poses(4, generator=0, kind=kind).shape == (4, 45)
    with pytest.raises(ValueError, match="kind"):
        prior.sample_poses(4, kind="karate")


def test_finger_coupling(prior):
    angles, kinds = prior.sample_angles(2000, generator=1)
    pip, dip = angles[:, 1, 0], angles[:, 2, 0]  # index PIP and DIP flexion
    assert np.corrcoef(pip, dip)[0, 1] > 0.85
    curled = pip > 0.5
    assert 0.5 < float((dip[curled] / pip[curled]).median()) < 0.8  # DIP ~ 2/3 PIP
    index_mcp, middle_mcp = angles[:, 0, 0], angles[:, 3, 0]
    assert np.corrcoef(index_mcp, middle_mcp)[0, 1] > 0.4  # neighbouring fingers move together
    assert set(kinds) == set(GRASPS)


def test_grasp_types_look_like_their_names(prior):
    fist = prior.sample_angles(50, generator=0, kind="fist")[0]
    open_hand = prior.sample_angles(50, generator=0, kind="open")[0]
    point = prior.sample_angles(50, generator=0, kind="point")[0]
    assert fist[:, :12, 0].mean() > math.radians(60) and open_hand[:, :12, 0].abs().mean() < math.radians(15)
    assert point[:, 0:3, 0].mean() < math.radians(20) < point[:, 3:6, 0].mean()  # index straight, middle curled


@pytest.mark.parametrize("palm", ["towards", "away", "any"])
def test_global_orientations(prior, palm):
    rotations = prior.sample_global_orientations(500, generator=2, palm=palm)
    assert rotations.shape == (500, 3)
    assert torch.equal(rotations, prior.sample_global_orientations(500, generator=2, palm=palm))
    normal_z = (axis_angle_to_matrix(rotations) @ prior.palm_normal)[:, 2]  # camera looks along +z
    if palm == "towards":
        assert torch.all(normal_z < -0.3)
    elif palm == "away":
        assert torch.all(normal_z > 0.3)
    else:
        assert (normal_z < 0).float().mean().item() == pytest.approx(0.5, abs=0.08)
    with pytest.raises(ValueError, match="palm"):
        prior.sample_global_orientations(2, palm="up")


def test_left_hand_frames_mirror_the_right(prior):
    left = HandPosePrior.from_model(ASSET_DIR / "MANO_LEFT.pkl")
    assert not left.is_right
    angles = prior.sample_angles(10, generator=5)[0]
    right_pose, left_pose = prior.to_axis_angle(angles), left.to_axis_angle(angles)
    flip = torch.tensor([1.0, -1.0, -1.0])
    assert torch.allclose(left_pose, (right_pose.unflatten(1, (15, 3)) * flip).flatten(1), atol=1e-5)
    assert torch.allclose(left.palm_normal, prior.palm_normal * torch.tensor([-1.0, 1, 1]), atol=1e-6)  # the mirror image


def test_frames_of_any_mano_file(random_mano_file):
    frames = HandPosePrior.from_model(random_mano_file).frames
    assert torch.allclose(frames @ frames.transpose(1, 2), torch.eye(3).expand(15, 3, 3), atol=1e-5)
    with pytest.raises(ValueError, match="rest_joints"):
        anatomical_frames(np.zeros((15, 3)))
