"""``python -m mxr``: runs :func:`mxr.cli.main` (the ``mxr`` console script points here too)."""

from __future__ import annotations

import sys

from mxr.cli import build_parser, main

__all__ = ["build_parser", "main"]

if __name__ == "__main__":
    sys.exit(main())
