"""The Mask^X A/B split of a COCO-format dataset: which categories carry masks in training (set A).

Read by the loader (:class:`mxr.data.CocoInstances`) and by the checks (:mod:`mxr.data.validate`),
so both resolve a ``split`` the same way. Imports nothing from mxr.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

# fmt: off
#: The 20 PASCAL VOC classes by COCO 2017 category id and name (set A of the paper's ``voc`` split);
#: the names check that a file really uses COCO's ids before splitting by them.
VOC_CAT_NAMES: dict[int, str] = {
    1: "person", 2: "bicycle", 3: "car", 4: "motorcycle", 5: "airplane", 6: "bus", 7: "train",
    9: "boat", 16: "bird", 17: "cat", 18: "dog", 19: "horse", 20: "sheep", 21: "cow",
    44: "bottle", 62: "chair", 63: "couch", 64: "potted plant", 67: "dining table", 72: "tv",
}
# fmt: on
#: Their COCO category ids.
VOC_CAT_IDS: tuple[int, ...] = tuple(VOC_CAT_NAMES)


def _read_split_file(path: Path) -> tuple[list[Any], list[Any] | None]:
    """Sets ``A`` and ``B`` (``None`` when absent) of a split file ``{"A": [...], "B": [...]}``."""
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(
            f'split file {path}: malformed JSON ({e}); expected {{"A": [names], "B": [names]}}'
        ) from e
    if not isinstance(data, dict) or not isinstance(data.get("A"), list):
        raise ValueError(
            f"split file {path}: expected a JSON object with a list 'A' (and optionally 'B')"
        )
    return data["A"], data.get("B")


def _voc_set_a(spec: str, id_to_name: dict[int, str], where: str) -> tuple[int, ...]:
    """Set A of ``"voc"`` (the VOC ids present) or ``"nonvoc"`` (the others), once the file's names
    show that it uses COCO's category ids."""
    wrong = [i for i in VOC_CAT_IDS if i in id_to_name and id_to_name[i] != VOC_CAT_NAMES[i]]
    if wrong or not any(i in id_to_name for i in VOC_CAT_IDS):
        detail = (
            ", ".join(f"id {i} is {id_to_name[i]!r} (COCO: {VOC_CAT_NAMES[i]!r})" for i in wrong)
            or "none of the VOC ids is present"
        )
        raise ValueError(
            f"split {spec!r} expects COCO category ids{where}, but {detail}; "
            "use a split file or a list of names instead"
        )
    voc = spec.lower() == "voc"
    return tuple(i for i in sorted(id_to_name) if (i in VOC_CAT_NAMES) == voc)


def _find_split_file(spec: str | Path, root: str | Path | None) -> Path:
    """The split file ``spec``, as given or (relative) under ``root``."""
    path = Path(spec)
    candidates = [path] if path.is_absolute() or root is None else [path, Path(root) / path]
    found = next((p for p in candidates if p.is_file()), None)
    if found is not None:
        return found
    if isinstance(spec, str) and not spec.endswith(".json") and "/" not in spec:
        raise ValueError(
            f"split={spec!r} is not valid; expected 'voc', 'nonvoc', a path to a split JSON file, "
            "or a list of category names or ids"
        )
    raise FileNotFoundError(
        f"split file not found: {spec} (tried {', '.join(str(p) for p in candidates)})"
    )


def _named_set_a(
    a_items: list[Any], b_items: list[Any] | None, categories: list[dict], source: str, where: str
) -> tuple[int, ...]:
    """Set A of a split file or list: the ids of the names or ids in ``a_items``, once every item
    of A and B names a category of the file and none is in both."""
    by_name = {str(c["name"]): int(c["id"]) for c in categories}
    ids = set(by_name.values())
    a_ids, b_ids, unknown = [], [], []
    for items, out in ((a_items, a_ids), (list(b_items or []), b_ids)):
        for v in items:
            if isinstance(v, int) and not isinstance(v, bool) and v in ids:
                out.append(v)
            elif isinstance(v, str) and v in by_name:
                out.append(by_name[v])
            else:
                unknown.append(v)
    if unknown:
        raise ValueError(
            f"{source} names unknown categor{'y' if len(unknown) == 1 else 'ies'} "
            f"{', '.join(map(repr, unknown))}{where}; known: {', '.join(map(repr, by_name))}"
        )
    both = set(a_ids) & set(b_ids)
    if both:
        names = sorted(n for n, i in by_name.items() if i in both)
        raise ValueError(f"{source} puts {', '.join(map(repr, names))} in both A and B")
    return tuple(sorted(set(a_ids)))


def resolve_split(
    spec: Any,
    categories: list[dict[str, Any]],
    root: str | Path | None = None,
    *,
    ann_file: str | Path | None = None,
) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """Resolve a split spec into ``(a_cat_ids, b_cat_ids)``: sorted tuples of COCO category ids.

    Args:
        spec: ``None`` (every class is in A); ``"voc"`` (A = the 20 VOC classes) or ``"nonvoc"``
            (the reverse); a path to a JSON file ``{"A": [names or ids], "B": [...]}`` (relative
            paths are tried as given, then under ``root``); or a list/tuple of category names or ids
            (set A). B is always the rest of the categories.
        categories: the ``categories`` list of the annotation file (dicts with ``id`` and ``name``).
        root: folder for relative split paths.
        ann_file: named in error messages.

    Raises:
        ValueError: an unknown category name/id (naming them and the file), a bad spec, or ``voc``/
            ``nonvoc`` on a file whose ids are not COCO's.
        FileNotFoundError: a split path that does not exist.
    """
    where = f" in {ann_file}" if ann_file else ""
    all_ids = tuple(sorted(int(c["id"]) for c in categories))
    if spec is None:
        return all_ids, ()
    if isinstance(spec, str | Path) and str(spec).lower() in ("voc", "nonvoc"):
        a = _voc_set_a(str(spec), {int(c["id"]): str(c["name"]) for c in categories}, where)
    elif isinstance(spec, str | Path):
        found = _find_split_file(spec, root)
        a = _named_set_a(*_read_split_file(found), categories, f"split file {found}", where)
    elif isinstance(spec, Sequence):
        a = _named_set_a(list(spec), None, categories, "split list", where)
    else:
        raise ValueError(
            f"split={spec!r} is not valid; expected None, 'voc', 'nonvoc', a path or a list of "
            "names/ids"
        )
    return a, tuple(i for i in all_ids if i not in set(a))


def split_root(
    split: Any, ann_file: str | Path, root: str | Path | None = None
) -> str | Path | None:
    """The folder a relative split path is read from: as given (the working directory), else under
    ``root``, the annotation file's folder or its parent (the first that holds it)."""
    if isinstance(split, str | Path) and str(split).lower() not in ("voc", "nonvoc"):
        p = Path(split)
        if not p.is_absolute() and not p.is_file():
            ann_dir = Path(ann_file).parent
            for base in ([Path(root)] if root else []) + [ann_dir, ann_dir.parent]:
                if (base / p).is_file():
                    return base
    return root
