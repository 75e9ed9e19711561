"""Command line: ``python -m handlib COMMAND ...`` (or ``handlib COMMAND ...``).

    build-hand      build the open hand model (MANO format) into handlib/assets/mano/
    convert-mano    convert an official MANO_*.pkl (chumpy) into plain arrays (.npz or .pkl)
    generate        render and cache a method's training and test sets (every CPU core)
    train           train a method (profile quick or full), with checkpoints and resume
    evaluate        evaluate a trained method on the fixed synthetic test set
    export          ship a trained checkpoint (weights and record) in handlib/assets/checkpoints
    benchmark       evaluate every trained method and print one table
    predict         predict the 3D hand in your own images (JSON, and pictures with --overlay)
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path


def _checkpoint_dir(args) -> dict:
    """``{"checkpoint_dir": ...}`` when --checkpoint-dir was given, else {} (handlib.train's default)."""
    return {} if args.checkpoint_dir is None else {"checkpoint_dir": args.checkpoint_dir}


def _build_hand(args):
    from handlib.mano.openhand import write_open_hand

    for path in write_open_hand(args.output):
        print(f"wrote {path}")


def _convert_mano(args):
    from handlib.mano.io import convert_mano

    print(f"wrote {convert_mano(args.source, args.destination)}")


def _generate(args):
    from handlib.runtime import get_profile
    from handlib.train import fixed_test_set, get_method

    spec = get_method(args.method)
    hyper = spec.profiles[get_profile(args.profile)]
    spec.make_dataset("train", hyper.train_samples, args.seed, hyper.image_size)
    fixed_test_set(spec, hyper)


def _train(args):
    from handlib.train import format_table, train

    time_limit_s = None if args.minutes is None else 60.0 * args.minutes
    result = train(args.method, profile=args.profile, device=args.device, seed=args.seed, resume=not args.restart,
                   time_limit_s=time_limit_s, **_checkpoint_dir(args))
    print(f"{result.checkpoint}: step {result.step}, {result.wall_time_s:.0f} s of training")
    if result.metrics:
        print(format_table([{"method": result.method, "profile": result.profile, **result.metrics}]))


def _export(args):
    from handlib.runtime import get_profile
    from handlib.train import COMMITTED_CHECKPOINT_DIR, checkpoint_path, export_checkpoint

    source = checkpoint_path(args.method, get_profile(args.profile), **_checkpoint_dir(args))
    destination = export_checkpoint(source, COMMITTED_CHECKPOINT_DIR / source.name, note=args.note)
    print(f"wrote {destination} ({destination.stat().st_size / 1e6:.1f} MB) and its records "
          f"{destination.with_suffix('.md').name}, {destination.with_suffix('.json').name}")


def _evaluate(args):
    from handlib.train import evaluate

    evaluate(args.method, checkpoint=args.checkpoint, profile=args.profile, device=args.device,
             verbose=True, **_checkpoint_dir(args))


def _benchmark(args):
    from handlib.train import benchmark

    benchmark(profile=args.profile, device=args.device, verbose=True, **_checkpoint_dir(args))


def _predict(args) -> int:
    from handlib import predict

    results, errors = predict.predict_files(args.method, args.images, hand=args.hand, intrinsics=args.intrinsics,
                                            out=args.out, overlay_dir=args.overlay, checkpoint=args.checkpoint,
                                            device=args.device, profile=args.profile)
    for error in errors:
        print(f"error: {error['error']}", file=sys.stderr)
    print(f"wrote {args.out}: {len(results) - len(errors)} of {len(results)} images predicted"
          + (f", overlays in {args.overlay}" if args.overlay is not None else ""))
    return 1 if errors else 0


CHECKPOINT_DIR_HELP = "where your checkpoints are written and found (default: data/checkpoints of the repository)"


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

    for name, run, help_text in [("generate", _generate, "render and cache the training and test sets of a method"),
                                 ("train", _train, "train a method"), ("evaluate", _evaluate, "evaluate a method")]:
        command = commands.add_parser(name, help=help_text)
        command.add_argument("method", help="e.g. zimmermann2017")
        command.add_argument("--profile", choices=["quick", "full"], default=None,
                             help="default: $HANDLIB_PROFILE, else full with CUDA and quick without")
        if name in ("generate", "train"):
            command.add_argument("--seed", type=int, default=0, help="seed of the run (and of its training set)")
        if name == "train":
            command.add_argument("--restart", action="store_true", help="ignore an existing checkpoint")
            command.add_argument("--minutes", type=float, default=None,
                                 help="stop after this many minutes with a checkpoint; run again to resume")
        if name in ("train", "evaluate"):
            command.add_argument("--device", default=None, help="cpu, cuda, ... (default: cuda if available)")
            command.add_argument("--checkpoint-dir", type=Path, default=None, help=CHECKPOINT_DIR_HELP)
        if name == "evaluate":
            command.add_argument("--checkpoint", type=Path, default=None)
        command.set_defaults(run=run)

    command = commands.add_parser("export", help="ship a trained checkpoint: a slim copy in handlib/assets/checkpoints")
    command.add_argument("method", help="e.g. zimmermann2017")
    command.add_argument("--profile", choices=["quick", "full"], default=None)
    command.add_argument("--checkpoint-dir", type=Path, default=None, help=CHECKPOINT_DIR_HELP)
    command.add_argument("--note", default="", help="a sentence for the record (how it was made, where)")
    command.set_defaults(run=_export)

    command = commands.add_parser("benchmark", help="evaluate every trained method and print one table")
    command.add_argument("--profile", choices=["quick", "full"], default=None)
    command.add_argument("--device", default=None)
    command.add_argument("--checkpoint-dir", type=Path, default=None, help=CHECKPOINT_DIR_HELP)
    command.set_defaults(run=_benchmark)

    command = commands.add_parser("predict", help="predict the 3D hand in your own images (one hand per image)")
    command.add_argument("method", help="e.g. zimmermann2017 or zimmermann2017:direct")
    command.add_argument("images", nargs="+", help="photo crops around one hand each (JPEG, PNG; any size)")
    command.add_argument("--hand", choices=["left", "right"], required=True, help="which hand the images show")
    command.add_argument("--intrinsics", nargs=4, type=float, default=None, metavar=("FX", "FY", "CX", "CY"),
                         help="the images' camera (pixels of the image): gives the hand in the camera frame; "
                              "without it the hand is root-relative")
    command.add_argument("--out", type=Path, required=True, help="the JSON file to write (one object per image)")
    command.add_argument("--overlay", type=Path, default=None, help="folder for <stem>_overlay.png pictures")
    command.add_argument("--checkpoint", type=Path, default=None, help="a .pt file (default: the method's own)")
    command.add_argument("--profile", choices=["quick", "full"], default="full",
                         help="whose checkpoint to use when --checkpoint is not given (default: full)")
    command.add_argument("--device", default=None, help="cpu, cuda, ... (default: cuda if available)")
    command.set_defaults(run=_predict)
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
