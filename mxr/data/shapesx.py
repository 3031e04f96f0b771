"""ShapesX: a seeded synthetic instance-segmentation dataset that poses the Mask^X R-CNN question.

Every object is a *head* (a convex shape whose outline names the object's **family**) joined to a
*tail* (the part whose geometry names the **member** of the family). Classes are ``family-member``
(6 families x 5 members = 30 classes, e.g. ``fork-3``). A dark slab always hides the tail, and masks
and boxes are **amodal** (the whole shape), so the hidden part of a mask is not in the pixels.

In the default design (``"hue-cap"``) the visible head tells the class through cues a small detector
learns in minutes: its paint hue names the family (one hue per family; paint is sparse) and a
near-white cap on the back of the head, deeper for larger ``k``, names the member. The amodal box also
reaches further under the slab for larger ``k`` (the tail length grows with ``k``; the slab length
does not). So the hidden mask of a set-B class is taught by its box labels (through the detector's
weights), not by its pixels. ``"hidden-tail"`` (the first default) is the same with random paint
colour and ``k`` small dots as the member cue, which the ``tiny`` detector did not learn in budget.

Files written by :func:`generate_shapesx` (COCO format, read back through pycocotools)::

    out_dir/train/000001.png ...            RGB PNG, image_size x image_size
    out_dir/{val,test}/...
    out_dir/annotations/instances_{train,val,test}.json   masks as compressed RLE (counts: str)
    out_dir/annotations/split.json          {"A": [names], "B": [names]}
    out_dir/annotations/class_embedding.json   {name: [12 floats]}: what the class *names* say
    out_dir/manifest.json                   seed, design, parameters, version, counts

Same seed and parameters give byte-identical files: each image draws from its own generator seeded by
``(seed, split, index)``, so the output does not depend on order or on other splits' sizes.
"""

from __future__ import annotations

import colorsys
import json
import math
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw
from tqdm import tqdm

from mxr.data.coco import encode_rle
from mxr.errors import UserInputError
from mxr.files import read_json_file, read_json_or_none, write_text_atomic

SHAPESX_VERSION = 3  # 2: the test split has its own seed; 3: default design hue-cap

#: The six shape families, in category-id order: (family, head shape, tail shape).
FAMILIES: tuple[tuple[str, str], ...] = (
    ("fork", "disc"),
    ("taper", "square"),
    ("ring", "triangle"),
    ("beads", "hexagon"),
    ("bulb", "diamond"),
    ("tee", "pentagon"),
)
#: Members per family (``k`` = 1..MEMBERS; the cue shows ``k``: the cap depth, or ``k`` dots).
MEMBERS = 5
#: The member of each family held out as set B (in-between members, so each B tail lies between
#: two A tails of the same family and every member index also occurs in A for other families).
B_MEMBERS: tuple[int, ...] = (4, 4, 4, 2, 2, 3)

SPLITS = ("train", "val", "test")

#: Named designs; explicit keyword parameters override them. ``hue-cap`` is the default.
DESIGNS: dict[str, dict[str, Any]] = {
    # The slab always covers the tail (the member-specific part) and a little of the head; the member
    # is visible only through the dots cue and the amodal box extent.
    "hidden-tail": {
        "slab": "tail",
        "cue_dots": True,
        "paint_density": (0.3, 0.6),
        "p_unoccluded": 0.0,
    },
    # hidden-tail with cues a small detector learns in minutes: the family also shows as the paint
    # hue (6 hues, one per family) and the member as a near-white cap on the back of the head whose
    # depth grows with k (instead of k small dots). The tail stays hidden under the slab.
    "hue-cap": {
        "slab": "tail",
        "cue_dots": False,
        "cue_cap": True,
        "hue_by_family": True,
        "paint_density": (0.4, 0.7),
        "p_unoccluded": 0.0,
    },
    # Trial-2-like control: a slab on a random side hides 30-55 % of the object's box, no cue,
    # sparser paint, 20 % of objects unoccluded (the tail is then visible in the pixels).
    "random-slab": {
        "slab": "random",
        "cue_dots": False,
        "paint_density": (0.15, 0.35),
        "p_unoccluded": 0.2,
    },
    # No occluder: only sparse paint (the shape is visible; masks are easy to recover from pixels).
    "sparse": {
        "slab": "none",
        "cue_dots": False,
        "paint_density": (0.15, 0.35),
        "p_unoccluded": 1.0,
    },
}
DEFAULT_DESIGN = "hue-cap"

#: Parameters shared by every design (all overridable through ``**design_params``).
COMMON_PARAMS: dict[str, Any] = {
    "objects_per_image": (2, 4),  # inclusive range of objects attempted per image
    # head radius in pixels at 128 px (scaled with image_size); objects are ~3.8 r long
    "radius": (9.0, 15.0),
    "clutter": (3, 6),  # inclusive range of clutter blobs (same palette as objects)
    "distractor_slabs": (0, 2),  # inclusive range of object-free dark slabs
    "random_slab_fraction": (0.3, 0.55),  # random-slab design: fraction of the box hidden
    "noise_std": 8.0,  # per-pixel Gaussian noise of the background
    "cue_cap": False,  # member cue: a light cap on the back of the head, deeper for larger k
    "hue_by_family": False,  # paint hue set by the family (+-0.03 jitter) instead of random
    # the member cue's per-instance ambiguity: the cap depth is 0.15 r (k + e), e ~ N(0, cap_jitter),
    # so neighbouring members' caps overlap in depth (0: the depth names k exactly)
    "cap_jitter": 0.0,
}


def class_names() -> list[str]:
    """The 30 ShapesX class names in category-id order (id = position + 1), e.g. ``"fork-1"``."""
    return [f"{family}-{k}" for family, _ in FAMILIES for k in range(1, MEMBERS + 1)]


def default_split() -> dict[str, list[str]]:
    """The shipped A/B split: ``{"A": [24 names], "B": [6 names]}`` (one in-between member per family)."""
    b = [f"{family}-{k}" for (family, _), k in zip(FAMILIES, B_MEMBERS, strict=True)]
    return {"A": [n for n in class_names() if n not in b], "B": b}


def resolve_design(design: str = DEFAULT_DESIGN, **design_params: Any) -> dict[str, Any]:
    """The full parameter dict for ``design`` with ``design_params`` overriding it.

    Raises:
        ValueError: unknown design name or parameter (naming the valid options).
    """
    if design not in DESIGNS:
        raise UserInputError(
            f"ShapesX design={design!r} is not valid; expected one of {', '.join(map(repr, DESIGNS))}"
        )
    params: dict[str, Any] = {**COMMON_PARAMS, **DESIGNS[design]}
    unknown = sorted(set(design_params) - set(params))
    if unknown:
        raise UserInputError(
            f"unknown ShapesX parameter(s) {', '.join(unknown)}; valid: {', '.join(sorted(params))}"
        )
    params.update(design_params)
    jitter = params["cap_jitter"]
    if isinstance(jitter, bool) or not isinstance(jitter, (int, float)) or not jitter >= 0:
        raise UserInputError(f"ShapesX cap_jitter={jitter!r} is not valid; expected a number >= 0")
    if params["slab"] not in ("tail", "random", "none"):
        raise UserInputError(
            f"ShapesX slab={params['slab']!r} is not valid; expected 'tail', 'random' or 'none'"
        )
    for key, value in params.items():
        if isinstance(value, list):
            params[key] = tuple(value)
    return params


# --------------------------------------------------------------------------------------------------
# Geometry, in a canonical frame: head centred at the origin, tail pointing to +x, units of pixels.
# Every shape is symmetric about the x axis, so horizontal-flip augmentation never turns one member
# into another.
# --------------------------------------------------------------------------------------------------

TAIL_START = 0.6  # tail starts at x = 0.6 r (inside the head, so the two parts join)


def tail_length(k: int, r: float) -> float:
    """Tail length of member ``k`` (1..5) for head radius ``r``: 1.4 r ... 2.8 r."""
    return r * (1.4 + 0.35 * (k - 1))


def _regular_polygon(n: int, r: float, start_deg: float) -> list[tuple[float, float]]:
    return [
        (
            r * math.cos(math.radians(start_deg + 360.0 * i / n)),
            r * math.sin(math.radians(start_deg + 360.0 * i / n)),
        )
        for i in range(n)
    ]


def _draw_head(draw: ImageDraw.ImageDraw, shape: str, r: float, to_px: Callable) -> None:
    if shape == "disc":
        (x0, y0), (x1, y1) = to_px(-r, -r), to_px(r, r)
        draw.ellipse([x0, y0, x1, y1], fill=1)
        return
    polys = {
        "square": _regular_polygon(4, r * 1.2, 45.0),
        "triangle": _regular_polygon(3, r * 1.15, 180.0),
        "hexagon": _regular_polygon(6, r, 0.0),
        "diamond": _regular_polygon(4, r * 1.1, 0.0),
        "pentagon": _regular_polygon(5, r * 1.05, 180.0),
    }
    draw.polygon([to_px(x, y) for x, y in polys[shape]], fill=1)


def _draw_tail(draw: ImageDraw.ImageDraw, family: str, k: int, r: float, to_px: Callable) -> None:
    """Draw member ``k`` of ``family``'s tail (value 1) on ``draw``; ``to_px`` maps frame -> pixels."""
    x0 = TAIL_START * r
    length = tail_length(k, r)
    x1 = x0 + length

    def rect(ax: float, ay: float, bx: float, by: float, fill: int = 1) -> None:
        (px0, py0), (px1, py1) = to_px(ax, ay), to_px(bx, by)
        draw.rectangle([px0, py0, px1, py1], fill=fill)

    def ellipse(cx: float, cy: float, rad: float, fill: int = 1) -> None:
        (px0, py0), (px1, py1) = to_px(cx - rad, cy - rad), to_px(cx + rad, cy + rad)
        draw.ellipse([px0, py0, px1, py1], fill=fill)

    if family == "fork":  # k prongs of equal width and gap
        h = 0.9 * r
        base = x0 + 0.2 * length
        rect(x0, -h, base, h)
        w = 2 * h / (2 * k - 1)
        for j in range(k):
            y = -h + 2 * w * j
            rect(base, y, x1, y + w)
    elif family == "taper":  # far-end half-width grows with k: a spike (k=1) ... a fan (k=5)
        hw = r * (0.05 + 0.29 * (k - 1))
        draw.polygon(
            [to_px(x0, -0.35 * r), to_px(x1, -hw), to_px(x1, hw), to_px(x0, 0.35 * r)], fill=1
        )
    elif family == "ring":  # an elliptic annulus; the hole grows with k
        rx, ry = length / 2, min(length / 2, 1.15 * r)
        cx = x0 + rx
        (px0, py0), (px1, py1) = to_px(cx - rx, -ry), to_px(cx + rx, ry)
        draw.ellipse([px0, py0, px1, py1], fill=1)
        f = 0.15 + 0.17 * (k - 1)
        (px0, py0), (px1, py1) = to_px(cx - f * rx, -f * ry), to_px(cx + f * rx, f * ry)
        draw.ellipse([px0, py0, px1, py1], fill=0)
    elif family == "beads":  # k beads on a thin string; fewer beads are bigger
        rect(x0, -0.15 * r, x1, 0.15 * r)
        bead = length / (2 * k)
        for j in range(k):
            ellipse(x0 + bead * (2 * j + 1), 0.0, min(bead, 1.2 * r))
    elif family == "bulb":  # a stem ending in a disc whose radius grows with k
        b = r * (0.3 + 0.15 * (k - 1))
        rect(x0, -0.25 * r, x1 - b, 0.25 * r)
        ellipse(x1 - b, 0.0, b)
    elif family == "tee":  # a stem with a crossbar that moves out with k
        rect(x0, -0.25 * r, x1, 0.25 * r)
        xc = min(x0 + length * (0.2 + 0.2 * (k - 1)), x1 - 0.15 * r)
        rect(xc - 0.15 * r, -0.95 * r, xc + 0.15 * r, 0.95 * r)
    else:  # pragma: no cover - FAMILIES is fixed
        raise ValueError(f"unknown family {family!r}")


def _draw_dots(draw: ImageDraw.ImageDraw, k: int, r: float, to_px: Callable) -> None:
    rad = max(1.0, 0.13 * r)
    ys = [0.0] if k == 1 else list(np.linspace(-0.55 * r, 0.55 * r, k))
    for y in ys:
        (px0, py0), (px1, py1) = to_px(0.15 * r - rad, y - rad), to_px(0.15 * r + rad, y + rad)
        draw.ellipse([px0, py0, px1, py1], fill=1)


def _draw_cap(draw: ImageDraw.ImageDraw, k: float, r: float, to_px: Callable) -> None:
    # 0.15 r (k=1) ... 0.75 r (k=5) of the ~1.4 r of head left visible; k may carry cap_jitter's noise
    depth = 0.15 * max(k, 0.0) * r
    (px0, py0), (px1, py1) = to_px(-2.0 * r, -2.0 * r), to_px(-r + depth, 2.0 * r)
    draw.rectangle([px0, py0, px1, py1], fill=1)


def _render_object(
    family_index: int,
    k: int,
    r: float,
    rotation: int,
    slab_mode: str,
    rng: np.random.Generator,
    params: dict,
) -> dict[str, np.ndarray]:
    """Masks of one object on a local canvas, rotated by ``rotation`` x 90 degrees.

    Returns: dict of bool arrays (h, w): ``amodal`` (the whole shape), ``slab`` (the occluder, may be
    empty), ``dots`` and ``cap`` (the cues; empty when disabled).
    """
    family, head = FAMILIES[family_index]
    pad = 2.0
    xmin, xmax, ymax = (
        -1.25 * r - pad,
        TAIL_START * r + tail_length(MEMBERS, r) + 0.7 * r + pad,
        1.7 * r + pad,
    )
    w, h = int(math.ceil(xmax - xmin)), int(math.ceil(2 * ymax))

    def to_px(x: float, y: float) -> tuple[float, float]:
        return (x - xmin, y + ymax)

    head_img = Image.new("L", (w, h), 0)
    _draw_head(ImageDraw.Draw(head_img), head, r, to_px)
    tail_img = Image.new("L", (w, h), 0)
    _draw_tail(ImageDraw.Draw(tail_img), family, k, r, to_px)
    amodal = (np.asarray(head_img) > 0) | (np.asarray(tail_img) > 0)

    dots = np.zeros_like(amodal)
    if params["cue_dots"]:
        dots_img = Image.new("L", (w, h), 0)
        _draw_dots(ImageDraw.Draw(dots_img), k, r, to_px)
        dots = (np.asarray(dots_img) > 0) & amodal
    cap = np.zeros_like(amodal)
    if params["cue_cap"]:
        cap_img = Image.new("L", (w, h), 0)
        # draw the noise only when asked, so data without jitter stays byte-identical
        e = rng.normal(0.0, params["cap_jitter"]) if params["cap_jitter"] > 0 else 0.0
        _draw_cap(ImageDraw.Draw(cap_img), k + e, r, to_px)
        cap = (np.asarray(cap_img) > 0) & (np.asarray(head_img) > 0)

    slab = np.zeros_like(amodal)
    occlude = rng.random() >= params["p_unoccluded"]
    if occlude and slab_mode == "tail":
        d, e, m = rng.uniform(0.0, 0.25) * r, rng.uniform(0.1, 0.6) * r, rng.uniform(0.05, 0.3) * r
        sx0, sx1 = (
            TAIL_START * r - d,
            TAIL_START * r + tail_length(MEMBERS, r) + e,
        )  # independent of k
        (px0, py0), (px1, py1) = to_px(sx0, -1.3 * r - m), to_px(sx1, 1.3 * r + m)
        slab[int(round(py0)) : int(round(py1)) + 1, int(round(px0)) : int(round(px1)) + 1] = True
    elif occlude and slab_mode == "random":
        ys, xs = np.nonzero(amodal)
        by0, by1, bx0, bx1 = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
        lo, hi = params["random_slab_fraction"]
        f = rng.uniform(lo, hi)
        side = int(rng.integers(4))
        m = int(rng.integers(1, 4))
        if side == 0:  # right
            slab[max(by0 - m, 0) : by1 + m, bx1 - int(round(f * (bx1 - bx0))) : bx1 + m] = True
        elif side == 1:  # left
            slab[max(by0 - m, 0) : by1 + m, max(bx0 - m, 0) : bx0 + int(round(f * (bx1 - bx0)))] = (
                True
            )
        elif side == 2:  # bottom
            slab[by1 - int(round(f * (by1 - by0))) : by1 + m, max(bx0 - m, 0) : bx1 + m] = True
        else:  # top
            slab[max(by0 - m, 0) : by0 + int(round(f * (by1 - by0))), max(bx0 - m, 0) : bx1 + m] = (
                True
            )

    return {
        "amodal": np.rot90(amodal, rotation),
        "slab": np.rot90(slab, rotation),
        "dots": np.rot90(dots, rotation),
        "cap": np.rot90(cap, rotation),
    }


def _random_colour(rng: np.random.Generator, family_index: int | None = None) -> np.ndarray:
    """A saturated colour: random hue, or the hue of ``family_index`` (of 6) with a small jitter."""
    hue = (
        rng.random()
        if family_index is None
        else (family_index / 6 + rng.uniform(-0.03, 0.03)) % 1.0
    )
    rgb = colorsys.hsv_to_rgb(hue, rng.uniform(0.55, 1.0), rng.uniform(0.75, 1.0))
    return np.array(rgb) * 255.0


def _paint(
    canvas: np.ndarray,
    region: np.ndarray,
    colour: np.ndarray,
    density: float,
    rng: np.random.Generator,
) -> None:
    """Speckle ``colour`` onto ``canvas`` (h, w, 3 float) at a random ``density`` of ``region`` (h, w)."""
    speckle = region & (rng.random(region.shape) < density)
    n = int(speckle.sum())
    if n:
        canvas[speckle] = np.clip(colour + rng.normal(0.0, 18.0, (n, 3)), 0, 255)


def _slab_fill(canvas: np.ndarray, region: np.ndarray, rng: np.random.Generator) -> None:
    n = int(region.sum())
    if n:
        canvas[region] = np.clip(rng.uniform(15, 45) + rng.normal(0.0, 5.0, (n, 1)), 0, 255)


def _background(size: int, rng: np.random.Generator, noise_std: float) -> np.ndarray:
    base = rng.uniform(70, 150) + rng.uniform(-15, 15, 3)
    low = rng.normal(0.0, 25.0, (6, 6, 3))
    low_img = np.stack(
        [
            np.asarray(
                Image.fromarray(low[..., c].astype(np.float32), mode="F").resize(
                    (size, size), Image.BILINEAR
                )
            )
            for c in range(3)
        ],
        axis=-1,
    )
    return base + low_img + rng.normal(0.0, noise_std, (size, size, 3))


def _overlaps(
    box: tuple[int, int, int, int], boxes: list[tuple[int, int, int, int]], gap: int = 2
) -> bool:
    x0, y0, x1, y1 = box
    return any(
        x0 < b[2] + gap and b[0] < x1 + gap and y0 < b[3] + gap and b[1] < y1 + gap for b in boxes
    )


def class_slots(seed: int, split_index: int, start: int, count: int) -> list[int]:
    """Category indices (0..29) for object slots ``start .. start+count-1`` of one split.

    Classes are dealt in blocks of 30 slots that hold every class once; each block is 6 runs of 5 slots
    with exactly one set-B class per run. So classes are balanced and even a tiny split has B objects.
    Each block depends only on ``(seed, split_index, block)``: images stay independent of each other.
    """
    names = class_names()
    b_set = set(default_split()["B"])
    b_idx = [i for i, n in enumerate(names) if n in b_set]
    a_idx = [i for i, n in enumerate(names) if n not in b_set]
    runs = len(b_idx)
    per_run = len(a_idx) // runs
    out: list[int] = []
    block_size = len(names)
    for block in range(start // block_size, (start + count - 1) // block_size + 1 if count else 0):
        rng = np.random.default_rng(np.random.SeedSequence([seed, split_index, 1_000_003, block]))
        b_perm, a_perm = rng.permutation(b_idx), rng.permutation(a_idx)
        seq: list[int] = []
        for t in range(runs):
            run = [int(b_perm[t])] + [int(x) for x in a_perm[t * per_run : (t + 1) * per_run]]
            seq += [run[i] for i in rng.permutation(len(run))]
        lo = max(start - block * block_size, 0)
        hi = min(start + count - block * block_size, block_size)
        out += seq[lo:hi]
    return out


def render_image(
    rng: np.random.Generator,
    image_size: int,
    params: dict[str, Any],
    classes: Sequence[int] | None = None,
) -> tuple[np.ndarray, list[dict]]:
    """Draw one ShapesX image: background, clutter, objects, then object-free slabs.

    ``classes`` gives the category index (0..29) of each object slot (see :func:`class_slots`); the
    first n of them are attempted, n drawn from ``objects_per_image``. ``None`` draws classes uniformly.

    Returns:
        image: uint8 (image_size, image_size, 3).
        objects: list of dicts with ``category_id`` (1..30), ``mask`` bool (H, W) amodal, ``visible``
        (fraction of the mask not under a slab).
    """
    size, scale = image_size, image_size / 128.0  # sizes are given for 128-px images
    canvas = _background(size, rng, params["noise_std"])
    _draw_clutter(canvas, rng, scale, params)  # first: objects and slabs draw over it
    footprints: list[tuple[int, int, int, int]] = []
    objects: list[dict] = []
    slabs = np.zeros((size, size), dtype=bool)
    lo, hi = params["objects_per_image"]
    n_classes = len(FAMILIES) * MEMBERS
    for slot in range(int(rng.integers(lo, hi + 1))):
        cat = int(classes[slot]) if classes is not None else int(rng.integers(n_classes))
        full = _place_object(cat, rng, size, scale, params, footprints)
        if full is not None:
            objects.append(_paint_object(canvas, cat, full, rng, params))
            slabs |= full["slab"]
    lo, hi = params["distractor_slabs"]
    for _ in range(int(rng.integers(lo, hi + 1))):
        sw, sh = (int(v) for v in rng.integers(int(8 * scale), int(30 * scale), 2))
        x0, y0 = int(rng.integers(0, size - sw)), int(rng.integers(0, size - sh))
        if not _overlaps((x0, y0, x0 + sw, y0 + sh), footprints):
            slabs[y0 : y0 + sh, x0 : x0 + sw] = True
            footprints.append((x0, y0, x0 + sw, y0 + sh))
    _slab_fill(canvas, slabs, rng)
    return np.clip(canvas, 0, 255).astype(np.uint8), objects


def _draw_clutter(
    canvas: np.ndarray, rng: np.random.Generator, scale: float, params: dict[str, Any]
) -> None:
    """Speckle discs and bars in the objects' palette over the background."""
    size = canvas.shape[0]
    lo, hi = params["clutter"]
    for _ in range(int(rng.integers(lo, hi + 1))):
        rad = rng.uniform(2.0, 7.0) * scale
        cx, cy = rng.uniform(0, size, 2)
        yy, xx = np.ogrid[:size, :size]
        if rng.random() < 0.5:
            blob = (xx - cx) ** 2 + (yy - cy) ** 2 <= rad**2
        else:
            blob = (np.abs(xx - cx) <= rad) & (np.abs(yy - cy) <= rng.uniform(1.0, 6.0))
        _paint(canvas, blob, _random_colour(rng), rng.uniform(0.15, 0.5), rng)


def _place_object(
    cat: int,
    rng: np.random.Generator,
    size: int,
    scale: float,
    params: dict[str, Any],
    footprints: list[tuple[int, int, int, int]],
) -> dict[str, np.ndarray] | None:
    """Render an object of category index ``cat`` and place it where its footprint (shape and slab)
    overlaps no other (30 tries); its masks on the ``(size, size)`` image, or ``None``."""
    family_index, k = divmod(cat, MEMBERS)
    r = rng.uniform(*params["radius"]) * scale
    rotation = int(rng.integers(4))
    parts = _render_object(family_index, k + 1, r, rotation, params["slab"], rng, params)
    ys, xs = np.nonzero(parts["amodal"] | parts["slab"])
    fy0, fy1, fx0, fx1 = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
    if fx1 - fx0 > size or fy1 - fy0 > size:
        return None
    for _try in range(30):
        ox = int(rng.integers(0, size - (fx1 - fx0) + 1)) - fx0
        oy = int(rng.integers(0, size - (fy1 - fy0) + 1)) - fy0
        box = (fx0 + ox, fy0 + oy, fx1 + ox, fy1 + oy)
        if not _overlaps(box, footprints):
            break
    else:
        return None
    footprints.append(box)
    ph, pw = parts["amodal"].shape
    full = {}
    for name, local in parts.items():
        arr = np.zeros((size + 2 * ph, size + 2 * pw), dtype=bool)  # padded: slabs may cross edges
        arr[oy + ph : oy + 2 * ph, ox + pw : ox + 2 * pw] = local
        full[name] = arr[ph : ph + size, pw : pw + size]
    return full


def _paint_object(
    canvas: np.ndarray,
    cat: int,
    full: dict[str, np.ndarray],
    rng: np.random.Generator,
    params: dict[str, Any],
) -> dict[str, Any]:
    """Paint the visible part of a placed object and its cue; the object's annotation fields."""
    family_index = cat // MEMBERS
    colour = _random_colour(rng, family_index if params["hue_by_family"] else None)
    visible = full["amodal"] & ~full["slab"]
    cue = full["dots"] | full["cap"]
    _paint(canvas, visible & ~cue, colour, rng.uniform(*params["paint_density"]), rng)
    if full["dots"].any():  # the cue: solid dots in the complementary colour
        canvas[full["dots"] & visible] = 255.0 - colour
    if full["cap"].any():  # the cue: a solid near-white cap (no hue, so it never names a family)
        canvas[full["cap"] & visible] = 235.0
    area = int(full["amodal"].sum())
    visible_fraction = float((visible.sum()) / max(area, 1))
    return {"category_id": cat + 1, "mask": full["amodal"], "visible": visible_fraction}


def _encode(mask: np.ndarray) -> dict[str, Any]:
    """One ``(H, W)`` mask as compressed RLE (:func:`mxr.data.coco.encode_rle`)."""
    return encode_rle(mask[None])[0]


CLASS_EMBEDDING_FILE = "annotations/class_embedding.json"


def class_embedding() -> dict[str, list[float]]:
    """A fixed embedding of each class name, ``{"fork-4": [12 floats], ...}``: ShapesX's GloVe.

    Built from the *name* ``family-k`` alone (never from masks or pixels), as a language prior would
    know it: ``[onehot(family), onehot(family) * (k - 3) / 2]``, so a family's members lie on a line,
    in member order, and a B member sits halfway between its two neighbours (``k`` = 1..5 maps to
    -1, -0.5, 0, 0.5, 1). That ordering is what τ needs to interpolate masks from A to B.
    """
    n, centre, half = len(FAMILIES), (MEMBERS + 1) / 2, (MEMBERS - 1) / 2
    table = {}
    for f, (family, _) in enumerate(FAMILIES):
        for k in range(1, MEMBERS + 1):
            onehot = [1.0 if i == f else 0.0 for i in range(n)]
            table[f"{family}-{k}"] = onehot + [x * (k - centre) / half + 0.0 for x in onehot]
    return table


def _write_class_embedding(out: Path) -> None:
    path = out / CLASS_EMBEDDING_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(class_embedding()) + "\n")


def _categories() -> list[dict[str, Any]]:
    b = set(default_split()["B"])
    return [
        {
            "id": i + 1,
            "name": name,
            "supercategory": name.rsplit("-", 1)[0],
            "member": int(name.rsplit("-", 1)[1]),
            "set": "B" if name in b else "A",
        }
        for i, name in enumerate(class_names())
    ]


def _dump_json(obj: Any, path: Path) -> None:
    path.write_text(json.dumps(obj, separators=(",", ":")) + "\n")


def generate_shapesx(
    out_dir: str | Path,
    *,
    train: int = 2000,
    val: int = 300,
    test: int = 300,
    seed: int = 0,
    test_seed: int | None = None,
    image_size: int = 128,
    design: str = DEFAULT_DESIGN,
    progress: bool = True,
    **design_params: Any,
) -> Path:
    """Generate ShapesX under ``out_dir`` (see the module docstring for the layout); returns ``out_dir``.

    Args:
        out_dir: folder to write (created; existing ShapesX PNGs in its split folders are replaced).
        train, val, test: number of images per split.
        seed: the generator seed; the same seed and parameters give byte-identical files.
        test_seed: the seed of the test split (default ``seed + 1``): the held-out split is drawn
            from a seed never used for the images that train and choose the models.
        image_size: side of the square images, in pixels.
        design: a name in :data:`DESIGNS`; ``design_params`` override its parameters (see
            :data:`COMMON_PARAMS` and :data:`DESIGNS` for the names).
        progress: show a tqdm bar and print the rate (images/s) at the end.
    """
    params = resolve_design(design, **design_params)
    test_seed = seed + 1 if test_seed is None else test_seed
    sizes = {"train": train, "val": val, "test": test}
    for name, n in sizes.items():
        if isinstance(n, bool) or not isinstance(n, int) or n < 0:
            raise UserInputError(
                f"ShapesX {name}={n!r} is not valid; expected a non-negative integer"
            )
    if image_size < 64:
        raise UserInputError(f"ShapesX image_size={image_size!r} is not valid; expected >= 64")
    out = Path(out_dir)
    (out / "annotations").mkdir(parents=True, exist_ok=True)
    total = sum(sizes.values())
    bar = tqdm(total=total, desc="ShapesX", unit="img", disable=not progress)
    start = time.perf_counter()
    counts = {}
    for split_index, split in enumerate(SPLITS):
        split_seed = test_seed if split == "test" else seed
        coco = _write_split(
            out, split, split_index, sizes[split], split_seed, image_size, params, bar
        )
        counts[split] = {"images": len(coco["images"]), "annotations": len(coco["annotations"])}
    bar.close()
    elapsed = time.perf_counter() - start
    _dump_json(default_split(), out / "annotations" / "split.json")
    _write_class_embedding(out)
    manifest = {
        "generator": "mxr.data.shapesx",
        "version": SHAPESX_VERSION,
        "seed": seed,
        "test_seed": test_seed,
        "image_size": image_size,
        "design": design,
        "params": {k: list(v) if isinstance(v, tuple) else v for k, v in sorted(params.items())},
        "counts": counts,
        "classes": class_names(),
        "split": default_split(),
    }
    write_text_atomic(out / "manifest.json", json.dumps(manifest, indent=2) + "\n")
    if progress:
        rate = total / max(elapsed, 1e-9)
        print(f"ShapesX: {total} images in {elapsed:.1f} s ({rate:.0f} images/s) -> {out}")
    return out


def _write_split(
    out: Path,
    split: str,
    split_index: int,
    n: int,
    seed: int,
    image_size: int,
    params: dict[str, Any],
    bar: tqdm,
) -> dict[str, Any]:
    """Render the ``n`` images of one split into ``out/split`` and write its annotation file;
    returns the COCO dict. Image ``index`` draws from its own generator ``(seed, split, index)``."""
    split_dir = out / split
    split_dir.mkdir(exist_ok=True)
    for stale in split_dir.glob("[0-9][0-9][0-9][0-9][0-9][0-9].png"):
        stale.unlink()
    max_objects = int(params["objects_per_image"][1])
    images, annotations = [], []
    for index in range(n):
        rng = np.random.default_rng(np.random.SeedSequence([seed, split_index, index]))
        slots = class_slots(seed, split_index, index * max_objects, max_objects)
        pixels, objects = render_image(rng, image_size, params, slots)
        image_id, file_name = index + 1, f"{index + 1:06d}.png"
        Image.fromarray(pixels).save(split_dir / file_name, compress_level=1)
        images.append(
            {"id": image_id, "file_name": file_name, "width": image_size, "height": image_size}
        )
        for obj in objects:
            annotations.append(_annotation(obj, len(annotations) + 1, image_id))
        bar.update(1)
    coco = {
        "info": {"description": f"ShapesX {split}", "version": SHAPESX_VERSION, "seed": seed},
        "images": images,
        "annotations": annotations,
        "categories": _categories(),
    }
    _dump_json(coco, out / "annotations" / f"instances_{split}.json")
    return coco


def _annotation(obj: dict[str, Any], ann_id: int, image_id: int) -> dict[str, Any]:
    """The COCO annotation of a rendered object (amodal mask as RLE, its box and area)."""
    ys, xs = np.nonzero(obj["mask"])
    x0, y0 = int(xs.min()), int(ys.min())
    return {
        "id": ann_id,
        "image_id": image_id,
        "category_id": obj["category_id"],
        "segmentation": _encode(obj["mask"]),
        "area": int(obj["mask"].sum()),
        "bbox": [x0, y0, int(xs.max()) + 1 - x0, int(ys.max()) + 1 - y0],
        "iscrowd": 0,
        "visible_fraction": round(obj["visible"], 4),
    }


def ensure_shapesx(root: str | Path, **kwargs: Any) -> Path:
    """Generate ShapesX into ``root`` unless it holds data of this generator version; returns ``root``.

    ``kwargs`` go to :func:`generate_shapesx` (they are ignored when the data already exists). Data
    written by an older generator version (a different design) is regenerated, with a message.
    """
    root = Path(root)
    manifest = root / "manifest.json"
    if manifest.is_file():
        found = read_json_or_none(manifest)  # None: cut short (it is written last)
        version = found.get("version") if isinstance(found, dict) else "unreadable"
        if version == SHAPESX_VERSION:
            if not (root / CLASS_EMBEDDING_FILE).is_file():  # data from before the file existed
                _write_class_embedding(root)
            return root
        print(f"ShapesX at {root} is version {version}; regenerating version {SHAPESX_VERSION}")
    generate_shapesx(root, **kwargs)
    return root


def read_manifest(root: str | Path) -> dict[str, Any]:
    """The ``manifest.json`` of a generated ShapesX folder."""
    what = "ShapesX manifest (generate with `python -m mxr data shapesx`)"
    return read_json_file(Path(root) / "manifest.json", "a ShapesX manifest.json", what)


__all__: Sequence[str] = (
    "DESIGNS",
    "DEFAULT_DESIGN",
    "FAMILIES",
    "class_embedding",
    "class_names",
    "default_split",
    "ensure_shapesx",
    "generate_shapesx",
    "render_image",
    "resolve_design",
)
