"""Time ShapesX generation and print images/s.

    python benchmarks/shapesx_generate.py              # 2,000 train images, 128 px, default design
    python benchmarks/shapesx_generate.py --n 500 --design random-slab

The target (issue 4): 2,000 128-px images in under 60 s on 2 CPU cores.
"""

from __future__ import annotations

import argparse
import tempfile
import time

from mxr.data.shapesx import DEFAULT_DESIGN, DESIGNS, generate_shapesx


def main() -> None:
    """Generate ``--n`` training images into a temporary folder and print the rate."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--n", type=int, default=2000, help="training images (default: 2000)")
    parser.add_argument("--image-size", type=int, default=128)
    parser.add_argument("--design", default=DEFAULT_DESIGN, choices=sorted(DESIGNS))
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        generate_shapesx(
            tmp,
            train=args.n,
            val=0,
            test=0,
            seed=args.seed,
            image_size=args.image_size,
            design=args.design,
            progress=False,
        )
        elapsed = time.perf_counter() - start
    print(
        f"shapesx_generate: design={args.design} n={args.n} size={args.image_size}px: "
        f"{elapsed:.1f} s, {args.n / elapsed:.0f} images/s (target: 2000 in < 60 s)"
    )


if __name__ == "__main__":
    main()
