"""The COCO-layout sample: a tiny dataset in COCO 2017's layout with real category ids, generated
(never downloaded), so the COCO path (``split: voc``, COCOeval per set) runs where no COCO is."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from mxr.files import read_json_or_none, write_text_atomic

#: The categories of the COCO-format sample: real COCO 2017 ids, names and supercategories; the first
#: four are PASCAL VOC classes (set A of the ``voc`` split), the last four are not (set B).
COCO_SAMPLE_CATEGORIES: tuple[dict[str, Any], ...] = (
    {"id": 1, "name": "person", "supercategory": "person"},
    {"id": 3, "name": "car", "supercategory": "vehicle"},
    {"id": 18, "name": "dog", "supercategory": "animal"},
    {"id": 44, "name": "bottle", "supercategory": "kitchen"},
    {"id": 13, "name": "stop sign", "supercategory": "outdoor"},
    {"id": 25, "name": "giraffe", "supercategory": "animal"},
    {"id": 53, "name": "apple", "supercategory": "food"},
    {"id": 59, "name": "pizza", "supercategory": "food"},
)

_OCTAGON = [
    (0.5 + 0.38 * math.cos(t), 0.4 + 0.38 * math.sin(t))
    for t in [math.pi / 8 + k * math.pi / 4 for k in range(8)]
]
_RING = [
    (0.5 + 0.4 * math.cos(t), 0.55 + 0.4 * math.sin(t))
    for t in [k * 2 * math.pi / 16 for k in range(16)]
]

# fmt: off
#: Each category's outline in a unit cell, as (u, v) vertices; a third value 1 adds the polygon's
#: jitter to v (so each instance differs a little).
_OUTLINES: dict[str, list[tuple[float, ...]]] = {
    "person": [(0.42, 0.05), (0.58, 0.05), (0.6, 0.25), (0.75, 0.35), (0.7, 0.95), (0.55, 0.95),
               (0.5, 0.6, 1), (0.45, 0.95), (0.3, 0.95), (0.25, 0.35), (0.4, 0.25)],  # head on a body
    "car": [(0.05, 0.55), (0.25, 0.5), (0.35, 0.3, 1), (0.7, 0.3, 1), (0.8, 0.5), (0.95, 0.55),
            (0.95, 0.8), (0.05, 0.8)],  # a body with a cabin
    "dog": [(0.1, 0.4), (0.7, 0.4), (0.8, 0.15, 1), (0.95, 0.25), (0.85, 0.5), (0.85, 0.9),
            (0.75, 0.9), (0.7, 0.6), (0.25, 0.6), (0.2, 0.9), (0.1, 0.9)],  # a long body, legs, a raised head
    "bottle": [(0.42, 0.02), (0.58, 0.02), (0.58, 0.3), (0.72, 0.42), (0.72, 0.98), (0.28, 0.98),
               (0.28, 0.42), (0.42, 0.3)],  # a neck on a tall body
    "stop sign": [*_OCTAGON[:2], (0.54, 0.75), (0.54, 0.98), (0.46, 0.98), (0.46, 0.75),
                  *_OCTAGON[2:]],  # an octagon on a pole
    "giraffe": [(0.55, 0.02), (0.75, 0.05), (0.7, 0.15), (0.62, 0.5, 1), (0.85, 0.55), (0.85, 0.98),
                (0.72, 0.98), (0.7, 0.75), (0.4, 0.75), (0.35, 0.98), (0.22, 0.98), (0.25, 0.55),
                (0.5, 0.5)],  # a long neck
    "apple": [*_RING[:12], (0.5, 0.3, 1), *_RING[13:]],  # a round fruit with a dent
    "pizza": [(0.1, 0.15), (0.9, 0.15), (0.5, 0.95, 1)],  # a wedge
}
# fmt: on


def _sample_polygon(name: str, x: float, y: float, s: float, rng: Any) -> list[tuple[float, float]]:
    """The outline of category ``name`` in an ``s`` x ``s`` cell at (x, y), jittered by ``rng``."""
    j = float(rng.uniform(-0.05, 0.05))
    if name not in _OUTLINES:
        raise ValueError(f"no sample outline for category {name!r}")
    return [(x + p[0] * s, y + (p[1] + j if len(p) > 2 else p[1]) * s) for p in _OUTLINES[name]]


def _annotation(poly: list[tuple[float, float]], size: int, **ids: int) -> dict[str, Any]:
    """A COCO annotation for one polygon: segmentation, area and bbox from pycocotools."""
    from pycocotools import mask as mask_utils

    flat = [round(float(v), 2) for p in poly for v in p]
    rle = mask_utils.merge(mask_utils.frPyObjects([flat], size, size))
    bbox = [round(float(v), 2) for v in mask_utils.toBbox(rle)]
    return {
        **ids,
        "segmentation": [flat],
        "area": float(mask_utils.area(rle)),
        "bbox": bbox,
        "iscrowd": 0,
    }


def ensure_coco_sample(
    root: str | Path | None = None,
    *,
    train: int = 48,
    val: int = 16,
    seed: int = 0,
    size: int = 128,
) -> Path:
    """A tiny COCO-format dataset in COCO 2017's layout, generated (never downloaded) unless present.

    ``root`` (default ``data/coco_sample`` in the repository) gets ``train2017/``, ``val2017/`` (JPEG
    images) and ``annotations/instances_{train,val}2017.json`` with polygon masks, using the real COCO
    ids and names of :data:`COCO_SAMPLE_CATEGORIES`, so ``split: voc`` works as on COCO. A
    ``manifest.json`` records the seed and sizes. Each image holds 1–3 non-overlapping objects on a
    textured background.
    """
    import numpy as np
    from PIL import Image, ImageDraw

    root = (
        Path(root)
        if root is not None
        else Path(__file__).resolve().parents[2] / "data" / "coco_sample"
    )
    params = {"train": train, "val": val, "seed": seed, "size": size}
    manifest = root / "manifest.json"
    found = read_json_or_none(manifest)  # None: absent, or cut short (it is written last)
    if isinstance(found, dict) and found.get("params") == params:
        return root
    rng = np.random.default_rng(seed)
    palette = {
        c["name"]: tuple(int(v) for v in rng.integers(40, 256, 3)) for c in COCO_SAMPLE_CATEGORIES
    }
    (root / "annotations").mkdir(parents=True, exist_ok=True)
    next_image, next_ann, cell = 1, 1, size // 2
    for split, n in (("train2017", train), ("val2017", val)):
        (root / split).mkdir(parents=True, exist_ok=True)
        images, anns = [], []
        for _ in range(n):
            pixels = np.clip(rng.integers(60, 160, 3) + rng.normal(0, 18, (size, size, 3)), 0, 255)
            im = Image.fromarray(pixels.astype(np.uint8))
            draw = ImageDraw.Draw(im)
            for slot in rng.permutation(4)[: int(rng.integers(1, 4))]:
                cat = COCO_SAMPLE_CATEGORIES[int(rng.integers(len(COCO_SAMPLE_CATEGORIES)))]
                s = float(rng.uniform(0.6, 0.95)) * cell
                x = (slot % 2) * cell + float(rng.uniform(0, cell - s))
                y = (slot // 2) * cell + float(rng.uniform(0, cell - s))
                poly = _sample_polygon(cat["name"], x, y, s, rng)
                draw.polygon(poly, fill=palette[cat["name"]])
                anns.append(
                    _annotation(poly, size, id=next_ann, image_id=next_image, category_id=cat["id"])
                )
                next_ann += 1
            file_name = f"{next_image:012d}.jpg"
            im.save(root / split / file_name, quality=92)
            images.append({"id": next_image, "file_name": file_name, "width": size, "height": size})
            next_image += 1
        data = {
            "info": {"description": "mxr COCO-format sample (synthetic; real COCO category ids)"},
            "images": images,
            "annotations": anns,
            "categories": [dict(c) for c in COCO_SAMPLE_CATEGORIES],
        }
        (root / "annotations" / f"instances_{split}.json").write_text(json.dumps(data))
    write_text_atomic(
        manifest, json.dumps({"generator": "mxr.data.sample.ensure_coco_sample", "params": params})
    )
    return root
