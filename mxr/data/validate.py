"""Check a COCO-format dataset and report every problem at once (never raising on bad data).

``python -m mxr data check ANNOTATIONS.json --images IMAGE_DIR`` prints the report; its exit status is
1 when there are problems. Problems make the loader fail; warnings (e.g. zero-size boxes, which the
loader drops and counts) do not.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from numbers import Real
from pathlib import Path
from typing import Any

from PIL import Image, UnidentifiedImageError


@dataclass
class ValidationReport:
    """What :func:`validate_dataset` found.

    Attributes:
        ann_file, image_dir: what was checked.
        problems: one line per problem, naming file / image id / annotation id / field and what was
            expected. Any problem means the dataset will not load cleanly.
        warnings: things the loader tolerates (zero-size boxes, boxes past the image edge).
        counts: ``images``, ``annotations``, ``categories``, ``crowd``, ``images_without_annotations``,
            ``zero_size_boxes``, ``missing_images``, ``unreadable_images``, ``problems``, ``warnings``,
            plus ``problem:<kind>`` counts.
    """

    ann_file: str
    image_dir: str | None
    problems: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)
    kinds: Counter = field(default_factory=Counter)

    @property
    def ok(self) -> bool:
        """True when there is no problem (warnings allowed)."""
        return not self.problems

    def problem(self, kind: str, message: str) -> None:
        """Record a problem of ``kind`` (a short tag counted in ``counts``)."""
        self.problems.append(message)
        self.kinds[kind] += 1

    def format(self) -> str:
        """A human-readable report: every problem and warning, then the counts."""
        lines = [
            f"Checked {self.ann_file}"
            + (f" with images in {self.image_dir}" if self.image_dir else "")
        ]
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


def _check_segmentation(seg: Any, size: tuple[int, int] | None) -> str | None:
    """None if ``seg`` is a valid COCO segmentation, else what is wrong with it."""
    if isinstance(seg, list):
        if not seg:
            return "is an empty list; expected polygons [[x1, y1, x2, y2, ...], ...]"
        for poly in seg:
            if not isinstance(poly, list) or len(poly) < 6 or len(poly) % 2:
                return "has a polygon that is not a flat list of >= 3 (x, y) pairs"
            if not all(_is_number(v) for v in poly):
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


def validate_dataset(ann_file: str | Path, image_dir: str | Path | None) -> ValidationReport:
    """Check a COCO annotation file (and its images, when ``image_dir`` is given).

    Checks: the file exists and is a JSON object with ``images``/``annotations``/``categories`` lists;
    required fields and their types; unique ids; annotations pointing at existing images and categories;
    ``bbox`` as 4 numbers with non-negative size; ``segmentation`` as polygons or RLE whose size matches
    the image; ``iscrowd`` in {0, 1}; image files present, readable and of the declared size.
    Never raises on bad data: every finding goes into the returned report.
    """
    ann_file = Path(ann_file)
    report = ValidationReport(str(ann_file), str(image_dir) if image_dir is not None else None)
    counts = Counter(
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
            )
        }
    )

    def finish() -> ValidationReport:
        counts["problems"] = len(report.problems)
        counts["warnings"] = len(report.warnings)
        report.counts = dict(counts) | {f"problem:{k}": v for k, v in sorted(report.kinds.items())}
        return report

    if not ann_file.is_file():
        report.problem("file", f"{ann_file}: annotation file not found")
        return finish()
    try:
        data = json.loads(ann_file.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        report.problem("file", f"{ann_file}: malformed JSON ({e}); expected a COCO annotation file")
        return finish()
    if not isinstance(data, dict):
        report.problem(
            "file", f"{ann_file}: top level is {type(data).__name__}; expected a JSON object"
        )
        return finish()
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
        missing = [f for f in ("image_id", "category_id", "bbox", "segmentation") if f not in ann]
        for f in missing:
            report.problem("missing field", f"{label}: missing required field '{f}'")
        iid = ann.get("image_id")
        if "image_id" in ann:
            if iid not in images:
                report.problem(
                    "annotation", f"{label}: image_id={iid!r} is not an image id in 'images'"
                )
            else:
                images_with_anns.add(iid)
        cid = ann.get("category_id")
        if "category_id" in ann and cid not in cat_ids:
            report.problem(
                "annotation", f"{label}: category_id={cid!r} is not a category id in 'categories'"
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
                size = images.get(iid)
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
            why = _check_segmentation(ann["segmentation"], images.get(iid))
            if why:
                report.problem("segmentation", f"{label}: field 'segmentation' {why}")
        if "area" in ann and not _is_number(ann["area"]):
            report.problem(
                "annotation", f"{label}: field 'area' is {ann['area']!r}; expected a number"
            )
    counts["annotations"] = len(lists["annotations"])
    counts["images_without_annotations"] = len(set(images) - images_with_anns)
    return finish()
