"""The Mask^X A/B split of a COCO-format dataset: which categories carry masks in training (set A).

Read by the loader (:class:`mxr.data.CocoInstances`) and by the checks (:mod:`mxr.data.validate`),
so both resolve a ``split`` the same way. Imports nothing from mxr.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

#: COCO category ids of the 20 PASCAL VOC classes (set A of the paper's ``voc`` split).
VOC_CAT_IDS: tuple[int, ...] = (
    1,
    2,
    3,
    4,
    5,
    6,
    7,
    9,
    16,
    17,
    18,
    19,
    20,
    21,
    44,
    62,
    63,
    64,
    67,
    72,
)
#: Their COCO 2017 names, used to check that a file really uses COCO's ids before splitting by them.
VOC_CAT_NAMES: dict[int, str] = {
    1: "person",
    2: "bicycle",
    3: "car",
    4: "motorcycle",
    5: "airplane",
    6: "bus",
    7: "train",
    9: "boat",
    16: "bird",
    17: "cat",
    18: "dog",
    19: "horse",
    20: "sheep",
    21: "cow",
    44: "bottle",
    62: "chair",
    63: "couch",
    64: "potted plant",
    67: "dining table",
    72: "tv",
}


def _read_split_file(path: Path) -> list[Any]:
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


def resolve_split(
    spec: Any,
    categories: list[dict[str, Any]],
    root: str | Path | None = None,
    *,
    ann_file: str | Path | None = None,
) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """Resolve a split spec into ``(a_cat_ids, b_cat_ids)``, both sorted tuples of COCO category ids.

    Args:
        spec: ``None`` (every class is in A); ``"voc"`` (A = the 20 VOC classes) or ``"nonvoc"``
            (the reverse); a path to a JSON file ``{"A": [names or ids], "B": [...]}`` (relative paths
            are tried as given, then under ``root``); or a list/tuple of category names or ids (set A).
            B is always the rest of the categories.
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
    by_name = {str(c["name"]): int(c["id"]) for c in categories}
    id_to_name = {int(c["id"]): str(c["name"]) for c in categories}
    if spec is None:
        return all_ids, ()
    source = "split list"
    b_items = None
    if isinstance(spec, str | Path) and str(spec).lower() in ("voc", "nonvoc"):
        wrong = {
            i: id_to_name[i]
            for i in VOC_CAT_IDS
            if i in id_to_name and id_to_name[i] != VOC_CAT_NAMES[i]
        }
        present = [i for i in VOC_CAT_IDS if i in id_to_name]
        if wrong or not present:
            detail = (
                ", ".join(f"id {i} is {n!r} (COCO: {VOC_CAT_NAMES[i]!r})" for i, n in wrong.items())
                if wrong
                else "none of the VOC ids is present"
            )
            raise ValueError(
                f"split {str(spec)!r} expects COCO category ids{where}, but {detail}; "
                "use a split file or a list of names instead"
            )
        voc = set(VOC_CAT_IDS)
        a = tuple(i for i in all_ids if (i in voc) == (str(spec).lower() == "voc"))
        return a, tuple(i for i in all_ids if i not in a)
    if isinstance(spec, str | Path):
        path = Path(spec)
        candidates = [path] if path.is_absolute() or root is None else [path, Path(root) / path]
        found = next((p for p in candidates if p.is_file()), None)
        if found is None:
            if isinstance(spec, str) and not spec.endswith(".json") and "/" not in spec:
                raise ValueError(
                    f"split={spec!r} is not valid; expected 'voc', 'nonvoc', a path to a split JSON file, "
                    "or a list of category names or ids"
                )
            raise FileNotFoundError(
                f"split file not found: {spec} (tried {', '.join(str(p) for p in candidates)})"
            )
        items, b_items = _read_split_file(found)
        source = f"split file {found}"
    elif isinstance(spec, Sequence):
        items = list(spec)
    else:
        raise ValueError(
            f"split={spec!r} is not valid; expected None, 'voc', 'nonvoc', a path or a list of names/ids"
        )

    def to_ids(values: list[Any]) -> tuple[list[int], list[Any]]:
        ids, unknown = [], []
        for v in values:
            if isinstance(v, bool):
                unknown.append(v)
            elif isinstance(v, int):
                (ids if v in id_to_name else unknown).append(v)
            elif isinstance(v, str) and v in by_name:
                ids.append(by_name[v])
            else:
                unknown.append(v)
        return ids, unknown

    a_ids, unknown = to_ids(items)
    if b_items is not None:
        b_ids, unknown_b = to_ids(list(b_items))
        unknown += unknown_b
    if unknown:
        raise ValueError(
            f"{source} names unknown categor{'y' if len(unknown) == 1 else 'ies'} "
            f"{', '.join(map(repr, unknown))}{where}; known: {', '.join(repr(n) for n in by_name)}"
        )
    if b_items is not None and set(a_ids) & set(b_ids):
        both = sorted(id_to_name[i] for i in set(a_ids) & set(b_ids))
        raise ValueError(f"{source} puts {', '.join(map(repr, both))} in both A and B")
    a = tuple(sorted(set(a_ids)))
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
