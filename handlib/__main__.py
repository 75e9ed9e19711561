"""Command line: ``python -m handlib COMMAND ...`` (or ``handlib COMMAND ...``).

    build-hand      build the open hand model (MANO format) into handlib/assets/mano/
    convert-mano    convert an official MANO_*.pkl (chumpy) into plain arrays (.npz or .pkl)
    generate        render and cache the fixed synthetic test set
    train           train a method (profile quick or full), with checkpoints and resume
    evaluate        evaluate a trained method on the fixed synthetic test set
    benchmark       evaluate every trained method and print one table
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path


def _build_hand(args):
    from handlib.mano.openhand import write_open_hand

    for path in write_open_hand(args.output):
        print(f"wrote {path}")


def _convert_mano(args):
    from handlib.mano.io import convert_mano

    print(f"wrote {convert_mano(args.source, args.destination)}")


def _generate(args):
    from handlib.data.synth import cached_test_set

    cached_test_set(num_samples=args.num_samples, seed=args.seed, image_size=args.image_size, progress=True)


def _train(args):
    from handlib.train import train

    train(args.method, profile=args.profile, device=args.device, seed=args.seed, resume=not args.restart)


def _evaluate(args):
    from handlib.train import evaluate

    evaluate(args.method, checkpoint=args.checkpoint, profile=args.profile, device=args.device, verbose=True)


def _benchmark(args):
    from handlib.train import benchmark

    benchmark(profile=args.profile, device=args.device, verbose=True)


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

    command = commands.add_parser("generate", help="render and cache the fixed synthetic test set")
    command.add_argument("--num-samples", type=int, default=None, help="default: the profile's test-set size")
    command.add_argument("--seed", type=int, default=None)
    command.add_argument("--image-size", type=int, default=128)
    command.set_defaults(run=_generate)

    for name, run, help_text in [("train", _train, "train a method"), ("evaluate", _evaluate, "evaluate a method")]:
        command = commands.add_parser(name, help=help_text)
        command.add_argument("method", help="e.g. zimmermann2017")
        command.add_argument("--profile", choices=["quick", "full"], default=None,
                             help="default: $HANDLIB_PROFILE, else full with CUDA and quick without")
        command.add_argument("--device", default=None, help="cpu, cuda, ... (default: cuda if available)")
        if name == "train":
            command.add_argument("--seed", type=int, default=0)
            command.add_argument("--restart", action="store_true", help="ignore an existing checkpoint")
        else:
            command.add_argument("--checkpoint", type=Path, default=None)
        command.set_defaults(run=run)

    command = commands.add_parser("benchmark", help="evaluate every trained method and print one table")
    command.add_argument("--profile", choices=["quick", "full"], default=None)
    command.add_argument("--device", default=None)
    command.set_defaults(run=_benchmark)
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        args.run(args)
    except (FileNotFoundError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
