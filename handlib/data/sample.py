"""The one sample structure every dataset returns, synthetic or real.

A sample is a ``dict`` of tensors (so ``torch.utils.data.default_collate`` batches it) with
exactly these keys. A field a dataset does not have is filled with NaN (or zeros for
``mask``/``depth``) and its ``has_*`` flag is False, so batches of one dataset always collate,
and a loss can weight each sample by its flag (weak supervision).

============== ============ ======= ====================================================
key            shape        dtype   meaning
============== ============ ======= ====================================================
image          (3, H, W)    float32 RGB in [0, 1]
mask           (H, W)       float32 1 on the hand, 0 elsewhere
depth          (H, W)       float32 metres along z, 0 where there is no hand
keypoints_2d   (21, 2)      float32 pixels in ``image``, course order
keypoints_3d   (21, 3)      float32 metres, camera frame (OpenCV), course order
visibility     (21,)        float32 1 if the keypoint is visible (not occluded, in the image)
K              (3, 3)       float32 intrinsics of ``image`` (after any crop or resize)
pose           (48,)        float32 MANO axis-angle: 3 global + 45 finger, absolute (flat-hand
                                    mean, i.e. zero is the flat hand), camera frame
betas          (10,)        float32 MANO shape
is_right       ()           float32 1 for a right hand, 0 for a left one
has_3d         ()           bool    keypoints_3d is real
has_mask       ()           bool    mask is real
has_depth      ()           bool    depth is real
has_mano       ()           bool    pose and betas are real
============== ============ ======= ====================================================
"""
from __future__ import annotations

import math

import torch

SAMPLE_KEYS = ("image", "mask", "depth", "keypoints_2d", "keypoints_3d", "visibility", "K",
               "pose", "betas", "is_right", "has_3d", "has_mask", "has_depth", "has_mano")


def make_sample(image, keypoints_2d, K=None, *, mask=None, depth=None, keypoints_3d=None,
                visibility=None, pose=None, betas=None, is_right=True) -> dict:
    """Build a sample dict, filling absent fields and checking every shape.

    Args:
        image: (3, H, W) float in [0, 1], or (H, W, 3) uint8 (converted).
        keypoints_2d: (21, 2) pixels, course order.
        K: (3, 3) intrinsics, or None (NaN) when the dataset has no camera.
        mask, depth: (H, W) or None.
        keypoints_3d: (21, 3) metres, camera frame, or None.
        visibility: (21,) or None (all visible).
        pose: (48,) or None; betas: (10,) or None.
        is_right: bool.

    Returns:
        dict with the keys of ``SAMPLE_KEYS``.
    """
    image = torch.as_tensor(image)
    if image.ndim == 3 and image.shape[-1] == 3 and image.shape[0] != 3:
        image = image.permute(2, 0, 1)
    if image.dtype == torch.uint8:
        image = image.float() / 255.0
    if image.ndim != 3 or image.shape[0] != 3:
        raise ValueError(f"image: expected shape (3, H, W) or (H, W, 3), got {tuple(image.shape)}")
    height, width = image.shape[1:]

    def field(value, shape, name, fill=math.nan):
        if value is None:
            return torch.full(shape, fill, dtype=torch.float32), False
        value = torch.as_tensor(value, dtype=torch.float32)
        if tuple(value.shape) != shape:
            raise ValueError(f"{name}: expected shape {shape}, got {tuple(value.shape)}")
        return value, True

    mask, has_mask = field(mask, (height, width), "mask", 0.0)
    depth, has_depth = field(depth, (height, width), "depth", 0.0)
    keypoints_2d, _ = field(keypoints_2d, (21, 2), "keypoints_2d")
    keypoints_3d, has_3d = field(keypoints_3d, (21, 3), "keypoints_3d")
    visibility, _ = field(visibility, (21,), "visibility", 1.0)
    K, _ = field(K, (3, 3), "K")
    pose, has_pose = field(pose, (48,), "pose")
    betas, has_betas = field(betas, (10,), "betas")
    return {
        "image": image.float().contiguous(), "mask": mask, "depth": depth,
        "keypoints_2d": keypoints_2d, "keypoints_3d": keypoints_3d, "visibility": visibility, "K": K,
        "pose": pose, "betas": betas, "is_right": torch.tensor(float(bool(is_right))),
        "has_3d": torch.tensor(has_3d), "has_mask": torch.tensor(has_mask),
        "has_depth": torch.tensor(has_depth), "has_mano": torch.tensor(has_pose and has_betas),
    }
