"""``mxr`` / ``python -m mxr``: the command line, every subcommand registered in one place.

Each subcommand's options and runner live beside the code it drives (``add_subparser`` in
:mod:`mxr.data.cli`, :mod:`mxr.engine`, :mod:`mxr.course.ablate`), except ``eval``, which lives here
because it joins the engine (checkpoints, datasets) and the evaluation. This module collects them
and decides how a failure reaches the user:

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
from typing import Any

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


# --------------------------------------------------------------------------------------------------
# python -m mxr eval (here, not in mxr.evaluation: it loads checkpoints and datasets through the
# engine, and the engine calls the evaluation, so the evaluation must not import the engine)
# --------------------------------------------------------------------------------------------------
def _run_eval(args: argparse.Namespace) -> int:
    """``mxr eval``: score a checkpoint, print the table and write the JSON."""
    import json
    import time
    from pathlib import Path

    from mxr.config import config_from_dict
    from mxr.engine import build_dataset, load_checkpoint, model_from_checkpoint, resolve_device
    from mxr.evaluation import evaluate
    from mxr.report import format_table

    ckpt_path = Path(args.checkpoint)
    ckpt = load_checkpoint(ckpt_path)
    cfg = config_from_dict(ckpt["config"], where=f"{ckpt_path} (config)")
    if args.data:
        import dataclasses

        cfg = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, root=args.data))
    device = resolve_device(args.device or cfg.train.device)
    model = model_from_checkpoint(ckpt, device=device)
    dataset = build_dataset(cfg.data, args.split, seed=cfg.train.seed)
    t0 = time.perf_counter()
    res = evaluate(
        model,
        dataset,
        device=device,
        batch_size=args.batch_size,
        progress=not args.no_progress,
        mask_iou=not args.no_mask_iou,
    )
    dt = time.perf_counter() - t0
    print(
        f"{args.split}: {len(dataset)} images from {cfg.data.path(args.split + '_annotations')} "
        f"in {dt:.1f} s (iteration {ckpt['iteration']})"
    )
    print(format_table(res))
    name = "eval.json" if args.split == "val" else f"eval_{args.split}.json"
    out = Path(args.out) if args.out else ckpt_path.parent / name
    if out.suffix != ".json":
        out = out / name
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(res, indent=2))
    print(f"wrote {out}", file=sys.stderr)
    return 0


def _add_eval_subparser(sub: Any) -> None:
    """Register ``eval``: score a checkpoint on the val or test split, print and save the table."""
    p = sub.add_parser(
        "eval",
        help="evaluate a checkpoint: COCO mask/box AP on sets A, B and all",
        description="Evaluate a checkpoint with COCOeval (segm and bbox) on class sets A, B and all.",
    )
    p.add_argument(
        "--checkpoint", required=True, help="a checkpoint written by `mxr train` (last.pt)"
    )
    p.add_argument("--data", help="dataset root (default: the checkpoint config's data.root)")
    p.add_argument(
        "--split", choices=("val", "test"), default="val", help="which split (default val)"
    )
    p.add_argument(
        "--out",
        help="where to write the JSON (default: eval.json, or eval_test.json for --split test, "
        "next to the checkpoint)",
    )
    p.add_argument("--device", help="cpu, cuda or cuda:N (default: the config's train.device)")
    p.add_argument("--batch-size", type=int, default=8, help="images per forward pass (default 8)")
    p.add_argument(
        "--no-mask-iou", action="store_true", help="skip the mean mask IoU given true boxes"
    )
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    p.set_defaults(func=_run_eval)


def build_parser() -> argparse.ArgumentParser:
    """The ``mxr`` argument parser with every subcommand (and ``--debug`` on each) registered."""
    from mxr.course import ablate, engine
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
    _add_eval_subparser(sub)
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
