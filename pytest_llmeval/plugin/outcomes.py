"""What a test's outcome means for its record: a quality failure, an error of the
infrastructure, or a broken test; and who raised an exception, the app or the test.

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

import pytest

from ..errors import LLMCallError, LLMEvalAssertionError, StepLimitError
from ..records import LLM_ERROR, Record
from .keys import TEST_FILES_KEY


def update_record(
    record: Record,
    report: pytest.TestReport,
    call: pytest.CallInfo[None],
    test_files: tuple[str, ...],
) -> None:
    """Set the record's timing, status and failure from one phase's report, by the rule
    the README's "Failures and errors" states: an assertion is a quality failure, an
    exception raised in the app's code is the app failing, a model call lost after its
    retries is an error of the infrastructure, and anything else (raised in the test's
    own code, a fixture, or by the plugin refusing its arguments) is a broken test."""
    exc = call.excinfo.value if call.excinfo is not None else None
    record.elapsed_s = (record.elapsed_s or 0.0) + report.duration
    if report.when == "call":
        record.duration_s = report.duration
    elif report.when == "setup":
        record.started_at = report.start
    else:
        record.finished_at = report.stop
    if report.passed:
        return
    if report.skipped:
        if hasattr(report, "wasxfail"):  # an expected failure is still not a pass
            record.fail("failed", "xfail", f"xfail: {report.wasxfail}")
        else:
            record.status = "skipped"
            longrepr = report.longrepr
            record.failure_reason = longrepr[2] if isinstance(longrepr, tuple) else str(longrepr)
        return
    if isinstance(exc, LLMCallError):  # also in setup: a batched fixture's lost call
        record.fail("error", f"{LLM_ERROR}{exc.kind}", str(exc))
    elif isinstance(exc, StepLimitError):  # the app stopped at a limit: a quality failure
        record.fail("failed", exc.kind, str(exc))
    elif report.when == "call" and isinstance(exc, pytest.fail.Exception):
        record.fail("failed", "pytest.fail", exconly(call))  # the test's own verdict
    elif exc is not None and report.when != "teardown" and raised_by_app(exc, test_files):
        record.fail("failed", f"app error: {type(exc).__name__}", exconly(call))
    elif report.when != "call":
        kind = f"{report.when} error: {type(exc).__name__}" if exc else f"{report.when} error"
        record.fail("error", kind, exconly(call))
    elif isinstance(exc, LLMEvalAssertionError):
        record.fail("failed", exc.kind, str(exc))
    elif isinstance(exc, AssertionError):
        record.fail("failed", "assertion", exconly(call))
    else:
        kind = f"test error: {type(exc).__name__}" if exc else "test error"
        record.fail("error", kind, exconly(call))


def test_files(config: pytest.Config) -> tuple[str, ...]:
    """The file name patterns of the test's own code: test modules and conftests."""
    patterns = config.stash.get(TEST_FILES_KEY, None)
    if patterns is None:
        patterns = config.stash[TEST_FILES_KEY] = (*config.getini("python_files"), "conftest.py")
    return patterns


def exconly(call: pytest.CallInfo[None]) -> str:
    return call.excinfo.exconly()[:2000] if call.excinfo is not None else ""


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


_PLUGIN_DIR = str(Path(__file__).resolve().parent.parent) + os.sep  # the whole package


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
