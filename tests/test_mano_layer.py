"""The MANO forward pass: agreement with smplx, the pure functions on known values, shapes, errors."""
import contextlib
import io

import pytest
import torch

from handlib.geometry import axis_angle_to_matrix
from handlib.mano import ManoLayer, load_mano
from handlib.mano.layer import kinematic_chain, lbs, pose_feature, regress_joints, shape_blend, skin


def smplx_mano(path, **kwargs):
    smplx = pytest.importorskip("smplx")
    with contextlib.redirect_stdout(io.StringIO()):  # smplx prints a warning about 10 betas
        return smplx.MANO(str(path.parent), is_rhand=True, **kwargs)


@pytest.mark.parametrize("num_pca_comps,flat_hand_mean", [(None, True), (None, False), (6, False), (12, True)])
def test_agrees_with_smplx(random_mano_file, num_pca_comps, flat_hand_mean):
    torch.manual_seed(0)
    batch = 32
    pose_size = num_pca_comps or 45
    hand_pose = torch.randn(batch, pose_size) * (1.0 if num_pca_comps else 0.5)
    betas, orient, transl = torch.randn(batch, 10), torch.randn(batch, 3), 0.1 * torch.randn(batch, 3)
    ours = ManoLayer(random_mano_file, num_pca_comps=num_pca_comps, flat_hand_mean=flat_hand_mean)
    theirs = smplx_mano(random_mano_file, use_pca=num_pca_comps is not None, num_pca_comps=num_pca_comps or 45,
                        flat_hand_mean=flat_hand_mean, batch_size=batch)
    a = ours(hand_pose=hand_pose, betas=betas, global_orient=orient, transl=transl)
    b = theirs(hand_pose=hand_pose, betas=betas, global_orient=orient, transl=transl)
    assert (a.vertices - b.vertices).abs().max() < 1e-6
    assert (a.mano_joints - b.joints).abs().max() < 1e-6
    tips = b.vertices[:, torch.as_tensor(ours.model.fingertip_vertex_ids)]
    assert (a.joints[:, [4, 8, 12, 16, 20]] - tips).abs().max() < 1e-6


def test_rest_pose_is_the_template(random_mano_file):
    layer = ManoLayer(random_mano_file)
    out = layer()
    assert torch.allclose(out.vertices[0], layer.v_template, atol=1e-7)
    assert torch.allclose(out.mano_joints[0], layer.J_regressor @ layer.v_template, atol=1e-7)
    assert out.joints.shape == (1, 21, 3) and out.transforms.shape == (1, 16, 4, 4)


def test_pure_functions_known_values():
    # A chain of two joints on the x axis; rotating the root by 90 degrees about z moves the child
    # from (1, 0, 0) to (0, 1, 0), and a vertex skinned to the child moves with it.
    joints = torch.tensor([[[0.0, 0, 0], [1.0, 0, 0]]])
    rotations = axis_angle_to_matrix(torch.tensor([[[0, 0, torch.pi / 2], [0, 0, 0]]]))
    rotation, position = kinematic_chain(rotations, joints, [-1, 0])
    assert torch.allclose(position, torch.tensor([[[0.0, 0, 0], [0, 1, 0]]]), atol=1e-6)
    vertex = torch.tensor([[[2.0, 0, 0]]])
    posed = skin(vertex, torch.tensor([[0.0, 1.0]]), rotation, position, joints)
    assert torch.allclose(posed, torch.tensor([[[0.0, 2, 0]]]), atol=1e-6)
    # Shape blend and joint regression are linear.
    template, dirs = torch.zeros(2, 3), torch.ones(2, 3, 1)
    assert torch.allclose(shape_blend(template, dirs, torch.tensor([[2.0]])), 2 * torch.ones(1, 2, 3))
    assert torch.allclose(regress_joints(torch.tensor([[0.5, 0.5]]), torch.tensor([[[0.0, 0, 0], [2, 2, 2]]])),
                          torch.ones(1, 1, 3))
    # The pose feature is zero at rest.
    assert pose_feature(torch.eye(3).expand(1, 16, 3, 3)).abs().max() == 0


def test_the_pure_forward_pass_is_the_layer(random_mano_file):
    # lbs() chains the step-by-step functions; ManoLayer fuses steps 1 and 4 for speed: same hand.
    layer = ManoLayer(random_mano_file)
    model = load_mano(random_mano_file)
    generator = torch.Generator().manual_seed(3)
    betas, full_pose = torch.randn(2, 10, generator=generator), 0.4 * torch.randn(2, 48, generator=generator)
    vertices, _, joint_position = lbs(betas, full_pose, *[torch.as_tensor(getattr(model, name), dtype=torch.float32)
                                      for name in ("v_template", "shapedirs", "posedirs", "J_regressor")],
                                      model.parents.tolist(), torch.as_tensor(model.weights, dtype=torch.float32))
    out = layer(hand_pose=full_pose[:, 3:], betas=betas, global_orient=full_pose[:, :3])
    assert torch.allclose(out.vertices, vertices, atol=1e-6)
    assert torch.allclose(out.mano_joints, joint_position, atol=1e-6)


def test_batch_one_and_many_agree(random_mano_file):
    layer = ManoLayer(random_mano_file)
    torch.manual_seed(1)
    pose, betas = 0.5 * torch.randn(5, 45), torch.randn(5, 10)
    together = layer(hand_pose=pose, betas=betas).vertices
    alone = torch.cat([layer(hand_pose=pose[i:i + 1], betas=betas[i:i + 1]).vertices for i in range(5)])
    assert torch.allclose(together, alone, atol=1e-6)


def test_gradients_reach_every_input(random_mano_file):
    layer = ManoLayer(random_mano_file, num_pca_comps=6)
    inputs = {"hand_pose": torch.randn(2, 6), "betas": torch.randn(2, 10), "global_orient": torch.randn(2, 3),
              "transl": torch.randn(2, 3)}
    for value in inputs.values():
        value.requires_grad_(True)
    layer(**inputs).joints.square().sum().backward()
    for name, value in inputs.items():
        assert value.grad is not None and value.grad.abs().sum() > 0, name


def test_gradcheck_in_double(random_mano_file):
    layer = ManoLayer(random_mano_file).double()
    pose = (0.3 * torch.randn(1, 45, dtype=torch.float64)).requires_grad_(True)
    assert torch.autograd.gradcheck(lambda p: layer(hand_pose=p).vertices, (pose,), eps=1e-6, atol=1e-5)


def test_fewer_betas_than_the_model_has(random_mano_file):
    layer = ManoLayer(random_mano_file)
    betas = torch.randn(1, 4)
    full = torch.cat([betas, torch.zeros(1, 6)], 1)
    assert torch.allclose(layer(betas=betas).vertices, layer(betas=full).vertices)


@pytest.mark.parametrize("kwargs,message", [
    ({"hand_pose": torch.zeros(2, 44)}, "hand_pose"),
    ({"betas": torch.zeros(2, 11)}, "betas"),
    ({"hand_pose": torch.zeros(2, 45), "betas": torch.zeros(3, 10)}, "batch sizes differ"),
    ({"transl": torch.zeros(3)}, "transl"),
])
def test_bad_inputs_raise_clear_errors(random_mano_file, kwargs, message):
    with pytest.raises(ValueError, match=message):
        ManoLayer(random_mano_file)(**kwargs)


def test_pca_out_of_range(random_mano_file):
    with pytest.raises(ValueError, match="num_pca_comps"):
        ManoLayer(random_mano_file, num_pca_comps=46)


@pytest.mark.parametrize("num_pca_comps", [None, 45, 12])
@pytest.mark.parametrize("flat_hand_mean", [False, True])
def test_hand_pose_of_inverts_finger_pose(random_mano_file, num_pca_comps, flat_hand_mean):
    """Exactly where the pose space holds every finger pose; a projection that keeps its own answer in
    the 12-component space."""
    layer = ManoLayer(random_mano_file, num_pca_comps=num_pca_comps, flat_hand_mean=flat_hand_mean)
    fingers = torch.randn(5, 45, generator=torch.Generator().manual_seed(0)) * 0.3
    hand_pose = layer.hand_pose_of(fingers)
    assert hand_pose.shape == (5, num_pca_comps or 45) and hand_pose.dtype == torch.float32
    if num_pca_comps in (None, 45):
        assert torch.allclose(layer.finger_pose(hand_pose), fingers, atol=1e-5)
    else:
        assert torch.allclose(layer.hand_pose_of(layer.finger_pose(hand_pose)), hand_pose, atol=1e-5)
        worse = layer.finger_pose(hand_pose + 0.01) - fingers           # least squares: any other answer is farther
        assert (layer.finger_pose(hand_pose) - fingers).norm() < worse.norm()
    assert torch.equal(layer.hand_pose_of(fingers.clone()), hand_pose)          # the same bits again


def test_layer_does_not_depend_on_vertex_count(tmp_path):
    from conftest import make_random_mano_arrays
    from handlib.mano import save_mano

    for vertices in (30, 200):
        path = save_mano(make_random_mano_arrays(num_vertices=vertices, seed=vertices), tmp_path / f"m{vertices}.npz")
        assert ManoLayer(path)(hand_pose=torch.zeros(2, 45)).vertices.shape == (2, vertices, 3)
