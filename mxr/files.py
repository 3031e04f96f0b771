"""The files runs and datasets leave behind: JSON read with one clear line on bad input, text
written atomically (a kill leaves the old file or the new one, never half of either), and an
engine's ``metrics.jsonl``."""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from mxr.errors import MissingFileError, UserInputError


# --- JSON files ----------------------------------------------------------------------------------
def read_json_file(path: str | Path, expected: str, what: str = "file") -> dict[str, Any]:
    """The JSON object in ``path``. Bad input is one line naming the file: FileNotFoundError
    (``"<path>: <what> not found"``) or ValueError (malformed JSON, or not an object), saying what
    was ``expected``."""
    path = Path(path)
    if not path.is_file():
        raise MissingFileError(f"{path}: {what} not found")
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise UserInputError(f"{path}: malformed JSON ({e}); expected {expected}") from e
    if not isinstance(data, dict):
        raise UserInputError(f"{path}: top level is {type(data).__name__}; expected {expected}")
    return data


def read_json_or_none(path: str | Path) -> Any:
    """The JSON in ``path``, or ``None`` when the file is absent or cut short: for the files a run
    or a generator writes last, whose absence means "not finished, do it again"."""
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """A temporary path beside ``path`` that replaces it (``os.replace``) when the block ends
    without error: a stop mid-write leaves the old file, or none, never one cut short."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_text_atomic(path: str | Path, text: str) -> None:
    """``Path(path).write_text(text)``, through :func:`atomic_path`."""
    with atomic_path(path) as tmp:
        tmp.write_text(text)


# --- metrics.jsonl --------------------------------------------------------------------------------
def read_metrics(path: str | Path) -> list[dict[str, Any]]:
    """The records of a ``metrics.jsonl`` (a run folder or the file), in file order. A last line cut
    short by a kill (the engine's resume drops it too) is skipped with one warning naming the file
    and line; a bad line before the last is an error naming them."""
    import warnings

    path = Path(path)
    if path.is_dir():
        path = path / "metrics.jsonl"
    if not path.is_file():
        raise MissingFileError(f"metrics file not found: {path}")
    lines = path.read_text().splitlines()
    rows = []
    for n, line in enumerate(lines, start=1):
        try:
            row = json.loads(line) if line.strip() else None
        except json.JSONDecodeError as err:
            if n == len(lines):
                warnings.warn(
                    f"{path}: line {n} is cut short (a killed run); skipped", stacklevel=2
                )
                break
            raise UserInputError(f"{path}: line {n} is not valid JSON ({err})") from err
        if isinstance(row, dict):
            rows.append(row)
    return rows
