"""Which changes to the synthetic data and to the training recipe close the gap to real photos.

Trains the shared backbone (``handlib.models.backbone``) once per arm, at equal compute (the same
steps, batch size and number of rendered hands), and scores each arm with the same metric code on

* the fixed synthetic test set (the engine's default look),
* the proxy: a synthetic test set in appearance families training never sees
  (``SynthConfig(appearance="held_out")``),
* the repository's real photos (``handlib.evaluate.real_sample_sets``: FreiHAND, CMU Panoptic,
  InterHand2.6M; RHD is left out of the pooled column because its frames are renders too),

next to the two image-free baselines (every keypoint at the crop centre; the mean training pose).
An arm is the full recipe with one change undone ("- forearm"), plus the old recipe on the old look
and the full recipe: the difference to "full recipe" is what that change buys.

Run (two arms at a time, one torch thread each; at the shipped backbone's compute, 2400 steps of 32
on 24 576 hands, about 50 minutes an arm on a core; 400 steps show nothing yet, measured)::

    .venv/bin/python benchmarks/domain_gap.py                 # every arm, 2400 steps
    .venv/bin/python benchmarks/domain_gap.py --arms "full recipe,- forearm" --steps 300
    .venv/bin/python benchmarks/domain_gap.py --arms "full recipe" \
        --checkpoint "shipped backbone=handlib/assets/checkpoints/backbone-full.pt"   # and a trained one

Runs resume (``data/runs/domain_gap/``); the table is printed and merged into
``data/results/domain_gap.json`` (a row replaces the stored row of the same arm and steps; the
others stay), which chapter 0 shows.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RUN_DIR = ROOT / "data" / "runs" / "domain_gap"
RESULTS = ROOT / "data" / "results" / "domain_gap.json"

# The look of the engine before the realism work (ENGINE_VERSION 1), as knobs.
V1_LOOK = (("forearm", 0.0), ("skin_detail", 0.0), ("distractors", 0.0), ("background", "procedural"),
           ("lighting", "single"))

# name -> (what the arm changes, BackboneConfig overrides of the shipped recipe, "full recipe").
ARMS = {
    "v1 look and recipe": ("the backbone as first shipped: v1 renders, no camera effects, score maps only",
                             {"synth_knobs": V1_LOOK, "camera_effects": False, "coordinate_weight": 0.0}),
    "full recipe": ("every change below", {}),
    "- forearm": ("no forearm (nor sleeve) continuing out of the crop", {"synth_knobs": (("forearm", 0.0),)}),
    "- clutter": ("the v1 procedural backgrounds instead of cluttered rooms",
                  {"synth_knobs": (("background", "procedural"),)}),
    "- distractors": ("no second hand, face or arm behind the hand", {"synth_knobs": (("distractors", 0.0),)}),
    "- skin detail": ("no creases, nails, blotches, darkening between fingers",
                      {"synth_knobs": (("skin_detail", 0.0),)}),
    "- lights": ("the v1 single light and exposure instead of a key, fill and rim light of other colours",
                 {"synth_knobs": (("lighting", "single"),)}),
    "- camera effects": ("no blur, noise, colour, JPEG drawn over the batches", {"camera_effects": False}),
    "- coordinate loss": ("score-map and mask losses only", {"coordinate_weight": 0.0}),
}
REAL_PHOTOS = ("FreiHAND", "CMU Panoptic hands", "InterHand2.6M")


def slug(arm: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in arm).strip("_")


def arm_config(arm: str, steps: int, train_samples: int):
    """The backbone's config of one arm: the full profile's, shortened to ``steps``."""
    from handlib.models.backbone import METHOD

    overrides = ARMS[arm][1]
    return METHOD.config("full", steps=steps, milestones=(int(0.75 * steps),), train_samples=train_samples,
                         test_samples=512, checkpoint_every=max(steps // 4, 1), **overrides), overrides


def run_arm(arm: str, steps: int, train_samples: int) -> dict:
    """Train one arm (resuming) and score it; returns its row."""
    from handlib.models.backbone import METHOD
    from handlib.train import train

    config, overrides = arm_config(arm, steps, train_samples)
    result = train(METHOD, profile="full", run_dir=RUN_DIR / slug(arm), progress=False,
                   overrides={key: getattr(config, key) for key in
                              ("steps", "milestones", "train_samples", "test_samples", "checkpoint_every", *overrides)})
    return {"arm": arm, "change": ARMS[arm][0], "steps": steps, **score_checkpoint(result.checkpoint)}


def score_checkpoint(checkpoint) -> dict:
    """A trained backbone's 2D error (px) on the synthetic test set, the proxy and the real samples."""
    from handlib import evaluate
    from handlib.checkpoints import load_model
    from handlib.data import synth
    from handlib.methods import CACHE_DIR, synthetic_test_set
    from handlib.models.backbone import METHOD

    method, model, config = load_model(METHOD, "full", checkpoint)
    row = {"steps": config.steps, "synthetic_px": evaluate.evaluate_model(method, model, config, synthetic_test_set(config, 512))["epe_2d_px"]}
    proxy = synth.cached_test_set(512, image_size=config.image_size, cache_dir=CACHE_DIR,
                                  config=synth.make_config(appearance="held_out"), progress=False)
    row["proxy_px"] = evaluate.evaluate_model(method, model, config, proxy)["epe_2d_px"]
    pooled = []
    for dataset, samples in evaluate.real_sample_sets(config.image_size).items():
        row[dataset] = evaluate.score_real_samples("", method, model, config, dataset, samples)["epe_2d_px"]
        pooled += samples if dataset in REAL_PHOTOS else []
    row["real_photos_px"] = evaluate.score_real_samples("", method, model, config, "real photos", pooled)["epe_2d_px"]
    return row


def baseline_rows(image_size: int = 128) -> list[dict]:
    """The image-free baselines on the same real samples (the mean pose of the default training look)."""
    import torch
    from torch.utils.data import default_collate

    from handlib import evaluate
    from handlib.methods import synthetic_training_set

    sets = evaluate.real_sample_sets(image_size)
    sets["real_photos_px"] = [s for dataset, samples in sets.items() if dataset in REAL_PHOTOS for s in samples]
    largest = max(len(samples) for samples in sets.values())
    baselines = evaluate.image_free_baselines(largest, image_size, synthetic_training_set(2048, 0, image_size))
    rows = []
    for name in evaluate.BASELINES:
        row = {"arm": name, "change": "no image looked at"}
        for column, samples in sets.items():
            prediction = baselines[name].select(torch.arange(len(samples)))
            row[column] = evaluate.score(prediction, default_collate(samples))["epe_2d_px"]
        rows.append(row)
    return rows


COLUMNS = {"arm": "arm", "synthetic_px": "synthetic", "proxy_px": "proxy (held-out look)",
           "real_photos_px": "real photos", "FreiHAND": "FreiHAND", "CMU Panoptic hands": "Panoptic",
           "InterHand2.6M": "InterHand", "RHD (rendered)": "RHD"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arms", default=",".join(ARMS), help="comma-separated arm names (default: all)")
    parser.add_argument("--steps", type=int, default=2400, help="training steps of every arm (batch 32)")
    parser.add_argument("--train-samples", type=int, default=24_576, help="rendered training hands of every arm")
    parser.add_argument("--jobs", type=int, default=2, help="arms trained at once, one torch thread each")
    parser.add_argument("--checkpoint", action="append", default=[], metavar="NAME=PATH",
                        help="also score this trained backbone (e.g. a shipped one), as a row named NAME")
    parser.add_argument("--run-arm", default=None, help=argparse.SUPPRESS)  # a worker: train and score one arm
    args = parser.parse_args()

    if args.run_arm is not None:
        row = run_arm(args.run_arm, args.steps, args.train_samples)
        (RUN_DIR / f"{slug(args.run_arm)}.json").write_text(json.dumps(row, indent=1))
        return

    from handlib.evaluate import format_table
    from handlib.files import atomic_write_text
    from handlib.methods import synthetic_training_set

    arms = [arm.strip() for arm in args.arms.split(",")]
    unknown = [arm for arm in arms if arm not in ARMS]
    if unknown:
        sys.exit(f"unknown arms {unknown}; expected some of {list(ARMS)}")
    RUN_DIR.mkdir(parents=True, exist_ok=True)
    for arm in arms:  # render every training set once, on every core, before the workers start
        config, _ = arm_config(arm, args.steps, args.train_samples)
        synthetic_training_set(config.train_samples, 0, config.image_size, config.synth_config())

    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    waiting, running, started = list(arms), {}, time.perf_counter()
    while waiting or running:
        while waiting and len(running) < args.jobs:
            arm = waiting.pop(0)
            command = [sys.executable, __file__, "--run-arm", arm, "--steps", str(args.steps),
                       "--train-samples", str(args.train_samples)]
            running[arm] = subprocess.Popen(command, env=env, cwd=ROOT)
        for arm, process in list(running.items()):
            if process.poll() is not None:
                del running[arm]
                status = "done" if process.returncode == 0 else f"FAILED ({process.returncode})"
                print(f"[{time.perf_counter() - started:6.0f} s] {arm}: {status}", flush=True)
        time.sleep(2)

    rows = [json.loads((RUN_DIR / f"{slug(arm)}.json").read_text()) for arm in arms
            if (RUN_DIR / f"{slug(arm)}.json").exists()]
    for item in args.checkpoint:
        name, _, path = item.partition("=")
        rows.append({"arm": name, "change": f"the checkpoint {path}", **score_checkpoint(path)})
    rows = merged_rows(json.loads(RESULTS.read_text())["rows"] if RESULTS.is_file() else [], rows + baseline_rows())
    print(f"2D error (px of a 128 px crop); arms trained --steps steps x 32 on {args.train_samples} rendered hands")
    print(format_table(rows, {"arm": "arm", "steps": "steps", **COLUMNS}))
    atomic_write_text(RESULTS, json.dumps({"batch_size": 32, "rows": rows}, indent=1))
    print(f"wrote {RESULTS}")


def merged_rows(stored: list[dict], new: list[dict]) -> list[dict]:
    """The stored table with ``new`` rows in place of those of the same arm and steps (the baselines:
    of the same arm), ordered by steps, the baselines last."""
    replaced = {(row["arm"], row.get("steps")) for row in new}
    rows = [row for row in stored if (row["arm"], row.get("steps")) not in replaced] + new
    return sorted(rows, key=lambda row: (row.get("steps") is None, row.get("steps") or 0))


if __name__ == "__main__":
    main()
