"""``python -m mxr``: the command line. Each subcommand lives beside the code it drives."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from mxr import __version__


def build_parser() -> argparse.ArgumentParser:
    """The ``mxr`` argument parser with every subcommand registered."""
    from mxr import ablate, engine, evaluation
    from mxr.data import cli as data_cli

    parser = argparse.ArgumentParser(
        prog="python -m mxr",
        description="Mask^X R-CNN (Learning to Segment Every Thing): data, training, evaluation.",
    )
    parser.add_argument("--version", action="version", version=f"mxr {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    data_cli.add_subparser(sub)
    engine.add_subparser(sub)
    evaluation.add_subparser(sub)
    ablate.add_subparser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 0
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
