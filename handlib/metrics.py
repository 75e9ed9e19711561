"""Evaluation: end-point error (EPE), PCK curves and their AUC, and the alignments papers use.

The definitions follow ``EvalUtil`` of hand3d and FreiHAND (reference/methods.md section 1):

* per-keypoint error  e[n, k] = |p_hat[n, k] - p[n, k]|_2, kept only where keypoint k of sample n
  is visible;
* mean EPE   = mean over k of (mean over n of e[n, k])      (equals MPJPE when all are visible);
* median EPE = mean over k of (median over n of e[n, k])    (not a global median);
* PCK(t)     = mean over k of (fraction over n with e[n, k] <= t);
* AUC[a, b]  = trapezoid(PCK(t), t) / (b - a) on t = linspace(a, b, steps), in [0, 1].

A keypoint with no visible sample is skipped in every average. Units are whatever you pass in;
``benchmark_row`` takes metres and pixels and reports millimetres and pixels.

Before the 3D error is computed, a prediction may be aligned to the ground truth (section 1.2):

============== ===================================================================================
alignment      what is taken from the ground truth
============== ===================================================================================
none           nothing: both in the camera frame
root           the root (wrist) position: pred - pred_root + gt_root
root_scale     root and scale: the prediction is rescaled so that its scale bone (the middle
               finger's MCP-PIP bone, ``skeleton.SCALE_BONE``) has the ground truth's length
gt_root_scale  Zimmermann & Brox: the prediction is root-relative and *normalised* (in units of
               the scale bone); it is multiplied by the ground-truth bone length
procrustes     a full similarity transform (rotation, translation, scale) per sample, FreiHAND's
               "aligned" numbers
============== ===================================================================================
"""
from __future__ import annotations

import numpy as np
import torch

from handlib.geometry import procrustes
from handlib.skeleton import NUM_KEYPOINTS, SCALE_BONE, WRIST

ALIGNMENTS = ("none", "root", "root_scale", "gt_root_scale", "procrustes")


# --------------------------------------------------------------------------------------------
# Input checks
# --------------------------------------------------------------------------------------------

def _as_tensor(x, name: str) -> torch.Tensor:
    if x is None:
        raise ValueError(f"{name}: expected an array or tensor, got None")
    return torch.as_tensor(np.asarray(x) if not isinstance(x, torch.Tensor) else x.detach().cpu(),
                           dtype=torch.float64)


def _check_pair(pred, target, dim: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    pred, target = _as_tensor(pred, "pred"), _as_tensor(target, "target")
    if pred.ndim != 3 or pred.shape != target.shape or (dim is not None and pred.shape[-1] != dim):
        expected = f"(N, K, {dim})" if dim else "(N, K, D)"
        raise ValueError(f"pred, target: expected equal shapes {expected}, got {tuple(pred.shape)} and "
                         f"{tuple(target.shape)}; add a batch axis with x[None] for a single sample")
    return pred, target


def _check_visibility(visibility, shape) -> torch.Tensor:
    """visibility (N, K) as bool; None means all visible."""
    if visibility is None:
        return torch.ones(shape[:2], dtype=torch.bool)
    visibility = _as_tensor(visibility, "visibility")
    if tuple(visibility.shape) != tuple(shape[:2]):
        raise ValueError(f"visibility: expected shape {tuple(shape[:2])} (N, K), got {tuple(visibility.shape)}")
    return visibility > 0.5


# --------------------------------------------------------------------------------------------
# Alignments
# --------------------------------------------------------------------------------------------

def scale_bone_length(keypoints) -> torch.Tensor:
    """Length of the scale bone (middle MCP -> middle PIP, ``skeleton.SCALE_BONE``).

    Args:
        keypoints: (N, 21, 3), any unit.

    Returns:
        Tensor (N,) float64, same unit.
    """
    keypoints = _as_tensor(keypoints, "keypoints")
    if keypoints.ndim != 3 or keypoints.shape[1] != NUM_KEYPOINTS:
        raise ValueError(f"keypoints: expected shape (N, 21, 3), got {tuple(keypoints.shape)}")
    parent, child = SCALE_BONE
    return (keypoints[:, child] - keypoints[:, parent]).norm(dim=-1)


def align_root(pred, target, root: int = WRIST) -> torch.Tensor:
    """Move the prediction so that its root lands on the ground-truth root: pred - pred_r + gt_r.

    Args:
        pred, target: (N, K, 3).
        root: index of the root keypoint (the wrist).

    Returns:
        (N, K, 3) float64 tensor, in the frame and units of ``target``.
    """
    pred, target = _check_pair(pred, target, 3)
    return pred - pred[:, root:root + 1] + target[:, root:root + 1]


def align_root_scale(pred, target, root: int = WRIST, pred_is_normalized: bool = False) -> torch.Tensor:
    """Root and scale from the ground truth; the scale is the middle finger's MCP-PIP bone.

    ``aligned = (pred - pred_root) * s_gt / s_pred + gt_root``, where s is the length of
    ``skeleton.SCALE_BONE``. With ``pred_is_normalized=True`` the prediction is taken to be in
    units of the bone already (s_pred = 1), which is Zimmermann & Brox's protocol.

    Args:
        pred, target: (N, 21, 3); ``target`` in metres (or any unit).
        root: index of the root keypoint.
        pred_is_normalized: see above.

    Returns:
        (N, 21, 3) float64 tensor, in the units of ``target``.
    """
    pred, target = _check_pair(pred, target, 3)
    pred_scale = torch.ones(len(pred), dtype=pred.dtype) if pred_is_normalized else scale_bone_length(pred)
    ratio = scale_bone_length(target) / pred_scale.clamp_min(1e-12)
    return (pred - pred[:, root:root + 1]) * ratio[:, None, None] + target[:, root:root + 1]


def align_procrustes(pred, target, visibility=None) -> torch.Tensor:
    """Per-sample similarity (Procrustes with scale) alignment, estimated on the visible keypoints.

    Uses ``geometry.procrustes`` with the visibility as weights, so the transform is fitted to the
    visible keypoints and applied to all of them. A sample with fewer than 3 visible keypoints cannot
    fix a rotation; it is only translated so that the centroids of its visible keypoints coincide.

    Args:
        pred, target: (N, K, 3).
        visibility: (N, K) or None (all visible).

    Returns:
        (N, K, 3) float64 tensor; invisible keypoints are transformed too but do not count.
    """
    pred, target = _check_pair(pred, target, 3)
    visible = _check_visibility(visibility, pred.shape)
    weights = visible.to(pred.dtype)
    s, rotation, translation = procrustes(pred, target, scale=True, weights=weights)
    aligned = s[:, None, None] * pred @ rotation.transpose(1, 2) + translation[:, None]
    # Fewer than 3 visible keypoints: move the centroid of the visible ones only (none: leave as is).
    count = weights.sum(1)[:, None, None]  # (N, 1, 1)
    w = weights[..., None] / count.clamp_min(1)  # (N, K, 1)
    shifted = pred + (w * (target - pred)).sum(1, keepdim=True)
    return torch.where(count >= 3, aligned, shifted)


def align(pred, target, alignment: str, visibility=None) -> torch.Tensor:
    """Apply one of ``ALIGNMENTS`` (see the module docstring).

    Args:
        pred, target: (N, 21, 3).
        alignment: "none", "root", "root_scale", "gt_root_scale" or "procrustes".
        visibility: (N, 21) or None; only used by "procrustes".

    Returns:
        (N, 21, 3) float64 tensor: the aligned prediction.
    """
    if alignment == "none":
        return _check_pair(pred, target, 3)[0]
    if alignment == "root":
        return align_root(pred, target)
    if alignment == "root_scale":
        return align_root_scale(pred, target)
    if alignment == "gt_root_scale":
        return align_root_scale(pred, target, pred_is_normalized=True)
    if alignment == "procrustes":
        return align_procrustes(pred, target, visibility)
    raise ValueError(f"alignment: expected one of {ALIGNMENTS}, got {alignment!r}")


# --------------------------------------------------------------------------------------------
# Errors, EPE, PCK, AUC
# --------------------------------------------------------------------------------------------

def keypoint_errors(pred, target, visibility=None) -> np.ndarray:
    """Per-keypoint Euclidean errors, NaN where the keypoint is not visible.

    Args:
        pred, target: (N, K, D), D = 2 (pixels) or 3 (metres).
        visibility: (N, K) or None (all visible).

    Returns:
        numpy array (N, K) float64, in the units of the input.
    """
    pred, target = _check_pair(pred, target)
    visible = _check_visibility(visibility, pred.shape)
    errors = (pred - target).norm(dim=-1)
    errors[~visible] = float("nan")
    return errors.numpy()


def _per_keypoint(errors: np.ndarray, reduce) -> np.ndarray:
    """Apply ``reduce`` to the valid errors of each keypoint; keypoints with none are dropped."""
    errors = np.asarray(errors, dtype=np.float64)
    if errors.ndim != 2:
        raise ValueError(f"errors: expected shape (N, K), got {errors.shape}")
    values = [reduce(column[~np.isnan(column)]) for column in errors.T if (~np.isnan(column)).any()]
    return np.asarray(values, dtype=np.float64)


def mean_epe(errors) -> float:
    """Mean over keypoints of the per-keypoint mean error.

    Args:
        errors: (N, K) with NaN for invisible entries (``keypoint_errors``).

    Returns:
        float, in the units of ``errors``; NaN if nothing is visible.
    """
    values = _per_keypoint(errors, np.mean)
    return float(values.mean()) if values.size else float("nan")


def median_epe(errors) -> float:
    """Mean over keypoints of the per-keypoint median error (``EvalUtil``'s "median")."""
    values = _per_keypoint(errors, np.median)
    return float(values.mean()) if values.size else float("nan")


def pck_curve(errors, thresholds) -> np.ndarray:
    """Percentage of correct keypoints: PCK(t) = mean over k of fraction over n of (e <= t).

    Args:
        errors: (N, K) with NaN for invisible entries.
        thresholds: (T,) in the units of ``errors``.

    Returns:
        numpy array (T,) in [0, 1].
    """
    thresholds = np.asarray(thresholds, dtype=np.float64).reshape(-1)
    errors = np.asarray(errors, dtype=np.float64)
    if errors.ndim != 2:
        raise ValueError(f"errors: expected shape (N, K), got {errors.shape}")
    valid = ~np.isnan(errors)
    keep = valid.any(axis=0)                                   # keypoints with a valid sample
    if not keep.any():
        return np.full(len(thresholds), np.nan)
    errors, valid = errors[:, keep], valid[:, keep]
    correct = (errors[None] <= thresholds[:, None, None]) & valid[None]   # (T, N, K)
    per_keypoint = correct.sum(axis=1) / valid.sum(axis=0)             # (T, K)
    return per_keypoint.mean(axis=1)


def auc(thresholds, pck) -> float:
    """Area under a PCK curve, normalised to [0, 1]: trapezoid(pck, t) / (t[-1] - t[0]).

    Args:
        thresholds: (T,) increasing, T >= 2.
        pck: (T,) values in [0, 1].

    Returns:
        float in [0, 1].
    """
    thresholds = np.asarray(thresholds, dtype=np.float64)
    pck = np.asarray(pck, dtype=np.float64)
    if thresholds.ndim != 1 or thresholds.shape != pck.shape or len(thresholds) < 2:
        raise ValueError(f"thresholds, pck: expected equal shapes (T,) with T >= 2, got {thresholds.shape} "
                         f"and {pck.shape}")
    return float(np.trapezoid(pck, thresholds) / np.trapezoid(np.ones_like(thresholds), thresholds))


def pck_auc(errors, low: float, high: float, steps: int) -> float:
    """AUC of the PCK curve on ``np.linspace(low, high, steps)`` (units of ``errors``)."""
    thresholds = np.linspace(low, high, steps)
    return auc(thresholds, pck_curve(errors, thresholds))


# --------------------------------------------------------------------------------------------
# Accumulator and the benchmark row
# --------------------------------------------------------------------------------------------

class KeypointEvaluator:
    """Collects per-keypoint errors batch by batch, like ``EvalUtil`` of hand3d and FreiHAND.

    Example:
        >>> evaluator = KeypointEvaluator()
        >>> evaluator.add(np.zeros((2, 21, 3)), np.ones((2, 21, 3)))   # error sqrt(3) everywhere
        >>> round(evaluator.mean(), 4)
        1.7321
    """

    def __init__(self):
        self._batches: list[np.ndarray] = []

    def add(self, pred, target, visibility=None) -> None:
        """Add a batch. pred, target: (B, K, D) in one unit; visibility: (B, K) or None."""
        self._batches.append(keypoint_errors(pred, target, visibility))

    def add_errors(self, errors) -> None:
        """Add precomputed errors (B, K), NaN where not visible."""
        errors = np.asarray(errors, dtype=np.float64)
        if errors.ndim != 2:
            raise ValueError(f"errors: expected shape (B, K), got {errors.shape}")
        self._batches.append(errors)

    @property
    def errors(self) -> np.ndarray:
        """All errors so far, (N, K) with NaN for invisible keypoints."""
        if not self._batches:
            raise ValueError("KeypointEvaluator: no batch was added; call add(pred, target) first")
        return np.concatenate(self._batches, axis=0)

    def __len__(self) -> int:
        return sum(len(batch) for batch in self._batches)

    def mean(self) -> float:
        """Mean EPE (units of the input)."""
        return mean_epe(self.errors)

    def median(self) -> float:
        """Median EPE, the mean over keypoints of per-keypoint medians."""
        return median_epe(self.errors)

    def pck(self, thresholds) -> np.ndarray:
        """PCK curve (T,) at ``thresholds``."""
        return pck_curve(self.errors, thresholds)

    def auc(self, low: float, high: float, steps: int) -> float:
        """Normalised area under the PCK curve on linspace(low, high, steps)."""
        return pck_auc(self.errors, low, high, steps)

    def summary(self, low: float, high: float, steps: int) -> dict:
        """mean, median, auc and the curve (thresholds, pck) as plain floats and lists."""
        thresholds = np.linspace(low, high, steps)
        curve = self.pck(thresholds)
        return {"mean": self.mean(), "median": self.median(), "auc": auc(thresholds, curve),
                "thresholds": thresholds.tolist(), "pck": curve.tolist()}


# The AUC of the benchmark table: 20-50 mm (the STB convention) on a 1 mm grid.
AUC_RANGE_MM = (20.0, 50.0, 31)


def benchmark_row(pred_3d, target_3d, pred_2d=None, target_2d=None, visibility_3d=None, visibility_2d=None,
                  alignment: str = "root", pck_thresholds_mm=None) -> dict:
    """The numbers of one row of the course's benchmark table.

    Args:
        pred_3d: (N, 21, 3) predicted keypoints, metres (or bone units for "gt_root_scale").
        target_3d: (N, 21, 3) ground truth, metres, camera frame.
        pred_2d, target_2d: (N, 21, 2) pixels, or None to skip the 2D error.
        visibility_3d: (N, 21) keypoints that count in 3D, or None (all).
        visibility_2d: (N, 21) keypoints that count in 2D, or None (all).
        alignment: how the 3D prediction is aligned first, one of ``ALIGNMENTS``.
        pck_thresholds_mm: (T,) thresholds, millimetres, or None: with them the row has the 3D PCK
            curve the AUC is the area of, after the same alignment (for a figure of the curves).

    Returns:
        dict with ``epe_3d_mm`` (mean 3D EPE after ``alignment``), ``median_3d_mm``,
        ``auc_20_50`` (PCK AUC over ``AUC_RANGE_MM``, after ``alignment``), ``epe_2d_px`` (NaN
        without 2D), ``epe_procrustes_mm`` (after Procrustes alignment with scale), ``alignment``
        and ``num_samples``; with ``pck_thresholds_mm`` also ``pck_3d``, a list of T fractions.
    """
    target = _as_tensor(target_3d, "target_3d")
    aligned = align(pred_3d, target, alignment, visibility_3d)
    errors_mm = keypoint_errors(aligned * 1000.0, target * 1000.0, visibility_3d)
    procrustes = align_procrustes(pred_3d, target, visibility_3d)
    procrustes_mm = keypoint_errors(procrustes * 1000.0, target * 1000.0, visibility_3d)
    row = {
        "epe_3d_mm": mean_epe(errors_mm),
        "median_3d_mm": median_epe(errors_mm),
        "auc_20_50": pck_auc(errors_mm, *AUC_RANGE_MM),
        "epe_2d_px": float("nan"),
        "epe_procrustes_mm": mean_epe(procrustes_mm),
        "alignment": alignment,
        "num_samples": int(len(errors_mm)),
    }
    if pred_2d is not None and target_2d is not None:
        row["epe_2d_px"] = mean_epe(keypoint_errors(pred_2d, target_2d, visibility_2d))
    if pck_thresholds_mm is not None:
        row["pck_3d"] = pck_curve(errors_mm, pck_thresholds_mm).tolist()
    return row
