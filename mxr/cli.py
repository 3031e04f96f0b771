"""``mxr`` / ``python -m mxr``: the command line, every subcommand registered in one place.

Each subcommand's options and runner live beside the code it drives (``add_subparser`` in
:mod:`mxr.data.cli`, :mod:`mxr.engine`, :mod:`mxr.evaluation`, :mod:`mxr.ablate`); this module
collects them and decides how a failure reaches the user:

- a user's mistake (a missing file, a config value out of range, an unknown ``--set`` key, a file
  that is not an mxr checkpoint) is one line on stderr, ``mxr train: error: <message>``, and exit
  status 2, as argparse does for a bad option. mxr raises ``ValueError`` or ``OSError`` (with
  ``FileNotFoundError``) for these, with messages that name the file or field (CONVENTIONS.md);
- any other exception is a bug in mxr, not the user's mistake, and keeps its traceback;
- ``--debug`` (before or after the subcommand) shows the traceback of a user error as well.
"""

from __future__ import annotations

import argparse
import sys
import traceback
from collections.abc import Iterator, Sequence

from mxr import __version__

PROG = "mxr"

#: The exception types that mean "the input is wrong", not "mxr is wrong".
USER_ERRORS: tuple[type[BaseException], ...] = (ValueError, OSError)

_DEBUG_HELP = "show the full traceback of an error"


def _subparsers(parser: argparse.ArgumentParser) -> Iterator[argparse.ArgumentParser]:
    """Every parser below ``parser`` (subcommands, and theirs), depth first."""
    for action in parser._actions:  # noqa: SLF001 - argparse keeps no public list of subparsers
        if isinstance(action, argparse._SubParsersAction):  # noqa: SLF001
            for child in dict.fromkeys(action.choices.values()):  # aliases map to one parser
                yield child
                yield from _subparsers(child)


def build_parser() -> argparse.ArgumentParser:
    """The ``mxr`` argument parser with every subcommand (and ``--debug`` on each) registered."""
    from mxr import ablate, engine, evaluation
    from mxr.data import cli as data_cli

    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Mask^X R-CNN (Learning to Segment Every Thing): data, training, evaluation.",
    )
    parser.add_argument("--version", action="version", version=f"mxr {__version__}")
    parser.add_argument("--debug", action="store_true", help=_DEBUG_HELP)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    data_cli.add_subparser(sub)
    engine.add_subparser(sub)
    evaluation.add_subparser(sub)
    ablate.add_subparser(sub)
    for child in _subparsers(parser):
        # SUPPRESS: a subcommand that was not given --debug leaves the top-level value alone
        child.add_argument(
            "--debug", action="store_true", default=argparse.SUPPRESS, help=_DEBUG_HELP
        )
    return parser


def command_name(args: argparse.Namespace) -> str:
    """``"mxr train"``, ``"mxr data check"``: the command a parsed ``args`` runs, for messages."""
    words = [getattr(args, "command", None), getattr(args, "data_command", None)]
    return " ".join([PROG, *(w for w in words if w)])


def error_line(err: BaseException) -> str:
    """The message of ``err`` on one line (an OSError from ``open`` as ``<reason>: <file>``)."""
    if isinstance(err, OSError) and err.strerror and err.filename is not None:
        text = f"{err.strerror}: {err.filename}"
    else:
        text = str(err) or type(err).__name__
    return " ".join(text.split())


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line on ``argv`` (default: ``sys.argv[1:]``); returns the exit status.

    0 on success, 2 for a user's mistake (one line on stderr; the traceback too under
    ``--debug``), the subcommand's own status otherwise. Other exceptions propagate.
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 0
    try:
        return int(args.func(args) or 0)
    except USER_ERRORS as err:
        if args.debug:
            traceback.print_exc(file=sys.stderr)
        print(f"{command_name(args)}: error: {error_line(err)}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
