"""Ge et al.'s tables (chapter 6): full against weak supervision, the mesh loss's terms, and the
graph CNN against MANO-parameter regression (chapter 4).

**Weak supervision** (the paper's fine-tuning on real images without 3D): the shipped ``ge2019``,
trained fully on the synthetic engine's look, meets a **second image style** (the engine's held-out
appearance: other backgrounds, skin tints and lights) with 2D keypoints and sensor depth only. Rows:
the shipped model as it is, then the weak stage alone on top of it (``net_from``) with the depth loss
and the pseudo-ground-truth mesh, without the depth loss, without the pseudo-GT, and with the
heatmaps only. Scored on the second style's test images (3D joints after the root, mesh after
Procrustes) and on the real samples.

**Mesh-loss terms**: the full mesh loss and without its normal, edge-length or Laplacian term,
trained at equal steps (``--steps``), scored on the fixed synthetic test set.

**Graph CNN against MANO regression**: the shipped ``ge2019`` and ``boukhayma2019`` on the same
synthetic test images: joint and mesh errors.

Run (one torch thread)::

    .venv/bin/python benchmarks/ge_tables.py weak
    .venv/bin/python benchmarks/ge_tables.py mesh_terms --steps 1200
    .venv/bin/python benchmarks/ge_tables.py versus_mano

Runs resume (``data/runs/ge_experiments/``); the tables are printed and written to
``data/results/ge_tables.json``.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "data" / "results" / "ge_tables.json"
RUN_DIR = ROOT / "data" / "runs" / "ge_experiments"

WEAK_ROWS = {"weak: heatmaps + depth + pseudo-GT": "ge2019:weak", "weak without the depth loss": "ge2019:weak_nodepth",
             "weak without the pseudo-GT mesh": "ge2019:weak_nopseudo", "weak: heatmaps only": "ge2019:weak_2d"}
MESH_ROWS = {"full mesh loss": "ge2019", "without the normal term": "ge2019:no_normal",
             "without the edge term": "ge2019:no_edge", "without the Laplacian term": "ge2019:no_laplacian"}
VERSUS = {"graph CNN (Ge et al.)": "ge2019", "MANO regression (Boukhayma et al.)": "boukhayma2019"}
TABLE = {"row": "", "dataset": "images", "epe_3d_mm": "3D EPE (mm)", "epe_procrustes_mm": "PA EPE (mm)",
         "mesh_error_mm": "mesh PA (mm)", "epe_2d_px": "2D EPE (px)", "wall_time_s": "train (s)"}


def second_style_test_set(config, num_samples: int | None = None):
    """The test images of the second style: the fixed test split rendered with ``config.weak_synth_knobs``."""
    from handlib import methods
    from handlib.data import synth

    knobs = {**dict(config.synth_knobs), **dict(config.weak_synth_knobs)}
    return synth.cached_test_set(num_samples or config.test_samples, image_size=config.image_size,
                                 cache_dir=methods.CACHE_DIR, config=synth.make_config(**knobs), progress=False)


def score_rows(row: str, method, model, config, test_set, device="cpu", real: bool = True) -> list[dict]:
    """One model on ``test_set`` and, with ``real``, on every real-sample set."""
    from handlib import evaluate

    scored = evaluate.evaluate_model(method, model, config, test_set, device)
    rows = [{"row": row, "dataset": "test", **{key: scored.get(key) for key in TABLE if key in scored}}]
    if real:
        rows += [{"row": row, "dataset": found["dataset"], "epe_2d_px": found["epe_2d_px"],
                  "epe_procrustes_mm": found["epe_procrustes_mm"]}
                 for found in evaluate.score_on_real_samples(row, method, model, config, device)]
    return rows


def _trained(name: str, profile: str, run_dir, device, overrides: dict | None):
    from handlib.checkpoints import load_model
    from handlib.train import train

    result = train(name, profile=profile, device=device, run_dir=run_dir, progress=False,
                   overrides=dict(overrides or {}))
    if not result.finished:
        raise RuntimeError(f"{name} did not finish; run again to resume it")
    return (*load_model(name, profile, result.checkpoint, device), result.wall_time_s)


def weak_rows(profile: str = "full", device="cpu", run_dir=RUN_DIR, overrides: dict | None = None,
              shipped_run_dir=None) -> list[dict]:
    """The shipped model on the second style, then each weak arm (the weak stage alone on top of it)."""
    from handlib.checkpoints import find_checkpoint, load_model

    method, model, config = load_model("ge2019", profile, find_checkpoint("ge2019", profile, shipped_run_dir), device)
    test_set = second_style_test_set(config)
    rows = score_rows("fully supervised, first style only", method, model, config, test_set, device)
    for row, name in WEAK_ROWS.items():
        method, arm, arm_config, seconds = _trained(name, profile, run_dir, device, overrides)
        scored = score_rows(row, method, arm, arm_config, test_set, device)
        scored[0]["wall_time_s"] = seconds
        rows += scored
        print(f"{row}: done ({seconds:.0f} s)", file=sys.stderr)
    for row in rows:
        row["dataset"] = "second style" if row["dataset"] == "test" else row["dataset"]
    return rows


def mesh_term_rows(profile: str = "full", steps: int | None = None, device="cpu", run_dir=RUN_DIR,
                   overrides: dict | None = None) -> list[dict]:
    """Each arm of ``MESH_ROWS`` trained at equal steps, on the fixed synthetic test set."""
    changes = {**(overrides or {}), **({"steps": steps} if steps is not None else {})}
    rows = []
    for row, name in MESH_ROWS.items():
        method, model, config, seconds = _trained(name, profile, run_dir, device, changes)
        scored = score_rows(row, method, model, config, method.test_data(config, config.test_samples), device,
                            real=False)
        scored[0]["wall_time_s"] = seconds
        rows += scored
    return rows


def versus_mano_rows(profile: str = "full", device="cpu", run_dir=None) -> list[dict]:
    """The shipped graph CNN and MANO regression on the same synthetic test images."""
    from handlib.checkpoints import find_checkpoint, load_model

    rows = []
    for row, name in VERSUS.items():
        method, model, config = load_model(name, profile, find_checkpoint(name, profile, run_dir), device)
        rows += score_rows(row, method, model, config, method.test_data(config, config.test_samples), device)
    return rows


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("part", choices=("weak", "mesh_terms", "versus_mano"))
    parser.add_argument("--profile", default="full", choices=("quick", "full"))
    parser.add_argument("--steps", type=int, default=None, help="with mesh_terms: image steps of every arm")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args(argv)
    from handlib.evaluate import format_table
    from handlib.files import atomic_write_text
    from handlib.runtime import torch_threads

    started = time.perf_counter()
    with torch_threads(1):
        if args.part == "weak":
            rows = weak_rows(args.profile, args.device)
        elif args.part == "mesh_terms":
            rows = mesh_term_rows(args.profile, args.steps, args.device)
        else:
            rows = versus_mano_rows(args.profile, args.device)
    print(format_table(rows, TABLE))
    record = json.loads(args.out.read_text()) if args.out.is_file() else {}
    record[args.part] = {"profile": args.profile, "steps": args.steps, "wall_time_s": time.perf_counter() - started,
                         "rows": rows}
    atomic_write_text(args.out, json.dumps(record, indent=1))
    print(f"written {args.out}")
    return record


if __name__ == "__main__":
    main()
