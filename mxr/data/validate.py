"""The rules a COCO-format dataset must follow, shared by the loader and ``python -m mxr data check``.

:func:`check_coco_data` holds every rule. :class:`mxr.data.CocoInstances` runs it on the file it
loads and raises on the first problem; :func:`validate_dataset` (and ``python -m mxr data check
ANNOTATIONS.json --images IMAGE_DIR [--split voc|nonvoc|FILE] [--masks A|all]``) runs it and reports
every problem at once, never raising on bad data. Given the same ``split`` and ``masks``, a check
without ``--images`` finds no problem exactly when the loader accepts the file; ``--images`` also
opens every image (the loader opens each one when an item is read).

Which annotations need a ``segmentation``: those the loader decodes, i.e. non-crowd annotations with a
positive box whose category is in the mask set (set A for ``masks="A"``, every category for
``masks="all"``). A partially labelled set (boxes only for set B) passes with ``split`` naming set A.
Problems make the loader fail; warnings (zero-size boxes, which the loader drops and counts; boxes past
the image edge, which it clips; crowd regions of mask classes without a mask) do not.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Collection
from dataclasses import dataclass, field
from numbers import Real
from pathlib import Path
from typing import Any

from PIL import Image, UnidentifiedImageError

MASK_SETS = ("A", "all")


@dataclass
class ValidationReport:
    """What :func:`validate_dataset` / :func:`check_coco_data` found.

    Attributes:
        ann_file, image_dir: what was checked.
        problems: one line per problem, naming file / image id / annotation id / field and what was
            expected. Any problem means the dataset will not load.
        warnings: things the loader tolerates (zero-size boxes, boxes past the image edge, crowd
            regions of mask classes without a segmentation).
        counts: ``images``, ``annotations``, ``categories``, ``crowd``, ``images_without_annotations``,
            ``zero_size_boxes``, ``missing_images``, ``unreadable_images``, ``mask_categories``,
            ``without_segmentation``, ``problems``, ``warnings``, plus ``problem:<kind>`` counts.
        rules: which annotations must carry a segmentation, in words (the split and mask set checked).
    """

    ann_file: str
    image_dir: str | None
    problems: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)
    kinds: Counter = field(default_factory=Counter)
    rules: str = ""

    @property
    def ok(self) -> bool:
        """True when there is no problem (warnings allowed)."""
        return not self.problems

    def problem(self, kind: str, message: str) -> None:
        """Record a problem of ``kind`` (a short tag counted in ``counts``)."""
        self.problems.append(message)
        self.kinds[kind] += 1

    def format(self) -> str:
        """A human-readable report: what was required, every problem and warning, then the counts."""
        lines = [
            f"Checked {self.ann_file}"
            + (f" with images in {self.image_dir}" if self.image_dir else "")
        ]
        if self.rules:
            lines.append(self.rules)
        if self.problems:
            lines.append(f"{len(self.problems)} problem(s):")
            lines += [f"  - {p}" for p in self.problems]
        if self.warnings:
            lines.append(f"{len(self.warnings)} warning(s):")
            lines += [f"  - {w}" for w in self.warnings]
        counts = {k: v for k, v in self.counts.items() if not k.startswith("problem:")}
        lines.append("Counts: " + ", ".join(f"{k}={v}" for k, v in counts.items()))
        kinds = {k: v for k, v in self.counts.items() if k.startswith("problem:")}
        if kinds:
            lines.append("Problems by kind: " + ", ".join(f"{k[8:]}={v}" for k, v in kinds.items()))
        lines.append("OK: no problems found." if self.ok else "NOT OK: fix the problems above.")
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.format()


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v: Any) -> bool:
    return isinstance(v, Real) and not isinstance(v, bool)


_JSON_NUMBERS = {int, float}


def _check_segmentation(seg: Any, size: tuple[int, int] | None) -> str | None:
    """None if ``seg`` is a valid COCO segmentation, else what is wrong with it."""
    if isinstance(seg, list):
        if not seg:
            return "is an empty list; expected polygons [[x1, y1, x2, y2, ...], ...]"
        for poly in seg:
            if not isinstance(poly, list) or len(poly) < 6 or len(poly) % 2:
                return "has a polygon that is not a flat list of >= 3 (x, y) pairs"
            # Fast path (JSON numbers are int or float), then the exact rule.
            if not set(map(type, poly)) <= _JSON_NUMBERS and not all(map(_is_number, poly)):
                return "has a polygon with non-numeric coordinates"
        return None
    if isinstance(seg, dict):
        if "counts" not in seg or "size" not in seg:
            return "is a dict without 'counts' and 'size'; expected an RLE {'size': [h, w], 'counts': ...}"
        s = seg["size"]
        if not (isinstance(s, list) and len(s) == 2 and all(_is_int(v) for v in s)):
            return f"has RLE size {s!r}; expected [height, width]"
        if size is not None and tuple(s) != size:
            return f"has RLE size {s} but the image is [{size[0]}, {size[1]}] (height, width)"
        if not isinstance(seg["counts"], str | list):
            return "has RLE counts that are neither a string nor a list"
        return None
    return f"is {type(seg).__name__}; expected polygons (list) or RLE (dict)"


def needs_segmentation(ann: dict[str, Any], mask_cat_ids: Collection[int]) -> bool:
    """Whether the loader decodes the mask of annotation ``ann``: it is not a crowd region, its box has
    a positive width and height, and its category is in ``mask_cat_ids``."""
    cid = ann.get("category_id")
    if ann.get("iscrowd", 0) or not _is_int(cid) or cid not in mask_cat_ids:
        return False
    bbox = ann.get("bbox")
    return not (
        isinstance(bbox, list)
        and len(bbox) == 4
        and all(map(_is_number, bbox))
        and (bbox[2] <= 0 or bbox[3] <= 0)
    )


def mask_category_ids(
    a_cat_ids: Collection[int], all_cat_ids: Collection[int], masks: str
) -> set[int]:
    """The categories whose instances the loader decodes masks of: set A (``masks="A"``) or every
    category (``masks="all"``, the oracle)."""
    if masks not in MASK_SETS:
        raise ValueError(f"masks={masks!r} is not valid; expected 'A' or 'all'")
    return set(int(i) for i in (a_cat_ids if masks == "A" else all_cat_ids))


def _split_name(split: Any) -> str:
    if split is None:
        return "none (every category in A)"
    if isinstance(split, str | Path):
        return repr(str(split))
    return f"a list of {len(split)} categories"


def _count_keys() -> Counter:
    return Counter(
        {
            k: 0
            for k in (
                "images",
                "annotations",
                "categories",
                "crowd",
                "images_without_annotations",
                "zero_size_boxes",
                "missing_images",
                "unreadable_images",
                "mask_categories",
                "without_segmentation",
            )
        }
    )


def _finish(report: ValidationReport, counts: Counter) -> ValidationReport:
    counts["problems"] = len(report.problems)
    counts["warnings"] = len(report.warnings)
    report.counts = dict(counts) | {f"problem:{k}": v for k, v in sorted(report.kinds.items())}
    return report


def validate_dataset(
    ann_file: str | Path,
    image_dir: str | Path | None = None,
    *,
    split: Any = None,
    masks: str = "A",
    root: str | Path | None = None,
) -> ValidationReport:
    """Check a COCO annotation file (and its images, when ``image_dir`` is given) by the loader's rules.

    Args:
        ann_file: the COCO instances JSON.
        image_dir: its image folder; ``None`` checks the JSON only.
        split: set A, as :class:`mxr.data.CocoInstances` takes it (``None``: every category;
            ``"voc"`` / ``"nonvoc"``; a split JSON file, found as the loader finds it; a list of names
            or ids).
        masks: ``"A"`` (masks needed for set A only) or ``"all"`` (for every category).
        root: folder for a relative split path (as the loader's ``root``).

    Checks (see :func:`check_coco_data`): the file exists and is a JSON object with
    ``images``/``annotations``/``categories`` lists; the split resolves; required fields and their
    types; unique ids; annotations pointing at existing images and categories; ``bbox`` as 4 numbers
    with non-negative size; ``segmentation`` present where the loader decodes it, and valid (polygons or
    RLE whose size matches the image) wherever present; ``iscrowd`` in {0, 1}; image files present,
    readable and of the declared size. Never raises on bad data: every finding goes into the report.
    """
    ann_file = Path(ann_file)
    report = ValidationReport(str(ann_file), str(image_dir) if image_dir is not None else None)
    if not ann_file.is_file():
        report.problem("file", f"{ann_file}: annotation file not found")
        return _finish(report, _count_keys())
    try:
        data = json.loads(ann_file.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        report.problem("file", f"{ann_file}: malformed JSON ({e}); expected a COCO annotation file")
        return _finish(report, _count_keys())
    if not isinstance(data, dict):
        report.problem(
            "file", f"{ann_file}: top level is {type(data).__name__}; expected a JSON object"
        )
        return _finish(report, _count_keys())
    if masks not in MASK_SETS:
        report.problem("split", f"masks={masks!r} is not valid; expected 'A' or 'all'")
        return check_coco_data(data, ann_file, image_dir=image_dir, mask_cat_ids=(), report=report)

    from mxr.data.splits import resolve_split, split_root

    categories = data.get("categories")
    usable = [
        c
        for c in (categories if isinstance(categories, list) else [])
        if isinstance(c, dict) and _is_int(c.get("id")) and isinstance(c.get("name"), str)
    ]
    try:
        a_ids, b_ids = resolve_split(
            split, usable, split_root(split, ann_file, root), ann_file=ann_file
        )
    except (ValueError, FileNotFoundError) as e:
        report.problem("split", f"{e} (no segmentation requirement was checked)")
        return check_coco_data(data, ann_file, image_dir=image_dir, mask_cat_ids=(), report=report)
    mask_ids = mask_category_ids(a_ids, [*a_ids, *b_ids], masks)
    report.rules = (
        f"Split {_split_name(split)}: {len(a_ids)} categories in A, {len(b_ids)} in B; masks={masks!r}: "
        f"a segmentation is required on non-crowd annotations of {len(mask_ids)} categories"
        + (" (set A)" if masks == "A" and b_ids else "")
    )
    return check_coco_data(
        data, ann_file, image_dir=image_dir, mask_cat_ids=mask_ids, report=report
    )


def check_coco_data(
    data: dict[str, Any],
    ann_file: str | Path,
    *,
    image_dir: str | Path | None = None,
    mask_cat_ids: Collection[int] | None = None,
    report: ValidationReport | None = None,
) -> ValidationReport:
    """Apply every rule to a COCO annotation dict read from ``ann_file``; the loader and the checker
    both call this.

    Args:
        data: the parsed JSON (a dict).
        ann_file: its path, named in every message.
        image_dir: also check that each image file exists, is readable and has the declared size.
        mask_cat_ids: categories whose non-crowd, non-empty annotations must carry a segmentation
            (see :func:`needs_segmentation`); ``None`` means every category.
        report: a report to add to (default: a new one).
    """
    ann_file = Path(ann_file)
    if report is None:
        report = ValidationReport(str(ann_file), str(image_dir) if image_dir is not None else None)
    counts = _count_keys()
    lists = {}
    for key in ("images", "annotations", "categories"):
        value = data.get(key)
        if not isinstance(value, list):
            found = "missing" if key not in data else type(value).__name__
            report.problem("file", f"{ann_file}: field '{key}' is {found}; expected a list")
            value = []
        lists[key] = value
    if image_dir is not None and not Path(image_dir).is_dir():
        report.problem("file", f"{image_dir}: image folder not found")
        image_dir = None
    # Categories.
    cat_ids: set[Any] = set()
    names: Counter = Counter()
    for i, cat in enumerate(lists["categories"]):
        if not isinstance(cat, dict):
            report.problem("category", f"{ann_file}: categories[{i}] is not an object")
            continue
        cid = cat.get("id")
        if not _is_int(cid):
            report.problem(
                "category",
                f"{ann_file}: categories[{i}] field 'id' is {cid!r}; expected an integer",
            )
        elif cid in cat_ids:
            report.problem("category", f"{ann_file}: category id {cid} is duplicated")
        else:
            cat_ids.add(cid)
        if not isinstance(cat.get("name"), str):
            report.problem(
                "category",
                f"{ann_file}: category id {cid} field 'name' is {cat.get('name')!r}; expected a string",
            )
        else:
            names[cat["name"]] += 1
    for name, n in names.items():
        if n > 1:
            report.problem(
                "category", f"{ann_file}: category name {name!r} is used by {n} categories"
            )
    counts["categories"] = len(lists["categories"])
    cat_names = {c.get("id"): c.get("name") for c in lists["categories"] if isinstance(c, dict)}
    mask_ids = set(cat_ids) if mask_cat_ids is None else set(mask_cat_ids)
    counts["mask_categories"] = len(mask_ids & cat_ids)
    mask_rule = (
        "every category"
        if mask_ids >= cat_ids
        else f"{len(mask_ids & cat_ids)} of {len(cat_ids)} categories"
    )

    # Images.
    images: dict[Any, tuple[int, int] | None] = {}
    for i, img in enumerate(lists["images"]):
        if not isinstance(img, dict):
            report.problem("image", f"{ann_file}: images[{i}] is not an object")
            continue
        iid = img.get("id")
        if not _is_int(iid):
            report.problem(
                "image", f"{ann_file}: images[{i}] field 'id' is {iid!r}; expected an integer"
            )
            continue
        if iid in images:
            report.problem("image", f"{ann_file}: image id {iid} is duplicated")
            continue
        w, h = img.get("width"), img.get("height")
        size = None
        if not (_is_int(w) and _is_int(h) and w > 0 and h > 0):
            report.problem(
                "image",
                f"{ann_file}: image id {iid} fields 'width'/'height' are {w!r}/{h!r}; expected positive integers",
            )
        else:
            size = (h, w)
        images[iid] = size
        fname = img.get("file_name")
        if not isinstance(fname, str) or not fname:
            report.problem(
                "image",
                f"{ann_file}: image id {iid} field 'file_name' is {fname!r}; expected a file name",
            )
            continue
        if image_dir is None:
            continue
        path = Path(image_dir) / fname
        if not path.is_file():
            counts["missing_images"] += 1
            report.problem("image file", f"{path}: image file not found (image id {iid})")
            continue
        try:
            with Image.open(path) as im:
                actual = im.size  # (width, height), header only
        except (UnidentifiedImageError, OSError) as e:
            counts["unreadable_images"] += 1
            report.problem("image file", f"{path}: not a readable image (image id {iid}): {e}")
            continue
        if size is not None and actual != (w, h):
            report.problem(
                "image file",
                f"{path}: image id {iid} is {actual[0]}x{actual[1]} pixels; the annotation file says {w}x{h}",
            )
    counts["images"] = len(images)

    # Annotations.
    ann_ids: set[Any] = set()
    images_with_anns: set[Any] = set()
    for i, ann in enumerate(lists["annotations"]):
        if not isinstance(ann, dict):
            report.problem("annotation", f"{ann_file}: annotations[{i}] is not an object")
            continue
        aid = ann.get("id")
        label = (
            f"{ann_file}: annotation id {aid}"
            if aid is not None
            else f"{ann_file}: annotations[{i}]"
        )
        if not _is_int(aid):
            report.problem("annotation", f"{label}: field 'id' is {aid!r}; expected an integer")
        elif aid in ann_ids:
            report.problem("annotation", f"{label}: id is duplicated")
        else:
            ann_ids.add(aid)
        missing = [f for f in ("image_id", "category_id", "bbox") if f not in ann]
        for f in missing:
            report.problem("missing field", f"{label}: missing required field '{f}'")
        iid = ann.get("image_id")
        iid_key = iid if _is_int(iid) else None  # lists or dicts are no ids (nor hashable)
        if "image_id" in ann:
            if iid_key not in images:
                report.problem(
                    "annotation", f"{label}: image_id={iid!r} is not an image id in 'images'"
                )
            else:
                images_with_anns.add(iid_key)
        cid = ann.get("category_id")
        cid_key = cid if _is_int(cid) else None
        if "category_id" in ann and cid_key not in cat_ids:
            report.problem(
                "annotation", f"{label}: category_id={cid!r} is not a category id in 'categories'"
            )
        if "segmentation" not in ann:
            counts["without_segmentation"] += 1
            cname = cat_names.get(cid_key, cid)
            if needs_segmentation(ann, mask_ids):
                report.problem(
                    "missing field",
                    f"{label}: missing required field 'segmentation' (category {cname!r} is in "
                    f"the mask set: {mask_rule}; a box-only class belongs in set B)",
                )
            elif ann.get("iscrowd", 0) == 1 and cid_key in mask_ids:
                report.warnings.append(
                    f"{label}: crowd region of category {cname!r} has no 'segmentation' (COCOeval "
                    "needs it to ignore detections there when scoring masks)"
                )
        crowd = ann.get("iscrowd", 0)
        if crowd not in (0, 1):
            report.problem("annotation", f"{label}: field 'iscrowd' is {crowd!r}; expected 0 or 1")
        elif crowd == 1:
            counts["crowd"] += 1
        if "bbox" in ann:
            bbox = ann["bbox"]
            if not (isinstance(bbox, list) and len(bbox) == 4 and all(_is_number(v) for v in bbox)):
                report.problem(
                    "bbox",
                    f"{label}: field 'bbox' is {bbox!r}; expected [x, y, width, height] numbers",
                )
            elif bbox[2] < 0 or bbox[3] < 0:
                report.problem(
                    "bbox", f"{label}: field 'bbox' has negative width/height {bbox}; expected >= 0"
                )
            else:
                if bbox[2] == 0 or bbox[3] == 0:
                    counts["zero_size_boxes"] += 1
                    report.warnings.append(f"{label}: zero-size bbox {bbox} (the loader drops it)")
                size = images.get(iid_key)
                if size is not None and (
                    bbox[0] < -1
                    or bbox[1] < -1
                    or bbox[0] + bbox[2] > size[1] + 1
                    or bbox[1] + bbox[3] > size[0] + 1
                ):
                    report.warnings.append(
                        f"{label}: bbox {bbox} extends past the {size[1]}x{size[0]} image (the loader clips it)"
                    )
        if "segmentation" in ann:
            why = _check_segmentation(ann["segmentation"], images.get(iid_key))
            if why:
                report.problem("segmentation", f"{label}: field 'segmentation' {why}")
        if "area" in ann and not _is_number(ann["area"]):
            report.problem(
                "annotation", f"{label}: field 'area' is {ann['area']!r}; expected a number"
            )
    counts["annotations"] = len(lists["annotations"])
    counts["images_without_annotations"] = len(set(images) - images_with_anns)
    return _finish(report, counts)
