"""Tests of the synthetic data engine (handlib.data.synth): the sample contract, determinism,
geometry (projection, depth, visibility), the knobs, and the on-disk cache of the test set.

Small images (32 to 64 px) and a handful of samples keep the whole file well under a minute.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

from handlib.data import synth
from handlib.data.sample import SAMPLE_KEYS, make_sample
from handlib.geometry import axis_angle_to_matrix, project_points
from handlib.skeleton import FINGERTIPS

SIZE = 48


def _model_available() -> bool:
    from handlib.mano import default_model_path

    try:
        default_model_path()
    except FileNotFoundError:
        return False
    return True


pytestmark = pytest.mark.skipif(not _model_available(), reason="no hand model: run `python -m handlib build-hand`")


@pytest.fixture(scope="module")
def batch():
    """Eight samples with occluders, and their layers (hand before occluders, occluder pixels)."""
    return synth.render_batch(8, seed=3, image_size=SIZE, occlusion=0.6, return_layers=True)


def _keypoint_pixels(keypoints_2d, size):
    column, row = keypoints_2d.unbind(-1)
    return (row.floor().clamp(0, size - 1) * size + column.floor().clamp(0, size - 1)).long()


def test_shapes_and_dtypes_match_make_sample(batch):
    sample = synth.unbatch(batch)[0]
    reference = make_sample(torch.rand(3, SIZE, SIZE), torch.zeros(21, 2), torch.eye(3), mask=torch.zeros(SIZE, SIZE),
                            depth=torch.zeros(SIZE, SIZE), keypoints_3d=torch.zeros(21, 3), visibility=torch.ones(21),
                            pose=torch.zeros(48), betas=torch.zeros(10))
    assert set(sample) == set(SAMPLE_KEYS)
    for key in SAMPLE_KEYS:
        assert sample[key].shape == reference[key].shape, key
        assert sample[key].dtype == reference[key].dtype, key
    assert batch["image"].min() >= 0 and batch["image"].max() <= 1
    assert batch["has_3d"].all() and batch["has_mask"].all() and batch["has_depth"].all() and batch["has_mano"].all()
    assert (batch["is_right"] == 1).all()


def test_same_seed_same_tensors_other_seed_other_tensors(batch):
    again = synth.render_batch(8, seed=3, image_size=SIZE, occlusion=0.6)
    other = synth.render_batch(8, seed=4, image_size=SIZE, occlusion=0.6)
    for key in SAMPLE_KEYS:
        assert torch.equal(batch[key], again[key]), key
    assert not torch.allclose(batch["image"], other["image"])
    assert not torch.allclose(batch["keypoints_3d"], other["keypoints_3d"])
    val = synth.render_batch(8, seed=3, split="val", image_size=SIZE, occlusion=0.6)
    assert not torch.allclose(batch["pose"], val["pose"])  # splits are independent streams


def test_a_sample_does_not_depend_on_its_batch(batch):
    alone = synth.render_batch([5], seed=3, image_size=SIZE, occlusion=0.6)
    shuffled = synth.render_batch([7, 5, 2], seed=3, image_size=SIZE, occlusion=0.6)
    for key in SAMPLE_KEYS:
        assert torch.equal(alone[key][0], batch[key][5]), key
        assert torch.equal(shuffled[key][1], batch[key][5]), key
    dataset = synth.SyntheticHandDataset(8, seed=3, image_size=SIZE, occlusion=0.6, block_size=4)
    items = [dataset[5], dataset.__getitems__([6, 5])[1]]
    for item in items:
        for key in SAMPLE_KEYS:
            assert torch.equal(item[key], batch[key][5]), key


def test_dataloader_batches_equal_render_batch():
    dataset = synth.SyntheticHandDataset(6, seed=1, image_size=32)
    loader = torch.utils.data.DataLoader(dataset, batch_size=3, shuffle=False)
    first = next(iter(loader))
    direct = synth.render_batch([0, 1, 2], seed=1, image_size=32)
    for key in SAMPLE_KEYS:
        assert torch.equal(first[key], direct[key]), key
    assert len(dataset) == 6
    with pytest.raises(IndexError):
        dataset[6]


def test_keypoints_3d_project_onto_keypoints_2d(batch):
    projected = project_points(batch["keypoints_3d"], batch["K"])
    assert (projected - batch["keypoints_2d"]).abs().max() < 1e-3  # pixels
    assert (batch["keypoints_3d"][..., 2] > 0.2).all() and (batch["keypoints_3d"][..., 2] < 0.85).all()
    # K is a pinhole with square pixels; the crop is around the hand, so the wrist is in the image.
    assert torch.allclose(batch["K"][:, 0, 0], batch["K"][:, 1, 1])
    wrist = batch["keypoints_2d"][:, 0]
    assert ((wrist > 0) & (wrist < SIZE)).all()


def test_depth_at_visible_keypoints_is_consistent(batch):
    pixel = _keypoint_pixels(batch["keypoints_2d"], SIZE)
    surface = batch["depth"].flatten(1).gather(1, pixel)  # depth at each keypoint's pixel, 0 off the hand
    z = batch["keypoints_3d"][..., 2]
    visible = batch["visibility"] > 0
    on_hand = visible & (surface > 0)
    # Nothing lies more than the tolerance in front of a visible keypoint ...
    tolerance = torch.tensor(synth.VISIBILITY_TOLERANCE).expand_as(z)
    assert len(synth.VISIBILITY_TOLERANCE) == 21
    assert (surface[on_hand] >= z[on_hand] - tolerance[on_hand]).all()
    # ... and the skin over most visible keypoints is close: joints lie about half a finger
    # (< 1.5 cm) behind it, fingertips on it or just behind the nail.
    gap = (z - surface)[on_hand]
    assert on_hand.sum() > 40
    assert (gap.abs() < 0.02).float().mean() > 0.8
    tips = torch.zeros_like(visible)
    tips[:, list(FINGERTIPS)] = True
    tip_gap = (z - surface)[on_hand & tips]
    assert tip_gap.abs().median() < 0.012  # fingertips are skin vertices at the end of the finger


def test_mask_is_hand_depth_minus_occluders(batch):
    assert torch.equal(batch["mask"] > 0, batch["depth"] > 0)
    hand, occluders = batch["hand_mask"] > 0, batch["occluder_mask"] > 0
    assert torch.equal(batch["mask"] > 0, hand & ~occluders)
    assert (hand & occluders).any()  # with occlusion=0.6 some hand pixels are covered
    # Keypoints whose pixel shows an occluder in front of everything are not visible.
    pixel = _keypoint_pixels(batch["keypoints_2d"], SIZE)
    under_occluder = batch["occluder_mask"].flatten(1).gather(1, pixel) > 0
    assert (batch["visibility"][under_occluder] == 0).all()


def test_occlusion_knob_hides_more_keypoints():
    fractions = []
    for occlusion in (0.0, 1.0):
        samples = synth.render_batch(16, seed=7, image_size=32, occlusion=occlusion, background="black")
        fractions.append(1 - samples["visibility"].mean().item())
    assert fractions[1] > fractions[0] + 0.05, fractions


def test_resolution_knob_and_same_hand_at_every_size():
    small = synth.render_batch([0, 1], seed=2, image_size=16)
    large = synth.render_batch([0, 1], seed=2, image_size=64)
    assert small["image"].shape == (2, 3, 16, 16) and large["mask"].shape == (2, 64, 64)
    # The hand, its pose and its camera do not depend on the image size; the pixels scale by 4.
    assert torch.equal(small["keypoints_3d"], large["keypoints_3d"])
    assert torch.allclose(large["keypoints_2d"], 4 * small["keypoints_2d"], atol=1e-3)


def test_viewpoint_knob_turns_the_palm():
    from handlib.mano.prior import default_prior

    palm_normal = default_prior().palm_normal
    for viewpoint, sign in (("palm_towards", -1), ("palm_away", 1)):
        pose = synth.render_batch(8, seed=0, image_size=16, viewpoint=viewpoint)["pose"][:, :3]
        normal_z = (axis_angle_to_matrix(pose) @ palm_normal)[:, 2]
        assert (sign * normal_z > 0.29).all(), viewpoint


def test_left_hands_are_mirrored():
    right = synth.render_batch([0], seed=5, image_size=32)
    left = synth.render_batch([0], seed=5, image_size=32, hand_side="left")
    assert left["is_right"][0] == 0
    assert torch.equal(left["image"][0], right["image"][0].flip(-1))
    assert torch.allclose(project_points(left["keypoints_3d"], left["K"]), left["keypoints_2d"], atol=1e-3)


@pytest.mark.parametrize("knobs, word", [
    (dict(image_size=8), "image_size"), (dict(occlusion=1.5), "occlusion"), (dict(viewpoint="top"), "viewpoint"),
    (dict(pose_kind="dance"), "pose_kind"), (dict(hand_side="middle"), "hand_side"),
    (dict(distance=(0.7, 0.3)), "distance"), (dict(colour="red"), "unknown"),
])
def test_bad_knobs_raise(knobs, word):
    with pytest.raises(ValueError, match=word):
        synth.render_batch(1, **knobs)


def test_bad_arguments_raise(tmp_path):
    with pytest.raises(ValueError, match="split"):
        synth.render_batch(1, split="holdout")
    with pytest.raises(ValueError, match="seed"):
        synth.render_batch(1, seed=-1)
    with pytest.raises(ValueError, match="indices"):
        synth.render_batch([])
    with pytest.raises(ValueError, match="num_samples"):
        synth.SyntheticHandDataset(0)
    with pytest.raises(ValueError, match="num_samples"):
        synth.cached_test_set(num_samples=-3, cache_dir=tmp_path, progress=False)
    with pytest.raises(ValueError, match="on_corrupt"):
        synth.cached_test_set(num_samples=1, cache_dir=tmp_path, progress=False, on_corrupt="ignore")
    with pytest.raises(ValueError, match="cached_blocks"):
        synth.SyntheticHandDataset(4, cached_blocks=0)
    with pytest.raises(ValueError, match="render_block"):
        synth.cached_test_set(num_samples=1, cache_dir=tmp_path, progress=False, render_block=0)
    with pytest.raises(ValueError, match="workers"):
        synth.cached_test_set(num_samples=1, cache_dir=tmp_path, progress=False, workers=-1)
    with pytest.raises(ValueError, match="distance: expected a pair"):
        synth.make_config(distance=0.5)
    with pytest.raises(ValueError, match="jitter"):
        synth.make_config(jitter="a")


# --------------------------------------------------------------------------------------------------
# The cache

def _cache(tmp_path, workers=0, **kwargs):
    return synth.cached_test_set(num_samples=14, seed=1, image_size=32, cache_dir=tmp_path, progress=False,
                                 chunk_size=8, render_block=8, workers=workers, **kwargs)


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("cache")


def test_cache_writes_and_reloads_identically(cache_dir):
    first = _cache(cache_dir)
    directory = first.directory
    chunks = sorted(directory.glob("chunk_*.npz"))
    assert [c.name for c in chunks] == ["chunk_00000.npz", "chunk_00001.npz"]  # 14 samples -> 2 chunks of 8
    assert not list(directory.glob(".*tmp*"))  # no temporary files left
    assert len(first) == 14
    second = _cache(cache_dir)
    for i in (0, 13):
        for key in SAMPLE_KEYS:
            assert torch.equal(first[i][key], second[i][key]), key
    # The cached sample is the rendered one, up to 8-bit images and float16 depth.
    rendered = synth.render_batch([13], seed=1, split="test", image_size=32)
    sample = first[13]
    assert (sample["image"] - rendered["image"][0]).abs().max() <= 0.5 / 255 + 1e-6
    assert (sample["depth"] - rendered["depth"][0]).abs().max() < 1e-3
    assert torch.equal(sample["keypoints_3d"], rendered["keypoints_3d"][0])
    assert set(sample) == set(SAMPLE_KEYS)


def test_cache_rendered_by_worker_processes_is_the_same(cache_dir, tmp_path):
    serial = _cache(cache_dir)
    parallel = _cache(tmp_path, workers=2)
    assert parallel.directory.name == serial.directory.name
    for key, value in serial.arrays.items():
        assert np.array_equal(parallel.arrays[key], value), key
    assert sorted(p.name for p in parallel.directory.iterdir()) == ["chunk_00000.npz", "chunk_00001.npz"]


def test_cache_batch_read_matches_single_items_and_the_renderer(cache_dir):
    cached = _cache(cache_dir)
    batch = cached.batch([13, 2, -1])
    rendered = synth.render_batch([0], seed=1, split="test", image_size=32)
    for key in SAMPLE_KEYS:
        assert batch[key].dtype == rendered[key].dtype, key
        assert batch[key].shape[1:] == rendered[key].shape[1:], key
        assert torch.equal(batch[key][1], cached[2][key]), key
        assert torch.equal(batch[key][0], batch[key][2]), key              # -1 is the last sample, 13
    items = cached.__getitems__([5, 6])                                     # what a DataLoader asks for
    assert torch.equal(torch.stack([item["image"] for item in items]), cached.batch([5, 6])["image"])
    with pytest.raises(IndexError):
        cached[14]


def test_cache_resumes_after_a_chunk_is_deleted(cache_dir):
    first = _cache(cache_dir)
    chunk = first.directory / "chunk_00001.npz"
    kept = (first.directory / "chunk_00000.npz").stat().st_mtime_ns
    chunk.unlink()
    again = _cache(cache_dir)
    assert chunk.exists()
    assert (first.directory / "chunk_00000.npz").stat().st_mtime_ns == kept  # the first chunk was not redone
    assert np.array_equal(first.arrays["image"], again.arrays["image"])


def test_corrupt_chunk_raises_naming_the_file_or_is_regenerated(cache_dir):
    first = _cache(cache_dir)
    chunk = first.directory / "chunk_00000.npz"
    chunk.write_bytes(chunk.read_bytes()[:1000])  # truncated, as by a full disk
    with pytest.raises(ValueError, match="chunk_00000.npz"):
        _cache(cache_dir)
    again = _cache(cache_dir, on_corrupt="regenerate")
    assert np.array_equal(first.arrays["image"], again.arrays["image"])
    assert not list(first.directory.glob(".*tmp*"))


# --------------------------------------------------------------------------------------------------
# The v2 knobs: forearm, sleeve, skin detail, backgrounds, distractors, lighting, appearance

PLAIN = dict(image_size=SIZE, occlusion=0.0, distractors=0.0, background="black")  # only the hand and its arm


@pytest.fixture(scope="module")
def arms():
    """The same 24 samples with and without a forearm, on black, without occluders."""
    on = synth.render_batch(24, seed=1, forearm=1.0, return_layers=True, **PLAIN)
    off = synth.render_batch(24, seed=1, forearm=0.0, return_layers=True, **PLAIN)
    return on, off


def _beyond_wrist(batch) -> torch.Tensor:
    """Per sample, how far (metres) the hand's pixels reach past the wrist joint along the forearm
    (middle MCP -> wrist), from the depth map unprojected with K."""
    size = batch["depth"].shape[-1]
    rows, columns = torch.meshgrid(torch.arange(size) + 0.5, torch.arange(size) + 0.5, indexing="ij")
    reach = []
    for depth, K, joints in zip(batch["depth"], batch["K"], batch["keypoints_3d"]):
        on = depth > 0
        points = torch.stack([(columns[on] - K[0, 2]) / K[0, 0] * depth[on], (rows[on] - K[1, 2]) / K[1, 1] * depth[on],
                              depth[on]], -1)
        direction = torch.nn.functional.normalize(joints[0] - joints[9], dim=0)
        reach.append(((points - joints[0]) @ direction).max())
    return torch.stack(reach)


def test_forearm_knob_adds_an_arm_that_leaves_the_crop(arms):
    on, off = arms
    forearm = on["forearm_mask"] > 0
    assert forearm.flatten(1).any(1).all()  # every sample has one
    leaves = forearm[:, 0].any(1) | forearm[:, -1].any(1) | forearm[:, :, 0].any(1) | forearm[:, :, -1].any(1)
    assert leaves.float().mean() > 0.9  # 25 cm long: it runs out of the crop
    assert not (forearm & (on["mask"] > 0)).any()  # the mask is the hand alone
    assert off["forearm_mask"].sum() == 0
    # The hand, camera and labels do not depend on the knob; without a forearm no skin lies past the
    # wrist's cap (~9 mm past the wrist joint), and with one the hand's mask still stops there.
    for key in ("keypoints_3d", "keypoints_2d", "K", "pose", "betas"):
        assert torch.equal(on[key], off[key]), key
    assert _beyond_wrist(off).max() < 0.015 and _beyond_wrist(on).max() < 0.015
    lit = off["image"].amax(1) > 0.15  # on black: the lit pixels are the hand's (blur spills a pixel or two)
    near_hand = torch.nn.functional.max_pool2d(off["hand_mask"][:, None], 5, stride=1, padding=2)[:, 0] > 0
    assert (lit & ~near_hand).float().mean() < 1e-3


def test_forearm_hides_keypoints_behind_it(arms):
    on, off = arms
    assert (on["visibility"] <= off["visibility"]).all()  # the forearm only ever hides
    assert (on["visibility"] < off["visibility"]).any()  # and here it does (palm away, arm towards the camera)


def test_forearm_rings_known_values():
    """A circular wrist of radius 2 cm facing +z: straight, tapered, sleeved, and absent."""
    angles = torch.arange(16, dtype=torch.float64) * (2 * torch.pi / 16)
    loop = torch.stack([0.02 * torch.cos(angles), 0.02 * torch.sin(angles), torch.full_like(angles, 0.5)], -1)[None]
    direction, dorsal = torch.tensor([[0.0, 0, 1]], dtype=torch.float64), torch.tensor([[0.0, 1, 0]], dtype=torch.float64)
    one = torch.ones(1, dtype=torch.float64)
    straight = synth.forearm_rings(loop, direction, dorsal, torch.zeros(1, 2, dtype=torch.float64), 0.25 * one,
                                   torch.zeros(1, 2, dtype=torch.float64), 2 * one, one)
    rings = straight[0, :-1].view(-1, 16, 3)
    assert len(rings) == len(synth._FOREARM_RINGS) + len(synth._SLEEVE_RINGS)
    assert torch.allclose(rings[len(synth._FOREARM_RINGS) - 1], loop[0] + torch.tensor([0, 0, 0.25], dtype=torch.float64))
    assert torch.allclose(straight[0, -1], torch.tensor([0, 0, 0.75], dtype=torch.float64))  # the far end's centre
    # Widening: width (x here) by 1 + 0.2 and thickness (y, dorsal) by 1 + 0.5 at 30 cm (FOREARM_LENGTH[1]).
    wide = synth.forearm_rings(loop, direction, dorsal, torch.zeros(1, 2, dtype=torch.float64), 0.3 * one,
                               torch.tensor([[0.2, 0.5]], dtype=torch.float64), 2 * one, one)
    far = wide[0, :-1].view(-1, 16, 3)[len(synth._FOREARM_RINGS) - 1]
    assert torch.allclose(far[:, 0].abs().max(), torch.tensor(0.024, dtype=torch.float64))
    assert torch.allclose(far[:, 1].abs().max(), torch.tensor(0.030, dtype=torch.float64), atol=1e-4)
    # A sleeve from 10 cm, 1.25 times wider: the skin stops there, the cuff is wider.
    sleeved = synth.forearm_rings(loop, direction, dorsal, torch.zeros(1, 2, dtype=torch.float64), 0.25 * one,
                                  torch.zeros(1, 2, dtype=torch.float64), 0.1 * one, 1.25 * one)[0, :-1].view(-1, 16, 3)
    skin, sleeve = sleeved[:len(synth._FOREARM_RINGS)], sleeved[len(synth._FOREARM_RINGS):]
    assert skin[..., 2].max() <= 0.6 + 1e-9 and torch.allclose(sleeve[0], skin[-1])
    radius = (sleeve[1, :, :2] ** 2).sum(-1).sqrt()
    assert torch.allclose(radius, torch.full_like(radius, 0.025)) and torch.allclose(sleeve[-1, :, 2], torch.full_like(radius, 0.75))
    # Length 0: every ring at the opening's centre (a cap).
    capped = synth.forearm_rings(loop, direction, dorsal, torch.ones(1, 2, dtype=torch.float64), 0 * one,
                                 torch.zeros(1, 2, dtype=torch.float64), 2 * one, one)
    assert torch.allclose(capped[0], loop[0].mean(0).expand(len(capped[0]), 3))


def test_sleeve_knob_colours_the_far_arm():
    kw = dict(seed=2, forearm=1.0, return_layers=True, **PLAIN)
    bare, sleeved = synth.render_batch(8, sleeve=0.0, **kw), synth.render_batch(8, sleeve=1.0, **kw)
    forearm = (bare["forearm_mask"] > 0) & (sleeved["forearm_mask"] > 0)
    change = ((bare["image"] - sleeved["image"]).abs().amax(1) > 0.05) & forearm
    assert (change.flatten(1).sum(1) > 0.2 * forearm.flatten(1).sum(1)).sum() >= 3  # cloth on the arm in view
    hand = (bare["mask"] > 0) & (sleeved["mask"] > 0)
    assert (bare["image"] - sleeved["image"]).abs().amax(1)[hand].median() < 1e-6  # the hand is the same


def test_skin_detail_knob_changes_only_the_skin():
    kw = dict(seed=4, lighting="single", return_layers=True, **PLAIN)
    smooth, detailed = synth.render_batch(8, skin_detail=0.0, **kw), synth.render_batch(8, skin_detail=1.0, **kw)
    skin = (smooth["hand_mask"] > 0) | (smooth["forearm_mask"] > 0)
    difference = (smooth["image"] - detailed["image"]).abs().amax(1)
    assert difference[skin].mean() > 0.01 and (difference[~skin] < 0.05).all()  # (blur spreads the border)
    hand = synth._hand()
    rest = hand.rest_vertices
    tips = rest[hand.layer.fingertip_vertex_ids]
    nails = hand.nails > 0.5
    assert 10 <= nails.sum() <= 120
    assert (torch.cdist(rest[nails], tips).amin(1) < 0.016).all()  # every nail vertex is at a fingertip
    assert (torch.cdist(tips, rest[nails]).amin(1) < 0.016).all()  # and every fingertip has a nail
    creases = hand.creases[:len(rest), :2].abs().amin(1) < 0.002  # vertices on a crease line
    assert creases.sum() > 20 and not creases[hand.nails > 0.5].all()


def test_background_knob_families_per_row():
    kw = dict(seed=6, image_size=SIZE, return_layers=True, distractors=0.0)
    layers = {name: synth.render_batch(12, background=name, **kw)["background"] for name in synth.BACKGROUNDS}
    assert layers["black"].abs().max() == 0
    same = [[torch.equal(layers["mixed"][i], layers[name][i]) for name in ("clutter", "procedural")] for i in range(12)]
    assert all(sum(row) == 1 for row in same)  # each sample is drawn from one family, the same picture
    assert sum(row[0] for row in same) >= 6  # mostly clutter (MIXED_CLUTTER)

    def edges(images):  # fraction of pixels on a strong edge
        gray = images.mean(1)
        return ((gray[:, 1:, 1:] - gray[:, :-1, 1:]).abs() + (gray[:, 1:, 1:] - gray[:, 1:, :-1]).abs() > 0.15).float().mean()

    assert edges(layers["clutter"]) > 1.5 * edges(layers["procedural"])  # clutter: many sharp edges


def test_distractors_knob():
    kw = dict(seed=8, image_size=SIZE, occlusion=0.0, return_layers=True)
    none, some = synth.render_batch(16, distractors=0.0, **kw), synth.render_batch(16, distractors=1.0, **kw)
    assert none["distractor_mask"].sum() == 0
    second_hands = (some["distractor_mask"] > 0).flatten(1).any(1)
    assert 3 <= second_hands.sum() <= 15  # 60% are second hands, the rest faces and arms
    painted = (some["background"] - none["background"]).abs().flatten(1).amax(1) > 0.1
    assert (second_hands | painted).all()  # every sample has a distractor
    # The second hand stands behind the hand: it never covers the hand (its arm may, rarely).
    hand_before, hand_after = none["mask"] > 0, some["mask"] > 0
    assert not (hand_after & ~hand_before).any()
    assert (hand_before & ~hand_after).float().sum() <= 0.05 * hand_before.float().sum()
    for key in ("keypoints_3d", "K", "pose"):
        assert torch.equal(none[key], some[key]), key


def test_two_hands_knob_puts_the_other_hand_over_the_hand():
    kw = dict(seed=8, image_size=SIZE, occlusion=0.0, return_layers=True)
    one, two = synth.render_batch(16, **kw), synth.render_batch(16, two_hands=1.0, **kw)
    for key in ("keypoints_3d", "keypoints_2d", "K", "pose"):
        assert torch.equal(one[key], two[key]), key  # the same labelled hands and cameras
    other = two["distractor_mask"] > 0
    assert other.flatten(1).any(1).all()  # the other hand is in every picture
    centre = other[:, SIZE // 4: 3 * SIZE // 4, SIZE // 4: 3 * SIZE // 4].flatten(1).float().mean(1)
    assert (centre > 0.05).float().mean() >= 0.75  # over the middle of the crop, not at its edge
    # It is nearer than the hand in places: it covers hand pixels and hides keypoints.
    assert ((one["mask"] > 0) & (two["mask"] == 0)).flatten(1).any(1).float().mean() >= 0.5
    assert two["visibility"].mean() < one["visibility"].mean() - 0.05
    # At 0 the knob renders as before it existed, and the caches' fingerprints do not change.
    assert "two_hands" not in synth.make_config().to_json()
    assert torch.equal(one["image"], synth.render_batch(16, two_hands=0.0, **kw)["image"])


def test_held_out_appearance_keeps_hands_and_cameras_but_not_looks():
    kw = dict(seed=9, split="test", image_size=SIZE)
    train, held = synth.render_batch(8, appearance="train", return_layers=True, **kw), \
        synth.render_batch(8, appearance="held_out", return_layers=True, **kw)
    for key in ("keypoints_3d", "keypoints_2d", "visibility", "K", "pose", "betas", "mask"):
        assert torch.equal(train[key], held[key]), key
    assert (train["image"] - held["image"]).abs().mean() > 0.05
    # Light colours: training key lights are at most 25% saturated and warm; held-out ones 25 to 40%, tinted.
    table = synth._Draws(torch.rand(256, synth._UNIFORMS_PER_SAMPLE, generator=torch.Generator().manual_seed(0)))
    for appearance, (low, high) in (("train", (0.0, 0.25)), ("held_out", (0.25, 0.4))):
        colors = synth._lights(table.seek("lights"), "multi", appearance)[1][:, 0]  # (B, 3) key colours
        saturation = 1 - colors.amin(-1) / colors.amax(-1)
        assert (saturation >= low - 1e-5).all() and (saturation <= high + 1e-5).all(), appearance
    # Backgrounds: an outdoor family that "train" never draws, whatever its background knob.
    for name in ("mixed", "clutter", "procedural"):
        assert not torch.equal(synth.render_batch([0], background=name, return_layers=True, **kw)["background"],
                               synth.render_batch([0], background=name, appearance="held_out", return_layers=True,
                                                  **kw)["background"])


def test_every_new_knob_keeps_rows_independent_of_the_batch():
    knobs = dict(image_size=32, forearm=1.0, sleeve=0.7, distractors=1.0, skin_detail=1.0, occlusion=0.5)
    for appearance in ("train", "held_out"):
        batch = synth.render_batch(6, seed=11, appearance=appearance, **knobs)
        for index in (1, 4):
            alone = synth.render_batch([index], seed=11, appearance=appearance, **knobs)
            mixed = synth.render_batch([5, index, 0], seed=11, appearance=appearance, **knobs)
            for key in SAMPLE_KEYS:
                assert torch.equal(alone[key][0], batch[key][index]), (appearance, key)
                assert torch.equal(mixed[key][1], batch[key][index]), (appearance, key)


def test_v1_look_by_knobs():
    v1 = dict(forearm=0.0, skin_detail=0.0, distractors=0.0, background="procedural", lighting="single")
    batch = synth.render_batch(4, seed=0, image_size=32, return_layers=True, **v1)
    assert batch["forearm_mask"].sum() == 0 and batch["distractor_mask"].sum() == 0
    assert synth.make_config(**v1).to_json() != synth.make_config().to_json()  # another cache fingerprint


@pytest.mark.parametrize("knobs, word", [
    (dict(forearm=1.5), "forearm"), (dict(sleeve=-0.1), "sleeve"), (dict(skin_detail="yes"), "skin_detail"),
    (dict(distractors=2), "distractors"), (dict(background="forest"), "background"), (dict(lighting="dark"), "lighting"),
    (dict(appearance="test"), "appearance"),
])
def test_bad_v2_knobs_raise(knobs, word):
    with pytest.raises(ValueError, match=word):
        synth.make_config(**knobs)
