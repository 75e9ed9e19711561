"""Chapter 5 (Zhou et al. 2020): DetNet's readout, the shape fit, bone rotations, IKNet, the method.

The models are small and start from a fresh backbone (``pretrained_backbone=False``): nothing here
needs the shipped checkpoints.
"""
import dataclasses
import math

import pytest
import torch
from torch.utils.data import default_collate

from handlib.geometry import axis_angle_to_matrix, quaternion_to_axis_angle
from handlib.mano import ManoLayer
from handlib.mano.prior import default_prior
from handlib.methods import LossContext
from handlib.models import zhou2020 as zhou
from handlib.registry import get_method
from handlib.runtime import torch_threads


@pytest.fixture(autouse=True)
def one_thread():
    with torch_threads(1):
        yield


@pytest.fixture(scope="module")
def layer():
    return ManoLayer(flat_hand_mean=True)


def small_config(**changes) -> zhou.Zhou2020Config:
    """Zhou et al. on 32-px crops (8 x 8 maps), narrow layers, a fresh backbone, little pose data."""
    small = dict(image_size=32, pretrained_backbone=False, encoder_width=0.25, head_width=16, iknet_width=32,
                 iknet_depth=2, mocap_samples=16, posdata_samples=16, shape_iterations=5, optimisation_steps=5)
    return zhou.Zhou2020Config(**{**small, **changes})


def build(seed=0, **changes) -> zhou.Zhou2020:
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return zhou.Zhou2020(small_config(**changes))


def context(seed=0, stage="detnet"):
    return LossContext(step=0, generator=torch.Generator().manual_seed(seed), stage=stage)


def posed_hands(layer, count=8, seed=0):
    """MANO hands posed by the course's prior: (pose (B, 48), betas (B, 10), HandOutput)."""
    prior, generator = default_prior(), torch.Generator().manual_seed(seed)
    fingers, orientation = prior.sample_poses(count, generator), prior.sample_global_orientations(count, generator)
    betas = torch.randn(count, 10, generator=generator).clamp(-2.5, 2.5)
    return torch.cat([orientation, fingers], 1), betas, layer(hand_pose=fingers, betas=betas,
                                                              global_orient=orientation)


def fake_batch(count=4, seed=0, size=32):
    """Sample dicts of random images, with hands posed by the prior, projected consistently."""
    from handlib.data.sample import make_sample
    from handlib.geometry import project_points

    pose, betas, hand = posed_hands(ManoLayer(flat_hand_mean=True), count, seed)
    generator = torch.Generator().manual_seed(seed)
    K = torch.tensor([[1.5 * size, 0, size / 2], [0, 1.5 * size, size / 2], [0, 0, 1]])
    samples = []
    for i in range(count):
        keypoints_3d = hand.joints[i] - hand.joints[i, 9] + torch.tensor([0.0, 0.0, 0.4])
        samples.append(make_sample(torch.rand(3, size, size, generator=generator), project_points(keypoints_3d, K),
                                   K, keypoints_3d=keypoints_3d, pose=pose[i], betas=betas[i]))
    return default_collate(samples)


# ---------------------------------------------------------------- DetNet

def test_the_location_map_readout_returns_the_true_joints_on_perfect_maps():
    """L holds X_j at H_j's peak cell and nonsense elsewhere: the readout finds X_j exactly."""
    generator = torch.Generator().manual_seed(0)
    joints = torch.randn(2, 21, 3, generator=generator)
    heatmaps = 0.1 * torch.rand(2, 21, 8, 8, generator=generator)
    maps = 100 + torch.randn(2, 21, 3, 8, 8, generator=generator)
    peaks = torch.randint(0, 8, (2, 21, 2), generator=generator)
    for b in range(2):
        for j in range(21):
            y, x = peaks[b, j].tolist()
            heatmaps[b, j, y, x] = 1.0
            maps[b, j, :, y, x] = joints[b, j]
    assert torch.equal(zhou.read_location_maps(heatmaps, maps), joints)
    with pytest.raises(ValueError, match=r"maps: expected .*\(B, 21, 3, 8, 8\).*got \(2, 21, 8, 8\)"):
        zhou.read_location_maps(heatmaps, heatmaps)


def test_detnet_shapes_and_its_loss_vanishes_on_perfect_maps():
    model = build()
    batch = fake_batch()
    out = model(batch["image"])
    assert out["heatmaps"].shape == (4, 21, 8, 8)
    assert out["delta_maps"].shape == out["location_maps"].shape == (4, 21, 3, 8, 8)
    assert out["keypoints"].shape == (4, 21, 3)
    # The masked map loss is zero on maps equal to the target, and ignores cells the mask does not weigh.
    target, _ = zhou.palm_normalized(batch["keypoints_3d"])
    weights = torch.zeros(4, 21, 8, 8)
    weights[..., 2:5, 2:5] = 1.0
    perfect = target[..., None, None].expand(4, 21, 3, 8, 8).clone()
    perfect[..., 0, 0] = 1e3
    has_3d = torch.ones(4, dtype=torch.bool)
    assert float(zhou.masked_map_loss(perfect, target, weights, has_3d)) == 0.0
    assert float(zhou.masked_map_loss(perfect + 0.5 * (weights[:, :, None] > 0), target, weights,
                                      has_3d)) == pytest.approx(3 * 0.25)
    assert float(zhou.masked_map_loss(perfect + 1.0, target, weights, torch.zeros(4, dtype=torch.bool))) == 0.0
    total, terms = zhou.detnet_loss(model, batch, context())
    assert set(terms) == {"heatmaps", "delta", "location"} and torch.isfinite(total)
    with pytest.raises(ValueError, match="32, 32"):
        model(torch.zeros(1, 3, 64, 64))


def test_palm_normalized_frame():
    keypoints = torch.randn(3, 21, 3)
    normalized, length = zhou.palm_normalized(0.01 * keypoints + 0.5)
    assert torch.allclose(normalized[:, 9], torch.zeros(3, 3))                    # the middle MCP is the origin
    assert torch.allclose(normalized[:, 0].norm(dim=-1), torch.ones(3))           # |W - M0| = 1
    assert torch.allclose(length, 0.01 * (keypoints[:, 0] - keypoints[:, 9]).norm(dim=-1))
    with pytest.raises(ValueError, match=r"keypoints: expected .*\(B, 21, 3\).*got \(21, 3\)"):
        zhou.palm_normalized(keypoints[0])


# ---------------------------------------------------------------- the shape fit

def test_the_shape_fit_recovers_a_known_shape_from_its_own_bone_lengths(layer):
    basis = zhou.rest_keypoint_basis(layer)
    betas = torch.randn(4, 10, generator=torch.Generator().manual_seed(1)).clamp(-2, 2)
    ratios = zhou.bone_ratios_of(zhou.rest_keypoints(basis, betas))
    assert ratios.shape == (4, 20) and torch.allclose(ratios[:, zhou.REFERENCE_BONE], torch.ones(4))
    fit = zhou.fit_shape(ratios, basis, shape_weight=0.0, iterations=20)
    assert fit.energy[0].min() > 1e-5 and fit.energy[-1].max() < 1e-10             # from the mean hand to the truth
    assert (fit.energy[1:] <= fit.energy[:-1]).all()                               # LM never goes up
    assert torch.allclose(fit.betas, betas, atol=2e-3)
    assert fit.history.shape == (21, 4, 10)
    # The closed-form Jacobian is the derivative of the residuals.
    start = 0.3 * torch.randn(1, 10, dtype=torch.float64)
    basis64 = tuple(t.double() for t in basis)
    numeric = torch.autograd.functional.jacobian(
        lambda b: zhou.shape_fit_residuals(b, ratios[:1].double(), basis64, 1e-3)[0], start)[0, :, 0]
    assert torch.allclose(zhou.shape_fit_residuals(start, ratios[:1].double(), basis64, 1e-3)[1][0], numeric,
                          atol=1e-9)
    with pytest.raises(ValueError, match=r"bone_ratios: expected .*\(B, 20\).*got \(4, 21\)"):
        zhou.fit_shape(torch.ones(4, 21), basis)


# ---------------------------------------------------------------- rotations

def test_bone_rotations_are_unit_quaternions_with_nonnegative_w(layer):
    _, _, hand = posed_hands(layer)
    quaternions = zhou.bone_rotations_from_mano(hand.transforms)
    assert quaternions.shape == (8, 21, 4)
    assert torch.allclose(quaternions.norm(dim=-1), torch.ones(8, 21), atol=1e-6) and (quaternions[..., 0] >= 0).all()
    # The wrist and the five finger bases share the wrist's rotation.
    assert torch.allclose(quaternions[:, [1, 5, 9, 13, 17]], quaternions[:, :1].expand(8, 5, 4), atol=1e-6)
    # IKNet's answers too, whatever its raw output.
    out = zhou.IKNet(32, 2)(torch.randn(5, 84, 3))
    assert torch.allclose(out["quaternions"].norm(dim=-1), torch.ones(5, 21), atol=1e-6)
    assert (out["quaternions"][..., 0] >= 0).all() and torch.allclose(out["norm"], out["raw"].norm(dim=-1))
    with pytest.raises(ValueError, match=r"inputs: expected .*\(B, 84, 3\).*got \(5, 63, 3\)"):
        zhou.IKNet(32, 2)(torch.randn(5, 63, 3))


def test_forward_kinematics_of_the_true_rotations_reproduces_the_joints(layer):
    pose, betas, hand = posed_hands(layer)
    joints, length = zhou.palm_normalized(hand.joints)
    reference, _ = zhou.palm_normalized(zhou.rest_keypoints(zhou.rest_keypoint_basis(layer), betas))
    posed = zhou.forward_kinematics(zhou.bone_rotations_from_mano(hand.transforms), reference)
    assert ((posed - joints).norm(dim=-1) * length[:, None]).max() < 1e-5          # < 10 micrometres
    # And the local rotations MANO wants give the same hand back.
    local = zhou.local_pose_from_bone_rotations(zhou.bone_rotations_from_mano(hand.transforms))
    again = layer(hand_pose=local[:, 3:], betas=betas, global_orient=local[:, :3])
    assert (again.vertices - hand.vertices).abs().max() < 1e-5
    # A wrong rotation moves the joints.
    wrong = zhou.bone_rotations_from_mano(hand.transforms)
    wrong[:, 6] = torch.tensor([0.0, 1.0, 0.0, 0.0])
    assert (zhou.forward_kinematics(wrong, reference) - joints).norm(dim=-1)[:, 6].min() > 0.05


def test_analytical_ik_recovers_a_pose_without_twist_and_loses_the_twist(layer):
    """Every bone points where the joints' does; a pose made of swings alone comes back exactly."""
    prior = default_prior()
    pose, betas, _ = posed_hands(layer)
    angles = prior.to_anatomical(pose[:, 3:])
    swings = pose.clone()
    swings[:, 3:] = prior.to_axis_angle(angles * torch.tensor([1.0, 1.0, 0.0]))       # no twist at any joint
    reference, _ = zhou.palm_normalized(zhou.rest_keypoints(zhou.rest_keypoint_basis(layer), betas))
    for given, has_twist in ((swings, False), (pose, True)):
        hand = layer(hand_pose=given[:, 3:], betas=betas, global_orient=given[:, :3])
        joints, length = zhou.palm_normalized(hand.joints)
        rotations = zhou.analytical_bone_rotations(joints, reference)
        assert rotations.shape == (8, 21, 4) and (rotations[..., 0] >= 0).all()
        posed = zhou.forward_kinematics(rotations, reference)
        assert ((posed - joints).norm(dim=-1) * length[:, None]).max() < 2e-4               # < 0.2 mm
        local = zhou.local_pose_from_bone_rotations(rotations)
        again = layer(hand_pose=local[:, 3:], betas=betas, global_orient=local[:, :3])
        difference = (again.vertices - hand.vertices).norm(dim=-1).max()
        assert (difference > 3e-3) if has_twist else (difference < 1e-3)              # 5 mm lost; 0.6 mm
        # Pure swings: no twist about the bone (the prior's twist axes are the mean hand's: 2 degrees).
        assert prior.to_anatomical(local[:, 3:])[..., 2].abs().max() < math.radians(3)
    with pytest.raises(ValueError, match="reference"):
        zhou.analytical_bone_rotations(joints, reference[:2])

def test_iknet_losses_are_zero_on_the_truth_and_positive_elsewhere(layer):
    data = zhou.PoseData(8, 8, seed=0, posdata_noise=0.0, layer=layer)
    batch = default_collate([data[i] for i in range(16)])
    assert int(batch["has_rotation"].sum()) == 8 and torch.isnan(batch["quaternions"][~batch["has_rotation"]]).all()
    truth = zhou.bone_rotations_from_mano(layer(hand_pose=batch["pose"][:, 3:], betas=batch["betas"],
                                                global_orient=batch["pose"][:, :3]).transforms)
    terms = zhou.iknet_losses(truth, torch.ones(16, 21), batch["quaternions"], batch["keypoints"],
                              batch["reference"], batch["has_rotation"])
    assert float(terms["cos"]) < 1e-6 and float(terms["l2"]) < 1e-6 and float(terms["norm"]) == 0.0
    assert float(terms["xyz"]) < 1e-10
    other = torch.roll(truth, 1, dims=0)
    terms = zhou.iknet_losses(other, 2 * torch.ones(16, 21), batch["quaternions"], batch["keypoints"],
                              batch["reference"], batch["has_rotation"])
    assert all(float(value) > 1e-3 for value in terms.values())
    # Without rotations (3DPosData only) the rotation terms are zero and L_xyz still counts.
    only_positions = zhou.iknet_losses(other, torch.ones(16, 21), batch["quaternions"], batch["keypoints"],
                                       batch["reference"], torch.zeros(16, dtype=torch.bool))
    assert float(only_positions["cos"]) == float(only_positions["l2"]) == 0.0 and float(only_positions["xyz"]) > 1e-3


def test_the_wrist_frame_takes_out_the_wrist_rotation_and_puts_it_back(layer):
    """Kabsch on the palm finds a known wrist rotation; in the wrist frame IKNet's answer turns with
    the hand (any weights), and the true rotations turned into the frame are a zero loss there."""
    data = zhou.PoseData(8, 0, seed=1, layer=layer)
    batch = default_collate([data[i] for i in range(8)])
    joints, reference, truth = batch["keypoints"], batch["reference"], batch["quaternions"]
    turn = axis_angle_to_matrix(torch.randn(8, 3, generator=torch.Generator().manual_seed(0)))
    rest = reference - reference[:, zhou.MIDDLE_MCP:zhou.MIDDLE_MCP + 1]
    assert torch.allclose(zhou.wrist_rotation(rest @ turn.transpose(-1, -2), reference), turn, atol=1e-5)
    iknet = zhou.IKNet(32, 2).eval()
    for frame, turns_with_the_hand in (("wrist", True), ("camera", False)):
        with torch.no_grad():
            plain = zhou.iknet_rotations(iknet, joints, reference, frame)["quaternions"]
            turned = zhou.iknet_rotations(iknet, joints @ turn.transpose(-1, -2), reference, frame)["quaternions"]
        expected = zhou.rotate_quaternions(turn, plain)
        assert torch.allclose(turned, expected, atol=1e-4) == turns_with_the_hand
    frame = zhou.wrist_rotation(joints, reference)
    in_frame = zhou.rotate_quaternions(frame.transpose(-1, -2), truth)
    assert torch.allclose(zhou.rotate_quaternions(frame, in_frame), truth, atol=1e-5)
    terms = zhou.iknet_losses(in_frame, torch.ones(8, 21), in_frame, joints @ frame, reference, batch["has_rotation"])
    assert float(terms["xyz"]) < 1e-10
    # The wrist's own rotation is nearly taken out: what is left is the palm's flex in the rest pose.
    assert float(quaternion_to_axis_angle(in_frame[:, zhou.WRIST]).norm(dim=-1).max()) < 0.05
    with pytest.raises(ValueError, match="frame"):
        zhou.iknet_rotations(iknet, joints, reference, "world")


def test_pose_data_is_reproducible_from_its_seed(layer):
    first, again, other = (zhou.PoseData(4, 4, seed, 0.01, layer) for seed in (3, 3, 4))
    assert torch.equal(first.keypoints, again.keypoints) and not torch.equal(first.keypoints, other.keypoints)
    assert len(zhou.PoseData(4, 0, 0, layer=layer)) == 4


# ---------------------------------------------------------------- the pipeline

def test_prediction_fields_frames_and_the_ablation_solvers():
    batch = fake_batch()
    for solver, has_mesh in (("iknet", True), ("none", False), ("optimisation", True)):
        model = build(pose_solver=solver).eval()
        prediction = zhou.zhou2020_predict(model, batch)
        assert prediction.frame == "normalized" and prediction.keypoints_3d.shape == (4, 21, 3)
        assert torch.allclose(prediction.keypoints_3d[:, 0], torch.zeros(4, 3), atol=1e-6)   # wrist at 0
        assert prediction.mano_betas.shape == (4, 10)
        assert (prediction.vertices is not None) == has_mesh and (prediction.mano_pose is not None) == has_mesh
        if has_mesh:                                        # the MANO hand: its scale bone is the unit
            bone = (prediction.keypoints_3d[:, 10] - prediction.keypoints_3d[:, 9]).norm(dim=-1)
            assert torch.allclose(bone, torch.ones(4), atol=1e-4)
            assert prediction.vertices.shape == (4, 778, 3)
            pose, betas = prediction.mano_pose, prediction.mano_betas
            hand = model.hand(hand_pose=pose[:, 3:], betas=betas, global_orient=pose[:, :3])
            palm = (hand.joints[:, 0] - hand.joints[:, 9]).norm(dim=-1)
            assert ((0.05 < palm) & (palm < 0.15)).all()    # MANO(pose, betas): metres, a hand's palm
    assert zhou.METHOD.alignment == "gt_root_scale"


def test_a_left_hand_is_answered_by_mirroring():
    """The left hand (the mirrored image) gets the mirrored answer of the right one."""
    from handlib.images import mirror_image
    from handlib.predict import predict_images

    model = build().eval()
    image = fake_batch(2)["image"][0]
    # The course's photo pipeline mirrors a left hand before and after the method.
    hands = predict_images(zhou.METHOD, model, model.config, [image, mirror_image(image)], [True, False])
    assert torch.allclose(hands[1]["keypoints_3d"], hands[0]["keypoints_3d"] * torch.tensor([-1.0, 1.0, 1.0]),
                          atol=1e-6)
    assert torch.allclose(hands[1]["keypoints_2d"][:, 0], 32 - hands[0]["keypoints_2d"][:, 0])


def test_pose_implausibility_is_zero_inside_the_limits():
    prior = default_prior()
    inside = torch.cat([torch.zeros(4, 3), prior.sample_poses(4, 0)], 1)
    measure = zhou.pose_implausibility(inside)
    assert set(measure) == {"violation", "max_excess_degrees", "fraction_outside"}
    assert (measure["violation"] < 1e-10).all() and (measure["fraction_outside"] == 0).all()
    bent_back = inside.clone()
    angles = prior.to_anatomical(bent_back[:, 3:])
    angles[:, 1, 0] = -math.radians(40)                                              # index PIP 40 degrees backwards
    bent_back[:, 3:] = prior.to_axis_angle(angles)
    measure = zhou.pose_implausibility(bent_back)
    assert torch.allclose(measure["max_excess_degrees"], torch.full((4,), 40.0), atol=1e-3)
    assert (measure["fraction_outside"] > 0).all()


# ---------------------------------------------------------------- the method

def test_the_method_its_stages_and_variants():
    method, variant = get_method("zhou2020:no_posdata")
    assert method is zhou.METHOD and method.config("quick", variant).posdata_samples == 0
    assert {"no_iknet", "pose_by_optimisation", "no_rotation_loss", "no_posdata", "no_l2", "no_cos",
            "camera_frame"} == set(method.variants)
    assert not any(v.ships for v in method.variants.values())                       # experiment arms only
    changed = {name: method.config("quick", name) for name in method.variants}
    assert changed["no_rotation_loss"].weight_cos == changed["no_rotation_loss"].weight_l2 == 0.0
    assert changed["no_l2"].weight_l2 == 0.0 and changed["no_l2"].weight_cos > 0
    assert changed["camera_frame"].iknet_frame == "camera" and method.config("quick").iknet_frame == "wrist"
    assert changed["no_cos"].weight_cos == 0.0 and changed["no_cos"].weight_l2 > 0
    assert changed["no_iknet"].pose_solver == "none"
    stages = method.stages(small_config())
    assert [stage.name for stage in stages] == ["iknet", "detnet"]
    assert [stage.name for stage in method.stages(small_config(pose_solver="none"))] == ["detnet"]
    model = build()
    assert {id(p) for p in stages[0].parameters(model)} == {id(p) for p in model.iknet.parameters()}
    assert {id(p) for p in stages[1].parameters(model)} == {id(p) for p in model.detnet.parameters()}
    with pytest.raises(ValueError, match="pose_solver"):
        small_config(pose_solver="magic")


def test_the_method_trains_through_the_loop(tmp_path, monkeypatch):
    """Both stages, a few steps each, on 16 rendered 32-px hands and 32 poses."""
    from handlib import methods
    from handlib.train import train

    monkeypatch.setattr(methods, "CACHE_DIR", tmp_path / "cache")           # render into the test's folder
    overrides = {**dataclasses.asdict(small_config()), "train_samples": 16, "test_samples": 8, "steps": 3,
                 "batch_size": 4, "iknet_steps": 3, "iknet_batch_size": 8}
    result = train("zhou2020:no_l2", profile="quick", device="cpu", run_dir=tmp_path / "runs",
                   progress=False, overrides=overrides)
    assert result.finished and result.checkpoint.name == "zhou2020-no_l2-quick.pt"
    assert set(result.history) == {"iknet", "detnet"}
    assert set(result.history["iknet"]) == {"total", "cos", "l2", "xyz", "norm"}
    assert set(result.history["detnet"]) == {"total", "heatmaps", "delta", "location"}
    assert all(math.isfinite(v) for stage in result.history.values() for values in stage.values() for v in values)
    assert result.metrics["alignment"] == "gt_root_scale" and result.metrics["num_samples"] == 8
    assert result.metrics["epe_3d_mm"] > 0 and result.metrics["mesh_error_mm"] > 0


def test_iknet_learns_on_pose_data(layer):
    """100 steps on 64 poses bring IKNet's loss well under where it started."""
    torch.manual_seed(0)
    model = build()
    data = zhou.PoseData(32, 32, seed=0, layer=layer)
    batch = default_collate([data[i] for i in range(64)])
    optimizer = torch.optim.Adam(model.iknet.parameters(), lr=3e-3)
    losses = []
    for step in range(100):
        loss, _ = zhou.iknet_loss(model, batch, context(step, "iknet"))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))
    assert losses[-1] < 0.5 * losses[0]


def test_the_iknet_arms_train_iknet_alone_on_a_trained_detnet(tmp_path, monkeypatch):
    """The IKNet ablation arms start DetNet from a trained checkpoint (``detnet_from``) and run no
    DetNet step: DetNet's weights come out as they went in, and IKNet trains."""
    from handlib import checkpoints, methods
    from handlib.train import train

    config = zhou.METHOD.config("quick", "no_cos")
    assert config.detnet_from == "zhou2020" and config.steps == 0 and config.weight_cos == 0
    trained = build(seed=1)
    asked = []

    def shipped(name, profile="full", **options):
        asked.append((name, profile))
        return zhou.METHOD, trained, trained.config

    monkeypatch.setattr(checkpoints, "load_model", shipped)
    monkeypatch.setattr(methods, "CACHE_DIR", tmp_path / "cache")
    overrides = {**dataclasses.asdict(small_config()), "train_samples": 8, "test_samples": 4, "batch_size": 4,
                 "iknet_steps": 3, "iknet_batch_size": 8, "detnet_from": "zhou2020", "steps": 0}
    result = train("zhou2020:no_cos", profile="quick", device="cpu", run_dir=tmp_path / "runs", progress=False,
                   overrides=overrides)
    assert asked == [("zhou2020", "full")] and result.finished
    assert len(result.history["iknet"]["total"]) == 3 and len(result.history.get("detnet", {}).get("total", [])) == 0
    state = checkpoints.read_checkpoint(result.checkpoint, "cpu")["model"]
    for key, value in trained.detnet.state_dict().items():
        assert torch.equal(state[f"detnet.{key}"], value), key


def test_the_tables_harness_scores_every_row(tmp_path, monkeypatch, benchmark_script):
    """benchmarks/zhou_tables.py on a tiny trained model: the three pose solvers, the IKNet arms
    (trained on that model's DetNet), the true poses' plausibility, and the speed table."""
    from handlib import checkpoints, methods
    from handlib.train import train

    harness = benchmark_script("zhou_tables")
    monkeypatch.setattr(methods, "CACHE_DIR", tmp_path / "cache")
    tiny = {**dataclasses.asdict(small_config()), "train_samples": 8, "test_samples": 4, "batch_size": 4,
            "iknet_steps": 2, "iknet_batch_size": 8, "steps": 2}
    shipped = train("zhou2020", profile="quick", device="cpu", run_dir=tmp_path / "shipped", progress=False,
                    overrides=tiny).checkpoint
    load = checkpoints.load_model

    def load_tiny(name, profile="full", checkpoint=None, device=None, run_dir=None):   # "the shipped DetNet"
        return load(name, "quick", shipped if checkpoint is None else checkpoint, device, run_dir)

    monkeypatch.setattr(checkpoints, "load_model", load_tiny)
    rows = harness.ablation_rows("quick", run_dir=tmp_path / "arms", shipped_run_dir=tmp_path / "shipped",
                                 overrides={**tiny, "detnet_from": "zhou2020", "steps": 0})
    synthetic = {row["row"]: row for row in rows if row["dataset"] == "synthetic"}
    assert list(synthetic) == ["true poses", *harness.SOLVER_ROWS, *harness.IKNET_ROWS]
    assert synthetic["true poses"]["fraction_outside"] < 0.01                     # the truth keeps the limits
    assert "mesh_error_mm" not in synthetic["no IKNet (DetNet's joints)"]         # no mesh without a pose
    assert all(synthetic[row]["epe_3d_mm"] > 0 and 0 <= synthetic[row]["fraction_outside"] <= 1
               for row in [*harness.IKNET_ROWS, "DetNet + IKNet (full)", "pose by optimisation"])
    real_rows = [row for row in rows if row["dataset"] != "synthetic"]
    assert len(real_rows) == 4 * (len(harness.SOLVER_ROWS) + len(harness.IKNET_ROWS))
    speed = harness.speed_rows("quick", repeats=2, run_dir=tmp_path / "shipped")
    assert [row["part"] for row in speed] == ["DetNet", "shape fit", "IKNet + MANO", "whole pipeline"]
    assert all(row["ms_per_image"] > 0 for row in speed) and speed[-1]["frames_per_second"] > 0
