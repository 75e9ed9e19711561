"""Rotations, camera projection and Procrustes alignment: the geometry every chapter uses.

Conventions:
    * Rotation matrices act on column vectors: ``x' = R @ x``.
    * Axis-angle: a 3-vector whose direction is the axis and whose norm is the angle (radians).
    * Quaternions are (w, x, y, z), unit norm.
    * The 6D representation (Zhou et al., CVPR 2019) is the first two columns of R, stacked:
      ``(R[:, 0], R[:, 1])``.
    * Camera frame as OpenCV: x right, y down, z forward; intrinsics K is 3x3.

All functions are batched over any leading dimensions, differentiable, and free of NaN at zero
angle and at pi.
"""
from __future__ import annotations

import torch

_SMALL_ANGLE_SQUARED = 1e-8


def _check_last(x: torch.Tensor, size, name: str):
    expected = tuple(size) if isinstance(size, tuple) else (size,)
    if not isinstance(x, torch.Tensor):
        raise ValueError(f"{name}: expected a torch.Tensor, got {type(x).__name__}")
    if tuple(x.shape[-len(expected):]) != expected or x.ndim < len(expected):
        shape = "(..., " + ", ".join(map(str, expected)) + ")"
        raise ValueError(f"{name}: expected shape {shape}, got {tuple(x.shape)}")


def skew(vectors: torch.Tensor) -> torch.Tensor:
    """The cross-product matrix [v]x with [v]x @ u = v x u.

    Args:
        vectors: (..., 3).

    Returns:
        (..., 3, 3).
    """
    _check_last(vectors, 3, "vectors")
    x, y, z = vectors.unbind(-1)
    zero = torch.zeros_like(x)
    return torch.stack([zero, -z, y, z, zero, -x, -y, x, zero], dim=-1).reshape(*vectors.shape[:-1], 3, 3)


def axis_angle_to_matrix(axis_angle: torch.Tensor) -> torch.Tensor:
    """Rodrigues' formula: R = I + sin(t)/t [w]x + (1 - cos(t))/t^2 [w]x^2, with t = |w|.

    Near t = 0 the two coefficients use their Taylor series, so the value and the gradient are
    exact and finite at the identity.

    Args:
        axis_angle: (..., 3), radians.

    Returns:
        (..., 3, 3) rotation matrices.

    Example:
        >>> axis_angle_to_matrix(torch.tensor([0.0, 0.0, torch.pi / 2])).round(decimals=4)
        tensor([[ 0., -1.,  0.],
                [ 1.,  0.,  0.],
                [ 0.,  0.,  1.]])
    """
    _check_last(axis_angle, 3, "axis_angle")
    theta2 = (axis_angle * axis_angle).sum(-1, keepdim=True)[..., None]  # (..., 1, 1)
    small = theta2 < _SMALL_ANGLE_SQUARED
    theta = torch.sqrt(torch.where(small, torch.ones_like(theta2), theta2))
    a = torch.where(small, 1.0 - theta2 / 6.0, torch.sin(theta) / theta)
    b = torch.where(small, 0.5 - theta2 / 24.0, (1.0 - torch.cos(theta)) / (theta * theta))
    k = skew(axis_angle)
    eye = torch.eye(3, dtype=axis_angle.dtype, device=axis_angle.device).expand_as(k)
    return eye + a * k + b * (k @ k)


def axis_angle_to_quaternion(axis_angle: torch.Tensor) -> torch.Tensor:
    """q = (cos(t/2), sin(t/2) w/t).

    Args:
        axis_angle: (..., 3), radians.

    Returns:
        (..., 4) unit quaternions (w, x, y, z).
    """
    _check_last(axis_angle, 3, "axis_angle")
    theta2 = (axis_angle * axis_angle).sum(-1, keepdim=True)
    small = theta2 < _SMALL_ANGLE_SQUARED
    theta = torch.sqrt(torch.where(small, torch.ones_like(theta2), theta2))
    half_sinc = torch.where(small, 0.5 - theta2 / 48.0, torch.sin(theta / 2) / theta)
    w = torch.where(small, 1.0 - theta2 / 8.0, torch.cos(theta / 2))
    return torch.cat([w, half_sinc * axis_angle], dim=-1)


def quaternion_to_axis_angle(quaternion: torch.Tensor) -> torch.Tensor:
    """Inverse of ``axis_angle_to_quaternion``; returns angles in [0, pi].

    Args:
        quaternion: (..., 4), (w, x, y, z); need not be normalised.

    Returns:
        (..., 3) axis-angle.
    """
    _check_last(quaternion, 4, "quaternion")
    q = quaternion / quaternion.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    q = torch.where(q[..., :1] < 0, -q, q)  # the same rotation with w >= 0, so the angle is <= pi
    w, v = q[..., :1], q[..., 1:]
    sin2 = (v * v).sum(-1, keepdim=True)
    small = sin2 < _SMALL_ANGLE_SQUARED
    sin_half = torch.sqrt(torch.where(small, torch.ones_like(sin2), sin2))
    # angle / sin(angle / 2) with angle = 2 atan2(|v|, w); Taylor series near zero.
    factor = torch.where(small, 2.0 / w.clamp_min(1e-12) * (1.0 - sin2 / (3.0 * w * w).clamp_min(1e-12)),
                         2.0 * torch.atan2(sin_half, w) / sin_half)
    return factor * v


def quaternion_to_matrix(quaternion: torch.Tensor) -> torch.Tensor:
    """Rotation matrix of a quaternion (w, x, y, z); the quaternion is normalised first.

    Args:
        quaternion: (..., 4).

    Returns:
        (..., 3, 3).
    """
    _check_last(quaternion, 4, "quaternion")
    q = quaternion / quaternion.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    w, x, y, z = q.unbind(-1)
    matrix = torch.stack([
        1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y),
        2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x),
        2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y),
    ], dim=-1)
    return matrix.reshape(*q.shape[:-1], 3, 3)


def matrix_to_quaternion(matrix: torch.Tensor) -> torch.Tensor:
    """Quaternion (w, x, y, z) with w >= 0 of a rotation matrix.

    Four candidate formulas, one per largest diagonal term of 4 q q^T; the best-conditioned one
    is picked per matrix, so the result is stable at every angle, pi included.

    Args:
        matrix: (..., 3, 3).

    Returns:
        (..., 4).
    """
    _check_last(matrix, (3, 3), "matrix")
    m = matrix.reshape(*matrix.shape[:-2], 9)
    m00, m01, m02, m10, m11, m12, m20, m21, m22 = m.unbind(-1)
    # 4 q_i^2 for i = w, x, y, z
    q_abs_sq = torch.stack([1 + m00 + m11 + m22, 1 + m00 - m11 - m22,
                            1 - m00 + m11 - m22, 1 - m00 - m11 + m22], dim=-1)
    q_abs = torch.sqrt(q_abs_sq.clamp_min(1e-12))  # (..., 4) = 2 |q_i|
    candidates = torch.stack([
        torch.stack([q_abs_sq[..., 0], m21 - m12, m02 - m20, m10 - m01], dim=-1),
        torch.stack([m21 - m12, q_abs_sq[..., 1], m10 + m01, m02 + m20], dim=-1),
        torch.stack([m02 - m20, m10 + m01, q_abs_sq[..., 2], m12 + m21], dim=-1),
        torch.stack([m10 - m01, m20 + m02, m21 + m12, q_abs_sq[..., 3]], dim=-1),
    ], dim=-2) / (2.0 * q_abs[..., :, None])  # (..., 4 candidates, 4)
    best = q_abs.argmax(dim=-1)[..., None, None].expand(*q_abs.shape[:-1], 1, 4)
    q = candidates.gather(-2, best).squeeze(-2)
    q = torch.where(q[..., :1] < 0, -q, q)
    return q / q.norm(dim=-1, keepdim=True)


def standardize_quaternion(quaternion: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """q / |q|, with the sign chosen so that w >= 0 (q and -q are the same rotation).

    A network that outputs raw 4-vectors (Zhou et al.'s IKNet) returns them through this: the unit
    quaternion is the rotation, the norm is what its L_norm term pulls towards 1.

    Args:
        quaternion: (..., 4), (w, x, y, z), any norm.

    Returns:
        (unit (..., 4) with w >= 0, norm (...,) of the input).
    """
    _check_last(quaternion, 4, "quaternion")
    norm = quaternion.norm(dim=-1)
    unit = quaternion / norm[..., None].clamp_min(1e-12)
    return torch.where(unit[..., :1] < 0, -unit, unit), norm


def matrix_to_axis_angle(matrix: torch.Tensor) -> torch.Tensor:
    """Axis-angle (angle in [0, pi]) of a rotation matrix, through its quaternion.

    Args:
        matrix: (..., 3, 3).

    Returns:
        (..., 3).
    """
    return quaternion_to_axis_angle(matrix_to_quaternion(matrix))


def rotation_6d_to_matrix(rotation_6d: torch.Tensor) -> torch.Tensor:
    """Gram-Schmidt on two 3-vectors (Zhou et al., CVPR 2019): a continuous rotation parametrisation.

    Args:
        rotation_6d: (..., 6), the (unnormalised) first and second columns of R.

    Returns:
        (..., 3, 3) rotation matrices.
    """
    _check_last(rotation_6d, 6, "rotation_6d")
    a1, a2 = rotation_6d[..., :3], rotation_6d[..., 3:]
    b1 = torch.nn.functional.normalize(a1, dim=-1)
    b2 = torch.nn.functional.normalize(a2 - (b1 * a2).sum(-1, keepdim=True) * b1, dim=-1)
    b3 = torch.cross(b1, b2, dim=-1)
    return torch.stack([b1, b2, b3], dim=-1)


def matrix_to_rotation_6d(matrix: torch.Tensor) -> torch.Tensor:
    """The first two columns of R, stacked: (..., 3, 3) -> (..., 6)."""
    _check_last(matrix, (3, 3), "matrix")
    return torch.cat([matrix[..., :, 0], matrix[..., :, 1]], dim=-1)


def project_points(points: torch.Tensor, K: torch.Tensor) -> torch.Tensor:
    """Pinhole projection u = fx X/Z + cx, v = fy Y/Z + cy.

    Args:
        points: (..., N, 3), camera frame (OpenCV: z forward), any length unit.
        K: (..., 3, 3) intrinsics, broadcastable against ``points``' leading dimensions.

    Returns:
        (..., N, 2) pixel coordinates.

    Example:
        >>> K = torch.tensor([[100.0, 0, 64], [0, 100.0, 64], [0, 0, 1]])
        >>> project_points(torch.tensor([[0.1, -0.05, 0.5]]), K)
        tensor([[84., 54.]])
    """
    _check_last(points, 3, "points")
    _check_last(K, (3, 3), "K")
    projected = points @ K.transpose(-1, -2)  # (..., N, 3)
    depth = projected[..., 2:]
    depth = torch.where(depth.abs() < 1e-9, torch.full_like(depth, 1e-9), depth)
    return projected[..., :2] / depth


def unproject_points(pixels: torch.Tensor, depth: torch.Tensor, K: torch.Tensor) -> torch.Tensor:
    """Back-project pixels with known depth: X = Z K^-1 [u, v, 1].

    Args:
        pixels: (..., N, 2).
        depth: (..., N) depth z of each point.
        K: (..., 3, 3).

    Returns:
        (..., N, 3) camera-frame points.
    """
    _check_last(pixels, 2, "pixels")
    homogeneous = torch.cat([pixels, torch.ones_like(pixels[..., :1])], dim=-1)
    rays = homogeneous @ torch.linalg.inv(K).transpose(-1, -2)
    return rays * depth[..., None]


def solve_translation(points: torch.Tensor, pixels: torch.Tensor, K: torch.Tensor) -> torch.Tensor:
    """The translation T that puts root-relative points where they project onto ``pixels``.

    A point P = (X, Y, Z) moved to P + T projects to u = fx (X + Tx) / (Z + Tz) + cx (and v
    alike). Multiplying out the depth makes each keypoint give two equations LINEAR in T::

        fx (X + Tx) - (u - cx) (Z + Tz) = 0     i.e.   fx Tx - (u - cx) Tz = (u - cx) Z - fx X
        fy (Y + Ty) - (v - cy) (Z + Tz) = 0     i.e.   fy Ty - (v - cy) Tz = (v - cy) Z - fy Y

    so N points give a (2N x 3) least-squares problem A T = b, solved here in float64. It
    minimises this algebraic error, which is the pixel error weighted by the depth (Z + Tz) / f:
    for a hand whose depth extent is small next to its distance, nearly the reprojection error.
    With exact pixels the answer is exact. (A skew K[0, 1] is taken as zero.)

    Args:
        points: (..., N, 3) the shape to place, e.g. root-relative keypoints, metres, camera axes.
        pixels: (..., N, 2) where they are seen, pixels.
        K: (..., 3, 3) intrinsics, broadcastable against the leading dimensions.

    Returns:
        (..., 3) T, same unit as ``points``, in ``points``' dtype: ``points + T[..., None, :]`` is in
        the camera frame.

    Example:
        >>> K = torch.tensor([[500.0, 0, 64], [0, 500.0, 64], [0, 0, 1]])
        >>> points = torch.tensor([[0.0, 0, 0], [0.01, 0, 0], [0, 0.02, 0.01]])
        >>> T = torch.tensor([0.05, -0.02, 0.4])
        >>> solve_translation(points, project_points(points + T, K), K)
        tensor([ 0.0500, -0.0200,  0.4000])
    """
    _check_last(points, 3, "points")
    _check_last(pixels, 2, "pixels")
    _check_last(K, (3, 3), "K")
    if points.ndim < 2 or points.shape[:-1] != pixels.shape[:-1]:
        raise ValueError(f"points, pixels: expected shapes (..., N, 3) and (..., N, 2) with the same N, got "
                         f"{tuple(points.shape)} and {tuple(pixels.shape)}")
    P, uv, K = points.double(), pixels.double(), K.double()
    fx, fy = K[..., 0, 0, None], K[..., 1, 1, None]                    # (..., 1)
    du, dv = uv[..., 0] - K[..., 0, 2, None], uv[..., 1] - K[..., 1, 2, None]  # (..., N) u - cx, v - cy
    X, Y, Z = P.unbind(-1)
    zero = torch.zeros_like(du)
    fx, fy = fx.expand_as(du), fy.expand_as(dv)
    rows_u = torch.stack([fx, zero, -du], -1)                           # (..., N, 3)
    rows_v = torch.stack([zero, fy, -dv], -1)
    A = torch.cat([rows_u, rows_v], -2)                                 # (..., 2N, 3)
    b = torch.cat([du * Z - fx * X, dv * Z - fy * Y], -1)               # (..., 2N)
    T = torch.linalg.lstsq(A, b[..., None]).solution[..., 0]           # (..., 3)
    return T.to(points.dtype)


def procrustes(points: torch.Tensor, target: torch.Tensor, scale: bool = True,
               weights: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The similarity transform q ~ s R p + t that best matches ``points`` to ``target``.

    Solves min_{s, R, t} sum_i w_i |s R p_i + t - q_i|^2 with det(R) = +1 (Kabsch 1976 for R,
    Umeyama 1991 for s), per batch element: centre both sets on their weighted centroids, take
    the SVD of the weighted covariance, and flip the last axis if that would give a reflection.

    Args:
        points: (B, N, 3) points to move (e.g. predictions).
        target: (B, N, 3) points to match (e.g. ground truth).
        scale: estimate the scale s too (else s = 1: a rigid transform).
        weights: (B, N) non-negative weights, or None for all ones.

    Returns:
        s (B,), R (B, 3, 3), t (B, 3).
    """
    _check_last(points, 3, "points")
    if points.shape != target.shape or points.ndim != 3:
        raise ValueError(f"points, target: expected equal shapes (B, N, 3), got {tuple(points.shape)} "
                         f"and {tuple(target.shape)}")
    if weights is None:
        weights = torch.ones(points.shape[:2], dtype=points.dtype, device=points.device)
    elif not isinstance(weights, torch.Tensor) or weights.shape != points.shape[:2]:
        got = tuple(weights.shape) if isinstance(weights, torch.Tensor) else type(weights).__name__
        raise ValueError(f"weights: expected a tensor of shape {tuple(points.shape[:2])} (B, N), got {got}")
    w = (weights / weights.sum(1, keepdim=True).clamp_min(1e-12))[..., None]  # (B, N, 1), sums to 1
    mu_p, mu_q = (w * points).sum(1, keepdim=True), (w * target).sum(1, keepdim=True)  # (B, 1, 3)
    p, q = points - mu_p, target - mu_q
    covariance = (w * p).transpose(1, 2) @ q  # (B, 3, 3) = sum_i w_i p_i q_i^T
    u, sigma, vt = torch.linalg.svd(covariance)
    d = torch.sign(torch.linalg.det(vt.transpose(1, 2) @ u.transpose(1, 2)))
    correction = torch.stack([torch.ones_like(d), torch.ones_like(d), torch.where(d == 0, 1.0, d)], -1)  # (B, 3)
    rotation = vt.transpose(1, 2) @ torch.diag_embed(correction) @ u.transpose(1, 2)  # (B, 3, 3)
    if scale:
        s = (sigma * correction).sum(-1) / (w * p * p).sum((1, 2)).clamp_min(1e-12)
    else:
        s = torch.ones_like(sigma[:, 0])
    translation = mu_q[:, 0] - s[:, None] * (rotation @ mu_p[:, 0, :, None])[..., 0]
    return s, rotation, translation


def procrustes_align(points: torch.Tensor, target: torch.Tensor, scale: bool = True) -> torch.Tensor:
    """``points`` after the best similarity (or rigid, ``scale=False``) transform onto ``target``.

    This is FreiHAND's "aligned" protocol when ``scale=True``; see ``procrustes``.

    Args:
        points: (B, N, 3) predictions.
        target: (B, N, 3) ground truth.
        scale: estimate the scale too.

    Returns:
        (B, N, 3).
    """
    s, rotation, translation = procrustes(points, target, scale)
    return s[:, None, None] * points @ rotation.transpose(1, 2) + translation[:, None]
