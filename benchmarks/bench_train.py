"""Training speed of a method, and longer-than-a-profile runs on the machine at hand.

Run: ``.venv/bin/python benchmarks/bench_train.py`` (add ``--help`` for the options).

Two modes:

``speed`` (default)
    Seconds per training step of one stage of a method's profile (after a few warm-up steps),
    split into data loading and the optimiser step, on the stage's (cached) training set, on
    ``--device`` (default: CUDA when available). The machine's load average is printed first: the
    numbers are only comparable at similar load. Each step is the one ``handlib.train`` runs: the
    batch of ``batch_indices``, the stage's loss with its ``LossContext``, Adam.

``long``
    A longer run of a profile (``--steps``, ``--milestones``, ``--train-samples``,
    ``--checkpoint-every``, or any config field with ``--set``): what ``handlib/assets/checkpoints``
    ships for machines without a GPU. It is ``handlib.train.train`` on the CPU, writing to
    ``--run-dir``: ``--minutes`` stops it with a checkpoint, and so do Ctrl-C and ``kill -TERM``; run
    the same command again to resume. ``--export`` then ships the finished run
    (``handlib.checkpoints.export_checkpoint``: weights, run, history, provenance and metrics, with a
    note of how it was made) into ``handlib/assets/checkpoints``.

Examples::

    benchmarks/bench_train.py --method zimmermann2017 --profile full
    benchmarks/bench_train.py --method backbone --steps 3 --warmup 1 --set image_size=32 train_samples=64
    benchmarks/bench_train.py long --method zimmermann2017:direct --steps 8000 --milestones 6400 --minutes 90
    benchmarks/bench_train.py long --method zimmermann2017:direct --steps 8000 --milestones 6400 --export
"""
from __future__ import annotations

import argparse
import ast
import os
import signal
import time
from pathlib import Path

import torch
from torch.utils.data import default_collate

from handlib import checkpoints
from handlib.methods import LossContext
from handlib.registry import config_from_dict, get_method
from handlib.runtime import get_device, to_device
from handlib.train import batch_indices, step_seed, train


def parse_setting(text: str) -> tuple[str, object]:
    """"lr=1e-3" -> ("lr", 0.001); a value that is not a Python literal stays a string."""
    key, separator, value = text.partition("=")
    if not separator or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    try:
        return key, ast.literal_eval(value)
    except (ValueError, SyntaxError):
        return key, value


def speed(args, overrides: dict) -> None:
    method, variant = get_method(args.method)
    config = method.config(args.profile, variant, **overrides)
    stages = method.stages(config)
    names = [stage.name for stage in stages]
    if args.stage is not None and args.stage not in names:
        raise SystemExit(f"--stage: {args.method} has the stages {names}, not {args.stage!r}")
    index = 0 if args.stage is None else names.index(args.stage)
    stage, schedule = stages[index], stages[index].schedule
    device = get_device(args.device)
    torch.backends.cudnn.benchmark = device.type == "cuda"          # as handlib.train.train does
    torch.manual_seed(0)
    model = method.build_model(config).to(device).train()           # initialize (e.g. a shipped backbone) left out
    parameters = stage.parameters(model) if stage.parameters else model.parameters()
    optimizer = torch.optim.Adam(parameters, lr=schedule.lr, weight_decay=schedule.weight_decay)
    dataset = stage.data(0)
    load_times, step_times = [], []
    for step in range(args.warmup + args.steps):
        start = time.perf_counter()
        indices = batch_indices(step, schedule.batch_size, len(dataset), 0)
        batch = to_device(default_collate([dataset[i] for i in indices]), device)
        synchronize(device)
        loaded = time.perf_counter()
        generator = torch.Generator(device).manual_seed(step_seed(0, index, step))
        total, _ = stage.loss(model, batch, LossContext(step, generator, stage.name))
        optimizer.zero_grad(set_to_none=True)
        total.backward()
        optimizer.step()
        synchronize(device)
        if step >= args.warmup:
            load_times.append(loaded - start)
            step_times.append(time.perf_counter() - loaded)
    load, step = sum(load_times) / len(load_times), sum(step_times) / len(step_times)
    print(f"{args.method} ({args.profile}), stage {stage.name}: batch {schedule.batch_size}, {config.image_size} px, "
          f"{checkpoints.device_name(device)}" + (f", overrides {overrides}" if overrides else ""))
    print(f"| data (s/step) | forward + backward + Adam (s/step) | total (s/step) | {schedule.steps} steps (min) |")
    print("|---|---|---|---|")
    print(f"| {load:.3f} | {step:.3f} | {load + step:.3f} | {(load + step) * schedule.steps / 60:.1f} |")


def synchronize(device: torch.device) -> None:
    """Wait for the GPU to finish its queued work (so the clock measures it)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _stop_on_term(signum, frame):
    raise KeyboardInterrupt      # train() saves a checkpoint on KeyboardInterrupt


def long_run(args, overrides: dict) -> None:
    if args.export:
        export(args)
        return
    signal.signal(signal.SIGTERM, _stop_on_term)
    try:
        result = train(args.method, profile=args.profile, device="cpu", seed=args.seed, run_dir=args.run_dir,
                       overrides=overrides, minutes=args.minutes, progress=args.progress)
    except KeyboardInterrupt:
        print("stopped; the checkpoint is saved, run the same command again to resume")
        return
    print(f"{result.checkpoint}: {'finished' if result.finished else 'not finished'}, "
          f"{result.wall_time_s / 60:.1f} min of training")
    if result.metrics:
        print(result.metrics)


def export(args) -> None:
    """Ship the finished long run, with a note of how it was made."""
    method, _ = get_method(args.method)
    source = checkpoints.run_path(args.method, args.profile, args.run_dir)
    if not source.is_file():
        raise SystemExit(f"no run {source}; train it first: benchmarks/bench_train.py long --method {args.method} ...")
    state = checkpoints.read_checkpoint(source, "cpu")
    config = config_from_dict(method, args.profile, state["run"]["config"])
    steps = " + ".join(f"{stage.schedule.steps} ({stage.name})" for stage in method.stages(config))
    provenance = state["provenance"]
    note = (f"A CPU run of the {args.profile} profile, {steps} steps, {provenance['wall_time_s'] / 60:.0f} min on "
            f"{provenance.get('device_name', 'a CPU')}. {args.note}").strip()
    destination = checkpoints.export_checkpoint(source, checkpoints.shipped_path(args.method, args.profile), note=note)
    print(f"wrote {destination} ({destination.stat().st_size / 1e6:.1f} MB) and its record")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument("mode", nargs="?", choices=["speed", "long"], default="speed")
    parser.add_argument("--method", default="zimmermann2017", help="a method or METHOD:VARIANT")
    parser.add_argument("--profile", choices=["quick", "full"], default="quick")
    parser.add_argument("--stage", default=None, help="speed: the stage to time (default: the first)")
    parser.add_argument("--steps", type=int, default=None,
                        help="speed: timed steps (default 20); long: the run's steps (default: the profile's)")
    parser.add_argument("--warmup", type=int, default=3, help="speed: untimed steps first")
    parser.add_argument("--device", default=None, help="speed: cpu, cuda, ... (default: cuda if available)")
    parser.add_argument("--milestones", type=int, nargs="*", default=None, help="long: learning-rate milestones")
    parser.add_argument("--train-samples", type=int, default=None, help="the training set's size")
    parser.add_argument("--checkpoint-every", type=int, default=None, help="long: steps between checkpoints")
    parser.add_argument("--set", type=parse_setting, nargs="*", default=[], metavar="KEY=VALUE",
                        help="any config field, e.g. --set image_size=64 lr=1e-3")
    parser.add_argument("--minutes", type=float, default=None, help="long: stop with a checkpoint after this long")
    parser.add_argument("--run-dir", type=Path, default=checkpoints.RUN_DIR / "cpu-long")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--progress", action="store_true")
    parser.add_argument("--export", action="store_true", help="long: ship the finished run")
    parser.add_argument("--note", default="", help="long --export: a sentence for the record")
    args = parser.parse_args()
    overrides = dict(args.set)
    if args.train_samples is not None:
        overrides["train_samples"] = args.train_samples
    if args.mode == "long":
        for key, value in (("steps", args.steps), ("checkpoint_every", args.checkpoint_every),
                           ("milestones", None if args.milestones is None else tuple(args.milestones))):
            if value is not None:
                overrides[key] = value
    else:
        args.steps = 20 if args.steps is None else args.steps
    print(f"load average {' '.join(f'{load:.2f}' for load in os.getloadavg())} on {os.cpu_count()} CPUs")
    speed(args, overrides) if args.mode == "speed" else long_run(args, overrides)


if __name__ == "__main__":
    main()
