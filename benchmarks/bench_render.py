"""Images per second of handlib.render at 64x64 and 128x128 for several batch sizes.

Run: ``.venv/bin/python benchmarks/bench_render.py`` (add ``--help`` for the options).

The mesh is the hand model (``handlib.mano.default_model_path()``: 778 vertices, 1538 faces, plus
the 14 that cap the wrist, so the mesh is closed and back faces can be culled). Each image gets a random rotation about the
mesh centre; the mesh is ~0.45 m from a camera with f = 1.6 W and covers ~10-15 % of the image.

Columns:
    rasterize    ``rasterize`` alone (face index, depth, barycentrics, mask), no autograd
    render       ``render``: RGB (Lambert shading) + depth + mask, no autograd
    render+cull  the same with ``cull_backfaces=True`` (the mesh is closed)
    soft fwd+bwd ``soft_silhouette`` (sigma 0.5 px^2, culled) forward and backward to the vertices
"""
from __future__ import annotations

import argparse
import os
import statistics
import time

import torch

from handlib.geometry import axis_angle_to_matrix
from handlib.mano import default_model_path, load_mano
from handlib.mano.openhand import closed_faces
from handlib.render import make_intrinsics, place_in_front, rasterize, render, soft_silhouette


def benchmark_mesh():
    """(vertices (V, 3), faces (F, 3)): the hand model's rest pose, its wrist capped so it is closed."""
    model = load_mano(default_model_path())
    return torch.as_tensor(model.v_template).float(), torch.as_tensor(closed_faces(model))


def posed_batch(vertices, batch: int, seed: int = 0, distance: float = 0.45):
    """Random rotations of the mesh about its centre, placed ``distance`` metres in front of the camera."""
    generator = torch.Generator().manual_seed(seed)
    rotations = axis_angle_to_matrix(torch.randn(batch, 3, generator=generator) * 0.8)  # (B, 3, 3)
    centred = vertices - (vertices.amax(0) + vertices.amin(0)) / 2
    return place_in_front(centred @ rotations.transpose(1, 2), distance)  # (B, V, 3)


def images_per_second(function, batch: int, min_time: float) -> float:
    """Median images/s over repeats of ``function`` (one warm-up call first)."""
    function()
    rates, start = [], time.perf_counter()
    while time.perf_counter() - start < min_time or len(rates) < 3:
        tick = time.perf_counter()
        function()
        rates.append(batch / (time.perf_counter() - tick))
    return statistics.median(rates)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[64, 128])
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 16, 64, 256])
    parser.add_argument("--soft-batches", type=int, nargs="+", default=[1, 16, 64])
    parser.add_argument("--min-time", type=float, default=1.5, help="seconds per measurement")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch threads (default: torch's own; 1 is steadier on a busy machine)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    vertices, faces = benchmark_mesh()
    faces = faces.to(args.device)
    print(f"mesh: the hand model, {len(vertices)} vertices, {len(faces)} faces; device {args.device}, "
          f"torch {torch.__version__}, {torch.get_num_threads()} threads; load average {os.getloadavg()[0]:.2f}")
    header = f"{'size':>7} {'batch':>5} | {'rasterize':>9} {'render':>8} {'render+cull':>11} {'soft fwd+bwd':>12} | {'coverage':>8}"
    print(header + "\n" + "-" * len(header))
    for size in args.sizes:
        K = make_intrinsics(1.6 * size, size / 2, size / 2).to(args.device)
        for batch in args.batches:
            mesh = posed_batch(vertices, batch).to(args.device)
            with torch.no_grad():
                coverage = rasterize(mesh, faces, K, size).mask.float().mean().item()
                raster = images_per_second(lambda: rasterize(mesh, faces, K, size), batch, args.min_time)
                shaded = images_per_second(lambda: render(mesh, faces, K, size), batch, args.min_time)
                culled = images_per_second(lambda: render(mesh, faces, K, size, cull_backfaces=True), batch, args.min_time)
            soft = float("nan")
            if batch in args.soft_batches:
                trainable = mesh.clone().requires_grad_(True)

                def soft_step():
                    silhouette = soft_silhouette(trainable, faces, K, size, sigma=0.5, cull_backfaces=True)
                    silhouette.sum().backward()

                soft = images_per_second(soft_step, batch, args.min_time)
            print(f"{size:>3}x{size:<3} {batch:>5} | {raster:>9.0f} {shaded:>8.0f} {culled:>11.0f} {soft:>12.0f} | {coverage:>8.1%}",
                  flush=True)
    print(f"images/s (median of repeats); load average at the end {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
