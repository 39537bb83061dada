"""Writing files so that a crash or a kill never leaves half of one behind, and JSON that
any parser reads (standard JSON: no NaN or Infinity)."""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any


def write_text_atomic(path: Path, text: str) -> None:
    """Write beside the target, then rename over it (atomic on POSIX)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_json(path: Path, document: Any) -> None:
    """Write ``document`` as indented UTF-8 standard JSON, atomically.

    A NaN or an infinity in it raises ValueError naming the file and the key path (and
    nothing is written): Python's json would write the non-standard tokens ``NaN`` and
    ``Infinity``, which other parsers (jq, JavaScript, most JSON libraries) reject."""
    try:
        text = dumps(document, indent=2)
    except ValueError as exc:
        raise ValueError(f"{path}: {exc}") from None
    write_text_atomic(path, text + "\n")


def dumps(document: Any, *, indent: int | None = None) -> str:
    """``json.dumps`` that writes standard JSON only: a non-finite float raises
    ValueError naming its key path (``records[3].metrics[0].score``)."""
    try:
        return json.dumps(document, indent=indent, ensure_ascii=False, allow_nan=False)
    except ValueError as exc:
        found = next(nonfinite(document), None) if "Out of range" in str(exc) else None
        if found is None:
            raise  # a circular reference
        where, value = found
        raise ValueError(
            f"{where or 'the document'} is {value!r}, which standard JSON cannot hold; "
            "store null (None) for a value that is undefined"
        ) from None


def nonfinite(value: Any, where: str = "") -> Iterator[tuple[str, float]]:
    """The key path and value of each NaN or infinity in a JSON-like value, in order."""
    if isinstance(value, float):
        if not math.isfinite(value):
            yield where, value
    elif isinstance(value, Mapping):
        for key, item in value.items():
            path = f"{where}.{key}" if where else str(key)
            if isinstance(key, float) and not math.isfinite(key):  # json writes keys as text
                yield f"{path} (a key)", key
            yield from nonfinite(item, path)
    elif isinstance(value, list | tuple):
        for index, item in enumerate(value):
            yield from nonfinite(item, f"{where}[{index}]")


def nonfinite_as_null(value: Any) -> Any:
    """A copy of a JSON-like value with every NaN and infinity replaced by None (a
    non-finite key by the text json writes for it, as keys are text)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Mapping):
        return {_key(key): nonfinite_as_null(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [nonfinite_as_null(item) for item in value]
    return value


def _key(key: Any) -> Any:
    if isinstance(key, float) and not math.isfinite(key):
        return "NaN" if math.isnan(key) else ("Infinity" if key > 0 else "-Infinity")
    return key


def shown_path(path: Path, base: Path) -> str:
    """``path`` as a user would type it in ``base``: relative when it is below it."""
    try:
        return str(path.relative_to(base))
    except ValueError:
        return str(path)
