"""Fixed class embeddings for τ (``model.transfer_input="embed"``): read from a local file, by name.

The paper's GloVe row feeds τ one fixed vector per class, learned from text; ``mxr`` never downloads
one. A file is JSON ``{"<category name>": [float, ...], ...}`` (equal lengths) or ``vectors.npy``
``(K, d)`` with ``vectors.names.txt`` beside it (one category name per line, in row order).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from mxr.config import is_number
from mxr.errors import MissingFileError, UserInputError
from mxr.files import read_json_file, write_text_atomic

BACKGROUND = "__background__"


def read_embedding_file(path: str | Path) -> dict[str, list[float]]:
    """``{name: vector}`` from a JSON file or an ``.npy`` + ``.names.txt`` pair; FileNotFoundError
    or ValueError (naming the file) unless it maps names to equal-length lists of numbers."""
    path = Path(path)
    if not path.is_file():
        raise MissingFileError(f"class embedding file not found: {path}")
    if path.suffix == ".npy":
        names_path = path.with_suffix(".names.txt")
        if not names_path.is_file():
            raise MissingFileError(
                f"{path}: names file not found: {names_path} (one category name per line, in row order)"
            )
        array = np.load(path, allow_pickle=False)
        names = [n for n in names_path.read_text().splitlines() if n.strip()]
        if array.ndim != 2 or array.shape[0] != len(names):
            raise UserInputError(
                f"{path}: expected a (K, d) array with one row per name in {names_path.name} "
                f"({len(names)} names); got shape {tuple(array.shape)}"
            )
        table = {n: [float(x) for x in row] for n, row in zip(names, array, strict=True)}
    else:
        table = read_json_file(path, "a JSON object {name: [floats]}", "class embedding file")
    width = None
    for name, vec in table.items():
        if not (isinstance(vec, list) and vec and all(map(is_number, vec))):
            raise UserInputError(f"{path}: class {name!r}: expected a non-empty list of numbers")
        width = width or len(vec)
        if len(vec) != width:
            raise UserInputError(
                f"{path}: class {name!r} has {len(vec)} numbers; expected {width} like the others"
            )
    if not table:
        raise UserInputError(f"{path}: holds no class vectors")
    return table


def load_class_embedding(path: str | Path, class_names: Sequence[str]) -> Tensor:
    """``(C, d)`` float32 rows of the file at ``path``, row ``label`` for ``class_names[label]``;
    row 0 (background) is zeros. ValueError names every class without a vector."""
    return embedding_rows(read_embedding_file(path), class_names, where=str(path))


def embedding_rows(
    table: Mapping[str, Sequence[float]], class_names: Sequence[str], where: str = "embedding"
) -> Tensor:
    """``{name: vector}`` as ``(C, d)`` float32 rows by label, row 0 (background) zeros."""
    wanted = list(class_names[1:])
    missing = [n for n in wanted if n not in table]
    if missing:
        shown = ", ".join(repr(n) for n in missing[:10]) + (" ..." if len(missing) > 10 else "")
        raise UserInputError(
            f"{where}: no vector for class(es) {shown} ({len(missing)} of {len(wanted)}); "
            "expected one entry per category name of the dataset"
        )
    width = len(next(iter(table.values())))
    rows = [[0.0] * width] + [list(table[n]) for n in wanted]
    return torch.tensor(rows, dtype=torch.float32)


def embedding_from_word_vectors(
    word_vectors: str | Path, names: Iterable[str]
) -> dict[str, list[float]]:
    """``{name: vector}`` from a GloVe-style text file (``word v1 ... vd`` per line). As the paper
    does, a name of several words (``"traffic light"``) gets the mean of its lower-cased words."""
    path = Path(word_vectors)
    if not path.is_file():
        raise MissingFileError(f"word vector file not found: {path}")
    names = list(names)
    words_of = {n: n.lower().replace("-", " ").split() for n in names}
    needed = {w for ws in words_of.values() for w in ws}
    found: dict[str, np.ndarray] = {}
    with path.open(encoding="utf-8") as f:
        for line in f:
            word, _, rest = line.rstrip("\n").partition(" ")
            if word in needed and word not in found:
                found[word] = np.array(rest.split(), dtype=np.float64)
    table = {}
    for n, ws in words_of.items():
        lost = [w for w in ws if w not in found]
        if lost or not ws:
            raise UserInputError(f"{path}: no vector for word(s) {lost or [n]} of class {n!r}")
        table[n] = [round(float(x), 6) for x in np.mean([found[w] for w in ws], axis=0)]
    return table


def write_embedding_json(table: Mapping[str, Sequence[float]], path: str | Path) -> Path:
    """Write ``{name: vector}`` as the JSON form :func:`read_embedding_file` reads."""
    write_text_atomic(path, json.dumps({k: list(v) for k, v in table.items()}, indent=1) + "\n")
    return Path(path)
