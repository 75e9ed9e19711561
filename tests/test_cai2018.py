"""Chapter 3 (Cai et al. 2018): the depth regulariser G, L_dep, the label split, the depth sensor, the method.

The models are small and start from a fresh backbone (``pretrained_backbone=False``): nothing here
needs the shipped checkpoints.
"""
import dataclasses
import json
import math

import pytest
import torch
from torch.utils.data import default_collate

from handlib.data.depth_sensor import DepthSensor, depth_edges, simulate_depth_sensor
from handlib.methods import LossContext
from handlib.models import cai2018 as cai
from handlib.registry import get_method
from handlib.runtime import torch_threads


@pytest.fixture(autouse=True)
def one_thread():
    with torch_threads(1):
        yield


def small_config(**changes) -> cai.Cai2018Config:
    """Cai et al. on 32-px crops (8 x 8 score and depth maps), narrow layers, a fresh backbone."""
    small = dict(image_size=32, depth_size=8, pretrained_backbone=False, encoder_width=0.25,
                 regressor_widths=(16, 16), regressor_hidden=32, regulariser_hidden=(64,),
                 regulariser_widths=(16, 8, 8))
    return cai.Cai2018Config(**{**small, **changes})


def build(seed=0, **changes) -> cai.Cai2018:
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return cai.Cai2018(small_config(**changes))


def context(seed=0):
    return LossContext(step=0, generator=torch.Generator().manual_seed(seed), stage="images")


def hand_depth(count=2, size=32, seed=0):
    """(count, size, size) metres: a tilted disc of 'hand' around 0.5 m, 0 on the background."""
    generator = torch.Generator().manual_seed(seed)
    ys, xs = torch.meshgrid(torch.arange(size) + 0.5, torch.arange(size) + 0.5, indexing="ij")
    maps = []
    for _ in range(count):
        centre = size / 2 + size / 8 * torch.randn(2, generator=generator)
        inside = (xs - centre[0]) ** 2 + (ys - centre[1]) ** 2 < (size / 3) ** 2
        maps.append(torch.where(inside, 0.5 + 0.002 * (xs - centre[0]), torch.zeros(())))
    return torch.stack(maps)


def fake_samples(count=4, seed=0, size=32):
    """Sample dicts: random image, random keypoints projected consistently, a disc-shaped depth map."""
    from handlib.data.sample import make_sample
    from handlib.geometry import project_points

    generator = torch.Generator().manual_seed(seed)
    K = torch.tensor([[1.5 * size, 0, size / 2], [0, 1.5 * size, size / 2], [0, 0, 1]])
    depth = hand_depth(count, size, seed)
    samples = []
    for i in range(count):
        keypoints_3d = 0.03 * torch.randn(21, 3, generator=generator) + torch.tensor([0.0, 0.0, 0.5])
        samples.append(make_sample(torch.rand(3, size, size, generator=generator), project_points(keypoints_3d, K), K,
                                   mask=(depth[i] > 0).float(), depth=depth[i], keypoints_3d=keypoints_3d))
    return samples


def fake_batch(count=4, seed=0, size=32):
    return default_collate(fake_samples(count, seed, size))


# ---------------------------------------------------------------- the depth sensor

def test_the_sensor_keeps_depth_where_the_hand_is():
    depth = hand_depth(3, 64)
    measured = simulate_depth_sensor(depth, torch.Generator().manual_seed(0))
    hand, edges = depth > 0, depth_edges(depth)
    interior = hand & ~edges
    assert (measured[interior] > 0).all()                                # inside the hand every pixel reads
    sigma = 4e-3 * 0.5 ** 2                                              # 1 mm at 0.5 m
    assert (measured[interior] - depth[interior]).abs().max() < 5 * sigma + 0.5e-3
    assert (measured[~hand] == 0).all()                                  # nothing is read off the hand
    assert (measured[edges] == 0).any() and (measured[edges] > 0).any()  # holes on part of the edge
    assert torch.allclose(measured[measured > 0] / 1e-3, (measured[measured > 0] / 1e-3).round(), atol=1e-3)


def test_the_sensor_noise_grows_with_distance_and_comes_from_the_generator():
    near, far = torch.full((1, 64, 64), 0.3), torch.full((1, 64, 64), 0.9)
    sensor = DepthSensor(quantisation=0.0, edge_hole_probability=0.0)
    spread = [float((simulate_depth_sensor(d, torch.Generator().manual_seed(0), sensor) - d).std()) for d in (near, far)]
    assert spread[1] / spread[0] == pytest.approx((0.9 / 0.3) ** 2, rel=0.15)    # sigma = k z^2
    depth = hand_depth(2)
    draws = [simulate_depth_sensor(depth, torch.Generator().manual_seed(seed)) for seed in (1, 1, 2)]
    assert torch.equal(draws[0], draws[1]) and not torch.equal(draws[0], draws[2])
    with pytest.raises(ValueError, match="depth"):
        simulate_depth_sensor(torch.zeros(8, 8))


def test_depth_edges_are_the_silhouette_and_the_jumps():
    depth = torch.zeros(1, 9, 9)
    depth[0, 1:8, 1:8] = 0.5
    depth[0, 4, 1:8] = 0.45                                              # a finger 5 cm in front of the palm
    edges = depth_edges(depth)[0]
    assert edges[1, 4] and edges[7, 4] and not edges[0, 4]               # the silhouette, on the hand's side
    assert edges[4, 4] and edges[3, 4] and edges[5, 4]                   # both sides of the finger's edge
    assert not edges[2, 4]                                               # flat palm away from the edges


# ---------------------------------------------------------------- depth targets and L_dep

def test_depth_targets_by_hand():
    depth = torch.zeros(1, 4, 4)
    depth[0, :2, :2] = torch.tensor([[0.50, 0.50], [0.52, 0.0]])         # cell (0, 0): 3 of 4 pixels read
    depth[0, 2:, 2:] = 0.50                                              # cell (1, 1): all read
    depth[0, 0, 3] = 0.60                                                # cell (0, 1): 1 of 4, unknown
    target, known = cai.depth_targets(depth, 2)
    assert known[0].tolist() == [[1.0, 0.0], [0.0, 1.0]]
    # The hand's median is 0.50 m; cell (0, 0) has the mean 0.5067 m of its 3 readings.
    assert float(target[0, 0, 0]) == pytest.approx((0.52 / 3 + 1.0 / 3 - 0.50) / cai.DEPTH_UNIT, rel=1e-4)
    assert float(target[0, 1, 1]) == pytest.approx(0.0, abs=1e-6) and float(target[0, 0, 1]) == 0.0


def test_depth_loss_masks_the_background_and_is_zero_without_depth():
    target, known = cai.depth_targets(hand_depth(2, 32), 8)
    rendered = target.clone()
    rendered[known == 0] = 100.0                                         # anything off the hand is not compared
    assert float(cai.depth_loss(rendered, target, known, torch.ones(2))) == 0.0
    rendered = target + 0.25 * known                                     # 0.25 off on every hand cell
    assert float(cai.depth_loss(rendered, target, known, torch.ones(2))) == pytest.approx(0.25)
    assert float(cai.depth_loss(rendered, target, known, torch.zeros(2))) == 0.0     # no depth map: no loss
    empty_target, empty_known = cai.depth_targets(torch.zeros(2, 32, 32), 8)          # no reading at all
    assert empty_known.sum() == 0
    assert float(cai.depth_loss(rendered, empty_target, empty_known, torch.ones(2))) == 0.0
    # In the image stage: a batch without depth maps gives L_dep = 0.
    batch = fake_batch()
    batch["has_depth"] = torch.zeros(4, dtype=torch.bool)
    assert float(cai.cai2018_loss(build(), batch, context())[1]["depth"].detach()) == 0.0


# ---------------------------------------------------------------- G

def test_the_regulariser_renders_a_depth_map_of_the_right_shape():
    model = build()
    joints, keypoints_2d = torch.randn(3, 21, 3), 32 * torch.rand(3, 21, 2)
    assert model.render_depth(joints, keypoints_2d).shape == (3, 8, 8)
    assert cai.DepthRegulariser(depth_size=32)(joints, torch.rand(3, 21, 2)).shape == (3, 32, 32)


def test_the_regulariser_learns_a_depth_map_from_joints():
    """On 8 pairs, 150 steps of G's own loss bring it well under a quarter of where it started."""
    torch.manual_seed(0)
    model = build()
    batch = fake_batch(8)
    optimizer = torch.optim.Adam(model.depth_regulariser.parameters(), lr=3e-3)
    losses = []
    for step in range(150):
        loss, _ = cai.regulariser_loss(model, batch, context(step))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))
    assert losses[-1] < 0.25 * losses[0]


def test_the_image_stage_trains_everything_but_the_frozen_regulariser():
    model = build()
    stages = cai.METHOD.stages(small_config())
    assert [stage.name for stage in stages] == ["depth_regulariser", "images"]
    regulariser = {id(p) for p in model.depth_regulariser.parameters()}
    assert {id(p) for p in stages[0].parameters(model)} == regulariser
    trained = {id(p) for p in stages[1].parameters(model)}
    assert not trained & regulariser and len(trained) + len(regulariser) == len(list(model.parameters()))
    # L_dep reaches the regressor through G; the 3D losses reach the 2D network only end to end.
    for end_to_end in (False, True):
        model = build(end_to_end=end_to_end)
        _, terms = cai.cai2018_loss(model, fake_batch(), context())
        (terms["depth"] + terms["joints_3d"]).backward()
        assert sum(p.grad.abs().sum() for p in model.regressor.parameters() if p.grad is not None) > 0
        backbone_grads = [p.grad for p in model.backbone.parameters() if p.grad is not None]
        assert (len(backbone_grads) > 0) == end_to_end


# ---------------------------------------------------------------- the label split

def test_the_label_split_is_reproducible_from_its_seed_and_nested():
    split = cai.label_split(1000, 0.05, seed=3)
    assert split.dtype == torch.bool and int(split.sum()) == 50
    assert torch.equal(split, cai.label_split(1000, 0.05, seed=3))
    assert not torch.equal(split, cai.label_split(1000, 0.05, seed=4))
    assert (split <= cai.label_split(1000, 0.25, seed=3)).all()          # 5 % lies within 25 %
    assert int(cai.label_split(10, 0.01, 0).sum()) == 1                  # at least one label
    assert int(cai.label_split(10, 0.0, 0).sum()) == 0 and cai.label_split(10, 1.0, 0).all()
    with pytest.raises(ValueError, match="fraction"):
        cai.label_split(10, 5.0, 0)


def test_the_label_split_hides_3d_and_keeps_2d_and_depth():
    samples = fake_samples(8)
    dataset = cai.LabelSplit(samples, 0.25, seed=0)
    assert int(dataset.labelled.sum()) == 2
    for i in range(8):
        sample = dataset[i]
        assert bool(sample["has_3d"]) == bool(dataset.labelled[i])
        assert torch.isnan(sample["keypoints_3d"]).all() != bool(dataset.labelled[i])
        assert torch.equal(sample["keypoints_2d"], samples[i]["keypoints_2d"])
        assert torch.equal(sample["depth"], samples[i]["depth"]) and bool(sample["has_depth"])
    batch = default_collate([dataset[i] for i in range(8)])
    total, terms = cai.cai2018_loss(build(), batch, context())           # the hidden NaN never reach the loss
    assert torch.isfinite(total) and all(math.isfinite(float(v.detach())) for v in terms.values())


# ---------------------------------------------------------------- the model, its loss and predict

def test_model_loss_and_prediction_shapes():
    model = build()
    batch = fake_batch()
    out = model(batch["image"])
    assert out["score_maps"].shape == (4, 21, 8, 8) and out["keypoints_3d"].shape == (4, 21, 3)
    with torch.no_grad():
        total, terms = cai.cai2018_loss(model, batch, context())
        assert set(terms) == {"score_maps", "joints_3d", "depth"} and torch.isfinite(total)
        assert float(total) == pytest.approx(float(terms["score_maps"] + terms["joints_3d"] + terms["depth"]),
                                             rel=1e-5)                    # weights 1, 1, 1
        total, terms = cai.cai2018_loss(build(depth_supervision=False), batch, context())
        assert float(total) == pytest.approx(float(terms["score_maps"] + terms["joints_3d"]), rel=1e-5)
    model.eval()
    prediction = cai.cai2018_predict(model, batch)
    assert prediction.frame == "normalized"
    assert prediction.keypoints_2d.shape == (4, 21, 2) and prediction.keypoints_3d.shape == (4, 21, 3)
    assert 0 <= prediction.keypoints_2d.min() and prediction.keypoints_2d.max() <= 32
    assert prediction.extras["depth"].shape == (4, 8, 8) and prediction.extras["score_maps"].shape == (4, 21, 8, 8)
    views = cai.depth_views(model, batch, torch.Generator().manual_seed(0))
    assert set(views) == {"sensor", "known", "true_joints", "predicted_joints"}
    assert all(view.shape == (4, 8, 8) for view in views.values())
    with pytest.raises(ValueError, match="32, 32"):
        model(fake_batch(size=64)["image"])


def test_the_loss_draws_the_sensor_from_the_step_generator():
    model = build().eval()
    batch = fake_batch()
    depth = [cai.cai2018_loss(model, batch, context(seed))[1]["depth"] for seed in (0, 0, 1)]
    assert torch.equal(depth[0], depth[1]) and not torch.equal(depth[0], depth[2])


def test_the_method_and_its_label_fraction_variants():
    method, variant = get_method("cai2018:labels5_nodepth")
    assert method is cai.METHOD and method.alignment == "gt_root_scale"
    config = method.config("quick", variant)
    assert config.label_fraction == 0.05 and not config.depth_supervision
    assert method.config("quick", "labels5").depth_supervision and method.config("quick").label_fraction == 1.0
    assert not method.config("quick", "nodepth").depth_supervision
    assert {f"labels{p}{s}" for p in (1, 5, 25) for s in ("", "_nodepth")} | {"nodepth"} == set(method.variants)
    with pytest.raises(ValueError, match="label_fraction"):
        small_config(label_fraction=1.5)
    with pytest.raises(ValueError, match="depth_size"):
        small_config(depth_size=12)


def test_the_method_trains_through_the_loop(tmp_path, monkeypatch):
    """Both stages, a few steps each, on 16 rendered 32-px hands with 25 % of the 3D labels."""
    from handlib import methods
    from handlib.train import train

    monkeypatch.setattr(methods, "CACHE_DIR", tmp_path / "cache")           # render into the test's folder
    overrides = {**dataclasses.asdict(small_config()), "train_samples": 16, "test_samples": 8, "steps": 3,
                 "batch_size": 4, "depth_pairs": 16, "regulariser_steps": 3, "regulariser_batch_size": 4}
    result = train("cai2018:labels25", profile="quick", device="cpu", run_dir=tmp_path / "runs",
                   progress=False, overrides=overrides)
    assert result.finished and result.checkpoint.name == "cai2018-labels25-quick.pt"
    assert set(result.history) == {"depth_regulariser", "images"}
    assert len(result.history["depth_regulariser"]["depth"]) == 3
    assert set(result.history["images"]) == {"total", "score_maps", "joints_3d", "depth"}
    assert all(math.isfinite(v) for values in result.history["images"].values() for v in values)
    assert result.metrics["alignment"] == "gt_root_scale" and result.metrics["num_samples"] == 8
    assert result.metrics["epe_3d_mm"] > 0 and 0 <= result.metrics["auc_20_50"] <= 1

    # The run's row of `python -m handlib benchmark`: its numbers, size, speed and training time.
    from handlib.__main__ import main

    out = tmp_path / "table"
    assert main(["benchmark", "--profile", "quick", "--run-dir", str(tmp_path / "runs"), "--device", "cpu",
                 "--json", str(out.with_suffix(".json")), "--markdown", str(out.with_suffix(".md"))]) in (0, None)
    rows = json.loads(out.with_suffix(".json").read_text())
    (row,) = [row for row in rows if row["method"] == "cai2018:labels25"]
    model = get_method("cai2018")[0].build_model(get_method("cai2018")[0].config("quick", "labels25", **overrides))
    assert row["parameters"] == sum(p.numel() for p in model.parameters())
    assert row["ms_per_image"] > 0 and 0 < row["train_minutes"] * 60 <= result.wall_time_s + 1
    assert row["epe_3d_mm"] == pytest.approx(result.metrics["epe_3d_mm"], rel=1e-4)
    assert "ms / image" in out.with_suffix(".md").read_text()


def test_the_experiment_harness_names_registered_arms(benchmark_script):
    """benchmarks/cai_label_fraction.py trains every label percent with and without L_dep."""
    harness = benchmark_script("cai_label_fraction")
    for percent in harness.VARIANTS:
        for depth in (True, False):
            method, variant = get_method(harness.variant_name(percent, depth))
            config = method.config("quick", variant)
            assert config.label_fraction == percent / 100 and config.depth_supervision == depth
    with pytest.raises(ValueError, match="percent"):
        harness.variant_name(50, True)
