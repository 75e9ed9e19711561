"""Boukhayma et al.'s tables (chapter 4): the input columns, and the loss ablation.

**Columns** (the paper's Tables 1-4): RGB, RGB + 2D and 2D are the shipped checkpoints
``boukhayma2019``, ``boukhayma2019:rgb2d`` and ``boukhayma2019:2d``; **2D fit** is no network: MANO
fitted to the shared backbone's 2D keypoints (``boukhayma2019.fit_detected_keypoints``, the paper's
fit to OpenPose's), through the crop's camera (a nominal one where a sample has none); and, where the
MediaPipe extra is installed (``handlib.peers``), the same fit to MediaPipe Hands' 2D keypoints
(``boukhayma2019.fit_to_detections``; a crop where MediaPipe finds no hand is not answered, and the
rows say how many were), with the backbone's 2D fit again on the crops MediaPipe answered only, so
that the two detectors' fits compare on the same hands. Each is scored with the course's metric code
on the fixed synthetic test set (3D EPE after the true root and its AUC over 20-50 mm, 2D
reprojection error, mesh error after Procrustes) and on the repository's real samples (2D EPE,
Procrustes-aligned 3D error).

**Loss ablation**: the full loss, and without L_mask, without L_reg, without L_3D, and with the
soft silhouette as the mask term (variants ``no_mask``, ``no_reg``, ``no_3d``, ``silhouette``), each
trained with the same seed and steps (``--steps``) into ``data/runs/boukhayma_ablation/``, scored the
same way. Then its **pictures** (``arm_pictures``): for each arm but the full loss, the test crop that
shows what the missing term guarded, with every arm's answer on it as the network's 28 parameters
(``Boukhayma2019.hand`` redraws the hand from them), so that chapter 4 draws them without the
checkpoints.

Run (one torch thread)::

    .venv/bin/python benchmarks/boukhayma_tables.py columns
    .venv/bin/python benchmarks/boukhayma_tables.py ablation --steps 1200

Runs resume; the tables are printed and written to ``data/results/boukhayma_tables.json`` (each
part replaces its own rows), which chapter 4 reads.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "data" / "results" / "boukhayma_tables.json"
ABLATION_DIR = ROOT / "data" / "runs" / "boukhayma_ablation"

COLUMNS = {"RGB": "boukhayma2019", "RGB + 2D": "boukhayma2019:rgb2d", "2D": "boukhayma2019:2d"}
FIT_COLUMN = "2D fit"
MEDIAPIPE_FIT_COLUMN = "2D fit (MediaPipe keypoints)"
MEDIAPIPE_CROPS_COLUMN = "2D fit, MediaPipe's crops only"
ABLATION = {"full loss": "boukhayma2019", "without L_mask": "boukhayma2019:no_mask",
            "without L_reg": "boukhayma2019:no_reg", "without L_3D": "boukhayma2019:no_3d",
            "soft silhouette as L_mask": "boukhayma2019:silhouette"}
TABLE = {"row": "", "dataset": "images", "num_samples": "samples", "num_answered": "answered",
         "epe_3d_mm": "3D EPE (mm)", "auc_20_50": "AUC 20-50 mm", "epe_2d_px": "2D EPE (px)",
         "mesh_error_mm": "mesh PA (mm)", "epe_procrustes_mm": "PA EPE (mm)"}

# The ablation's pictures. For each arm but the full loss, the measure of what its missing term
# guards (``crop_measures``); the picture is the test crop where that measure grew most over the
# full loss, among the crops where the arm's 2D keypoints are no worse than the full loss's: what
# the 2D error cannot see.
PICTURES = {"without L_reg": "excess_degrees", "without L_3D": "depth_error_mm",
            "without L_mask": "outside_mask", "soft silhouette as L_mask": "outside_mask"}


# A crop without a camera (FreiHAND's and Panoptic's samples) gets a nominal one for the 2D fit: the
# focal length of the synthetic test crops, median 2.74 crop sides (10-90 %: 1.9-4.0), centred.
NOMINAL_FOCAL = 2.74


def _camera(batch):
    """The crops' intrinsics (B, 3, 3), the nominal ones where a crop has none (NaN)."""
    import torch

    from handlib.render.camera import make_intrinsics

    size = batch["image"].shape[-1]
    nominal = make_intrinsics(NOMINAL_FOCAL * size, size / 2, size / 2).to(batch["K"])
    known = torch.isfinite(batch["K"]).flatten(1).all(1)[:, None, None]
    return torch.where(known, batch["K"], nominal)


def _fit_predict(detector, batch, config):
    """The 2D-fit column as a ``predict`` function: (model, batch, config) -> Prediction."""
    from handlib.models.boukhayma2019 import fit_detected_keypoints

    return fit_detected_keypoints(detector, {**batch, "K": _camera(batch)})


def _mediapipe_fit_predict(_, batch, config):
    """The 2D fit to MediaPipe Hands' keypoints, as a ``predict`` function (the model is unused);
    NaN (unanswered) where MediaPipe finds no hand."""
    from handlib.evaluate import peer_predict
    from handlib.models.boukhayma2019 import fit_to_detections

    return fit_to_detections(peer_predict(None, batch, config).keypoints_2d.to(batch["K"]), _camera(batch))


def _fit_on_mediapipe_crops_predict(detector, batch, config):
    """The 2D fit to the backbone's keypoints on the crops MediaPipe answers only (NaN elsewhere), as a
    ``predict`` function: the MediaPipe row's hands, fitted to the other detector's keypoints."""
    import torch

    from handlib.evaluate import peer_predict
    from handlib.models.boukhayma2019 import detect_keypoints, fit_to_detections

    detected = detect_keypoints(detector, batch["image"])                                    # (B, 21, 2)
    answered = peer_predict(None, batch, config).answered().to(detected.device)
    return fit_to_detections(torch.where(answered[:, None, None], detected, torch.nan), _camera(batch))


def score_rows(row: str, method, model, config, device="cpu", predict=None, test_samples=None) -> list[dict]:
    """One model (or the 2D fit) on the synthetic test set and on every real-sample set.

    Returns:
        list of dicts with the keys of ``TABLE``: dataset "synthetic" first, then the real sets.
    """
    from handlib import evaluate

    test_set = method.test_data(config, test_samples or config.test_samples)
    synthetic = evaluate.evaluate_model(method, model, config, test_set, device, predict=predict)
    rows = [{"row": row, "dataset": "synthetic", **{key: synthetic.get(key) for key in TABLE if key in synthetic}}]
    rows += [{"row": row, "dataset": real["dataset"], "num_samples": real["num_samples"],
              "num_answered": real["num_answered"], "epe_2d_px": real["epe_2d_px"],
              "epe_procrustes_mm": real["epe_procrustes_mm"]}
             for real in evaluate.score_on_real_samples(row, method, model, config, device, predict)]
    return rows


def column_rows(profile: str = "full", device="cpu", run_dir=None, fit_samples: int | None = None) -> list[dict]:
    """The four columns: the three input variants' checkpoints (shipped, or in ``run_dir``) and the 2D
    fit, to the backbone's keypoints and (where the peers extra is installed) to MediaPipe's.

    Args:
        fit_samples: synthetic test images for the 2D fits (None: all; it optimises each hand, ~0.3 s).
    """
    from torch import nn

    from handlib.checkpoints import find_checkpoint, load_model
    from handlib.models import backbone
    from handlib.peers import unavailable_reason

    rows, config = [], None
    for column, name in COLUMNS.items():
        method, model, config = load_model(name, profile, find_checkpoint(name, profile, run_dir), device)
        rows += score_rows(column, method, model, config, device)
        print(f"{column}: done", file=sys.stderr)
    detector = backbone.HandEncoder(config.encoder, config.encoder_width)
    backbone.load_pretrained(detector)
    rows += score_rows(FIT_COLUMN, method, detector.to(device), config, device, predict=_fit_predict,
                       test_samples=fit_samples)
    print(f"{FIT_COLUMN}: done", file=sys.stderr)
    reason = unavailable_reason()
    if reason is None:              # nn.Identity: predict_dataset puts its model in eval mode, and MediaPipe is not one
        rows += score_rows(MEDIAPIPE_FIT_COLUMN, method, nn.Identity(), config, device,
                           predict=_mediapipe_fit_predict, test_samples=fit_samples)
        rows += score_rows(MEDIAPIPE_CROPS_COLUMN, method, detector, config, device,
                           predict=_fit_on_mediapipe_crops_predict, test_samples=fit_samples)
    else:
        print(f"{MEDIAPIPE_FIT_COLUMN}: not run. {reason}", file=sys.stderr)
    return rows


def ablation_rows(profile: str = "full", steps: int | None = None, seed: int = 0, run_dir=ABLATION_DIR,
                  device="cpu", overrides: dict | None = None) -> list[dict]:
    """Train every arm of ``ABLATION`` (same seed and steps; runs resume) and score it.

    Returns:
        rows as ``score_rows``'s, plus "wall_time_s" on the synthetic row.
    """
    from handlib.checkpoints import load_model
    from handlib.train import train

    changes = dict(overrides or {})
    if steps is not None:
        changes["steps"] = steps
    rows = []
    for row, name in ABLATION.items():
        result = train(name, profile=profile, seed=seed, device=device, run_dir=run_dir, progress=False,
                       overrides=changes)
        if not result.finished:
            raise RuntimeError(f"{name} did not finish; run again to resume it")
        method, model, config = load_model(name, profile, result.checkpoint, device)
        scored = score_rows(row, method, model, config, device)
        scored[0]["wall_time_s"] = result.wall_time_s
        rows += scored
        print(f"{row}: 3D EPE {scored[0].get('epe_3d_mm', float('nan')):.1f} mm ({result.wall_time_s:.0f} s)",
              file=sys.stderr)
    return rows


def crop_measures(prediction, samples: dict) -> dict:
    """What each loss term guards, crop by crop, for one arm's ``Prediction`` on the synthetic test set.

    Args:
        prediction: a ``boukhayma2019`` Prediction of N crops (root-relative, with vertices, MANO and camera).
        samples: the N crops' ground truth as a collated batch ("keypoints_2d", "keypoints_3d",
            "visibility", "mask", "pose", "betas").

    Returns:
        {measure: (N,) tensor}: "epe_2d_px" (visible keypoints); "depth_error_mm" the mean |z| error of
        the root-relative keypoints (depth, along the camera's axis); "mesh_error_mm" after Procrustes;
        "excess_degrees" the largest angle beyond the joint limits of the course's pose prior
        (``zhou2020.pose_implausibility``); "betas_norm" |beta| (the true hands': about 3); "outside_mask"
        the fraction of the weak-perspective projected vertices off the mask (``vertex_mask_loss``, L_mask);
        "size_ratio" the spread of the 2D keypoints about their mean over the true keypoints' spread.
    """
    import torch

    from handlib import evaluate, metrics
    from handlib.models import boukhayma2019 as bk
    from handlib.models.zhou2020 import pose_implausibility

    visible = samples["visibility"]
    true_root_relative = samples["keypoints_3d"] - samples["keypoints_3d"][:, :1]
    true_mesh = evaluate.mesh_targets(samples["pose"], samples["betas"])
    aligned = metrics.align_procrustes(prediction.vertices, true_mesh)
    centre = bk.hand_centre(prediction.keypoints_3d)                     # as Boukhayma2019.hand projects
    vertices_2d = bk.project_weak_perspective(prediction.vertices - centre, prediction.camera)     # (N, 778, 2)
    one = torch.ones(1)
    spread = lambda keypoints: (keypoints - keypoints.mean(1, keepdim=True)).norm(dim=-1).mean(1)   # noqa: E731
    errors_2d = (prediction.keypoints_2d - samples["keypoints_2d"]).norm(dim=-1)                      # (N, 21)
    return {
        "epe_2d_px": (errors_2d * visible).sum(1) / visible.sum(1),
        "depth_error_mm": (prediction.keypoints_3d[..., 2] - true_root_relative[..., 2]).abs().mean(1) * 1000.0,
        "mesh_error_mm": (aligned - true_mesh.double()).norm(dim=-1).mean(1).float() * 1000.0,
        "excess_degrees": pose_implausibility(prediction.mano_pose)["max_excess_degrees"],
        "betas_norm": prediction.mano_betas.norm(dim=1),
        "outside_mask": torch.stack([bk.vertex_mask_loss(v[None], m[None].float(), one)
                                     for v, m in zip(vertices_2d, samples["mask"])]),
        "size_ratio": spread(prediction.keypoints_2d) / spread(samples["keypoints_2d"]),
    }


def _rounded(values, digits: int) -> list:
    return [round(float(value), digits) for value in values]


def arm_pictures(profile: str = "full", run_dir=ABLATION_DIR, device="cpu") -> dict:
    """The ablation's pictures: one test crop per arm (``PICTURES``), and every arm's hand on each.

    Reads the arms' finished checkpoints in ``run_dir`` (``ablation_rows`` trains them), predicts the
    synthetic test set with each, measures every crop (``crop_measures``) and picks the crops.

    Returns:
        {"test_samples": N, "means": {arm: {measure: mean over the N crops}},
         "crops": [{"index": test crop, "arm": the arm it shows, "measure": the measure that chose it,
                    "measures": {arm: {measure: value on this crop}},
                    "parameters": {arm: the 28 numbers [s, t_x, t_y, r (3), theta (12), beta (10)] of
                    ``Boukhayma2019.hand``, rounded}}]}.
    """
    import torch

    from handlib import evaluate
    from handlib.checkpoints import find_checkpoint, load_model

    models, measures, test_set = {}, {}, None
    for row, name in ABLATION.items():
        method, model, config = load_model(name, profile, find_checkpoint(name, profile, run_dir), device)
        if test_set is None:                                                    # every arm has the same test set
            test_set = method.test_data(config, config.test_samples)
            samples = evaluate.dataset_targets(test_set, ("keypoints_2d", "keypoints_3d", "visibility", "mask",
                                                          "pose", "betas"))
        prediction, _ = evaluate.predict_dataset(method, model, config, test_set, device)
        models[row], measures[row] = model, crop_measures(prediction, samples)
    full = measures["full loss"]
    chosen = []
    for row, measure in PICTURES.items():
        free = torch.ones(len(test_set), dtype=torch.bool)
        free[chosen] = False                                                    # one crop per arm
        allowed = free & (measures[row]["epe_2d_px"] <= full["epe_2d_px"])
        growth = measures[row][measure] - full[measure]
        chosen.append(int(torch.where(allowed if allowed.any() else free, growth, -torch.inf).argmax()))
    images = torch.stack([test_set[index]["image"] for index in chosen]).to(device)
    parameters = {}
    with torch.no_grad():
        for row, model in models.items():
            out = model(images)
            parameters[row] = torch.cat([out["camera"], out["global_orient"], out["hand_pose"], out["betas"]], 1).cpu()
    crops = [{"index": index, "arm": row, "measure": PICTURES[row],
              "measures": {arm: {key: round(float(values[index]), 3) for key, values in measures[arm].items()}
                           for arm in ABLATION},
              "parameters": {arm: _rounded(parameters[arm][k, :3], 1) + _rounded(parameters[arm][k, 3:], 3)
                             for arm in ABLATION}}
             for k, (row, index) in enumerate(zip(PICTURES, chosen))]
    return {"test_samples": len(test_set),
            "means": {arm: {key: round(float(values.mean()), 3) for key, values in measures[arm].items()}
                      for arm in ABLATION},
            "crops": crops}


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("part", choices=("columns", "ablation"))
    parser.add_argument("--profile", default="full", choices=("quick", "full"))
    parser.add_argument("--steps", type=int, default=None, help="image-stage steps of every ablation arm")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--fit-samples", type=int, default=None, help="synthetic test images for the 2D fit")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--run-dir", type=Path, default=ABLATION_DIR, help="where the ablation's arms are trained")
    args = parser.parse_args(argv)
    from handlib.evaluate import format_table
    from handlib.files import atomic_write_text
    from handlib.runtime import torch_threads

    started = time.perf_counter()
    with torch_threads(1):
        if args.part == "columns":
            rows = column_rows(args.profile, args.device, fit_samples=args.fit_samples)
        else:
            rows = ablation_rows(args.profile, args.steps, args.seed, args.run_dir, args.device)
            pictures = arm_pictures(args.profile, args.run_dir, args.device)
    print(format_table(rows, TABLE))
    record = json.loads(args.out.read_text()) if args.out.is_file() else {}
    record[args.part] = {"profile": args.profile, "seed": args.seed, "steps": args.steps,
                         "wall_time_s": time.perf_counter() - started, "rows": rows}
    if args.part == "ablation":
        record[args.part]["pictures"] = pictures
    atomic_write_text(args.out, json.dumps(record, indent=1))
    print(f"written {args.out}")
    return record


if __name__ == "__main__":
    main()
