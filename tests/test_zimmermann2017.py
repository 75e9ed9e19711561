"""Chapter 2 (Zimmermann & Brox 2017): score maps, the canonical frame, the networks and their losses.

The score-map tests (handlib.data.heatmaps) live here because PoseNet is where the course meets them.
The models are small and start from a fresh backbone (``pretrained_backbone=False``): nothing here
needs the shipped backbone, except the one test that checks it loads, skipped until it ships.
"""
import dataclasses
import math
from pathlib import Path

import pytest
import torch
from torch.utils.data import default_collate

from handlib.data.heatmaps import (gaussian_heatmaps, heatmap_argmax, heatmap_soft_argmax, heatmap_to_image_coords,
                                   image_to_heatmap_coords)
from handlib.evaluate import format_table
from handlib.geometry import axis_angle_to_matrix
from handlib.methods import LossContext
from handlib.models import backbone
from handlib.models import zimmermann2017 as zb
from handlib.registry import get_method
from handlib.runtime import torch_threads
from handlib.skeleton import SCALE_BONE


def random_hands(count=4, seed=0):
    """Keypoints (count, 21, 3) in metres: a spread-out random hand in front of the camera."""
    generator = torch.Generator().manual_seed(seed)
    return 0.05 * torch.randn(count, 21, 3, generator=generator) + torch.tensor([0.0, 0.0, 0.5])


# ---------------------------------------------------------------- score maps

def test_heatmap_coordinates_round_trip_and_pixel_centres():
    pixels = torch.tensor([[2.0, 2.0], [0.0, 0.0], [128.0, 64.0], [10.5, 10.5]])
    cells = image_to_heatmap_coords(pixels, 128, 32)
    # The renderer's convention: pixels 0..3 cover [0, 4), whose centre 2.0 is the centre of cell 0;
    # the image corner 0 is the corner of cell 0, -0.5, and the far edge 128 that of cell 31, 31.5.
    assert cells[:3].tolist() == [[0.0, 0.0], [-0.5, -0.5], [31.5, 15.5]]
    assert torch.allclose(heatmap_to_image_coords(cells, 128, 32), pixels)
    # A keypoint rendered at the centre of pixel (10, 10) lies in cell (2, 2), a 1/8 cell left of its centre.
    assert cells[3].tolist() == [2.125, 2.125]


def test_heatmap_peaks_where_the_renderer_draws_the_keypoint():
    # A keypoint at the centre of a rendered pixel peaks in the cell that contains the pixel, and
    # the argmax over maps upsampled to the image reads back exactly that pixel's centre.
    import torch.nn.functional as F

    keypoints = torch.tensor([[[10.5, 20.5], [33.5, 5.5]]])
    maps = gaussian_heatmaps(keypoints, 64, 64, sigma=2.0)
    assert torch.equal(heatmap_argmax(maps, 64), keypoints)
    coarse = gaussian_heatmaps(keypoints, 64, 16, sigma=6.0)
    peaks = coarse.flatten(2).argmax(-1)
    assert torch.equal(torch.stack([peaks % 16, peaks // 16], -1), (keypoints // 4).long())
    upsampled = F.interpolate(gaussian_heatmaps(keypoints, 64, 16, sigma=6.0), size=64, mode="bilinear",
                              align_corners=False)
    assert (heatmap_argmax(upsampled, 64) - keypoints).abs().max() <= 1.0


def test_gaussian_heatmap_known_values():
    # Keypoint at (64, 64), the image centre: 2 px from the centres of the 4 cells (15, 15)..(16, 16),
    # which are at 62 and 66. Value there: exp(-(2^2 + 2^2) / (2 * 4^2)) = exp(-1/4).
    maps = gaussian_heatmaps(torch.tensor([[[64.0, 64.0]]]), 128, 32, sigma=4.0)
    assert maps.shape == (1, 1, 32, 32)
    assert maps[0, 0, 15:17, 15:17] == pytest.approx(torch.full((2, 2), math.exp(-0.25)))
    assert maps.max() == pytest.approx(math.exp(-0.25))
    # One cell further (4 px more along x): exp(-((6^2 + 2^2)) / 32).
    assert float(maps[0, 0, 15, 17]) == pytest.approx(math.exp(-40 / 32))


def test_heatmaps_are_zero_for_invisible_out_of_image_and_nan_keypoints():
    keypoints = torch.tensor([[[10.0, 10.0], [20.0, 20.0], [128.0, 5.0], [float("nan"), 3.0], [5.0, -0.1]]])
    maps = gaussian_heatmaps(keypoints, (128, 128), (32, 32), sigma=4.0, visibility=torch.tensor([[1, 0, 1, 1, 1]]))
    assert maps[0, 0].max() > 0.5
    assert maps[0, 1:].abs().max() == 0.0


def test_argmax_and_soft_argmax_read_back_the_keypoint():
    # Keypoints on cell centres are read back exactly by the argmax.
    keypoints = torch.tensor([[[2.0, 10.0], [62.0, 34.0], [126.0, 126.0]]])
    maps = gaussian_heatmaps(keypoints, 128, 32, sigma=6.0)
    assert torch.equal(heatmap_argmax(maps, 128), keypoints)
    # Soft-argmax reads a map as logits: on log-Gaussian maps it is exact, also between cells.
    keypoints = torch.tensor([[[40.3, 70.9], [64.0, 64.0]]])
    cells = image_to_heatmap_coords(keypoints, 128, 32)
    ys, xs = torch.meshgrid(torch.arange(32.0), torch.arange(32.0), indexing="ij")
    logits = -((xs - cells[..., 0, None, None]) ** 2 + (ys - cells[..., 1, None, None]) ** 2) / (2 * 1.5 ** 2)
    assert torch.allclose(heatmap_soft_argmax(logits, 128), keypoints, atol=1e-3)
    # ... and it is differentiable.
    logits.requires_grad_(True)
    heatmap_soft_argmax(logits, 128).sum().backward()
    assert logits.grad.abs().sum() > 0


def test_heatmap_errors():
    with pytest.raises(ValueError, match="keypoints_2d"):
        gaussian_heatmaps(torch.zeros(21, 2), 128, 32, 4.0)
    with pytest.raises(ValueError, match="sigma"):
        gaussian_heatmaps(torch.zeros(1, 21, 2), 128, 32, 0.0)
    with pytest.raises(ValueError, match="heatmaps"):
        heatmap_argmax(torch.zeros(21, 32, 32), 128)


# ---------------------------------------------------------------- canonical frame

def test_canonical_frame_properties():
    keypoints = random_hands(8)
    frame = zb.canonical_frame(keypoints)
    canonical = frame.canonical
    assert torch.allclose(canonical[:, 0], torch.zeros(8, 3), atol=1e-6)             # root at the origin
    assert torch.allclose(canonical[:, 9, [0, 2]], torch.zeros(8, 2), atol=1e-5)      # middle MCP on y ...
    assert (canonical[:, 9, 1] > 0).all()                                              # ... positive y
    assert torch.allclose(canonical[:, 17, 2], torch.zeros(8), atol=1e-5)             # pinky MCP z = 0 ...
    assert (canonical[:, 17, 0] > 0).all()                                             # ... and x > 0
    parent, child = SCALE_BONE                                                         # unit scale bone
    assert torch.allclose((canonical[:, child] - canonical[:, parent]).norm(dim=-1), torch.ones(8), atol=1e-5)
    rotation = frame.rotation                                                          # a proper rotation
    assert torch.allclose(rotation @ rotation.transpose(1, 2), torch.eye(3).expand(8, 3, 3), atol=1e-5)
    assert torch.allclose(torch.linalg.det(rotation), torch.ones(8), atol=1e-5)


def test_canonical_frame_round_trip_and_invariance():
    keypoints = random_hands(6, seed=1)
    is_right = torch.tensor([1, 0, 1, 0, 1, 0])
    frame = zb.canonical_frame(keypoints, is_right)
    back = zb.from_canonical_frame(frame.canonical, frame.rotation, is_right, frame.scale, frame.root)
    assert torch.allclose(back, keypoints, atol=1e-5)
    # The canonical coordinates do not change when the hand moves, turns or grows.
    turn = axis_angle_to_matrix(torch.tensor([0.4, 2.0, -1.0]))
    moved = 1.7 * keypoints @ turn.T + torch.tensor([0.1, 0.2, 0.3])
    assert torch.allclose(zb.canonical_frame(moved, is_right).canonical, frame.canonical, atol=1e-4)


def test_left_hands_are_mirrored_into_right_hands():
    right = random_hands(3, seed=2)
    left = right * torch.tensor([-1.0, 1.0, 1.0])          # the mirror image of each hand
    canonical_right = zb.canonical_frame(right, torch.ones(3)).canonical
    canonical_left = zb.canonical_frame(left, torch.zeros(3)).canonical
    assert torch.allclose(canonical_left, canonical_right, atol=1e-5)


def test_canonical_frame_rejects_wrong_shapes():
    with pytest.raises(ValueError, match="keypoints_3d"):
        zb.canonical_frame(torch.zeros(21, 3))


# ---------------------------------------------------------------- networks and losses

@pytest.fixture(autouse=True)
def one_thread():
    """Small networks run fastest on one thread, the more so when other programs keep the cores busy."""
    with torch_threads(1):
        yield


def small_config(**changes) -> zb.Zimmermann2017Config:
    """Zimmermann & Brox on 32-px crops with narrow layers and a fresh backbone: nothing shipped is needed."""
    small = dict(image_size=32, pretrained_backbone=False, encoder_width=0.25, refine_width=16, refine_convs=2,
                 prior_widths=(8, 8, 8), prior_hidden=(32, 32), view_widths=(8, 8, 8), view_hidden=(32, 16))
    return zb.Zimmermann2017Config(**{**small, **changes})


def build(lifting="canonical", seed=0, **changes) -> zb.Zimmermann2017:
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return zb.Zimmermann2017(small_config(lifting=lifting, **changes))


def context(seed=0, device="cpu"):
    """The LossContext of a training step (its generator is where the loss draws its noise from)."""
    return LossContext(step=0, generator=torch.Generator(device).manual_seed(seed), stage="images")


def fake_samples(count=2, seed=0, size=32):
    """Sample dicts with a random size x size image and a consistent projection of random keypoints."""
    from handlib.data.sample import make_sample
    from handlib.geometry import project_points

    generator = torch.Generator().manual_seed(seed)
    K = torch.tensor([[1.5 * size, 0, size / 2], [0, 1.5 * size, size / 2], [0, 0, 1]])
    samples = []
    for i in range(count):
        keypoints_3d = 0.03 * torch.randn(21, 3, generator=generator) + torch.tensor([0.0, 0.0, 0.5])
        samples.append(make_sample(torch.rand(3, size, size, generator=generator), project_points(keypoints_3d, K), K,
                                   mask=(torch.rand(size, size, generator=generator) > 0.5).float(),
                                   keypoints_3d=keypoints_3d, is_right=bool(i % 2)))
    return samples


def fake_batch(count=2, seed=0, size=32):
    return default_collate(fake_samples(count, seed, size))


@pytest.mark.parametrize("lifting", ["canonical", "direct"])
def test_model_shapes_and_loss_gradients(lifting):
    model = build(lifting)
    batch = fake_batch()
    out = model(batch["image"], batch["is_right"])
    assert out["segmentation"].shape == (2, 1, 32, 32)                        # hand logits at the image size
    assert len(out["score_maps"]) == model.config.pose_stages == 3
    assert all(maps.shape == (2, 21, 8, 8) for maps in out["score_maps"])     # a quarter of the image
    assert out["keypoints_3d"].shape == (2, 21, 3)
    if lifting == "canonical":
        assert out["canonical"].shape == (2, 21, 3) and out["viewpoint"].shape == (2, 3, 3)
        assert torch.allclose(out["viewpoint"] @ out["viewpoint"].transpose(1, 2), torch.eye(3).expand(2, 3, 3),
                              atol=1e-5)                                      # the viewpoint is a rotation
    total, terms = zb.zimmermann2017_loss(model, batch, context())
    assert set(terms) == {"segmentation", "score_maps", "lifting"}
    assert torch.isfinite(total) and total > 0
    total.backward()
    for name in ("backbone", "posenet", "lifting"):                           # every network learns
        grads = [p.grad for p in getattr(model, name).parameters()]
        assert all(g is not None for g in grads) and sum(g.abs().sum() for g in grads) > 0, name
    model.eval()
    prediction = zb.zimmermann2017_predict(model, batch)
    assert prediction.frame == "normalized"                                   # bone units, root-relative
    assert prediction.keypoints_3d.shape == (2, 21, 3) and prediction.keypoints_2d.shape == (2, 21, 2)
    assert prediction.keypoints_2d.min() >= 0 and prediction.keypoints_2d.max() <= 32     # pixels of the crop
    assert prediction.extras["mask"].shape == (2, 32, 32) and prediction.extras["score_maps"].shape == (2, 21, 8, 8)
    with pytest.raises(ValueError, match="32, 32"):
        model(fake_batch(size=64)["image"], batch["is_right"])             # the wrong image size is named


def test_the_loss_draws_its_noise_from_the_step_generator():
    """PosePrior learns from the true keypoints' score maps jittered by 2D noise; the noise comes from
    the step's generator, so the same (seed, stage, step) gives the same loss, another seed another."""
    model = build().eval()                                                     # no dropout
    batch = fake_batch()
    lifting = [zb.zimmermann2017_loss(model, batch, context(seed))[1]["lifting"] for seed in (0, 0, 1)]
    assert torch.equal(lifting[0], lifting[1]) and not torch.equal(lifting[0], lifting[2])


def test_the_ablation_variants_share_their_2d_networks():
    """The lifting ablation compares liftings alone: with one seed both variants start from the same
    backbone (HandSegNet, PoseNet's first stage) and PoseNet, and the lifting loss (PosePrior learns
    from the true keypoints' maps) sends them no gradient, so training keeps them equal."""
    batch = fake_batch()
    models = {}
    for lifting in ("canonical", "direct"):
        models[lifting] = build(lifting)
        _, terms = zb.zimmermann2017_loss(models[lifting], batch, context())
        terms["lifting"].backward()
        for name in ("backbone", "posenet"):
            assert all(p.grad is None for p in getattr(models[lifting], name).parameters()), (lifting, name)
        assert any(p.grad is not None for p in models[lifting].lifting.parameters())
    for name in ("backbone", "posenet"):
        canonical, direct = (getattr(models[k], name).state_dict() for k in ("canonical", "direct"))
        assert canonical.keys() == direct.keys()
        assert all(torch.equal(canonical[key], direct[key]) for key in canonical), name


@pytest.mark.parametrize("lifting", ["canonical", "direct"])
def test_loss_and_prediction_stay_on_the_batch_device(lifting):
    """Nothing is made on the CPU behind the batch's back (a GPU run would stop there): on PyTorch's
    "meta" device, which holds shapes and no data, any tensor made elsewhere is a device mismatch."""
    from handlib.runtime import to_device

    meta = torch.device("meta")
    model = build(lifting).to(meta)
    batch = to_device(fake_batch(), meta)
    # A meta generator does not exist; a CPU one is accepted for meta draws (and ignored).
    total, _ = zb.zimmermann2017_loss(model, batch, context())
    assert total.device == meta
    total.backward()
    model.eval()
    prediction = zb.zimmermann2017_predict(model, batch)
    tensors = [*prediction.tensors().values(), *prediction.extras.values()]
    assert {value.device for value in tensors} == {meta}


def test_posenet_loss_by_hand():
    # Two keypoints, both visible: root-mean-square errors 1 and 3 -> (1 + 3) / (2 + 0.001).
    target = torch.zeros(1, 2, 4, 4)
    predicted = torch.stack([torch.ones(4, 4), 3 * torch.ones(4, 4)])[None]
    loss = backbone.score_map_loss(predicted, target, torch.ones(1, 2))
    assert float(loss) == pytest.approx(4.0 / 2.001)
    # An invisible keypoint does not count.
    loss = backbone.score_map_loss(predicted, target, torch.tensor([[1.0, 0.0]]))
    assert float(loss) == pytest.approx(1.0 / 1.001)


def test_pose_prior_with_the_true_canonical_frame_recovers_the_hand():
    # If the two streams predicted the truth, the output is the normalised root-relative hand.
    keypoints, is_right = random_hands(3, seed=3), torch.tensor([1.0, 0.0, 1.0])
    frame = zb.canonical_frame(keypoints, is_right)
    relative = zb.from_canonical_frame(frame.canonical, frame.rotation, is_right)
    expected = (keypoints - keypoints[:, :1]) / frame.scale[:, None, None]
    assert torch.allclose(relative, expected, atol=1e-5)
    assert torch.allclose(zb.normalized_keypoints(keypoints), expected, atol=1e-5)


def test_score_maps_are_a_quarter_of_the_image():
    assert backbone.score_map_size(64) == 16 and backbone.score_map_size(128) == 32
    maps = backbone.score_map_targets(torch.tensor([[[31.5, 31.5]]]).expand(1, 21, 2), torch.ones(1, 21), 64)
    assert maps.shape == (1, 21, 16, 16) and float(maps.max()) > 0.9
    with pytest.raises(ValueError, match="multiple of 8"):
        backbone.score_map_size(60)


# ---------------------------------------------------------------- the method

def test_the_method_and_its_direct_variant():
    method, variant = get_method("zimmermann2017:direct")
    assert method is zb.METHOD and method.alignment == "gt_root_scale"      # normalised output: true root and scale
    assert method.config("quick", variant).lifting == "direct" and method.config("quick").lifting == "canonical"
    assert zb.Zimmermann2017(small_config(lifting="direct")).lifting_kind == "direct"
    with pytest.raises(ValueError, match="lifting: expected 'canonical' or 'direct'"):
        small_config(lifting="indirect")
    # Both profiles build one architecture (the one of the shipped backbone), and its checkpoint is
    # small: float32 weights under 10 MB.
    quick, full = (zb.Zimmermann2017(dataclasses.replace(method.config(profile), pretrained_backbone=False))
                   for profile in ("quick", "full"))
    assert {k: v.shape for k, v in quick.state_dict().items()} == {k: v.shape for k, v in full.state_dict().items()}
    assert 4 * sum(p.numel() for p in full.parameters()) < 10e6


def test_a_pretrained_model_needs_the_shipped_backbone(tmp_path, monkeypatch):
    from handlib import checkpoints

    monkeypatch.setattr(checkpoints, "SHIPPED_DIR", tmp_path)                # as before the backbone ships
    config = small_config(pretrained_backbone=True)
    with pytest.raises(FileNotFoundError, match="python -m handlib train backbone --profile full"):
        zb.METHOD.initialize(zb.Zimmermann2017(config), config)
    zb.METHOD.initialize(build(), small_config())                             # without it: nothing to load


SHIPPED_BACKBONE = Path(zb.__file__).resolve().parents[1] / "assets" / "checkpoints" / "backbone-full.pt"


@pytest.mark.skipif(not SHIPPED_BACKBONE.is_file(), reason="no shipped backbone yet (python -m handlib train "
                                                           "backbone --profile full, then export)")
def test_the_shipped_backbone_loads_into_the_encoder():
    from handlib.checkpoints import read_checkpoint

    encoder = backbone.load_pretrained(backbone.HandEncoder())
    shipped = read_checkpoint(SHIPPED_BACKBONE, "cpu")["model"]
    assert all(torch.equal(value, shipped[f"network.{key}"]) for key, value in encoder.state_dict().items())
    with pytest.raises(ValueError, match="build the HandEncoder with those"):
        backbone.load_pretrained(backbone.HandEncoder(width=0.5))


def test_the_method_trains_through_the_loop(tmp_path, monkeypatch):
    """Three steps of the real method on 16 rendered 32-px hands, its 3D scored with the true root and scale."""
    from handlib import methods
    from handlib.train import train

    monkeypatch.setattr(methods, "CACHE_DIR", tmp_path / "cache")           # render into the test's folder
    overrides = {**dataclasses.asdict(small_config()), "train_samples": 16, "test_samples": 8, "steps": 3,
                 "batch_size": 4}
    result = train("zimmermann2017:direct", profile="quick", device="cpu", run_dir=tmp_path / "runs",
                   progress=False, overrides=overrides)
    assert result.finished and result.checkpoint.name == "zimmermann2017-direct-quick.pt"
    losses = result.history["images"]
    assert set(losses) == {"total", "segmentation", "score_maps", "lifting"} and len(losses["total"]) == 3
    assert all(math.isfinite(value) for value in losses["total"])
    assert result.metrics["alignment"] == "gt_root_scale" and result.metrics["num_samples"] == 8
    assert result.metrics["epe_3d_mm"] > 0 and 0 <= result.metrics["auc_20_50"] <= 1


def test_lifting_ablation_has_one_row_per_lifting_and_input():
    canonical, direct = build("canonical"), build("direct")
    dataset = fake_samples(4, seed=1)
    rows = zb.lifting_ablation(canonical, direct, dataset, device="cpu", batch_size=2)
    assert [(row["lifting"], row["score_maps"].split()[0]) for row in rows] == [
        ("direct", "ground"), ("direct", "PoseNet"), ("canonical + viewpoint", "ground"),
        ("canonical + viewpoint", "PoseNet")]
    assert all(row["num_samples"] == 4 and row["median_3d_mm"] > 0 and 0 <= row["auc_20_50"] <= 1 for row in rows)
    assert "| direct | ground truth 2D |" in format_table(rows, columns=zb.ABLATION_COLUMNS)
    with pytest.raises(ValueError, match="direct_model"):
        zb.lifting_ablation(canonical, canonical, dataset, device="cpu")
