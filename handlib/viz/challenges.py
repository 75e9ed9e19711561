"""Helpers for chapter 0 ("why is 3D hand pose estimation hard?"): small computations and pictures.

Each function belongs to one demo of ``notebooks/00_challenges.ipynb``: the notebook calls them
in a line or two, so the ideas stay visible and the plumbing stays here.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from handlib.skeleton import BONES, NUM_KEYPOINTS
from handlib.viz.plot2d import as_numpy, bone_colors, draw_keypoints_2d, show_image


def move_along_ray(keypoints_3d: torch.Tensor, joint: int, depth_change: float) -> torch.Tensor:
    """Slide one keypoint along its camera ray: its 2D projection does not change, its 3D position does.

    A point X projects to K X / Z; every point s X (s > 0) on the ray through X projects to the
    same pixel. Choosing s = (Z + dz) / Z moves the point ``dz`` metres deeper.

    Args:
        keypoints_3d: (21, 3) metres, camera frame.
        joint: index of the keypoint to move (course order).
        depth_change: dz in metres (positive: away from the camera).

    Returns:
        (21, 3) a copy with keypoint ``joint`` moved.
    """
    if keypoints_3d.shape != (21, 3):
        raise ValueError(f"keypoints_3d: expected shape (21, 3), got {tuple(keypoints_3d.shape)}")
    if not 0 <= joint < 21:
        raise ValueError(f"joint: expected a keypoint index in [0, 21), got {joint}")
    moved = keypoints_3d.clone()
    z = keypoints_3d[joint, 2]
    moved[joint] = keypoints_3d[joint] * (z + depth_change) / z
    return moved


def draw_skeleton_top_view(ax, keypoints_3d, *, alpha: float = 1.0, linestyle: str = "-", label: str | None = None):
    """Draw the skeleton seen from above: x (right) against z (depth), in millimetres.

    Args:
        ax: matplotlib Axes. keypoints_3d: (21, 3) metres, camera frame.
    """
    points = as_numpy(keypoints_3d, "keypoints_3d", (NUM_KEYPOINTS, 3)).astype(np.float64) * 1000.0
    for (parent, child), color in zip(BONES, bone_colors()):
        ax.plot(points[[parent, child], 0], points[[parent, child], 2], color=color, alpha=alpha, linestyle=linestyle)
    ax.plot([], [], color="grey", linestyle=linestyle, label=label)
    ax.set_xlabel("x (mm)")
    ax.set_ylabel("depth z (mm)")
    ax.set_aspect("equal", adjustable="datalim")
    return ax


def show_sample(ax, sample: dict, *, title: str | None = None, keypoints: bool = True, show_hidden: bool = True):
    """An image with its 2D keypoints (hidden ones hollow and dashed) on a matplotlib Axes."""
    show_image(ax, sample["image"])
    if keypoints:
        size = sample["image"].shape[-1]
        draw_keypoints_2d(ax, sample["keypoints_2d"], sample["visibility"], show_hidden=show_hidden,
                          markersize=max(2.0, size / 40), linewidth=max(0.8, size / 90))
    ax.set_xticks([])
    ax.set_yticks([])
    if title:
        ax.set_title(title, fontsize=9)
    return ax


def keypoint_patches(image: torch.Tensor, keypoints_2d: torch.Tensor, joints, half_size: int = 6) -> torch.Tensor:
    """Square patches of an image centred on some keypoints (zero outside the image).

    Args:
        image: (3, H, W) in [0, 1].
        keypoints_2d: (21, 2) pixels.
        joints: keypoint indices (course order).
        half_size: the patches are (2 half_size) pixels wide.

    Returns:
        (len(joints), 3, 2 half_size, 2 half_size).
    """
    side = 2 * half_size
    padded = torch.nn.functional.pad(image, (side, side, side, side))
    patches = []
    for j in joints:
        u, v = (int(np.floor(float(c))) for c in keypoints_2d[j])
        top, left = v - half_size + side, u - half_size + side
        top = min(max(top, 0), padded.shape[1] - side)
        left = min(max(left, 0), padded.shape[2] - side)
        patches.append(padded[:, top:top + side, left:left + side])
    return torch.stack(patches)


def patch_similarity(patches: torch.Tensor) -> torch.Tensor:
    """Normalised cross-correlation between every pair of patches: 1 = identical up to brightness and contrast.

    Args:
        patches: (N, C, h, w).

    Returns:
        (N, N) in [-1, 1].
    """
    flat = patches.flatten(1).double()
    flat = flat - flat.mean(1, keepdim=True)
    flat = flat / flat.norm(dim=1, keepdim=True).clamp_min(1e-9)
    return (flat @ flat.T).float()


def pose_space_variance(poses: torch.Tensor) -> torch.Tensor:
    """Fraction of the variance of a set of poses explained by the first k principal components.

    Args:
        poses: (N, D) finger poses (e.g. 45 axis-angle numbers per hand).

    Returns:
        (D,) cumulative explained variance, from k = 1 to D (ends at 1).
    """
    centred = poses.double() - poses.double().mean(0)
    singular = torch.linalg.svdvals(centred)
    variance = singular ** 2
    return (variance.cumsum(0) / variance.sum()).float()


def load_real_examples(realdata: Path | None = None, size: int = 128) -> list[tuple[str, str, dict]]:
    """The first real sample of each dataset in the repository's ``data/samples/``, cropped around
    the hand to ``size`` pixels, with left hands mirrored into right ones (what the course's
    networks, trained on right hands, expect).

    The samples come from ``handlib.data.samples.real_samples``, the one way to open them.

    Args:
        realdata: a folder in the layout of ``data/samples/``; default ``SAMPLES_DIR``.
        size: side of the crops, pixels.

    Returns:
        A list of (dataset name, licence, sample dict), one per dataset of ``REAL_DATASETS``;
        each sample has image (3, size, size) and keypoints_2d (21, 2) px in the crop.
    """
    from handlib.data.datasets import mirror_sample
    from handlib.data.samples import real_samples

    examples = {}
    for entry in real_samples(size, folder=realdata):
        if entry["dataset"] not in examples:
            sample = entry["sample"]
            examples[entry["dataset"]] = (entry["dataset"], entry["licence"],
                                          sample if sample["is_right"] else mirror_sample(sample))
    return list(examples.values())


__all__ = ["draw_skeleton_top_view", "keypoint_patches",
           "load_real_examples", "move_along_ray", "patch_similarity", "pose_space_variance", "show_sample"]
