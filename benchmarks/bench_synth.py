"""Samples per second of the synthetic data engine (handlib.data.synth), and the cache's write speed.

Run: ``.venv/bin/python benchmarks/bench_synth.py`` (add ``--help`` for the options).

Rows:
    render_batch B      one ``render_batch`` call of B samples (the whole pipeline: pose, MANO,
                        rasterize, shade, background, occluders, finish), best and median of repeats
    DataLoader 32       ``SyntheticHandDataset`` through ``DataLoader(batch_size=32, shuffle=True)``
                        (``__getitems__``: one render per batch), main process
    cache write         ``cached_test_set`` into a temporary folder: render + compress + atomic write

The machine's load average is printed first: the numbers are only comparable at similar load.
"""
from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

import torch

from handlib.data import synth


def timed(function, repeats: int) -> list[float]:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return times


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[64, 128])
    parser.add_argument("--batches", type=int, nargs="+", default=[16, 32, 64])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--cache-samples", type=int, default=128)
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    parser.add_argument("--device", default=None, help="rasterize on this device (default cpu)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    print(f"load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())}   "
          f"torch threads: {torch.get_num_threads()}   cpus: {os.cpu_count()}   device: {args.device or 'cpu'}")
    synth.render_batch(8, seed=0, image_size=32)  # warm up: the hand model, the prior, the first pose block
    print(f"{'what':<22}{'size':>6}{'best samples/s':>16}{'median samples/s':>18}")
    start_index = 10_000
    for size in args.sizes:
        for batch in args.batches:
            def run():
                nonlocal start_index
                synth.render_batch(range(start_index, start_index + batch), seed=0, image_size=size, device=args.device)
                start_index += batch

            times = timed(run, args.repeats)
            print(f"{'render_batch ' + str(batch):<22}{size:>6}{batch / min(times):>16.1f}{batch / statistics.median(times):>18.1f}")
        dataset = synth.SyntheticHandDataset(100_000, seed=1, image_size=size)
        loader = iter(torch.utils.data.DataLoader(dataset, batch_size=32, shuffle=True))
        times = timed(lambda: next(loader), args.repeats)
        print(f"{'DataLoader 32':<22}{size:>6}{32 / min(times):>16.1f}{32 / statistics.median(times):>18.1f}")

    with tempfile.TemporaryDirectory() as folder:
        for size in args.sizes:
            start = time.perf_counter()
            test_set = synth.cached_test_set(num_samples=args.cache_samples, seed=123, image_size=size,
                                             cache_dir=folder, progress=False)
            seconds = time.perf_counter() - start
            size_bytes = sum(p.stat().st_size for p in Path(test_set.directory).glob("*.npz"))
            start = time.perf_counter()
            synth.cached_test_set(num_samples=args.cache_samples, seed=123, image_size=size, cache_dir=folder,
                                  progress=False)
            reload = time.perf_counter() - start
            print(f"{'cache write':<22}{size:>6}{args.cache_samples / seconds:>16.1f}{'':>18}   "
                  f"{size_bytes / args.cache_samples / 1024:.1f} KiB/sample on disk, "
                  f"reload {args.cache_samples / reload:.0f} samples/s")
    print(f"load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
