"""Who raised an exception: the app under test, or the test itself.

An eval test calls the app; the app calls libraries. An exception whose innermost frame
outside the libraries (the standard library, site-packages) lies in the app's code is
the app failing on that example: a quality failure like a failed assertion. One raised
in a test module, a conftest or the plugin (a helper refusing its arguments) means the
test is broken, which must never pass for a soft quality failure.
"""

from __future__ import annotations

import fnmatch
import os
import sysconfig
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from types import TracebackType


def raised_by_app(exc: BaseException, test_files: tuple[str, ...]) -> bool:
    """Whether ``exc`` was raised in the app's code: its innermost frame that is not a
    library's belongs to a file that is neither a test file (``test_files`` are name
    patterns, e.g. ``test_*.py``, ``conftest.py``) nor the plugin's."""
    for filename in reversed(list(_filenames(exc.__traceback__))):
        if _is_library(filename):
            continue
        if filename.startswith(_PLUGIN_DIR):
            return False
        name = os.path.basename(filename)
        return not any(fnmatch.fnmatch(name, pattern) for pattern in test_files)
    return False


def _filenames(tb: TracebackType | None) -> Iterator[str]:
    while tb is not None:
        yield tb.tb_frame.f_code.co_filename
        tb = tb.tb_next


_PLUGIN_DIR = str(Path(__file__).resolve().parent) + os.sep


@cache
def _library_dirs() -> tuple[str, ...]:
    paths = sysconfig.get_paths()
    dirs = {paths[k] for k in ("stdlib", "platstdlib", "purelib", "platlib") if k in paths}
    return tuple(str(Path(d).resolve()) + os.sep for d in dirs)


@cache
def _is_library(filename: str) -> bool:
    if filename.startswith("<"):  # <frozen ...>, <string>: the interpreter's own
        return True
    resolved = str(Path(filename).resolve())
    return resolved.startswith(_library_dirs()) or "site-packages" in resolved.split(os.sep)
