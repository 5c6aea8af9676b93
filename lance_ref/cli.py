"""The `lance-ref` command line (also `python -m lance_ref`)."""

from __future__ import annotations

import argparse
import sys
from dataclasses import fields

from . import __version__
from .allocator import keep_freed_memory
from .experiments import supervised


def _add_config_arguments(parser: argparse.ArgumentParser, config_class) -> None:
    """One `--option` per field of a config dataclass, typed and defaulted from it."""
    for field in fields(config_class):
        flag = "--" + field.name.replace("_", "-")
        parser.add_argument(flag, type=type(field.default), default=field.default, help=f"(default: {field.default})")


def _train(args) -> int:
    config = supervised.TrainConfig(**{f.name: getattr(args, f.name) for f in fields(supervised.TrainConfig)})
    results = supervised.run(config, args.out, show=not args.quiet)
    last = results["epochs"][-1]
    print(
        f"{config.model} on {config.dataset}: test accuracy {results['test_accuracy']:.4f} "
        f"(loss {last['loss']:.4f}) in {results['wall_seconds']:.1f} s; "
        f"activation bytes per step {results['activation_bytes_per_step']:,}; results in {args.out}/"
    )
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="lance-ref", description="lance-ref experiments without torch.")
    parser.add_argument("--version", action="version", version=f"lance-ref {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)
    train = commands.add_parser("train", help="train a zoo model on a dataset")
    _add_config_arguments(train, supervised.TrainConfig)
    train.add_argument("--out", required=True, help="folder for results.json, history.csv, model.npz")
    train.add_argument("--quiet", action="store_true", help="no progress bar")
    train.set_defaults(handler=_train)
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    keep_freed_memory()
    try:
        return args.handler(args)
    except (ValueError, TypeError, FileNotFoundError) as error:
        print(f"lance-ref {args.command}: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
