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


def score(prediction: Prediction, targets: dict, alignment: str = "root", pck_thresholds_mm=None) -> dict:
    """The benchmark numbers of a prediction: every field that is present is scored.

    Args:
        prediction: a ``Prediction`` of N samples.
        targets: {key: tensor} of the same N samples (``TARGET_KEYS``).
        alignment: how ``keypoints_3d`` is aligned before the headline 3D error (``metrics.ALIGNMENTS``).
        pck_thresholds_mm: None, or thresholds (e.g. ``PCK_THRESHOLDS_MM``): add the 3D PCK curve
            "pck_3d" behind the AUC (``metrics.benchmark_row``), None for a prediction without 3D.

    Samples the prediction has no answer for (NaN keypoints: a detector that found no hand, see
    ``Prediction``) are left out of every number; ``num_answered`` says how many were scored.

    Returns:
        dict: ``epe_2d_px``; with 3D keypoints ``epe_3d_mm``, ``median_3d_mm``, ``auc_20_50``,
        ``epe_procrustes_mm``, ``alignment`` (and ``pck_3d``); with vertices ``mesh_error_mm``;
        ``num_samples`` (all) and ``num_answered`` (scored). With no answered sample the errors are NaN.
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
                                       alignment=alignment, pck_thresholds_mm=pck_thresholds_mm)
        row.update({key: value for key, value in row_3d.items() if key not in ("epe_2d_px", "num_samples")})
    elif pck_thresholds_mm is not None:
        row["pck_3d"] = None
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
                           device=None, predict=None) -> float:
    """The median wall time of ``method.predict`` on one image at a time (batch 1, after one warm-up
    run), milliseconds: what a user waits for one photo's answer on this machine.

    ``predict``: as in ``predict_dataset`` (None: ``method.predict``; e.g. a peer's function)."""
    device = get_device(device)
    predict = predict or method.predict
    model.eval()
    times = []
    for i in range(count + 1):
        batch = to_device(default_collate([dataset[i % len(dataset)]]), device)
        started = time.perf_counter()
        predict(model, batch, config)
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - started)
    return 1000.0 * float(np.median(times[1:]))


def dataset_targets(dataset: Dataset, keys: tuple = TARGET_KEYS, batch_size: int = 64) -> dict:
    """{key: tensor} of ``keys`` over a whole dataset, in order (the ``targets`` of ``predict_dataset``,
    for answers that need no model: the baselines, a peer)."""
    parts = {key: [] for key in keys}
    for batch in DataLoader(dataset, batch_size=batch_size, shuffle=False, collate_fn=default_collate):
        for key in keys:
            parts[key].append(batch[key])
    return {key: torch.cat(values) for key, values in parts.items()}


def trained_checkpoints(names: list[str] | None = None, profile: str = "full", run_dir=None) -> dict:
    """{name: checkpoint path} of the names that have a checkpoint (``checkpoints.find_checkpoint``), in
    the order given; names without one are left out.

    Args:
        names: "method" or "method:variant" names; None = every registered one (``registry.available_names``).
        profile: whose checkpoints ("full": the shipped ones).
        run_dir: None = the shipped checkpoints; a folder = your runs there.
    """
    from handlib.checkpoints import find_checkpoint
    from handlib.registry import available_names

    found = {}
    for name in available_names() if names is None else names:
        try:
            found[name] = find_checkpoint(name, profile, run_dir)
        except FileNotFoundError:
            continue
    return found


def trained_models(names: list[str] | None = None, profile: str = "full", device=None, run_dir=None) -> dict:
    """{name: (method, model, config)} of the names that have a checkpoint (``trained_checkpoints``,
    loaded by ``checkpoints.load_model``); names without one are left out."""
    from handlib.checkpoints import load_model

    return {name: load_model(name, profile, path, device)
            for name, path in trained_checkpoints(names, profile, run_dir).items()}


# --------------------------------------------------------------------------------------------
# The benchmark on the fixed synthetic test set
# --------------------------------------------------------------------------------------------

# The thresholds of the 3D PCK curves of the benchmark (``benchmark(curves=True)``): 0 to 50 mm, 1 mm apart.
PCK_THRESHOLDS_MM = tuple(float(t) for t in range(51))
BASELINES = ("crop centre", "mean training pose")
PEER = "MediaPipe Hands (peer)"


def peer_predict(model, batch, config) -> Prediction:
    """MediaPipe Hands (``handlib.peers``) on a batch's crops, as a ``predict`` function of
    ``predict_dataset`` (the model and config are unused)."""
    from handlib.peers import mediapipe_hands

    return mediapipe_hands(batch["image"].cpu(), is_right=batch["is_right"].cpu())


def peer_unavailable() -> str | None:
    """Why MediaPipe Hands cannot run here (the ``peers`` extra or its model file missing), or None."""
    from handlib.peers import unavailable_reason

    return unavailable_reason()


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
    batch = dataset_targets(train_set, ("keypoints_2d", "keypoints_3d", "has_3d"))
    mean_2d = torch.nan_to_num(batch["keypoints_2d"]).mean(0)                               # (21, 2)
    relative = batch["keypoints_3d"] - batch["keypoints_3d"][:, :1]
    mean_3d = torch.nan_to_num(relative[batch["has_3d"].bool()]).mean(0)                     # (21, 3)
    centre = torch.full((count, 21, 2), image_size / 2.0)
    return {"crop centre": Prediction(keypoints_2d=centre),
            "mean training pose": Prediction(keypoints_2d=mean_2d.expand(count, -1, -1).clone(),
                                             keypoints_3d=mean_3d.expand(count, -1, -1).clone())}


def method_row(name: str, method: Method, model: nn.Module, config, test_set: Dataset, checkpoint=None,
               device=None, curves: bool = False) -> dict:
    """One method's row of the benchmark: ``score`` on ``test_set`` after the method's own alignment
    (``Method.alignment``), its size, its speed and its training time.

    Args:
        name: the row's name ("method" or "method:variant").
        method, model, config: the trained method (``checkpoints.load_model``).
        test_set: sample dicts of ``config.image_size`` px (the fixed test set, or the first of it).
        checkpoint: its checkpoint file (for "checkpoint" and "train_minutes", from its record), or None.
        device: None = CUDA when available.
        curves: add the 3D PCK curve "pck_3d" at ``PCK_THRESHOLDS_MM``.

    Returns:
        {"method", "checkpoint", ``score``'s keys, "parameters", "ms_per_image" (batch 1, this
        machine), "train_minutes" (the wall time of its training, from its record; None without one)}.
    """
    from handlib.checkpoints import read_checkpoint

    prediction, targets = predict_dataset(method, model, config, test_set, device)
    train_minutes = None
    if checkpoint is not None:
        train_minutes = read_checkpoint(checkpoint, "cpu")["provenance"]["wall_time_s"] / 60.0
    return {"method": name, "checkpoint": None if checkpoint is None else str(checkpoint),
            **score(prediction, targets, method.alignment, PCK_THRESHOLDS_MM if curves else None),
            "parameters": sum(p.numel() for p in model.parameters()),
            "ms_per_image": milliseconds_per_image(method, model, config, test_set, device=device),
            "train_minutes": train_minutes}


def floor_rows(test_set: Dataset, image_size: int, baselines: bool = True, peers: bool = False,
               baseline_samples: int = 2048, curves: bool = False) -> list[dict]:
    """The rows that frame the benchmark on a synthetic test set, scored by ``score`` like the methods:
    the two image-free baselines (``image_free_baselines``: the floor) and MediaPipe Hands
    (``handlib.peers``: a system trained on real photos).

    The mean training pose is root-relative and metric (the average training hand's size): its 3D
    error is after "root" alignment. MediaPipe's 3D is its own hand size and its axes are only
    roughly the camera's: its headline 3D error is after "procrustes" alignment (= its PA EPE), and
    it is scored on the images where it finds a hand ("num_answered").

    Args:
        test_set: the synthetic test set of ``image_size`` px crops.
        image_size: side of its crops, pixels.
        baselines: add the two baselines.
        peers: add MediaPipe Hands where it is installed (else print why not).
        baseline_samples: synthetic training samples the mean pose is taken over.
        curves: add "pck_3d" (``score``) to the rows.

    Returns:
        list of dicts with the keys of ``method_row`` ("parameters", "train_minutes" None).
    """
    from handlib.methods import synthetic_training_set

    thresholds = PCK_THRESHOLDS_MM if curves else None
    none = {"checkpoint": None, "parameters": None, "ms_per_image": None, "train_minutes": None}
    rows = []
    if baselines:
        targets = dataset_targets(test_set)
        train_set = synthetic_training_set(baseline_samples, 0, image_size)
        for name, prediction in image_free_baselines(len(test_set), image_size, train_set).items():
            rows.append({"method": name, **none, **score(prediction, targets, "root", thresholds)})
    if peers:
        reason = peer_unavailable()
        if reason is not None:
            print(f"{PEER}: not run. {reason}")
        else:
            identity = nn.Identity()
            prediction, targets = predict_dataset(None, identity, None, test_set, "cpu", predict=peer_predict)
            rows.append({"method": PEER, **none, **score(prediction, targets, "procrustes", thresholds),
                         "ms_per_image": milliseconds_per_image(None, identity, None, test_set, device="cpu",
                                                                predict=peer_predict)})
    return rows


def benchmark(profile: str = "full", names: list[str] | None = None, device=None, run_dir=None,
              verbose: bool = False, baselines: bool = False, peers: bool = False, curves: bool = False,
              test_samples: int | None = None, baseline_samples: int = 2048) -> list[dict]:
    """Evaluate every method and variant that has a checkpoint, each on its fixed test set
    (``method_row``), then the floors on the synthetic one (``floor_rows``).

    Args:
        profile: whose checkpoints ("full": the shipped ones).
        names: "method" or "method:variant" names; None = every registered one.
        device: None = CUDA when available.
        run_dir: None = the shipped checkpoints; a folder = your runs there.
        verbose: print the table, and the names that have no checkpoint.
        baselines: add the two image-free baselines on the course's synthetic test set.
        peers: add MediaPipe Hands there too, where the ``peers`` extra is installed.
        curves: add each row's 3D PCK curve, "pck_3d", at ``PCK_THRESHOLDS_MM``.
        test_samples: score the first this many images of each test set (None: all of it,
            ``config.test_samples``): a quick look with the same code.
        baseline_samples: synthetic training samples the mean training pose is taken over.

    Returns:
        list of dicts (``method_row``'s keys and "profile"): the methods first, in the order of
        ``names``, then the baselines and the peer.
    """
    from handlib.checkpoints import load_model
    from handlib.methods import synthetic_test_set
    from handlib.registry import available_names

    if test_samples is not None and (int(test_samples) != test_samples or test_samples < 1):
        raise ValueError(f"test_samples: expected a positive number of images or None, got {test_samples!r}")
    found = trained_checkpoints(names, profile, run_dir)
    rows, floors = [], {}
    for name, path in found.items():
        method, model, config = load_model(name, profile, path, device)
        test_set = method.test_data(config, test_samples or config.test_samples)
        rows.append({"method": name, "profile": profile,
                     **method_row(name, method, model, config, test_set, path, device, curves)})
        if method.test_data is synthetic_test_set:
            floors.setdefault(config.image_size, test_set)
    if baselines or peers:
        for image_size, test_set in floors.items():
            rows += [{"method": row["method"], "profile": "-", **row}
                     for row in floor_rows(test_set, image_size, baselines, peers, baseline_samples, curves)]
    if verbose:
        print(format_table(rows, BENCHMARK_COLUMNS) if rows else f"no {profile} checkpoints found")
        for row in rows:
            if row["num_answered"] != row["num_samples"]:
                print(f"{row['method']}: scored on the {row['num_answered']} of {row['num_samples']} images where "
                      "it found a hand")
        missing = [name for name in (available_names() if names is None else names) if name not in found]
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
                   baseline_samples: int = 2048, peers: bool = False, verbose: bool = False,
                   baselines: bool = True) -> list[dict]:
    """Every method with a checkpoint on the repository's real samples, dataset by dataset, next to
    the image-free baselines (``image_free_baselines``), with the same metric code as the synthetic
    test set: 2D EPE in pixels of the crop and in % of its side (the crop is the hand's box with a
    margin), and the Procrustes-aligned 3D EPE where a sample has 3D.

    With ``peers``, MediaPipe Hands (``handlib.peers.mediapipe_hands``) gets a row per dataset,
    on the same crops. It scores only the images where it found the hand (column "scored"; the
    course's methods answer every image); where it is not installed, one line says how to install
    it and the table goes on without it.

    Args:
        names: "method" or "method:variant" names; None = every registered one; [] = none (the
            baselines and the peer alone).
        profile, device, run_dir: which checkpoints (default: the shipped ``full`` ones).
        baseline_samples: synthetic training samples the mean pose is taken over.
        peers: add MediaPipe Hands' rows when it is available.
        verbose: print the table.
        baselines: add the two image-free baselines' rows.

    Returns:
        list of dicts with the keys of ``REAL_COLUMNS``, dataset by dataset: the baselines, the
        methods (``score_real_samples``), the peer.
    """
    from handlib.methods import synthetic_training_set

    models = trained_models(names, profile, device, run_dir)
    sizes = {config.image_size for _, _, config in models.values()} or {128}
    if peers:
        reason = peer_unavailable()
        if reason is not None:
            print(f"{PEER}: not run. {reason}")
        peers = reason is None
    rows = []
    for image_size in sorted(sizes):
        train_set = synthetic_training_set(baseline_samples, 0, image_size) if baselines else None
        for dataset, samples in real_sample_sets(image_size).items():
            targets = default_collate(samples)
            if baselines:
                for name, prediction in image_free_baselines(len(samples), image_size, train_set).items():
                    rows.append(_real_row(name, dataset, prediction, targets, image_size))
            for name, (method, model, config) in models.items():
                if config.image_size == image_size:
                    rows.append(score_real_samples(name, method, model, config, dataset, samples, device))
            if peers:
                prediction = peer_predict(None, targets, None)
                rows.append(_real_row(PEER, dataset, prediction, targets, image_size))
    if verbose:
        print(format_table(rows, REAL_COLUMNS))
        if peers:
            print(f"{PEER}: errors over the images where it found the hand only (column scored; the course's "
                  "methods answer every image). Its 3D: MediaPipe's world landmarks.")
    return rows


# --------------------------------------------------------------------------------------------
# Error by condition: the challenges of chapter 0, measured on every method
# --------------------------------------------------------------------------------------------

# The conditions and the values each is set to, one at a time, the others at the fixed test set's
# defaults. Four are knobs of the synthetic engine (``handlib.data.synth.SynthConfig``): "image_size"
# renders the same hands and cameras at fewer pixels, then scales the crops up to the methods' input
# (``ResizedSet``); "distractors" puts a skin-coloured distractor behind every hand (a second hand in
# 60 % of them); "two_hands" puts the other hand over every hand, interacting with it. "viewpoint" groups the fixed test set's own hands by the side the camera sees
# (``viewpoint_of``): the engine's knob knows only "palm towards" and "palm away", not the side view.
VIEWPOINTS = ("palm", "side", "back")
CONDITIONS = {
    "occlusion": (0.0, 0.3, 0.6, 1.0),
    "viewpoint": VIEWPOINTS,
    "image_size": (24, 32, 64, 128),
    "pose_kind": ("open", "relaxed", "pinch", "point", "power", "fist"),
    "distractors": (0.0, 1.0),
    "two_hands": (0.0, 1.0),
}
CONDITION_COLUMNS = {"method": "method", "condition": "condition", "value": "value", "epe_3d_mm": "3D EPE (mm)",
                     "epe_procrustes_mm": "PA EPE (mm)", "epe_2d_px": "2D EPE (px)", "auc_20_50": "AUC 20-50 mm",
                     "num_samples": "samples"}
VIEWPOINT_POOL = 512            # the fixed test set's hands that "viewpoint" groups (methods' test_samples)


def palm_facing(keypoints_3d: torch.Tensor) -> torch.Tensor:
    """How squarely the palm faces the camera: the cosine of the angle between the palm's normal and
    the ray from the wrist to the camera (at the origin).

    The normal of a right hand's palm is n = (index MCP - wrist) x (pinky MCP - wrist): seen
    palm-on, fingers up, the index is right of the pinky and n points at the viewer.

    Args:
        keypoints_3d: (N, 21, 3) right hands, metres, OpenCV camera frame (course order).

    Returns:
        (N,) in [-1, 1]: 1 the palm faces the camera, -1 the back of the hand does, 0 edge-on.
    """
    from handlib.methods import check_shape

    check_shape("keypoints_3d", keypoints_3d, (None, 21, 3), " metres, camera frame")
    wrist, index, pinky = keypoints_3d[:, 0], keypoints_3d[:, 5], keypoints_3d[:, 17]
    normal = torch.linalg.cross(index - wrist, pinky - wrist)                                 # (N, 3)
    return torch.nn.functional.cosine_similarity(normal, -wrist, dim=-1)


def viewpoint_of(keypoints_3d: torch.Tensor) -> list[str]:
    """Each hand's viewpoint from ``palm_facing``: "palm" (within 60 degrees of palm-on, cos > 0.5),
    "back" (cos < -0.5) or "side" (in between). For hands turned uniformly at random a quarter
    are "palm", a quarter "back" and half "side"."""
    facing = palm_facing(keypoints_3d)
    return ["palm" if c > 0.5 else "back" if c < -0.5 else "side" for c in facing.tolist()]


class ResizedSet(Dataset):
    """A dataset of sample dicts at another resolution: every whole image scaled to ``size`` x
    ``size`` (``crop_to_hand`` with the whole image as the box: K and the 2D keypoints scaled with it).

    Rendered at S = 32 px and scaled to 128 px, the crop holds the information of 32 px at the
    size a method takes: the low-resolution challenge of chapter 0.
    """

    def __init__(self, dataset: Dataset, size: int):
        if int(size) != size or size < 1:
            raise ValueError(f"size: expected a positive number of pixels, got {size!r}")
        self.dataset, self.size = dataset, int(size)

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index) -> dict:
        from handlib.data.datasets import crop_to_hand

        sample = self.dataset[index]
        return crop_to_hand(sample, self.size, box=(0, 0, sample["image"].shape[-1]))


def _check_condition(condition: str, value) -> None:
    if condition not in CONDITIONS:
        raise ValueError(f"condition: expected one of {tuple(CONDITIONS)}, got {condition!r}")
    if condition == "viewpoint" and value not in VIEWPOINTS:
        raise ValueError(f"viewpoint: expected one of {VIEWPOINTS}, got {value!r}")
    if condition == "image_size" and (isinstance(value, bool) or int(value) != value or not 16 <= value <= 1024):
        raise ValueError(f"image_size: expected a whole number of pixels in [16, 1024], got {value!r}")


def _condition_config(condition: str, value, image_size: int):
    """The engine's knobs of a (condition, value) set (the defaults for "viewpoint"), at the size rendered."""
    from handlib.data import synth

    if condition == "image_size":
        return synth.make_config(image_size=int(value))
    if condition == "viewpoint":
        return synth.make_config(image_size=image_size)
    return synth.make_config(image_size=image_size, **{condition: value})


def condition_test_set(condition: str, value, num_samples: int = 64, image_size: int = 128, cache_dir=None) -> Dataset:
    """The test hands of one condition: the fixed synthetic test set's seed with one knob changed.

    Every rendered set has the test set's seed, so the hands (poses, shapes, cameras) are the same
    across the values of "occlusion", "image_size" and "distractors" (only occluders, pixels,
    distractors differ): the comparison is paired. "pose_kind" draws other poses (they are what
    changes); "viewpoint" takes the first ``num_samples`` hands of the fixed test set
    (``VIEWPOINT_POOL`` of them) that ``viewpoint_of`` puts in that group.

    Args:
        condition: a key of ``CONDITIONS``.
        value: its value; for "image_size" the resolution rendered, scaled to ``image_size``.
        num_samples: hands per set (rendered once and cached, ``synth.cached_test_set``).
        image_size: side of the crops the methods take, pixels.
        cache_dir: None = the course's cache (``methods.CACHE_DIR``).

    Returns:
        a Dataset of sample dicts of ``image_size`` px.

    Raises:
        ValueError: an unknown condition or a value the engine does not take (naming the knob).
    """
    from torch.utils.data import Subset

    from handlib.data import synth
    from handlib.methods import CACHE_DIR

    _check_condition(condition, value)
    cache_dir = CACHE_DIR if cache_dir is None else cache_dir
    config = _condition_config(condition, value, image_size)
    if condition == "viewpoint":
        pool = synth.cached_test_set(VIEWPOINT_POOL, seed=synth.DEFAULT_TEST_SEED, image_size=image_size,
                                     cache_dir=cache_dir, progress=False, config=config, workers=0)
        labels = _pool_viewpoints(pool)
        return Subset(pool, [i for i, label in enumerate(labels) if label == value][:num_samples])
    dataset = synth.cached_test_set(num_samples, seed=synth.DEFAULT_TEST_SEED, image_size=config.image_size,
                                    cache_dir=cache_dir, progress=False, config=config, workers=0)
    return dataset if config.image_size == image_size else ResizedSet(dataset, image_size)


_VIEWPOINT_LABELS: dict = {}


def _pool_viewpoints(pool) -> list[str]:
    """``viewpoint_of`` the hands of a cached set, read once per process."""
    key = str(pool.directory)
    if key not in _VIEWPOINT_LABELS:
        _VIEWPOINT_LABELS[key] = viewpoint_of(dataset_targets(pool, ("keypoints_3d",))["keypoints_3d"])
    return _VIEWPOINT_LABELS[key]


def error_by_condition(names: list[str] | None = None, conditions: dict | None = None, num_samples: int = 64,
                       profile: str = "full", device=None, run_dir=None, models: dict | None = None,
                       baselines: bool = True, baseline_samples: int = 2048, cache_dir=None,
                       image_size: int = 128) -> list[dict]:
    """Every method's error as one condition changes (``condition_test_set``), each after its own
    alignment, next to the "mean training pose" (``image_free_baselines``): the floor.

    Args:
        names: "method" or "method:variant"; None = every one that has a checkpoint; [] = none (the floor alone).
        conditions: {condition: values}; None = ``CONDITIONS``.
        num_samples: hands per (condition, value) set: 64 keeps it to seconds per method.
        profile, device, run_dir: which checkpoints (default: the shipped ``full`` ones).
        models: {name: (method, model, config)} to use instead of loading ``names`` (``trained_models``).
        baselines: add the mean training pose per set.
        baseline_samples: synthetic training samples its mean is taken over.
        cache_dir: where the sets are cached; None = the course's cache.
        image_size: the crops' side when there is no model to say it (the floor alone).

    Returns:
        list of dicts, one per (condition, value, method): {"method", "condition", "value", and
        ``score``'s keys: "epe_2d_px" (pixels of the method's input), with 3D "epe_3d_mm",
        "auc_20_50", "epe_procrustes_mm", "alignment", ..., "num_samples"}.
    """
    from handlib.methods import synthetic_training_set

    models = trained_models(names, profile, device, run_dir) if models is None else models
    conditions = CONDITIONS if conditions is None else conditions
    for condition, values in conditions.items():
        if isinstance(values, (str, bytes)) or not hasattr(values, "__iter__"):
            raise ValueError(f"conditions[{condition!r}]: expected a list of values, got {values!r}")
        for value in values:
            _check_condition(condition, value)
    sizes = sorted({config.image_size for _, _, config in models.values()} or ({image_size} if baselines else set()))
    means = {size: synthetic_training_set(baseline_samples, 0, size) for size in sizes} if baselines else {}
    rows, scored = [], {}                      # scored: the rows of a set already scored (the defaults recur)
    for condition, values in conditions.items():
        for value in values:
            for size in sizes:
                key = (_condition_config(condition, value, size).to_json(),
                       value if condition == "viewpoint" else None, size)
                if key not in scored:
                    dataset = condition_test_set(condition, value, num_samples, size, cache_dir)
                    named = []
                    for name, (method, model, config) in models.items():
                        if config.image_size == size:
                            prediction, targets = predict_dataset(method, model, config, dataset, device)
                            named.append((name, score(prediction, targets, method.alignment)))
                    if baselines:
                        targets = dataset_targets(dataset)
                        floor = image_free_baselines(len(dataset), size, means[size])["mean training pose"]
                        named.append(("mean training pose", score(floor, targets, "root")))
                    scored[key] = named
                rows += [{"method": name, "condition": condition, "value": value, **row} for name, row in scored[key]]
    return rows


# --------------------------------------------------------------------------------------------
# Plausibility: are the predicted poses hands? The pose prior's joint limits as a score
# --------------------------------------------------------------------------------------------

PLAUSIBILITY_COLUMNS = {"method": "method", "angles": "joint angles", "fraction_outside": "share outside limits",
                        "max_excess_degrees": "largest excess (deg)", "violation": "limit penalty (rad^2)",
                        "num_samples": "samples"}


def pose_plausibility(pose: torch.Tensor) -> dict:
    """The means over a set of poses of ``zhou2020.pose_implausibility`` (the pose prior's limits).

    Args:
        pose: (B, 48) MANO axis-angles, flat-hand convention (global orientation first, not judged).

    Returns:
        {"fraction_outside": the mean fraction of the 45 finger angles outside their limits,
         "max_excess_degrees": the mean over poses of the largest excess, degrees,
         "violation": the mean limit penalty, rad^2 (sum of squared excess angles)}.
    """
    from handlib.models.zhou2020 import pose_implausibility

    measured = pose_implausibility(pose.float())
    return {key: float(measured[key].mean()) for key in ("fraction_outside", "max_excess_degrees", "violation")}


def fitted_pose(keypoints_3d: torch.Tensor, frame: str = "camera", steps: int = 150) -> torch.Tensor:
    """The joint angles of keypoints: MANO fitted to them with no prior and no limits
    (``mano.fit.fit_to_keypoints_3d`` with ``pose_weight=0, limit_weight=0``), so that the angles
    are what the keypoints say, not what the fitter allows.

    Args:
        keypoints_3d: (B, 21, 3) in ``frame``: metres ("camera", "root_relative") or units of the
            scale bone ("normalized", made metric with the course hand's bone, ``predict``).
        frame: the ``Prediction.frame`` of the keypoints.
        steps: L-BFGS energy evaluations.

    Returns:
        (B, 48) axis-angles (global orientation first), flat-hand convention.
    """
    from handlib.mano import ManoLayer
    from handlib.mano.fit import fit_to_keypoints_3d
    from handlib.predict import course_scale_bone_length

    metric = keypoints_3d.float() * (course_scale_bone_length() if frame == "normalized" else 1.0)
    with torch.enable_grad():
        fit = fit_to_keypoints_3d(ManoLayer(flat_hand_mean=True), metric, steps=steps, pose_weight=0.0,
                                  limit_weight=0.0)
    return torch.cat([fit.global_orient, fit.hand_pose], 1).detach()


def plausibility(models: dict, dataset: Dataset, device=None, truth: bool = True, fit_steps: int = 150) -> list[dict]:
    """The pose prior's joint-limit penalty as a plausibility score of each method's predictions
    (``pose_plausibility``): how far their finger angles lie outside the anatomical limits.

    A method with MANO joint angles (``Prediction.mano_pose``) is judged on them; a method with 3D
    keypoints only (or a free mesh) on the angles of the MANO hand fitted to its keypoints with no
    prior (``fitted_pose``); a 2D method gets a row without numbers. With ``truth`` two reference
    rows: the samples' true poses (drawn from the prior: about 0) and the fit to the true keypoints
    (what the fitting alone adds).

    Args:
        models: {name: (method, model, config)} (``trained_models``).
        dataset: sample dicts (e.g. ``condition_test_set``); its "pose" is the ground truth.
        device: None = CUDA when available.
        truth: add the two reference rows.
        fit_steps: L-BFGS evaluations of the fits.

    Returns:
        list of dicts with the keys of ``PLAUSIBILITY_COLUMNS`` (the numbers None for a 2D method).
    """
    rows, targets = [], None
    for name, (method, model, config) in models.items():
        prediction, targets = predict_dataset(method, model, config, dataset, device)
        row = {"method": name, "num_samples": len(prediction)}
        if prediction.mano_pose is not None:
            rows.append({**row, "angles": "its MANO pose", **pose_plausibility(prediction.mano_pose)})
        elif prediction.keypoints_3d is not None:
            pose = fitted_pose(prediction.keypoints_3d, prediction.frame, fit_steps)
            rows.append({**row, "angles": "MANO fitted to its keypoints", **pose_plausibility(pose)})
        else:
            rows.append({**row, "angles": "none (2D keypoints only)", "fraction_outside": None,
                         "max_excess_degrees": None, "violation": None})
    if truth:
        targets = dataset_targets(dataset) if targets is None else targets
        count = len(targets["pose"])
        rows.append({"method": "true poses", "num_samples": count, "angles": "the samples' MANO pose",
                     **pose_plausibility(targets["pose"])})
        rows.append({"method": "true keypoints", "num_samples": count, "angles": "MANO fitted to them",
                     **pose_plausibility(fitted_pose(targets["keypoints_3d"], "camera", fit_steps))})
    return rows


# --------------------------------------------------------------------------------------------
# The papers' own numbers (../shared/reference/methods.md), for a table beside ours
# --------------------------------------------------------------------------------------------

# AUC of the 3D PCK over 20-50 mm as published, per course method and dataset. Each paper used its own
# training data, crops and alignment (e.g. ground-truth root and scale), so the numbers compare the
# datasets and protocols as much as the methods. "unverified": quoted as commonly cited, not checked
# against the paper's text. Sources: hand3d/boukhayma/3dhand PCK curves (Z&B, Cai, Boukhayma; AUC
# computed with the trapezoid rule), minimal-hand's plot.py (Zhou), the Ge et al. paper (unverified).
PUBLISHED_AUC_20_50 = {
    "zimmermann2017": {"STB": 0.948},
    "cai2018": {"STB": 0.994, "RHD": 0.887},
    "boukhayma2019": {"STB": 0.994, "Dexter+Object": 0.634, "EgoDexter": 0.574},
    "boukhayma2019:rgb2d": {"STB": 0.987, "Dexter+Object": 0.765, "EgoDexter": 0.674},
    "boukhayma2019:2d": {"STB": 0.983, "Dexter+Object": 0.758, "EgoDexter": 0.682},
    "zhou2020": {"RHD": 0.856, "STB": 0.898, "Dexter+Object": 0.948, "EgoDexter": 0.811},
    "ge2019": {"STB": 0.998, "RHD": 0.920},
}
PUBLISHED_UNVERIFIED = {("cai2018", "RHD"), ("ge2019", "STB"), ("ge2019", "RHD")}
PUBLISHED_DATASETS = ("STB", "RHD", "Dexter+Object", "EgoDexter")
PUBLISHED_COLUMNS = {"method": "method", **{dataset: f"{dataset} (paper)" for dataset in PUBLISHED_DATASETS},
                     "auc_20_50": "ours: AUC 20-50 mm", "alignment": "ours: alignment",
                     "epe_procrustes_mm": "ours: PA EPE (mm)"}


def published_rows(rows: list[dict]) -> list[dict]:
    """The papers' AUCs (``PUBLISHED_AUC_20_50``) beside ours, one row per paper's method.

    Args:
        rows: benchmark rows (``benchmark``); a method without a row gets None for ours.

    Returns:
        list of dicts with the keys of ``PUBLISHED_COLUMNS``: the published AUCs as strings ("0.948",
        with "*" where ``PUBLISHED_UNVERIFIED``; None where the paper gives none), ours as numbers.
    """
    ours = {row["method"]: row for row in rows}
    table = []
    for name, numbers in PUBLISHED_AUC_20_50.items():
        row = {"method": name}
        for dataset in PUBLISHED_DATASETS:
            value = numbers.get(dataset)
            row[dataset] = None if value is None else f"{value:.3f}" + ("*" if (name, dataset) in PUBLISHED_UNVERIFIED
                                                                        else "")
        for key in ("auc_20_50", "alignment", "epe_procrustes_mm"):
            row[key] = ours.get(name, {}).get(key)
        table.append(row)
    return table
