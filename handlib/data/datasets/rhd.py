"""RHD, the Rendered Hand pose Dataset (Zimmermann & Brox, ICCV 2017): synthetic renders of people
with 2D and 3D keypoints, depth and hand-part masks.

Original release ``RHD_published_v2/``::

    {training,evaluation}/color/%05d.png   320 x 320 RGB
    {training,evaluation}/depth/%05d.png   depth coded in two channels: metres = (R * 256 + G) / 65535 * 5
    {training,evaluation}/mask/%05d.png    labels: 0 background, 1 person, 2-17 left hand parts,
                                           18-33 right hand parts
    {training,evaluation}/anno_{training,evaluation}.pickle
        {sample id: {"xyz": (42, 3) metres camera frame, "uv_vis": (42, 3) [u, v, visible], "K": (3, 3)}}

42 joints: 0-20 the left hand, 21-41 the right hand, each in RHD's order (wrist, then each finger
tip -> base; ``skeleton.ORDER_MAPS["rhd"]``). 41258 training and 2728 evaluation samples.

One sample per image, for one hand. As in Zimmermann & Brox's own code, the hand is the one with
more pixels in the mask (ties go to the right hand); ``hand="left"`` or ``"right"`` forces one.

Left hands: the course models right hands, so by default (``mirror_left=True``) a left hand is
mirrored into a right hand with ``crop.mirror_sample`` (image flipped, ``u -> W - u``,
``x -> -x``, ``cx -> W - cx``; ``is_right`` becomes 1). With ``mirror_left=False`` the sample
keeps the left hand and ``is_right`` is 0.

The annotations are Python-2 pickles; they are read with ``handlib.safe_pickle.restricted_load`` (numpy arrays
only), never with plain ``pickle.load``.

mmpose's COCO-style conversion (``rhd_*.json``: per image ``cam_param = {focal, princpt}``, per
annotation ``keypoints`` 21 x [u, v, visible], ``joint_cam`` 21 x 3 in millimetres, ``hand_type``)
is read by ``RHDCoco``.

Licence: research purposes only, no commercial use
(https://lmb.informatik.uni-freiburg.de/resources/datasets/RenderedHandposeDataset.en.html).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from handlib.data.sample import make_sample
from handlib.skeleton import to_course_order

from ._common import RHD as RHD_SOURCE
from ._common import as_array, intrinsics, read_image, require_dir, require_file
from handlib.safe_pickle import UnsafePickleError, restricted_load
from .crop import mirror_sample

LEFT_LABELS = range(2, 18)      # mask labels of the left hand's parts
RIGHT_LABELS = range(18, 34)    # and of the right hand's
DEPTH_RANGE_M = 5.0


def decode_depth(coded: np.ndarray) -> np.ndarray:
    """RHD's depth PNG to metres: ``(R * 256 + G) / 65535 * 5``.

    Args:
        coded: (H, W, 3 or 4) uint8, the depth PNG as read.

    Returns:
        (H, W) float32, metres along the optical axis.
    """
    if coded.ndim != 3 or coded.shape[-1] < 2:
        raise ValueError(f"coded: expected an (H, W, 3) depth image, got shape {coded.shape}")
    top, bottom = coded[..., 0].astype(np.float64), coded[..., 1].astype(np.float64)
    return ((top * 256.0 + bottom) / 65535.0 * DEPTH_RANGE_M).astype(np.float32)


def choose_hand(mask: np.ndarray) -> str:
    """"left" or "right": the hand with more pixels in an RHD label mask (ties: "right").

    Args:
        mask: (H, W) integer labels (2-17 left hand, 18-33 right hand).
    """
    left = np.isin(mask, LEFT_LABELS).sum()
    right = np.isin(mask, RIGHT_LABELS).sum()
    return "left" if left > right else "right"


def load_annotations(path) -> dict:
    """Read an RHD ``anno_*.pickle`` safely (numpy arrays only).

    Returns:
        {sample id: {"xyz": (42, 3), "uv_vis": (42, 3), "K": (3, 3)}} as numpy arrays.
    """
    path = require_file(path, RHD_SOURCE)
    try:
        content = restricted_load(path)
    except UnsafePickleError:
        raise
    except Exception as error:  # UnpicklingError, EOFError, ValueError, ... from a corrupt file
        raise ValueError(f"{path}: not a readable RHD annotation pickle ({type(error).__name__}: {error}); "
                         f"download it again from {RHD_SOURCE.url}") from error
    if not isinstance(content, dict) or not content:
        raise ValueError(f"{path}: expected a dict {{sample id: {{'xyz', 'uv_vis', 'K'}}}}, "
                         f"got {type(content).__name__}")
    for sample_id, entry in content.items():
        if not isinstance(entry, dict) or not {"xyz", "uv_vis", "K"} <= set(entry):
            raise ValueError(f"{path}: entry {sample_id!r} should be a dict with keys 'xyz', 'uv_vis', 'K', "
                             f"got {sorted(entry) if isinstance(entry, dict) else type(entry).__name__}")
    return content


class RHD(Dataset):
    """RHD in its original release layout, one hand per image, in the course's sample structure.

    Args:
        root: the ``RHD_published_v2`` folder (holding ``training/`` and ``evaluation/``).
        split: "training" or "evaluation".
        hand: "auto" (the hand with more mask pixels), "left" or "right".
        mirror_left: mirror left hands into right hands (default; see the module docstring).

    Each sample: image (3, 320, 320), mask of the chosen hand, depth (metres, 0 off the hand),
    keypoints_2d from ``uv_vis``, visibility from its third column, keypoints_3d from ``xyz``, K.
    """

    def __init__(self, root, split: str = "training", hand: str = "auto", mirror_left: bool = True):
        if split not in ("training", "evaluation"):
            raise ValueError(f"split: expected 'training' or 'evaluation', got {split!r}")
        if hand not in ("auto", "left", "right"):
            raise ValueError(f"hand: expected 'auto', 'left' or 'right', got {hand!r}")
        self.root = require_dir(root, RHD_SOURCE, "training/ and evaluation/ with color/, depth/, mask/")
        self.folder = require_dir(self.root / split, RHD_SOURCE, f"color/, depth/, mask/ and anno_{split}.pickle")
        self.annotation_path = self.folder / f"anno_{split}.pickle"
        self.annotations = load_annotations(self.annotation_path)
        self.ids = sorted(self.annotations)
        self.hand = hand
        self.mirror_left = mirror_left

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, index: int) -> dict:
        sample_id = self.ids[index]
        name = f"{sample_id:05d}.png"
        anno_path = self.annotation_path
        entry = self.annotations[sample_id]
        xyz = as_array(entry["xyz"], (42, 3), f"sample {sample_id} xyz", anno_path)
        uv_vis = as_array(entry["uv_vis"], (42, 3), f"sample {sample_id} uv_vis", anno_path)
        K = as_array(entry["K"], (3, 3), f"sample {sample_id} K", anno_path)

        rgb = read_image(self.folder / "color" / name, RHD_SOURCE)
        labels = read_image(self.folder / "mask" / name, RHD_SOURCE, mode=None)
        if labels.ndim == 3:  # saved as RGB by some tools: the label is in every channel
            labels = labels[..., 0]
        depth = decode_depth(read_image(self.folder / "depth" / name, RHD_SOURCE, mode="RGB"))

        side = choose_hand(labels) if self.hand == "auto" else self.hand
        joints = slice(0, 21) if side == "left" else slice(21, 42)
        hand_mask = np.isin(labels, LEFT_LABELS if side == "left" else RIGHT_LABELS).astype(np.float32)
        keypoints_2d = to_course_order(uv_vis[joints], "rhd")
        sample = make_sample(torch.from_numpy(rgb), keypoints_2d[:, :2], K, mask=hand_mask,
                             depth=depth * hand_mask, keypoints_3d=to_course_order(xyz[joints], "rhd"),
                             visibility=(keypoints_2d[:, 2] > 0).astype(np.float32),
                             is_right=side == "right")
        return mirror_sample(sample) if side == "left" and self.mirror_left else sample


class RHDCoco(Dataset):
    """RHD frames in mmpose's COCO-style conversion (``rhd_*.json``), one hand per annotation.

    Per image ``cam_param = {"focal": [f, f], "princpt": [cx, cy]}``; per annotation ``keypoints``
    21 x [u, v, visible] and ``joint_cam`` 21 x 3 in **millimetres**, camera frame, in RHD's
    joint order, and ``hand_type`` "left" or "right".

    Args:
        json_path: the json file.
        image_dir: folder of the images; default the json's folder.
        mirror_left: mirror left hands into right hands (default), else keep them (is_right 0).
    """

    def __init__(self, json_path, image_dir=None, mirror_left: bool = True):
        from ._coco import image_folder, read_coco_keypoints

        self.json_path = Path(json_path)
        self.items = read_coco_keypoints(json_path, RHD_SOURCE)
        for image, annotation, _ in self.items:
            if "cam_param" not in image or "joint_cam" not in annotation:
                raise ValueError(f"{json_path}: image {image.get('id')} lacks 'cam_param' or its annotation "
                                 "lacks 'joint_cam'; expected mmpose's RHD json")
        self.image_dir = require_dir(image_folder(json_path, image_dir), RHD_SOURCE, "the %05d.png images")
        self.mirror_left = mirror_left

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> dict:
        image, annotation, keypoints = self.items[index]
        camera = image["cam_param"]
        K = intrinsics(camera["focal"][0], camera["focal"][1], camera["princpt"][0], camera["princpt"][1])
        joint_cam = as_array(annotation["joint_cam"], (21, 3), "joint_cam", self.json_path) / 1000.0
        is_right = annotation.get("hand_type", "right") == "right"
        rgb = read_image(self.image_dir / image["file_name"], RHD_SOURCE)
        keypoints = to_course_order(keypoints, "rhd")
        sample = make_sample(torch.from_numpy(rgb), keypoints[:, :2], K,
                             keypoints_3d=to_course_order(joint_cam, "rhd"),
                             visibility=(keypoints[:, 2] > 0).astype(np.float32), is_right=is_right)
        return mirror_sample(sample) if not is_right and self.mirror_left else sample
