"""The rules a COCO annotation file must follow: one set, for the loader and ``mxr data check``.

The loader (:class:`mxr.data.coco.CocoInstances`) raises the first problem, :func:`validate_dataset`
reports them all: with the same ``split`` and ``masks``, the check passes exactly when loading does.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Collection, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image, UnidentifiedImageError

from mxr.config import is_int, is_number
from mxr.data.splits import describe_random_split, random_split_text, resolve_split, split_root
from mxr.errors import MissingFileError, UserInputError
from mxr.files import read_json_file

MASK_SETS = ("A", "all")
#: The counts of every report, in the order they are printed.
COUNT_KEYS = (
    "images annotations categories crowd images_without_annotations zero_size_boxes "
    "missing_images unreadable_images mask_categories without_segmentation"
).split()


@dataclass
class ValidationReport:
    """What :func:`check_coco_data` found. ``problems`` make the loader refuse the file;
    ``warnings`` (zero-size boxes it drops, boxes past the image edge it clips, crowd regions of
    mask classes without a mask) do not; ``counts`` holds :data:`COUNT_KEYS`, ``problems``,
    ``warnings`` and ``problem:<kind>``; ``rules`` says which annotations need a segmentation."""

    ann_file: str
    image_dir: str | None
    problems: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)
    kinds: Counter = field(default_factory=Counter)
    rules: str = ""
    a_cat_ids: tuple[int, ...] = ()
    b_cat_ids: tuple[int, ...] = ()
    first_error: type[Exception] = field(default=UserInputError, repr=False)

    @property
    def ok(self) -> bool:
        """True when there is no problem (warnings allowed)."""
        return not self.problems

    def problem(self, kind: str, message: str, error: type[Exception] = UserInputError) -> None:
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
        where = f" with images in {self.image_dir}" if self.image_dir else ""
        lines = [f"Checked {self.ann_file}{where}"] + ([self.rules] if self.rules else [])
        for title, items in (("problem", self.problems), ("warning", self.warnings)):
            if items:
                lines += [f"{len(items)} {title}(s):"] + [f"  - {item}" for item in items]
        counts = [f"{k}={v}" for k, v in self.counts.items() if not k.startswith("problem:")]
        kinds = [f"{k[8:]}={v}" for k, v in self.counts.items() if k.startswith("problem:")]
        lines.append("Counts: " + ", ".join(counts))
        lines += ["Problems by kind: " + ", ".join(kinds)] if kinds else []
        lines.append("OK: no problems found." if self.ok else "NOT OK: fix the problems above.")
        return "\n".join(lines)

    __str__ = format


def read_coco_json(path: str | Path) -> dict[str, Any]:
    """The annotation file as a dict; FileNotFoundError if absent, ValueError if no JSON object."""
    return read_json_file(path, "a COCO annotation file (a JSON object)", "annotation file")


def segmentation_problem(seg: Any, size: tuple[int, int] | None) -> str | None:
    """What is wrong with ``seg`` on an image of ``size`` ``(height, width)`` or ``None``, else
    ``None``: it must be polygons (flat lists of >= 3 (x, y) pairs) or an RLE covering the image."""
    if isinstance(seg, list):
        if not seg:
            return "is an empty list; expected polygons [[x1, y1, x2, y2, ...], ...]"
        for poly in seg:
            if not isinstance(poly, list) or len(poly) < 6 or len(poly) % 2:
                return "has a polygon that is not a flat list of >= 3 (x, y) pairs"
            # Fast path (JSON numbers are int or float), then the exact rule.
            if not set(map(type, poly)) <= {int, float} and not all(map(is_number, poly)):
                return "has a polygon with non-numeric coordinates"
        return None
    if not isinstance(seg, dict):
        return f"is {type(seg).__name__}; expected polygons (list) or RLE (dict)"
    if "counts" not in seg or "size" not in seg:
        return (
            "is a dict without 'counts' and 'size'; expected an RLE {'size': [h, w], 'counts': ...}"
        )
    s, counts = seg["size"], seg["counts"]
    if not (isinstance(s, list) and len(s) == 2 and all(map(is_int, s))):
        return f"has RLE size {s!r}; expected [height, width]"
    if size is not None and tuple(s) != size:
        return f"has RLE size {s} but the image is [{size[0]}, {size[1]}] (height, width)"
    if isinstance(counts, str):
        return None if counts else "has empty RLE counts; expected a compressed RLE string"
    if not isinstance(counts, list):
        return "has RLE counts that are neither a string nor a list"
    if not (all(is_int(c) and c >= 0 for c in counts) and sum(counts) == s[0] * s[1]):
        return (
            "has RLE counts that are not run lengths of the image; expected non-negative "
            f"integers summing to {s[0]} x {s[1]} = {s[0] * s[1]}"
        )
    return None


def needs_segmentation(ann: dict[str, Any], mask_cat_ids: Collection[int]) -> bool:
    """Whether the loader decodes the mask of ``ann``: no crowd, a box of positive size, a category
    in ``mask_cat_ids`` (the mask set)."""
    cid = ann.get("category_id")
    if ann.get("iscrowd", 0) or not is_int(cid) or cid not in mask_cat_ids:
        return False
    box = ann.get("bbox")
    valid = isinstance(box, list) and len(box) == 4 and all(map(is_number, box))
    return not (valid and (box[2] <= 0 or box[3] <= 0))


def validate_dataset(
    ann_file: str | Path,
    image_dir: str | Path | None = None,
    *,
    split: Any = None,
    masks: str = "A",
    root: str | Path | None = None,
) -> ValidationReport:
    """Check ``ann_file`` (and the images in ``image_dir`` unless ``None``) by the loader's rules,
    ``split``, ``masks``, ``root`` as :class:`mxr.data.coco.CocoInstances` takes them. Never raises."""
    try:
        data = read_coco_json(ann_file)
    except (FileNotFoundError, ValueError) as e:
        report = ValidationReport(str(ann_file), None if image_dir is None else str(image_dir))
        report.problem(
            "file", str(e), MissingFileError if isinstance(e, OSError) else UserInputError
        )
        return _Checker(Path(ann_file), report).finish(0, 0)  # every count 0
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
    """Apply every rule to ``data``, the parsed ``ann_file``; ``image_dir`` also checks each image
    exists, opens and has the declared size; ``split`` and ``masks`` set the mask set."""
    ann_file = Path(ann_file)
    report = ValidationReport(str(ann_file), None if image_dir is None else str(image_dir))
    check, lists = _Checker(ann_file, report), {}
    for key in ("images", "annotations", "categories"):  # checked as empty lists otherwise
        lists[key] = data.get(key)
        if not isinstance(lists[key], list):
            found = type(lists[key]).__name__ if key in data else "missing"
            check.bad("file", f"field '{key}' is {found}; expected a list")
            lists[key] = []
    if image_dir is not None and not Path(image_dir).is_dir():
        report.problem("file", f"{image_dir}: image folder not found")
        image_dir = None
    check.categories(lists["categories"])
    check.split(split, masks, root)
    check.images(lists["images"], image_dir)
    for i, ann in check.objects(lists["annotations"], "annotations", "annotation"):
        check.annotation(i, ann)
    return check.finish(len(lists["annotations"]), len(lists["categories"]))


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
        self.report.problem(kind, f"{self.file}: {what}")

    def wrong(self, kind: str, at: str, key: str, value: Any, expected: str) -> None:
        self.bad(kind, f"{at} field '{key}' is {value!r}; expected {expected}")

    def warn(self, what: str) -> None:
        self.report.warnings.append(f"{self.file}: {what}")

    def objects(self, items: list, key: str, kind: str) -> Iterator[tuple[int, dict]]:
        """``(index, item)`` of each object of the list ``key``; any other item is a problem."""
        for i, item in enumerate(items):
            if isinstance(item, dict):
                yield i, item
            else:
                self.bad(kind, f"{key}[{i}] is not an object")

    def categories(self, categories: list) -> None:
        """Each category has a unique integer ``id`` and a unique string ``name``."""
        names: Counter = Counter()
        for i, cat in self.objects(categories, "categories", "category"):
            cid, name = cat.get("id"), cat.get("name")
            if not is_int(cid):
                self.wrong("category", f"categories[{i}]", "id", cid, "an integer")
            elif cid in self.cat_names:
                self.bad("category", f"category id {cid} is duplicated")
            else:
                self.cat_names[cid] = name
            if isinstance(name, str):
                names[name] += 1
            else:
                self.wrong("category", f"category id {cid}", "name", name, "a string")
        for name, n in names.items():
            if n > 1:
                self.bad("category", f"category name {name!r} is used by {n} categories")

    def split(self, split: Any, masks: str, root: str | Path | None) -> None:
        """Resolve ``split`` as the loader does; the mask set is A, or every class (``"all"``)."""
        if split is None:
            name = "none (every category in A)"
        elif isinstance(split, str | Path):
            name = repr(str(split))
        elif isinstance(split, list | tuple):
            name = f"a list of {len(split)} categories"
        elif isinstance(split, Mapping):
            name = random_split_text(split)
        else:
            name = repr(split)  # resolve_split below reports what was expected
        unresolved = "not resolved, so no segmentation requirement was checked"
        self.report.rules = f"Split {name}, masks={masks!r}: {unresolved}"
        if masks not in MASK_SETS:
            self.report.problem("split", f"masks={masks!r} is not valid; expected 'A' or 'all'")
            return
        cats = [{"id": i, "name": n} for i, n in self.cat_names.items() if isinstance(n, str)]
        try:
            root = split_root(split, self.file, root)
            a, b = resolve_split(split, cats, root, ann_file=self.file)
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
        if isinstance(split, Mapping):  # a random split: how it was drawn, and what it drew
            lines = [f"Random split: {describe_random_split(split, len(a) + len(b))}"]
            for label, ids in (("A", a), ("B", b)):
                names = ", ".join(self.cat_names[i] for i in ids)
                lines.append(f"Set {label} ({len(ids)}): {names}")
            self.report.rules = "\n".join([self.report.rules, *lines])

    def images(self, images: list, image_dir: str | Path | None) -> None:
        """Each image has a unique integer ``id``, positive integer sizes and a ``file_name``."""
        for i, img in self.objects(images, "images", "image"):
            iid, w, h, name = (img.get(k) for k in ("id", "width", "height", "file_name"))
            if not is_int(iid):
                self.wrong("image", f"images[{i}]", "id", iid, "an integer")
                continue
            if iid in self.sizes:
                self.bad("image", f"image id {iid} is duplicated")
                continue
            self.sizes[iid] = (h, w) if is_int(w) and is_int(h) and w > 0 and h > 0 else None
            if self.sizes[iid] is None:
                what = f"fields 'width'/'height' are {w!r}/{h!r}; expected positive integers"
                self.bad("image", f"image id {iid} {what}")
            if not isinstance(name, str) or not name:
                self.wrong("image", f"image id {iid}", "file_name", name, "a file name")
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

    def annotation(self, i: int, ann: dict[str, Any]) -> None:
        """A unique ``id``, an image, a category and a ``bbox``; valid other fields."""
        aid = ann.get("id")
        at = f"annotation id {aid}" if aid is not None else f"annotations[{i}]"
        if not is_int(aid):
            self.wrong("annotation", f"{at}:", "id", aid, "an integer")
        elif aid in self.ann_ids:
            self.bad("annotation", f"{at}: id is duplicated")
        else:
            self.ann_ids.add(aid)
        for key in ("image_id", "category_id", "bbox"):
            if key not in ann:
                self.bad("missing field", f"{at}: missing required field '{key}'")
        iid = ann["image_id"] if is_int(ann.get("image_id")) else None  # lists, dicts: no ids
        cid = ann["category_id"] if is_int(ann.get("category_id")) else None
        if "image_id" in ann and iid not in self.sizes:
            what = f"image_id={ann['image_id']!r} is not an image id in 'images'"
            self.bad("annotation", f"{at}: {what}")
        self.annotated.add(iid)  # what it points at (None, or an unknown id, changes no count)
        if "category_id" in ann and cid not in self.cat_names:
            what = f"category_id={ann['category_id']!r} is not a category id in 'categories'"
            self.bad("annotation", f"{at}: {what}")
        if "segmentation" not in ann:
            self.no_segmentation(ann, at, cid)
        crowd = ann.get("iscrowd", 0)
        if crowd not in (0, 1):
            self.wrong("annotation", f"{at}:", "iscrowd", crowd, "0 or 1")
        elif crowd == 1:
            self.counts["crowd"] += 1
        if "bbox" in ann:
            self.bbox(ann["bbox"], at, self.sizes.get(iid))
        if "segmentation" in ann:
            why = segmentation_problem(ann["segmentation"], self.sizes.get(iid))
            if why:
                self.bad("segmentation", f"{at}: field 'segmentation' {why}")
        if "area" in ann and not is_number(ann["area"]):
            self.wrong("annotation", f"{at}:", "area", ann["area"], "a number")

    def no_segmentation(self, ann: dict[str, Any], at: str, cid: int | None) -> None:
        """A problem where the loader decodes a mask; a warning on a crowd of a mask class."""
        self.counts["without_segmentation"] += 1
        name = self.cat_names.get(cid, ann.get("category_id"))
        if needs_segmentation(ann, self.mask_ids):
            ids, n = set(self.cat_names), len(self.mask_ids & set(self.cat_names))
            rule = "every category" if self.mask_ids >= ids else f"{n} of {len(ids)} categories"
            why = f"category {name!r} is in the mask set: {rule}; a box-only class belongs in set B"
            self.bad("missing field", f"{at}: missing required field 'segmentation' ({why})")
        elif ann.get("iscrowd", 0) == 1 and cid in self.mask_ids:
            self.warn(
                f"{at}: crowd region of category {name!r} has no 'segmentation' "
                "(COCOeval needs it to ignore detections there when scoring masks)"
            )

    def bbox(self, bbox: Any, at: str, size: tuple[int, int] | None) -> None:
        """``[x, y, width, height]`` numbers, sizes >= 0; zero size, past the image edge: warnings."""
        if not (isinstance(bbox, list) and len(bbox) == 4 and all(map(is_number, bbox))):
            self.wrong("bbox", f"{at}:", "bbox", bbox, "[x, y, width, height] numbers")
            return
        x, y, w, h = bbox
        if w < 0 or h < 0:
            self.bad("bbox", f"{at}: field 'bbox' has negative width/height {bbox}; expected >= 0")
            return
        if w == 0 or h == 0:
            self.counts["zero_size_boxes"] += 1
            self.warn(f"{at}: zero-size bbox {bbox} (the loader drops it)")
        if size is not None and (x < -1 or y < -1 or x + w > size[1] + 1 or y + h > size[0] + 1):
            where = f"the {size[1]}x{size[0]} image"
            self.warn(f"{at}: bbox {bbox} extends past {where} (the loader clips it)")

    def finish(self, n_annotations: int, n_categories: int) -> ValidationReport:
        """The report, with its counts."""
        c, report = self.counts, self.report
        c["images"] = len(self.sizes)
        c["annotations"], c["categories"] = n_annotations, n_categories
        c["mask_categories"] = len(self.mask_ids & set(self.cat_names))
        c["images_without_annotations"] = len(set(self.sizes) - self.annotated)
        c["problems"], c["warnings"] = len(report.problems), len(report.warnings)
        report.counts = dict(c) | {f"problem:{k}": v for k, v in sorted(report.kinds.items())}
        return report
