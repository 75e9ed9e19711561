"""Evaluation: run a method over a dataset, score every field of its ``Prediction``, and the
benchmark table of every shipped method.

Scores (``handlib.metrics``, the papers' definitions):

* 2D: mean end-point error in pixels of the input crop, over visible keypoints;
* 3D (when the prediction has keypoints): mean and median EPE in mm after the method's alignment
  (``Method.alignment``), AUC of the 3D PCK over 20-50 mm, and the Procrustes-aligned EPE
  (PA-MPJPE: the shape alone);
* mesh (when the prediction has vertices and the samples have MANO parameters): the mean
  per-vertex error in mm after Procrustes alignment, against the true MANO mesh.
"""
from __future__ import annotations

import math
import time

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, default_collate

from handlib import metrics
from handlib.methods import Method, Prediction
from handlib.runtime import get_device, to_device

TARGET_KEYS = ("keypoints_2d", "keypoints_3d", "visibility", "has_3d", "pose", "betas", "has_mano")


@torch.no_grad()
def predict_dataset(method: Method, model: nn.Module, config, dataset: Dataset, device=None,
                    batch_size: int = 32, predict=None) -> tuple[Prediction, dict]:
    """Run a method over a dataset, in order, in eval mode.

    Args:
        method, model, config: the method, its model and the config it was built with.
        dataset: a Dataset of sample dicts of ``config.image_size`` px.
        device: None = CUDA when available.
        batch_size: samples per forward pass.
        predict: ``(model, batch, config) -> Prediction`` instead of ``method.predict`` (ablations).

    Returns:
        (the ``Prediction`` of every sample on the CPU, {key: tensor} the samples' ground truth
        ``TARGET_KEYS``).
    """
    device = get_device(device)
    predict = predict or method.predict
    model.eval()
    predictions, targets = [], {key: [] for key in TARGET_KEYS}
    for batch in DataLoader(dataset, batch_size=batch_size, shuffle=False, collate_fn=default_collate):
        predictions.append(predict(model, to_device(batch, device), config).detach("cpu"))
        for key in TARGET_KEYS:
            targets[key].append(batch[key])
    return Prediction.concatenate(predictions), {key: torch.cat(values) for key, values in targets.items()}


def mesh_targets(pose: torch.Tensor, betas: torch.Tensor) -> torch.Tensor:
    """The true MANO mesh (B, 778, 3) of samples' ``pose`` (B, 48) and ``betas`` (B, 10), metres,
    up to a translation (Procrustes removes it)."""
    from handlib.mano.layer import ManoLayer

    layer = ManoLayer(flat_hand_mean=True)
    return layer(hand_pose=pose[:, 3:], betas=betas, global_orient=pose[:, :3]).vertices


def score(prediction: Prediction, targets: dict, alignment: str = "root") -> dict:
    """The benchmark numbers of a prediction: every field that is present is scored.

    Args:
        prediction: a ``Prediction`` of N samples.
        targets: {key: tensor} of the same N samples (``TARGET_KEYS``).
        alignment: how ``keypoints_3d`` is aligned before the headline 3D error (``metrics.ALIGNMENTS``).

    Samples the prediction has no answer for (NaN keypoints: a detector that found no hand, see
    ``Prediction``) are left out of every number; ``num_answered`` says how many were scored.

    Returns:
        dict: ``epe_2d_px``; with 3D keypoints ``epe_3d_mm``, ``median_3d_mm``, ``auc_20_50``,
        ``epe_procrustes_mm``, ``alignment``; with vertices ``mesh_error_mm``; ``num_samples`` (all)
        and ``num_answered`` (scored). With no answered sample the errors are NaN.
    """
    num_samples, answered = len(prediction), prediction.answered()
    if not answered.all():
        prediction, targets = prediction.select(answered), {key: value[answered] for key, value in targets.items()}
    visible = targets["visibility"]
    row = {"epe_2d_px": metrics.mean_epe(metrics.keypoint_errors(prediction.keypoints_2d, targets["keypoints_2d"],
                                                                 visible))}
    has_3d = targets["has_3d"].bool()
    if prediction.keypoints_3d is not None and has_3d.any():
        row_3d = metrics.benchmark_row(prediction.keypoints_3d[has_3d], targets["keypoints_3d"][has_3d],
                                       alignment=alignment)
        row.update({key: value for key, value in row_3d.items() if key not in ("epe_2d_px", "num_samples")})
    has_mano = targets["has_mano"].bool()
    if prediction.vertices is not None and has_mano.any():
        true_mesh = mesh_targets(targets["pose"][has_mano], targets["betas"][has_mano])
        aligned = metrics.align_procrustes(prediction.vertices[has_mano], true_mesh)
        row["mesh_error_mm"] = float((aligned - true_mesh.double()).norm(dim=-1).mean() * 1000.0)
    row["num_samples"], row["num_answered"] = num_samples, len(prediction)
    return row


def evaluate_model(method: Method, model: nn.Module, config, dataset: Dataset | None = None, device=None,
                   batch_size: int = 32, predict=None) -> dict:
    """``score`` of a model on a dataset (default: the method's fixed test set of ``config``)."""
    dataset = method.test_data(config, config.test_samples) if dataset is None else dataset
    prediction, targets = predict_dataset(method, model, config, dataset, device, batch_size, predict)
    return score(prediction, targets, method.alignment)


def evaluate(name: str, profile: str = "full", checkpoint=None, run_dir=None, device=None,
             dataset: Dataset | None = None) -> dict:
    """Load a trained method (``handlib.checkpoints.load_model``) and ``evaluate_model`` it.

    Args:
        name: "method" or "method:variant".
        profile, checkpoint, run_dir: which checkpoint (default: the shipped ``full`` one).
        device: None = CUDA when available.
        dataset: None = the fixed synthetic test set of the checkpoint's config.
    """
    from handlib.checkpoints import load_model

    method, model, config = load_model(name, profile, checkpoint, device, run_dir)
    return evaluate_model(method, model, config, dataset, device)


TABLE_COLUMNS = {"method": "method", "profile": "profile", "epe_3d_mm": "3D EPE (mm)", "median_3d_mm": "median (mm)",
                 "auc_20_50": "AUC 20-50 mm", "epe_procrustes_mm": "PA EPE (mm)", "mesh_error_mm": "mesh PA (mm)",
                 "epe_2d_px": "2D EPE (px)", "alignment": "3D alignment", "num_samples": "samples"}


def format_table(rows: list[dict], columns: dict | None = None) -> str:
    """A markdown table of rows (numbers with 2 or 3 decimals; "-" where a row has no value).

    Args:
        rows: list of dicts.
        columns: {key: header}; None = ``TABLE_COLUMNS``, less the columns no row has.
    """
    columns = columns or {key: header for key, header in TABLE_COLUMNS.items() if any(key in row for row in rows)}

    def cell(key, value):
        if value is None or (isinstance(value, float) and math.isnan(value)):
            return "-"
        if isinstance(value, float):
            return f"{value:.3f}" if key.startswith("auc") else f"{value:.2f}"
        return str(value)

    lines = ["| " + " | ".join(columns.values()) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(cell(key, row.get(key)) for key in columns) + " |" for row in rows]
    return "\n".join(lines)


@torch.no_grad()
def milliseconds_per_image(method: Method, model: nn.Module, config, dataset: Dataset, count: int = 8,
                           device=None) -> float:
    """The median wall time of ``method.predict`` on one image at a time (batch 1, after one warm-up
    run), milliseconds: what a user waits for one photo's answer on this machine."""
    device = get_device(device)
    model.eval()
    times = []
    for i in range(count + 1):
        batch = to_device(default_collate([dataset[i % len(dataset)]]), device)
        started = time.perf_counter()
        method.predict(model, batch, config)
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - started)
    return 1000.0 * float(np.median(times[1:]))


def benchmark(profile: str = "full", names: list[str] | None = None, device=None, run_dir=None,
              verbose: bool = False) -> list[dict]:
    """Evaluate every method and variant that has a checkpoint, each on its fixed test set.

    Besides ``score``'s numbers, each row has the model's size ("parameters"), the time it takes to
    answer one image on this machine ("ms_per_image", ``milliseconds_per_image``) and the wall time
    of its training ("train_minutes", from the checkpoint's record: the machine it names).

    Args:
        profile: whose checkpoints ("full": the shipped ones).
        names: "method" or "method:variant" names; None = every registered one.
        device: None = CUDA when available.
        run_dir: None = the shipped checkpoints; a folder = your runs there.
        verbose: print the table, and the names that have no checkpoint.

    Returns:
        list of dicts: {"method", "profile", "checkpoint", ``score``'s keys, "parameters",
        "ms_per_image", "train_minutes"}.
    """
    from handlib.checkpoints import find_checkpoint, load_model, read_checkpoint
    from handlib.registry import available_names

    rows, missing = [], []
    for name in names or available_names():
        try:
            path = find_checkpoint(name, profile, run_dir)
        except FileNotFoundError:
            missing.append(name)
            continue
        method, model, config = load_model(name, profile, path, device)
        test_set = method.test_data(config, config.test_samples)
        rows.append({"method": name, "profile": profile, "checkpoint": str(path),
                     **evaluate_model(method, model, config, test_set, device),
                     "parameters": sum(p.numel() for p in model.parameters()),
                     "ms_per_image": milliseconds_per_image(method, model, config, test_set, device=device),
                     "train_minutes": read_checkpoint(path, "cpu")["provenance"]["wall_time_s"] / 60.0})
    if verbose:
        print(format_table(rows, BENCHMARK_COLUMNS) if rows else f"no {profile} checkpoints found")
        if missing:
            print(f"no {profile} checkpoint: {', '.join(missing)}; train with `python -m handlib train NAME`")
    return rows


BENCHMARK_COLUMNS = {**{key: label for key, label in TABLE_COLUMNS.items() if key != "num_samples"},
                     "parameters": "parameters", "ms_per_image": "ms / image", "train_minutes": "train (min)"}


# --------------------------------------------------------------------------------------------
# The real samples (data/samples), next to two baselines that use no image
# --------------------------------------------------------------------------------------------

REAL_COLUMNS = {"method": "method", "dataset": "real samples", "num_samples": "samples", "num_answered": "scored",
                "epe_2d_px": "2D EPE (px)", "epe_2d_percent": "2D EPE (% of crop)", "num_3d": "with 3D",
                "epe_procrustes_mm": "PA EPE (mm)"}
BASELINES = ("crop centre", "mean training pose")
PEER = "MediaPipe Hands (peer)"


def real_sample_sets(image_size: int) -> dict:
    """The repository's real samples as right hands, grouped by dataset.

    Left hands are mirrored (``mirror_sample``): the course's methods model right hands, and a
    mirror changes no error.

    Returns:
        {dataset name: a list of sample dicts of ``image_size`` px crops}.
    """
    from handlib.data.datasets import mirror_sample
    from handlib.data.samples import real_samples

    sets = {}
    for item in real_samples(size=image_size):
        sample = item["sample"] if item["sample"]["is_right"] > 0.5 else mirror_sample(item["sample"])
        sets.setdefault(item["dataset"], []).append(sample)
    return sets


def image_free_baselines(count: int, image_size: int, train_set: Dataset) -> dict:
    """The two floors a method must beat, for ``count`` samples (no image is looked at).

    * "crop centre": every keypoint at the centre of the crop; no 3D.
    * "mean training pose": the training set's mean 2D keypoints (pixels of its crops) and mean
      root-relative 3D pose (metres).

    Args:
        count: number of predictions.
        image_size: side of the crops, pixels.
        train_set: the synthetic training set whose mean is taken (crops of ``image_size`` px).

    Returns:
        {baseline name: ``Prediction`` of ``count`` samples}.
    """
    batch = default_collate([train_set[i] for i in range(len(train_set))])
    mean_2d = torch.nan_to_num(batch["keypoints_2d"]).mean(0)                               # (21, 2)
    relative = batch["keypoints_3d"] - batch["keypoints_3d"][:, :1]
    mean_3d = torch.nan_to_num(relative[batch["has_3d"]]).mean(0)                            # (21, 3)
    centre = torch.full((count, 21, 2), image_size / 2.0)
    return {"crop centre": Prediction(keypoints_2d=centre),
            "mean training pose": Prediction(keypoints_2d=mean_2d.expand(count, -1, -1).clone(),
                                             keypoints_3d=mean_3d.expand(count, -1, -1).clone())}


def _real_row(name: str, dataset: str, prediction: Prediction, targets: dict, image_size: int) -> dict:
    row = score(prediction, targets, alignment="procrustes")
    return {"method": name, "dataset": dataset, "num_samples": row["num_samples"], "num_answered": row["num_answered"],
            "epe_2d_px": row["epe_2d_px"], "epe_2d_percent": 100.0 * row["epe_2d_px"] / image_size,
            "num_3d": int((targets["has_3d"].bool() & prediction.answered()).sum()),
            "epe_procrustes_mm": row.get("epe_procrustes_mm")}


def score_real_samples(name: str, method: Method, model: nn.Module, config, dataset: str, samples: list,
                       device=None, predict=None) -> dict:
    """One row of the real-sample table: ``model`` on ``samples`` (one dataset of ``real_sample_sets``).

    ``predict``: as in ``predict_dataset`` (None: ``method.predict``).

    Returns:
        dict with the keys of ``REAL_COLUMNS``.
    """
    prediction, _ = predict_dataset(method, model, config, samples, device, predict=predict)
    return _real_row(name, dataset, prediction, default_collate(samples), config.image_size)


def score_on_real_samples(name: str, method: Method, model: nn.Module, config, device=None, predict=None) -> list[dict]:
    """``score_real_samples`` on every set of ``real_sample_sets``: one row per dataset, with the keys
    of ``REAL_COLUMNS``."""
    return [score_real_samples(name, method, model, config, dataset, samples, device, predict)
            for dataset, samples in real_sample_sets(config.image_size).items()]


def real_benchmark(names: list[str] | None = None, profile: str = "full", device=None, run_dir=None,
                   baseline_samples: int = 2048, peers: bool = False, verbose: bool = False) -> list[dict]:
    """Every method with a checkpoint on the repository's real samples, dataset by dataset, next to
    the image-free baselines (``image_free_baselines``), with the same metric code as the synthetic
    test set: 2D EPE in pixels of the crop and in % of its side (the crop is the hand's box with a
    margin), and the Procrustes-aligned 3D EPE where a sample has 3D.

    With ``peers``, MediaPipe Hands (``handlib.peers.mediapipe_hands``) gets a row per dataset,
    on the same crops. It scores only the images where it found the hand (column "scored"; the
    course's methods answer every image); where it is not installed, one line says how to install
    it and the table goes on without it.

    Args:
        names: "method" or "method:variant" names; None = every registered one.
        profile, device, run_dir: which checkpoints (default: the shipped ``full`` ones).
        baseline_samples: synthetic training samples the mean pose is taken over.
        peers: add MediaPipe Hands' rows when it is available.
        verbose: print the table.

    Returns:
        list of dicts with the keys of ``REAL_COLUMNS``.
    """
    from handlib.checkpoints import find_checkpoint, load_model
    from handlib.methods import synthetic_training_set
    from handlib.registry import available_names

    models = []
    for name in names or available_names():
        try:
            models.append((name, *load_model(name, profile, find_checkpoint(name, profile, run_dir), device)))
        except FileNotFoundError:
            continue
    sizes = {config.image_size for _, _, _, config in models} or {128}
    if peers:
        from handlib.peers import mediapipe_hands, unavailable_reason

        reason = unavailable_reason()
        if reason is not None:
            print(f"{PEER}: not run. {reason}")
        peers = reason is None
    rows = []
    for image_size in sorted(sizes):
        train_set = synthetic_training_set(baseline_samples, 0, image_size)
        for dataset, samples in real_sample_sets(image_size).items():
            targets = default_collate(samples)
            for name, prediction in image_free_baselines(len(samples), image_size, train_set).items():
                rows.append(_real_row(name, dataset, prediction, targets, image_size))
            for name, method, model, config in models:
                if config.image_size == image_size:
                    rows.append(score_real_samples(name, method, model, config, dataset, samples, device))
            if peers:
                prediction = mediapipe_hands(targets["image"], is_right=targets["is_right"])
                rows.append(_real_row(PEER, dataset, prediction, targets, image_size))
    if verbose:
        print(format_table(rows, REAL_COLUMNS))
        if peers:
            print(f"{PEER}: errors over the images where it found the hand only (column scored; the course's "
                  "methods answer every image). Its 3D: MediaPipe's world landmarks.")
    return rows
