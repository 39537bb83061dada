"""Writing files so that a crash or a kill never leaves half of one behind."""

from __future__ import annotations

import json
import os
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
    """Write ``document`` as indented UTF-8 JSON, atomically."""
    write_text_atomic(path, json.dumps(document, indent=2, ensure_ascii=False) + "\n")
