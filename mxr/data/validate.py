"""The rules a COCO annotation file must follow: one set, for the loader and ``mxr data check``.

:func:`check_coco_data` applies every rule, recording each finding in a :class:`ValidationReport`.
:class:`mxr.data.CocoInstances` raises its first problem; :func:`validate_dataset` (``python -m mxr
data check``) reports them all. Given the same ``split`` and ``masks``, the check finds no problem
exactly when the loader accepts the file (``--images`` also opens each image, as reading does).
A ``segmentation`` is needed where the loader decodes one (see :func:`needs_segmentation`).
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

from mxr.data.splits import resolve_split, split_root

MASK_SETS = ("A", "all")
#: The counts of every report, in the order they are printed.
COUNT_KEYS = (
    "images annotations categories crowd images_without_annotations zero_size_boxes "
    "missing_images unreadable_images mask_categories without_segmentation"
).split()


@dataclass
class ValidationReport:
    """What :func:`check_coco_data` found in ``ann_file`` (and the images in ``image_dir``).

    ``problems`` (one line each, naming file, id, field and what was expected) make the loader
    refuse the file; ``warnings`` (zero-size boxes, which it drops; boxes past the image edge, which
    it clips; crowd regions of mask classes without a mask) do not. ``counts`` holds the
    :data:`COUNT_KEYS`, ``problems``, ``warnings`` and ``problem:<kind>``; ``rules`` says which
    annotations need a segmentation; ``a_cat_ids``/``b_cat_ids`` are the split, once it resolved.
    """

    ann_file: str
    image_dir: str | None
    problems: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)
    kinds: Counter = field(default_factory=Counter)
    rules: str = ""
    a_cat_ids: tuple[int, ...] = ()
    b_cat_ids: tuple[int, ...] = ()
    first_error: type[Exception] = field(default=ValueError, repr=False)

    @property
    def ok(self) -> bool:
        """True when there is no problem (warnings allowed)."""
        return not self.problems

    def problem(self, kind: str, message: str, error: type[Exception] = ValueError) -> None:
        """Record a problem of ``kind`` (a tag, counted); the loader raises ``error`` for it."""
        if not self.problems:
            self.first_error = error
        self.problems.append(message)
        self.kinds[kind] += 1

    def error(self, command: str) -> Exception:
        """The first problem as the loader raises it, pointing at ``command`` for the others."""
        more = len(self.problems) - 1
        hint = f" (and {more} more problem(s); `{command}` lists them all)" if more else ""
        return self.first_error(self.problems[0] + hint)

    def format(self) -> str:
        """The report in words: what was required, every problem and warning, then the counts."""
        lines = [f"Checked {self.ann_file}"]
        if self.image_dir:
            lines[0] += f" with images in {self.image_dir}"
        if self.rules:
            lines.append(self.rules)
        for title, items in (("problem", self.problems), ("warning", self.warnings)):
            if items:
                lines += [f"{len(items)} {title}(s):"] + [f"  - {item}" for item in items]
        counts = {k: v for k, v in self.counts.items() if not k.startswith("problem:")}
        lines.append("Counts: " + ", ".join(f"{k}={v}" for k, v in counts.items()))
        kinds = {k[8:]: v for k, v in self.counts.items() if k.startswith("problem:")}
        if kinds:
            lines.append("Problems by kind: " + ", ".join(f"{k}={v}" for k, v in kinds.items()))
        lines.append("OK: no problems found." if self.ok else "NOT OK: fix the problems above.")
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.format()


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v: Any) -> bool:
    return isinstance(v, Real) and not isinstance(v, bool)


def _int_or_none(v: Any) -> int | None:
    return v if _is_int(v) else None  # lists or dicts are no ids (nor hashable)


_JSON_NUMBERS = {int, float}


def read_coco_json(path: str | Path) -> dict[str, Any]:
    """The annotation file as a dict; :func:`check_coco_data` checks its fields.

    Raises:
        FileNotFoundError: no such file.
        ValueError: not valid JSON, or not a JSON object.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: annotation file not found")
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{path}: malformed JSON ({e}); expected a COCO annotation file") from e
    if not isinstance(data, dict):
        raise ValueError(f"{path}: top level is {type(data).__name__}; expected a JSON object")
    return data


def segmentation_problem(seg: Any, size: tuple[int, int] | None) -> str | None:
    """What is wrong with ``seg`` as the segmentation of an image of ``size`` (height, width, or
    ``None``), else ``None``. It must be a list of polygons, each a flat list of >= 3 (x, y) pairs,
    or an RLE ``{"size": [h, w], "counts": str | run lengths covering the image}``."""
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
    if not isinstance(seg, dict):
        return f"is {type(seg).__name__}; expected polygons (list) or RLE (dict)"
    if "counts" not in seg or "size" not in seg:
        return (
            "is a dict without 'counts' and 'size'; expected an RLE {'size': [h, w], 'counts': ...}"
        )
    s, counts = seg["size"], seg["counts"]
    if not (isinstance(s, list) and len(s) == 2 and all(map(_is_int, s))):
        return f"has RLE size {s!r}; expected [height, width]"
    if size is not None and tuple(s) != size:
        return f"has RLE size {s} but the image is [{size[0]}, {size[1]}] (height, width)"
    if isinstance(counts, str):
        return None if counts else "has empty RLE counts; expected a compressed RLE string"
    if not isinstance(counts, list):
        return "has RLE counts that are neither a string nor a list"
    if not (all(_is_int(c) and c >= 0 for c in counts) and sum(counts) == s[0] * s[1]):
        return (
            "has RLE counts that are not run lengths of the image; expected non-negative "
            f"integers summing to {s[0]} x {s[1]} = {s[0] * s[1]}"
        )
    return None


def needs_segmentation(ann: dict[str, Any], mask_cat_ids: Collection[int]) -> bool:
    """Whether the loader decodes the mask of ``ann``: it is not a crowd region, its box has a
    positive width and height, and its category is in ``mask_cat_ids`` (the mask set)."""
    cid = ann.get("category_id")
    if ann.get("iscrowd", 0) or not _is_int(cid) or cid not in mask_cat_ids:
        return False
    box = ann.get("bbox")
    valid = isinstance(box, list) and len(box) == 4 and all(map(_is_number, box))
    return not (valid and (box[2] <= 0 or box[3] <= 0))


def _split_name(split: Any) -> str:
    if split is None:
        return "none (every category in A)"
    if isinstance(split, str | Path):
        return repr(str(split))
    return f"a list of {len(split)} categories"


def _finish(report: ValidationReport, counts: Counter | None = None) -> ValidationReport:
    counts = Counter(dict.fromkeys(COUNT_KEYS, 0)) if counts is None else counts
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
    """Check the COCO annotation file ``ann_file`` (and the images in ``image_dir`` unless ``None``)
    by the loader's rules, with ``split``, ``masks`` and ``root`` as :class:`mxr.data.CocoInstances`
    takes them. Never raises on bad data: every finding goes into the report."""
    try:
        data = read_coco_json(ann_file)
    except (FileNotFoundError, ValueError) as e:
        report = ValidationReport(str(ann_file), None if image_dir is None else str(image_dir))
        report.problem("file", str(e), type(e))
        return _finish(report)
    return check_coco_data(data, ann_file, image_dir=image_dir, split=split, masks=masks, root=root)


def check_coco_data(
    data: dict[str, Any],
    ann_file: str | Path,
    *,
    image_dir: str | Path | None = None,
    split: Any = None,
    masks: str = "A",
    root: str | Path | None = None,
) -> ValidationReport:
    """Apply every rule to ``data``, the parsed annotation file ``ann_file`` (named in messages);
    ``image_dir`` also checks that each image exists, opens and has the declared size. ``split``,
    ``masks`` and ``root``, as the loader takes them, decide which annotations need a segmentation.
    """
    ann_file = Path(ann_file)
    report = ValidationReport(str(ann_file), None if image_dir is None else str(image_dir))
    check = _Checker(ann_file, report)
    lists = check.lists(data)
    if image_dir is not None and not Path(image_dir).is_dir():
        report.problem("file", f"{image_dir}: image folder not found")
        image_dir = None
    check.categories(lists["categories"])
    check.split(split, masks, root)
    check.images(lists["images"], image_dir)
    for i, ann in enumerate(lists["annotations"]):
        check.annotation(i, ann)
    return check.finish(lists)


class _Checker:
    """One pass of the rules over a parsed file; each method checks one part, into ``report``."""

    def __init__(self, ann_file: Path, report: ValidationReport) -> None:
        self.file, self.report = ann_file, report
        self.counts = Counter(dict.fromkeys(COUNT_KEYS, 0))
        self.cat_names: dict[int, Any] = {}  # category id -> name
        self.sizes: dict[int, tuple[int, int] | None] = {}  # image id -> (height, width)
        self.mask_ids: set[int] = set()  # categories whose annotations need a segmentation
        self.ann_ids: set[int] = set()
        self.annotated: set[int] = set()  # images with an annotation

    def bad(self, kind: str, what: str) -> None:
        """Record the problem ``what`` of the annotation file."""
        self.report.problem(kind, f"{self.file}: {what}")

    def lists(self, data: dict[str, Any]) -> dict[str, list]:
        """``images``, ``annotations`` and ``categories`` are lists (checked as empty otherwise)."""
        lists = {}
        for key in ("images", "annotations", "categories"):
            lists[key] = data.get(key)
            if not isinstance(lists[key], list):
                found = type(lists[key]).__name__ if key in data else "missing"
                self.bad("file", f"field '{key}' is {found}; expected a list")
                lists[key] = []
        return lists

    def categories(self, categories: list) -> None:
        """Each category is an object with a unique integer ``id`` and a unique string ``name``."""
        names: Counter = Counter()
        for i, cat in enumerate(categories):
            if not isinstance(cat, dict):
                self.bad("category", f"categories[{i}] is not an object")
                continue
            cid, name = cat.get("id"), cat.get("name")
            if not _is_int(cid):
                self.bad("category", f"categories[{i}] field 'id' is {cid!r}; expected an integer")
            elif cid in self.cat_names:
                self.bad("category", f"category id {cid} is duplicated")
            else:
                self.cat_names[cid] = name
            if isinstance(name, str):
                names[name] += 1
            else:
                self.bad(
                    "category", f"category id {cid} field 'name' is {name!r}; expected a string"
                )
        for name, n in names.items():
            if n > 1:
                self.bad("category", f"category name {name!r} is used by {n} categories")

    def split(self, split: Any, masks: str, root: str | Path | None) -> None:
        """Resolve ``split`` as the loader does; the mask set is set A (``masks="A"``) or every
        category (``masks="all"``, the oracle)."""
        name = _split_name(split)
        unresolved = "not resolved, so no segmentation requirement was checked"
        self.report.rules = f"Split {name}, masks={masks!r}: {unresolved}"
        if masks not in MASK_SETS:
            self.report.problem("split", f"masks={masks!r} is not valid; expected 'A' or 'all'")
            return
        cats = [{"id": i, "name": n} for i, n in self.cat_names.items() if isinstance(n, str)]
        try:
            a, b = resolve_split(
                split, cats, split_root(split, self.file, root), ann_file=self.file
            )
        except (ValueError, FileNotFoundError) as e:
            self.report.problem("split", str(e), type(e))
            return
        self.report.a_cat_ids, self.report.b_cat_ids = a, b
        self.mask_ids = set(a if masks == "A" else a + b)
        self.report.rules = (
            f"Split {name}: {len(a)} categories in A, {len(b)} in B; masks={masks!r}: a "
            f"segmentation is required on non-crowd annotations of {len(self.mask_ids)} categories"
            + (" (set A)" if masks == "A" and b else "")
        )

    def images(self, images: list, image_dir: str | Path | None) -> None:
        """Each image is an object with a unique integer ``id``, positive integer ``width`` and
        ``height`` and a ``file_name`` (with ``image_dir``: of a readable image of that size)."""
        for i, img in enumerate(images):
            if not isinstance(img, dict):
                self.bad("image", f"images[{i}] is not an object")
                continue
            iid, w, h, name = (img.get(k) for k in ("id", "width", "height", "file_name"))
            if not _is_int(iid):
                self.bad("image", f"images[{i}] field 'id' is {iid!r}; expected an integer")
                continue
            if iid in self.sizes:
                self.bad("image", f"image id {iid} is duplicated")
                continue
            self.sizes[iid] = (h, w) if _is_int(w) and _is_int(h) and w > 0 and h > 0 else None
            if self.sizes[iid] is None:
                what = f"fields 'width'/'height' are {w!r}/{h!r}; expected positive integers"
                self.bad("image", f"image id {iid} {what}")
            if not isinstance(name, str) or not name:
                self.bad(
                    "image", f"image id {iid} field 'file_name' is {name!r}; expected a file name"
                )
            elif image_dir is not None:
                self.image_file(Path(image_dir) / name, iid)

    def image_file(self, path: Path, iid: int) -> None:
        """The image file exists, opens, and has the size the annotation file declares."""
        if not path.is_file():
            self.counts["missing_images"] += 1
            self.report.problem("image file", f"{path}: image file not found (image id {iid})")
            return
        try:
            with Image.open(path) as im:
                width, height = im.size  # the header only
        except (UnidentifiedImageError, OSError) as e:
            self.counts["unreadable_images"] += 1
            self.report.problem("image file", f"{path}: not a readable image (image id {iid}): {e}")
            return
        size = self.sizes[iid]
        if size is not None and (height, width) != size:
            what = f"is {width}x{height} pixels; the annotation file says {size[1]}x{size[0]}"
            self.report.problem("image file", f"{path}: image id {iid} {what}")

    def annotation(self, i: int, ann: Any) -> None:
        """One annotation: a unique integer ``id``; ``image_id``, ``category_id`` and ``bbox``,
        pointing at an image and a category; the values of ``iscrowd``, ``segmentation``, ``area``.
        """
        if not isinstance(ann, dict):
            self.bad("annotation", f"annotations[{i}] is not an object")
            return
        aid = ann.get("id")
        at = f"annotation id {aid}" if aid is not None else f"annotations[{i}]"
        if not _is_int(aid):
            self.bad("annotation", f"{at}: field 'id' is {aid!r}; expected an integer")
        elif aid in self.ann_ids:
            self.bad("annotation", f"{at}: id is duplicated")
        else:
            self.ann_ids.add(aid)
        for key in ("image_id", "category_id", "bbox"):
            if key not in ann:
                self.bad("missing field", f"{at}: missing required field '{key}'")
        iid, cid = _int_or_none(ann.get("image_id")), _int_or_none(ann.get("category_id"))
        if "image_id" in ann and iid not in self.sizes:
            self.bad(
                "annotation", f"{at}: image_id={ann['image_id']!r} is not an image id in 'images'"
            )
        self.annotated.add(iid)  # what it points at (None, or an unknown id, changes no count)
        if "category_id" in ann and cid not in self.cat_names:
            what = f"category_id={ann['category_id']!r} is not a category id in 'categories'"
            self.bad("annotation", f"{at}: {what}")
        if "segmentation" not in ann:
            self.no_segmentation(ann, at, cid)
        crowd = ann.get("iscrowd", 0)
        if crowd not in (0, 1):
            self.bad("annotation", f"{at}: field 'iscrowd' is {crowd!r}; expected 0 or 1")
        elif crowd == 1:
            self.counts["crowd"] += 1
        if "bbox" in ann:
            self.bbox(ann["bbox"], at, self.sizes.get(iid))
        if "segmentation" in ann:
            why = segmentation_problem(ann["segmentation"], self.sizes.get(iid))
            if why:
                self.bad("segmentation", f"{at}: field 'segmentation' {why}")
        if "area" in ann and not _is_number(ann["area"]):
            self.bad("annotation", f"{at}: field 'area' is {ann['area']!r}; expected a number")

    def no_segmentation(self, ann: dict[str, Any], at: str, cid: int | None) -> None:
        """An annotation without a mask: a problem where the loader decodes one (see
        :func:`needs_segmentation`); a warning on a crowd region of a mask class."""
        self.counts["without_segmentation"] += 1
        name = self.cat_names.get(cid, ann.get("category_id"))
        if needs_segmentation(ann, self.mask_ids):
            ids, n = set(self.cat_names), len(self.mask_ids & set(self.cat_names))
            rule = "every category" if self.mask_ids >= ids else f"{n} of {len(ids)} categories"
            why = f"category {name!r} is in the mask set: {rule}; a box-only class belongs in set B"
            self.bad("missing field", f"{at}: missing required field 'segmentation' ({why})")
        elif ann.get("iscrowd", 0) == 1 and cid in self.mask_ids:
            self.report.warnings.append(
                f"{self.file}: {at}: crowd region of category {name!r} has no 'segmentation' "
                "(COCOeval needs it to ignore detections there when scoring masks)"
            )

    def bbox(self, bbox: Any, at: str, size: tuple[int, int] | None) -> None:
        """``bbox`` is ``[x, y, width, height]`` numbers, width and height >= 0; a zero-size box
        (dropped by the loader) and a box past the image edge (clipped) are warnings."""
        if not (isinstance(bbox, list) and len(bbox) == 4 and all(map(_is_number, bbox))):
            self.bad(
                "bbox", f"{at}: field 'bbox' is {bbox!r}; expected [x, y, width, height] numbers"
            )
            return
        x, y, w, h = bbox
        if w < 0 or h < 0:
            self.bad("bbox", f"{at}: field 'bbox' has negative width/height {bbox}; expected >= 0")
            return
        warn = self.report.warnings.append
        if w == 0 or h == 0:
            self.counts["zero_size_boxes"] += 1
            warn(f"{self.file}: {at}: zero-size bbox {bbox} (the loader drops it)")
        if size is not None and (x < -1 or y < -1 or x + w > size[1] + 1 or y + h > size[0] + 1):
            where = f"the {size[1]}x{size[0]} image"
            warn(f"{self.file}: {at}: bbox {bbox} extends past {where} (the loader clips it)")

    def finish(self, lists: dict[str, list]) -> ValidationReport:
        """The report, with its counts."""
        c = self.counts
        c["images"], c["annotations"] = len(self.sizes), len(lists["annotations"])
        c["categories"] = len(lists["categories"])
        c["mask_categories"] = len(self.mask_ids & set(self.cat_names))
        c["images_without_annotations"] = len(set(self.sizes) - self.annotated)
        return _finish(self.report, c)
