"""The project's pytest configuration, read without pytest: for ``llmeval gate`` and
``merge`` on a report that does not record its session's options (or with ``-c FILE``).
The file is found as pytest 9 finds it in a directory and its parents: the first
``pytest.toml`` or ``.pytest.toml`` (``[pytest]``), ``pytest.ini`` or ``.pytest.ini``,
``pyproject.toml`` with ``[tool.pytest]`` or ``[tool.pytest.ini_options]``, ``tox.ini``
with ``[pytest]``, or ``setup.cfg`` with ``[tool:pytest]``. Unlike pytest, it starts from
the current directory, not from the paths of a command line, and reads no ``addopts``."""

from __future__ import annotations

import configparser
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import ConfigError
from .settings import OPTIONS, Settings, build

_NAMES = (
    "pytest.toml",
    ".pytest.toml",
    "pytest.ini",
    ".pytest.ini",
    "pyproject.toml",
    "tox.ini",
    "setup.cfg",
)
_SECTIONS = {
    "pytest.ini": "pytest",
    ".pytest.ini": "pytest",
    "tox.ini": "pytest",
    "setup.cfg": "tool:pytest",
}


@dataclass(frozen=True)
class IniFile:
    """The configuration file (None: none found) and its keys; ``rootpath`` is its
    folder (where pytest would put the rootdir), relative ini paths are relative to it."""

    path: Path | None
    rootpath: Path
    values: dict[str, str] = field(default_factory=dict)

    @classmethod
    def recorded(cls, run: Mapping[str, Any]) -> IniFile | None:
        """The options a session recorded in its report's ``run`` (None: an older report,
        which recorded none)."""
        options = run.get("options")
        if not isinstance(options, dict):
            return None
        rootdir = Path(str(run.get("rootdir") or Path.cwd()))
        return cls(None, rootdir, {f"llmeval_{k}": str(v) for k, v in options.items()})

    def settings(self, flags: dict[str, str] | None = None) -> Settings:
        """Settings from ``flags`` (option name -> value; paths relative to the current
        directory), then this file's keys, then the defaults. ConfigError for a bad value."""
        given = flags or {}
        defaults = {name: default for name, _, default in OPTIONS}

        def value(name: str) -> str:
            if name in given:
                return given[name].strip()
            return self.values.get(f"llmeval_{name}", defaults.get(name, "")).strip()

        def location(name: str) -> Path | None:
            base = Path.cwd() if name in given else self.rootpath
            return base / value(name) if value(name) else None

        return build(
            value,
            location,
            rootpath=self.rootpath,
            datasets_dir=self.values.get("llmeval_datasets_dir", ""),
        )


def find_ini(start: Path, explicit: Path | None = None) -> IniFile:
    """``explicit`` (``-c FILE``), else the first configuration file from ``start``
    upwards; without one, the defaults with ``start`` as the rootdir."""
    if explicit is not None:
        values = _read(explicit)
        if values is None:
            raise ConfigError(f"{explicit}: no pytest section in it (or it cannot be read)")
        return IniFile(explicit, explicit.resolve().parent, values)
    for folder in (start.resolve(), *start.resolve().parents):
        for name in _NAMES:
            candidate = folder / name
            if candidate.is_file():
                values = _read(candidate)
                if values is not None:
                    return IniFile(candidate, folder, values)
    return IniFile(None, start.resolve())


def _read(path: Path) -> dict[str, str] | None:
    """The file's pytest keys as text, or None when it holds no pytest section."""
    try:
        if path.name.endswith(".toml"):
            document = tomllib.loads(path.read_text(encoding="utf-8"))
            if path.name != "pyproject.toml":
                return {k: str(v) for k, v in document.get("pytest", {}).items()}
            table = document.get("tool", {}).get("pytest")
            if not isinstance(table, dict):
                return None
            options = table.get("ini_options", table)
            return {k: str(v) for k, v in options.items()}
        parser = configparser.RawConfigParser(interpolation=None)
        parser.read(path, encoding="utf-8")
    except (OSError, ValueError, configparser.Error) as exc:
        raise ConfigError(f"{path}: cannot read it: {exc}") from None
    section = _SECTIONS.get(path.name, "pytest")
    if not parser.has_section(section):
        # pytest.ini is pytest's even without its section; the others only with it.
        return {} if path.name in ("pytest.ini", ".pytest.ini") else None
    return dict(parser.items(section))


def settings_of_report(report: Mapping[str, Any]) -> Settings | None:
    """The settings a report's session read (``run.options``), or None: an older report
    that recorded none, or options this version cannot read."""
    recorded = IniFile.recorded(report.get("run") or {})
    try:
        return None if recorded is None else recorded.settings()
    except ConfigError:
        return None
