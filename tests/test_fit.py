"""Fitting the hand model to keypoints: the initialisation on exact cases, recovery of known poses
from 3D and from 2D keypoints, determinism, visibility, and errors on bad input."""
import numpy as np
import pytest
import torch

from handlib.geometry import axis_angle_to_matrix, project_points
from handlib.mano import ManoLayer
from handlib.mano.prior import HandPosePrior
from handlib.runtime import torch_threads
from handlib.mano.fit import (FitResult, fit_to_keypoints_2d, fit_to_keypoints_3d, fit_to_vertices,
                              init_from_keypoints_2d, init_from_keypoints_3d)

NUM_PCA = 12
K = torch.tensor([[400.0, 0.0, 112.0], [0.0, 400.0, 112.0], [0.0, 0.0, 1.0]])


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """These fits are small: one torch thread runs them fastest on a busy machine."""
    with torch_threads(1):
        yield


@pytest.fixture(scope="module")
def layer():
    return ManoLayer()  # the open hand (or $HANDLIB_MANO_MODEL), 45-D axis-angle finger pose


@pytest.fixture(scope="module")
def pca_layer():
    return ManoLayer(num_pca_comps=NUM_PCA)


def random_hands(layer, batch, seed, depth=0.45):
    """Known hands in front of the camera: plausible poses from the pose prior (or random PCA
    coefficients), random shapes and rotations."""
    generator = torch.Generator().manual_seed(seed)
    prior = HandPosePrior.from_model(layer.model)
    if layer.num_pca_comps is None:
        hand_pose = prior.sample_poses(batch, generator)
    else:
        hand_pose = 0.7 * torch.randn(batch, layer.num_pca_comps, generator=generator)
    params = dict(hand_pose=hand_pose, betas=0.5 * torch.randn(batch, 10, generator=generator),
                  global_orient=prior.sample_global_orientations(batch, generator),
                  transl=torch.tensor([0.0, 0.0, depth]) + 0.03 * torch.randn(batch, 3, generator=generator))
    with torch.no_grad():
        return params, layer(**params)


def test_init_3d_is_exact_for_a_rigidly_moved_rest_hand(layer):
    # The rest hand, rotated and moved: the palm alone gives back the rotation and translation.
    orient, transl = torch.tensor([[0.4, -2.0, 1.0]]), torch.tensor([[0.05, -0.02, 0.4]])
    target = layer(global_orient=orient, transl=transl).joints.detach()
    rotation, found = init_from_keypoints_3d(layer, target)
    assert torch.allclose(rotation, axis_angle_to_matrix(orient), atol=1e-4)
    assert torch.allclose(found, transl, atol=1e-5)


def test_fit_3d_recovers_known_poses(layer):
    params, truth = random_hands(layer, batch=3, seed=1)
    result = fit_to_keypoints_3d(layer, truth.joints, steps=150)
    assert isinstance(result, FitResult)
    error_mm = 1000 * (result.output.joints - truth.joints).norm(dim=-1).mean(1)
    print("3D fit, mean joint error (mm):", error_mm.numpy().round(2))
    assert (error_mm < 5.0).all()
    assert torch.allclose(result.keypoint_error_3d * 1000, error_mm, atol=1e-3)
    # The returned parameters reproduce the returned hand.
    again = layer(hand_pose=result.hand_pose, betas=result.betas, global_orient=result.global_orient,
                  transl=result.transl)
    assert torch.allclose(again.joints, result.output.joints, atol=1e-6)
    assert 10 < len(result.loss_history) <= 150  # L-BFGS: one entry per energy evaluation
    assert result.loss_history[-1] < 0.01 * result.loss_history[0]


def test_fit_to_vertices_goes_from_the_keypoint_fit_to_the_mesh(layer):
    """The vertex fit starts where the keypoint fit ended and reaches the mesh the keypoints do not fix."""
    params, truth = random_hands(layer, batch=2, seed=5)
    start = fit_to_keypoints_3d(layer, truth.joints, steps=40)
    result = fit_to_vertices(layer, truth.vertices, start, steps=150)
    before, after = ((fit.output.vertices - truth.vertices).norm(dim=-1).mean(1) for fit in (start, result))
    print("vertex error (mm): keypoint fit", (1000 * before).numpy().round(2), "vertex fit", (1000 * after).numpy().round(2))
    assert (after < 0.5 * before).all() and (after < 2e-3).all()
    assert result.loss_history[0] > result.loss_history[-1] and result.keypoint_error_3d is None
    with pytest.raises(ValueError, match="vertices"):
        fit_to_vertices(layer, truth.vertices[:, :100], start)
    with pytest.raises(ValueError, match="start"):
        fit_to_vertices(layer, truth.vertices[:1], start)


@pytest.mark.parametrize("optimizer,rotation", [("adam", "6d"), ("lbfgs", "axis_angle")])
def test_fit_3d_options(layer, optimizer, rotation):
    _, truth = random_hands(layer, batch=2, seed=2)
    result = fit_to_keypoints_3d(layer, truth.joints, steps=150, optimizer=optimizer, rotation=rotation)
    assert (result.keypoint_error_3d < 0.005).all()


def test_fit_3d_in_pca_space(pca_layer):
    params, truth = random_hands(pca_layer, batch=2, seed=6)
    result = fit_to_keypoints_3d(pca_layer, truth.joints, steps=150)
    assert result.hand_pose.shape == (2, NUM_PCA)
    assert (result.keypoint_error_3d < 0.005).all()


def test_fit_3d_ignores_hidden_keypoints(layer):
    _, truth = random_hands(layer, batch=2, seed=3)
    corrupted = truth.joints.clone()
    corrupted[:, 8] = float("nan")  # a fingertip missing, as datasets store it ...
    corrupted[:, 12] += 0.2  # ... and one 20 cm off ...
    visibility = torch.ones(2, 21)
    visibility[:, [8, 12]] = 0  # ... and marked as not seen
    result = fit_to_keypoints_3d(layer, corrupted, visibility, steps=150)
    error = (result.output.joints - truth.joints).norm(dim=-1)  # (2, 21)
    assert (error[:, visibility[0] > 0].mean(1) < 0.005).all()
    assert (result.keypoint_error_3d < 0.005).all()  # measured on the visible keypoints


def test_fit_2d_recovers_the_projection(layer):
    params, truth = random_hands(layer, batch=3, seed=4)
    keypoints_2d = project_points(truth.joints, K)
    result = fit_to_keypoints_2d(layer, keypoints_2d, K, steps=200)
    error_px = result.reprojection_error_2d
    root_relative = (result.output.joints - result.output.joints[:, :1]) - (truth.joints - truth.joints[:, :1])
    error_mm = 1000 * root_relative.norm(dim=-1).mean(1)
    depth_mm = 1000 * (result.transl[:, 2] - params["transl"][:, 2])
    print("2D fit: reprojection (px)", error_px.numpy().round(2), "root-relative 3D (mm)", error_mm.numpy().round(1),
          "depth error (mm)", depth_mm.numpy().round(1))
    assert (error_px < 2.0).all()
    assert torch.isfinite(error_mm).all()
    assert torch.allclose(project_points(result.output.joints, K).sub(keypoints_2d).norm(dim=-1).mean(1), error_px)


def test_init_2d_finds_depth_and_rotation_of_a_rigid_hand(layer):
    orient, transl = torch.tensor([[2.0, 0.3, -0.5]]), torch.tensor([[0.02, 0.01, 0.5]])
    target = layer(global_orient=orient, transl=transl).joints.detach()
    rotations, transls = init_from_keypoints_2d(layer, project_points(target, K), K, num_hypotheses=2)
    assert rotations.shape == (1, 2, 3, 3) and transls.shape == (1, 2, 3)
    rotation, found = rotations[:, 0], transls[:, 0]  # the best
    placed = layer(global_orient=torch.zeros(1, 3)).joints.detach()
    wrist = layer().mano_joints[:, 0].detach()
    placed = (placed - wrist[:, None]) @ rotation.transpose(1, 2) + wrist[:, None] + found[:, None]
    assert (project_points(placed, K) - project_points(target, K))[:, [0, 1, 5, 9, 13, 17]].norm(dim=-1).max() < 1.0
    assert abs(float(found[0, 2]) - 0.5) < 0.05


def test_fit_is_deterministic_and_leaves_the_global_random_state_alone(layer):
    _, truth = random_hands(layer, batch=2, seed=5)
    keypoints_2d = project_points(truth.joints, K)
    torch.manual_seed(1234)
    before = torch.get_rng_state()
    first = fit_to_keypoints_2d(layer, keypoints_2d, K, steps=10, num_starts=4, seed=3)
    assert torch.equal(torch.get_rng_state(), before)
    second = fit_to_keypoints_2d(layer, keypoints_2d, K, steps=10, num_starts=4, seed=3)
    assert torch.equal(first.hand_pose, second.hand_pose) and np.array_equal(first.loss_history, second.loss_history)


def test_fit_rejects_bad_input(layer):
    joints = torch.zeros(2, 21, 3)
    with pytest.raises(ValueError, match=r"keypoints_3d: expected shape \(B, 21, 3\).*batch dimension"):
        fit_to_keypoints_3d(layer, joints[0])
    with pytest.raises(ValueError, match="keypoints_3d: expected a torch.Tensor"):
        fit_to_keypoints_3d(layer, np.zeros((2, 21, 3)))
    with pytest.raises(ValueError, match="keypoints_2d: expected shape"):
        fit_to_keypoints_2d(layer, joints, K)
    with pytest.raises(ValueError, match="K: expected shape"):
        fit_to_keypoints_2d(layer, joints[..., :2], torch.eye(3).expand(3, 3, 3))
    with pytest.raises(ValueError, match="focal"):
        fit_to_keypoints_2d(layer, joints[..., :2], torch.zeros(3, 3))
    with pytest.raises(ValueError, match="visibility: expected shape"):
        fit_to_keypoints_3d(layer, joints, visibility=torch.ones(2, 20))
    with pytest.raises(ValueError, match="at least 3 visible"):
        fit_to_keypoints_3d(layer, joints, visibility=torch.zeros(2, 21))
    with pytest.raises(ValueError, match="keypoints_3d: visible keypoints must be finite"):
        fit_to_keypoints_3d(layer, torch.full((2, 21, 3), float("nan")))
    with pytest.raises(ValueError, match="optimizer"):
        fit_to_keypoints_3d(layer, joints, optimizer="sgd")
    with pytest.raises(ValueError, match="rotation"):
        fit_to_keypoints_3d(layer, joints, rotation="euler")
    with pytest.raises(ValueError, match="layer"):
        fit_to_keypoints_3d("MANO_RIGHT.pkl", joints)
