"""The CMU Panoptic hand keypoint set (Simon et al., CVPR 2017), 2D only, in mmpose's COCO-style
conversion (``panoptic_*.json``).

Each annotation has ``keypoints`` 21 x [u, v, visible] in OpenPose order (= the course order),
``bbox``, ``head_size`` and ``center``; there is no camera and no 3D. The original release stores
``is_left`` per hand; mmpose's conversion keeps it only in the file name (``..._l.jpg`` /
``..._r.jpg``, one file per annotated hand), which is what this loader reads.

Left hands are mirrored into right hands by default (``mirror_left=True``, only the image and
``u -> W - u``, as there is no K); with ``mirror_left=False`` they keep ``is_right = 0``.

Licence: CMU's terms, research use (http://domedb.perception.cs.cmu.edu/handdb.html).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from handlib.data.sample import make_sample
from handlib.skeleton import to_course_order

from ._coco import image_folder, read_coco_keypoints
from ._common import CMU_HANDS, read_image, require_dir
from .crop import mirror_sample


def is_left_from_name(file_name: str) -> bool:
    """True if the CMU file name marks a left hand (``<name>_l.<ext>``)."""
    return Path(file_name).stem.endswith("_l")


class CMUHands2D(Dataset):
    """CMU hand images with 2D keypoints (mmpose json), in the course's sample structure.

    Args:
        json_path: the COCO-style json file.
        image_dir: folder of the images; default the json's folder.
        mirror_left: mirror left hands into right hands (default).

    Each sample: the full image, keypoints_2d (21, 2) px, visibility, K NaN, has_3d False.
    """

    def __init__(self, json_path, image_dir=None, mirror_left: bool = True):
        self.json_path = Path(json_path)
        self.items = read_coco_keypoints(json_path, CMU_HANDS)
        self.image_dir = require_dir(image_folder(json_path, image_dir), CMU_HANDS, "the images of the json")
        self.mirror_left = mirror_left

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> dict:
        image, _, keypoints = self.items[index]
        rgb = read_image(self.image_dir / image["file_name"], CMU_HANDS)
        keypoints = to_course_order(keypoints, "openpose")
        is_left = is_left_from_name(image["file_name"])
        sample = make_sample(torch.from_numpy(rgb), keypoints[:, :2], None,
                             visibility=(keypoints[:, 2] > 0).astype(np.float32), is_right=not is_left)
        return mirror_sample(sample) if is_left and self.mirror_left else sample
