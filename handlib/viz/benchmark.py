"""The benchmark's two figures (chapter 7): the 3D PCK curves of every method on one plot, and the
error by condition as small multiples, one panel per condition and one line per method.

Both take the rows of ``handlib.evaluate`` (``benchmark(curves=True)``, ``error_by_condition``) or
the same rows read back from ``data/results/benchmark.json``, and return a matplotlib Figure.
"""
from __future__ import annotations

import math

import numpy as np

FLOOR_STYLE = {"color": "0.45", "linestyle": "--"}          # the answers that are no method: dashed grey
FLOOR_DASHES = ("--", ":", "-.")


def pck_figure(rows: list[dict], methods=None, thresholds_mm=None, title: str = "3D PCK, fixed synthetic test set",
               size=(7.5, 4.2)):
    """Every row's 3D PCK curve ("pck_3d"), each after its own alignment, with the AUC's range shaded.

    Args:
        rows: benchmark rows with "pck_3d" (rows without a curve are left out).
        methods: the names drawn solid (the methods); others (baselines, peer) dashed. None = all solid.
        thresholds_mm: the curves' thresholds; None = ``evaluate.PCK_THRESHOLDS_MM``.
        title: the plot's title.
        size: (width, height) inches.

    Returns:
        the matplotlib Figure; each line's label has its alignment and its AUC 20-50 mm.
    """
    import matplotlib.pyplot as plt

    from handlib.evaluate import PCK_THRESHOLDS_MM

    thresholds = np.asarray(PCK_THRESHOLDS_MM if thresholds_mm is None else thresholds_mm, dtype=np.float64)
    with_curve = [row for row in rows if row.get("pck_3d") is not None]
    if not with_curve:
        raise ValueError("rows: no row has a 3D PCK curve ('pck_3d'); make them with benchmark(curves=True)")
    solid = [row["method"] for row in rows if methods is None or row["method"] in methods]
    colors = {method: f"C{i % 10}" for i, method in enumerate(solid)}       # as in condition_figure: by row order
    figure, ax = plt.subplots(figsize=size)
    floors = 0
    for row in with_curve:
        if len(row["pck_3d"]) != len(thresholds):
            raise ValueError(f"rows: {row['method']!r} has {len(row['pck_3d'])} PCK values for "
                             f"{len(thresholds)} thresholds")
        if row["method"] in colors:
            style = {"color": colors[row["method"]]}
        else:                                          # the floors: grey, each its own dashes
            style = {**FLOOR_STYLE, "linestyle": FLOOR_DASHES[floors % len(FLOOR_DASHES)]}
            floors += 1
        ax.plot(thresholds, row["pck_3d"], label=f"{row['method']} ({row['alignment']}, AUC {row['auc_20_50']:.3f})",
                **style)
    ax.axvspan(20, 50, color="0.93", zorder=0, label="the AUC's range, 20-50 mm")
    ax.set(xlabel="threshold t (mm)", ylabel="PCK(t): keypoints within t", xlim=(thresholds[0], thresholds[-1]),
           ylim=(0, 1), title=title)
    ax.legend(fontsize=7, loc="upper left")
    figure.tight_layout()
    return figure


def condition_figure(rows: list[dict], conditions: dict | None = None, metrics: dict | None = None,
                     floor: str = "mean training pose", panel=(2.6, 2.3)):
    """Small multiples of ``error_by_condition``'s rows: a column per condition, a row per metric,
    a line per method (the floor dashed grey; it has no 2D panel line, its 2D is not an answer).

    Args:
        rows: ``error_by_condition`` rows.
        conditions: {condition: values} in the order drawn; None = ``evaluate.CONDITIONS`` (those present).
        metrics: {row key: axis label}; None = PA EPE (mm) and 2D EPE (px).
        floor: the name of the floor's rows.
        panel: (width, height) of one panel, inches.

    Returns:
        the matplotlib Figure, with the legend to the right of the last column.
    """
    import matplotlib.pyplot as plt

    from handlib.evaluate import CONDITIONS

    conditions = {condition: values for condition, values in (conditions or CONDITIONS).items()
                  if any(row["condition"] == condition for row in rows)}
    if not conditions:
        raise ValueError("rows: no row of a known condition; make them with evaluate.error_by_condition")
    metrics = metrics or {"epe_procrustes_mm": "PA EPE (mm)", "epe_2d_px": "2D EPE (px)"}
    lookup = {(row["method"], row["condition"], row["value"]): row for row in rows}
    methods = list(dict.fromkeys(row["method"] for row in rows))
    colors = {method: f"C{i % 10}" for i, method in enumerate(m for m in methods if m != floor)}   # one per method
    figure, axes = plt.subplots(len(metrics), len(conditions), squeeze=False,
                                figsize=(panel[0] * len(conditions) + 1.8, panel[1] * len(metrics)))
    for column, (condition, values) in enumerate(conditions.items()):
        for line, (metric, label) in enumerate(metrics.items()):
            ax = axes[line, column]
            for method in methods:
                if method == floor and metric == "epe_2d_px":
                    continue
                points = [lookup.get((method, condition, value), {}).get(metric) for value in values]
                points = [math.nan if p is None else p for p in points]
                if all(math.isnan(p) for p in points):
                    continue
                ax.plot(range(len(values)), points, marker="o", markersize=3, label=method,
                        **(FLOOR_STYLE if method == floor else {"color": colors[method]}))
            ax.set_xticks(range(len(values)), [str(value) for value in values], rotation=35, fontsize=7)
            ax.tick_params(axis="y", labelsize=7)
            if line == 0:
                ax.set_title(condition.replace("_", " "), fontsize=9)
            if column == 0:
                ax.set_ylabel(label, fontsize=8)
    handles = {}
    for ax in axes.flat:
        for handle, label in zip(*ax.get_legend_handles_labels()):
            handles.setdefault(label, handle)
    figure.legend(list(handles.values()), list(handles), fontsize=7, loc="center right")
    figure.tight_layout(rect=(0, 0, 1 - 1.7 / figure.get_figwidth(), 1))
    return figure


__all__ = ["condition_figure", "pck_figure"]
