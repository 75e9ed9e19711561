"""Chapter 6 (Ge et al. 2019): (u, v, d) and lifting, the mesh losses, the depth-map loss, the network,
the weak stage's teacher, prediction, the method and its variants.

The models are small and start from a fresh backbone (``pretrained_backbone=False``): nothing here
needs the shipped checkpoints.
"""
import dataclasses
import math

import pytest
import torch
from torch.utils.data import default_collate

from handlib.methods import LossContext
from handlib.models import ge2019 as ge
from handlib.registry import get_method, shipped_names
from handlib.runtime import torch_threads


@pytest.fixture(autouse=True)
def one_thread():
    with torch_threads(1):
        yield


def small_config(**changes) -> ge.Ge2019Config:
    """Ge et al. on 32-px crops (8 x 8 score and depth maps), narrow layers, a fresh backbone."""
    small = dict(image_size=32, depth_size=8, pretrained_backbone=False, encoder_width=0.25, feature_widths=(16,),
                 feature_size=32, generator_widths=(8, 8), regressor_widths=(8, 8), regressor_hidden=16)
    return ge.Ge2019Config(**{**small, **changes})


def build(seed=0, **changes) -> ge.Ge2019:
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return ge.Ge2019(small_config(**changes))


def context(seed=0, stage="images"):
    return LossContext(step=0, generator=torch.Generator().manual_seed(seed), stage=stage)


def fake_samples(count=4, seed=0, size=32):
    """Sample dicts of MANO hands 0.45-0.55 m away: random image, the true 2D, 3D, pose, betas and a rendered depth."""
    from handlib.data.sample import make_sample
    from handlib.geometry import project_points
    from handlib.render import place_in_front, rasterize

    generator = torch.Generator().manual_seed(seed)
    layer = ge.hand_layer()
    pose = 0.3 * torch.randn(count, 48, generator=generator)
    betas = 0.5 * torch.randn(count, 10, generator=generator)
    out = layer(hand_pose=pose[:, 3:], betas=betas, global_orient=pose[:, :3])
    vertices = place_in_front(out.vertices, 0.45 + 0.1 * torch.rand(count, generator=generator))
    joints = out.joints + (vertices - out.vertices)[:, :1]
    K = torch.tensor([[2.4 * size, 0, size / 2], [0, 2.4 * size, size / 2], [0, 0, 1]])
    depth = rasterize(vertices, layer.faces, K, size).depth
    return [make_sample(torch.rand(3, size, size, generator=generator), project_points(joints[i], K), K,
                        mask=(depth[i] > 0).float(), depth=depth[i], keypoints_3d=joints[i], pose=pose[i],
                        betas=betas[i]) for i in range(count)]


def fake_batch(count=4, seed=0, size=32):
    return default_collate(fake_samples(count, seed, size))


# ---------------------------------------------------------------- (u, v, d) and metres

def test_lift_inverts_to_image_depth():
    batch = fake_batch(2)
    points = batch["keypoints_3d"]
    root = points[:, 0, 2]
    image_depth = ge.to_image_depth(points, batch["K"], 32, root)
    assert image_depth[:, 0, 2].abs().max() < 1e-6                          # d = 0 at the root
    torch.testing.assert_close(image_depth[..., :2] * 32, batch["keypoints_2d"])   # (u, v) are the 2D in crop units
    torch.testing.assert_close(ge.lift(image_depth, batch["K"], 32, root), points)
    with pytest.raises(ValueError, match=r"image_depth: expected a tensor of shape \(B, N, 3\)"):
        ge.lift(torch.zeros(2, 21), batch["K"], 32, root)


def test_camera_mesh_puts_the_mesh_on_the_keypoints():
    batch = fake_batch(2)
    mesh = ge.camera_mesh(batch["pose"], batch["betas"], batch["keypoints_3d"])
    out = ge.hand_layer()(hand_pose=batch["pose"][:, 3:], betas=batch["betas"], global_orient=batch["pose"][:, :3])
    torch.testing.assert_close(mesh - out.vertices, (batch["keypoints_3d"] - out.joints)[:, :1].expand_as(mesh))
    torch.testing.assert_close(batch["keypoints_3d"] - out.joints, (batch["keypoints_3d"] - out.joints)[:, :1].expand(-1, 21, -1))


# ---------------------------------------------------------------- mesh losses

@pytest.fixture(scope="module")
def hand_mesh():
    out = ge.hand_layer()(hand_pose=0.2 * torch.randn(2, 45, generator=torch.Generator().manual_seed(3)))
    return out.vertices / ge.LOSS_UNIT, ge.MeshTopology.of(ge.hand_layer().faces, ge.NUM_VERTICES)


def test_each_mesh_loss_is_zero_on_the_true_mesh_and_positive_off_it(hand_mesh):
    vertices, topology = hand_mesh
    noisy = vertices + 0.05 * torch.randn(vertices.shape, generator=torch.Generator().manual_seed(0))
    weights = {term: 1.0 for term in ge.MESH_TERMS}
    total, terms = ge.mesh_loss(vertices, vertices, topology, weights)
    assert set(terms) == set(ge.MESH_TERMS) and total.abs().max() < 1e-9
    assert all(value.abs().max() < 1e-9 for value in terms.values())
    total, terms = ge.mesh_loss(noisy, vertices, topology, weights)
    assert all(bool((value > 1e-6).all()) for value in terms.values()), terms
    torch.testing.assert_close(total, sum(terms.values()))
    _, only = ge.mesh_loss(noisy, vertices, topology, {"vertices": 1.0, "normals": 0.0})
    assert set(only) == {"vertices"}


def test_what_each_mesh_term_is_blind_to(hand_mesh):
    """A rigid motion keeps edge lengths; a translation keeps the Laplacian coordinates and the
    edges' directions (normals); the vertex term sees both."""
    vertices, topology = hand_mesh
    moved = vertices + torch.tensor([0.3, -0.2, 0.5])
    rotation = torch.linalg.matrix_exp(torch.tensor([[0.0, -0.4, 0.1], [0.4, 0.0, -0.2], [-0.1, 0.2, 0.0]]))
    turned = vertices @ rotation.T
    assert ge.edge_length_loss(turned, vertices, topology.edges).max() < 1e-8
    assert ge.laplacian_loss(moved, vertices, topology.adjacency).max() < 1e-8
    assert ge.normal_loss(moved, vertices, topology.faces).max() < 1e-8
    assert ge.vertex_loss(moved, vertices).min() > 0.3 and ge.normal_loss(turned, vertices, topology.faces).min() > 1e-4


def test_mesh_losses_check_shapes(hand_mesh):
    vertices, topology = hand_mesh
    with pytest.raises(ValueError, match=r"target: expected the shape of predicted \(2, 778, 3\), got \(2, 777, 3\)"):
        ge.vertex_loss(vertices, vertices[:, 1:])
    with pytest.raises(ValueError, match="weights: expected terms among"):
        ge.mesh_loss(vertices, vertices, topology, {"smoothness": 1.0})


def test_the_depth_map_loss_ignores_a_constant_and_the_cells_not_compared():
    target = torch.rand(2, 8, 8, generator=torch.Generator().manual_seed(0))
    known = torch.ones(2, 8, 8)
    known[:, :2] = 0
    coverage = torch.ones(2, 8, 8)
    has_depth = torch.ones(2)
    shifted = target + torch.tensor([3.0, -1.0])[:, None, None]
    assert ge.depth_map_loss(shifted, coverage, target, known, has_depth) < 1e-6
    spoiled = shifted.clone()
    spoiled[:, :2] = 100.0                                                   # unknown cells: not compared
    assert ge.depth_map_loss(spoiled, coverage, target, known, has_depth) < 1e-6
    spoiled[:, 5, 5] += 1.0
    assert ge.depth_map_loss(spoiled, coverage, target, known, has_depth) > 1e-3
    assert ge.depth_map_loss(spoiled, coverage, target, known, torch.zeros(2)) == 0


# ---------------------------------------------------------------- the network

def test_forward_and_predict_shapes():
    model = build().eval()
    batch = fake_batch(3)
    out = model(batch["image"])
    assert out["score_maps"].shape == (3, 21, 8, 8) and out["mesh"].shape == (3, 778, 3)
    assert out["joints"].shape == (3, 21, 3) and out["extent"].shape == (3,) and bool((out["extent"] > 0).all())
    prediction = ge.ge2019_predict(model, batch)
    assert prediction.frame == "root_relative" and prediction.vertices.shape == (3, 778, 3)
    assert prediction.keypoints_3d.shape == (3, 21, 3) and prediction.keypoints_2d.shape == (3, 21, 2)
    assert prediction.keypoints_3d[:, 0].abs().max() == 0
    # without K: the nominal intrinsics; the root-relative result moves by perspective only (millimetres)
    without_k = ge.ge2019_predict(model, {"image": batch["image"], "is_right": batch["is_right"]})
    assert without_k.vertices.shape == (3, 778, 3) and torch.isfinite(without_k.vertices).all()
    with pytest.raises(ValueError, match=r"image: expected shape \(B, 3, 32, 32\).*got \(3, 3, 64, 64\)"):
        model(torch.zeros(3, 3, 64, 64))


def test_the_generator_upsamples_through_the_hierarchy():
    model = build()
    sizes = [level.num_vertices for level in model.hierarchy]
    assert sizes[0] == 778 and len(sizes) == 5
    generator = model.net.generator
    assert generator.fc.out_features == sizes[-1] * 8
    assert generator.middle_blocks[0].conv.num_vertices == sizes[2] and generator.out.num_vertices == 778
    assert model.net.regressor.fc[0].in_features == sizes[-1] * 8


def test_the_full_loss_trains_the_network_end_to_end():
    model = build().train()
    total, terms = ge.ge2019_loss(model, fake_batch(), context())
    assert set(terms) == {"score_maps", "mesh", "joints", "extent", "mesh_vertices", "mesh_normals", "mesh_edges",
                          "mesh_laplacian"}
    assert all(math.isfinite(float(v.detach())) for v in terms.values()) and float(terms["mesh"].detach()) > 0
    total.backward()
    for part in (model.net.generator, model.net.regressor, model.net.extent_head, model.net.backbone):
        assert sum(float(p.grad.abs().sum()) for p in part.parameters() if p.grad is not None) > 0


@pytest.mark.parametrize("end_to_end", [False, True])
def test_the_3d_losses_reach_the_backbone_only_end_to_end(end_to_end):
    model = build(end_to_end=end_to_end).train()
    with torch.no_grad():       # a new generator's last layer is zero (it starts at the mean hand): wake it
        model.net.generator.out.weight.normal_(0.0, 0.1)
    _, terms = ge.ge2019_loss(model, fake_batch(), context())
    (terms["mesh"] + terms["joints"]).backward()
    reached = sum(float(p.grad.abs().sum()) for p in model.net.backbone.parameters() if p.grad is not None)
    assert (reached > 0) == end_to_end
    assert sum(float(p.grad.abs().sum()) for p in model.net.feature_block.parameters()) > 0


def test_the_mesh_loss_counts_only_samples_with_a_mesh():
    model = build().train()
    batch = fake_batch()
    batch["has_mano"] = torch.zeros(4, dtype=torch.bool)
    _, terms = ge.ge2019_loss(model, batch, context())
    assert float(terms["mesh"].detach()) == 0 and float(terms["joints"].detach()) > 0


def test_the_weak_stage_freezes_a_teacher_and_trains_the_student_only():
    model = build(weak_stage=True).train()
    assert not bool(model.teacher_ready) and not model.teacher.training
    weak = default_collate([ge.WeakLabels(fake_samples())[i] for i in range(4)])
    assert torch.isnan(weak["keypoints_3d"]).all() and not weak["has_3d"].any() and not weak["has_mano"].any()
    total, terms = ge.weak_loss(model, weak, context(stage="weak"))
    assert bool(model.teacher_ready) and set(terms) == {"score_maps", "depth", "pseudo"}
    # the teacher was copied from the network's weights (the network's BatchNorm statistics moved on since)
    for (name, a), b in zip(model.net.named_parameters(), model.teacher.parameters()):
        assert torch.equal(a, b), name
    assert float(terms["depth"].detach()) > 0
    total.backward()
    assert all(p.grad is None for p in model.teacher.parameters())
    assert sum(float(p.grad.abs().sum()) for p in model.net.generator.parameters() if p.grad is not None) > 0
    stages = ge.METHOD.stages(small_config(weak_stage=True))
    assert [stage.name for stage in stages] == ["images", "weak"]
    teacher = {id(p) for p in model.teacher.parameters()}
    assert not {id(p) for p in stages[1].parameters(model)} & teacher


def test_the_depth_loss_reaches_the_mesh_through_the_soft_renderer():
    model = build(weak_stage=True, weight_pseudo=0.0).train()
    weak = default_collate([ge.WeakLabels(fake_samples())[i] for i in range(4)])
    out = model(weak["image"])
    mesh = out["mesh"].detach().requires_grad_(True)
    config = model.config
    rendered, coverage = ge.rendered_depth(mesh, model.topology.faces, weak["K"], config, torch.full((4,), 0.5))
    assert rendered.shape == (4, 8, 8) and coverage.shape == (4, 8, 8)
    (rendered * coverage).sum().backward()
    assert mesh.grad[..., 2].abs().sum() > 0                                # depth moves with d


# ---------------------------------------------------------------- the method

def test_variants_are_registered_experiment_arms():
    method, _ = get_method("ge2019")
    assert method.alignment == "root"
    expected = {"weak", "weak_nodepth", "weak_nopseudo", "weak_2d", "no_normal", "no_edge", "no_laplacian"}
    assert set(method.variants) == expected
    assert not any(variant.ships for variant in method.variants.values())
    assert "ge2019" in shipped_names() and not any(name.startswith("ge2019:") for name in shipped_names())
    assert method.config("quick", "no_edge").weight_edges == 0
    assert method.config("quick", "weak_nodepth").weight_depth == 0 and method.config("quick", "weak").weak_stage
    weak = method.config("quick", "weak")                   # the weak stage alone, from the shipped model
    assert weak.net_from == "ge2019" and weak.steps == 0 and method.config("quick").net_from == ""
    with pytest.raises(ValueError, match="coarsening_levels"):
        small_config(coarsening_levels=3)


def test_the_method_trains_through_the_loop(tmp_path, monkeypatch):
    """Both stages, a few steps each, on 16 rendered 32-px hands of each style."""
    from handlib import methods
    from handlib.train import train

    monkeypatch.setattr(methods, "CACHE_DIR", tmp_path / "cache")           # render into the test's folder
    small = {key: value for key, value in dataclasses.asdict(small_config()).items() if key != "weak_stage"}
    overrides = {**small, "train_samples": 16, "test_samples": 8, "steps": 3,
                 "batch_size": 4, "weak_steps": 2, "weak_samples": 16}
    result = train("ge2019:weak", profile="quick", device="cpu", run_dir=tmp_path / "runs", progress=False,
                   overrides=overrides)
    assert result.finished and result.checkpoint.name == "ge2019-weak-quick.pt"
    assert set(result.history) == {"images", "weak"}
    assert len(result.history["images"]["mesh"]) == 3 and len(result.history["weak"]["depth"]) == 2
    assert all(math.isfinite(v) for stage in result.history.values() for values in stage.values() for v in values)
    assert result.metrics["alignment"] == "root" and result.metrics["num_samples"] == 8
    assert result.metrics["epe_3d_mm"] > 0 and result.metrics["mesh_error_mm"] > 0


def test_the_tables_harness_scores_every_row(tmp_path, monkeypatch, benchmark_script):
    """benchmarks/ge_tables.py on tiny runs: the shipped model on the second style and the weak arms
    on top of it, the mesh-term arms, and the graph CNN beside MANO regression."""
    from handlib import checkpoints, methods
    from handlib.train import train

    harness = benchmark_script("ge_tables")
    monkeypatch.setattr(methods, "CACHE_DIR", tmp_path / "cache")
    small = {key: value for key, value in dataclasses.asdict(small_config()).items() if key != "weak_stage"}
    tiny = {**small, "train_samples": 8, "test_samples": 4, "steps": 2, "batch_size": 4, "weak_steps": 2,
            "weak_samples": 8}
    shipped = train("ge2019", profile="quick", device="cpu", run_dir=tmp_path / "shipped", progress=False,
                    overrides=tiny).checkpoint
    load = checkpoints.load_model

    def load_tiny(name, profile="full", checkpoint=None, device=None, run_dir=None):   # "the shipped model"
        return load(name, "quick", shipped if checkpoint is None else checkpoint, device, run_dir)

    monkeypatch.setattr(checkpoints, "load_model", load_tiny)
    rows = harness.weak_rows("quick", run_dir=tmp_path / "arms", shipped_run_dir=tmp_path / "shipped",
                             overrides={**tiny, "net_from": "ge2019", "steps": 0})
    second = [row for row in rows if row["dataset"] == "second style"]
    assert [row["row"] for row in second] == ["fully supervised, first style only", *harness.WEAK_ROWS]
    assert all(row["epe_3d_mm"] > 0 and row["mesh_error_mm"] > 0 for row in second)
    assert len(rows) == 5 * len(second)                                          # and the four real sets
    rows = harness.mesh_term_rows("quick", run_dir=tmp_path / "arms", overrides=tiny)
    assert [row["row"] for row in rows] == list(harness.MESH_ROWS) and all(row["wall_time_s"] > 0 for row in rows)
    from tests.test_boukhayma2019 import small_config as boukhayma_config

    train("boukhayma2019", profile="quick", device="cpu", run_dir=tmp_path / "shipped", progress=False,
          overrides={**dataclasses.asdict(boukhayma_config()), "train_samples": 8, "test_samples": 4, "steps": 1,
                     "batch_size": 4, "pretrain_steps": 1})
    rows = harness.versus_mano_rows("quick", run_dir=tmp_path / "shipped")
    assert {row["row"] for row in rows} == set(harness.VERSUS) and all(row["epe_2d_px"] > 0 for row in rows)


def test_a_mano_mesh_is_its_own_closest_mano_mesh_and_a_stretched_finger_is_not():
    """``closest_mano_mesh`` (chapter 6: the shapes a free mesh makes and MANO cannot)."""
    generator = torch.Generator().manual_seed(3)
    layer = ge.hand_layer()
    out = layer(hand_pose=0.3 * torch.randn(2, 45, generator=generator),
                betas=0.5 * torch.randn(2, 10, generator=generator),
                global_orient=0.5 * torch.randn(2, 3, generator=generator))
    closest, betas = ge.closest_mano_mesh(out.vertices, out.joints, steps=100)
    assert closest.shape == (2, 778, 3) and betas.shape == (2, 10)
    assert (closest - out.vertices).norm(dim=-1).mean() < 3e-3                        # metres
    index_tip = out.vertices[:, layer.fingertip_vertex_ids[1]]          # stretch the index finger's tip region
    near_tip = ((out.vertices - index_tip[:, None]).norm(dim=-1) < 0.02).float()[..., None]
    along = torch.nn.functional.normalize(index_tip - out.joints[:, 5], dim=-1)[:, None]
    stretched = out.vertices + 0.02 * near_tip * along
    far, _ = ge.closest_mano_mesh(stretched, out.joints, steps=100)
    assert (far - stretched).norm(dim=-1).mean() > (closest - out.vertices).norm(dim=-1).mean()
    with pytest.raises(ValueError, match="vertices"):
        ge.closest_mano_mesh(out.vertices[:, :10], out.joints)
