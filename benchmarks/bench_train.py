"""Training speed of a method, and longer-than-a-profile runs on the machine at hand.

Run: ``.venv/bin/python benchmarks/bench_train.py`` (add ``--help`` for the options).

Two modes:

``speed`` (default)
    Seconds per training step of a method's profile (after a few warm-up steps), split into
    data loading and the optimiser step, on the cached training set, on ``--device`` (default:
    CUDA when available). The machine's load average is printed first: the numbers are only
    comparable at similar load.

``long``
    A longer run of a profile's model (``--steps``, ``--milestones``, ``--train-samples``): what
    ``handlib/assets/checkpoints`` ships for machines without a GPU. It goes through
    ``handlib.train.train`` (resumable: run the same command again to continue), writes to
    ``--checkpoint-dir``, and saves a checkpoint when stopped with Ctrl-C or ``kill -TERM``.
    ``--export`` then evaluates it on the fixed test set and writes the slim copy (weights, config,
    history, provenance, those metrics) into ``handlib/assets/checkpoints``; the run's own checkpoint
    is left as it is, so it still resumes and evaluates itself when it finishes.
"""
from __future__ import annotations

import argparse
import os
import signal
import time
from pathlib import Path

import torch

from handlib import train as training


def speed(args) -> None:
    spec = training.get_method(args.method)
    hyper = spec.profiles[args.profile]
    device = training.get_device(args.device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True           # as handlib.train.train does
    torch.manual_seed(0)
    model = spec.build_model(args.profile).to(device)
    optimizer, _ = training.make_optimizer(model, hyper)
    dataset = spec.make_dataset("train", hyper.train_samples, 0, hyper.image_size)
    batches = iter(training.training_batches(dataset, 0, args.warmup + args.steps, hyper.batch_size, 0,
                                             hyper.num_workers))
    load_times, step_times = [], []
    for step in range(args.warmup + args.steps):
        start = time.perf_counter()
        batch = training.to_device(next(batches), device)
        synchronize(device)
        loaded = time.perf_counter()
        total, _ = spec.loss(model, batch)
        optimizer.zero_grad(set_to_none=True)
        total.backward()
        optimizer.step()
        synchronize(device)
        if step >= args.warmup:
            load_times.append(loaded - start)
            step_times.append(time.perf_counter() - loaded)
    load, step = sum(load_times) / len(load_times), sum(step_times) / len(step_times)
    print(f"{args.method} ({args.profile}): batch {hyper.batch_size}, {hyper.image_size} px, "
          f"{training.device_name(device)}, {hyper.num_workers} loading workers")
    print(f"| data (s/step) | forward + backward + Adam (s/step) | total (s/step) | {hyper.steps} steps (min) |")
    print("|---|---|---|---|")
    print(f"| {load:.3f} | {step:.3f} | {load + step:.3f} | {(load + step) * hyper.steps / 60:.1f} |")


def synchronize(device: torch.device) -> None:
    """Wait for the GPU to finish its queued work (so the clock measures it)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _stop_on_term(signum, frame):
    raise KeyboardInterrupt      # train() saves a checkpoint on KeyboardInterrupt


def long_run(args) -> None:
    overrides = {"steps": args.steps, "milestones": tuple(args.milestones), "train_samples": args.train_samples,
                 "checkpoint_every": args.checkpoint_every}
    if args.export:
        source = training.checkpoint_path(args.method, args.profile, args.checkpoint_dir)
        row = training.evaluate(args.method, checkpoint=source, device="cpu", verbose=True)
        state = training.load_torch(source)
        planned, provenance = state["config"]["steps"], state["provenance"]
        note = (f"A CPU run of the {args.profile} model: {state['step']} of {planned} planned steps "
                f"(stopped {'at the end' if state['step'] >= planned else 'early, for time'}), "
                f"{provenance['wall_time_s'] / 60:.0f} min on {provenance.get('device_name', 'a CPU')}. "
                f"{args.note}").strip()
        destination = training.COMMITTED_CHECKPOINT_DIR / source.name
        training.export_checkpoint(source, destination, note=note, metrics=row)
        print(f"wrote {destination} ({destination.stat().st_size / 1e6:.1f} MB) and its record")
        return
    signal.signal(signal.SIGTERM, _stop_on_term)
    try:
        result = training.train(args.method, profile=args.profile, device="cpu", seed=args.seed,
                                checkpoint_dir=args.checkpoint_dir, overrides=overrides, progress=args.progress)
        print(result.metrics)
    except KeyboardInterrupt:
        print("stopped; the checkpoint is saved")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("mode", nargs="?", choices=["speed", "long"], default="speed")
    parser.add_argument("--method", default="zimmermann2017")
    parser.add_argument("--profile", choices=["quick", "full"], default="quick")
    parser.add_argument("--steps", type=int, default=20, help="speed: timed steps; long: the run's steps")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--device", default=None, help="speed: cpu, cuda, ... (default: cuda if available)")
    parser.add_argument("--milestones", type=int, nargs="*", default=[])
    parser.add_argument("--train-samples", type=int, default=4096)
    parser.add_argument("--checkpoint-every", type=int, default=250)
    parser.add_argument("--checkpoint-dir", type=Path, default=training.DEFAULT_CHECKPOINT_DIR / "cpu-long")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--progress", action="store_true")
    parser.add_argument("--export", action="store_true", help="long: evaluate and ship the checkpoint")
    parser.add_argument("--note", default="", help="long --export: a sentence for the record")
    args = parser.parse_args()
    print(f"load average {' '.join(f'{load:.2f}' for load in os.getloadavg())} on {os.cpu_count()} CPUs")
    speed(args) if args.mode == "speed" else long_run(args)


if __name__ == "__main__":
    main()
