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


# The thresholds of the 3D PCK curves of the benchmark (``benchmark(curves=True)``): 0 to 50 mm, 1 mm apart.
PCK_THRESHOLDS_MM = tuple(float(t) for t in range(51))


def pck_curve_3d(prediction: Prediction, targets: dict, alignment: str = "root",
                 thresholds_mm=PCK_THRESHOLDS_MM) -> list | None:
    """The 3D PCK curve of a prediction, after the same alignment as ``score``'s headline 3D error.

    Args:
        prediction: a ``Prediction`` of N samples.
        targets: {key: tensor} of the same N samples (``TARGET_KEYS``).
        alignment: one of ``metrics.ALIGNMENTS`` (the method's own).
        thresholds_mm: (T,) increasing thresholds, millimetres.

    Returns:
        list of T fractions in [0, 1] (``metrics.pck_curve`` over the answered samples with 3D labels,
        every keypoint counting, as ``metrics.benchmark_row`` does); None without 3D keypoints.
    """
    keep = prediction.answered() & targets["has_3d"].bool()
    if prediction.keypoints_3d is None or not keep.any():
        return None
    truth = targets["keypoints_3d"][keep]
    aligned = metrics.align(prediction.keypoints_3d[keep], truth, alignment)
    errors_mm = metrics.keypoint_errors(aligned * 1000.0, truth.double() * 1000.0)
    return metrics.pck_curve(errors_mm, np.asarray(thresholds_mm, dtype=np.float64)).tolist()


def _test_targets(dataset: Dataset, batch_size: int = 64, with_images: bool = False) -> dict:
    """The ``TARGET_KEYS`` of a whole dataset (and its "image" and "is_right" with ``with_images``)."""
    keys = TARGET_KEYS + (("image", "is_right") if with_images else ())
    parts = {key: [] for key in keys}
    for batch in DataLoader(dataset, batch_size=batch_size, shuffle=False, collate_fn=default_collate):
        for key in keys:
            parts[key].append(batch[key])
    return {key: torch.cat(values) for key, values in parts.items()}


def _peer_predict(model, batch, config) -> Prediction:
    """``predict_dataset``'s signature around MediaPipe Hands (``handlib.peers``): the model is unused."""
    from handlib.peers import mediapipe_hands

    return mediapipe_hands(batch["image"].cpu(), is_right=batch["is_right"].cpu())


def floor_rows(test_set: Dataset, image_size: int, baselines: bool = True, peers: bool = False,
               baseline_samples: int = 2048, curves: bool = False, device=None) -> list[dict]:
    """The rows that frame the benchmark on the fixed synthetic test set: the two image-free
    baselines (``image_free_baselines``: the floor) and MediaPipe Hands (``handlib.peers``: a system
    trained on real photos), scored by ``score`` like the methods.

    The mean training pose is root-relative and metric (the average training hand's size): its 3D
    error is after "root" alignment. MediaPipe's 3D is its own hand size and its axes are only
    roughly the camera's: its headline 3D error is after "procrustes" alignment (= its PA EPE).
    MediaPipe scores the images where it finds a hand only (``num_answered``).

    Args:
        test_set: the synthetic test set of ``image_size`` px crops.
        image_size: side of its crops, pixels.
        baselines: add the two baselines.
        peers: add MediaPipe Hands where it is installed (else print why not).
        baseline_samples: synthetic training samples the mean pose is taken over.
        curves: add "pck_3d" (``pck_curve_3d``) to the rows with 3D.
        device: unused by the baselines and the peer (CPU); kept for symmetry.

    Returns:
        list of dicts with the keys of ``benchmark``'s rows ("parameters", "train_minutes" None).
    """
    from handlib.methods import synthetic_training_set

    rows = []
    targets = _test_targets(test_set, with_images=peers)
    if baselines:
        train_set = synthetic_training_set(baseline_samples, 0, image_size)
        for name, prediction in image_free_baselines(len(test_set), image_size, train_set).items():
            row = {"method": name, "profile": "-", **score(prediction, targets, "root"), "parameters": None,
                   "ms_per_image": None, "train_minutes": None}
            if curves:
                row["pck_3d"] = pck_curve_3d(prediction, targets, "root")
            rows.append(row)
    if peers:
        from handlib.peers import unavailable_reason

        reason = unavailable_reason()
        if reason is not None:
            print(f"{PEER}: not run. {reason}")
        else:
            identity = nn.Identity()
            prediction, _ = predict_dataset(None, identity, None, test_set, "cpu", predict=_peer_predict)
            row = {"method": PEER, "profile": "-", **score(prediction, targets, "procrustes"), "parameters": None,
                   "ms_per_image": milliseconds_per_image(None, identity, None, test_set, device="cpu",
                                                          predict=_peer_predict),
                   "train_minutes": None}
            if curves:
                row["pck_3d"] = pck_curve_3d(prediction, targets, "procrustes")
            rows.append(row)
    return rows


def benchmark(profile: str = "full", names: list[str] | None = None, device=None, run_dir=None,
              verbose: bool = False, baselines: bool = False, peers: bool = False, curves: bool = False,
              baseline_samples: int = 2048) -> list[dict]:
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
        baselines: add the two image-free baselines (``floor_rows``) on the course's synthetic test
            set (for the methods evaluated on it, ``methods.synthetic_test_set``).
        peers: add MediaPipe Hands there too, where the ``peers`` extra is installed.
        curves: add each row's 3D PCK curve, "pck_3d", at ``PCK_THRESHOLDS_MM`` (``pck_curve_3d``).
        baseline_samples: synthetic training samples the mean training pose is taken over.

    Returns:
        list of dicts: {"method", "profile", "checkpoint", ``score``'s keys, "parameters",
        "ms_per_image", "train_minutes"} (and "pck_3d"); the methods first, in the order of
        ``names``, then the baselines and the peer.
    """
    from handlib.checkpoints import find_checkpoint, load_model, read_checkpoint
    from handlib.methods import synthetic_test_set
    from handlib.registry import available_names

    rows, missing, synthetic_sets = [], [], {}
    for name in names or available_names():
        try:
            path = find_checkpoint(name, profile, run_dir)
        except FileNotFoundError:
            missing.append(name)
            continue
        method, model, config = load_model(name, profile, path, device)
        test_set = method.test_data(config, config.test_samples)
        prediction, targets = predict_dataset(method, model, config, test_set, device)
        row = {"method": name, "profile": profile, "checkpoint": str(path),
               **score(prediction, targets, method.alignment),
               "parameters": sum(p.numel() for p in model.parameters()),
               "ms_per_image": milliseconds_per_image(method, model, config, test_set, device=device),
               "train_minutes": read_checkpoint(path, "cpu")["provenance"]["wall_time_s"] / 60.0}
        if curves:
            row["pck_3d"] = pck_curve_3d(prediction, targets, method.alignment)
        rows.append(row)
        if method.test_data is synthetic_test_set:
            synthetic_sets.setdefault((config.image_size, config.test_samples), test_set)
    if baselines or peers:
        for (image_size, _), test_set in synthetic_sets.items():
            rows += floor_rows(test_set, image_size, baselines, peers, baseline_samples, curves, device)
    if verbose:
        print(format_table(rows, BENCHMARK_COLUMNS) if rows else f"no {profile} checkpoints found")
        for row in rows:
            if row.get("num_answered", row.get("num_samples")) != row.get("num_samples"):
                print(f"{row['method']}: scored on the {row['num_answered']} of {row['num_samples']} images where it "
                      "found a hand")
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


# --------------------------------------------------------------------------------------------
# Error by condition: the challenges of chapter 0, measured on every method
# --------------------------------------------------------------------------------------------

# The synthetic engine's knobs (``handlib.data.synth.SynthConfig``) and the values each is set to, one
# at a time, the others at the fixed test set's defaults. "image_size" renders the same hands and
# cameras at fewer pixels, then scales the crops up to the methods' input (``condition_test_set``);
# "distractors" puts a skin-coloured distractor behind every hand (a second hand in 60 % of them).
CONDITIONS = {
    "occlusion": (0.0, 0.3, 0.6, 1.0),
    "viewpoint": ("palm_towards", "palm_away", "any"),
    "image_size": (24, 32, 64, 128),
    "pose_kind": ("open", "relaxed", "pinch", "point", "power", "fist"),
    "distractors": (0.0, 1.0),
}
CONDITION_COLUMNS = {"method": "method", "condition": "condition", "value": "value", "epe_3d_mm": "3D EPE (mm)",
                     "epe_procrustes_mm": "PA EPE (mm)", "epe_2d_px": "2D EPE (px)", "auc_20_50": "AUC 20-50 mm",
                     "num_samples": "samples"}


class ResizedSet(Dataset):
    """A dataset of sample dicts at another resolution: every image scaled to ``size`` x ``size``
    (bilinear), the 2D keypoints and the intrinsics K scaled with it (a pixel covers [i, i + 1), so
    u -> u * size / S exactly), mask and depth by nearest neighbour. Nothing else changes.

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
        import torch.nn.functional as F

        sample = dict(self.dataset[index])
        source = sample["image"].shape[-1]
        factor = self.size / source
        sample["image"] = F.interpolate(sample["image"][None], size=(self.size, self.size), mode="bilinear",
                                        align_corners=False)[0].clamp(0.0, 1.0)                   # (3, size, size)
        for key in ("mask", "depth"):
            if torch.is_tensor(sample.get(key)) and sample[key].ndim == 2:
                sample[key] = F.interpolate(sample[key][None, None].float(), size=(self.size, self.size),
                                            mode="nearest")[0, 0].to(sample[key].dtype)           # (size, size)
        sample["keypoints_2d"] = sample["keypoints_2d"] * factor
        if torch.is_tensor(sample.get("K")):
            K = sample["K"].clone()
            K[:2] = K[:2] * factor
            sample["K"] = K
        return sample


def condition_test_set(condition: str, value, num_samples: int = 64, image_size: int = 128, cache_dir=None) -> Dataset:
    """The first ``num_samples`` hands of the fixed synthetic test set with one knob changed.

    Every set has the test set's seed, so the hands (poses, shapes, cameras) are the same across the
    values of "occlusion", "image_size" and "distractors" (only occluders, pixels, distractors differ):
    the comparison is paired. "viewpoint" and "pose_kind" draw other poses (they are what changes).

    Args:
        condition: a key of ``CONDITIONS`` (or any ``SynthConfig`` knob).
        value: its value; for "image_size" the resolution rendered, scaled up to ``image_size``
            (``ResizedSet``).
        num_samples: hands per set (rendered once and cached, ``synth.cached_test_set``).
        image_size: side of the crops the methods take, pixels.
        cache_dir: None = the course's cache (``methods.CACHE_DIR``).

    Returns:
        a Dataset of sample dicts of ``image_size`` px.
    """
    from handlib.data import synth
    from handlib.methods import CACHE_DIR

    cache_dir = CACHE_DIR if cache_dir is None else cache_dir
    rendered_size = int(value) if condition == "image_size" else image_size
    knobs = {} if condition == "image_size" else {condition: value}
    config = synth.make_config(image_size=rendered_size, **knobs)
    dataset = synth.cached_test_set(num_samples, seed=synth.DEFAULT_TEST_SEED, image_size=rendered_size,
                                    cache_dir=cache_dir, progress=False, config=config, workers=0)
    return dataset if rendered_size == image_size else ResizedSet(dataset, image_size)


def trained_models(names: list[str] | None = None, profile: str = "full", device=None, run_dir=None) -> dict:
    """{name: (method, model, config)} of the names that have a checkpoint (``checkpoints.load_model``);
    names without one are left out. None = ``registry.shipped_names()``."""
    from handlib.checkpoints import find_checkpoint, load_model
    from handlib.registry import shipped_names

    models = {}
    for name in shipped_names() if names is None else names:
        try:
            path = find_checkpoint(name, profile, run_dir)
        except FileNotFoundError:
            continue
        models[name] = load_model(name, profile, path, device)
    return models


def error_by_condition(names: list[str] | None = None, conditions: dict | None = None, num_samples: int = 64,
                       profile: str = "full", device=None, run_dir=None, models: dict | None = None,
                       baselines: bool = True, baseline_samples: int = 2048, cache_dir=None) -> list[dict]:
    """Every method's error as one knob of the synthetic engine changes (``condition_test_set``).

    Args:
        names: "method" or "method:variant"; None = the shipped ones that have a checkpoint.
        conditions: {knob: values}; None = ``CONDITIONS``.
        num_samples: hands per (knob, value) set: small sets (64) keep it to seconds per method.
        profile, device, run_dir: which checkpoints (default: the shipped ``full`` ones).
        models: {name: (method, model, config)} to use instead of loading ``names`` (``trained_models``).
        baselines: add the "mean training pose" (``image_free_baselines``) per set: the floor.
        baseline_samples: synthetic training samples its mean is taken over.
        cache_dir: where the sets are cached; None = the course's cache.

    Returns:
        list of dicts, one per (method, knob, value): {"method", "condition", "value", "alignment",
        "num_samples", and ``score``'s errors: "epe_2d_px" (pixels of the method's input), and with 3D
        "epe_3d_mm", "auc_20_50", "epe_procrustes_mm", ...}. The keys of ``CONDITION_COLUMNS``.
    """
    from handlib.methods import synthetic_training_set

    models = trained_models(names, profile, device, run_dir) if models is None else models
    conditions = CONDITIONS if conditions is None else conditions
    for condition, values in conditions.items():
        if isinstance(values, (str, bytes)) or not hasattr(values, "__iter__"):
            raise ValueError(f"conditions[{condition!r}]: expected a list of values, got {values!r}")
    sizes = sorted({config.image_size for _, _, config in models.values()})
    means = {}
    if baselines:
        for size in sizes:
            means[size] = synthetic_training_set(baseline_samples, 0, size)
    rows, scored = [], {}                      # scored: the rows of a set already scored (the defaults recur)
    for condition, values in conditions.items():
        for value in values:
            for size in sizes:
                dataset = condition_test_set(condition, value, num_samples, size, cache_dir)
                rendered = dataset.dataset if isinstance(dataset, ResizedSet) else dataset
                key = (size, str(rendered.directory))
                if key not in scored:
                    targets = _test_targets(dataset)
                    named = [(name, predict_dataset(method, model, config, dataset, device)[0], method.alignment)
                             for name, (method, model, config) in models.items() if config.image_size == size]
                    if baselines:
                        floor = image_free_baselines(len(dataset), size, means[size])["mean training pose"]
                        named.append(("mean training pose", floor, "root"))
                    scored[key] = [(name, score(prediction, targets, alignment))
                                   for name, prediction, alignment in named]
                rows += [{"method": name, "condition": condition, "value": value, **row} for name, row in scored[key]]
    return rows


# --------------------------------------------------------------------------------------------
# Plausibility: do the predicted poses respect the hand's joint limits?
# --------------------------------------------------------------------------------------------

PLAUSIBILITY_COLUMNS = {"method": "method", "fraction_outside": "angles outside limits (%)",
                        "max_excess_degrees": "largest excess (deg)", "violation": "limit penalty (rad^2)",
                        "reason": "note"}


def plausibility(models: dict, dataset: Dataset, device=None, truth: bool = True) -> list[dict]:
    """The pose prior's joint-limit penalty as a plausibility score of each method's predicted poses.

    For a method whose ``Prediction`` has MANO poses (``mano_pose``), ``zhou2020.pose_implausibility``
    of them: how far the 45 finger angles lie outside the prior's anatomical limits, averaged over the
    dataset. A method without MANO poses (keypoints, or a mesh without joint angles) gets a row with
    the reason and no numbers: its joint angles are not defined without fitting a hand model first.

    Args:
        models: {name: (method, model, config)} (``trained_models``).
        dataset: sample dicts (e.g. ``condition_test_set``); its "pose" is the ground truth.
        device: None = CUDA when available.
        truth: add a row for the dataset's true poses (drawn from the prior: about 0).

    Returns:
        list of dicts with the keys of ``PLAUSIBILITY_COLUMNS``: "fraction_outside" in % of the 45
        angles, "max_excess_degrees" and "violation" (rad^2) means over the samples; NaN-free, or
        None with a "reason".
    """
    from handlib.models.zhou2020 import pose_implausibility

    def row(name, poses, reason=""):
        if poses is None:
            return {"method": name, "fraction_outside": None, "max_excess_degrees": None, "violation": None,
                    "reason": reason}
        scores = pose_implausibility(poses.float())
        return {"method": name, "fraction_outside": 100.0 * float(scores["fraction_outside"].mean()),
                "max_excess_degrees": float(scores["max_excess_degrees"].mean()),
                "violation": float(scores["violation"].mean()), "reason": reason}

    rows = []
    for name, (method, model, config) in models.items():
        prediction, _ = predict_dataset(method, model, config, dataset, device)
        rows.append(row(name, prediction.mano_pose,
                        "" if prediction.mano_pose is not None else
                        "skipped: predicts " + ("a mesh and keypoints" if prediction.vertices is not None
                                                else "keypoints") + ", no MANO joint angles"))
    if truth:
        rows.append(row("ground truth (the prior's samples)", _test_targets(dataset)["pose"]))
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
