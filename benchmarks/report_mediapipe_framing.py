"""How MediaPipe Hands should see the course's crops: hands found for each way of framing them.

Run: ``.venv/bin/python benchmarks/report_mediapipe_framing.py [--image-size 128]`` (about a
minute on 2 cores; needs ``pip install -e ".[peers]"`` and ``python -m handlib fetch-peer mediapipe``,
and says so otherwise).

MediaPipe's palm detector misses most hands that fill their image, and the course's crops are
tight (the hand's box plus 20 %). Each row runs ``handlib.peers.mediapipe_hands`` on the
repository's real samples (``handlib.evaluate.real_sample_sets``, right hands, ``is_right`` given)
with the crop enlarged ``upscale`` times and framed with a border of ``border`` times its side,
filled with the crop's edge pixels repeated ("edge") or a grey level. Columns: hands found per
dataset and in all, the mean 2D error over the found ones (pixels of the crop), milliseconds per
image. The defaults of ``mediapipe_hands`` are the row that finds the most.
"""
from __future__ import annotations

import argparse
import time

import numpy as np
from torch.utils.data import default_collate

from handlib import metrics
from handlib.evaluate import real_sample_sets
from handlib.peers import mediapipe_hands, unavailable_reason

SETTINGS = [(fill, upscale, border) for fill in ("edge", 0.5, 0.0) for upscale in (1.0, 2.0)
            for border in (0.0, 0.25, 0.5, 0.75, 1.0)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--image-size", type=int, default=128, help="side of the crops, pixels")
    args = parser.parse_args()
    reason = unavailable_reason()
    if reason is not None:
        print(f"MediaPipe Hands is not available, nothing to measure: {reason}")
        return
    sets = {name: default_collate(samples) for name, samples in real_sample_sets(args.image_size).items()}
    total = sum(len(batch["image"]) for batch in sets.values())
    print("| fill | upscale | border | " + " | ".join(sets) + " | found | 2D EPE (px) | ms / image |")
    print("|" + "---|" * (len(sets) + 6))
    for fill, upscale, border in SETTINGS:
        found, cells, errors, start = 0, [], [], time.perf_counter()
        for batch in sets.values():
            prediction = mediapipe_hands(batch["image"], is_right=batch["is_right"], upscale=upscale, border=border,
                                         fill=fill)
            detected = prediction.extras["detected"]
            found += int(detected.sum())
            cells.append(f"{int(detected.sum())}/{len(detected)}")
            errors.append(metrics.keypoint_errors(prediction.keypoints_2d[detected], batch["keypoints_2d"][detected],
                                                  batch["visibility"][detected]))
        milliseconds = 1000 * (time.perf_counter() - start) / total
        error = metrics.mean_epe(np.concatenate(errors)) if found else float("nan")
        print(f"| {fill} | {upscale:g} | {border:g} | " + " | ".join(cells)
              + f" | {found}/{total} | {error:.1f} | {milliseconds:.0f} |")


if __name__ == "__main__":
    main()
