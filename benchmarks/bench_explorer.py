"""Kernel-side cost of one slider step of the hand explorer (handlib.viz.explorer.HandExplorer).

Run:  .venv/bin/python benchmarks/bench_explorer.py [--steps 100] [--model PATH]

A slider step is what happens in the kernel when the browser reports a new slider value: the
callback reads the sliders, runs the hand model once (batch 1, no gradients), and assigns the new
float32 coordinates of the mesh and the skeleton inside ``figure.batch_update()``. Sending the
message to the browser and drawing it (WebGL) are not included: they happen elsewhere.

For each kind of slider (a beta, a PCA coefficient, a per-joint angle, the global rotation) it
prints the median and the 90th percentile over ``--steps`` steps, in milliseconds, and the same
split into the model forward alone and the figure update alone. The target is under 20 ms.
"""
from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import numpy as np

from handlib.mano import default_model_path
from handlib.viz.explorer import HandExplorer
from handlib.viz.plot3d import set_hand_data

KINDS = ("beta", "pca", "joint", "rotation")


def percentile(values, q: float) -> float:
    return float(np.percentile(np.asarray(values), q))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=100, help="slider steps per kind (default 100)")
    parser.add_argument("--model", type=Path, default=None, help="a MANO_RIGHT.pkl (default: the open hand)")
    args = parser.parse_args()

    model = args.model or default_model_path()
    explorer = HandExplorer(model, num_pca_comps=6)
    explorer.time_updates(10, "beta")  # warm up
    vertices = explorer.layer.v_template.shape[0]
    print(f"hand explorer, kernel side: {model} ({vertices} vertices), {args.steps} steps per slider kind")
    print(f"{'slider':>10} {'median ms':>10} {'p90 ms':>8}")
    worst = 0.0
    for kind in KINDS:
        times = explorer.time_updates(args.steps, kind)
        worst = max(worst, statistics.median(times))
        print(f"{kind:>10} {statistics.median(times):>10.2f} {percentile(times, 90):>8.2f}")

    # The two halves of a step, for the record.
    forward, update = [], []
    out = explorer._forward()
    for step in range(args.steps):
        start = time.perf_counter()
        out = explorer._forward()
        forward.append(1000 * (time.perf_counter() - start))
        start = time.perf_counter()
        set_hand_data(explorer.figure, out.vertices[0].numpy() + 1e-4 * (step % 2), out.joints[0].numpy())
        update.append(1000 * (time.perf_counter() - start))
    print(f"{'forward':>10} {statistics.median(forward):>10.2f} {percentile(forward, 90):>8.2f}   (model only)")
    print(f"{'figure':>10} {statistics.median(update):>10.2f} {percentile(update, 90):>8.2f}   (batch_update only)")
    print(f"slowest median {worst:.2f} ms per step: {'within' if worst < 20 else 'OVER'} the 20 ms target")


if __name__ == "__main__":
    main()
