"""Convert the paper's GloVe matrix for COCO into mxr's class-embedding file (run once; commit the output).

The official Mask^X R-CNN code (``ronghanghu/seg_every_thing``,
``lib/datasets/bbox2mask_dataset_processing/coco/glove_randn/fixed_embedding_mat_coco_glove.npy``)
feeds τ a fixed ``(80, 300)`` float32 matrix of GloVe vectors, one row per COCO category in
contiguous COCO order (the categories sorted by id: row 0 = person, id 1; row 79 = toothbrush, id 90)
and no names. mxr aligns an embedding to a dataset's labels *by name*
(:func:`mxr.data.embedding.load_class_embedding`), so this script writes the same rows as
``OUT`` (``.npy``, float32, unchanged) with ``OUT``'s ``.names.txt`` beside it: the official COCO
category names of an instances file, in category-id order, one per line. Then it reads the pair back
through mxr's loader and prints the checks of ``configs/coco/glove_coco.README.md``::

    python tools/convert_coco_glove.py ../shared/coco-glove/fixed_embedding_mat_coco_glove.npy \\
        ../shared/coco-tiny/annotations/instances_val2017.json --out configs/coco/glove_coco.npy

Any COCO 2017 instances file will do (all of them list the same 80 categories). A matrix whose row
count differs from the file's category count, or categories that are not COCO's 80, are errors
naming the file.
"""

from __future__ import annotations

import argparse
import hashlib
import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from mxr.data.embedding import read_embedding_file
from mxr.data.splits import VOC_CAT_IDS
from mxr.files import atomic_path, write_text_atomic

#: The pairs whose cosine the provenance README quotes (to 2 decimals).
CHECK_PAIRS = (("cat", "dog"), ("car", "truck"), ("person", "cat"))


def coco_category_names(annotation_file: str | Path) -> list[str]:
    """The category names of a COCO instances file, sorted by category id (80 for COCO 2017)."""
    path = Path(annotation_file)
    if not path.is_file():
        raise FileNotFoundError(f"annotation file not found: {path}")
    categories = sorted(json.loads(path.read_text())["categories"], key=lambda c: c["id"])
    ids = [c["id"] for c in categories]
    if len(ids) != 80 or not set(VOC_CAT_IDS) <= set(ids) or max(ids) != 90:
        raise ValueError(
            f"{path}: expected COCO's 80 categories (ids 1..90, the 20 VOC ids among them); "
            f"found {len(ids)} with ids {ids[:5]}..."
        )
    return [c["name"] for c in categories]


def convert(matrix_file: str | Path, annotation_file: str | Path, out: str | Path) -> Path:
    """Write ``out`` (``.npy``, the ``(80, 300)`` float32 rows unchanged) and ``out``'s
    ``.names.txt`` (the category names of ``annotation_file`` in id order); returns ``out``."""
    matrix_file, out = Path(matrix_file), Path(out)
    if out.suffix != ".npy":
        raise ValueError(f"--out {out}: expected a path ending in .npy")
    names = coco_category_names(annotation_file)
    matrix = np.load(matrix_file, allow_pickle=False)
    if matrix.ndim != 2 or matrix.shape[0] != len(names):
        raise ValueError(
            f"{matrix_file}: expected a (K, d) matrix with one row per category of "
            f"{annotation_file} (K={len(names)}); got shape {tuple(matrix.shape)}"
        )
    with atomic_path(out) as tmp, tmp.open("wb") as f:
        np.save(f, np.ascontiguousarray(matrix, dtype=np.float32), allow_pickle=False)
    write_text_atomic(out.with_suffix(".names.txt"), "".join(f"{n}\n" for n in names))
    return out


def checks(path: str | Path) -> dict[str, float]:
    """What the provenance README states, computed from the written file through mxr's reader:
    the smallest and largest row norm and the cosines of :data:`CHECK_PAIRS`."""
    table = {k: np.asarray(v) for k, v in read_embedding_file(path).items()}
    norms = [float(np.linalg.norm(v)) for v in table.values()]
    out = {"min_norm": min(norms), "max_norm": max(norms)}
    for a, b in CHECK_PAIRS:
        va, vb = table[a], table[b]
        out[f"cos({a},{b})"] = float(va @ vb / (np.linalg.norm(va) * np.linalg.norm(vb)))
    return out


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("matrix", help="fixed_embedding_mat_coco_glove.npy (80 x 300)")
    parser.add_argument("annotations", help="a COCO 2017 instances_*.json (its categories)")
    parser.add_argument("--out", default="configs/coco/glove_coco.npy", help="the .npy to write")
    args = parser.parse_args(argv)
    out = convert(args.matrix, args.annotations, args.out)
    for path in (out, out.with_suffix(".names.txt")):
        print(f"wrote {path} (sha256 {hashlib.sha256(path.read_bytes()).hexdigest()})")
    for key, value in checks(out).items():
        print(f"{key} = {value:.4f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
