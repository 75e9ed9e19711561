"""EPE, PCK, AUC and the alignments, on values worked out by hand."""
import math

import numpy as np
import pytest
import torch

from handlib import metrics
from handlib.geometry import axis_angle_to_matrix


def hand(seed=0, count=2):
    """Random keypoints (count, 21, 3) in metres, about 0.5 m in front of the camera."""
    generator = torch.Generator().manual_seed(seed)
    return 0.04 * torch.randn(count, 21, 3, generator=generator, dtype=torch.float64) + torch.tensor([0, 0, 0.5])


# ---------------------------------------------------------------- errors and EPE by hand

def test_keypoint_errors_known_values():
    target = np.zeros((1, 21, 3))
    pred = np.zeros((1, 21, 3))
    pred[0, 0] = [3.0, 4.0, 0.0]              # a 3-4-5 triangle
    pred[0, 1] = [0.0, 0.0, -2.0]
    errors = metrics.keypoint_errors(pred, target)
    assert errors.shape == (1, 21)
    assert errors[0, 0] == 5.0 and errors[0, 1] == 2.0 and errors[0, 2:].sum() == 0.0


def test_mean_and_median_are_means_over_keypoints_of_per_keypoint_statistics():
    # Two keypoints; keypoint 0 has errors 1, 2, 6 and keypoint 1 has errors 3, 3 (third invisible).
    errors = np.array([[1.0, 3.0], [2.0, 3.0], [6.0, np.nan]])
    # mean: ((1 + 2 + 6) / 3 + 3) / 2 = (3 + 3) / 2 = 3; a global mean of the 5 values would be 3.
    assert metrics.mean_epe(errors) == pytest.approx(3.0)
    # median: (median(1, 2, 6) + median(3, 3)) / 2 = (2 + 3) / 2 = 2.5; the global median is 3.
    assert metrics.median_epe(errors) == pytest.approx(2.5)
    # A visibility-weighted example where the two definitions differ: errors 0, 0, 9 | 3.
    errors = np.array([[0.0, 3.0], [0.0, np.nan], [9.0, np.nan]])
    assert metrics.mean_epe(errors) == pytest.approx((3.0 + 3.0) / 2)   # not (0 + 0 + 9 + 3) / 4


def test_invisible_keypoints_do_not_count_and_empty_keypoints_are_skipped():
    pred, target = np.zeros((2, 21, 2)), np.zeros((2, 21, 2))
    pred[:, 5] = [100.0, 0.0]                  # a huge error, but keypoint 5 is never visible
    pred[0, 7] = [10.0, 0.0]
    visibility = np.ones((2, 21))
    visibility[:, 5] = 0
    errors = metrics.keypoint_errors(pred, target, visibility)
    assert np.isnan(errors[:, 5]).all()
    # 20 keypoints count; keypoint 7 has mean error (10 + 0) / 2 = 5, the others 0.
    assert metrics.mean_epe(errors) == pytest.approx(5.0 / 20)
    assert metrics.pck_curve(errors, [0.0])[0] == pytest.approx((19 + 0.5) / 20)


def test_pck_counts_errors_equal_to_the_threshold():
    errors = np.array([[1.0], [2.0], [3.0], [4.0]])
    assert metrics.pck_curve(errors, [0.5, 2.0, 2.5, 4.0]).tolist() == [0.0, 0.5, 0.5, 1.0]


def test_auc_by_hand():
    # PCK rises linearly from 0 to 1 over [0, 10]: the area is 1/2.
    thresholds = np.linspace(0, 10, 11)
    assert metrics.auc(thresholds, thresholds / 10) == pytest.approx(0.5)
    # Errors all equal to 5 on thresholds 0, 5, 10: PCK = 0, 1, 1, trapezoid area (0.5 * 5 + 5) / 10.
    errors = np.full((3, 21), 5.0)
    assert metrics.pck_auc(errors, 0, 10, 3) == pytest.approx(0.75)
    # Perfect predictions have AUC 1 on any range.
    assert metrics.pck_auc(np.zeros((4, 21)), 20, 50, 31) == pytest.approx(1.0)


# ---------------------------------------------------------------- alignments

def test_root_alignment_removes_a_translation():
    target = hand()
    pred = target + torch.tensor([0.1, -0.2, 0.3], dtype=torch.float64)
    assert torch.allclose(metrics.align_root(pred, target), target)
    assert torch.allclose(metrics.align(pred, target, "none"), pred)


def test_root_scale_alignment_uses_the_middle_mcp_pip_bone():
    target = hand()
    pred = 2.5 * (target - target[:, :1]) + 1.0     # scaled about the root and shifted
    assert torch.allclose(metrics.align_root_scale(pred, target), target)
    # A normalised prediction: root-relative, in units of the scale bone (Zimmermann & Brox).
    bone = (target[:, 10] - target[:, 9]).norm(dim=-1)
    normalized = (target - target[:, :1]) / bone[:, None, None]
    assert metrics.scale_bone_length(normalized).tolist() == pytest.approx([1.0, 1.0])
    assert torch.allclose(metrics.align(normalized, target, "gt_root_scale"), target)


def test_procrustes_removes_a_similarity_transform_and_ignores_invisible_points():
    target = hand(count=3)
    rotation = axis_angle_to_matrix(torch.tensor([0.3, -1.0, 0.5], dtype=torch.float64))
    pred = 0.7 * target @ rotation.T + torch.tensor([0.05, 0.0, -0.1], dtype=torch.float64)
    assert torch.allclose(metrics.align_procrustes(pred, target), target, atol=1e-9)
    # Corrupt keypoint 3 of sample 1 and hide it: the alignment of the rest is still exact.
    pred[1, 3] += 1.0
    visibility = torch.ones(3, 21)
    visibility[1, 3] = 0
    aligned = metrics.align_procrustes(pred, target, visibility)
    keep = visibility.bool()
    assert torch.allclose(aligned[keep], target[keep], atol=1e-9)
    # The hidden keypoint moves with its sample (by the same transform), keeping its corruption.
    transform = 1 / 0.7 * rotation                                       # undoes pred's similarity
    moved = (pred[1, 3] - torch.tensor([0.05, 0.0, -0.1], dtype=torch.float64)) @ transform
    assert torch.allclose(aligned[1, 3], moved, atol=1e-9)
    # Fewer than 3 visible keypoints: only the centroids of the visible ones are matched; none: unchanged.
    visibility[0], visibility[2] = 0, 0
    visibility[0, :2] = 1
    aligned = metrics.align_procrustes(pred, target, visibility)
    shift = (target[0, :2] - pred[0, :2]).mean(0)
    assert torch.allclose(aligned[0], pred[0] + shift) and torch.equal(aligned[2], pred[2])


def test_alignment_cannot_make_errors_larger_than_a_looser_one():
    target, pred = hand(1, 8), hand(2, 8)
    errors = {name: metrics.mean_epe(metrics.keypoint_errors(metrics.align(pred, target, name), target))
              for name in ("root", "procrustes")}
    assert errors["procrustes"] < errors["root"]


# ---------------------------------------------------------------- accumulator and benchmark row

def test_evaluator_accumulates_batches_like_one_big_batch():
    target, pred = hand(1, 6), hand(2, 6)
    visibility = (torch.rand(6, 21, generator=torch.Generator().manual_seed(0)) > 0.3).float()
    whole = metrics.KeypointEvaluator()
    whole.add(pred, target, visibility)
    parts = metrics.KeypointEvaluator()
    parts.add(pred[:2], target[:2], visibility[:2])
    parts.add(pred[2:], target[2:], visibility[2:])
    assert len(parts) == 6
    assert parts.mean() == pytest.approx(whole.mean())
    assert parts.median() == pytest.approx(whole.median())
    assert parts.auc(0.0, 0.1, 50) == pytest.approx(whole.auc(0.0, 0.1, 50))
    summary = parts.summary(0.0, 0.1, 11)
    assert len(summary["pck"]) == 11 and 0.0 <= summary["auc"] <= 1.0
    assert summary["pck"] == sorted(summary["pck"])          # a PCK curve never decreases


def test_benchmark_row_in_millimetres_and_pixels():
    target = hand(count=4)
    pred = target.clone()
    pred[..., 0] += 0.010                       # 10 mm off along x, everywhere
    target_2d = torch.zeros(4, 21, 2)
    pred_2d = target_2d + torch.tensor([3.0, 4.0])   # 5 px off
    row = metrics.benchmark_row(pred, target, pred_2d, target_2d, alignment="none")
    assert row["epe_3d_mm"] == pytest.approx(10.0)
    assert row["median_3d_mm"] == pytest.approx(10.0)
    assert row["auc_20_50"] == pytest.approx(1.0)           # every error is below 20 mm
    assert row["epe_2d_px"] == pytest.approx(5.0)
    assert row["epe_procrustes_mm"] == pytest.approx(0.0, abs=1e-6)   # a translation is removed
    assert row["num_samples"] == 4
    # Root alignment removes the translation too; no 2D gives NaN.
    row = metrics.benchmark_row(pred, target, alignment="root")
    assert row["epe_3d_mm"] == pytest.approx(0.0, abs=1e-9) and math.isnan(row["epe_2d_px"])
    # 34.5 mm errors: PCK is 0 below 35 mm and 1 from there, on the 20-50 mm grid of 1 mm steps.
    row = metrics.benchmark_row(target + torch.tensor([0.0345, 0, 0], dtype=torch.float64), target, alignment="none")
    thresholds = np.linspace(20, 50, 31)
    expected = np.trapezoid((thresholds >= 35).astype(float), thresholds) / 30      # = 15.5 / 30
    assert row["auc_20_50"] == pytest.approx(expected)
    # The curve behind the AUC, on other thresholds, after the same alignment: 0 below 34.5 mm, 1 above.
    row = metrics.benchmark_row(target + torch.tensor([0.0345, 0, 0], dtype=torch.float64), target, alignment="none",
                                pck_thresholds_mm=(0.0, 34.0, 35.0, 50.0))
    assert row["pck_3d"] == pytest.approx([0.0, 0.0, 1.0, 1.0])
    assert "pck_3d" not in metrics.benchmark_row(pred, target, alignment="root")


# ---------------------------------------------------------------- errors

def test_errors_name_the_argument():
    with pytest.raises(ValueError, match="pred, target"):
        metrics.keypoint_errors(np.zeros((21, 3)), np.zeros((21, 3)))
    with pytest.raises(ValueError, match="visibility"):
        metrics.keypoint_errors(np.zeros((2, 21, 3)), np.zeros((2, 21, 3)), np.ones(21))
    with pytest.raises(ValueError, match="alignment"):
        metrics.align(np.zeros((2, 21, 3)), np.zeros((2, 21, 3)), "similarity")
    with pytest.raises(ValueError, match="thresholds"):
        metrics.auc([1.0], [1.0])
    with pytest.raises(ValueError, match="no batch"):
        metrics.KeypointEvaluator().mean()
