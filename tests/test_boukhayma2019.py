"""Chapter 4 (Boukhayma et al. 2019): the weak-perspective camera, the offset, the four loss terms,
the pre-training targets, the "2D fit" column and the method on the training loop.

The models are small (32-px crops, narrow layers) and start from a fresh backbone
(``pretrained_backbone=False``): nothing here needs the shipped checkpoints.
"""
import dataclasses
import math

import pytest
import torch
from torch import nn
from torch.utils.data import default_collate

from handlib.geometry import axis_angle_to_matrix, project_points
from handlib.mano.layer import ManoLayer
from handlib.methods import LossContext, Prediction
from handlib.models import boukhayma2019 as bk
from handlib.models.backbone import score_map_targets
from handlib.registry import get_method
from handlib.runtime import torch_threads

SIZE = 32


@pytest.fixture(autouse=True)
def one_thread():
    with torch_threads(1):
        yield


def small_config(**changes) -> bk.Boukhayma2019Config:
    """Boukhayma et al. on 32-px crops, narrow layers, a fresh backbone."""
    small = dict(image_size=SIZE, pretrained_backbone=False, encoder_width=0.25, head_widths=(16,), head_hidden=32,
                 silhouette_size=8)
    return bk.Boukhayma2019Config(**{**small, **changes})


def build(seed=0, **changes) -> bk.Boukhayma2019:
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return bk.Boukhayma2019(small_config(**changes))


def context(seed=0):
    return LossContext(step=0, generator=torch.Generator().manual_seed(seed), stage="images")


@pytest.fixture(scope="module")
def flat_layer():
    """The layer the synthetic data is posed with: 45 axis-angles, zero = the flat hand."""
    return ManoLayer()


def hand_samples(layer, count=4, seed=0, size=SIZE):
    """Sample dicts of MANO hands seen by a pinhole camera, posed in the PCA span (so that the
    parameter targets are exact), with their true pose, shape, 2D and 3D keypoints; a full mask."""
    from handlib.data.sample import make_sample

    generator = torch.Generator().manual_seed(seed)
    pca = bk.NUM_PCA_COMPONENTS
    coefficients = 0.5 * torch.randn(count, pca, generator=generator)
    finger = torch.as_tensor(layer.model.hands_mean, dtype=torch.float32) + coefficients @ layer.hands_components[:pca]
    orient = 0.8 * torch.randn(count, 3, generator=generator)
    betas = torch.randn(count, 10, generator=generator).clamp(-2, 2)
    with torch.no_grad():
        out = layer(hand_pose=finger, betas=betas, global_orient=orient)
    joints = out.joints - out.joints.mean(1, keepdim=True) + torch.tensor([0.0, 0.0, 0.5])
    K = torch.tensor([[1.2 * size, 0, size / 2], [0, 1.2 * size, size / 2], [0, 0, 1]])  # the hand well inside
    return [make_sample(torch.rand(3, size, size, generator=generator), project_points(joints[i], K), K,
                        mask=torch.ones(size, size), keypoints_3d=joints[i], pose=torch.cat([orient[i], finger[i]]),
                        betas=betas[i]) for i in range(count)]


class FixedParameters(nn.Module):
    """A stand-in for the head that answers given parameters (before the offset), whatever its input."""

    def __init__(self, raw: torch.Tensor):
        super().__init__()
        self.raw = nn.Parameter(raw.clone())

    def forward(self, features):
        return self.raw


def answering(model: bk.Boukhayma2019, parameters: torch.Tensor) -> bk.Boukhayma2019:
    """``model`` with its head replaced so that it outputs ``parameters`` (B, 6 + P + 10) exactly."""
    model.head = FixedParameters((parameters - model.offset) / model.units)
    return model


# ---------------------------------------------------------------- the weak-perspective camera

def test_the_weak_perspective_fit_recovers_a_known_camera():
    points = 0.05 * torch.randn(3, 21, 3, generator=torch.Generator().manual_seed(0))
    camera = torch.tensor([[700.0, 64.0, 60.0], [300.0, 10.0, 90.0], [1000.0, -5.0, 0.0]])
    projected = bk.project_weak_perspective(points, camera)
    assert projected[0, 3].tolist() == pytest.approx((700 * points[0, 3, :2] + torch.tensor([64.0, 60.0])).tolist())
    assert torch.allclose(bk.fit_weak_perspective(points, projected), camera, rtol=1e-4, atol=1e-3)
    weights = torch.ones(3, 21)
    weights[:, :5] = 0                                                   # ignored points may be anywhere
    corrupted = projected.clone()
    corrupted[:, :5] += 100.0
    assert torch.allclose(bk.fit_weak_perspective(points, corrupted, weights), camera, rtol=1e-4, atol=1e-3)
    with pytest.raises(ValueError, match=r"camera.*\(3, 3\).*\(3, 2\)"):
        bk.project_weak_perspective(points, camera[:, :2])
    with pytest.raises(ValueError, match="points_2d"):
        bk.fit_weak_perspective(points, projected[:, :20])


def test_the_offset_puts_a_mean_hand_in_the_middle_of_the_crop_at_the_usual_size():
    """A new network answers the offset: s0 = 5.7 crop sides per metre, t0 the crop's centre."""
    model = build().eval()
    with torch.no_grad():
        out = model(torch.rand(2, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(1)))
    assert torch.allclose(out["camera"], torch.tensor([bk.INITIAL_SCALE * SIZE, SIZE / 2, SIZE / 2]).expand(2, 3),
                          rtol=0.01, atol=0.1)
    assert out["betas"].abs().max() < 0.05 and out["hand_pose"].abs().max() < 0.05     # the mean hand
    low, high = out["keypoints_2d"].amin(1), out["keypoints_2d"].amax(1)               # (2, 2) the keypoints' box
    assert torch.allclose((low + high) / 2, torch.full((2, 2), SIZE / 2), atol=0.2)    # centred
    assert (low > 0).all() and (high < SIZE).all()                                     # inside the crop
    side = float((high - low).amax())
    assert 0.5 * SIZE < side < 0.9 * SIZE        # the training crops: 1.25..1.6 times the box (0.63..0.8)
    assert bk.initial_parameters(256)[:3].tolist() == pytest.approx([5.7 * 256, 128, 128])


# ---------------------------------------------------------------- the loss terms

def test_the_2d_term_sums_the_l1_over_visible_keypoints():
    target = 32 * torch.rand(2, 21, 2, generator=torch.Generator().manual_seed(0))
    visibility = torch.ones(2, 21)
    visibility[1, 5] = 0
    assert float(bk.keypoint_loss_2d(target, target, visibility)) == 0.0
    predicted = target.clone()
    predicted[1, 5] += 50.0                                              # an invisible keypoint: no loss
    target_nan = target.clone()
    target_nan[1, 5] = math.nan                                          # nor NaN labels where invisible
    assert float(bk.keypoint_loss_2d(predicted, target_nan, visibility)) == 0.0
    predicted[0, 0] += torch.tensor([3.0, -4.0])                         # |3| + |-4| = 7 px on one keypoint
    assert float(bk.keypoint_loss_2d(predicted, target, visibility)) == pytest.approx(7 / 2)       # summed per sample, batch mean
    with pytest.raises(ValueError, match=r"visibility.*\(2, 21\)"):
        bk.keypoint_loss_2d(predicted, target, torch.ones(2, 20))


def test_the_3d_term_is_root_relative_in_decimetres_and_needs_a_label():
    target = 0.05 * torch.randn(2, 21, 3, generator=torch.Generator().manual_seed(0)) + torch.tensor([0, 0, 0.5])
    has_3d = torch.tensor([True, True])
    shifted = target - target[:, :1]                                     # another origin: the same hand
    assert float(bk.keypoint_loss_3d(shifted, target, has_3d)) == pytest.approx(0.0, abs=1e-10)
    predicted = shifted.clone()
    predicted[0, 8, 0] += 0.01                                           # 1 cm on one fingertip of one hand
    assert float(bk.keypoint_loss_3d(predicted, target, has_3d)) == pytest.approx((0.1 ** 2 / 21) / 2, rel=1e-4)
    unlabelled = torch.full_like(target, math.nan)
    assert float(bk.keypoint_loss_3d(predicted, unlabelled, torch.tensor([False, False]))) == 0.0
    with pytest.raises(ValueError, match="has_3d"):
        bk.keypoint_loss_3d(predicted, target, torch.ones(3))


def test_the_mask_term_counts_exactly_the_vertices_outside_a_known_mask():
    mask = torch.zeros(1, 8, 8)
    mask[0, :, :4] = 1.0                                                 # the left half is hand
    generator = torch.Generator().manual_seed(0)
    columns = torch.randint(-2, 10, (1, 100), generator=generator)      # 2 columns on each side off the image
    rows = torch.randint(0, 8, (1, 100), generator=generator)
    vertices_2d = torch.stack([columns, rows], -1).float() + 0.5         # on pixel centres, some off the image
    outside = ~((columns >= 0) & (columns < 4))
    assert float(bk.vertex_mask_loss(vertices_2d, mask, torch.ones(1))) == pytest.approx(float(outside.float().mean()))
    inside = vertices_2d.clone()
    inside[..., 0] = inside[..., 0].clamp(0.5, 3.5)
    assert float(bk.vertex_mask_loss(inside, mask, torch.ones(1))) == 0.0
    assert float(bk.vertex_mask_loss(vertices_2d, mask, torch.zeros(1))) == 0.0     # no mask: no loss
    with pytest.raises(ValueError, match="mask"):
        bk.vertex_mask_loss(vertices_2d, mask[0], torch.ones(1))


def test_the_silhouette_term_asks_the_same_question():
    model = build().eval()
    with torch.no_grad():
        out = model(torch.rand(1, 3, SIZE, SIZE))
    vertices = out["vertices"] - bk.hand_centre(out["keypoints_3d"])
    faces = model.mano.faces
    full, empty = torch.ones(1, SIZE, SIZE), torch.zeros(1, SIZE, SIZE)
    loss = lambda mask: float(bk.silhouette_mask_loss(vertices, out["camera"], faces, mask, torch.ones(1), 16))  # noqa
    assert loss(full) == 0.0 and loss(empty) == pytest.approx(1.0)
    half = full.clone()
    half[:, :, SIZE // 2:] = 0
    vertex_fraction = float(bk.vertex_mask_loss(out["vertices_2d"], half, torch.ones(1)))
    assert 0.2 < loss(half) < 0.8 and loss(half) == pytest.approx(vertex_fraction, abs=0.2)


def test_the_regulariser_is_zero_at_the_mean_hand():
    zero_pose, zero_betas = torch.zeros(2, 12), torch.zeros(2, 10)
    assert float(bk.regularisation_loss(zero_pose, zero_betas, 0.1)) == 0.0
    pose = zero_pose.clone()
    pose[:, 0] = 2.0
    assert float(bk.regularisation_loss(pose, torch.ones(2, 10), 0.1)) == pytest.approx(4 / 12 + 0.1)


def test_every_image_term_is_zero_on_a_perfect_prediction(flat_layer):
    """A model that answers the true parameters of a hand seen by its own weak perspective."""
    model = build(weight_reg=0.0)
    batch = default_collate(hand_samples(flat_layer))
    targets = bk.parameter_targets(model.mano, batch)
    from handlib.geometry import matrix_to_axis_angle
    parameters = torch.cat([targets["camera"], matrix_to_axis_angle(targets["rotation"]), targets["hand_pose"],
                            targets["betas"]], 1)
    answering(model, parameters)
    with torch.no_grad():
        out = model(batch["image"])
    perfect = {**batch, "keypoints_2d": out["keypoints_2d"]}            # the weak perspective's own 2D
    with torch.no_grad():
        total, terms = bk.boukhayma2019_loss(model, perfect, context())
    assert float(terms["keypoints_2d"]) == pytest.approx(0.0, abs=1e-4)
    assert float(terms["keypoints_3d"]) == pytest.approx(0.0, abs=1e-6)
    assert float(terms["mask"]) == 0.0 and float(total) == pytest.approx(0.0, abs=1e-3)
    # The real 2D (perspective) differs from the weak perspective by a little (under a pixel a
    # keypoint, summed over 21); a wrong pose by much.
    with torch.no_grad():
        _, real = bk.boukhayma2019_loss(model, batch, context())
    assert 0 < float(real["keypoints_2d"]) < 21.0
    answering(model, parameters + torch.cat([torch.zeros(6), 0.5 * torch.ones(bk.NUM_PCA_COMPONENTS), torch.zeros(10)]))
    with torch.no_grad():
        _, wrong = bk.boukhayma2019_loss(model, batch, context())
    assert float(wrong["keypoints_2d"]) > 21.0 and float(wrong["keypoints_3d"]) > 1e-3 and float(wrong["reg"]) > 0


# ---------------------------------------------------------------- the pre-training targets

def test_the_pca_targets_and_the_model_rebuild_the_true_hand(flat_layer):
    """Targets from the sample's flat-mean axis-angles; MANO in the PCA space around hands_mean gives the same hand."""
    model = build()
    batch = default_collate(hand_samples(flat_layer))
    targets = bk.parameter_targets(model.mano, batch)
    assert torch.allclose(model.mano.finger_pose(targets["hand_pose"]), batch["pose"][:, 3:], atol=1e-4)
    from handlib.geometry import matrix_to_axis_angle
    hand = model.hand(torch.cat([targets["camera"], matrix_to_axis_angle(targets["rotation"]), targets["hand_pose"],
                                 targets["betas"]], 1))
    true_root_relative = batch["keypoints_3d"] - batch["keypoints_3d"][:, :1]
    assert (hand["keypoints_3d"] - true_root_relative).norm(dim=-1).max() < 1e-4     # metres
    assert (hand["keypoints_2d"] - batch["keypoints_2d"]).norm(dim=-1).mean() < 1.0  # px: perspective vs weak
    assert torch.allclose(hand["full_pose"], batch["pose"], atol=1e-4)
    with pytest.raises(ValueError, match="pose"):
        bk.pca_coefficients(model.mano, torch.zeros(2, 44))


def test_the_pca_targets_repeat_to_the_last_bit(flat_layer):
    """The same poses give the same coefficients, bit for bit, wherever the memory lies (LAPACK's
    float32 least squares did not: a training step's target changed from run to run)."""
    model = build()
    pose = torch.randn(64, 48, generator=torch.Generator().manual_seed(0)) * 0.3
    reference = bk.pca_coefficients(model.mano, pose)
    padding = []
    for size in range(1, 60, 7):
        padding.append(torch.empty(size))                   # moves where the next tensors are allocated
        assert torch.equal(bk.pca_coefficients(model.mano, pose.clone()), reference)
    assert reference.dtype == torch.float32


@torch.no_grad()
def test_the_pretraining_loss_is_zero_on_the_true_parameters(flat_layer):
    model = build()
    batch = default_collate(hand_samples(flat_layer))
    targets = bk.parameter_targets(model.mano, batch)
    parameters = torch.cat([targets["camera"], batch["pose"][:, :3], targets["hand_pose"], targets["betas"]], 1)
    total, terms = bk.pretrain_loss(answering(model, parameters), batch, context())
    assert set(terms) == {"camera", "rotation", "hand_pose", "betas"}
    assert float(total) == pytest.approx(0.0, abs=1e-8)
    # The same rotation written as another axis-angle (angle - 2 pi about the axis) costs nothing.
    angle = batch["pose"][:, :3].norm(dim=1, keepdim=True)
    other = batch["pose"][:, :3] * (angle - 2 * math.pi) / angle
    assert torch.allclose(axis_angle_to_matrix(other), axis_angle_to_matrix(batch["pose"][:, :3]), atol=1e-5)
    total, _ = bk.pretrain_loss(answering(model, torch.cat([parameters[:, :3], other, parameters[:, 6:]], 1)),
                                batch, context())
    assert float(total) == pytest.approx(0.0, abs=1e-8)
    shifted = parameters.clone()
    shifted[:, 1] += 8.0                                                 # t_x off by half of the half side
    total, terms = bk.pretrain_loss(answering(model, shifted), batch, context())
    assert float(terms["camera"]) == pytest.approx(0.5 ** 2 / 3, rel=1e-3) and float(terms["betas"]) < 1e-8


# ---------------------------------------------------------------- gradients

def test_gradients_reach_the_encoder_through_mano_and_the_camera(flat_layer):
    model = build()
    batch = default_collate(hand_samples(flat_layer))
    model.train()
    out = model(batch["image"])
    out["camera"].retain_grad()
    bk.keypoint_loss_3d(out["keypoints_3d"], batch["keypoints_3d"], batch["has_3d"]).backward(retain_graph=True)
    encoder_grad = sum(float(p.grad.abs().sum()) for p in model.encoder.parameters() if p.grad is not None)
    assert encoder_grad > 0                                              # through MANO
    assert out["camera"].grad is None or float(out["camera"].grad.abs().sum()) == 0     # 3D is root-relative
    model.zero_grad()
    bk.keypoint_loss_2d(out["keypoints_2d"], batch["keypoints_2d"], batch["visibility"]).backward(retain_graph=True)
    assert float(out["camera"].grad.abs().sum()) > 0                     # through the camera
    assert sum(float(p.grad.abs().sum()) for p in model.encoder.parameters() if p.grad is not None) > 0
    left_part = torch.zeros(4, SIZE, SIZE).index_fill_(2, torch.arange(12), 1.0)     # the mask misses most of the hand
    for mask_term in bk.MASK_TERMS:                                      # both mask terms pull on the encoder
        model.zero_grad()
        out["camera"].grad = None
        if mask_term == "vertices":
            loss = bk.vertex_mask_loss(out["vertices_2d"], left_part, torch.ones(4))
        else:
            centred = out["vertices"] - bk.hand_centre(out["keypoints_3d"])
            loss = bk.silhouette_mask_loss(centred, out["camera"], model.mano.faces, left_part, torch.ones(4), 16)
        loss.backward(retain_graph=True)
        assert float(out["camera"].grad.abs().sum()) > 0
        assert sum(float(p.grad.abs().sum()) for p in model.encoder.parameters() if p.grad is not None) > 0


# ---------------------------------------------------------------- inputs, predict and the 2D fit

def test_the_three_input_columns_and_the_frozen_detector():
    images = torch.rand(2, 3, SIZE, SIZE)
    for column in bk.INPUTS:
        model = build(input=column).train()
        out = model(images)
        assert out["keypoints_2d"].shape == (2, 21, 2) and out["vertices"].shape == (2, 778, 3)
        assert (model.encoder is not None) == (column != "2d") and (model.detector is not None) == (column != "rgb")
        trained = {id(p) for p in model.trainable_parameters()}
        if model.detector is not None:
            assert not model.detector.training                           # BatchNorm statistics stay
            assert not trained & {id(p) for p in model.detector.parameters()}
            assert out["score_maps"].shape == (2, 21, SIZE // 4, SIZE // 4)
    with pytest.raises(ValueError, match="input"):
        small_config(input="depth")


def test_predict_answers_a_mano_hand(flat_layer):
    model = build().eval()
    batch = default_collate(hand_samples(flat_layer))
    prediction = bk.boukhayma2019_predict(model, batch)
    assert isinstance(prediction, Prediction) and prediction.frame == "root_relative"
    assert prediction.keypoints_2d.shape == (4, 21, 2) and prediction.keypoints_3d.shape == (4, 21, 3)
    assert prediction.vertices.shape == (4, 778, 3) and prediction.mano_pose.shape == (4, 48)
    assert prediction.mano_betas.shape == (4, 10) and prediction.camera.shape == (4, 3)
    assert torch.allclose(prediction.keypoints_3d[:, 0], torch.zeros(4, 3), atol=1e-6)    # the wrist is the origin
    assert 0.1 < float((prediction.keypoints_3d[:, 12] - prediction.keypoints_3d[:, 0]).norm(dim=-1).mean()) < 0.25
    with pytest.raises(ValueError, match="32, 32"):
        model(torch.rand(1, 3, 64, 64))


class KnownDetector(nn.Module):
    """A detector whose score maps peak at given keypoints (B, 21, 2), pixels."""

    def __init__(self, keypoints_2d):
        super().__init__()
        self.keypoints_2d = keypoints_2d

    def forward(self, image):
        maps = score_map_targets(self.keypoints_2d, torch.ones(self.keypoints_2d.shape[:2]), tuple(image.shape[-2:]))
        return {"score_maps": maps}


def test_the_2d_fit_column_is_mano_fit_on_the_detected_keypoints(flat_layer):
    from handlib.mano.fit import fit_to_keypoints_2d
    from handlib.models.backbone import keypoints_from_score_maps

    batch = default_collate(hand_samples(flat_layer, count=2, size=64))
    detector = KnownDetector(batch["keypoints_2d"])
    options = dict(steps=20, num_starts=4, seed=3)
    prediction = bk.fit_detected_keypoints(detector, batch, flat_layer, **options)
    detected = keypoints_from_score_maps(detector(batch["image"])["score_maps"], (64, 64))
    assert torch.equal(prediction.extras["detected"], detected)
    assert (detected - batch["keypoints_2d"]).norm(dim=-1).mean() < 3.0            # the detector found them
    reference = fit_to_keypoints_2d(flat_layer, detected, batch["K"], **options)
    assert torch.allclose(prediction.keypoints_3d, reference.output.joints, atol=1e-6)
    assert torch.allclose(prediction.mano_pose, reference.output.full_pose, atol=1e-6)
    assert prediction.frame == "camera" and prediction.vertices.shape == (2, 778, 3)
    assert torch.allclose(prediction.keypoints_2d, project_points(reference.output.joints, batch["K"]), atol=1e-4)
    with pytest.raises(ValueError, match="intrinsics"):
        bk.fit_detected_keypoints(detector, {**batch, "K": torch.full_like(batch["K"], math.nan)}, flat_layer)



def test_the_2d_fit_of_another_detector_leaves_a_crop_without_an_answer_unanswered(flat_layer):
    """MediaPipe's keypoints are NaN where it found no hand: that crop is not fitted, the others are."""
    from handlib.mano.fit import fit_to_keypoints_2d

    batch = default_collate(hand_samples(flat_layer, count=3, size=64))
    detections = batch["keypoints_2d"].clone()
    detections[1] = math.nan                                                 # no hand found in crop 1
    options = dict(steps=20, num_starts=4, seed=3)
    prediction = bk.fit_to_detections(detections, batch["K"], flat_layer, **options)
    assert prediction.answered().tolist() == [True, False, True]
    assert torch.isnan(prediction.vertices[1]).all() and torch.isnan(prediction.mano_pose[1]).all()
    reference = fit_to_keypoints_2d(flat_layer, detections[[0, 2]], batch["K"][[0, 2]], **options)
    assert torch.allclose(prediction.keypoints_3d[[0, 2]], reference.output.joints, atol=1e-6)
    torch.testing.assert_close(prediction.extras["detected"], detections, equal_nan=True)
    with pytest.raises(ValueError, match="keypoints_2d"):
        bk.fit_to_detections(detections[..., :1], batch["K"], flat_layer)

# ---------------------------------------------------------------- the method

def test_the_method_and_its_variants():
    method, variant = get_method("boukhayma2019:rgb2d")
    assert method is bk.METHOD and method.alignment == "root"
    assert method.config("quick", variant).input == "rgb2d" and method.config("quick").input == "rgb"
    assert method.config("quick", "2d").input == "2d"
    assert method.config("quick", "no_mask").weight_mask == 0 and method.config("quick", "no_reg").weight_reg == 0
    assert method.config("quick", "no_3d").weight_3d == 0
    assert method.config("quick", "silhouette").mask_term == "silhouette"
    assert set(method.variants) == {"rgb2d", "2d", "no_mask", "no_reg", "no_3d", "silhouette"}
    quick = method.config("quick")
    assert (quick.weight_3d, quick.weight_mask, quick.weight_reg) == (100, 100, 10)        # the paper's weights
    assert [stage.name for stage in method.stages(small_config())] == ["pretrain", "images"]
    with pytest.raises(ValueError, match="silhouette_size"):
        small_config(silhouette_size=5)


def test_the_ablations_drop_their_term(flat_layer):
    batch = default_collate(hand_samples(flat_layer))
    with torch.no_grad():
        _, terms = bk.boukhayma2019_loss(build(), batch, context())
        for changes, kept in [({"weight_mask": 0.0}, ("keypoints_2d", "keypoints_3d", "reg")),
                              ({"weight_3d": 0.0}, ("keypoints_2d", "mask", "reg")),
                              ({"weight_reg": 0.0}, ("keypoints_2d", "keypoints_3d", "mask"))]:
            config = small_config(**changes)
            total, _ = bk.boukhayma2019_loss(build(**changes), batch, context())
            weights = {"keypoints_2d": 1.0, "keypoints_3d": config.weight_3d, "mask": config.weight_mask,
                       "reg": config.weight_reg}
            assert float(total) == pytest.approx(sum(weights[k] * float(terms[k]) for k in kept), rel=1e-5)


@pytest.mark.parametrize("variant", ["no_reg", "rgb2d"])
def test_the_method_trains_through_the_loop(tmp_path, monkeypatch, variant):
    """Both stages, a few steps each, on 16 rendered 32-px hands (with the frozen detector for rgb2d)."""
    from handlib import methods
    from handlib.train import train

    monkeypatch.setattr(methods, "CACHE_DIR", tmp_path / "cache")           # render into the test's folder
    overrides = {**dataclasses.asdict(small_config()), "train_samples": 16, "test_samples": 8, "steps": 3,
                 "batch_size": 4, "pretrain_steps": 3}
    result = train(f"boukhayma2019:{variant}", profile="quick", device="cpu", run_dir=tmp_path / "runs",
                   progress=False, overrides=overrides)
    assert result.finished and result.checkpoint.name == f"boukhayma2019-{variant}-quick.pt"
    assert set(result.history) == {"pretrain", "images"}
    assert set(result.history["pretrain"]) == {"total", "camera", "rotation", "hand_pose", "betas"}
    assert len(result.history["pretrain"]["total"]) == 3
    assert set(result.history["images"]) == {"total", "keypoints_2d", "keypoints_3d", "mask", "reg"}
    assert all(math.isfinite(v) for stage in result.history.values() for values in stage.values() for v in values)
    assert result.metrics["alignment"] == "root" and result.metrics["num_samples"] == 8
    assert result.metrics["epe_3d_mm"] > 0 and 0 <= result.metrics["auc_20_50"] <= 1


@pytest.fixture(scope="module")
def harness(benchmark_script):
    """benchmarks/boukhayma_tables.py, imported as a module."""
    return benchmark_script("boukhayma_tables")


def test_the_tables_harness_trains_the_ablation_and_scores_every_row(tmp_path, monkeypatch, harness):
    """benchmarks/boukhayma_tables.py: every ablation arm trains (tiny) and is scored on the synthetic
    test set and the real samples; the 2D-fit column scores a fit to a detector's keypoints; the
    pictures pick one crop per arm and store parameters that redraw each arm's hand."""
    from handlib import methods
    from handlib.checkpoints import load_model

    for name in [*harness.COLUMNS.values(), *harness.ABLATION.values()]:
        get_method(name)                                                     # every row is a registered name
    monkeypatch.setattr(methods, "CACHE_DIR", tmp_path / "cache")
    overrides = {**dataclasses.asdict(small_config()), "train_samples": 8, "test_samples": 4, "steps": 2,
                 "batch_size": 4, "pretrain_steps": 1}
    rows = harness.ablation_rows("quick", run_dir=tmp_path / "runs", overrides=overrides)
    synthetic = [row for row in rows if row["dataset"] == "synthetic"]
    assert [row["row"] for row in synthetic] == list(harness.ABLATION)
    assert all(row["num_samples"] == 4 and row["epe_3d_mm"] > 0 and row["mesh_error_mm"] > 0 for row in synthetic)
    assert all(0 <= row["auc_20_50"] <= 1 for row in synthetic)
    real = [row for row in rows if row["dataset"] != "synthetic"]
    assert len(real) == 4 * len(harness.ABLATION) and all(row["epe_2d_px"] > 0 for row in real)
    method, model, config = bk.METHOD, build(), small_config(test_samples=2)
    fit = harness.score_rows(harness.FIT_COLUMN, method, model.encoder, config, predict=harness._fit_predict)
    assert fit[0]["dataset"] == "synthetic" and fit[0]["epe_3d_mm"] > 0 and fit[0]["mesh_error_mm"] > 0

    pictures = harness.arm_pictures("quick", run_dir=tmp_path / "runs")
    assert [crop["arm"] for crop in pictures["crops"]] == list(harness.PICTURES)
    assert sorted(crop["index"] for crop in pictures["crops"]) == [0, 1, 2, 3]         # one crop per arm
    assert set(pictures["means"]) == set(harness.ABLATION) and pictures["test_samples"] == 4
    _, model, config = load_model("boukhayma2019:no_reg", "quick", run_dir=tmp_path / "runs", device="cpu")
    crop = pictures["crops"][1]
    with torch.no_grad():
        answer = model(bk.METHOD.test_data(config)[crop["index"]]["image"][None])
        redrawn = model.hand(torch.tensor([crop["parameters"]["without L_reg"]]))
    assert len(crop["parameters"]["without L_reg"]) == 6 + bk.NUM_PCA_COMPONENTS + 10
    assert torch.allclose(redrawn["keypoints_2d"], answer["keypoints_2d"], atol=0.2)                 # pixels
    assert torch.allclose(redrawn["vertices"], answer["vertices"], atol=2e-3)                        # metres


def test_the_mediapipe_row_fits_the_crops_mediapipe_answered(monkeypatch, harness, flat_layer):
    """The "2D fit (MediaPipe keypoints)" row: MediaPipe's keypoints (here a stand-in that finds the hand
    in the first crop only) fitted as the 2D fit; the crop without an answer stays unanswered."""
    from handlib import evaluate, peers

    batch = default_collate(hand_samples(flat_layer, count=2, size=64))

    def first_crop_only(images, is_right=None):
        keypoints = torch.full((len(images), 21, 2), math.nan)
        keypoints[0] = batch["keypoints_2d"][0]
        return Prediction(keypoints_2d=keypoints)

    monkeypatch.setattr(peers, "mediapipe_hands", first_crop_only)
    prediction = harness._mediapipe_fit_predict(None, batch, None)
    assert prediction.answered().tolist() == [True, False]
    assert float(prediction.extras["reprojection_error_2d"][0]) < 3.0                         # pixels
    row = evaluate.score(prediction, {key: batch[key] for key in evaluate.TARGET_KEYS})
    assert (row["num_samples"], row["num_answered"]) == (2, 1) and row["epe_2d_px"] < 3.0
