"""Cai et al.'s experiment (chapter 3): 3D accuracy against the fraction of 3D labels, with and without L_dep.

The synthetic training set is split into a labelled part (2D + 3D + depth) and a weakly labelled
part (2D + depth, 3D hidden; ``handlib.models.cai2018.label_split``). Each arm trains ``cai2018``
with 3D labels on a fraction of the images (1, 5, 25, 100 %), with L_dep (the depth regulariser)
and without, at equal steps and seed, and is scored on the fixed synthetic test set with the same
metric code as every method (3D EPE after the true root and scale, AUC of the 3D PCK over 20-50 mm).

Run (one torch thread; the quick profile takes about 3 minutes an arm on a 2-core CPU, the full one
about an hour)::

    .venv/bin/python benchmarks/cai_label_fraction.py --profile quick
    .venv/bin/python benchmarks/cai_label_fraction.py --profile full --fractions 5,100 --steps 1200

Runs resume (``data/runs/cai_label_fraction/``); the table is printed and written to
``data/results/cai_label_fraction.json`` (``--out``), which chapter 3 reads for its table and figure.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RUN_DIR = ROOT / "data" / "runs" / "cai_label_fraction"
RESULTS = ROOT / "data" / "results" / "cai_label_fraction.json"

# Percent of the training images that keep their 3D labels -> the variant of cai2018 (with L_dep).
VARIANTS = {1: "labels1", 5: "labels5", 25: "labels25", 100: None}
COLUMNS = {"label_percent": "3D labels (%)", "depth": "L_dep", "epe_3d_mm": "3D EPE (mm)",
           "median_3d_mm": "median (mm)", "auc_20_50": "AUC 20-50 mm", "epe_2d_px": "2D EPE (px)",
           "wall_time_s": "train (s)"}


def variant_name(percent: int, depth: bool) -> str:
    """The ``cai2018`` name of an arm: "cai2018:labels5", "cai2018:labels5_nodepth", "cai2018", "cai2018:nodepth"."""
    if percent not in VARIANTS:
        raise ValueError(f"percent: expected one of {sorted(VARIANTS)}, got {percent!r}")
    variant = VARIANTS[percent]
    if depth:
        return "cai2018" if variant is None else f"cai2018:{variant}"
    return "cai2018:nodepth" if variant is None else f"cai2018:{variant}_nodepth"


def label_fraction_experiment(percents=(1, 5, 25, 100), profile: str = "quick", steps: int | None = None,
                              seed: int = 0, run_dir=RUN_DIR, overrides: dict | None = None,
                              device="cpu", progress: bool = False) -> list[dict]:
    """Train and score every arm (percent x with / without L_dep); runs resume from ``run_dir``.

    Args:
        percents: label fractions in percent (keys of ``VARIANTS``).
        profile: "quick" or "full".
        steps: image-stage steps of every arm (None: the profile's).
        seed: one seed for every arm: the same initialisation, batches and label split.
        run_dir: where the runs' checkpoints go.
        overrides: more config changes for every arm (e.g. {"regulariser_steps": 200}).
        device: "cpu", "cuda".
        progress: show progress bars.

    Returns:
        list of dicts, one per arm: {"name", "label_percent", "depth", "epe_3d_mm", "median_3d_mm",
        "auc_20_50", "epe_2d_px", "num_samples", "wall_time_s", "steps"}.
    """
    from handlib.train import train

    changes = dict(overrides or {})
    if steps is not None:
        changes["steps"] = steps
    rows = []
    for percent in percents:
        for depth in (True, False):
            name = variant_name(percent, depth)
            result = train(name, profile=profile, seed=seed, device=device, run_dir=run_dir, progress=progress,
                           overrides=changes)
            if not result.finished:
                raise RuntimeError(f"{name} did not finish; run again to resume it")
            metrics = result.metrics
            rows.append({"name": name, "label_percent": percent, "depth": depth,
                         **{key: metrics[key] for key in ("epe_3d_mm", "median_3d_mm", "auc_20_50", "epe_2d_px",
                                                          "num_samples")},
                         "wall_time_s": result.wall_time_s, "steps": len(result.history["images"]["total"])})
            print(f"{name}: 3D EPE {metrics['epe_3d_mm']:.1f} mm, AUC {metrics['auc_20_50']:.3f} "
                  f"({result.wall_time_s:.0f} s)", file=sys.stderr)
    return rows


def main(argv=None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--profile", default="quick", choices=("quick", "full"))
    parser.add_argument("--fractions", default="1,5,25,100", help="label percents, comma-separated")
    parser.add_argument("--steps", type=int, default=None, help="image-stage steps of every arm")
    parser.add_argument("--regulariser-steps", type=int, default=None, help="G's steps of every arm")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--run-dir", type=Path, default=RUN_DIR)
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args(argv)
    from handlib.evaluate import format_table
    from handlib.files import atomic_write_text
    from handlib.runtime import torch_threads

    overrides = {} if args.regulariser_steps is None else {"regulariser_steps": args.regulariser_steps}
    started = time.perf_counter()
    with torch_threads(1):
        rows = label_fraction_experiment([int(p) for p in args.fractions.split(",")], args.profile, args.steps,
                                         args.seed, args.run_dir, overrides, args.device)
    print(format_table(rows, COLUMNS))
    atomic_write_text(args.out, json.dumps({"profile": args.profile, "seed": args.seed, "steps": args.steps,
                                    "overrides": overrides, "wall_time_s": time.perf_counter() - started,
                                    "rows": rows}, indent=1))
    print(f"written {args.out}")
    return rows


if __name__ == "__main__":
    main()
