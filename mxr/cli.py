"""``mxr`` / ``python -m mxr``: the command line, every subcommand registered in one place.

``data shapesx``, ``data check``, ``train`` and ``eval`` are defined here; ``ablate`` (a course-layer
runner) registers itself from :mod:`mxr.ablate`. This module also decides how a failure
reaches the user:

- a user's mistake (a missing file, a config value out of range, an unknown ``--set`` key, a file
  that is not an mxr checkpoint) is one line on stderr, ``mxr train: error: <message>``, and exit
  status 2, as argparse does for a bad option. mxr raises :class:`mxr.errors.UserInputError` (a
  ``ValueError``; ``MissingFileError`` is also a ``FileNotFoundError``) for these, with messages
  that name the file or field, the value found and what was expected;
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
from mxr.errors import UserInputError

PROG = "mxr"

#: The exception type that means "the input is wrong", not "mxr is wrong".
USER_ERRORS: tuple[type[BaseException], ...] = (UserInputError,)

_DEBUG_HELP = "show the full traceback of an error"


def _subparsers(parser: argparse.ArgumentParser) -> Iterator[argparse.ArgumentParser]:
    """Every parser below ``parser`` (subcommands, and theirs), depth first."""
    for action in parser._actions:  # noqa: SLF001 - argparse keeps no public list of subparsers
        if isinstance(action, argparse._SubParsersAction):  # noqa: SLF001
            for child in dict.fromkeys(action.choices.values()):  # aliases map to one parser
                yield child
                yield from _subparsers(child)


# --------------------------------------------------------------------------------------------------
# mxr data shapesx | check
# --------------------------------------------------------------------------------------------------
def _run_shapesx(args: argparse.Namespace) -> int:
    """A bad size or an unwritable folder raises; :func:`main` turns it into one line, exit 2."""
    from mxr.data.shapesx import generate_shapesx

    generate_shapesx(
        args.out,
        train=args.train,
        val=args.val,
        test=args.test,
        seed=args.seed,
        test_seed=args.test_seed,
        image_size=args.image_size,
        design=args.design,
        cap_jitter=args.cap_jitter,
    )
    return 0


def _split_option(text: str | None) -> Any:
    """``--split`` as ``data.split`` takes it: a random split is a YAML mapping (``'{random: 20,
    seed: 3}'``, as in ``--set data.split=...``); anything else is a name or a path."""
    if text is None or not text.lstrip().startswith("{"):
        return text
    import yaml

    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as e:
        why = getattr(e, "problem", None) or e  # the parser's reason, without its excerpts
        raise UserInputError(f"--split {text!r} is not a YAML mapping: {why}") from e


def _run_check(args: argparse.Namespace) -> int:
    from mxr.data.validate import validate_dataset

    split = _split_option(args.split)
    try:
        report = validate_dataset(args.annotations, args.images, split=split, masks=args.masks)
    except Exception as e:  # validate_dataset reports problems; anything else is one line, exit 2
        raise UserInputError(f"could not check {args.annotations}: {type(e).__name__}: {e}") from e
    print(report.format())
    return 0 if report.ok else 1  # 1: the data has problems (listed above)


def _add_data_subparser(sub: Any) -> None:
    """Register ``data`` with ``shapesx`` (generate) and ``check`` (a COCO file, by the loader's rules)."""
    from mxr.data.shapesx import DEFAULT_DESIGN, DESIGNS

    parser = sub.add_parser("data", help="generate ShapesX or check a COCO-format dataset")
    data_sub = parser.add_subparsers(dest="data_command", metavar="DATA_COMMAND")
    parser.set_defaults(func=lambda args: (parser.print_help(), 0)[1])
    gen = data_sub.add_parser(
        "shapesx", help="generate the ShapesX synthetic dataset (COCO format)"
    )
    gen.add_argument("--out", default="data/shapesx", help="output folder (default: data/shapesx)")
    for name, default, what in (
        ("train", 2000, "training"),
        ("val", 300, "validation"),
        ("test", 300, "test"),
    ):
        gen.add_argument(
            f"--{name}", type=int, default=default, help=f"{what} images (default: {default})"
        )
    gen.add_argument("--seed", type=int, default=0, help="generator seed (default: 0)")
    gen.add_argument(
        "--test-seed", type=int, default=None, help="seed of the test split (default: seed + 1)"
    )
    gen.add_argument(
        "--image-size", type=int, default=128, help="image side in pixels (default: 128)"
    )
    gen.add_argument(
        "--design",
        default=DEFAULT_DESIGN,
        choices=sorted(DESIGNS),
        help=f"design (default: {DEFAULT_DESIGN})",
    )
    gen.add_argument(
        "--cap-jitter",
        type=float,
        default=0.0,
        metavar="STD",
        help="member cue ambiguity: cap depth 0.15 r (k + e), e ~ N(0, STD) (default: 0)",
    )
    gen.set_defaults(func=_run_shapesx)
    check = data_sub.add_parser(
        "check",
        help="check a COCO annotation file and its images by the loader's rules",
        description="Check a COCO annotation file (and its images) by the rules the loader applies "
        "with the same --split and --masks: no problem reported means the loader accepts it.",
    )
    check.add_argument("annotations", help="COCO instances JSON file")
    check.add_argument("--images", default=None, help="image folder (omit to check the JSON only)")
    check.add_argument(
        "--split",
        default=None,
        help="set A as the loader takes it (data.split): 'voc', 'nonvoc', a split JSON file or a "
        "random split '{random: N, seed: S}' (N classes in A; '{random: N, trial: T}': the "
        "paper's COCO splits); annotations of set-B classes may then be box-only (default: every "
        "class is in A, as the loader's default)",
    )
    check.add_argument(
        "--masks",
        default="A",
        choices=("A", "all"),
        help="which classes' annotations need a 'segmentation': 'A' (set A, partial supervision; "
        "the default) or 'all' (every class: the oracle, and val/test sets that are scored on "
        "masks)",
    )
    check.set_defaults(func=_run_check)


# --------------------------------------------------------------------------------------------------
# mxr train
# --------------------------------------------------------------------------------------------------
def _run_train(args: argparse.Namespace) -> int:
    import os

    from mxr.config import load_config
    from mxr.engine import loop
    from mxr.report import format_table

    overrides = [o for group in (args.set or []) for o in group]
    cfg = load_config(args.config, overrides)
    try:
        summary = loop.train(
            cfg,
            args.out,
            resume=args.resume,
            progress=not args.no_progress,
            eval_split=None if args.no_eval else "val",
        )
    except KeyboardInterrupt:
        return 130
    if summary.eval is not None and int(os.environ.get("RANK", "0")) == 0:
        print(format_table(summary.eval))
        print(f"wrote {summary.eval_path}", file=sys.stderr)
    return 0


def _add_train_subparser(sub: Any) -> None:
    """Register ``train``: ``--config FILE [--set key=value ...] --out DIR [--resume]``."""
    p = sub.add_parser(
        "train",
        help="train a model from a config file (single process or torchrun)",
        description=(
            "Train Mask^X R-CNN. DIR receives metrics.jsonl, last.pt, config.yaml and eval.json. "
            "Multi-GPU: torchrun --nproc_per_node=K -m mxr train ... With data.generate: true "
            "(the ShapesX configs), a data.root without annotation files gets a new ShapesX there."
        ),
    )
    p.add_argument("--config", help="a YAML or TOML config (default: the built-in defaults)")
    p.add_argument(
        "--set",
        nargs="+",
        action="append",
        metavar="KEY=VALUE",
        help="override config fields, e.g. --set train.iterations=200 model.mlp_fusion=false",
    )
    p.add_argument("--out", required=True, metavar="DIR", help="output directory")
    p.add_argument("--resume", action="store_true", help="continue from DIR/last.pt if it exists")
    p.add_argument("--no-eval", action="store_true", help="skip the final evaluation")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    p.set_defaults(func=_run_train)


# --------------------------------------------------------------------------------------------------
# mxr eval
# --------------------------------------------------------------------------------------------------
def _run_eval(args: argparse.Namespace) -> int:
    """``mxr eval``: score a checkpoint, print the table and write the JSON. Under ``torchrun``
    every rank infers on its share of the images; rank 0 scores, prints and writes."""
    import json
    import time
    from pathlib import Path

    import torch

    from mxr.config import config_from_dict
    from mxr.engine.checkpoint import load_checkpoint, model_from_checkpoint
    from mxr.engine.data import build_dataset, prepare_data
    from mxr.engine.dist import barrier, init_distributed, leave_process_group, resolve_device
    from mxr.evaluation import predict, score_predictions
    from mxr.files import write_text_atomic
    from mxr.report import format_table

    ckpt_path = Path(args.checkpoint)
    ckpt = load_checkpoint(ckpt_path)
    cfg = config_from_dict(ckpt["config"], where=f"{ckpt_path} (config)")
    if args.data:
        import dataclasses

        cfg = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, root=args.data))
    device = resolve_device(args.device or cfg.train.device)
    info = init_distributed(args.device or cfg.train.device)
    try:
        if device.type == "cuda" and info.world_size > 1:
            device = torch.device("cuda", info.local_rank)
        model = model_from_checkpoint(ckpt, device=device)
        if info.is_main:
            prepare_data(cfg.data)  # rank 0 generates; the others wait at the barrier
        barrier(info)
        dataset = build_dataset(cfg.data, args.split, seed=cfg.train.seed)
        t0 = time.perf_counter()
        predictions = predict(
            model,
            dataset,
            device=device,
            batch_size=args.batch_size,
            progress=not args.no_progress,
            mask_iou=not args.no_mask_iou,
            info=info,
        )
        barrier(info)
    finally:
        leave_process_group(info)  # every rank together, before rank 0's COCOeval
    if predictions is None:  # ranks 1..N: rank 0 reports
        return 0
    res = score_predictions(predictions, dataset)
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
    write_text_atomic(out, json.dumps(res, indent=2))
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
    from mxr import ablate

    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Mask^X R-CNN (Learning to Segment Every Thing): data, training, evaluation.",
    )
    parser.add_argument("--version", action="version", version=f"mxr {__version__}")
    parser.add_argument("--debug", action="store_true", help=_DEBUG_HELP)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    _add_data_subparser(sub)
    _add_train_subparser(sub)
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
