"""Size, work and CPU speed of the candidate backbones (handlib.models.backbone), each with both heads.

Run: ``.venv/bin/python benchmarks/bench_backbone.py`` (add ``--help`` for the options; about
2 minutes on 2 cores). ``--train-minutes 6 --threads 1`` also pre-trains each candidate for 6 minutes
and prints its 2D error: accuracy per CPU-minute.

Each candidate is the encoder ``build_encoder(kind, width)`` plus a ``ScoreMapHead`` (21 maps) and
a ``MaskHead``, on images of ``--image-size`` pixels, features and maps at 1/4 of it. Columns:

    params (M)      parameters of encoder + heads (in brackets: the encoder alone)
    GFLOP / image   forward work for one image: multiply-adds of every convolution, counted with
                    forward hooks, times 2 (BatchNorm, ReLU, pooling and upsampling not counted)
    train img/s     forward + backward in training mode (MSE on the score maps + binary
                    cross-entropy on the mask, so the gradient goes through both heads), batch
                    ``--batch-size``; median over the timed steps, after warm-up steps
    infer img/s     forward in eval mode under ``torch.no_grad()``, same batch, median

The machine's load average is printed first: the numbers are only comparable at similar load.
"""
from __future__ import annotations

import argparse
import os
import platform
import statistics
import time

import torch
import torch.nn.functional as F
from torch import nn

from handlib.models.backbone import ENCODER_STRIDE, ENCODERS, HandEncoder
from handlib.skeleton import NUM_KEYPOINTS


def parameters_millions(module: nn.Module) -> float:
    return sum(p.numel() for p in module.parameters()) / 1e6


def forward_gflop(model: nn.Module, image_size: int) -> float:
    """Forward GFLOP for one image: 2 x the multiply-adds of every nn.Conv2d, counted by hooks."""
    macs = 0

    def count(conv: nn.Conv2d, inputs, output):
        nonlocal macs
        kernel_h, kernel_w = conv.kernel_size
        macs += output.numel() // output.shape[0] * (conv.in_channels // conv.groups) * kernel_h * kernel_w

    hooks = [m.register_forward_hook(count) for m in model.modules() if isinstance(m, nn.Conv2d)]
    model.eval()
    with torch.no_grad():
        model(torch.rand(1, 3, image_size, image_size))
    for hook in hooks:
        hook.remove()
    return 2 * macs / 1e9


def median_images_per_second(step, batch_size: int, warmup: int, repeats: int) -> float:
    """batch_size / the median seconds of ``step()`` over ``repeats`` calls after ``warmup`` calls."""
    for _ in range(warmup):
        step()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    return batch_size / statistics.median(times)


def measure(kind: str, width: float, batch_size: int, image_size: int, warmup: int, repeats: int) -> dict:
    """One row of the table for the candidate ``kind`` at ``width``."""
    torch.manual_seed(0)
    model = HandEncoder(kind, width)
    maps_size = image_size // ENCODER_STRIDE
    images = torch.rand(batch_size, 3, image_size, image_size)
    target_maps = torch.rand(batch_size, NUM_KEYPOINTS, maps_size, maps_size)
    target_mask = (torch.rand(batch_size, 1, maps_size, maps_size) > 0.5).float()

    def train_step():
        model.zero_grad(set_to_none=True)
        out = model(images)
        loss = F.mse_loss(out["score_maps"], target_maps) + \
            F.binary_cross_entropy_with_logits(out["mask_logits"], target_mask)
        loss.backward()

    def inference_step():
        with torch.no_grad():
            model(images)

    row = {"kind": kind, "width": width, "channels": model.encoder.out_channels,
           "params": parameters_millions(model), "encoder_params": parameters_millions(model.encoder),
           "gflop": forward_gflop(model, image_size)}
    model.train()
    row["train"] = median_images_per_second(train_step, batch_size, warmup, repeats)
    model.eval()
    row["infer"] = median_images_per_second(inference_step, batch_size, warmup, repeats)
    return row


def accuracy(kind: str, width: float, minutes: float, profile: str = "full") -> dict:
    """Accuracy per CPU-minute: pre-train the candidate as the backbone of ``profile`` for ``minutes``
    (a run in data/runs/backbone-candidates/KIND, on the threads set), then its 2D error on the fixed test set."""
    from handlib.checkpoints import RUN_DIR, load_model
    from handlib.evaluate import evaluate_model
    from handlib.train import train

    cpu_start = time.process_time()
    result = train("backbone", profile=profile, run_dir=RUN_DIR / "backbone-candidates" / kind, minutes=minutes,
                   resume=False, progress=False, device="cpu",
                   overrides={"encoder": kind, "width": width, "steps": 1_000_000, "milestones": ()})
    cpu_minutes = (time.process_time() - cpu_start) / 60
    method, model, config = load_model("backbone", checkpoint=result.checkpoint, device="cpu")
    row = evaluate_model(method, model, config, device="cpu")
    return {"steps": result.position["step"], "cpu_minutes": cpu_minutes, "epe_2d_px": row["epe_2d_px"],
            "score_maps_loss": sum(result.history["keypoints_and_mask"]["score_maps"][-25:]) / 25}


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--encoders", nargs="+", choices=sorted(ENCODERS), default=list(ENCODERS))
    parser.add_argument("--width", type=float, default=1.0, help="channel multiplier of every encoder (default 1)")
    parser.add_argument("--threads", type=int, default=2, help="torch.set_num_threads (default 2)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--image-size", type=int, default=128, help="a multiple of 4 (default 128)")
    parser.add_argument("--quick", action="store_true", help="1 warm-up and 2 timed steps (a smoke run)")
    parser.add_argument("--train-minutes", type=float, default=0.0,
                        help="also pre-train each candidate this long (the backbone's full data) and report its "
                             "2D error on the fixed test set: accuracy per CPU-minute (default 0: speed only)")
    args = parser.parse_args(argv)
    warmup, repeats = (1, 2) if args.quick else (3, 7)

    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {platform.machine()} CPU, {os.cpu_count()} cores, "
          f"{torch.get_num_threads()} torch threads; load average "
          f"{' '.join(f'{x:.2f}' for x in os.getloadavg())} (1, 5, 15 min)")
    print(f"batch {args.batch_size}, {args.image_size} px images, {args.image_size // ENCODER_STRIDE} px maps; "
          f"median of {repeats} steps after {warmup} warm-up\n")
    print("| encoder | width | C | params (M) | GFLOP / image | train img/s | infer img/s |")
    print("|---|---|---|---|---|---|---|")
    rows = []
    for kind in args.encoders:
        row = measure(kind, args.width, args.batch_size, args.image_size, warmup, repeats)
        print(f"| {kind} | {row['width']:g} | {row['channels']} | {row['params']:.2f} ({row['encoder_params']:.2f}) "
              f"| {row['gflop']:.2f} | {row['train']:.1f} | {row['infer']:.1f} |", flush=True)
        rows.append(row)
    if args.train_minutes > 0:
        print(f"\n| encoder | steps in {args.train_minutes:g} min | CPU minutes | score-map loss (last 25) "
              "| 2D EPE (px) on the fixed test set |\n|---|---|---|---|---|")
        for row in rows:
            row.update(accuracy(row["kind"], args.width, args.train_minutes))
            print(f"| {row['kind']} | {row['steps']} | {row['cpu_minutes']:.1f} | {row['score_maps_loss']:.4f} "
                  f"| {row['epe_2d_px']:.1f} |", flush=True)
    print(f"\nload average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    return rows


if __name__ == "__main__":
    main()
