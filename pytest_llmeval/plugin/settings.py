"""The plugin's options and ini keys, read into one frozen Settings at start-up, and the
baseline they name: a bad value is a ``pytest.UsageError`` naming the key, the value and
the valid ones (the plugin's only source of one)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from ..errors import ConfigError
from ..records import RecordJSON
from ..runs.report import ReportJSON, read_report
from ..settings import OPTIONS, Settings, build

if TYPE_CHECKING:
    from ..runs.plan import Plan


def from_config(config: pytest.Config) -> Settings:
    """Build Settings from the command line, falling back to ini."""

    def value(name: str) -> str:
        flag = config.getoption(f"llmeval_{name}")
        return str(flag if flag is not None else config.getini(f"llmeval_{name}")).strip()

    def location(name: str) -> Path | None:
        """A path given as a flag is relative to where pytest was invoked; one from the
        ini file, to the rootdir (where the ini file is)."""
        flag = config.getoption(f"llmeval_{name}")
        base = config.invocation_params.dir if flag is not None else config.rootpath
        return base / value(name) if value(name) else None

    try:
        return build(
            value,
            location,
            rootpath=config.rootpath,
            datasets_dir=str(config.getini("llmeval_datasets_dir")),
        )
    except ConfigError as exc:
        raise pytest.UsageError(str(exc)) from None


def read_baseline(effective: Settings) -> ReportJSON | None:
    """The report of ``llmeval_baseline`` (None: no baseline), read at start-up so that a
    bad one stops the run before anything changed."""
    path = effective.regression.baseline
    if path is None:
        return None
    try:
        return read_report(path)
    except ValueError as exc:
        raise pytest.UsageError(f"llmeval_baseline: {exc}") from None


def plan_of(effective: Settings, baseline: list[RecordJSON] | None) -> Plan | None:
    """The power plan against the baseline (None without one); with llmeval_repeat =
    auto it chooses the draws per partition. A usage error when auto has no baseline."""
    if baseline is None:
        if effective.repeat_auto:
            raise pytest.UsageError(
                "llmeval_repeat = auto plans the draws from a baseline's variance: set "
                "llmeval_baseline (--llmeval-baseline), or give a number of draws"
            )
        return None
    from ..partitions import PARTITIONS
    from ..runs.plan import plan

    fixed = None if effective.repeat_auto else {p: effective.draws(p) for p in PARTITIONS}
    try:
        return plan(
            baseline,
            effective.regression,
            draws=fixed,
            repeat_max=effective.repeat_max,
            prices=effective.app.prices or None,
        )
    except ValueError as exc:
        raise pytest.UsageError(f"llmeval plan: {exc}") from None
    except (KeyError, TypeError) as exc:  # a record of another shape: the run cannot compare
        raise pytest.UsageError(
            f"llmeval_baseline: {effective.regression.baseline}: a record lacks or mistypes a "
            f"field ({type(exc).__name__}: {exc}); save the baseline again"
        ) from None


def add_options(parser: pytest.Parser) -> None:
    """Register the option group and ini keys."""
    group = parser.getgroup("llmeval", "LLM evaluations (pytest-llmeval)")
    for name, help_text, default in OPTIONS:
        flag = "--llmeval-" + name.replace("_", "-")
        group.addoption(flag, dest=f"llmeval_{name}", default=None, help=help_text)
        parser.addini(f"llmeval_{name}", help_text, default=default)
    parser.addini(
        "llmeval_datasets_dir",
        "folder (relative to the rootdir) where relative dataset paths are also looked up",
        default="",
    )
