"""Boukhayma et al.'s tables (chapter 4): the input columns, and the loss ablation.

**Columns** (the paper's Tables 1-4): RGB, RGB + 2D and 2D are the shipped checkpoints
``boukhayma2019``, ``boukhayma2019:rgb2d`` and ``boukhayma2019:2d``; **2D fit** is no network: MANO
fitted to the shared backbone's 2D keypoints (``boukhayma2019.fit_detected_keypoints``, the paper's
fit to OpenPose's), through the crop's camera (a nominal one where a sample has none). Each is scored
with the course's metric code on the fixed synthetic test set (3D EPE after the true root, 2D
reprojection error, mesh error after Procrustes) and on the repository's real samples (2D EPE,
Procrustes-aligned 3D error).

**Loss ablation**: the full loss, and without L_mask, without L_reg, without L_3D, and with the
soft silhouette as the mask term (variants ``no_mask``, ``no_reg``, ``no_3d``, ``silhouette``), each
trained with the same seed and steps (``--steps``) into ``data/runs/boukhayma_ablation/``, scored the
same way.

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
ABLATION = {"full loss": "boukhayma2019", "without L_mask": "boukhayma2019:no_mask",
            "without L_reg": "boukhayma2019:no_reg", "without L_3D": "boukhayma2019:no_3d",
            "soft silhouette as L_mask": "boukhayma2019:silhouette"}
TABLE = {"row": "", "dataset": "images", "num_samples": "samples", "epe_3d_mm": "3D EPE (mm)",
         "epe_2d_px": "2D EPE (px)", "mesh_error_mm": "mesh PA (mm)", "epe_procrustes_mm": "PA EPE (mm)"}


# A crop without a camera (FreiHAND's and Panoptic's samples) gets a nominal one for the 2D fit: the
# focal length of the synthetic test crops, median 2.74 crop sides (10-90 %: 1.9-4.0), centred.
NOMINAL_FOCAL = 2.74


def _fit_predict(detector, batch, config):
    """The 2D-fit column as a ``predict`` function: (model, batch, config) -> Prediction."""
    import torch

    from handlib.models.boukhayma2019 import fit_detected_keypoints
    from handlib.render.camera import make_intrinsics

    size = batch["image"].shape[-1]
    nominal = make_intrinsics(NOMINAL_FOCAL * size, size / 2, size / 2).to(batch["K"])
    known = torch.isfinite(batch["K"]).flatten(1).all(1)[:, None, None]
    return fit_detected_keypoints(detector, {**batch, "K": torch.where(known, batch["K"], nominal)})


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
              "epe_2d_px": real["epe_2d_px"], "epe_procrustes_mm": real["epe_procrustes_mm"]}
             for real in evaluate.score_on_real_samples(row, method, model, config, device, predict)]
    return rows


def column_rows(profile: str = "full", device="cpu", run_dir=None, fit_samples: int | None = None) -> list[dict]:
    """The four columns: the three input variants' checkpoints (shipped, or in ``run_dir``) and the 2D fit.

    Args:
        fit_samples: synthetic test images for the 2D fit (None: all; it optimises each hand, ~0.3 s).
    """
    from handlib.checkpoints import find_checkpoint, load_model
    from handlib.models import backbone

    rows, config = [], None
    for column, name in COLUMNS.items():
        method, model, config = load_model(name, profile, find_checkpoint(name, profile, run_dir), device)
        rows += score_rows(column, method, model, config, device)
        print(f"{column}: done", file=sys.stderr)
    detector = backbone.HandEncoder(config.encoder, config.encoder_width)
    backbone.load_pretrained(detector)
    rows += score_rows(FIT_COLUMN, method, detector.to(device), config, device, predict=_fit_predict,
                       test_samples=fit_samples)
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


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("part", choices=("columns", "ablation"))
    parser.add_argument("--profile", default="full", choices=("quick", "full"))
    parser.add_argument("--steps", type=int, default=None, help="image-stage steps of every ablation arm")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--fit-samples", type=int, default=None, help="synthetic test images for the 2D fit")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args(argv)
    from handlib.evaluate import format_table
    from handlib.files import atomic_write_text
    from handlib.runtime import torch_threads

    started = time.perf_counter()
    with torch_threads(1):
        if args.part == "columns":
            rows = column_rows(args.profile, args.device, fit_samples=args.fit_samples)
        else:
            rows = ablation_rows(args.profile, args.steps, args.seed, device=args.device)
    print(format_table(rows, TABLE))
    record = json.loads(args.out.read_text()) if args.out.is_file() else {}
    record[args.part] = {"profile": args.profile, "seed": args.seed, "steps": args.steps,
                         "wall_time_s": time.perf_counter() - started, "rows": rows}
    atomic_write_text(args.out, json.dumps(record, indent=1))
    print(f"written {args.out}")
    return record


if __name__ == "__main__":
    main()
