"""Cropping and mirroring a sample while keeping the camera consistent.

A real image is large (224 to 1280 px) and the hand is a small part of it; the course's models
take a 128 x 128 crop around the hand. Cropping and resizing an image is an affine map of its
pixel coordinates, ``u' = s u + t_u``, ``v' = s v + t_v``, and the same map applied to K keeps the
projection exact: with ``A = [[s, 0, t_u], [0, s, t_v], [0, 0, 1]]``,

    u' ~ A K X   so   K' = A K,     keypoints_2d' = A keypoints_2d,     keypoints_3d unchanged.

With a crop box of left/top edges (x0, y0) and side S resized to ``size`` pixels,
``s = size / S`` and ``t = -s x0``: this is ``handlib.render.crop_intrinsics``, so a crop of a
real photo and a render with the cropped K agree pixel for pixel.

Mirroring an image left to right turns a left hand into a right hand (the course models right
hands only): ``u' = W - u`` in the image, ``x' = -x`` in the camera frame, and
``K'[0, 2] = W - cx`` (``K'[0, 1] = -K[0, 1]``) so that ``u' = fx x'/z + cx'`` still holds
(the maps themselves are in ``handlib.images``).

Pixel convention (the renderer's, ``handlib.render.camera``): pixel column j covers
``u`` in ``[j, j + 1)`` and its centre is ``u = j + 0.5``; a W-pixel-wide image covers ``[0, W]``.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from handlib.images import crop_padded, mirror_image, mirror_intrinsics, mirror_keypoints_2d, mirror_points_3d
from handlib.render.camera import crop_intrinsics, pixels_in_image


def _check_sample(sample: dict):
    missing = [key for key in ("image", "keypoints_2d", "K", "visibility") if key not in sample]
    if missing:
        raise ValueError(f"sample: missing keys {missing}; expected a dict from handlib.data.sample.make_sample")


def hand_box(sample: dict, margin: float = 0.2, min_side: float = 16.0) -> tuple[int, int, int]:
    """The square box a crop takes: around the visible 2D keypoints, else around the mask.

    Args:
        sample: a sample dict (``make_sample``).
        margin: fraction of the keypoints' extent added on each side (0.2 -> side = 1.4 x extent).
        min_side: smallest side in pixels (a single visible keypoint still gives a box).

    Returns:
        (x0, y0, side): integer left and top edges of the box (= column and row of its first
        pixel) and its side, in pixels. The box may reach outside the image; the crop pads
        there with zeros.
    """
    _check_sample(sample)
    points = sample["keypoints_2d"]
    finite = torch.isfinite(points).all(-1)
    chosen = finite & (sample["visibility"] > 0)
    if chosen.sum() < 2:
        chosen = finite
    if chosen.any():
        points = points[chosen]
    elif bool(sample.get("has_mask", False)) and sample["mask"].sum() > 0:
        rows, cols = torch.nonzero(sample["mask"] > 0.5, as_tuple=True)
        points = torch.stack([cols, rows], -1).float()
    else:
        raise ValueError("sample: no finite 2D keypoint and no mask, so there is no hand to crop around; "
                         "pass a sample with keypoints_2d or a mask")
    low, high = points.min(0).values, points.max(0).values
    centre = (low + high) / 2
    side = max(float((high - low).max()) * (1.0 + 2.0 * margin), min_side)
    side_px = int(math.ceil(side))
    x0 = int(round(float(centre[0]) - side_px / 2))
    y0 = int(round(float(centre[1]) - side_px / 2))
    return x0, y0, side_px


def crop_to_hand(sample: dict, size: int = 128, margin: float = 0.2, box: tuple | None = None) -> dict:
    """Crop a square around the hand, resize it to ``size`` x ``size``, and update K and keypoints_2d.

    The box is ``hand_box(sample, margin)`` unless given. The image is resampled with bilinear
    interpolation (antialiased when shrinking), the mask likewise and then thresholded at 0.5,
    the depth with nearest neighbours (so no depth is averaged with the background). Keypoints
    that fall outside the crop get visibility 0.

    Args:
        sample: a sample dict from ``make_sample`` (image (3, H, W), keypoints_2d (21, 2) px,
            K (3, 3), ...).
        size: side of the output image in pixels.
        margin: fraction of the keypoints' extent added on each side.
        box: optional (x0, y0, side) in pixels of the original image, as ``hand_box`` returns.

    Returns:
        A new sample dict: image (3, size, size), mask and depth (size, size), keypoints_2d and K
        in the crop's pixels; keypoints_3d, pose, betas and the flags unchanged.

    Example:
        >>> from handlib.data.sample import make_sample
        >>> sample = make_sample(torch.rand(3, 200, 300), torch.rand(21, 2) * 50 + 100, torch.eye(3))
        >>> crop_to_hand(sample, size=64)["image"].shape
        torch.Size([3, 64, 64])
    """
    _check_sample(sample)
    if int(size) != size or size < 1:
        raise ValueError(f"size: expected a positive integer number of pixels, got {size!r}")
    x0, y0, side = hand_box(sample, margin) if box is None else (int(box[0]), int(box[1]), int(box[2]))
    if side < 1:
        raise ValueError(f"box: expected a positive side, got {box!r}")
    scale = size / side

    def resize(image, mode):                                     # (C, side, side) -> (C, size, size)
        if mode == "bilinear":
            return F.interpolate(image[None], size=(size, size), mode="bilinear", align_corners=False,
                                 antialias=scale < 1)[0]
        return F.interpolate(image[None], size=(size, size), mode=mode)[0]

    out = dict(sample)
    out["image"] = resize(crop_padded(sample["image"], x0, y0, side), "bilinear").clamp(0, 1)
    mask = resize(crop_padded(sample["mask"][None], x0, y0, side), "bilinear")[0]
    out["mask"] = (mask > 0.5).float()
    out["depth"] = resize(crop_padded(sample["depth"][None], x0, y0, side), "nearest-exact")[0]
    # u' = s (u - x0), v' = s (v - y0): pixel edges map onto pixel edges, as in F.interpolate
    # with align_corners=False.
    keypoints = (sample["keypoints_2d"] - torch.tensor([float(x0), float(y0)])) * scale
    out["keypoints_2d"] = keypoints
    out["K"] = crop_intrinsics(sample["K"], (x0, y0, side), size)
    out["visibility"] = sample["visibility"] * pixels_in_image(keypoints, size).float()
    return out


def mirror_sample(sample: dict) -> dict:
    """Mirror a sample left to right: a left hand becomes a right hand and vice versa.

    ``u' = W - u``, ``x' = -x``, ``K'[0, 2] = W - K[0, 2]``, ``K'[0, 1] = -K[0, 1]``, so
    ``project_points(keypoints_3d', K')`` equals ``keypoints_2d'`` whenever it held before.
    A MANO pose is mirrored by negating the y and z components of every joint's axis-angle
    (the reflection ``diag(-1, 1, 1)`` conjugates each rotation); this maps a left-hand MANO
    pose to the matching right-hand pose.

    Args:
        sample: a sample dict (``make_sample``), image (3, H, W).

    Returns:
        A new sample dict with ``is_right`` flipped.
    """
    _check_sample(sample)
    width = sample["image"].shape[-1]
    out = dict(sample)
    for key in ("image", "mask", "depth"):
        out[key] = mirror_image(sample[key])
    out["keypoints_2d"] = mirror_keypoints_2d(sample["keypoints_2d"], width)
    out["keypoints_3d"] = mirror_points_3d(sample["keypoints_3d"])
    out["K"] = mirror_intrinsics(sample["K"], width)
    pose = sample["pose"].reshape(16, 3).clone()
    pose[:, 1:] = -pose[:, 1:]
    out["pose"] = pose.reshape(48)
    out["is_right"] = 1.0 - sample["is_right"]
    return out
