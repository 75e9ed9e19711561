"""STB, the Stereo Hand Pose Tracking Benchmark (Zhang et al., 2016/2017): real photos of one
person's left hand from a stereo pair (Bumblebee, "BB") and an RGB-D camera (RealSense, "SK").

Layout::

    STB/images/<seq>/BB_left_%d.png, BB_right_%d.png    640 x 480 stereo pair (%d = 0..1499)
    STB/images/<seq>/SK_color_%d.png, SK_depth_%d.png   640 x 480 RealSense colour + depth
    STB/labels/<seq>_BB.mat, <seq>_SK.mat               variable "handPara", shape (3, 21, 1500), mm

``<seq>`` is B1..B6 x {Counting, Random}; the usual split trains on B2-B6 and tests on
B1Counting + B1Random. ``handPara[:, j, i]`` is joint j of frame i, in STB's order: 0 the **palm
centre**, then pinky, ring, middle, index, thumb, each MCP -> tip (``skeleton.ORDER_MAPS["stb"]``).

Cameras:
    * BB labels are in the left camera's frame; the right camera sees ``x_r = x_l - 120.054 mm``.
      Both use fx = fy = 822.79041, cx = 318.47345, cy = 250.31296.
    * SK labels are in the **depth** camera's frame; the colour camera sees
      ``x_colour = (x_depth - t) @ R`` (row vectors) with t = [-24.0381, -0.4563, -1.2326] mm and
      R the rotation of the vector [0.00531, -0.01196, 0.00301] (as hand-graph-cnn and
      Minimal-Hand convert them). Colour intrinsics fx 607.92271, fy 607.88192, cx 314.78337,
      cy 236.42484.

Root: STB has no wrist keypoint. With ``wrist=True`` (default) slot 0 holds the wrist synthesised
by ``skeleton.palm_to_wrist``, ``wrist = ring_MCP + 2 (palm - ring_MCP)`` (Zimmermann & Brox and
Ge et al.); with ``wrist=False`` slot 0 keeps the palm centre (then do not compare it with
another dataset's wrist).

All STB hands are left hands: by default (``mirror_left=True``) samples are mirrored into right
hands with ``crop.mirror_sample``; with ``mirror_left=False`` they keep ``is_right = 0``.

Source: https://github.com/zhjwustc/icip17_stereo_hand_pose_dataset (licence not verified; treat
it as research use only).
"""
from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import Dataset

from handlib.data.sample import make_sample
from handlib.geometry import axis_angle_to_matrix
from handlib.skeleton import palm_to_wrist, to_course_order

from ._common import STB as STB_SOURCE
from ._common import intrinsics, project, read_image, read_mat, require_dir
from .crop import mirror_sample

BB_K = intrinsics(822.79041, 822.79041, 318.47345, 250.31296)
BB_BASELINE_MM = 120.054
SK_COLOUR_K = intrinsics(607.92271, 607.88192, 314.78337, 236.42484)
SK_DEPTH_TO_COLOUR_T_MM = np.array([-24.0381, -0.4563, -1.2326])
SK_DEPTH_TO_COLOUR_ROTATION_VECTOR = np.array([0.00531, -0.01196, 0.00301])

SEQUENCES = tuple(f"B{i}{kind}" for i in range(1, 7) for kind in ("Counting", "Random"))
TRAIN_SEQUENCES = tuple(s for s in SEQUENCES if not s.startswith("B1"))
TEST_SEQUENCES = ("B1Counting", "B1Random")
CAMERAS = ("BB_left", "BB_right", "SK_color")


def sk_depth_to_colour(points_mm: np.ndarray) -> np.ndarray:
    """SK labels from the depth camera's frame to the colour camera's: ``(x - t) @ R``.

    Args:
        points_mm: (..., 3) millimetres, depth-camera frame.

    Returns:
        (..., 3) millimetres, colour-camera frame.
    """
    rotation = axis_angle_to_matrix(torch.as_tensor(SK_DEPTH_TO_COLOUR_ROTATION_VECTOR)).numpy()
    return (points_mm - SK_DEPTH_TO_COLOUR_T_MM) @ rotation


def camera_joints(hand_para: np.ndarray, camera: str) -> np.ndarray:
    """``handPara`` (3, 21, N) mm of one label file -> (N, 21, 3) metres in ``camera``'s frame, STB order.

    Args:
        hand_para: (3, 21, N) millimetres, as stored (BB: left camera frame, SK: depth camera frame).
        camera: "BB_left", "BB_right" or "SK_color".
    """
    if camera not in CAMERAS:
        raise ValueError(f"camera: expected one of {CAMERAS}, got {camera!r}")
    if hand_para.ndim != 3 or hand_para.shape[:2] != (3, 21):
        raise ValueError(f"hand_para: expected shape (3, 21, N), got {hand_para.shape}")
    joints = np.asarray(hand_para, dtype=np.float64).transpose(2, 1, 0)    # (N, 21, 3) mm
    if camera == "BB_right":
        joints = joints - np.array([BB_BASELINE_MM, 0.0, 0.0])
    elif camera == "SK_color":
        joints = sk_depth_to_colour(joints)
    return joints / 1000.0


class STB(Dataset):
    """STB images with 3D keypoints, in the course's sample structure.

    Args:
        root: the STB folder (holding ``images/`` and ``labels/``).
        sequences: "train" (B2-B6), "test" (B1Counting, B1Random) or a list of sequence names.
        camera: "BB_left", "BB_right" (stereo pair) or "SK_color" (RealSense colour).
        wrist: replace the palm centre by the synthesised wrist (default; see the module docstring).
        mirror_left: mirror the (left) hands into right hands (default).

    Each sample: image (3, 480, 640), keypoints_3d (21, 3) m in ``camera``'s frame, keypoints_2d
    their projection with ``camera``'s K, visibility 1 (STB labels no occlusion).
    """

    def __init__(self, root, sequences="test", camera: str = "BB_left", wrist: bool = True,
                 mirror_left: bool = True):
        if camera not in CAMERAS:
            raise ValueError(f"camera: expected one of {CAMERAS}, got {camera!r}")
        if isinstance(sequences, str):
            if sequences not in ("train", "test"):
                raise ValueError(f"sequences: expected 'train', 'test' or a list of {SEQUENCES}, got {sequences!r}")
            sequences = TRAIN_SEQUENCES if sequences == "train" else TEST_SEQUENCES
        unknown = [s for s in sequences if s not in SEQUENCES]
        if unknown or not sequences:
            raise ValueError(f"sequences: unknown {unknown}; expected names from {SEQUENCES}")
        self.root = require_dir(root, STB_SOURCE, "images/<seq>/ and labels/<seq>_BB.mat, <seq>_SK.mat")
        self.camera = camera
        self.K = SK_COLOUR_K if camera == "SK_color" else BB_K
        self.wrist = wrist
        self.mirror_left = mirror_left
        label_kind = "SK" if camera == "SK_color" else "BB"
        self.frames = []   # (sequence, frame index)
        joints = []
        for sequence in sequences:
            path = self.root / "labels" / f"{sequence}_{label_kind}.mat"
            hand_para = read_mat(path, STB_SOURCE, "handPara")
            if hand_para.ndim != 3 or hand_para.shape[:2] != (3, 21):
                raise ValueError(f"{path}: handPara has shape {hand_para.shape}, expected (3, 21, N)")
            sequence_joints = to_course_order(camera_joints(hand_para, camera), "stb")  # (N, 21, 3) m
            joints.append(palm_to_wrist(sequence_joints) if wrist else sequence_joints)
            self.frames += [(sequence, i) for i in range(hand_para.shape[2])]
        self.joints = np.concatenate(joints)   # (total, 21, 3) metres, course order

    def __len__(self) -> int:
        return len(self.frames)

    def image_path(self, index: int):
        """The image file of item ``index``: ``images/<seq>/<camera>_<frame>.png``."""
        sequence, frame = self.frames[index]
        return self.root / "images" / sequence / f"{self.camera}_{frame}.png"

    def __getitem__(self, index: int) -> dict:
        rgb = read_image(self.image_path(index), STB_SOURCE)
        keypoints_3d = self.joints[index]
        sample = make_sample(torch.from_numpy(rgb), project(keypoints_3d, self.K), self.K,
                             keypoints_3d=keypoints_3d, is_right=False)
        return mirror_sample(sample) if self.mirror_left else sample
