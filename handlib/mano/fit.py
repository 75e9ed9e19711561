"""Fitting the hand model to keypoints: find the pose, shape and placement whose joints match.

Given 21 observed keypoints, find finger pose theta, shape beta, global rotation R and
translation t of the hand model M(theta, beta) by minimising

    E = E_data + lambda_pose E_pose(theta) + lambda_limits E_limits(theta) + lambda_shape |beta|^2

with gradient descent (Adam, or L-BFGS). The data term compares the model's 21 joints
J_i = R (J_i(theta, beta) - J_wrist) + J_wrist + t with the observation:

    3D keypoints X_i (metres):     E_data = sum_i v_i |J_i - X_i|^2 / (sigma_3d^2 sum_i v_i)
    2D keypoints x_i (pixels), K:  E_data = sum_i v_i |pi(K J_i) - x_i|^2 / (sigma_2d^2 sum_i v_i)

with v_i the visibility. The priors keep the answer a hand: an L2 on the PCA coefficients (or on
the axis-angles), the joint-limit penalty of ``handlib.mano.prior`` (when it exists), and an L2
on beta (MANO's shape space is a unit Gaussian).

Gradient descent needs a good start, because the energy is not convex in the rotation:

* 3D: the palm (wrist, thumb CMC, four MCPs) does not move with the fingers, so the rotation
  that best maps the rest hand's palm onto the observed palm (Kabsch / Procrustes) is already
  the global rotation, and the translation follows from the centroids.
* 2D: the depth follows from the palm's size in pixels and the focal length (z = f L / l); the
  rotation is not observable in closed form from a nearly planar palm (the mirror ambiguity of
  planar pose), so a few rigid fits of the palm start from seeded random rotations and the best
  one wins.

This "2D fit" is the optimisation baseline that the learned methods of later chapters are
compared against (Boukhayma et al. 2019, Table 1, column "2D fit").
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from handlib.geometry import (axis_angle_to_matrix, matrix_to_axis_angle, matrix_to_rotation_6d,
                              project_points, rotation_6d_to_matrix)
from handlib.mano.layer import HandOutput, ManoLayer
from handlib.skeleton import NUM_KEYPOINTS

# The keypoints that move rigidly with the wrist: wrist, thumb CMC and the four MCPs (course order).
PALM_KEYPOINTS = (0, 1, 5, 9, 13, 17)
OPTIMIZERS = ("adam", "lbfgs")
ROTATIONS = ("6d", "axis_angle")


@dataclass
class FitResult:
    """The fitted parameters, what the hand model makes of them, and how well they fit.

    Pass ``hand_pose``, ``betas``, ``global_orient`` and ``transl`` to the same layer to get
    ``output`` again.

    Attributes:
        hand_pose: (B, P) finger pose in the layer's space (P = num_pca_comps, or 45 axis-angle).
        betas: (B, K) shape coefficients.
        global_orient: (B, 3) axis-angle of the wrist, radians.
        transl: (B, 3) translation, metres.
        output: HandOutput of the layer at the fitted parameters.
        loss_history: (steps,) numpy array, the total energy (mean over the batch) at each step.
        keypoint_error_3d: (B,) mean distance between fitted and observed 3D keypoints over the
            visible ones, metres (3D fits; None for 2D fits, whose depth is not observed).
        reprojection_error_2d: (B,) mean distance between projected fitted keypoints and
            observed 2D keypoints over the visible ones, pixels (2D fits; None for 3D fits).
    """

    hand_pose: torch.Tensor
    betas: torch.Tensor
    global_orient: torch.Tensor
    transl: torch.Tensor
    output: HandOutput
    loss_history: np.ndarray
    keypoint_error_3d: torch.Tensor | None = None
    reprojection_error_2d: torch.Tensor | None = None


# -------------------------------------------------------------------------------------------------
# Input checks


def _check_layer(layer):
    if not isinstance(layer, ManoLayer):
        raise ValueError(f"layer: expected a handlib.mano.ManoLayer, got {type(layer).__name__}; "
                         "build one with ManoLayer() or ManoLayer(num_pca_comps=...)")


def _check_keypoints(keypoints, dim: int, name: str, unit: str) -> torch.Tensor:
    if not isinstance(keypoints, torch.Tensor):
        raise ValueError(f"{name}: expected a torch.Tensor of shape (B, 21, {dim}) in {unit}, "
                         f"got {type(keypoints).__name__}; convert with torch.as_tensor(x, dtype=torch.float32)")
    if keypoints.ndim != 3 or keypoints.shape[1:] != (NUM_KEYPOINTS, dim):
        hint = " (add a batch dimension with x[None])" if keypoints.shape == (NUM_KEYPOINTS, dim) else ""
        raise ValueError(f"{name}: expected shape (B, 21, {dim}) in {unit}, got {tuple(keypoints.shape)}{hint}")
    if not keypoints.is_floating_point():
        raise ValueError(f"{name}: expected a floating-point tensor, got {keypoints.dtype}")
    return keypoints.detach().float()


def _check_visibility(visibility, batch: int) -> torch.Tensor:
    if visibility is None:
        return torch.ones(batch, NUM_KEYPOINTS)
    visibility = torch.as_tensor(visibility)
    if visibility.shape != (batch, NUM_KEYPOINTS):
        raise ValueError(f"visibility: expected shape ({batch}, 21) (1 visible, 0 not), got {tuple(visibility.shape)}")
    visibility = visibility.detach().float()
    if (visibility.sum(1) < 3).any():
        raise ValueError("visibility: every hand needs at least 3 visible keypoints to be fitted; "
                         f"got {visibility.sum(1).int().tolist()} visible")
    return visibility


def _check_options(optimizer: str, rotation: str, steps: int):
    if optimizer not in OPTIMIZERS:
        raise ValueError(f"optimizer: expected one of {OPTIMIZERS}, got {optimizer!r}")
    if rotation not in ROTATIONS:
        raise ValueError(f"rotation: expected one of {ROTATIONS}, got {rotation!r}")
    if not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps: expected a positive int, got {steps!r}")


# -------------------------------------------------------------------------------------------------
# Initialisation


def kabsch_rotation(source: torch.Tensor, target: torch.Tensor, weights: torch.Tensor | None = None) -> torch.Tensor:
    """The rotation R minimising sum_i w_i |R (s_i - s_mean) - (t_i - t_mean)|^2 (Kabsch 1976).

    The centroids are the weighted means. ``geometry.procrustes_align`` applies the same
    alignment; this returns the rotation itself, which a fit needs as its starting point.

    Args:
        source: (B, N, 3) points to rotate.
        target: (B, N, 3) points to match.
        weights: (B, N) non-negative weights, or None for all ones.

    Returns:
        (B, 3, 3) rotation matrices, det = +1.
    """
    if source.shape != target.shape or source.ndim != 3 or source.shape[-1] != 3:
        raise ValueError(f"source, target: expected equal shapes (B, N, 3), got {tuple(source.shape)} "
                         f"and {tuple(target.shape)}")
    weights = torch.ones(source.shape[:2], dtype=source.dtype) if weights is None else weights
    w = (weights / weights.sum(1, keepdim=True).clamp_min(1e-12))[..., None]  # (B, N, 1)
    s = source - (w * source).sum(1, keepdim=True)
    t = target - (w * target).sum(1, keepdim=True)
    covariance = (w * s).transpose(1, 2) @ t  # (B, 3, 3): sum_i w_i s_i t_i^T
    u, _, vt = torch.linalg.svd(covariance)
    d = torch.sign(torch.linalg.det(vt.transpose(1, 2) @ u.transpose(1, 2)))
    d = torch.where(d == 0, torch.ones_like(d), d)
    correction = torch.diag_embed(torch.stack([torch.ones_like(d), torch.ones_like(d), d], dim=-1))
    return vt.transpose(1, 2) @ correction @ u.transpose(1, 2)


def _rest_joints(layer: ManoLayer, batch: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The 21 joints (B, 21, 3) and the wrist (B, 3) of the mean-shape hand in its zero pose."""
    with torch.no_grad():
        rest = layer(betas=torch.zeros(batch, layer.num_betas))
    return rest.joints, rest.mano_joints[:, 0]


def _init_weights(visibility: torch.Tensor) -> torch.Tensor:
    """Weights for the rigid initialisation: the visible palm keypoints, or every visible keypoint
    for hands with fewer than 3 of them."""
    palm = torch.zeros(NUM_KEYPOINTS)
    palm[list(PALM_KEYPOINTS)] = 1.0
    weights = visibility * palm
    too_few = (weights > 0).sum(1, keepdim=True) < 3
    return torch.where(too_few, visibility, weights)


def _rigid_apply(points: torch.Tensor, rotation: torch.Tensor, wrist: torch.Tensor, transl: torch.Tensor):
    """x -> R (x - wrist) + wrist + t: what ``global_orient`` and ``transl`` do in the layer."""
    return (points - wrist[:, None]) @ rotation.transpose(1, 2) + wrist[:, None] + transl[:, None]


def init_from_keypoints_3d(layer: ManoLayer, keypoints_3d: torch.Tensor, visibility=None):
    """Global rotation and translation that place the rest hand's palm on the observed palm.

    Args:
        layer: the hand model.
        keypoints_3d: (B, 21, 3) observed keypoints, metres, course order.
        visibility: (B, 21) or None.

    Returns:
        rotation (B, 3, 3) and transl (B, 3), metres, to use as ``global_orient`` (after
        ``matrix_to_axis_angle``) and ``transl`` of the layer.
    """
    _check_layer(layer)
    keypoints_3d = _check_keypoints(keypoints_3d, 3, "keypoints_3d", "metres")
    weights = _init_weights(_check_visibility(visibility, keypoints_3d.shape[0]))
    rest, wrist = _rest_joints(layer, keypoints_3d.shape[0])
    rotation = kabsch_rotation(rest, keypoints_3d, weights)
    w = (weights / weights.sum(1, keepdim=True))[..., None]
    rest_centre, target_centre = (w * rest).sum(1), (w * keypoints_3d).sum(1)  # (B, 3)
    # R (c_rest - wrist) + wrist + t = c_target
    transl = target_centre - (rotation @ (rest_centre - wrist)[..., None])[..., 0] - wrist
    return rotation, transl


def _random_rotations(count: int, generator: torch.Generator) -> torch.Tensor:
    """``count`` rotations, the identity first, then uniform random ones (random unit quaternions)."""
    q = torch.randn(count, 4, generator=generator)
    q[0] = torch.tensor([1.0, 0, 0, 0])
    q = q / q.norm(dim=-1, keepdim=True)
    angle = 2 * torch.acos(q[:, :1].clamp(-1, 1))
    axis = torch.nn.functional.normalize(q[:, 1:], dim=-1)
    return axis_angle_to_matrix(axis * angle)


def init_from_keypoints_2d(layer: ManoLayer, keypoints_2d: torch.Tensor, K: torch.Tensor, visibility=None,
                           num_starts: int = 16, steps: int = 60, seed: int = 0):
    """Global rotation and translation of the rest hand whose projected palm best matches the observed palm.

    Depth from size: a palm of size L metres that looks l pixels big with focal length f is at
    z = f L / l. The rotation comes from ``num_starts`` rigid fits of the palm, started from the
    identity and seeded random rotations; each hand keeps its best start.

    Args:
        layer: the hand model.
        keypoints_2d: (B, 21, 2) observed keypoints, pixels, course order.
        K: (B, 3, 3) camera intrinsics.
        visibility: (B, 21) or None.
        num_starts: rigid fits per hand.
        steps: Adam steps of each rigid fit.
        seed: seeds the random starting rotations.

    Returns:
        rotation (B, 3, 3) and transl (B, 3), metres, camera frame.
    """
    _check_layer(layer)
    keypoints_2d = _check_keypoints(keypoints_2d, 2, "keypoints_2d", "pixels")
    batch = keypoints_2d.shape[0]
    K = _check_intrinsics(K, batch)
    weights = _init_weights(_check_visibility(visibility, batch))
    rest, wrist = _rest_joints(layer, batch)
    w = (weights / weights.sum(1, keepdim=True))[..., None]  # (B, 21, 1)

    # Depth from size: compare the weighted spread (RMS distance to the centroid) in 3D and in 2D.
    def spread(points):
        centre = (w * points).sum(1, keepdim=True)
        return ((w * (points - centre) ** 2).sum((1, 2))).sqrt()

    focal = 0.5 * (K[:, 0, 0] + K[:, 1, 1])
    depth = focal * spread(rest) / spread(keypoints_2d).clamp_min(1e-6)  # (B,)
    centre_2d = (w * keypoints_2d).sum(1)  # (B, 2)
    ray = torch.linalg.solve(K, torch.cat([centre_2d, torch.ones(batch, 1)], dim=1)[..., None])[..., 0]
    target_centre = ray / ray[:, 2:] * depth[:, None]  # (B, 3) the palm centre, camera frame
    rest_centre = (w * rest).sum(1)

    # Rigid fits of the palm from several starting rotations, all at once: (B * S) problems.
    starts = _random_rotations(num_starts, torch.Generator().manual_seed(seed))  # (S, 3, 3)
    rotation = starts.repeat(batch, 1, 1)  # (B*S, 3, 3), hand-major
    expand = lambda x: x.repeat_interleave(num_starts, dim=0)  # noqa: E731
    rest_s, wrist_s, weights_s, K_s = expand(rest), expand(wrist), expand(weights), expand(K)
    target_s = expand(keypoints_2d)
    transl = expand(target_centre) - (rotation @ (expand(rest_centre) - wrist_s)[..., None])[..., 0] - wrist_s
    rotation_6d = matrix_to_rotation_6d(rotation).clone().requires_grad_(True)
    transl = transl.clone().requires_grad_(True)
    optimizer = torch.optim.Adam([{"params": [rotation_6d], "lr": 0.1}, {"params": [transl], "lr": 0.01}])

    def residual():
        joints = _rigid_apply(rest_s, rotation_6d_to_matrix(rotation_6d), wrist_s, transl)
        error = (project_points(joints, K_s) - target_s).square().sum(-1)  # (B*S, 21) px^2
        return (weights_s * error).sum(1) / weights_s.sum(1)

    for _ in range(steps):
        optimizer.zero_grad()
        residual().sum().backward()
        optimizer.step()
    with torch.no_grad():
        best = residual().view(batch, num_starts).argmin(1)  # (B,)
        pick = torch.arange(batch) * num_starts + best
        return rotation_6d_to_matrix(rotation_6d[pick]), transl[pick].clone()


def _check_intrinsics(K, batch: int) -> torch.Tensor:
    if not isinstance(K, torch.Tensor):
        raise ValueError(f"K: expected a torch.Tensor of shape ({batch}, 3, 3) or (3, 3), got {type(K).__name__}")
    if K.shape == (3, 3):
        K = K.expand(batch, 3, 3)
    if K.shape != (batch, 3, 3):
        raise ValueError(f"K: expected shape ({batch}, 3, 3) (one camera per hand) or (3, 3), got {tuple(K.shape)}")
    K = K.detach().float()
    if (K[:, 0, 0] <= 0).any() or (K[:, 1, 1] <= 0).any():
        raise ValueError("K: focal lengths K[0, 0] and K[1, 1] must be positive")
    return K


# -------------------------------------------------------------------------------------------------
# The fit


def _fit(layer: ManoLayer, data_term, rotation_init: torch.Tensor, transl_init: torch.Tensor, *, steps: int,
         lr: float, optimizer: str, rotation: str, fit_betas: bool, shape_weight: float, pose_weight: float,
         limit_weight: float, transl_scale: torch.Tensor):
    """Minimise data_term(joints) + priors over (hand_pose, betas, rotation, transl); see the module docstring.

    Returns the fitted (hand_pose, betas, global_orient, transl) and the loss history.
    """
    batch = rotation_init.shape[0]
    pose_size = layer.num_pca_comps or 45
    hand_pose = torch.zeros(batch, pose_size, requires_grad=True)
    betas = torch.zeros(batch, layer.num_betas, requires_grad=fit_betas)
    if rotation == "6d":
        orient = matrix_to_rotation_6d(rotation_init).clone().requires_grad_(True)
        to_matrix = rotation_6d_to_matrix
    else:
        orient = matrix_to_axis_angle(rotation_init).clone().requires_grad_(True)
        to_matrix = axis_angle_to_matrix
    # The translation is optimised as a correction in units of transl_scale (about a palm's size
    # for 3D, a tenth of the depth for 2D), so one learning rate suits every parameter.
    transl_step = torch.zeros(batch, 3, requires_grad=True)
    limit_violation = _limit_violation()

    def energy():
        out = layer(hand_pose=hand_pose, betas=betas)  # zero global_orient and transl: applied below
        wrist = out.mano_joints[:, 0]
        transl = transl_init + transl_scale * transl_step
        joints = _rigid_apply(out.joints, to_matrix(orient), wrist, transl)  # (B, 21, 3)
        total = data_term(joints)  # (B,)
        total = total + pose_weight * hand_pose.square().sum(1)
        if fit_betas:
            total = total + shape_weight * betas.square().sum(1)
        if limit_violation is not None and limit_weight > 0:
            total = total + limit_weight * limit_violation(layer.finger_pose(hand_pose))
        return total.sum()

    params = [hand_pose, orient, transl_step] + ([betas] if fit_betas else [])
    history = []
    if optimizer == "adam":
        adam = torch.optim.Adam(params, lr=lr)
        schedule = torch.optim.lr_scheduler.LambdaLR(adam, lambda step: 0.5 * (1 + math.cos(math.pi * step / steps)))
        for _ in range(steps):
            adam.zero_grad()
            loss = energy()
            loss.backward()
            adam.step()
            schedule.step()
            history.append(loss.item() / batch)
    else:
        lbfgs = torch.optim.LBFGS(params, lr=1.0, max_iter=steps, history_size=20, line_search_fn="strong_wolfe",
                                  tolerance_grad=1e-9, tolerance_change=1e-12)

        def closure():
            lbfgs.zero_grad()
            loss = energy()
            loss.backward()
            history.append(loss.item() / batch)
            return loss

        lbfgs.step(closure)
    with torch.no_grad():
        global_orient = matrix_to_axis_angle(to_matrix(orient))
        transl = transl_init + transl_scale * transl_step
    return hand_pose.detach(), betas.detach(), global_orient, transl.detach(), np.asarray(history, dtype=np.float64)


def _limit_violation():
    """``handlib.mano.prior.limit_violation`` if the prior module is there, else None."""
    try:
        from handlib.mano.prior import limit_violation
    except ImportError:
        return None
    return limit_violation


def _mean_distance(a: torch.Tensor, b: torch.Tensor, visibility: torch.Tensor) -> torch.Tensor:
    return ((a - b).norm(dim=-1) * visibility).sum(1) / visibility.sum(1)


def fit_to_keypoints_3d(layer: ManoLayer, keypoints_3d: torch.Tensor, visibility=None, *, steps: int = 200,
                        lr: float = 0.05, optimizer: str = "adam", rotation: str = "6d", fit_betas: bool = True,
                        sigma: float = 0.01, shape_weight: float = 1e-3, pose_weight: float = 1e-4,
                        limit_weight: float = 1.0, seed: int = 0) -> FitResult:
    """Fit the hand model to 3D keypoints by gradient descent with a pose prior.

    Args:
        layer: the hand model; its ``num_pca_comps`` decides the pose space (PCA or 45-D axis-angle).
        keypoints_3d: (B, 21, 3) keypoints to match, metres, course order, any frame.
        visibility: (B, 21), 1 for keypoints to use and 0 for missing ones; None uses all.
        steps: optimisation steps (Adam) or function evaluations (L-BFGS).
        lr: Adam's learning rate (cosine-decayed to 0); ignored by L-BFGS.
        optimizer: "adam" or "lbfgs".
        rotation: parametrisation of the global rotation, "6d" (continuous) or "axis_angle".
        fit_betas: fit the shape too (else betas stay 0, the mean hand).
        sigma: the keypoint error, metres, that costs as much as 1 unit of prior.
        shape_weight: weight of |beta|^2.
        pose_weight: weight of |hand_pose|^2 (PCA coefficients or axis-angles).
        limit_weight: weight of the joint-limit penalty of ``handlib.mano.prior`` (skipped
            while that module does not exist).
        seed: seeds torch for the run (the fit is deterministic for a given seed).

    Returns:
        FitResult with ``keypoint_error_3d`` (B,), metres.

    Raises:
        ValueError: wrong layer, shapes or options.

    Example:
        >>> layer = ManoLayer(num_pca_comps=12)                              # doctest: +SKIP
        >>> target = layer(hand_pose=torch.randn(2, 12)).joints               # doctest: +SKIP
        >>> fit_to_keypoints_3d(layer, target).keypoint_error_3d              # doctest: +SKIP
        tensor([0.0004, 0.0003])
    """
    _check_layer(layer)
    _check_options(optimizer, rotation, steps)
    keypoints_3d = _check_keypoints(keypoints_3d, 3, "keypoints_3d", "metres")
    visibility = _check_visibility(visibility, keypoints_3d.shape[0])
    torch.manual_seed(seed)
    rotation_init, transl_init = init_from_keypoints_3d(layer, keypoints_3d, visibility)

    def data_term(joints):
        error = (joints - keypoints_3d).square().sum(-1) / sigma**2  # (B, 21)
        return (visibility * error).sum(1) / visibility.sum(1)

    hand_pose, betas, global_orient, transl, history = _fit(
        layer, data_term, rotation_init, transl_init, steps=steps, lr=lr, optimizer=optimizer, rotation=rotation,
        fit_betas=fit_betas, shape_weight=shape_weight, pose_weight=pose_weight, limit_weight=limit_weight,
        transl_scale=torch.tensor(0.1))
    with torch.no_grad():
        output = layer(hand_pose=hand_pose, betas=betas, global_orient=global_orient, transl=transl)
    return FitResult(hand_pose=hand_pose, betas=betas, global_orient=global_orient, transl=transl, output=output,
                     loss_history=history,
                     keypoint_error_3d=_mean_distance(output.joints, keypoints_3d, visibility))


def fit_to_keypoints_2d(layer: ManoLayer, keypoints_2d: torch.Tensor, K: torch.Tensor, visibility=None, *,
                        steps: int = 300, lr: float = 0.05, optimizer: str = "adam", rotation: str = "6d",
                        fit_betas: bool = True, sigma_px: float = 4.0, shape_weight: float = 1e-2,
                        pose_weight: float = 1e-3, limit_weight: float = 1.0, num_starts: int = 16,
                        seed: int = 0) -> FitResult:
    """Fit the hand model to 2D keypoints seen by a known pinhole camera ("2D fit").

    The depth along each ray is only constrained through the hand's size and perspective, so the
    fit can match the 2D keypoints closely while its 3D joints are off: report both.

    Args:
        layer: the hand model; its ``num_pca_comps`` decides the pose space.
        keypoints_2d: (B, 21, 2) keypoints to match, pixels, course order.
        K: (B, 3, 3) or (3, 3) intrinsics of the camera (OpenCV frame: x right, y down, z forward).
        visibility: (B, 21), 1 for keypoints to use and 0 for missing ones; None uses all.
        steps: optimisation steps (Adam) or function evaluations (L-BFGS).
        lr: Adam's learning rate (cosine-decayed to 0); ignored by L-BFGS.
        optimizer: "adam" or "lbfgs".
        rotation: "6d" or "axis_angle" for the global rotation.
        fit_betas: fit the shape too (poorly constrained by 2D alone; the prior keeps it small).
        sigma_px: the reprojection error, pixels, that costs as much as 1 unit of prior.
        shape_weight, pose_weight, limit_weight: prior weights (see ``fit_to_keypoints_3d``).
        num_starts: starting rotations tried by the rigid initialisation.
        seed: seeds the starting rotations and torch.

    Returns:
        FitResult with ``reprojection_error_2d`` (B,), pixels; the fitted hand is in the camera frame.

    Raises:
        ValueError: wrong layer, shapes or options.
    """
    _check_layer(layer)
    _check_options(optimizer, rotation, steps)
    keypoints_2d = _check_keypoints(keypoints_2d, 2, "keypoints_2d", "pixels")
    batch = keypoints_2d.shape[0]
    K = _check_intrinsics(K, batch)
    visibility = _check_visibility(visibility, batch)
    torch.manual_seed(seed)
    rotation_init, transl_init = init_from_keypoints_2d(layer, keypoints_2d, K, visibility, num_starts=num_starts,
                                                        seed=seed)

    def data_term(joints):
        error = (project_points(joints, K) - keypoints_2d).square().sum(-1) / sigma_px**2  # (B, 21)
        return (visibility * error).sum(1) / visibility.sum(1)

    hand_pose, betas, global_orient, transl, history = _fit(
        layer, data_term, rotation_init, transl_init, steps=steps, lr=lr, optimizer=optimizer, rotation=rotation,
        fit_betas=fit_betas, shape_weight=shape_weight, pose_weight=pose_weight, limit_weight=limit_weight,
        transl_scale=0.1 * transl_init[:, 2:].abs().clamp_min(0.05))
    with torch.no_grad():
        output = layer(hand_pose=hand_pose, betas=betas, global_orient=global_orient, transl=transl)
    return FitResult(hand_pose=hand_pose, betas=betas, global_orient=global_orient, transl=transl, output=output,
                     loss_history=history,
                     reprojection_error_2d=_mean_distance(project_points(output.joints, K), keypoints_2d, visibility))
