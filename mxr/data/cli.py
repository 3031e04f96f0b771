"""``python -m mxr data ...``: generate ShapesX, check a COCO-format dataset."""

from __future__ import annotations

import argparse
from typing import Any


def _shapesx(args: argparse.Namespace) -> int:
    """A bad size or an unwritable folder raises; ``mxr.cli.main`` turns it into one line, exit 2."""
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
    )
    return 0


def _check(args: argparse.Namespace) -> int:
    from mxr.data.validate import validate_dataset

    try:
        report = validate_dataset(args.annotations, args.images, split=args.split, masks=args.masks)
    except Exception as e:  # validate_dataset reports problems; anything else is one line, exit 2
        raise ValueError(f"could not check {args.annotations}: {type(e).__name__}: {e}") from e
    print(report.format())
    return 0 if report.ok else 1  # 1: the data has problems (listed above)


def add_subparser(sub: Any) -> argparse.ArgumentParser:
    """Register the ``data`` command (with ``shapesx`` and ``check``) on ``sub`` (from ``add_subparsers``)."""
    from mxr.data.shapesx import DEFAULT_DESIGN, DESIGNS

    parser = sub.add_parser("data", help="generate ShapesX or check a COCO-format dataset")
    data_sub = parser.add_subparsers(dest="data_command", metavar="DATA_COMMAND")
    parser.set_defaults(func=lambda args: (parser.print_help(), 0)[1])

    gen = data_sub.add_parser(
        "shapesx", help="generate the ShapesX synthetic dataset (COCO format)"
    )
    gen.add_argument("--out", default="data/shapesx", help="output folder (default: data/shapesx)")
    gen.add_argument("--train", type=int, default=2000, help="training images (default: 2000)")
    gen.add_argument("--val", type=int, default=300, help="validation images (default: 300)")
    gen.add_argument("--test", type=int, default=300, help="test images (default: 300)")
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
    gen.set_defaults(func=_shapesx)

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
        help="set A as the loader takes it (data.split): 'voc', 'nonvoc' or a split JSON file; "
        "annotations of set-B classes may then be box-only (default: every class is in A, "
        "as the loader's default)",
    )
    check.add_argument(
        "--masks",
        default="A",
        choices=("A", "all"),
        help="which classes' annotations need a 'segmentation': 'A' (set A, partial supervision; "
        "the default) or 'all' (every class: the oracle, and val/test sets that are scored on "
        "masks)",
    )
    check.set_defaults(func=_check)
    return parser
