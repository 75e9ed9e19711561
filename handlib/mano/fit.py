"""Fitting the hand model to keypoints: find the pose, shape and placement whose joints match.

Given 21 observed keypoints, find finger pose theta, shape beta, global rotation R and
translation t of the hand model M(theta, beta) by minimising

    E = E_data + lambda_pose E_pose(theta) + lambda_limits E_limits(theta) + lambda_shape |beta|^2

with gradient-based optimisation: L-BFGS (a quasi-Newton method, the default: it converges in
fewer evaluations on these small, smooth problems) or Adam. The data term compares the model's 21 joints
J_i = R (J_i(theta, beta) - J_wrist) + J_wrist + t with the observation:

    3D keypoints X_i (metres):     E_data = sum_i v_i |J_i - X_i|^2 / (sigma_3d^2 sum_i v_i)
    2D keypoints x_i (pixels), K:  E_data = sum_i v_i |pi(K J_i) - x_i|^2 / (sigma_2d^2 sum_i v_i)

with v_i the visibility. The priors keep the answer a hand: an L2 on the PCA coefficients (or on
the axis-angles), the joint-limit penalty of ``handlib.mano.prior.HandPosePrior``, and an L2
on beta (MANO's shape space is a unit Gaussian).

Gradient descent needs a good start, because the energy is not convex in the rotation:

* 3D: the palm (wrist, thumb CMC, four MCPs) does not move with the fingers, so the rotation
  that best maps the rest hand's palm onto the observed palm (Kabsch / Procrustes) is already
  the global rotation, and the translation follows from the centroids.
* 2D: the depth follows from the palm's size in pixels and the focal length (z = f L / l); the
  rotation is not observable in closed form from a nearly planar palm (the mirror ambiguity of
  planar pose), so rigid fits of the palm start from seeded random rotations, the best two are
  fitted in full, and the one with the lower energy wins.

This "2D fit" is the optimisation baseline that the learned methods of later chapters are
compared against (Boukhayma et al. 2019, Table 1, column "2D fit").
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from handlib.geometry import (axis_angle_to_matrix, matrix_to_axis_angle, matrix_to_rotation_6d, procrustes,
                              project_points, rotation_6d_to_matrix)
from handlib.mano.layer import HandOutput, ManoLayer
from handlib.mano.prior import HandPosePrior
from handlib.skeleton import NUM_KEYPOINTS, PALM

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
        loss_history: (N,) numpy array, the total energy (mean over the batch) at each energy
            evaluation: one per step for Adam, at most ``steps`` for L-BFGS.
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


def _check_keypoints(keypoints, dim: int, name: str, unit: str, device=None) -> torch.Tensor:
    if not isinstance(keypoints, torch.Tensor):
        raise ValueError(f"{name}: expected a torch.Tensor of shape (B, 21, {dim}) in {unit}, "
                         f"got {type(keypoints).__name__}; convert with torch.as_tensor(x, dtype=torch.float32)")
    if keypoints.ndim != 3 or keypoints.shape[1:] != (NUM_KEYPOINTS, dim):
        hint = " (add a batch dimension with x[None])" if keypoints.shape == (NUM_KEYPOINTS, dim) else ""
        raise ValueError(f"{name}: expected shape (B, 21, {dim}) in {unit}, got {tuple(keypoints.shape)}{hint}")
    if not keypoints.is_floating_point():
        raise ValueError(f"{name}: expected a floating-point tensor, got {keypoints.dtype}")
    return keypoints.detach().to(device=device, dtype=torch.float32)


def _finite_where_visible(keypoints: torch.Tensor, visibility: torch.Tensor, name: str) -> torch.Tensor:
    """Keypoints with hidden ones that are NaN or inf (as datasets store them) set to 0; visible
    ones must be finite."""
    finite = torch.isfinite(keypoints).all(-1)  # (B, 21)
    if (~finite & (visibility > 0)).any():
        raise ValueError(f"{name}: visible keypoints must be finite; mark missing ones with visibility 0")
    return torch.where(finite[..., None], keypoints, torch.zeros_like(keypoints))


def _check_visibility(visibility, batch: int, device=None) -> torch.Tensor:
    if visibility is None:
        return torch.ones(batch, NUM_KEYPOINTS, device=device)
    visibility = torch.as_tensor(visibility, device=device)
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


def _rest_joints(layer: ManoLayer, batch: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The 21 joints (B, 21, 3) and the wrist (B, 3) of the mean-shape hand in its zero pose."""
    with torch.no_grad():
        rest = layer(betas=torch.zeros(batch, layer.num_betas, device=layer.v_template.device))
    return rest.joints, rest.mano_joints[:, 0]


def _init_weights(visibility: torch.Tensor) -> torch.Tensor:
    """Weights for the rigid initialisation: the visible palm keypoints, or every visible keypoint
    for hands with fewer than 3 of them."""
    palm = torch.zeros(NUM_KEYPOINTS, device=visibility.device)
    palm[list(PALM)] = 1.0
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
    device = layer.v_template.device
    keypoints_3d = _check_keypoints(keypoints_3d, 3, "keypoints_3d", "metres", device)
    visibility = _check_visibility(visibility, keypoints_3d.shape[0], device)
    keypoints_3d = _finite_where_visible(keypoints_3d, visibility, "keypoints_3d")
    weights = _init_weights(visibility)
    rest, wrist = _rest_joints(layer, keypoints_3d.shape[0])
    _, rotation, _ = procrustes(rest, keypoints_3d, scale=False, weights=weights)
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
                           num_starts: int = 16, num_hypotheses: int = 1, steps: int = 100, seed: int = 0):
    """Global rotations and translations of the rest hand whose projected palm matches the observed palm.

    Depth from size: a palm of size L metres that looks l pixels big with focal length f is at
    z = f L / l. The rotation comes from ``num_starts`` rigid fits of the palm, started from the
    identity and seeded random rotations; each hand keeps its ``num_hypotheses`` best (a nearly
    flat palm seen from the front and its mirror image project alike, so keeping two lets the
    full fit decide).

    Args:
        layer: the hand model.
        keypoints_2d: (B, 21, 2) observed keypoints, pixels, course order.
        K: (B, 3, 3) or (3, 3) camera intrinsics.
        visibility: (B, 21) or None.
        num_starts: rigid fits per hand.
        num_hypotheses: how many of the best rigid fits to return per hand.
        steps: Adam steps of each rigid fit.
        seed: seeds the random starting rotations.

    Returns:
        rotation (B, H, 3, 3) and transl (B, H, 3), metres, camera frame, best first (H = num_hypotheses).
    """
    _check_layer(layer)
    device = layer.v_template.device
    keypoints_2d = _check_keypoints(keypoints_2d, 2, "keypoints_2d", "pixels", device)
    batch = keypoints_2d.shape[0]
    K = _check_intrinsics(K, batch, device)
    if not 1 <= num_hypotheses <= num_starts:
        raise ValueError(f"num_hypotheses: expected 1..num_starts={num_starts}, got {num_hypotheses}")
    visibility = _check_visibility(visibility, batch, device)
    keypoints_2d = _finite_where_visible(keypoints_2d, visibility, "keypoints_2d")
    weights = _init_weights(visibility)
    rest, wrist = _rest_joints(layer, batch)
    w = (weights / weights.sum(1, keepdim=True))[..., None]  # (B, 21, 1)

    # Depth from size: compare the weighted spread (RMS distance to the centroid) in 3D and in 2D.
    def spread(points):
        centre = (w * points).sum(1, keepdim=True)
        return ((w * (points - centre) ** 2).sum((1, 2))).sqrt()

    focal = 0.5 * (K[:, 0, 0] + K[:, 1, 1])
    depth = focal * spread(rest) / spread(keypoints_2d).clamp_min(1e-6)  # (B,)
    centre_2d = (w * keypoints_2d).sum(1)  # (B, 2)
    ray = torch.linalg.solve(K, torch.cat([centre_2d, torch.ones_like(centre_2d[:, :1])], dim=1)[..., None])[..., 0]
    target_centre = ray / ray[:, 2:] * depth[:, None]  # (B, 3) the palm centre, camera frame
    rest_centre = (w * rest).sum(1)

    # Rigid fits of the palm from several starting rotations, all at once: B * S problems.
    starts = _random_rotations(num_starts, torch.Generator().manual_seed(seed)).to(device)  # (S, 3, 3)
    rotation = starts.repeat(batch, 1, 1)  # (B*S, 3, 3), hand-major
    expand = lambda x: x.repeat_interleave(num_starts, dim=0)  # noqa: E731
    rest_s, wrist_s, weights_s = expand(rest), expand(wrist), expand(weights)
    K_s, target_s = expand(K), expand(keypoints_2d)
    transl = expand(target_centre) - (rotation @ (expand(rest_centre) - wrist_s)[..., None])[..., 0] - wrist_s
    rotation_6d = matrix_to_rotation_6d(rotation).clone().requires_grad_(True)
    transl = transl.clone().requires_grad_(True)
    optimizer = torch.optim.Adam([{"params": [rotation_6d], "lr": 0.1}, {"params": [transl], "lr": 0.01}])
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 0.5 * (1 + math.cos(math.pi * step / steps)))

    def residual():  # (B*S,) mean squared reprojection error of the palm, px^2
        joints = _rigid_apply(rest_s, rotation_6d_to_matrix(rotation_6d), wrist_s, transl)
        error = (project_points(joints, K_s) - target_s).square().sum(-1)  # (B*S, 21)
        return (weights_s * error).sum(1) / weights_s.sum(1)

    for _ in range(steps):
        optimizer.zero_grad()
        residual().sum().backward()
        optimizer.step()
        schedule.step()
    with torch.no_grad():
        best = residual().view(batch, num_starts).argsort(1)[:, :num_hypotheses]  # (B, H)
        pick = (torch.arange(batch, device=device)[:, None] * num_starts + best).flatten()
        rotations = rotation_6d_to_matrix(rotation_6d[pick]).view(batch, num_hypotheses, 3, 3)
        return rotations, transl[pick].view(batch, num_hypotheses, 3).clone()


def _check_intrinsics(K, batch: int, device=None) -> torch.Tensor:
    if not isinstance(K, torch.Tensor):
        raise ValueError(f"K: expected a torch.Tensor of shape ({batch}, 3, 3) or (3, 3), got {type(K).__name__}")
    if K.shape == (3, 3):
        K = K.expand(batch, 3, 3)
    if K.shape != (batch, 3, 3):
        raise ValueError(f"K: expected shape ({batch}, 3, 3) (one camera per hand) or (3, 3), got {tuple(K.shape)}")
    K = K.detach().to(device=device, dtype=torch.float32)
    if (K[:, 0, 0] <= 0).any() or (K[:, 1, 1] <= 0).any():
        raise ValueError("K: focal lengths K[0, 0] and K[1, 1] must be positive")
    return K


# -------------------------------------------------------------------------------------------------
# The fit


def mean_hand_pose(layer: ManoLayer) -> torch.Tensor:
    """The model's mean finger pose (``hands_mean``) in the layer's pose space.

    Args:
        layer: the hand model.

    Returns:
        (1, P): PCA coefficients (least squares in the layer's basis) or 45 axis-angles, such
        that ``layer.finger_pose(mean) == hands_mean`` (up to what the PCA basis can express).
    """
    return layer.hand_pose_of(torch.as_tensor(layer.model.hands_mean, dtype=torch.float32,
                                              device=layer.hands_mean.device)[None])


def _fit(layer: ManoLayer, data_term, rotation_init: torch.Tensor, transl_init: torch.Tensor, *, steps: int,
         lr: float, optimizer: str, rotation: str, fit_betas: bool, shape_weight: float, pose_weight: float,
         limit_weight: float, transl_scale: torch.Tensor, prior: HandPosePrior | None, points: str = "joints",
         start: tuple[torch.Tensor, torch.Tensor] | None = None):
    """Minimise data_term(points) + priors over (hand_pose, betas, rotation, transl) for a batch of
    independent hands; see the module docstring.

    Args:
        data_term: the hand's points (B, N, 3) -> (B,) data energy of each hand.
        rotation_init, transl_init: (B, 3, 3), (B, 3) the starting placement.
        transl_scale: (B, 1) or scalar, metres per unit of the optimised translation correction.
        points: what the data term sees: "joints" (the 21 keypoints) or "vertices" (the 778).
        start: (hand_pose, betas) to start from; None: the mean pose and the mean shape.

    Returns:
        hand_pose, betas, global_orient (axis-angle), transl, and the energy of each hand at each
        step, (steps, B).
    """
    batch = rotation_init.shape[0]
    # The fingers start at the model's mean pose (a relaxed, slightly curled hand): from there a
    # finger that must bend bends the right way. The L2 pose prior pulls towards the same mean.
    mean_pose = mean_hand_pose(layer).expand(batch, -1)  # (B, P)
    start_pose, start_betas = start or (mean_pose, torch.zeros(batch, layer.num_betas, device=rotation_init.device))
    hand_pose = start_pose.detach().clone().requires_grad_(True)
    betas = start_betas.detach().clone().requires_grad_(fit_betas)
    if rotation == "6d":
        orient = matrix_to_rotation_6d(rotation_init).clone().requires_grad_(True)
        to_matrix = rotation_6d_to_matrix
    else:
        orient = matrix_to_axis_angle(rotation_init).clone().requires_grad_(True)
        to_matrix = axis_angle_to_matrix
    # The translation is optimised as a correction in units of transl_scale (a tenth of a metre
    # for 3D, a tenth of the depth for 2D), so one learning rate suits every parameter.
    transl_step = torch.zeros(batch, 3, device=rotation_init.device, requires_grad=True)
    history = []

    def energy():
        out = layer(hand_pose=hand_pose, betas=betas)  # zero global_orient and transl: applied below
        transl = transl_init + transl_scale * transl_step
        placed = _rigid_apply(getattr(out, points), to_matrix(orient), out.mano_joints[:, 0], transl)  # (B, N, 3)
        total = data_term(placed)  # (B,)
        total = total + pose_weight * (hand_pose - mean_pose).square().sum(1)
        if fit_betas:
            total = total + shape_weight * betas.square().sum(1)
        if limit_weight > 0:  # the joint limits apply to the absolute finger axis-angles
            total = total + limit_weight * prior.limit_violation(layer.finger_pose(hand_pose))
        history.append(total.detach())
        return total.sum()  # the hands are independent: the sum's gradient is each hand's own

    params = [hand_pose, orient, transl_step] + ([betas] if fit_betas else [])
    if optimizer == "adam":
        adam = torch.optim.Adam(params, lr=lr)
        schedule = torch.optim.lr_scheduler.LambdaLR(adam, lambda step: 0.5 * (1 + math.cos(math.pi * step / steps)))
        for _ in range(steps):
            adam.zero_grad()
            energy().backward()
            adam.step()
            schedule.step()
    else:
        lbfgs = torch.optim.LBFGS(params, lr=1.0, max_iter=steps, max_eval=steps, history_size=20,
                                  line_search_fn="strong_wolfe", tolerance_grad=1e-10, tolerance_change=1e-14)

        def closure():
            lbfgs.zero_grad()
            loss = energy()
            loss.backward()
            return loss

        lbfgs.step(closure)
    with torch.no_grad():
        global_orient = matrix_to_axis_angle(to_matrix(orient))
        transl = transl_init + transl_scale * transl_step
    return hand_pose.detach(), betas.detach(), global_orient, transl.detach(), torch.stack(history)


def _mean_distance(a: torch.Tensor, b: torch.Tensor, visibility: torch.Tensor) -> torch.Tensor:
    return ((a - b).norm(dim=-1) * visibility).sum(1) / visibility.sum(1)


def fit_to_keypoints_3d(layer: ManoLayer, keypoints_3d: torch.Tensor, visibility=None, *, steps: int = 150,
                        lr: float = 0.1, optimizer: str = "lbfgs", rotation: str = "6d", fit_betas: bool = True,
                        sigma: float = 0.01, shape_weight: float = 1e-3, pose_weight: float = 1e-4,
                        limit_weight: float = 1.0, prior: HandPosePrior | None = None) -> FitResult:
    """Fit the hand model to 3D keypoints by gradient descent with a pose prior.

    Deterministic: it starts from the rigid fit of the palm (``init_from_keypoints_3d``) and draws no
    random numbers.

    Args:
        layer: the hand model; its ``num_pca_comps`` decides the pose space (PCA or 45-D axis-angle).
        keypoints_3d: (B, 21, 3) keypoints to match, metres, course order, any frame.
        visibility: (B, 21), 1 for keypoints to use and 0 for missing ones; None uses all.
        steps: optimisation steps (Adam) or energy evaluations (L-BFGS).
        lr: Adam's learning rate (cosine-decayed to 0); ignored by L-BFGS.
        optimizer: "lbfgs" (quasi-Newton with a line search) or "adam" (plain first-order steps).
        rotation: parametrisation of the global rotation, "6d" (continuous) or "axis_angle".
        fit_betas: fit the shape too (else betas stay 0, the mean hand).
        sigma: the keypoint error, metres, that costs as much as 1 unit of prior.
        shape_weight: weight of |beta|^2.
        pose_weight: weight of |hand_pose|^2 (PCA coefficients or axis-angles).
        limit_weight: weight of the joint-limit penalty (squared radians outside the limits).
        prior: the HandPosePrior whose limits apply; None: the one of ``layer``'s model.

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
    device = layer.v_template.device
    keypoints_3d = _check_keypoints(keypoints_3d, 3, "keypoints_3d", "metres", device)
    visibility = _check_visibility(visibility, keypoints_3d.shape[0], device)
    keypoints_3d = _finite_where_visible(keypoints_3d, visibility, "keypoints_3d")
    rotation_init, transl_init = init_from_keypoints_3d(layer, keypoints_3d, visibility)

    def data_term(joints):  # (B, 21, 3) -> (B,)
        error = (joints - keypoints_3d).square().sum(-1) / sigma**2  # (B, 21)
        return (visibility * error).sum(1) / visibility.sum(1)

    hand_pose, betas, global_orient, transl, history = _fit(
        layer, data_term, rotation_init, transl_init, steps=steps, lr=lr, optimizer=optimizer, rotation=rotation,
        fit_betas=fit_betas, shape_weight=shape_weight, pose_weight=pose_weight, limit_weight=limit_weight,
        transl_scale=0.1, prior=prior or HandPosePrior.from_model(layer.model))
    with torch.no_grad():
        output = layer(hand_pose=hand_pose, betas=betas, global_orient=global_orient, transl=transl)
    return FitResult(hand_pose=hand_pose, betas=betas, global_orient=global_orient, transl=transl, output=output,
                     loss_history=history.mean(1).cpu().numpy().astype(np.float64),
                     keypoint_error_3d=_mean_distance(output.joints, keypoints_3d, visibility))


def fit_to_keypoints_2d(layer: ManoLayer, keypoints_2d: torch.Tensor, K: torch.Tensor, visibility=None, *,
                        steps: int = 300, lr: float = 0.1, optimizer: str = "lbfgs", rotation: str = "6d",
                        fit_betas: bool = True, sigma_px: float = 4.0, shape_weight: float = 1e-2,
                        pose_weight: float = 1e-3, limit_weight: float = 1.0, prior: HandPosePrior | None = None,
                        num_starts: int = 16, num_hypotheses: int = 2, seed: int = 0) -> FitResult:
    """Fit the hand model to 2D keypoints seen by a known pinhole camera ("2D fit").

    Each hand is fitted from its ``num_hypotheses`` best rigid starts (see
    ``init_from_keypoints_2d``), and the fit with the lowest energy is kept. The depth along the
    rays is only constrained through the hand's size and perspective, so the fit can match the 2D
    keypoints closely while its 3D joints are off: report both.

    Args:
        layer: the hand model; its ``num_pca_comps`` decides the pose space.
        keypoints_2d: (B, 21, 2) keypoints to match, pixels, course order.
        K: (B, 3, 3) or (3, 3) intrinsics of the camera (OpenCV frame: x right, y down, z forward).
        visibility: (B, 21), 1 for keypoints to use and 0 for missing ones; None uses all.
        steps: optimisation steps (Adam) or energy evaluations (L-BFGS).
        lr: Adam's learning rate (cosine-decayed to 0); ignored by L-BFGS.
        optimizer: "lbfgs" (quasi-Newton with a line search) or "adam" (plain first-order steps).
        rotation: "6d" or "axis_angle" for the global rotation.
        fit_betas: fit the shape too (poorly constrained by 2D alone; the prior keeps it small).
        sigma_px: the reprojection error, pixels, that costs as much as 1 unit of prior.
        shape_weight, pose_weight, limit_weight, prior: the priors (see ``fit_to_keypoints_3d``).
        num_starts: starting rotations tried by the rigid initialisation.
        num_hypotheses: rigid starts per hand that are fitted in full (the cost grows with it).
        seed: seeds the random starting rotations (a generator of their own; the global state is untouched).

    Returns:
        FitResult with ``reprojection_error_2d`` (B,), pixels; the fitted hand is in the camera frame.

    Raises:
        ValueError: wrong layer, shapes or options.
    """
    _check_layer(layer)
    _check_options(optimizer, rotation, steps)
    device = layer.v_template.device
    keypoints_2d = _check_keypoints(keypoints_2d, 2, "keypoints_2d", "pixels", device)
    batch = keypoints_2d.shape[0]
    K = _check_intrinsics(K, batch, device)
    visibility = _check_visibility(visibility, batch, device)
    keypoints_2d = _finite_where_visible(keypoints_2d, visibility, "keypoints_2d")
    rotations, transls = init_from_keypoints_2d(layer, keypoints_2d, K, visibility, num_starts=num_starts,
                                                num_hypotheses=num_hypotheses, seed=seed)  # (B, H, ...)
    # Every hypothesis is a hand of its own in one batch of B * H hands, hand-major.
    repeat = lambda x: x.repeat_interleave(num_hypotheses, dim=0)  # noqa: E731
    target, camera, seen = repeat(keypoints_2d), repeat(K), repeat(visibility)
    transl_init = transls.flatten(0, 1)

    def data_term(joints):  # (B*H, 21, 3) -> (B*H,)
        error = (project_points(joints, camera) - target).square().sum(-1) / sigma_px**2  # (B*H, 21)
        return (seen * error).sum(1) / seen.sum(1)

    hand_pose, betas, global_orient, transl, history = _fit(
        layer, data_term, rotations.flatten(0, 1), transl_init, steps=steps, lr=lr, optimizer=optimizer,
        rotation=rotation, fit_betas=fit_betas, shape_weight=shape_weight, pose_weight=pose_weight,
        limit_weight=limit_weight, transl_scale=0.1 * transl_init[:, 2:].abs().clamp_min(0.05),
        prior=prior or HandPosePrior.from_model(layer.model))
    best = history[-1].view(batch, num_hypotheses).argmin(1)  # (B,) the lowest final energy
    pick = torch.arange(batch, device=best.device) * num_hypotheses + best
    hand_pose, betas, global_orient, transl = hand_pose[pick], betas[pick], global_orient[pick], transl[pick]
    with torch.no_grad():
        output = layer(hand_pose=hand_pose, betas=betas, global_orient=global_orient, transl=transl)
    return FitResult(hand_pose=hand_pose, betas=betas, global_orient=global_orient, transl=transl, output=output,
                     loss_history=history[:, pick].mean(1).cpu().numpy().astype(np.float64),
                     reprojection_error_2d=_mean_distance(project_points(output.joints, K), keypoints_2d, visibility))


def fit_to_vertices(layer: ManoLayer, vertices: torch.Tensor, start: FitResult, *, steps: int = 300,
                    sigma: float = 0.01, shape_weight: float = 1e-3) -> FitResult:
    """Fit the hand model to a mesh with the model's topology: the MANO hand nearest to 778 given
    vertices (a graph CNN's free mesh, chapter 6), from a fit that is already close.

        E = mean_i |M(theta, beta, R, t)_i - v_i|^2 / sigma^2  +  shape_weight |beta|^2

    over the finger pose, the shape, the global rotation and the translation (L-BFGS, ``steps``
    evaluations), with no pose prior and no joint limits: the answer is the nearest hand the model
    can make, not the nearest plausible one.

    Args:
        layer: the hand model (its ``num_pca_comps`` decides the pose space; 45 axis-angles to reach
            every pose the model makes).
        vertices: (B, 778, 3) metres, any frame.
        start: the fit to start from, e.g. ``fit_to_keypoints_3d`` of the same hands' keypoints
            (the energy is not convex in the rotation; a start from the mean hand can land in the
            wrong minimum).
        steps: L-BFGS evaluations.
        sigma: the vertex error, metres, that costs as much as 1 unit of the shape prior.
        shape_weight: weight of |beta|^2.

    Returns:
        FitResult (``keypoint_error_3d`` None; compare ``output.vertices`` with ``vertices``).

    Raises:
        ValueError: wrong layer or shapes.
    """
    _check_layer(layer)
    _check_options("lbfgs", "6d", steps)
    device = layer.v_template.device
    count = layer.v_template.shape[0]
    if not isinstance(vertices, torch.Tensor) or vertices.ndim != 3 or vertices.shape[1:] != (count, 3):
        got = tuple(vertices.shape) if isinstance(vertices, torch.Tensor) else type(vertices).__name__
        raise ValueError(f"vertices: expected a tensor of shape (B, {count}, 3) in metres, got {got}")
    if not isinstance(start, FitResult) or start.hand_pose.shape[0] != vertices.shape[0]:
        raise ValueError("start: expected the FitResult of the same hands (fit_to_keypoints_3d of their keypoints)")
    vertices = vertices.detach().to(device=device, dtype=torch.float32)

    def data_term(placed):  # (B, 778, 3) -> (B,)
        return (placed - vertices).square().sum(-1).mean(1) / sigma**2

    hand_pose, betas, global_orient, transl, history = _fit(
        layer, data_term, axis_angle_to_matrix(start.global_orient), start.transl, steps=steps, lr=1.0,
        optimizer="lbfgs", rotation="6d", fit_betas=True, shape_weight=shape_weight, pose_weight=0.0,
        limit_weight=0.0, transl_scale=0.1, prior=None, points="vertices", start=(start.hand_pose, start.betas))
    with torch.no_grad():
        output = layer(hand_pose=hand_pose, betas=betas, global_orient=global_orient, transl=transl)
    return FitResult(hand_pose=hand_pose, betas=betas, global_orient=global_orient, transl=transl, output=output,
                     loss_history=history.mean(1).cpu().numpy().astype(np.float64))
