"""Chapter 7's stored results: every shipped method side by side, written to
``data/results/benchmark.json``, which ``notebooks/07_benchmark.ipynb`` shows.

Four parts, each a list of rows in the file, each made by the function the notebook also calls live:

* "synthetic": ``evaluate.benchmark`` on the fixed synthetic test set (512 crops), with the 3D PCK
  curves, then the two image-free baselines and MediaPipe Hands (``evaluate.floor_rows``);
* "real": ``evaluate.real_benchmark`` on the repository's real samples, dataset by dataset;
* "conditions": ``evaluate.error_by_condition``, 64 hands per setting of ``evaluate.CONDITIONS``;
* "plausibility": ``evaluate.plausibility`` on the heaviest occlusion setting.

It resumes method by method: the file is written after each, and each method's rows are stored
with the sha256 of the checkpoint they came from, so a run redoes only the methods whose checkpoint
changed (a retrained ``zhou2020``), the ones named with ``--names``, and the floors (baselines, peer,
true poses) only when they are missing or ``--floors`` is given.

Run (one torch thread; the whole file took 259 s on one idle core of the 2-core CPU, 20 to 75 s a
method; behind two trainings at a higher priority it took over an hour)::

    .venv/bin/python benchmarks/benchmark_tables.py                    # what is missing or stale
    .venv/bin/python benchmarks/benchmark_tables.py --names zhou2020    # redo one method
    .venv/bin/python benchmarks/benchmark_tables.py --force             # redo everything
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "data" / "results" / "benchmark.json"
PARTS = ("synthetic", "real", "conditions", "plausibility")
FLOORS = "floors"                       # the rows of no method: baselines, peer, true poses
PLAUSIBILITY_SET = ("occlusion", 1.0)   # where a prior matters most


def relative(path) -> str:
    """A path inside the repository relative to it (the file says where, not on whose machine)."""
    path = Path(path).resolve()
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)


def method_parts(name: str, profile: str, samples: int, device="cpu") -> dict:
    """{part: rows} of one method (``evaluate``'s functions on it alone)."""
    from handlib import evaluate

    models = evaluate.trained_models([name], profile, device)
    synthetic = evaluate.benchmark(profile, [name], device, curves=True)
    for row in synthetic:
        row["checkpoint"] = relative(row["checkpoint"])
    return {"synthetic": synthetic,
            "real": evaluate.real_benchmark([name], profile, device, baselines=False),
            "conditions": evaluate.error_by_condition(models=models, num_samples=samples, device=device,
                                                      baselines=False),
            "plausibility": evaluate.plausibility(models, evaluate.condition_test_set(*PLAUSIBILITY_SET, samples),
                                                  device, truth=False)}


def floor_parts(samples: int) -> dict:
    """{part: rows} of the answers that are no method: the baselines, the peer, the true poses."""
    from handlib import evaluate
    from handlib.methods import synthetic_test_set
    from handlib.registry import get_method

    method, _ = get_method("backbone")                # its config says the fixed test set: 512 crops of 128 px
    config = method.config("full")
    return {"synthetic": [{"method": row["method"], "profile": "-", **row} for row in
                          evaluate.floor_rows(synthetic_test_set(config), config.image_size, peers=True, curves=True)],
            "real": evaluate.real_benchmark([], peers=True),
            "conditions": evaluate.error_by_condition([], num_samples=samples, image_size=config.image_size),
            "plausibility": evaluate.plausibility({}, evaluate.condition_test_set(*PLAUSIBILITY_SET, samples))}


def ordered(part: str, rows: list[dict], order: list[str]) -> list[dict]:
    """The rows of a part in the notebook's order: methods in course order, then the floors; the real
    samples dataset by dataset, the conditions setting by setting."""
    from handlib.evaluate import CONDITIONS

    rank = {name: i for i, name in enumerate(order)}

    def key(row):
        method = rank.get(row["method"], len(rank))
        if part == "real":
            return (datasets.index(row["dataset"]), method)
        if part == "conditions":
            values = CONDITIONS[row["condition"]]
            return (list(CONDITIONS).index(row["condition"]), values.index(row["value"]), method)
        return (method,)

    datasets = list(dict.fromkeys(row.get("dataset") for row in rows))
    return sorted(rows, key=key)


def update(record: dict, unit: str, parts: dict, order: list[str], fingerprint: dict) -> None:
    """Replace the rows of ``unit`` (a method, or ``FLOORS``) in every part of the record."""
    names = {row["method"] for rows in parts.values() for row in rows}
    for part in PARTS:
        kept = [row for row in record.get(part, []) if record["sources"].get(row["method"]) != unit
                and row["method"] not in names]
        record[part] = ordered(part, kept + parts[part], order)
    for name in names:
        record["sources"][name] = unit
    record["units"][unit] = fingerprint


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--names", nargs="*", default=None,
                        help="redo these methods (default: those whose checkpoint changed or is missing here)")
    parser.add_argument("--floors", action="store_true", help="redo the baselines, the peer and the true poses")
    parser.add_argument("--force", action="store_true", help="redo everything")
    parser.add_argument("--samples", type=int, default=64, help="hands per condition setting (default 64)")
    parser.add_argument("--profile", default="full", choices=("quick", "full"))
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args(argv)
    from handlib.evaluate import BASELINES, BENCHMARK_COLUMNS, PEER, format_table, trained_checkpoints
    from handlib import files
    from handlib.registry import shipped_names
    from handlib.runtime import torch_threads

    record = json.loads(args.out.read_text()) if args.out.is_file() and not args.force else {}
    if record.get("profile", args.profile) != args.profile or record.get("samples", args.samples) != args.samples:
        raise ValueError(f"{args.out} holds profile {record.get('profile')!r}, {record.get('samples')} hands per "
                         "setting; use --force to start it again with other settings, or --out for another file")
    record.update(profile=args.profile, samples=args.samples, command=" ".join(["benchmarks/benchmark_tables.py",
                                                                               *(argv or sys.argv[1:])]))
    record.setdefault("units", {})
    record.setdefault("sources", {})
    checkpoints = trained_checkpoints(shipped_names(), args.profile)
    order = [*checkpoints, *BASELINES, PEER, "true poses", "true keypoints"]
    unknown = sorted(set(args.names or ()) - set(checkpoints))
    if unknown:
        raise ValueError(f"--names: no {args.profile} checkpoint for {unknown}; shipped: {', '.join(checkpoints)}")

    with torch_threads(1):
        for name, path in checkpoints.items():
            fingerprint = {"checkpoint": relative(path), "sha256": files.sha256_of(path)}
            stored = record["units"].get(name, {})
            if not (args.force or name in (args.names or ()) or stored.get("sha256") != fingerprint["sha256"]):
                print(f"{name}: stored rows are of this checkpoint; kept", file=sys.stderr)
                continue
            started = time.perf_counter()
            parts = method_parts(name, args.profile, args.samples, args.device)
            update(record, name, parts, order, {**fingerprint, "wall_time_s": time.perf_counter() - started})
            files.atomic_write_text(args.out, json.dumps(record, indent=1))
            print(f"{name}: done in {time.perf_counter() - started:.0f} s", file=sys.stderr)
        if args.force or args.floors or FLOORS not in record["units"]:
            started = time.perf_counter()
            parts = floor_parts(args.samples)
            update(record, FLOORS, parts, order, {"wall_time_s": time.perf_counter() - started})
            files.atomic_write_text(args.out, json.dumps(record, indent=1))
            print(f"{FLOORS}: done in {time.perf_counter() - started:.0f} s", file=sys.stderr)
    stale = sorted(set(record["units"]) - set(checkpoints) - {FLOORS})
    if stale:
        print(f"rows of methods without a checkpoint now, kept: {', '.join(stale)}", file=sys.stderr)
    print(format_table(record.get("synthetic", []), BENCHMARK_COLUMNS))
    print(f"written {args.out}")
    return record


if __name__ == "__main__":
    main()
