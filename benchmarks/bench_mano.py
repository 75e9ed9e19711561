"""MANO forward speed: handlib's ManoLayer against smplx's MANO, same model file, same process.

Run:  .venv/bin/python benchmarks/bench_mano.py [--model PATH] [--threads N]

Prints the median time of a forward pass (no grad) and of forward + backward (gradients for
pose, shape, orientation, translation) at batch 1, 64 and 1024, and smplx's time over handlib's.
"""
from __future__ import annotations

import argparse
import contextlib
import io
import os
import statistics
import time
from pathlib import Path

import torch

from handlib.mano import ManoLayer, default_model_path


def median_ms(function, repeats: int) -> float:
    function()  # warm up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=None, help="a MANO_RIGHT.pkl (default: the open hand)")
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    import smplx

    if args.threads:
        torch.set_num_threads(args.threads)
    path = args.model or default_model_path()
    print(f"model: {path}  torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"load average {os.getloadavg()[0]:.2f}\n")
    print(f"{'batch':>6} {'pass':>10} {'handlib ms':>11} {'smplx ms':>9} {'smplx/handlib':>14}")
    ours = ManoLayer(path, num_pca_comps=None, flat_hand_mean=False)
    for batch in (1, 64, 1024):
        with contextlib.redirect_stdout(io.StringIO()):
            theirs = smplx.MANO(str(path.parent), is_rhand=True, use_pca=False, flat_hand_mean=False,
                                batch_size=batch)
        generator = torch.Generator().manual_seed(batch)
        inputs = {"hand_pose": 0.5 * torch.randn(batch, 45, generator=generator),
                  "betas": torch.randn(batch, 10, generator=generator),
                  "global_orient": torch.randn(batch, 3, generator=generator),
                  "transl": torch.randn(batch, 3, generator=generator)}
        repeats = 200 if batch == 1 else 50 if batch == 64 else 15

        def forward(layer, joints):
            with torch.no_grad():
                out = layer(**inputs)
                return out.vertices, getattr(out, joints)

        def forward_backward(layer, joints):
            leaves = {name: value.clone().requires_grad_(True) for name, value in inputs.items()}
            out = layer(**leaves)
            (out.vertices.square().sum() + getattr(out, joints).square().sum()).backward()

        for name, run in [("fwd", forward), ("fwd+bwd", forward_backward)]:
            t_ours = median_ms(lambda: run(ours, "joints"), repeats)
            t_theirs = median_ms(lambda: run(theirs, "joints"), repeats)
            print(f"{batch:>6} {name:>10} {t_ours:>11.3f} {t_theirs:>9.3f} {t_theirs / t_ours:>13.2f}x")


if __name__ == "__main__":
    main()
