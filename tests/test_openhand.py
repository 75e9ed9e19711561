"""The open hand asset: MANO's format and counts, a closed manifold skin, sums and ranges of the
blend weights, joints inside the skin, the shape and pose spaces, smplx agreement, the mirror
image, and a deterministic build."""
import contextlib
import io

import numpy as np
import pytest
import torch

from handlib.mano import ManoLayer, load_mano
from handlib.mano.layer import ASSET_DIR
from handlib.mano.openhand import (WRIST, boundary_loops, build_open_hand, closed_faces, mesh_edges,
                                   mirror_model, self_intersections, signed_volume, winding_numbers)
from handlib.mano.prior import HandPosePrior
from handlib.skeleton import MANO_FINGERTIP_VERTEX_IDS, MANO_PARENTS

RIGHT, LEFT = ASSET_DIR / "MANO_RIGHT.pkl", ASSET_DIR / "MANO_LEFT.pkl"


@pytest.fixture(scope="module")
def hand():
    return load_mano(RIGHT)


def test_mano_format_and_counts(hand):
    assert hand.v_template.shape == (778, 3) and hand.faces.shape == (1538, 3)
    assert hand.weights.shape == (778, 16) and hand.J_regressor.shape == (16, 778)
    assert hand.shapedirs.shape == (778, 3, 10) and hand.posedirs.shape == (778, 3, 135)
    assert hand.hands_components.shape == (45, 45) and hand.hands_mean.shape == (45,)
    assert tuple(hand.parents) == MANO_PARENTS
    assert tuple(hand.fingertip_vertex_ids) == MANO_FINGERTIP_VERTEX_IDS


def test_skin_is_a_closed_oriented_manifold_once_the_wrist_is_capped(hand):
    faces = hand.faces
    _, uses = mesh_edges(faces)
    assert set(np.unique(uses)) == {1, 2}  # open at the wrist only
    loops = boundary_loops(faces)
    assert len(loops) == 1 and len(loops[0]) == 16  # F = 2V - 2 - b with b = 16
    capped = closed_faces(hand)
    assert capped.shape == (1552, 3)
    edges, uses = mesh_edges(capped)
    assert np.all(uses == 2)
    assert len(hand.v_template) - len(edges) + len(capped) == 2  # Euler characteristic of a sphere
    directed = np.concatenate([capped[:, [0, 1]], capped[:, [1, 2]], capped[:, [2, 0]]])
    assert len(np.unique(directed, axis=0)) == len(directed)  # each edge once in each direction
    volume = signed_volume(hand.v_template, capped)
    assert 150e-6 < volume < 600e-6  # outward normals; a hand is a few hundred cm^3


def test_no_self_intersection_at_rest_nor_for_typical_shapes(hand):
    assert len(self_intersections(hand.v_template, hand.faces)) == 0
    for beta in (np.eye(10)[0], -np.eye(10)[0], 0.7 * np.ones(10)):
        shaped = hand.v_template + hand.shapedirs @ beta
        assert len(self_intersections(shaped, hand.faces)) == 0


def test_self_intersection_and_winding_number_known_values():
    # Two triangles that cut through each other: an edge of each crosses the other.
    vertices = np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0], [0.2, 0.2, -1], [0.2, 0.2, 1], [1, 1, 1]], float)
    crossings = self_intersections(vertices, np.array([[0, 1, 2], [3, 4, 5]]))
    assert sorted(map(tuple, crossings.tolist())) == [(1, 2, 1), (3, 4, 0)]
    # Moved apart, they do not touch.
    vertices[3:, 0] += 2.0
    assert len(self_intersections(vertices, np.array([[0, 1, 2], [3, 4, 5]]))) == 0
    # A tetrahedron with outward faces: winding number 1 inside, 0 outside; volume 1/6.
    tetra = np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1]], float)
    faces = np.array([[0, 2, 1], [0, 1, 3], [0, 3, 2], [1, 2, 3]])
    assert np.allclose(winding_numbers(tetra, faces, np.array([[0.1, 0.1, 0.1], [2, 2, 2]])), [1, 0], atol=1e-9)
    assert np.isclose(signed_volume(tetra, faces), 1 / 6)


def test_frame_is_mano_s(hand):
    joints = hand.J_regressor @ hand.v_template
    tips = hand.v_template[hand.fingertip_vertex_ids]
    assert np.linalg.norm(joints[0] - WRIST) < 1e-4
    assert abs(np.linalg.norm(joints[4] - joints[0]) - 0.095) < 0.002  # wrist -> middle MCP
    assert np.all(tips[:, 0] < joints[0, 0] - 0.05)  # fingers along -x
    assert tips[0, 2] > joints[1, 2] > joints[10, 2] > joints[7, 2]  # thumb +z, then index ... pinky
    palm = HandPosePrior(joints, tips).palm_normal.numpy()
    assert palm[1] < -0.95  # the palm faces -y


def test_skinning_weights(hand):
    w = hand.weights
    assert np.all(w >= 0) and np.allclose(w.sum(1), 1, atol=1e-5)
    # Each fingertip follows its finger's last joint (thumb, index, middle, ring, pinky).
    assert list(w[hand.fingertip_vertex_ids].argmax(1)) == [15, 3, 6, 12, 9]
    assert np.all(w[boundary_loops(hand.faces)[0], 0] > 0.99)  # the wrist opening: the wrist
    # Smooth: rings lie about half a phalanx apart, so along an edge a weight changes by well
    # under 1 (a hard, per-bone assignment would jump by 1), and little on average.
    edges, _ = mesh_edges(hand.faces)
    jumps = np.abs(w[edges[:, 0]] - w[edges[:, 1]]).max(1)
    assert jumps.max() < 0.65 and jumps.mean() < 0.2
    # Every joint drives some vertices.
    assert np.all(w.max(0) > 0.6)


def test_joint_regressor_puts_joints_inside_the_skin(hand):
    r = hand.J_regressor
    assert np.all(r >= 0) and np.allclose(r.sum(1), 1, atol=1e-5)
    joints = r @ hand.v_template
    inside = winding_numbers(hand.v_template.astype(np.float64), closed_faces(hand), joints.astype(np.float64))
    assert np.all(inside > 0.99), inside
    # Finger joints lie along their finger, in order, with anatomical phalanx lengths.
    for chain in ((1, 2, 3), (4, 5, 6), (7, 8, 9), (10, 11, 12)):
        lengths = np.linalg.norm(np.diff(joints[list(chain)], axis=0), axis=1)
        assert np.all((0.015 < lengths) & (lengths < 0.05)) and lengths[0] > lengths[1]


def test_shape_space(hand):
    dirs = hand.shapedirs.reshape(-1, 10).astype(np.float64)
    gram = dirs.T @ dirs
    assert np.allclose(gram - np.diag(np.diag(gram)), 0, atol=1e-6 * gram.max())  # orthogonal
    norms = np.sqrt(np.diag(gram))
    assert np.all(np.diff(norms) <= 1e-9)  # ordered by variance
    layer = ManoLayer(RIGHT)
    bigger = layer(betas=torch.tensor([[2.0] + [0] * 9])).vertices[0]
    smaller = layer(betas=torch.tensor([[-2.0] + [0] * 9])).vertices[0]
    span = lambda v: float((v.max(0).values - v.min(0).values).norm())  # noqa: E731
    assert span(bigger) > 1.1 * span(smaller)  # beta_1 is overall size


def test_pose_correctives_are_learned_and_local(hand):
    assert np.abs(hand.posedirs).max() > 1e-4
    # A vertex that follows only the wrist has no correctives.
    wrist_only = hand.weights[:, 0] > 0.9999
    assert wrist_only.any() and np.abs(hand.posedirs[wrist_only]).max() == 0


def test_pose_pca(hand):
    c = hand.hands_components.astype(np.float64)
    assert np.allclose(c @ c.T, np.eye(45), atol=1e-5)  # orthonormal rows
    prior = HandPosePrior.from_model(hand)
    assert float(prior.limit_violation(torch.as_tensor(hand.hands_mean)[None])) < 1e-4
    # Six components reconstruct sampled poses well.
    poses = prior.sample_poses(500, generator=7).double()
    centred = poses - torch.as_tensor(hand.hands_mean, dtype=torch.float64)
    comps = torch.as_tensor(c[:6])
    residual = centred - centred @ comps.T @ comps
    assert residual.square().sum() / centred.square().sum() < 0.2


def _smplx(folder, is_rhand, batch):
    smplx = pytest.importorskip("smplx")
    with contextlib.redirect_stdout(io.StringIO()):
        return smplx.MANO(str(folder), is_rhand=is_rhand, use_pca=False, flat_hand_mean=True, batch_size=batch)


@pytest.mark.parametrize("path,is_rhand", [(RIGHT, True), (LEFT, False)])
def test_smplx_loads_the_asset_and_agrees(path, is_rhand):
    torch.manual_seed(0)
    batch = 8
    pose, betas, orient = 0.4 * torch.randn(batch, 45), torch.randn(batch, 10), torch.randn(batch, 3)
    theirs = _smplx(path.parent, is_rhand, batch)(hand_pose=pose, betas=betas, global_orient=orient)
    ours = ManoLayer(path)(hand_pose=pose, betas=betas, global_orient=orient)
    assert (ours.vertices - theirs.vertices).abs().max() < 1e-6
    assert (ours.mano_joints - theirs.joints).abs().max() < 1e-6


def test_left_is_the_mirror_image_of_right():
    torch.manual_seed(1)
    pose, betas, orient = 0.5 * torch.randn(4, 45), torch.randn(4, 10), 0.5 * torch.randn(4, 3)
    flip = torch.tensor([1.0, -1.0, -1.0])
    mirror = lambda aa: (aa.unflatten(1, (-1, 3)) * flip).flatten(1)  # noqa: E731
    right = ManoLayer(RIGHT)(hand_pose=pose, betas=betas, global_orient=orient)
    left = ManoLayer(LEFT)(hand_pose=mirror(pose), betas=betas, global_orient=mirror(orient))
    assert torch.allclose(left.vertices, right.vertices * torch.tensor([-1.0, 1, 1]), atol=1e-6)
    # The PCA pose space mirrors too.
    pca = torch.randn(4, 6)
    r = ManoLayer(RIGHT, num_pca_comps=6, flat_hand_mean=False)(hand_pose=pca)
    l_ = ManoLayer(LEFT, num_pca_comps=6, flat_hand_mean=False)(hand_pose=pca)
    assert torch.allclose(l_.vertices, r.vertices * torch.tensor([-1.0, 1, 1]), atol=1e-6)
    assert len(self_intersections(load_mano(LEFT).v_template, load_mano(LEFT).faces)) == 0


def test_build_is_deterministic_and_matches_the_committed_topology(hand):
    small = dict(num_shapes=24, num_poses=60, num_test_poses=10, num_pca_poses=400)
    first, second = build_open_hand(seed=0, **small), build_open_hand(seed=0, **small)
    assert first.keys() == second.keys()
    for key in first:
        assert np.array_equal(first[key], second[key]), key
    # Template, faces, weights and regressor do not depend on the sample counts.
    assert np.array_equal(first["f"], hand.faces)
    assert np.allclose(first["v_template"], hand.v_template, atol=1e-7)
    assert np.allclose(first["weights"], hand.weights, atol=1e-6)
    left = mirror_model(first)
    assert np.array_equal(mirror_model(left)["posedirs"], first["posedirs"])  # mirroring twice is the identity


def test_closed_faces_needs_one_boundary():
    with pytest.raises(ValueError, match="boundary loop"):
        closed_faces(np.array([[0, 1, 2], [3, 4, 5]]))
