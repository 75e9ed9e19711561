"""InterHand2.6M (Moon et al., ECCV 2020): real multi-view photos of single and interacting hands
with 3D keypoints.

Each split has three json files (``annotations/<split>/InterHand2.6M_<split>_{data,camera,joint_3d}.json``):

    data.json     {"images": [{id, file_name, width, height, capture, camera, frame_idx, ...}],
                   "annotations": [{image_id, bbox [x, y, w, h], joint_valid 42 x [0/1],
                                    hand_type "right" | "left" | "interacting", hand_type_valid}]}
    camera.json   {capture: {"campos": {cam: [x, y, z] mm}, "camrot": {cam: 3x3},
                             "focal": {cam: [fx, fy]}, "princpt": {cam: [cx, cy]}}}
    joint_3d.json {capture: {frame_idx: {"world_coord": 42 x 3 mm, "joint_valid": 42 x [bool], ...}}}

and the images are ``images/<split>/<file_name>``.

Camera model: world to camera ``X_c = R (X_w - campos)`` with R = camrot, then
``u = fx X_c / Z_c + cx``, ``v = fy Y_c / Z_c + cy``.

42 joints: the right hand 0-20, then the left hand 21-41; within a hand thumb tip, IP, MCP, CMC,
index tip -> MCP, middle, ring, pinky, and the wrist last (``skeleton.ORDER_MAPS["interhand"]``).

One sample per **hand**: an image with two interacting hands gives two samples. A hand is used
when the image's ``hand_type`` includes it and its wrist is valid. ``visibility`` is the
annotation's ``joint_valid`` (both in data.json and joint_3d.json); an invalid joint keeps its
stored coordinates but has visibility 0, so losses and metrics must weight by visibility.
``keypoints_2d`` is the projection of ``keypoints_3d`` (InterHand2.6M stores no 2D keypoints).

Left hands are mirrored into right hands by default (``mirror_left=True``, ``crop.mirror_sample``);
with ``mirror_left=False`` they keep ``is_right = 0``.

Licence: CC-BY-NC 4.0 (https://mks0601.github.io/InterHand2.6M/).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from handlib.data.sample import make_sample
from handlib.skeleton import to_course_order

from ._common import INTERHAND, as_array, intrinsics, project, read_image, read_json, require_dir
from .crop import mirror_sample

HAND_JOINTS = {"right": slice(0, 21), "left": slice(21, 42)}
WRIST_INDEX = 20   # within one hand's 21 joints


def world_to_camera(points_mm: np.ndarray, campos: np.ndarray, camrot: np.ndarray) -> np.ndarray:
    """``X_c = camrot @ (X_w - campos)`` for row vectors: (N, 3) world mm -> (N, 3) camera mm."""
    return (points_mm - campos) @ camrot.T


class InterHand26M(Dataset):
    """InterHand2.6M frames, one sample per valid hand, in the course's sample structure.

    Args:
        data_json, camera_json, joint_3d_json: the three annotation files of one split.
        image_dir: the folder ``file_name`` is relative to (``images/<split>``).
        mirror_left: mirror left hands into right hands (default).

    Use ``InterHand26M.from_release(root, split)`` for the official folder layout.
    """

    def __init__(self, data_json, camera_json, joint_3d_json, image_dir, mirror_left: bool = True):
        self.data_json = Path(data_json)
        self.image_dir = require_dir(image_dir, INTERHAND, "the images named by file_name in the data json")
        data = read_json(data_json, INTERHAND)
        cameras = read_json(camera_json, INTERHAND)
        joints = read_json(joint_3d_json, INTERHAND)
        if not isinstance(data, dict) or not {"images", "annotations"} <= set(data):
            raise ValueError(f"{data_json}: expected {{'images': [...], 'annotations': [...]}}")
        images = {image["id"]: image for image in data["images"]}
        self.mirror_left = mirror_left
        self.items = []   # (image entry, hand, K, joints (21, 3) m camera frame, valid (21,))
        for annotation in data["annotations"]:
            image = images.get(annotation["image_id"])
            if image is None:
                raise ValueError(f"{data_json}: annotation {annotation.get('id')} refers to a missing image")
            capture, camera, frame = str(image["capture"]), str(image["camera"]), str(image["frame_idx"])
            try:
                params = cameras[capture]
                campos = np.asarray(params["campos"][camera], dtype=np.float64)
                camrot = np.asarray(params["camrot"][camera], dtype=np.float64)
                K = intrinsics(*params["focal"][camera], *params["princpt"][camera])
                frame_joints = joints[capture][frame]
            except (KeyError, TypeError) as error:
                raise ValueError(f"{camera_json} / {joint_3d_json}: no entry for capture {capture}, camera "
                                 f"{camera}, frame {frame} ({error!r}), which {data_json} refers to") from error
            world = as_array(frame_joints["world_coord"], (42, 3), "world_coord", joint_3d_json)
            valid = (as_array(annotation["joint_valid"], (42, -1), "joint_valid", data_json)[:, 0] > 0) & \
                    (as_array(frame_joints["joint_valid"], (42, -1), "joint_valid", joint_3d_json)[:, 0] > 0)
            camera_mm = world_to_camera(world, campos, camrot)
            hand_type = annotation.get("hand_type", "interacting")
            for hand in ("right", "left"):
                if hand_type not in (hand, "interacting"):
                    continue
                hand_valid = valid[HAND_JOINTS[hand]]
                if not hand_valid[WRIST_INDEX]:
                    continue
                self.items.append((image, hand, K, camera_mm[HAND_JOINTS[hand]] / 1000.0,
                                   hand_valid.astype(np.float32)))

    @classmethod
    def from_release(cls, root, split: str = "test", annotations: str | None = None, **kwargs):
        """Open a split of the official layout ``root/{annotations,images}/...``.

        Args:
            root: the InterHand2.6M folder.
            split: "train", "val" or "test".
            annotations: the annotation folder under ``root/annotations`` (e.g. "all",
                "human_annot", "machine_annot"); default: ``<split>``, else "all".
        """
        root = require_dir(root, INTERHAND, "annotations/ and images/")
        candidates = [annotations] if annotations else [split, "all"]
        for folder in candidates:
            base = root / "annotations" / folder
            if base.is_dir():
                break
        else:
            raise FileNotFoundError(f"{root}/annotations: none of {candidates} is a folder. InterHand2.6M is not "
                                    f"shipped with handlib: download it from {INTERHAND.url} "
                                    f"(licence: {INTERHAND.licence}).")
        names = [base / f"InterHand2.6M_{split}_{part}.json" for part in ("data", "camera", "joint_3d")]
        return cls(*names, image_dir=root / "images" / split, **kwargs)

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> dict:
        image, hand, K, joints, valid = self.items[index]
        rgb = read_image(self.image_dir / image["file_name"], INTERHAND)
        keypoints_3d = to_course_order(joints, "interhand")
        sample = make_sample(torch.from_numpy(rgb), project(keypoints_3d, K), K, keypoints_3d=keypoints_3d,
                             visibility=to_course_order(valid[:, None], "interhand")[:, 0],
                             is_right=hand == "right")
        return mirror_sample(sample) if hand == "left" and self.mirror_left else sample
