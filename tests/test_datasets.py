"""Tests of the real-dataset loaders (handlib.data.datasets) and of crop_to_hand / mirror_sample.

Two kinds of data:
  * tiny real samples in the repository's ``data/samples/`` (``SAMPLES_DIR``; mmpose's test data:
    RHD json, FreiHAND images, InterHand2.6M json, CMU panoptic json; FreiHAND's official
    evaluation_K.json);
  * fixtures written here, into ``tmp_path``, in exactly the documented on-disk formats of the
    releases no sample exists for (original RHD pickle + PNGs, STB .mat, the FreiHAND v2 layout).
    Their numbers come from the real samples (RHD joints, FreiHAND keypoints and K).

The key check everywhere: the 3D keypoints, projected with the sample's K, land on its 2D keypoints.
"""
from __future__ import annotations

import io
import json
import math
import os
import pickle
import shutil
import struct
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import scipy.io
import torch
from PIL import Image

from handlib.data.datasets import (
    RHD,
    STB,
    CMUHands2D,
    FreiHAND,
    FreiHANDKeypoints2D,
    InterHand26M,
    RHDCoco,
    crop_to_hand,
    hand_box,
    mirror_sample,
)
from handlib.safe_pickle import UnsafePickleError, restricted_load
from handlib.data.datasets.freihand import image_id, sample_id_of
from handlib.data.datasets.rhd import decode_depth
from handlib.data.datasets.stb import BB_K, SK_COLOUR_K
from handlib.data.sample import SAMPLE_KEYS, make_sample
from handlib.data.samples import SAMPLES_DIR
from handlib.geometry import project_points
from handlib.skeleton import from_course_order, to_course_order



def reprojection_error(sample: dict) -> float:
    """Largest distance (px) between project(keypoints_3d, K) and keypoints_2d."""
    projected = project_points(sample["keypoints_3d"].double(), sample["K"].double())
    return float((projected - sample["keypoints_2d"].double()).norm(dim=-1).max())


def check_sample(sample: dict, height: int, width: int):
    assert set(sample) == set(SAMPLE_KEYS)
    assert sample["image"].shape == (3, height, width) and sample["image"].dtype == torch.float32
    assert 0.0 <= float(sample["image"].min()) and float(sample["image"].max()) <= 1.0
    assert sample["keypoints_2d"].shape == (21, 2) and sample["keypoints_3d"].shape == (21, 3)


# ---------------------------------------------------------------------------------------------
# Fixture writers, each in the documented format of a release.
# ---------------------------------------------------------------------------------------------

class Python2Pickler(pickle._Pickler):
    """Writes protocol-2 pickles the way Python 2 did: text and bytes as py2 ``str``
    (SHORT_BINSTRING / BINSTRING) and numpy under its old module name ``numpy.core``."""

    dispatch = dict(pickle._Pickler.dispatch)

    def save_py2_str(self, obj):
        data = obj if isinstance(obj, bytes) else obj.encode("latin1")
        if len(data) < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([len(data)]) + data)
        else:
            self.write(pickle.BINSTRING + struct.pack("<i", len(data)) + data)
        self.memoize(obj)

    dispatch[bytes] = save_py2_str
    dispatch[str] = save_py2_str

    def save_global(self, obj, name=None):
        module = obj.__module__.replace("numpy._core", "numpy.core")
        self.write(pickle.GLOBAL + f"{module}\n{name or obj.__qualname__}\n".encode())
        self.memoize(obj)


def python2_pickle(obj) -> bytes:
    buffer = io.BytesIO()
    Python2Pickler(buffer, protocol=2).dump(obj)
    return buffer.getvalue()


def rhd_json_frames() -> list[dict]:
    """The 3 real RHD frames of mmpose's json: file, K, hand, joints (21, 3) m and uv (21, 2), RHD order."""
    content = json.loads((SAMPLES_DIR / "rhd" / "test_rhd.json").read_text())
    images = {image["id"]: image for image in content["images"]}
    frames = []
    for annotation in content["annotations"]:
        image = images[annotation["image_id"]]
        focal, centre = image["cam_param"]["focal"], image["cam_param"]["princpt"]
        K = np.array([[focal[0], 0, centre[0]], [0, focal[1], centre[1]], [0, 0, 1]])
        frames.append({"id": image["id"], "file": SAMPLES_DIR / "rhd" / image["file_name"], "K": K,
                       "hand": annotation["hand_type"], "xyz": np.array(annotation["joint_cam"]) / 1000.0,
                       "uv": np.array(annotation["keypoints"])[:, :2]})
    return frames


def encode_rhd_depth(depth_m: np.ndarray) -> np.ndarray:
    """Inverse of RHD's decoding: code = depth / 5 * 65535, R = code // 256, G = code % 256."""
    code = np.round(depth_m / 5.0 * 65535).astype(np.int64)
    return np.stack([code // 256, code % 256, np.zeros_like(code)], -1).astype(np.uint8)


def write_rhd_release(root: Path, split: str = "training", extra_pixels_other_hand: int = 100) -> list[dict]:
    """``root/<split>/{color,depth,mask}/%05d.png`` + ``anno_<split>.pickle`` (a Python-2 pickle),
    from the 3 real RHD frames. The annotated hand's mask is a box around its keypoints (labelled
    with that hand's part labels); the other hand gets a smaller patch. Depth: the annotated
    hand's box at its wrist depth, 2 m elsewhere."""
    folder = root / split
    for sub in ("color", "depth", "mask"):
        (folder / sub).mkdir(parents=True, exist_ok=True)
    annotations, frames = {}, rhd_json_frames()
    for frame in frames:
        name = f"{frame['id']:05d}.png"
        shutil.copy(frame["file"], folder / "color" / name)
        left = frame["hand"] == "left"
        mask = np.ones((320, 320), np.uint8)        # 1 = person everywhere
        u0, v0 = np.floor(frame["uv"].min(0)).astype(int)
        u1, v1 = np.ceil(frame["uv"].max(0)).astype(int)
        mask[v0:v1, u0:u1] = 5 if left else 21       # left index / right thumb part labels
        side = int(math.sqrt(extra_pixels_other_hand))
        mask[:side, :side] = 30 if left else 12      # the other hand: a small patch
        Image.fromarray(mask, mode="L").save(folder / "mask" / name)
        depth = np.full((320, 320), 2.0)
        depth[v0:v1, u0:u1] = frame["xyz"][0, 2]
        Image.fromarray(encode_rhd_depth(depth), mode="RGB").save(folder / "depth" / name)
        # 42 joints: left hand 0-20, right hand 21-41; the other hand is the same hand shifted.
        other = frame["xyz"] + np.array([0.1, 0.0, 0.0])
        xyz = np.concatenate([frame["xyz"], other] if left else [other, frame["xyz"]]).astype(np.float32)
        uvw = xyz @ frame["K"].T
        visible = np.ones((42, 1))
        visible[3 if left else 24] = 0                # one occluded joint: the thumb's RHD index 3
        uv_vis = np.concatenate([uvw[:, :2] / uvw[:, 2:], visible], 1).astype(np.float32)
        annotations[frame["id"]] = {"xyz": xyz, "uv_vis": uv_vis, "K": frame["K"].astype(np.float32)}
    (folder / f"anno_{split}.pickle").write_bytes(python2_pickle(annotations))
    return frames


def write_stb_release(root: Path, sequence: str = "B1Counting") -> np.ndarray:
    """``root/labels/<seq>_BB.mat`` and ``_SK.mat`` (handPara (3, 21, N) mm) and 640x480 PNGs
    ``root/images/<seq>/{BB_left,BB_right,SK_color}_%d.png`` for N = 3 frames made from the real
    RHD joints: reordered into STB's order with a palm centre halfway between the wrist and the
    ring MCP (so palm_to_wrist gives the wrist back). Returns the course-order joints (N, 21, 3) m."""
    course = np.stack([to_course_order(frame["xyz"], "rhd") for frame in rhd_json_frames()])
    with_palm = course.copy()
    with_palm[:, 0] = (course[:, 0] + course[:, 13]) / 2           # palm = (wrist + ring MCP) / 2
    hand_para = from_course_order(with_palm * 1000.0, "stb").transpose(2, 1, 0)   # (3, 21, N) mm
    (root / "labels").mkdir(parents=True)
    for kind in ("BB", "SK"):
        scipy.io.savemat(root / "labels" / f"{sequence}_{kind}.mat", {"handPara": hand_para})
    images = root / "images" / sequence
    images.mkdir(parents=True)
    gradient = np.broadcast_to(np.arange(640, dtype=np.uint8)[None, :, None], (480, 640, 3))
    for prefix in ("BB_left", "BB_right", "SK_color"):
        for frame in range(len(course)):
            Image.fromarray(np.ascontiguousarray(gradient)).save(images / f"{prefix}_{frame}.png")
    return course


def write_freihand_release(root: Path, num_samples: int = 356) -> dict:
    """The FreiHAND v2 layout with ``num_samples`` training annotations (json lists) whose sample
    355 is the real one of mmpose's json: its 4 real JPEGs at ids 355 + 32560 k, its real 2D
    keypoints, a real K (FreiHAND's evaluation_K.json entry 355) and xyz = those keypoints
    back-projected at depths 0.55-0.65 m. Plus the evaluation split with the real evaluation_K.json."""
    rng = np.random.default_rng(0)
    content = json.loads((SAMPLES_DIR / "freihand" / "test_freihand.json").read_text())
    uv = next(np.reshape(a["keypoints"], (21, 3))[:, :2] for a in content["annotations"] if a["image_id"] == 355)
    eval_K = json.loads((SAMPLES_DIR / "freihand_official_files" / "evaluation_K.json").read_text())
    K = np.array(eval_K[355])
    depth = rng.uniform(0.55, 0.65, 21)
    xyz = np.concatenate([(uv - K[:2, 2]) / np.diag(K)[:2], np.ones((21, 1))], 1) * depth[:, None]
    mano = rng.normal(0, 0.3, (1, 61))
    (root / "training" / "rgb").mkdir(parents=True)
    (root / "training" / "mask").mkdir(parents=True)
    (root / "evaluation" / "rgb").mkdir(parents=True)
    for k in range(4):
        name = f"{355 + 32560 * k:08d}.jpg"
        shutil.copy(SAMPLES_DIR / "freihand" / name, root / "training" / "rgb" / name)
    mask = np.zeros((224, 224), np.uint8)
    mask[100:150, 60:160] = 255
    Image.fromarray(mask, mode="L").save(root / "training" / "mask" / "00000355.jpg")
    lists = {"K": [K.tolist()] * num_samples, "xyz": [xyz.tolist()] * num_samples,
             "mano": [mano.tolist()] * num_samples, "scale": [0.03] * num_samples}
    for key, value in lists.items():
        (root / f"training_{key}.json").write_text(json.dumps(value))
    shutil.copy(SAMPLES_DIR / "freihand_official_files" / "evaluation_K.json", root / "evaluation_K.json")
    shutil.copy(SAMPLES_DIR / "freihand" / "00000355.jpg", root / "evaluation" / "rgb" / "00000000.jpg")
    return {"uv": uv, "K": K, "xyz": xyz, "mano": mano[0], "eval_K": np.array(eval_K)}


# ---------------------------------------------------------------------------------------------
# Real samples
# ---------------------------------------------------------------------------------------------

def test_rhd_json_reprojects_and_is_in_course_order():
    frames = rhd_json_frames()
    data = RHDCoco(SAMPLES_DIR / "rhd" / "test_rhd.json", mirror_left=False)
    assert len(data) == 3
    for frame, sample in zip(frames, data):
        check_sample(sample, 320, 320)
        assert reprojection_error(sample) < 0.1                              # mmpose: 0.07 px
        assert sample["is_right"] == (frame["hand"] == "right")
        # RHD's own order: 1 = thumb tip; the course's: 4 = thumb tip, 0 = wrist.
        assert torch.allclose(sample["keypoints_2d"][4].double(), torch.tensor(frame["uv"][1]))
        assert torch.allclose(sample["keypoints_3d"][0].double(), torch.tensor(frame["xyz"][0]), atol=1e-6)
        assert torch.allclose(sample["keypoints_3d"][1].double(), torch.tensor(frame["xyz"][4]), atol=1e-6)
        # thumb CMC -> tip gets farther from the wrist (a check of the direction of the reordering)
        distances = (sample["keypoints_3d"][1:5] - sample["keypoints_3d"][0]).norm(dim=-1)
        assert distances[3] > distances[0]


def test_rhd_json_left_hands_are_mirrored_consistently():
    kept = RHDCoco(SAMPLES_DIR / "rhd" / "test_rhd.json", mirror_left=False)
    mirrored = RHDCoco(SAMPLES_DIR / "rhd" / "test_rhd.json")
    for original, sample in zip(kept, mirrored):
        assert sample["is_right"] == 1.0
        assert reprojection_error(sample) < 0.1
        if original["is_right"] == 0:
            assert torch.allclose(sample["keypoints_2d"][:, 0], 320 - original["keypoints_2d"][:, 0])
            assert torch.allclose(sample["keypoints_3d"][:, 0], -original["keypoints_3d"][:, 0])
            assert float(sample["K"][0, 2]) == 320 - float(original["K"][0, 2]) == 160.0
            assert torch.equal(sample["image"], original["image"].flip(-1))


def test_interhand_hands_project_into_their_box_and_image():
    folder = SAMPLES_DIR / "interhand2.6m"
    files = [folder / f"test_interhand2.6m_{part}.json" for part in ("data", "camera", "joint_3d")]
    data = InterHand26M(*files, image_dir=folder, mirror_left=False)
    # frames: 2 interacting (2 hands each), 1 left only, 1 right only -> 6 hands
    assert len(data) == 6
    assert sorted(int(s["is_right"]) for s in data) == [0, 0, 0, 1, 1, 1]
    content = json.loads(files[0].read_text())
    boxes = {a["image_id"]: a["bbox"] for a in content["annotations"]}
    cameras, joints = (json.loads(f.read_text()) for f in files[1:])
    for (image, hand, *_), sample in zip(data.items, data):
        height, width = image["height"], image["width"]
        check_sample(sample, height, width)
        assert sample["visibility"].sum() == 21
        uv = sample["keypoints_2d"]
        x, y, w, h = boxes[image["id"]]
        tolerance = 2.0   # px: the box is drawn around the projected joints
        assert (uv[:, 0] >= x - tolerance).all() and (uv[:, 0] <= x + w + tolerance).all()
        assert (uv[:, 1] >= y - tolerance).all() and (uv[:, 1] <= y + h + tolerance).all()
        assert (uv >= 0).all() and (uv[:, 0] <= width).all() and (uv[:, 1] <= height).all()
        # slot 0 is the wrist, InterHand's joint 20 (right) or 41 (left), by X_c = R (X_w - campos)
        capture, camera = str(image["capture"]), str(image["camera"])
        world = np.array(joints[capture][str(image["frame_idx"])]["world_coord"][20 if hand == "right" else 41])
        R, campos = np.array(cameras[capture]["camrot"][camera]), np.array(cameras[capture]["campos"][camera])
        wrist = R @ (world - campos) / 1000.0
        assert np.allclose(sample["keypoints_3d"][0].numpy(), wrist, atol=1e-6)
        assert 0.9 < float(sample["keypoints_3d"][:, 2].mean()) < 1.3         # hands ~1 m away


def test_interhand_release_layout_and_mirroring(tmp_path):
    folder = SAMPLES_DIR / "interhand2.6m"
    (tmp_path / "annotations" / "test").mkdir(parents=True)
    (tmp_path / "images" / "test").mkdir(parents=True)
    for part in ("data", "camera", "joint_3d"):
        shutil.copy(folder / f"test_interhand2.6m_{part}.json",
                    tmp_path / "annotations" / "test" / f"InterHand2.6M_test_{part}.json")
    for image in folder.glob("*.jpg"):
        shutil.copy(image, tmp_path / "images" / "test" / image.name)
    data = InterHand26M.from_release(tmp_path, "test")
    assert len(data) == 6
    for sample in data:
        assert sample["is_right"] == 1.0
        assert reprojection_error(sample) < 1e-3


def test_freihand_json_versions_share_one_annotation():
    data = FreiHANDKeypoints2D(SAMPLES_DIR / "freihand" / "test_freihand.json")
    assert len(data) == 8
    by_sample = {}
    for index in range(len(data)):
        by_sample.setdefault(data.sample_id(index), []).append(index)
    assert {k: len(v) for k, v in by_sample.items()} == {355: 4, 17620: 4}
    indices = by_sample[355]
    assert sorted(data.image_id(i) for i in indices) == [355, 32915, 65475, 98035]
    assert sorted(data.version(i) for i in indices) == sorted(["gs", "hom", "sample", "auto"])
    samples = [data[i] for i in indices]
    for sample in samples:
        check_sample(sample, 224, 224)
        assert not sample["has_3d"] and torch.isnan(sample["K"]).all()
        assert torch.equal(sample["keypoints_2d"], samples[0]["keypoints_2d"])
    # same hand, different pictures: green screen vs the recoloured versions
    assert (samples[0]["image"] - samples[1]["image"]).abs().mean() > 0.01
    assert image_id(355, "auto") == 98035 and sample_id_of(98035) == (355, "auto")


def test_cmu_panoptic_2d():
    content = json.loads((SAMPLES_DIR / "panoptic" / "test_panoptic.json").read_text())
    kept = CMUHands2D(SAMPLES_DIR / "panoptic" / "test_panoptic.json", mirror_left=False)
    mirrored = CMUHands2D(SAMPLES_DIR / "panoptic" / "test_panoptic.json")
    assert len(kept) == 4
    for annotation, image, original, sample in zip(content["annotations"], content["images"], kept, mirrored):
        check_sample(original, image["height"], image["width"])
        assert not original["has_3d"] and torch.isnan(original["K"]).all()
        expected = torch.tensor(annotation["keypoints"], dtype=torch.float32).reshape(21, 3)[:, :2]
        assert torch.equal(original["keypoints_2d"], expected)
        assert original["is_right"] == (0.0 if image["file_name"].endswith("_l.jpg") else 1.0)
        assert sample["is_right"] == 1.0
        if original["is_right"] == 0:
            assert torch.allclose(sample["keypoints_2d"][:, 0], image["width"] - expected[:, 0])


# ---------------------------------------------------------------------------------------------
# Fixtures in the documented formats
# ---------------------------------------------------------------------------------------------

def test_freihand_release_layout_id_arithmetic_and_projection(tmp_path):
    truth = write_freihand_release(tmp_path)
    data = FreiHAND(tmp_path)
    assert len(data) == 356 * 4
    indices = [355 + 356 * k for k in range(4)]
    assert [data.locate(i)[1] for i in indices] == [355, 32915, 65475, 98035]
    samples = [data[i] for i in indices]
    for sample in samples:
        check_sample(sample, 224, 224)
        assert sample["has_3d"] and sample["has_mask"] and not sample["has_mano"]
        assert torch.equal(sample["keypoints_3d"], samples[0]["keypoints_3d"])
        # K @ xyz reproduces the real 2D keypoints of mmpose's json
        assert float((sample["keypoints_2d"].double() - torch.tensor(truth["uv"])).abs().max()) < 1e-3
        assert reprojection_error(sample) < 1e-3
        assert np.allclose(sample["K"].numpy(), truth["K"], atol=1e-4)
    assert not torch.equal(samples[0]["image"], samples[1]["image"])
    # MANO: with a model's hands_mean the finger pose becomes absolute
    hands_mean = np.linspace(-0.2, 0.2, 45)
    sample = FreiHAND(tmp_path, versions=("gs",), mano_model=SimpleNamespace(hands_mean=hands_mean))[355]
    assert sample["has_mano"]
    assert np.allclose(sample["pose"][:3].numpy(), truth["mano"][:3], atol=1e-6)
    assert np.allclose(sample["pose"][3:].numpy(), truth["mano"][3:48] + hands_mean, atol=1e-6)
    assert np.allclose(sample["betas"].numpy(), truth["mano"][48:58], atol=1e-6)


def test_freihand_evaluation_split_uses_official_K(tmp_path):
    truth = write_freihand_release(tmp_path, num_samples=4)
    data = FreiHAND(tmp_path, split="evaluation")
    assert len(data) == 3960
    sample = data[0]
    check_sample(sample, 224, 224)
    assert np.allclose(sample["K"].numpy(), truth["eval_K"][0], atol=1e-3)
    assert float(sample["K"][0, 2]) == float(sample["K"][1, 2]) == 112.0   # v2: principal point (112, 112)
    assert not sample["has_3d"] and torch.isnan(sample["keypoints_2d"]).all()
    with pytest.raises(ValueError, match="only the 'gs' version"):
        FreiHAND(tmp_path, split="evaluation", versions=("hom",))


def test_rhd_original_release(tmp_path):
    frames = write_rhd_release(tmp_path)
    data = RHD(tmp_path, mirror_left=False)
    assert len(data) == 3 and data.ids == [111, 1111, 11111]
    for frame, sample in zip(frames, data):
        check_sample(sample, 320, 320)
        assert sample["has_3d"] and sample["has_mask"] and sample["has_depth"]
        # the annotated hand has more mask pixels than the other one, so it is chosen
        assert sample["is_right"] == (frame["hand"] == "right")
        assert reprojection_error(sample) < 1e-3
        assert np.allclose(sample["keypoints_2d"].numpy(), to_course_order(frame["uv"], "rhd"), atol=0.1)
        # the occluded joint (RHD thumb index 3 = 2nd from the base = course slot 2) has visibility 0
        assert sample["visibility"].tolist() == [1.0 if i != 2 else 0.0 for i in range(21)]
        # depth decoding: (R * 256 + G) / 65535 * 5 gives the wrist depth on the hand, 0 off it
        on_hand = sample["mask"] > 0
        assert abs(float(sample["depth"][on_hand].mean()) - frame["xyz"][0, 2]) < 5.0 / 65535
        assert float(sample["depth"][~on_hand].abs().max()) == 0.0
    # forcing the other hand picks joints 21-41 (or 0-20) instead
    forced = RHD(tmp_path, hand="right", mirror_left=False)[0]
    assert forced["is_right"] == 1.0 and not torch.allclose(forced["keypoints_3d"], data[0]["keypoints_3d"])
    # default: left hands mirrored into right hands, projection still exact
    for sample in RHD(tmp_path):
        assert sample["is_right"] == 1.0 and reprojection_error(sample) < 1e-3


def test_rhd_depth_decoding_known_values():
    coded = np.array([[[0, 0, 0], [255, 255, 0], [1, 2, 9]]], np.uint8)     # (1, 3, 3)
    assert np.allclose(decode_depth(coded), [[0.0, 5.0, (256 + 2) / 65535 * 5]])


def test_rhd_choose_hand_by_mask_pixels(tmp_path):
    from handlib.data.datasets.rhd import choose_hand

    mask = np.zeros((10, 10), np.uint8)
    mask[:3] = 17          # left palm: 30 px
    mask[5:] = 18          # right thumb: 50 px
    assert choose_hand(mask) == "right"
    mask[5:] = 0
    assert choose_hand(mask) == "left"


def test_stb_bb_and_sk_cameras(tmp_path):
    course = write_stb_release(tmp_path)
    data = STB(tmp_path, ["B1Counting"], camera="BB_left", mirror_left=False)
    assert len(data) == 3
    for joints, sample in zip(course, data):
        check_sample(sample, 480, 640)
        assert sample["is_right"] == 0.0
        # palm_to_wrist undoes the palm centre the fixture stored: the real wrist comes back
        assert np.allclose(sample["keypoints_3d"].numpy(), joints, atol=1e-6)
        assert reprojection_error(sample) < 1e-3
        assert torch.allclose(sample["K"], torch.tensor(BB_K, dtype=torch.float32))
    palm = STB(tmp_path, ["B1Counting"], camera="BB_left", wrist=False, mirror_left=False)[0]
    assert np.allclose(palm["keypoints_3d"][0].numpy(), (course[0, 0] + course[0, 13]) / 2, atol=1e-6)
    # right camera: 120.054 mm baseline along x
    right = STB(tmp_path, ["B1Counting"], camera="BB_right", mirror_left=False)[0]
    assert np.allclose(right["keypoints_3d"].numpy(), course[0] - [0.120054, 0, 0], atol=1e-6)
    # SK colour camera: hand-graph-cnn's quaternion formula for the depth -> colour rotation
    theta = np.linalg.norm([0.00531, -0.01196, 0.00301])
    a = math.cos(theta / 2)
    b, c, d = -np.array([0.00531, -0.01196, 0.00301]) * math.sin(theta / 2) / theta
    rotation = np.array([[a * a + b * b - c * c - d * d, 2 * (b * c + a * d), 2 * (b * d - a * c)],
                         [2 * (b * c - a * d), a * a + c * c - b * b - d * d, 2 * (c * d + a * b)],
                         [2 * (b * d + a * c), 2 * (c * d - a * b), a * a + d * d - b * b - c * c]])
    with_palm = course.copy()
    with_palm[:, 0] = (course[:, 0] + course[:, 13]) / 2
    colour = ((with_palm * 1000 - [-24.0381, -0.4563, -1.2326]) @ rotation) / 1000
    sk = STB(tmp_path, ["B1Counting"], camera="SK_color", wrist=False, mirror_left=False)[1]
    assert np.allclose(sk["keypoints_3d"].numpy(), colour[1], atol=1e-6)
    assert torch.allclose(sk["K"], torch.tensor(SK_COLOUR_K, dtype=torch.float32))
    assert reprojection_error(sk) < 1e-3
    mirrored = STB(tmp_path, ["B1Counting"])[0]
    assert mirrored["is_right"] == 1.0 and reprojection_error(mirrored) < 1e-3


# ---------------------------------------------------------------------------------------------
# Cropping and mirroring
# ---------------------------------------------------------------------------------------------

def line_sample(width: int = 200, height: int = 100, column: int = 42) -> dict:
    """A black image with one white column and keypoints on that column's centre line."""
    image = torch.zeros(3, height, width)
    image[:, :, column] = 1.0
    keypoints = torch.stack([torch.full((21,), column + 0.5), torch.linspace(30, 70, 21)], -1)
    K = torch.tensor([[100.0, 0, width / 2], [0, 100.0, height / 2], [0, 0, 1]])
    joints = torch.cat([(keypoints - K[:2, 2]) / 100.0, torch.ones(21, 1)], -1) * 0.5
    return make_sample(image, keypoints, K, keypoints_3d=joints)


def test_crop_known_values():
    sample = line_sample()
    # box (x0=10, y0=20, side 64) -> 128 px: s = 2, u' = 2 (u - 10); the column's centre 42.5 -> 65
    cropped = crop_to_hand(sample, size=128, box=(10, 20, 64))
    assert cropped["image"].shape == (3, 128, 128)
    assert torch.allclose(cropped["keypoints_2d"][:, 0], torch.full((21,), 65.0))
    assert torch.allclose(cropped["keypoints_2d"][:, 1], (sample["keypoints_2d"][:, 1] - 20) * 2)
    # the white column becomes output columns 64 and 65, centred on u' = 65 like the keypoints
    profile = cropped["image"][0, 64]
    assert torch.argmax(profile).item() in (64, 65) and torch.isclose(profile[64], profile[65])
    assert reprojection_error(cropped) < 1e-3
    assert torch.equal(cropped["keypoints_3d"], sample["keypoints_3d"])


def test_crop_default_box_contains_the_hand_and_pads_outside():
    sample = line_sample(column=3)                      # keypoints near the left edge
    x0, y0, side = hand_box(sample, margin=0.2)
    assert side == math.ceil(40 * 1.4) and x0 < 0       # the box reaches outside the image
    cropped = crop_to_hand(sample, size=64)
    assert (cropped["visibility"] == 1).all()
    assert float(cropped["image"][:, :, :2].max()) == 0.0   # padded with zeros
    assert reprojection_error(cropped) < 1e-3


def test_crop_real_samples_keep_projection():
    data = RHDCoco(SAMPLES_DIR / "rhd" / "test_rhd.json")
    for sample in data:
        cropped = crop_to_hand(sample, size=128)
        check_sample(cropped, 128, 128)
        # the json's own 0.07 px rounding grows with the zoom, and nothing else is added
        zoom = float(cropped["K"][0, 0] / sample["K"][0, 0])
        assert reprojection_error(cropped) <= reprojection_error(sample) * zoom + 1e-3
        assert (cropped["keypoints_2d"] >= 0).all() and (cropped["keypoints_2d"] <= 128).all()
    batch = torch.utils.data.default_collate([crop_to_hand(s) for s in data])
    assert batch["image"].shape == (3, 3, 128, 128)


def test_mirror_known_values_and_involution():
    sample = line_sample(width=200, column=3)
    mirrored = mirror_sample(sample)
    assert torch.allclose(mirrored["keypoints_2d"][:, 0], torch.full((21,), 200 - 3.5))
    assert float(mirrored["image"][0, 0, 200 - 1 - 3]) == 1.0           # column 3 -> column 196
    assert float(mirrored["K"][0, 2]) == 100.0 and mirrored["is_right"] == 0.0
    assert reprojection_error(mirrored) < 1e-4
    twice = mirror_sample(mirrored)
    for key in ("image", "keypoints_2d", "keypoints_3d", "K", "is_right"):
        assert torch.allclose(twice[key], sample[key])


def test_mirror_pose_negates_y_and_z_of_each_rotation():
    from handlib.geometry import axis_angle_to_matrix

    pose = torch.linspace(-1, 1, 48)
    sample = make_sample(torch.zeros(3, 8, 8), torch.zeros(21, 2), torch.eye(3), pose=pose, betas=torch.zeros(10))
    mirrored = mirror_sample(sample)["pose"].reshape(16, 3)
    # mirroring conjugates each rotation by M = diag(-1, 1, 1): R' = M R M
    M = torch.diag(torch.tensor([-1.0, 1.0, 1.0]))
    expected = M @ axis_angle_to_matrix(pose.reshape(16, 3)) @ M
    assert torch.allclose(axis_angle_to_matrix(mirrored), expected, atol=1e-6)


def test_crop_rejects_a_sample_without_keypoints():
    sample = make_sample(torch.zeros(3, 10, 10), torch.full((21, 2), float("nan")))
    with pytest.raises(ValueError, match="no hand to crop"):
        crop_to_hand(sample)


# ---------------------------------------------------------------------------------------------
# Errors: missing folders, corrupt files, unsafe pickles
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("open_dataset, url", [
    (lambda path: FreiHAND(path), "lmb.informatik.uni-freiburg.de/projects/freihand"),
    (lambda path: RHD(path), "RenderedHandposeDataset"),
    (lambda path: STB(path), "icip17_stereo_hand_pose_dataset"),
    (lambda path: InterHand26M.from_release(path), "mks0601.github.io/InterHand2.6M"),
    (lambda path: CMUHands2D(path / "panoptic.json"), "domedb"),
    (lambda path: RHDCoco(path / "rhd.json"), "RenderedHandposeDataset"),
])
def test_missing_dataset_names_path_source_and_licence(tmp_path, open_dataset, url):
    missing = tmp_path / "not_downloaded"
    with pytest.raises(FileNotFoundError) as error:
        open_dataset(missing)
    message = str(error.value)
    assert str(missing) in message and url in message and "licence" in message


def test_corrupt_json_names_the_file(tmp_path):
    (tmp_path / "training" / "rgb").mkdir(parents=True)
    (tmp_path / "training_K.json").write_text("[[[1, 0, 112], [0, 1")
    with pytest.raises(ValueError, match="training_K.json: not a valid json"):
        FreiHAND(tmp_path)


def test_wrong_json_shape_names_the_file(tmp_path):
    (tmp_path / "training" / "rgb").mkdir(parents=True)
    (tmp_path / "training_K.json").write_text(json.dumps([np.eye(3).tolist()]))
    (tmp_path / "training_xyz.json").write_text(json.dumps([np.zeros((20, 3)).tolist()]))
    with pytest.raises(ValueError, match=r"training_xyz.json: xyz has shape \(1, 20, 3\)"):
        FreiHAND(tmp_path)


def test_corrupt_mat_names_the_file(tmp_path):
    (tmp_path / "labels").mkdir()
    (tmp_path / "labels" / "B1Counting_BB.mat").write_bytes(b"MATLAB 5.0 MAT-file, truncated")
    with pytest.raises(ValueError, match="B1Counting_BB.mat"):
        STB(tmp_path, sequences=["B1Counting"])


def test_corrupt_pickle_names_the_file(tmp_path):
    (tmp_path / "training").mkdir()
    blob = python2_pickle({0: {"xyz": np.zeros((42, 3)), "uv_vis": np.zeros((42, 3)), "K": np.eye(3)}})
    (tmp_path / "training" / "anno_training.pickle").write_bytes(blob[: len(blob) // 2])
    with pytest.raises(ValueError, match="anno_training.pickle: not a readable RHD annotation"):
        RHD(tmp_path)


class RunsAShellCommand:
    """What a malicious pickle does: unpickling it calls os.system."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def test_pickle_with_code_is_refused(tmp_path):
    marker = tmp_path / "pwned"
    (tmp_path / "training").mkdir()
    path = tmp_path / "training" / "anno_training.pickle"
    path.write_bytes(pickle.dumps({0: {"xyz": RunsAShellCommand(marker)}}, protocol=2))
    with pytest.raises(UnsafePickleError, match=r"anno_training.pickle: refusing to load the global '(os|posix)\.system'"):
        RHD(tmp_path)
    assert not marker.exists()
    with pytest.raises(ValueError):          # UnsafePickleError is also a ValueError
        restricted_load(path)
    assert not marker.exists()


def test_restricted_load_reads_python2_and_python3_numpy_pickles():
    arrays = {7: {"xyz": np.arange(126, dtype=np.float32).reshape(42, 3), "K": np.eye(3)}}
    blob = python2_pickle(arrays)
    assert b"numpy.core.multiarray\n_reconstruct" in blob and b"U\x03xyz" in blob   # py2 str opcodes
    for data in (blob, pickle.dumps(arrays, protocol=2), pickle.dumps(arrays, protocol=5)):
        loaded = restricted_load(io.BytesIO(data))
        assert np.array_equal(loaded[7]["xyz"], arrays[7]["xyz"]) and loaded[7]["xyz"].dtype == np.float32
        assert np.array_equal(loaded[7]["K"], np.eye(3))
