"""Zhou et al.'s tables (chapter 5): the ablation, the plausibility of the poses (the paper's
Figure 8), and the speed of the pipeline.

**Ablation** (the paper's Table 2): the shipped ``zhou2020`` (DetNet + shape fit + IKNet), then
* "no IKNet": DetNet's joints are the answer (the shipped model with ``pose_solver="none"``);
* "pose by optimisation": MANO fitted to DetNet's joints instead of IKNet (``"optimisation"``);
* the IKNet arms, each trained on the shipped DetNet with IKNet alone (``detnet_from``): without
  L_cos and L_l2, without 3DPosData, without L_l2, without L_cos, and in the camera frame as the
  paper's (the course's IKNet works in the wrist's frame) (into ``data/runs/zhou_ablation/``).
Each row is scored with the course's metric code on the fixed synthetic test set (3D EPE with the
true root and scale, AUC 20-50 mm, Procrustes, mesh) and on the real samples (2D, Procrustes), and
the plausibility of its poses: the mean fraction of the 45 joint angles outside the pose prior's
limits, and the mean largest excess (``zhou2020.pose_implausibility``), next to the true poses'.

**Speed**: milliseconds per image on this CPU for DetNet, the shape fit and IKNet + MANO (batch 1,
median of 20), and the frames per second of the whole pipeline.

Run (one torch thread)::

    .venv/bin/python benchmarks/zhou_tables.py ablation
    .venv/bin/python benchmarks/zhou_tables.py speed

Runs resume; the tables are printed and written to ``data/results/zhou_tables.json``.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "data" / "results" / "zhou_tables.json"
ABLATION_DIR = ROOT / "data" / "runs" / "zhou_ablation"

SOLVER_ROWS = {"DetNet + IKNet (full)": "iknet", "no IKNet (DetNet's joints)": "none",
               "pose by optimisation": "optimisation"}
IKNET_ROWS = {"IKNet without L_cos and L_l2": "zhou2020:no_rotation_loss",
              "IKNet without 3DPosData": "zhou2020:no_posdata",
              "IKNet without L_l2": "zhou2020:no_l2", "IKNet without L_cos": "zhou2020:no_cos",
              "IKNet in the camera frame (the paper's)": "zhou2020:camera_frame"}
TABLE = {"row": "", "dataset": "images", "epe_3d_mm": "3D EPE (mm)", "auc_20_50": "AUC 20-50 mm",
         "epe_procrustes_mm": "PA EPE (mm)", "mesh_error_mm": "mesh PA (mm)", "epe_2d_px": "2D EPE (px)",
         "fraction_outside": "angles outside limits", "max_excess_degrees": "worst excess (deg)"}


def plausibility(poses) -> dict:
    """The columns "fraction_outside" and "max_excess_degrees" of ``evaluate.pose_plausibility`` of
    (B, 48) poses (empty for None: a prediction without a mesh)."""
    from handlib.evaluate import pose_plausibility

    if poses is None:
        return {}
    measured = pose_plausibility(poses)
    return {key: measured[key] for key in ("fraction_outside", "max_excess_degrees")}


def score_rows(row: str, method, model, config, device="cpu") -> list[dict]:
    """One configuration on the synthetic test set (with plausibility) and on every real-sample set."""
    from handlib import evaluate

    prediction, targets = evaluate.predict_dataset(method, model, config, method.test_data(config, config.test_samples),
                                                   device)
    synthetic = evaluate.score(prediction, targets, method.alignment)
    rows = [{"row": row, "dataset": "synthetic", **{key: synthetic.get(key) for key in TABLE if key in synthetic},
             **plausibility(prediction.mano_pose)}]
    rows += [{"row": row, "dataset": real["dataset"], "epe_2d_px": real["epe_2d_px"],
              "epe_procrustes_mm": real["epe_procrustes_mm"]}
             for real in evaluate.score_on_real_samples(row, method, model, config, device)]
    return rows


def true_pose_row(config) -> dict:
    """The plausibility of the test set's true poses: the floor of the column."""
    from handlib.evaluate import dataset_targets
    from handlib.models import zhou2020

    test_set = zhou2020.METHOD.test_data(config, config.test_samples)
    return {"row": "true poses", "dataset": "synthetic", **plausibility(dataset_targets(test_set, ("pose",))["pose"])}


def ablation_rows(profile: str = "full", device="cpu", run_dir=ABLATION_DIR, overrides: dict | None = None,
                  shipped_run_dir=None) -> list[dict]:
    """Every row of the ablation: the shipped model with each pose solver, then the IKNet arms.

    Args:
        overrides: config changes of the IKNet arms (tests: tiny sizes).
        shipped_run_dir: where the ``zhou2020`` checkpoint is (None: the shipped one).
    """
    from handlib.checkpoints import find_checkpoint, load_model
    from handlib.train import train

    method, model, config = load_model("zhou2020", profile, find_checkpoint("zhou2020", profile, shipped_run_dir),
                                       device)
    rows = [true_pose_row(config)]
    for row, solver in SOLVER_ROWS.items():
        rows += score_rows(row, method, model, dataclasses.replace(config, pose_solver=solver), device)
        print(f"{row}: done", file=sys.stderr)
    for row, name in IKNET_ROWS.items():
        result = train(name, profile=profile, device=device, run_dir=run_dir, progress=False,
                       overrides=dict(overrides or {}))
        if not result.finished:
            raise RuntimeError(f"{name} did not finish; run again to resume it")
        method, arm, arm_config = load_model(name, profile, result.checkpoint, device)
        scored = score_rows(row, method, arm, arm_config, device)
        scored[0]["wall_time_s"] = result.wall_time_s
        rows += scored
        print(f"{row}: done ({result.wall_time_s:.0f} s)", file=sys.stderr)
    return rows


def speed_rows(profile: str = "full", device="cpu", repeats: int = 20, run_dir=None) -> list[dict]:
    """Milliseconds per image (batch 1, median of ``repeats``) of each part, and the pipeline's frames per second."""
    import torch
    from torch.utils.data import default_collate

    from handlib.checkpoints import find_checkpoint, load_model
    from handlib.models.zhou2020 import bone_ratios_of, fit_shape

    method, model, config = load_model("zhou2020", profile, find_checkpoint("zhou2020", profile, run_dir), device)
    test_set = method.test_data(config, config.test_samples)
    timings = {"DetNet": [], "shape fit": [], "IKNet + MANO": [], "whole pipeline": []}
    with torch.no_grad():
        for i in range(repeats + 1):
            batch = default_collate([test_set[i % len(test_set)]])
            started = time.perf_counter()
            out = model(batch["image"])
            detected = time.perf_counter()
            betas = fit_shape(bone_ratios_of(out["keypoints"]), model.basis, config.shape_weight,
                              config.shape_iterations, limit=config.shape_limit).betas
            fitted = time.perf_counter()
            model.solve_pose(out["keypoints"], betas)
            solved = time.perf_counter()
            method.predict(model, batch, config)
            whole = time.perf_counter()
            if i:                                                        # the first run warms up
                for key, seconds in zip(timings, (detected - started, fitted - detected, solved - fitted,
                                                  whole - solved)):
                    timings[key].append(1000 * seconds)
    rows = [{"part": part, "ms_per_image": sorted(values)[len(values) // 2]} for part, values in timings.items()]
    rows[-1]["frames_per_second"] = 1000 / rows[-1]["ms_per_image"]
    return rows


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("part", choices=("ablation", "speed"))
    parser.add_argument("--profile", default="full", choices=("quick", "full"))
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args(argv)
    from handlib.evaluate import format_table
    from handlib.files import atomic_write_text
    from handlib.runtime import torch_threads

    started = time.perf_counter()
    with torch_threads(1):
        rows = ablation_rows(args.profile, args.device) if args.part == "ablation" else speed_rows(args.profile,
                                                                                                 args.device)
    print(format_table(rows, TABLE if args.part == "ablation" else
                       {"part": "part", "ms_per_image": "ms / image", "frames_per_second": "frames / s"}))
    record = json.loads(args.out.read_text()) if args.out.is_file() else {}
    record[args.part] = {"profile": args.profile, "wall_time_s": time.perf_counter() - started, "rows": rows}
    atomic_write_text(args.out, json.dumps(record, indent=1))
    print(f"written {args.out}")
    return record


if __name__ == "__main__":
    main()
