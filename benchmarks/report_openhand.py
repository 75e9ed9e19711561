"""Build the open hand and print what the build measured (the numbers in handlib/assets/mano/README.md).

    python benchmarks/report_openhand.py [--seed 0]

Builds in memory (nothing is written); about half a minute on a laptop CPU.
"""
from __future__ import annotations

import argparse

import numpy as np

from handlib.mano.openhand import build_open_hand, closed_faces, mesh_edges, self_intersections, signed_volume


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    arrays, report = build_open_hand(seed=args.seed, return_report=True)
    v, faces = arrays["v_template"], arrays["f"]
    capped = closed_faces(arrays)
    edges, _ = mesh_edges(capped)
    print(f"mesh: {len(v)} vertices, {len(faces)} faces (+{len(capped) - len(faces)} wrist cap), "
          f"Euler characteristic {len(v) - len(edges) + len(capped)}, volume {signed_volume(v, capped) * 1e6:.0f} cm^3, "
          f"self-intersections {len(self_intersections(v, faces))}")
    print(f"hand length (wrist opening to middle tip) {report['hand_length_mm']:.1f} mm, "
          f"wrist to middle MCP {report['wrist_to_middle_mcp_mm']:.1f} mm")
    explained = np.array(report["shape_explained"])
    print("shape PCA: variance explained by each of the 10 directions (%): "
          + " ".join(f"{100 * e:.1f}" for e in explained) + f"; total {100 * explained.sum():.1f} %")
    lengths = report["hand_length_beta_mm"]
    print(f"hand length for beta ~ N(0, I): 95 % in [{lengths['p2.5']:.0f}, {lengths['p97.5']:.0f}] mm, SD {lengths['sd']:.1f} mm")
    c = report["correctives"]
    print(f"pose correctives vs DQS on held-out poses: LBS mean {c['lbs_mean_mm']:.3f} mm, max {c['lbs_max_mm']:.2f} mm; "
          f"LBS + correctives mean {c['corrected_mean_mm']:.3f} mm, max {c['corrected_max_mm']:.2f} mm")
    print(f"pose PCA: 6 components explain {100 * report['pose_pca_explained_6']:.1f} %, "
          f"15 explain {100 * report['pose_pca_explained_15']:.1f} %")
    print(f"build time {report['build_seconds']:.1f} s")


if __name__ == "__main__":
    main()
