"""An anatomical prior over hand poses: joint axes, joint limits, and a sampler of plausible poses.

MANO poses each of its 15 finger joints with a free 3-DoF axis-angle and knows nothing of
anatomy: a finger can bend backwards as easily as forwards. This module gives each joint an
anatomical frame, computed from the model's own rest joints, so it works for the open hand and
for an official MANO file alike:

* **twist** axis t: along the bone (from the joint to its child joint, or to the fingertip);
* **flexion** axis f = t x n, with n the palm normal (pointing out of the palm): a positive angle
  curls the finger towards the palm;
* **abduction** axis a = t x f: a positive angle moves the finger sideways, towards the thumb.

The thumb's joints use the palm normal turned about the thumb's bone by ``THUMB_PRONATION``
degrees (the thumb's pad faces the fingers, not the floor), so positive thumb flexion curls the
thumb across the palm.

A joint's **anatomical angles** (flexion, abduction, twist) are the components of its axis-angle
vector in that frame: ``axis_angle_k = flexion f_k + abduction a_k + twist t_k``. The conversion is
linear in both directions, exact, and differentiable, and for the moderate sideways angles of a
hand it agrees with the Euler angles of the joint to a few degrees.

On top of the frames:

* ``joint_limits()``: ranges of motion per joint and axis, from anthropometric data;
* ``HandPosePrior.limit_violation(pose)``: a differentiable penalty, zero inside the limits,
  usable as a prior loss when fitting;
* ``HandPosePrior.sample_poses(n, generator, kind)``: plausible hand poses from a mixture of grasp
  types with finger coupling (DIP ~ 2/3 PIP, neighbouring fingers correlated);
* ``HandPosePrior.sample_global_orientations(n, generator, palm)``: wrist rotations with the palm
  towards or away from an OpenCV camera.

Poses are MANO's 45 finger axis-angles, absolute (the flat-hand-mean convention: zero is the flat
hand), joints in MANO's order (index, middle, pinky, ring, thumb; three each, palm to tip).
"""
from __future__ import annotations

import math
from functools import lru_cache

import numpy as np
import torch

from handlib.geometry import quaternion_to_axis_angle, quaternion_to_matrix
from handlib.skeleton import MANO_JOINT_NAMES, MANO_PARENTS

AXIS_NAMES = ("flexion", "abduction", "twist")
JOINT_NAMES = MANO_JOINT_NAMES[1:]  # the 15 posed joints
THUMB_PRONATION = 75.0  # degrees the thumb's pad is turned from the palm towards the fingers

# Ranges of motion, degrees, (low, high) for (flexion, abduction, twist). Finger values follow
# the usual clinical ranges (e.g. Hume et al. 1990, J Hand Surg 15A; AAOS tables): MCP flexion
# about 90 with up to ~20 hyperextension, PIP 0..110, DIP 0..80 (a little hyperextension), MCP
# abduction about +-20; thumb CMC, MCP and IP from Kapandji's and Cooney's measurements, in the
# frames above. Twist is small everywhere but at the thumb's CMC (opposition).
LIMITS_DEGREES = {
    "mcp": ((-20.0, 90.0), (-20.0, 20.0), (-10.0, 10.0)),
    "pip": ((0.0, 110.0), (-6.0, 6.0), (-6.0, 6.0)),
    "dip": ((-5.0, 80.0), (-6.0, 6.0), (-6.0, 6.0)),
    "thumb_cmc": ((-20.0, 55.0), (-25.0, 40.0), (-20.0, 35.0)),
    "thumb_mcp": ((-10.0, 60.0), (-10.0, 10.0), (-10.0, 10.0)),
    "thumb_ip": ((-15.0, 80.0), (-6.0, 6.0), (-6.0, 6.0)),
}
JOINT_KINDS = ("mcp", "pip", "dip") * 4 + ("thumb_cmc", "thumb_mcp", "thumb_ip")
FINGER_SLICES = {"index": slice(0, 3), "middle": slice(3, 6), "pinky": slice(6, 9), "ring": slice(9, 12),
                 "thumb": slice(12, 15)}  # rows of the (15, 3) angle array
ACROSS = ("index", "middle", "ring", "pinky")  # radial to ulnar

# Grasp types: curl of each finger (index, middle, ring, pinky; 0 straight, 1 a full fist), spread
# (0 together, 1 fully spread), thumb (CMC flexion, CMC abduction, CMC twist, MCP flexion, IP
# flexion) in degrees. Each sample perturbs these with noise and couples the joints.
GRASPS = {
    "open": dict(curl=(0.02, 0.02, 0.02, 0.02), spread=None, thumb=(0, 10, 0, 5, 5)),
    "relaxed": dict(curl=(0.25, 0.3, 0.35, 0.4), spread=0.3, thumb=(15, 10, 5, 15, 15)),
    "fist": dict(curl=(0.95, 0.95, 0.95, 0.95), spread=0.0, thumb=(40, 5, 10, 45, 35)),
    "point": dict(curl=(0.03, 0.9, 0.95, 0.95), spread=0.1, thumb=(35, 0, 10, 40, 30)),
    "pinch": dict(curl=(0.45, 0.35, 0.35, 0.35), spread=0.2, thumb=(35, 25, 15, 20, 20)),
    "power": dict(curl=(0.6, 0.65, 0.7, 0.72), spread=0.0, thumb=(30, 30, 10, 20, 15)),
    "tripod": dict(curl=(0.45, 0.45, 0.75, 0.8), spread=0.1, thumb=(35, 25, 15, 25, 15)),
    "ok": dict(curl=(0.55, 0.08, 0.05, 0.05), spread=0.7, thumb=(35, 25, 15, 25, 30)),
    "victory": dict(curl=(0.02, 0.02, 0.95, 0.95), spread=1.0, thumb=(40, 5, 10, 45, 35)),
    "free": None,  # every joint uniform within its limits, with the coupling
}
KINDS = tuple(GRASPS) + ("mixture",)
PALM_SIDES = ("any", "towards", "away")


def joint_limits() -> np.ndarray:
    """Anatomical ranges of motion of MANO's 15 finger joints.

    Returns:
        (15, 3, 2) radians: [joint, (flexion, abduction, twist), (low, high)], joints in MANO's
        order (index1..3, middle1..3, pinky1..3, ring1..3, thumb1..3).
    """
    return np.deg2rad(np.array([LIMITS_DEGREES[kind] for kind in JOINT_KINDS]))


def _generator(generator) -> torch.Generator:
    if isinstance(generator, torch.Generator):
        return generator
    if generator is None or isinstance(generator, (int, np.integer)):
        return torch.Generator().manual_seed(0 if generator is None else int(generator))
    raise ValueError(f"generator: expected a torch.Generator, an int seed or None, got {type(generator).__name__}")


def _unit(v: np.ndarray) -> np.ndarray:
    return v / np.linalg.norm(v, axis=-1, keepdims=True)


def anatomical_frames(rest_joints, tips=None, is_right: bool = True) -> np.ndarray:
    """Each joint's anatomical axes, from the rest joints of a MANO-format model.

    Args:
        rest_joints: (16, 3) MANO's rest joints (metres), MANO's order.
        tips: (5, 3) fingertips (thumb, index, middle, ring, pinky), or None to extend the last
            bone of each finger instead.
        is_right: False for a left hand (the mirror image; the frames are mirrored so that the
            same angles give the mirrored pose).

    Returns:
        (15, 3, 3) float64: for each joint the rows (flexion, abduction, twist) axes, orthonormal.
    """
    joints = np.asarray(rest_joints, dtype=np.float64)
    if joints.shape != (16, 3):
        raise ValueError(f"rest_joints: expected shape (16, 3), got {joints.shape}")
    tip_points = None if tips is None else np.asarray(tips, dtype=np.float64)
    if tip_points is not None and tip_points.shape != (5, 3):
        raise ValueError(f"tips: expected shape (5, 3) (thumb, index, middle, ring, pinky), got {tip_points.shape}")
    mirror = np.array([-1.0, 1.0, 1.0])
    if not is_right:  # build the right hand's frames on the mirrored joints, then mirror them back
        joints = joints * mirror
        tip_points = None if tip_points is None else tip_points * mirror
    palm = _unit(np.cross(joints[1] - joints[0], joints[7] - joints[0]))  # out of the palm
    children = {parent: child for child, parent in enumerate(MANO_PARENTS) if parent > 0}
    tip_of = {3: 1, 6: 2, 9: 4, 12: 3, 15: 0}  # last joint -> row of ``tips`` (T, I, M, R, P)
    frames = np.zeros((15, 3, 3))
    for k in range(1, 16):
        if k in children:
            end = joints[children[k]]
        elif tip_points is not None:
            end = tip_points[tip_of[k]]
        else:
            end = 2 * joints[k] - joints[MANO_PARENTS[k]]
        twist = _unit(end - joints[k])
        normal = palm
        if k >= 13:  # the thumb: its pad faces the fingers
            side = _unit(np.cross(twist, palm))
            normal = math.cos(math.radians(THUMB_PRONATION)) * palm - math.sin(math.radians(THUMB_PRONATION)) * side
        flexion = _unit(np.cross(twist, normal))
        abduction = np.cross(twist, flexion)
        frames[k - 1] = np.stack([flexion, abduction, twist])
    if not is_right:
        # Axial vectors mirror as v -> -M v with M = diag(-1, 1, 1).
        frames = -frames * mirror
    return frames


class HandPosePrior:
    """Joint frames, limits and samplers for one hand model.

    Args:
        rest_joints: (16, 3) rest joints of the model, metres.
        tips: (5, 3) rest fingertips (thumb, index, middle, ring, pinky) or None.
        is_right: whether the model is a right hand.

    Example:
        >>> prior = HandPosePrior.from_model()            # doctest: +SKIP
        >>> poses = prior.sample_poses(8, generator=0)      # doctest: +SKIP
        >>> poses.shape, float(prior.limit_violation(poses).max()) == 0.0   # doctest: +SKIP
        (torch.Size([8, 45]), True)
    """

    def __init__(self, rest_joints, tips=None, is_right: bool = True):
        self.is_right = is_right
        frames = anatomical_frames(rest_joints, tips, is_right)
        self.frames = torch.as_tensor(frames, dtype=torch.float32)  # (15, 3, 3) rows f, a, t
        self.limits = torch.as_tensor(joint_limits(), dtype=torch.float32)  # (15, 3, 2)
        joints = np.asarray(rest_joints, dtype=np.float64)
        palm = np.cross(joints[1] - joints[0], joints[7] - joints[0]) * (1.0 if is_right else -1.0)
        self.palm_normal = torch.as_tensor(_unit(palm), dtype=torch.float32)  # (3,) out of the palm

    @classmethod
    def from_model(cls, model=None) -> "HandPosePrior":
        """The prior of a MANO-format model: a ManoModel, a path, or None for the default model."""
        from handlib.mano.io import ManoModel, load_mano
        from handlib.mano.layer import default_model_path

        if not isinstance(model, ManoModel):
            model = load_mano(default_model_path() if model is None else model)
        rest = model.J_regressor @ model.v_template
        return cls(rest, model.v_template[model.fingertip_vertex_ids], model.is_right)

    # --------------------------------------------------------------------------------------------
    # Conversions

    def to_axis_angle(self, angles: torch.Tensor) -> torch.Tensor:
        """Anatomical angles -> MANO's finger pose.

        Args:
            angles: (B, 15, 3) radians, (flexion, abduction, twist) per joint.

        Returns:
            (B, 45) axis-angle, absolute (flat hand = 0).
        """
        if angles.ndim != 3 or angles.shape[1:] != (15, 3):
            raise ValueError(f"angles: expected shape (B, 15, 3), got {tuple(angles.shape)}")
        frames = self.frames.to(angles)
        return torch.einsum("bja,jad->bjd", angles, frames).flatten(1)

    def to_anatomical(self, pose: torch.Tensor) -> torch.Tensor:
        """MANO's finger pose -> anatomical angles (the inverse of ``to_axis_angle``).

        Args:
            pose: (B, 45) axis-angle, absolute (flat hand = 0).

        Returns:
            (B, 15, 3) radians, (flexion, abduction, twist) per joint.
        """
        if pose.ndim != 2 or pose.shape[1] != 45:
            raise ValueError(f"pose: expected shape (B, 45) (absolute finger axis-angles), got {tuple(pose.shape)}")
        return torch.einsum("bjd,jad->bja", pose.unflatten(1, (15, 3)), self.frames.to(pose))

    def limit_violation(self, pose: torch.Tensor) -> torch.Tensor:
        """How far a pose lies outside the joint limits: sum of squared excess angles (rad^2).

        Zero inside the limits, smooth, so it can be added to a fitting loss.

        Args:
            pose: (B, 45) absolute finger axis-angles.

        Returns:
            (B,) penalty.
        """
        angles = self.to_anatomical(pose)
        limits = self.limits.to(angles)
        below = torch.relu(limits[..., 0] - angles)
        above = torch.relu(angles - limits[..., 1])
        return (below.square() + above.square()).sum((1, 2))

    def clamp(self, pose: torch.Tensor) -> torch.Tensor:
        """Project a pose into the joint limits (anatomical angles clipped). (B, 45) -> (B, 45)."""
        angles = self.to_anatomical(pose)
        limits = self.limits.to(angles)
        return self.to_axis_angle(torch.maximum(torch.minimum(angles, limits[..., 1]), limits[..., 0]))

    # --------------------------------------------------------------------------------------------
    # Sampling

    def sample_angles(self, n: int, generator=None, kind: str = "mixture") -> tuple[torch.Tensor, list[str]]:
        """Plausible anatomical angles: see ``sample_poses``. Returns (n, 15, 3) radians and the
        grasp type of each sample."""
        if kind not in KINDS:
            raise ValueError(f"kind: expected one of {', '.join(KINDS)}, got {kind!r}")
        if n < 1:
            raise ValueError(f"n: expected a positive number of samples, got {n}")
        g = _generator(generator)
        names = [name for name in GRASPS]
        if kind == "mixture":
            picks = torch.randint(len(names), (n,), generator=g).tolist()
            kinds = [names[i] for i in picks]
        else:
            kinds = [kind] * n
        deg = math.pi / 180.0

        def normal(*shape):
            return torch.randn(*shape, generator=g, dtype=torch.float64)

        def uniform(*shape):
            return torch.rand(*shape, generator=g, dtype=torch.float64)

        # Finger curls, coupled: one shared offset, plus noise smoothed across neighbours.
        curl = torch.zeros(n, 4, dtype=torch.float64)
        spread = torch.zeros(n, dtype=torch.float64)
        thumb = torch.zeros(n, 5, dtype=torch.float64)
        free = torch.tensor([k == "free" for k in kinds])
        for i, name in enumerate(kinds):
            grasp = GRASPS[name]
            if grasp is None:
                continue
            curl[i] = torch.tensor(grasp["curl"], dtype=torch.float64)
            spread[i] = float("nan") if grasp["spread"] is None else grasp["spread"]
            thumb[i] = torch.tensor(grasp["thumb"], dtype=torch.float64)
        spread = torch.where(torch.isnan(spread), uniform(n), spread)
        raw = normal(n, 4)
        neighbours = torch.stack([raw[:, 0] + 0.6 * raw[:, 1], raw[:, 1] + 0.4 * (raw[:, 0] + raw[:, 2]),
                                  raw[:, 2] + 0.4 * (raw[:, 1] + raw[:, 3]), raw[:, 3] + 0.6 * raw[:, 2]], 1)
        curl = curl + 0.06 * normal(n, 1) + 0.05 * neighbours
        # Free poses: each finger's curl uniform, still correlated with its neighbours.
        free_curl = uniform(n, 4)
        free_curl = 0.5 * free_curl + 0.25 * (free_curl.roll(1, 1) + free_curl.roll(-1, 1))
        curl = torch.where(free[:, None], 1.2 * free_curl - 0.1, curl).clamp(-0.15, 1.05)
        spread = (spread + 0.15 * normal(n)).clamp(-0.3, 1.2)

        angles = torch.zeros(n, 15, 3, dtype=torch.float64)
        spread_degrees = {"index": 12.0, "middle": 2.0, "ring": -8.0, "pinky": -16.0}
        for f, finger in enumerate(ACROSS):
            rows = FINGER_SLICES[finger]
            c = curl[:, f]
            mcp_share = (1.0 + 0.25 * normal(n)).clamp(0.4, 1.6)  # hook vs table-top grips
            mcp = (88.0 * c * mcp_share).clamp(max=95.0) + 5.0 * normal(n)
            pip = 105.0 * c * (2.0 - mcp_share).clamp(0.5, 1.5) + 6.0 * normal(n)
            dip = 2.0 / 3.0 * pip + 5.0 * normal(n)  # the DIP follows the PIP (shared tendon)
            abduction = (spread_degrees[finger] * spread * (1.0 - c.clamp(0, 1))) + 3.0 * normal(n)
            block = angles[:, rows]
            block[:, 0, 0], block[:, 1, 0], block[:, 2, 0] = mcp * deg, pip * deg, dip * deg
            block[:, 0, 1] = abduction * deg
            block[:, :, 2] = 2.0 * deg * normal(n, 3)
            block[:, 1:, 1] = 1.5 * deg * normal(n, 2)
            angles[:, rows] = block
        rows = FINGER_SLICES["thumb"]
        free_thumb = torch.stack([uniform(n) * 60 - 10, uniform(n) * 50 - 10, uniform(n) * 40 - 10,
                                  uniform(n) * 60, uniform(n) * 70], 1)
        thumb = torch.where(free[:, None], free_thumb, thumb) + normal(n, 5) * torch.tensor(
            [7.0, 7.0, 5.0, 8.0, 8.0], dtype=torch.float64)
        angles[:, rows.start, 0] = thumb[:, 0] * deg
        angles[:, rows.start, 1] = thumb[:, 1] * deg
        angles[:, rows.start, 2] = thumb[:, 2] * deg
        angles[:, rows.start + 1, 0] = thumb[:, 3] * deg
        angles[:, rows.start + 2, 0] = thumb[:, 4] * deg
        angles[:, rows.start + 1:, 1:] = 2.0 * deg * normal(n, 2, 2)
        limits = self.limits.to(torch.float64)
        angles = torch.maximum(torch.minimum(angles, limits[..., 1]), limits[..., 0])
        return angles.float(), kinds

    def sample_poses(self, n: int, generator=None, kind: str = "mixture") -> torch.Tensor:
        """Plausible hand poses: a mixture of grasp types, with noise, finger coupling and limits.

        Args:
            n: number of poses.
            generator: a torch.Generator, an int seed, or None (seed 0). Same seed, same poses.
            kind: one of ``GRASPS`` ("open", "relaxed", "fist", "point", "pinch", "power",
                "tripod", "ok", "victory", "free") or "mixture" (each sample picks one uniformly).

        Returns:
            (n, 45) float32 absolute finger axis-angles (flat hand = 0), inside the joint limits.
        """
        angles, _ = self.sample_angles(n, generator, kind)
        return self.to_axis_angle(angles)

    def sample_global_orientations(self, n: int, generator=None, palm: str = "any") -> torch.Tensor:
        """Random wrist rotations for an OpenCV camera (x right, y down, looking along +z).

        Args:
            n: number of rotations.
            generator: a torch.Generator, an int seed, or None (seed 0).
            palm: "any" (uniform over all rotations), "towards" (the palm faces the camera: the
                rotated palm normal has z < -0.3) or "away" (the back of the hand faces it, z > 0.3).

        Returns:
            (n, 3) float32 axis-angle of the global rotation.
        """
        if palm not in PALM_SIDES:
            raise ValueError(f"palm: expected one of {', '.join(PALM_SIDES)}, got {palm!r}")
        g = _generator(generator)
        kept = []
        count = 0
        while count < n:
            q = torch.randn(2 * n + 8, 4, generator=g, dtype=torch.float64)
            q = q / q.norm(dim=-1, keepdim=True)  # uniform over rotations
            q = q * torch.where(q[:, :1] < 0, -1.0, 1.0)
            normal_z = (quaternion_to_matrix(q) @ self.palm_normal.to(q))[:, 2]
            if palm == "towards":
                q = q[normal_z < -0.3]
            elif palm == "away":
                q = q[normal_z > 0.3]
            kept.append(q)
            count += len(q)
        return quaternion_to_axis_angle(torch.cat(kept)[:n]).float()


@lru_cache(maxsize=1)
def default_prior() -> HandPosePrior:
    """The prior of the default hand model (``handlib.mano.default_model_path()``), built once."""
    return HandPosePrior.from_model()


def sample_poses(n: int, generator=None, kind: str = "mixture", prior: HandPosePrior | None = None) -> torch.Tensor:
    """``HandPosePrior.sample_poses`` of ``prior`` (default: the default model's). (n, 45) radians."""
    return (prior or default_prior()).sample_poses(n, generator, kind)

