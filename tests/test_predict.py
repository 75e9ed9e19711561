"""Tests of predicting your own images: reading photos (handlib.images), square crops and mirroring,
placing the hand in the camera (geometry.solve_translation), predict_images / predict_files and the
``python -m handlib predict`` command.

No trained checkpoint is needed: a tiny fake ``Method`` answers what the test tells it (or finds the
brightest spot of its input), so every number that comes back can be checked by hand.
"""
from __future__ import annotations

import io
import json
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageFile
from torch import nn

import handlib.predict
from handlib.__main__ import main
from handlib.data.samples import SAMPLES_DIR
from handlib.geometry import project_points, solve_translation
from handlib.images import (
    ImageError,
    mirror_image,
    mirror_keypoints_2d,
    mirror_points_3d,
    read_image,
    square_crop_resize,
)
from handlib.methods import Method, Prediction
from handlib.predict import check_intrinsics, course_scale_bone_length, predict_files, predict_images
from handlib.render.camera import make_intrinsics
from handlib.skeleton import NUM_KEYPOINTS, SCALE_BONE

# --------------------------------------------------------------------------------------------
# A fake method
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class FakeConfig:
    image_size: int = 32
    test_samples: int = 1


class FakeModel(nn.Module):
    """Answers what the test sets (``answer_2d`` (B, 21, 2) crop pixels, ``answer_3d`` (B, 21, 3) in
    ``frame``, ``vertices``), or, with no ``answer_2d``, puts the wrist on the brightest spot of its
    input (the centroid of the pixels brighter than 0.5) and the fingers 1 px apart to its right."""

    def __init__(self, config=None):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(()))       # so the model has a device
        self.answer_2d = self.answer_3d = self.vertices = None
        self.frame = "root_relative"
        self.batches = []


def bright_spot(images: torch.Tensor) -> torch.Tensor:
    """(B, 3, S, S) -> (B, 2): centroid (u, v) of the pixels brighter than 0.5, pixel centres at j + 0.5."""
    weight = (images.mean(1) - 0.5).clamp_min(0)                                     # (B, S, S)
    size = images.shape[-1]
    centres = torch.arange(size, dtype=images.dtype) + 0.5
    total = weight.sum((1, 2))
    return torch.stack([(weight * centres).sum((1, 2)) / total, (weight * centres[:, None]).sum((1, 2)) / total], -1)


def fake_predict(model: FakeModel, batch: dict, config) -> Prediction:
    assert not model.training and not torch.is_grad_enabled()
    model.batches.append(batch)
    count = batch["image"].shape[0]
    if model.answer_2d is not None:
        keypoints_2d = model.answer_2d
    else:
        offsets = torch.stack([torch.arange(NUM_KEYPOINTS, dtype=torch.float32), torch.zeros(NUM_KEYPOINTS)], -1)
        keypoints_2d = bright_spot(batch["image"])[:, None] + offsets                  # (B, 21, 2)
    keypoints_3d = model.answer_3d if model.answer_3d is not None else torch.zeros(count, NUM_KEYPOINTS, 3)
    return Prediction(keypoints_2d=keypoints_2d, keypoints_3d=keypoints_3d, frame=model.frame, vertices=model.vertices)


def make_method(image_size: int = 32) -> tuple[Method, FakeModel, FakeConfig]:
    config = FakeConfig(image_size=image_size)
    method = Method(name="fake", description="answers what it is told", configs={"quick": config, "full": config},
                    build_model=FakeModel, stages=lambda config: [], predict=fake_predict,
                    test_data=lambda config, count: [])
    return method, FakeModel(config), config


def fake_loader(method, model, config, calls=None):
    def load(name, profile=None, checkpoint=None, device=None):
        if calls is not None:
            calls.append(dict(name=name, profile=profile, checkpoint=checkpoint, device=device))
        if name.split(":")[0] != "fake":
            raise ValueError(f"method: unknown method {name!r}; expected one of ['fake']")
        return method, model, config
    return load


def random_hand(seed: int, count: int = 1) -> torch.Tensor:
    """(count, 21, 3) root-relative points of hand size (metres), wrist at the origin."""
    generator = torch.Generator().manual_seed(seed)
    hand = 0.04 * torch.randn(count, NUM_KEYPOINTS, 3, generator=generator, dtype=torch.float64)
    return hand - hand[:, :1]


# --------------------------------------------------------------------------------------------
# Reading images
# --------------------------------------------------------------------------------------------


def save(array_or_image, path, **options) -> Path:
    image = array_or_image if isinstance(array_or_image, Image.Image) else Image.fromarray(array_or_image)
    image.save(path, **options)
    return Path(path)


def rgb_array(height=6, width=8, seed=0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


def test_read_rgb_png_exactly(tmp_path):
    array = rgb_array()
    image = read_image(save(array, tmp_path / "rgb.png"))
    assert image.dtype == torch.float32 and image.shape == (3, 6, 8)
    assert torch.equal(image, torch.from_numpy(array).permute(2, 0, 1).float() / 255)


def test_read_jpeg(tmp_path):
    array = np.full((16, 24, 3), (200, 40, 90), dtype=np.uint8)
    image = read_image(save(array, tmp_path / "photo.jpg", quality=95))
    assert image.shape == (3, 16, 24)
    assert torch.allclose(image[:, 8, 12], torch.tensor([200, 40, 90]) / 255, atol=4 / 255)


def test_read_grayscale_repeats_the_channel(tmp_path):
    array = np.arange(48, dtype=np.uint8).reshape(6, 8) * 5
    image = read_image(save(array, tmp_path / "gray.png"))
    assert image.shape == (3, 6, 8)
    for channel in image:
        assert torch.equal(channel, torch.from_numpy(array).float() / 255)


def test_read_rgba_is_composited_on_white(tmp_path):
    array = np.zeros((2, 3, 4), dtype=np.uint8)
    array[..., :3] = (255, 0, 0)
    array[..., 3] = [[0, 255, 51], [0, 255, 51]]         # transparent, opaque, 20 % red
    image = read_image(save(array, tmp_path / "rgba.png"))
    assert torch.allclose(image[:, 0, 0], torch.ones(3))                       # white where transparent
    assert torch.allclose(image[:, 0, 1], torch.tensor([1.0, 0.0, 0.0]))       # the colour where opaque
    assert torch.allclose(image[:, 0, 2], torch.tensor([1.0, 0.8, 0.8]))       # 0.2 red + 0.8 white


def test_read_16_bit_png_scales_to_one(tmp_path):
    values = np.array([[0, 257, 1000, 32768, 65535]], dtype=np.uint16)
    path = save(Image.fromarray(values), tmp_path / "deep.png")
    assert Image.open(path).mode.startswith("I")
    image = read_image(path)
    assert image.shape == (3, 1, 5)
    # 1000 / 65535 is below one 8-bit step: Pillow's convert("RGB") would have clipped it to 1.0.
    assert torch.allclose(image[0, 0], torch.from_numpy(values[0] / 65535.0).float(), atol=1e-7)
    assert torch.equal(image[0], image[2])


def test_read_palette_and_transparent_palette(tmp_path):
    array = rgb_array(seed=3)
    palette = Image.fromarray(array).quantize(colors=8)
    image = read_image(save(palette, tmp_path / "palette.png"))
    assert torch.equal(image, torch.from_numpy(np.array(palette.convert("RGB"))).permute(2, 0, 1).float() / 255)
    save(palette, tmp_path / "clear.png", transparency=int(np.asarray(palette)[0, 0]))
    clear = read_image(tmp_path / "clear.png")
    assert torch.allclose(clear[:, 0, 0], torch.ones(3))                       # the transparent index is white


def test_read_cmyk_jpeg(tmp_path):
    cmyk = Image.new("CMYK", (8, 8), (0, 0, 0, 0))                             # no ink: white
    image = read_image(save(cmyk, tmp_path / "cmyk.jpg", quality=95))
    assert image.shape == (3, 8, 8) and torch.allclose(image, torch.ones(3, 8, 8), atol=3 / 255)


def test_read_applies_exif_orientation(tmp_path):
    array = np.zeros((10, 20, 3), dtype=np.uint8)
    array[:, :5] = 255                                                          # white on the left
    exif = Image.Exif()
    exif[0x0112] = 6                                                            # "rotate 90 degrees clockwise to view"
    image = read_image(save(array, tmp_path / "phone.jpg", exif=exif, quality=95))
    assert image.shape == (3, 20, 10)                                          # stands upright
    assert image[:, :5].mean() > 0.9 and image[:, -5:].mean() < 0.1            # the left edge is now on top


def test_read_missing_file_names_it(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere.jpg"):
        read_image(tmp_path / "nowhere.jpg")


def test_read_bad_files_name_the_file_and_the_problem(tmp_path):
    text = tmp_path / "notes.jpg"
    text.write_text("this is not a photo\n")
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    cases = {text: "not an image", empty: "empty"}
    for suffix, fmt in [(".jpg", "JPEG"), (".png", "PNG")]:
        buffer = io.BytesIO()
        Image.fromarray(rgb_array(64, 64)).save(buffer, fmt)
        truncated = tmp_path / f"cut{suffix}"
        truncated.write_bytes(buffer.getvalue()[: len(buffer.getvalue()) // 2])
        cases[truncated] = "truncated"
    for path, problem in cases.items():
        with pytest.raises(ImageError, match=problem) as error:
            read_image(path)
        assert str(path) in str(error.value) and isinstance(error.value, ValueError)


def test_read_zero_size_png_is_an_error(tmp_path):
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    path = tmp_path / "nothing.png"
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 0, 5, 8, 2, 0, 0, 0))
                     + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b""))
    with pytest.raises(ImageError, match="nothing.png"):
        read_image(path)


def test_truncated_files_fail_even_if_pillow_was_told_to_allow_them(tmp_path, monkeypatch):
    buffer = io.BytesIO()
    Image.fromarray(rgb_array(64, 64)).save(buffer, "JPEG")
    path = tmp_path / "cut.jpg"
    path.write_bytes(buffer.getvalue()[: len(buffer.getvalue()) // 2])
    monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", True)
    with pytest.raises(ImageError, match="truncated"):
        read_image(path)
    assert ImageFile.LOAD_TRUNCATED_IMAGES is True                             # put back as it was


# --------------------------------------------------------------------------------------------
# Square crops and mirroring
# --------------------------------------------------------------------------------------------


def test_square_crop_of_a_wide_and_a_tall_image():
    wide, transform = square_crop_resize(torch.rand(3, 30, 61), 32)
    assert wide.shape == (3, 32, 32)
    # L = 61, padding 31 rows: 15 on top, 16 below; scale 61 / 32 original pixels per crop pixel.
    assert (transform.scale, transform.x0, transform.y0) == (61 / 32, 0.0, -15.0)
    tall, transform = square_crop_resize(torch.rand(3, 64, 16), 32)
    assert (transform.scale, transform.x0, transform.y0) == (2.0, -24.0, 0.0)
    points = torch.rand(5, 21, 2) * 32
    assert torch.allclose(transform.to_crop(transform.to_original(points)), points, atol=1e-5)
    # The crop's edges are the square's edges: (0, 0) -> (-24, 0), (32, 32) -> (40, 64).
    corners = transform.to_original(torch.tensor([[0.0, 0.0], [32.0, 32.0]]))
    assert torch.equal(corners, torch.tensor([[-24.0, 0.0], [40.0, 64.0]]))


def test_square_crop_pads_with_the_mean_colour_and_keeps_a_square_image():
    image = torch.zeros(3, 10, 30)
    image[0] = 0.9
    crop, _ = square_crop_resize(image, 30)
    assert torch.allclose(crop[:, :10], image.mean((1, 2))[:, None, None].expand(3, 10, 30))   # padding on top
    assert torch.allclose(crop[:, 10:20], image, atol=1e-6)                                       # the image, as it was
    square = torch.rand(3, 32, 32)
    assert torch.allclose(square_crop_resize(square, 32)[0], square, atol=1e-6)


def test_square_crop_maps_a_bright_pixel_to_its_place():
    image = torch.zeros(3, 20, 30)
    image[:, 11:13, 4:8] = 1.0                     # centre (6, 12) in pixels
    crop, transform = square_crop_resize(image, 60)
    spot = bright_spot(crop[None])
    assert torch.allclose(transform.to_original(spot), torch.tensor([[6.0, 12.0]]), atol=1e-4)


def test_mirroring_pixels_and_points():
    image = torch.zeros(1, 4, 10)
    image[0, 2, 3] = 1.0                             # column 3: centre u = 3.5
    flipped = mirror_image(image)
    assert flipped[0, 2, 6] == 1.0                   # column W - 1 - 3 = 6: centre 6.5 = 10 - 3.5
    assert torch.equal(mirror_keypoints_2d(torch.tensor([[3.5, 2.5]]), 10), torch.tensor([[6.5, 2.5]]))
    points = torch.randn(21, 3)
    assert torch.equal(mirror_points_3d(points)[:, 0], -points[:, 0])
    assert torch.equal(mirror_points_3d(mirror_points_3d(points)), points)
    # Projection commutes with mirroring when cx -> W - cx: u' = W - u.
    K = make_intrinsics(500.0, 3.0, 2.0)
    mirrored_K = K.clone()
    mirrored_K[0, 2] = 10 - K[0, 2]
    cloud = points + torch.tensor([0.0, 0.0, 5.0])
    assert torch.allclose(project_points(mirror_points_3d(cloud), mirrored_K),
                          mirror_keypoints_2d(project_points(cloud, K), 10), atol=1e-4)


# --------------------------------------------------------------------------------------------
# The hand in the camera frame
# --------------------------------------------------------------------------------------------


def test_solve_translation_recovers_a_known_translation():
    hands = random_hand(0, count=3)                                           # (3, 21, 3)
    T = torch.tensor([[0.05, -0.02, 0.4], [-0.1, 0.03, 0.8], [0.0, 0.0, 0.25]], dtype=torch.float64)
    K = make_intrinsics(torch.tensor([500.0, 800.0, 300.0]), torch.tensor([64.0, 320.0, 100.0]),
                        torch.tensor([64.0, 240.0, 90.0]), focal_y=torch.tensor([510.0, 790.0, 300.0]),
                        dtype=torch.float64)
    pixels = project_points(hands + T[:, None], K)
    assert torch.allclose(solve_translation(hands, pixels, K), T, atol=1e-5)
    with pytest.raises(ValueError, match="points, pixels"):
        solve_translation(hands, pixels[:, :20], K)


def test_course_scale_bone_length_is_the_rest_hand_bone():
    from handlib.mano import ManoLayer

    joints = ManoLayer()().joints[0]
    parent, child = SCALE_BONE
    assert course_scale_bone_length() == pytest.approx(float((joints[child] - joints[parent]).norm()), rel=1e-6)
    assert 0.03 < course_scale_bone_length() < 0.06


def test_check_intrinsics():
    assert check_intrinsics(["500", 510, -3, 40.5]) == (500.0, 510.0, -3.0, 40.5)
    for bad, problem in [((500, 500, 1), "4 numbers"), (("a", 1, 2, 3), "4 numbers"), ((0, 500, 1, 1), "positive"),
                         ((500, -1, 1, 1), "positive"), ((500, 500, float("nan"), 1), "finite")]:
        with pytest.raises(ValueError, match=f"intrinsics: .*{problem}"):
            check_intrinsics(bad)


# --------------------------------------------------------------------------------------------
# predict_images
# --------------------------------------------------------------------------------------------


def expected_original(points: torch.Tensor, height: int, width: int, size: int, is_right: bool) -> torch.Tensor:
    """Crop pixels -> original pixels, by hand: scale L / S, the square's corner at minus the padding."""
    side = max(height, width)
    corner = torch.tensor([-((side - width) // 2), -((side - height) // 2)], dtype=torch.float32)
    original = points * side / size + corner
    if not is_right:
        original[:, 0] = width - original[:, 0]
    return original


def test_predict_images_maps_keypoints_back_to_each_image():
    method, model, config = make_method(32)
    images = [torch.rand(3, 40, 100), torch.rand(3, 90, 30), torch.rand(3, 50, 50)]
    is_right = [True, False, True]
    pattern = torch.rand(3, NUM_KEYPOINTS, 2) * 32
    model.answer_2d = pattern
    model.train()
    hands = predict_images(method, model, config, images, is_right)
    assert model.training                                                      # the flag is put back
    batch = model.batches[-1]
    assert batch["image"].shape == (3, 3, 32, 32) and torch.equal(batch["is_right"], torch.ones(3))
    assert torch.equal(batch["image"][1], square_crop_resize(images[1].flip(-1), 32)[0])  # the left hand, mirrored
    for hand, image, right, answer in zip(hands, images, is_right, pattern):
        height, width = image.shape[1:]
        assert torch.allclose(hand["keypoints_2d"], expected_original(answer, height, width, 32, right), atol=1e-4)
        assert hand["frame"] == "root_relative" and hand["keypoints_3d"].shape == (21, 3) and "vertices" not in hand


def test_left_and_right_find_the_same_spot():
    """The same picture said to be a left hand: the model sees it mirrored, the answer comes back in place."""
    method, model, config = make_method(60)
    image = torch.zeros(3, 20, 30)
    image[:, 11:13, 4:8] = 1.0                                                 # the spot, centre (6, 12)
    right, left = predict_images(method, model, config, [image, image], [True, False])
    assert torch.allclose(right["keypoints_2d"][0], torch.tensor([6.0, 12.0]), atol=1e-4)
    assert torch.allclose(left["keypoints_2d"][0], torch.tensor([6.0, 12.0]), atol=1e-4)
    # The fake's fingers step right in its (right-hand) input: right in the image for a right hand,
    # left for a left hand.
    assert right["keypoints_2d"][1, 0] > right["keypoints_2d"][0, 0] > left["keypoints_2d"][1, 0]


def test_predict_images_makes_3d_metric_and_root_relative():
    method, model, config = make_method(32)
    normalized = random_hand(1, count=2).float() / 0.04                      # about one bone long
    vertices = torch.randn(2, 50, 3)
    model.answer_2d, model.answer_3d, model.vertices = torch.rand(2, 21, 2) * 32, normalized, vertices
    model.frame = "normalized"
    right, left = predict_images(method, model, config, [torch.rand(3, 32, 32)] * 2, [True, False])
    bone = course_scale_bone_length()
    assert torch.allclose(right["keypoints_3d"], normalized[0] * bone, atol=1e-7)
    assert torch.allclose(left["keypoints_3d"], mirror_points_3d(normalized[1] * bone), atol=1e-7)
    assert torch.allclose(left["vertices"], mirror_points_3d(vertices[1] * bone), atol=1e-7)
    # A camera-frame answer (in the method's own camera) loses its wrist position.
    camera = normalized * 0.01 + torch.tensor([0.1, 0.0, 0.6])
    model.answer_3d, model.vertices, model.frame = camera, None, "camera"
    hand = predict_images(method, model, config, [torch.rand(3, 32, 32)] * 2, [True, True])[0]
    assert hand["frame"] == "root_relative"
    assert torch.allclose(hand["keypoints_3d"], camera[0] - camera[0, 0], atol=1e-7)


@pytest.mark.parametrize("is_right", [True, False])
def test_predict_images_places_the_hand_in_the_camera(is_right):
    """A hand at a known T seen by a known K: predict_images gives it back in the camera frame."""
    method, model, config = make_method(32)
    height, width = 120, 160
    hand = random_hand(2)[0]                                                  # (21, 3), as the scene holds it
    T = torch.tensor([0.03, -0.02, 0.5], dtype=torch.float64)
    fx, fy, cx, cy = 600.0, 610.0, width / 2 + 3, height / 2 - 2
    K = make_intrinsics(fx, cx, cy, focal_y=fy, dtype=torch.float64)
    pixels = project_points(hand + T, K)                                      # (21, 2) in the photo
    image = torch.rand(3, height, width)
    # What a perfect model answers: for a left hand it sees the mirror image, a right hand.
    seen_pixels = pixels if is_right else mirror_keypoints_2d(pixels, width)
    seen_hand = hand if is_right else mirror_points_3d(hand)
    _, transform = square_crop_resize(image, 32)
    model.answer_2d = transform.to_crop(seen_pixels).float()[None]
    model.answer_3d = seen_hand.float()[None]
    (result,) = predict_images(method, model, config, [image], [is_right], intrinsics=(fx, fy, cx, cy))
    assert result["frame"] == "camera"
    assert torch.allclose(result["keypoints_2d"].double(), pixels, atol=1e-4)
    assert torch.allclose(result["keypoints_3d"].double(), hand + T, atol=1e-5)


def test_predict_images_checks_its_inputs():
    method, model, config = make_method(32)
    with pytest.raises(ValueError, match=r"images\[1\]"):
        predict_images(method, model, config, [torch.rand(3, 8, 8), torch.rand(8, 8)], [True, True])
    with pytest.raises(ValueError, match="is_right"):
        predict_images(method, model, config, [torch.rand(3, 8, 8)], [True, False])
    with pytest.raises(ValueError, match=r"intrinsics\[1\]"):
        predict_images(method, model, config, [torch.rand(3, 8, 8)] * 2, [True] * 2, intrinsics=[None, (0, 1, 2, 3)])


# --------------------------------------------------------------------------------------------
# predict_files and the command line
# --------------------------------------------------------------------------------------------


def spot_image(path, height, width, centre) -> Path:
    """A dark photo with a white 4 x 4 spot whose centre is ``centre`` (u, v), integer pixels."""
    array = np.full((height, width, 3), 20, dtype=np.uint8)
    u, v = centre
    array[v - 2:v + 2, u - 2:u + 2] = 255
    return save(array, path)


@pytest.fixture
def fake(monkeypatch):
    """The fake method, installed as what ``handlib.predict.load_model`` loads."""
    method, model, config = make_method(64)
    calls = []
    monkeypatch.setattr(handlib.predict, "load_model", fake_loader(method, model, config, calls))
    return method, model, config, calls


def test_cli_predicts_the_good_images_and_reports_the_bad_one(tmp_path, fake, capsys):
    good_a = spot_image(tmp_path / "a.png", 40, 60, (20, 30))
    bad = tmp_path / "broken.jpg"
    bad.write_text("not a photo")
    good_b = spot_image(tmp_path / "b.png", 50, 30, (10, 16))
    out, overlays = tmp_path / "out" / "pred.json", tmp_path / "overlays"
    code = main(["predict", "fake", str(good_a), str(bad), str(good_b), "--hand", "left", "--out", str(out),
                 "--overlay", str(overlays), "--checkpoint", "some.pt", "--device", "cpu"])
    assert code == 1
    stderr = capsys.readouterr().err
    assert f"error: {bad}: not an image" in stderr
    assert fake[3][-1] == dict(name="fake", profile="full", checkpoint=Path("some.pt"), device="cpu")
    entries = json.loads(out.read_text())
    assert [entry["image"] for entry in entries] == [str(good_a), str(bad), str(good_b)]
    assert set(entries[1]) == {"image", "error"} and str(bad) in entries[1]["error"]
    for entry, centre in [(entries[0], (20, 30)), (entries[2], (10, 16))]:
        keypoints = np.array(entry["keypoints_2d"])
        assert keypoints.shape == (21, 2) and np.allclose(keypoints[0], centre, atol=0.6)  # the spot
        assert np.array(entry["keypoints_3d"]).shape == (21, 3) and entry["frame"] == "root_relative"
    assert sorted(p.name for p in overlays.iterdir()) == ["a_overlay.png", "b_overlay.png"]
    assert Image.open(overlays / "a_overlay.png").size[0] in (59, 60, 61)


def test_cli_with_intrinsics_gives_the_camera_frame(tmp_path, fake):
    image = spot_image(tmp_path / "a.png", 40, 40, (20, 20))
    out = tmp_path / "pred.json"
    assert main(["predict", "fake", str(image), "--hand", "right", "--intrinsics", "500", "500", "20", "20",
                 "--out", str(out)]) == 0
    (entry,) = json.loads(out.read_text())
    assert entry["frame"] == "camera" and "error" not in entry


@pytest.mark.parametrize("arguments, message", [
    (["--intrinsics", "0", "500", "20", "20"], "intrinsics: the focal lengths"),
    (["--intrinsics", "500", "500", "nan", "20"], "intrinsics: expected finite"),
])
def test_cli_malformed_intrinsics_exit_2(tmp_path, fake, capsys, arguments, message):
    image = spot_image(tmp_path / "a.png", 40, 40, (20, 20))
    code = main(["predict", "fake", str(image), "--hand", "right", "--out", str(tmp_path / "p.json"), *arguments])
    assert code == 2 and f"error: {message}" in capsys.readouterr().err
    assert not (tmp_path / "p.json").exists()


@pytest.mark.parametrize("arguments", [
    ["--intrinsics", "500", "500", "20", "--out", "p.json"],                   # three numbers
    ["--intrinsics", "500", "five", "20", "20", "--out", "p.json"],            # not a number
    ["--intrinsics", "500", "500", "20", "20"],                                # no --out
])
def test_cli_usage_errors_exit_2(tmp_path, fake, capsys, arguments):
    image = spot_image(tmp_path / "a.png", 40, 40, (20, 20))
    with pytest.raises(SystemExit) as exit_:
        main(["predict", "fake", str(image), "--hand", "right", *arguments])
    assert exit_.value.code == 2 and "error:" in capsys.readouterr().err


def test_cli_unknown_method_exits_2(tmp_path, fake, capsys):
    image = spot_image(tmp_path / "a.png", 40, 40, (20, 20))
    assert main(["predict", "nope", str(image), "--hand", "right", "--out", str(tmp_path / "p.json")]) == 2
    assert "error: method: unknown method 'nope'" in capsys.readouterr().err


def test_predict_files_takes_a_loader_and_hands_per_image(tmp_path):
    method, model, config = make_method(64)
    paths = [spot_image(tmp_path / "r.png", 30, 50, (12, 14)), spot_image(tmp_path / "l.png", 30, 50, (12, 14))]
    results, errors = predict_files("fake", paths, hand=["right", "left"], loader=fake_loader(method, model, config))
    assert errors == [] and len(results) == 2
    for entry in results:
        assert np.allclose(entry["keypoints_2d"][0], (12, 14), atol=0.6)
    with pytest.raises(ValueError, match="hand"):
        predict_files("fake", paths, hand="both", loader=fake_loader(method, model, config))


SAMPLES = SAMPLES_DIR


def test_real_samples_end_to_end(tmp_path):
    method, model, config = make_method(64)
    paths = [SAMPLES / "freihand" / "00000355.jpg", SAMPLES / "panoptic" / "005880453_01_l.jpg"]
    out, overlays = tmp_path / "pred.json", tmp_path / "overlays"
    results, errors = predict_files("fake", paths, hand=["right", "left"], out=out, overlay_dir=overlays,
                                    loader=fake_loader(method, model, config))
    assert errors == [] and json.loads(out.read_text()) == results
    for path, entry in zip(paths, results):
        width, height = Image.open(path).size
        keypoints = np.array(entry["keypoints_2d"])
        assert keypoints.shape == (21, 2) and np.isfinite(keypoints).all()
        assert 0 <= keypoints[0, 0] <= width and 0 <= keypoints[0, 1] <= height   # the wrist is on the photo
        assert (overlays / f"{path.stem}_overlay.png").is_file()
    left_crop = square_crop_resize(read_image(paths[1]).flip(-1), 64)[0]
    assert torch.equal(model.batches[-1]["image"][1], left_crop)               # the model saw the mirrored left hand


def test_the_shipped_method_predicts_real_photos_from_the_command_line(tmp_path, capsys):
    """The real thing: the shipped Zimmermann & Brox checkpoint on three real photos (a left hand among
    them) and one broken file, through ``python -m handlib predict``."""
    photos = [SAMPLES / "freihand" / "00000355.jpg", SAMPLES / "panoptic" / "005880453_01_l.jpg",
              SAMPLES / "interhand2.6m" / "image2017.jpg"]
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(photos[0].read_bytes()[:2000])
    out = tmp_path / "pred.json"
    code = main(["predict", "zimmermann2017", str(photos[0]), str(broken), "--hand", "right", "--out", str(out),
                 "--intrinsics", "500", "500", "112", "112", "--device", "cpu"])
    assert code == 1 and "broken.jpg" in capsys.readouterr().err
    good, bad = json.loads(out.read_text())
    assert "error" in bad and bad["image"] == str(broken)
    assert good["frame"] == "camera" and np.array(good["keypoints_3d"])[:, 2].min() > 0   # in front of the camera
    out_left = tmp_path / "left.json"
    assert main(["predict", "zimmermann2017:direct", str(photos[1]), "--hand", "left", "--out", str(out_left),
                 "--overlay", str(tmp_path / "overlays"), "--device", "cpu"]) == 0
    (entry,) = json.loads(out_left.read_text())
    width, height = Image.open(photos[1]).size
    keypoints_2d, keypoints_3d = np.array(entry["keypoints_2d"]), np.array(entry["keypoints_3d"])
    assert keypoints_2d.shape == (21, 2) and keypoints_3d.shape == (21, 3) and entry["frame"] == "root_relative"
    assert ((keypoints_2d >= 0) & (keypoints_2d <= (width, height))).all()
    assert np.allclose(keypoints_3d[0], 0.0) and 0.02 < np.linalg.norm(keypoints_3d, axis=1).max() < 0.4   # metres
    assert (tmp_path / "overlays" / f"{photos[1].stem}_overlay.png").is_file()


def test_several_shipped_methods_side_by_side_on_a_box_of_a_photo(tmp_path, capsys):
    """``python -m handlib predict A,B PHOTO --box ...``: the notebook's "your own photo" from the shell."""
    photo = SAMPLES / "panoptic" / "005880453_01_r.jpg"
    out, pictures = tmp_path / "answers.json", tmp_path / "pictures"
    assert main(["predict", "zimmermann2017,zimmermann2017:direct", str(photo), "--hand", "right", "--box", "713",
                 "294", "829", "410", "--out", str(out), "--overlay", str(pictures), "--device", "cpu"]) == 0
    entries = json.loads(out.read_text())
    assert [entry["method"] for entry in entries] == ["zimmermann2017", "zimmermann2017:direct"]
    for entry in entries:
        keypoints_2d = np.array(entry["keypoints_2d"])
        assert ((keypoints_2d >= (713 - 60, 294 - 60)) & (keypoints_2d <= (829 + 60, 410 + 60))).all()  # near the box
    assert (pictures / f"{photo.stem}_methods.png").is_file()
    assert main(["predict", "zimmermann2017,nope", str(photo), "--hand", "right", "--out", str(out)]) == 2
    assert "unknown method 'nope'" in capsys.readouterr().err
