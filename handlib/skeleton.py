"""The 21 hand keypoints, their bones, and the keypoint orders of the common datasets.

The course uses one order everywhere (OpenPose / FreiHAND / MediaPipe)::

    0 wrist
    1-4   thumb   CMC, MCP, IP, tip
    5-8   index   MCP, PIP, DIP, tip
    9-12  middle  MCP, PIP, DIP, tip
    13-16 ring    MCP, PIP, DIP, tip
    17-20 pinky   MCP, PIP, DIP, tip

Each dataset stores its keypoints in an order of its own. A map ``m`` converts a source order
to the course order by indexing: ``course = source[..., m, :]``, so ``m[i]`` is the source index
that lands in course slot ``i``. This file is the only place that knows these orders.

MANO itself has 16 joints in its own kinematic order (wrist, then index, middle, pinky, ring,
thumb, three joints each, palm to tip); the 5 fingertips are not joints but vertices of the mesh.
"""
from __future__ import annotations

import numpy as np
import torch

NUM_KEYPOINTS = 21
FINGERS = ("thumb", "index", "middle", "ring", "pinky")

KEYPOINT_NAMES = ("wrist",) + tuple(
    f"{finger}_{part}"
    for finger, parts in zip(FINGERS, [("cmc", "mcp", "ip", "tip")] + [("mcp", "pip", "dip", "tip")] * 4)
    for part in parts
)

# Parent of each keypoint in the course order (-1 for the root, the wrist).
PARENTS = (-1, 0, 1, 2, 3, 0, 5, 6, 7, 0, 9, 10, 11, 0, 13, 14, 15, 0, 17, 18, 19)
# The 20 bones as (parent, child) pairs, finger by finger, palm to tip.
BONES = tuple((parent, child) for child, parent in enumerate(PARENTS) if parent >= 0)
# Keypoint indices of each finger, base to tip.
FINGER_KEYPOINTS = {finger: tuple(range(1 + 4 * f, 5 + 4 * f)) for f, finger in enumerate(FINGERS)}
FINGERTIPS = (4, 8, 12, 16, 20)
WRIST, MIDDLE_MCP, MIDDLE_PIP = 0, 9, 10
# The palm: the wrist and the five finger bases (thumb CMC, four MCPs), which move rigidly with the wrist.
PALM = (WRIST,) + tuple(j for j, parent in enumerate(PARENTS) if parent == WRIST)
# The scale reference of Zimmermann & Brox and Ge et al.: the middle finger's MCP -> PIP bone.
SCALE_BONE = (MIDDLE_MCP, MIDDLE_PIP)

# MANO's 16 joints, in the order of the model file (kintree_table), and their parents.
MANO_JOINT_NAMES = (
    "wrist",
    "index1", "index2", "index3",
    "middle1", "middle2", "middle3",
    "pinky1", "pinky2", "pinky3",
    "ring1", "ring2", "ring3",
    "thumb1", "thumb2", "thumb3",
)
MANO_PARENTS = (-1, 0, 1, 2, 0, 4, 5, 0, 7, 8, 0, 10, 11, 0, 13, 14)
NUM_MANO_JOINTS = 16
# Fingertip vertex ids of the official right MANO mesh as smplx uses them (thumb, index, middle,
# ring, pinky). The open hand model puts its fingertips at the same ids.
MANO_FINGERTIP_VERTEX_IDS = (744, 320, 443, 554, 671)

# Maps from each source order to the course order: course = source[..., MAP, :].
ORDER_MAPS = {
    "course": tuple(range(21)),
    "openpose": tuple(range(21)),
    "freihand": tuple(range(21)),
    "mediapipe": tuple(range(21)),
    # MANO's 16 joints followed by the 5 tips as (thumb, index, middle, ring, pinky).
    "mano": (0, 13, 14, 15, 16, 1, 2, 3, 17, 4, 5, 6, 18, 10, 11, 12, 19, 7, 8, 9, 20),
    # RHD: wrist, then each finger tip -> base (thumb, index, middle, ring, pinky).
    "rhd": (0, 4, 3, 2, 1, 8, 7, 6, 5, 12, 11, 10, 9, 16, 15, 14, 13, 20, 19, 18, 17),
    # STB: palm centre (not the wrist!), then pinky, ring, middle, index, thumb, base -> tip.
    "stb": (0, 17, 18, 19, 20, 13, 14, 15, 16, 9, 10, 11, 12, 5, 6, 7, 8, 1, 2, 3, 4),
    # InterHand2.6M, one hand: thumb tip -> CMC, index tip -> MCP, ..., pinky, then the wrist last.
    "interhand": (20, 3, 2, 1, 0, 7, 6, 5, 4, 11, 10, 9, 8, 15, 14, 13, 12, 19, 18, 17, 16),
}
ORDERS = tuple(ORDER_MAPS)


def _order_map(order: str) -> list[int]:
    if order not in ORDER_MAPS:
        raise ValueError(f"order: unknown keypoint order {order!r}; expected one of {', '.join(ORDERS)}")
    return list(ORDER_MAPS[order])


def _check_keypoints(keypoints, name: str = "keypoints"):
    if keypoints.ndim < 2 or keypoints.shape[-2] != NUM_KEYPOINTS:
        raise ValueError(f"{name}: expected shape (..., 21, D), got {tuple(keypoints.shape)}")


def to_course_order(keypoints, order: str):
    """Reorder keypoints from a dataset's order to the course order.

    Args:
        keypoints: array or tensor of shape (..., 21, D) in ``order``.
        order: one of ``ORDERS`` ("rhd", "stb", "mano", "interhand", "freihand", ...).

    Returns:
        Same type and shape, in the course (OpenPose) order.

    Example:
        >>> rhd = np.arange(21)[:, None]
        >>> to_course_order(rhd, "rhd")[1:5, 0].tolist()   # thumb CMC..tip = RHD 4,3,2,1
        [4, 3, 2, 1]
    """
    _check_keypoints(keypoints)
    return keypoints[..., _order_map(order), :]


def from_course_order(keypoints, order: str):
    """Reorder keypoints from the course order to a dataset's order (the inverse of ``to_course_order``).

    Args:
        keypoints: array or tensor of shape (..., 21, D) in the course order.
        order: one of ``ORDERS``.

    Returns:
        Same type and shape, in ``order``.
    """
    _check_keypoints(keypoints)
    inverse = np.argsort(_order_map(order)).tolist()
    return keypoints[..., inverse, :]


def palm_to_wrist(keypoints):
    """Replace STB's palm-centre root by a synthesised wrist, as Zimmermann & Brox and Ge et al. do.

    ``wrist = ring_MCP + 2 * (palm - ring_MCP)``; STB stores the palm centre where other datasets
    store the wrist, and comparing one with the other is a systematic error (hand3d#44).

    Args:
        keypoints: (..., 21, 3) in the course order whose slot 0 holds the palm centre.

    Returns:
        A copy with slot 0 replaced by the synthesised wrist.
    """
    _check_keypoints(keypoints)
    out = keypoints.clone() if isinstance(keypoints, torch.Tensor) else np.array(keypoints, copy=True)
    ring_mcp = keypoints[..., 13, :]
    out[..., 0, :] = ring_mcp + 2.0 * (keypoints[..., 0, :] - ring_mcp)
    return out


def bone_lengths(keypoints):
    """Lengths of the 20 bones.

    Args:
        keypoints: tensor (..., 21, 3) in the course order.

    Returns:
        Tensor (..., 20), in the units of ``keypoints``, in the order of ``BONES``.
    """
    _check_keypoints(keypoints)
    parents = [p for p, _ in BONES]
    children = [c for _, c in BONES]
    return (keypoints[..., children, :] - keypoints[..., parents, :]).norm(dim=-1)
