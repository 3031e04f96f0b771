"""The Mask^X A/B split of a COCO-format dataset: which categories carry masks in training (set A).

The loader and the checks (:mod:`mxr.data.validate`) both resolve a ``split`` here.

A random split (the paper's Figure 3) is a pure function of the category ids, the number ``n`` of
A classes and a seed, so every rank and every rerun draws the same set A:

- ``{random: n, seed: s}``: the first ``n`` of ``numpy.random.default_rng(s).permutation(C)``,
  as indices into the ``C`` categories sorted by id. For one seed the sets are nested (the A of
  ``n = 20`` lies inside the A of ``n = 30``), so a sweep over ``n`` adds classes to A rather than
  drawing new ones. These are not the paper's splits, whatever the seed.
- ``{random: n, trial: t}``: the paper's own split ``E{t}_A{n}B{80-n}`` of COCO's 80 categories,
  replayed exactly as ``split_coco_dataset_randsplits.py`` (ronghanghu/seg_every_thing) draws it:
  ``np.random.seed(3)``, then for trials 1..5 and, in each, n = 20, 30, 40, 50, 60,
  ``np.random.choice(80, n, replace=False)`` indexing the categories in file order (COCO's is by
  id). numpy's legacy ``RandomState`` stream is frozen, so the draw is the script's, bit for bit.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from mxr.config import (
    PAPER_RANDOM_SPLIT_SIZES,
    PAPER_RANDOM_SPLIT_TRIALS,
    is_int,
    random_split_spec,
)
from mxr.errors import MissingFileError, UserInputError
from mxr.files import read_json_file

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


def _voc_set_a(spec: str, id_to_name: dict[int, str], where: str) -> tuple[int, ...]:
    """Set A of ``"voc"`` (the VOC ids present) or ``"nonvoc"``, once the names show COCO's ids."""
    wrong = [i for i in VOC_CAT_IDS if i in id_to_name and id_to_name[i] != VOC_CAT_NAMES[i]]
    if wrong or not any(i in id_to_name for i in VOC_CAT_IDS):
        shown = (f"id {i} is {id_to_name[i]!r} (COCO: {VOC_CAT_NAMES[i]!r})" for i in wrong)
        detail = ", ".join(shown) or "none of the VOC ids is present"
        raise UserInputError(
            f"split {spec!r} expects COCO category ids{where}, but {detail}; "
            "use a split file or a list of names instead"
        )
    voc = spec.lower() == "voc"
    return tuple(i for i in sorted(id_to_name) if (i in VOC_CAT_NAMES) == voc)


#: The paper's random splits: the seed of ``split_coco_dataset_randsplits.py`` and its class count.
PAPER_RANDOM_SPLIT_SEED = 3
PAPER_RANDOM_SPLIT_CLASSES = 80


def random_split_text(spec: Mapping[str, Any]) -> str:
    """A random split as the config and ``--split`` write it: ``{random: 20, seed: 3}``."""
    return "{" + ", ".join(f"{k}: {v}" for k, v in spec.items()) + "}"


def describe_random_split(spec: Mapping[str, Any], num_classes: int | None = None) -> str:
    """In words: ``20 of 80 classes drawn for A with seed 3`` or ``the paper's COCO split
    E1_A20B60 (trial 1 of 5)``; ``spec`` is a checked one (:func:`random_split_spec`)."""
    n = spec["random"]
    if "trial" in spec:
        t = spec["trial"]
        name = f"E{t}_A{n}B{PAPER_RANDOM_SPLIT_CLASSES - n}"
        return f"the paper's COCO split {name} (trial {t} of {PAPER_RANDOM_SPLIT_TRIALS})"
    of = f" of {num_classes}" if num_classes is not None else ""
    return f"{n}{of} classes drawn for A with seed {spec['seed']}"


def _paper_indices(n: int, trial: int) -> list[int]:
    """The category indices (0..79) of set A in the paper's split of ``n`` classes, ``trial``."""
    rng = np.random.RandomState(PAPER_RANDOM_SPLIT_SEED)  # the script's np.random.seed(3)
    for t in range(1, PAPER_RANDOM_SPLIT_TRIALS + 1):
        for size in PAPER_RANDOM_SPLIT_SIZES:
            inds = rng.choice(PAPER_RANDOM_SPLIT_CLASSES, size, replace=False)
            if (t, size) == (trial, n):
                return [int(i) for i in inds]
    raise AssertionError(f"no paper split {n}/{trial}")  # random_split_spec admits none such


def random_set_a(
    cat_ids: Sequence[int], spec: Mapping[str, Any], where: str = ""
) -> tuple[int, ...]:
    """Set A of the random split ``spec`` over the categories ``cat_ids``, sorted ids; a
    ``ValueError`` naming ``data.split`` when ``spec`` is malformed or does not fit (``n`` must
    leave B a class; a paper split needs 80 categories). ``where`` (`` in <file>``) is named."""
    spec = random_split_spec(spec)
    ids, n = sorted(int(i) for i in cat_ids), spec["random"]
    text = random_split_text(spec)
    if "trial" in spec:
        if len(ids) != PAPER_RANDOM_SPLIT_CLASSES:
            raise UserInputError(
                f"data.split={text} is not valid{where}: the paper's splits index COCO's 80 "
                f"categories, and there are {len(ids)}; expected {{random: n, seed: s}} instead"
            )
        picks = _paper_indices(n, spec["trial"])
    else:
        if n >= len(ids):
            raise UserInputError(
                f"data.split={text} is not valid{where}: random={n} leaves set B empty "
                f"({len(ids)} categories); expected random in 1..{len(ids) - 1}"
            )
        picks = np.random.default_rng(spec["seed"]).permutation(len(ids))[:n]
    return tuple(sorted(ids[int(i)] for i in picks))


def _read_split_file(spec: str | Path, root: str | Path | None) -> tuple[Path, list, list | None]:
    """The split file ``spec`` (as given, or under ``root``) and its sets A and B (or ``None``)."""
    path = Path(spec)
    candidates = [path] if path.is_absolute() or root is None else [path, Path(root) / path]
    found = next((p for p in candidates if p.is_file()), None)
    if found is None and isinstance(spec, str) and not spec.endswith(".json") and "/" not in spec:
        raise UserInputError(
            f"split={spec!r} is not valid; expected 'voc', 'nonvoc', a path to a split JSON file, "
            "or a list of category names or ids"
        )
    if found is None:
        raise MissingFileError(
            f"split file not found: {spec} (tried {', '.join(str(p) for p in candidates)})"
        )
    expected = 'a split file {"A": [names or ids], "B": [...]} (B optional)'
    data = read_json_file(found, expected, "split file")
    if not isinstance(data.get("A"), list):
        raise UserInputError(f"{found}: field 'A' is {data.get('A')!r}; expected {expected}")
    return found, data["A"], data.get("B")


def _named_set_a(
    a_items: list[Any], b_items: list[Any] | None, categories: list[dict], source: str, where: str
) -> tuple[int, ...]:
    """The ids of ``a_items`` (names or ids), once all of A and B are known and none in both."""
    by_name = {str(c["name"]): int(c["id"]) for c in categories}
    ids = set(by_name.values())
    a_ids, b_ids, unknown = [], [], []
    for items, out in ((a_items, a_ids), (list(b_items or []), b_ids)):
        for v in items:
            if is_int(v) and v in ids:
                out.append(v)
            elif isinstance(v, str) and v in by_name:
                out.append(by_name[v])
            else:
                unknown.append(v)
    if unknown:
        raise UserInputError(
            f"{source} names unknown categor{'y' if len(unknown) == 1 else 'ies'} "
            f"{', '.join(map(repr, unknown))}{where}; known: {', '.join(map(repr, by_name))}"
        )
    both = set(a_ids) & set(b_ids)
    if both:
        names = sorted(n for n, i in by_name.items() if i in both)
        raise UserInputError(f"{source} puts {', '.join(map(repr, names))} in both A and B")
    return tuple(sorted(set(a_ids)))


def resolve_split(
    spec: Any,
    categories: list[dict[str, Any]],
    root: str | Path | None = None,
    *,
    ann_file: str | Path | None = None,
) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """``(a_cat_ids, b_cat_ids)``, sorted COCO category ids of ``categories`` (the file's list).

    ``spec`` is ``None`` (every class in A), ``"voc"`` (A = the 20 VOC classes), ``"nonvoc"`` (the
    reverse), a JSON file ``{"A": [names or ids], "B": [...]}`` (relative: as given, then under
    ``root``), a list of names or ids, or a random split ``{"random": n, "seed": s}`` /
    ``{"random": n, "trial": t}`` (:func:`random_set_a`); B is the rest. ``ann_file`` is named in
    errors.
    """
    where = f" in {ann_file}" if ann_file else ""
    all_ids = tuple(sorted(int(c["id"]) for c in categories))
    if spec is None:
        return all_ids, ()
    if isinstance(spec, str | Path) and str(spec).lower() in ("voc", "nonvoc"):
        a = _voc_set_a(str(spec), {int(c["id"]): str(c["name"]) for c in categories}, where)
    elif isinstance(spec, str | Path):
        found, a_items, b_items = _read_split_file(spec, root)
        a = _named_set_a(a_items, b_items, categories, f"split file {found}", where)
    elif isinstance(spec, Mapping):
        a = random_set_a(all_ids, spec, where)
    elif isinstance(spec, Sequence):
        a = _named_set_a(list(spec), None, categories, "split list", where)
    else:
        raise UserInputError(
            f"split={spec!r} is not valid; expected None, 'voc', 'nonvoc', a path or a list of "
            "names/ids, or a random split {random: n, seed: s}"
        )
    return a, tuple(i for i in all_ids if i not in set(a))


def split_root(
    split: Any, ann_file: str | Path, root: str | Path | None = None
) -> str | Path | None:
    """The folder of a relative split path: as given, else the first of ``root``, the annotation
    file's folder and its parent that holds it."""
    if isinstance(split, str | Path) and str(split).lower() not in ("voc", "nonvoc"):
        p = Path(split)
        if not p.is_absolute() and not p.is_file():
            ann_dir = Path(ann_file).parent
            for base in ([Path(root)] if root else []) + [ann_dir, ann_dir.parent]:
                if (base / p).is_file():
                    return base
    return root
