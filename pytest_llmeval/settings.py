"""One frozen Settings built from ``--llmeval-*`` options and ``llmeval_*`` ini keys.

Every flag defaults to None and falls back to its ini key. Bad values raise
``pytest.UsageError`` naming the value and the valid ones.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from .partitions import PARTITIONS

DEFAULT_HARD = ("golden", "regression")
DEFAULT_MIN_PASS_RATE = {"regression": 1.0, "adversarial": 0.9, "distribution": 0.85}

# (name, help, default) for each key that is both a flag and an ini key.
OPTIONS: tuple[tuple[str, str, str], ...] = (
    ("report", "write the whole run as JSON to this path (records, aggregates, verdicts)", ""),
    ("tags", "run only eval examples carrying one of these tags (comma-separated)", ""),
    (
        "hard_partitions",
        "partitions where each failure fails the session (default: golden regression)",
        " ".join(DEFAULT_HARD),
    ),
    (
        "min_pass_rate",
        "minimum pass rate of soft partitions, e.g. 'adversarial:0.9 distribution:0.85'",
        "",
    ),
    ("thresholds", "metric thresholds, e.g. 'token_f1:0.8 token_f1.golden:0.9'", ""),
)


@dataclass(frozen=True)
class Settings:
    """The plugin's effective configuration for one session."""

    report: Path | None = None
    tags: tuple[str, ...] = ()
    hard_partitions: frozenset[str] = frozenset(DEFAULT_HARD)
    min_pass_rate: dict[str, float] = field(default_factory=lambda: dict(DEFAULT_MIN_PASS_RATE))
    thresholds: dict[str, float] = field(default_factory=dict)
    datasets_dir: Path | None = None

    def is_hard(self, partition: str) -> bool:
        return partition in self.hard_partitions

    def minimum(self, partition: str) -> float:
        """The pass rate a partition must reach (1.0 for a hard partition)."""
        return 1.0 if self.is_hard(partition) else self.min_pass_rate.get(partition, 1.0)

    def describe(self) -> str:
        soft = " ".join(
            f"{p}>={self.min_pass_rate.get(p, 1.0):.0%}" for p in PARTITIONS if not self.is_hard(p)
        )
        parts = [f"hard: {' '.join(p for p in PARTITIONS if self.is_hard(p))}"]
        if soft:
            parts.append(f"soft: {soft}")
        if self.tags:
            parts.append(f"tags: {','.join(self.tags)}")
        if self.report:
            parts.append(f"report: {self.report}")
        return ", ".join(parts)


def from_config(config: pytest.Config) -> Settings:
    """Build Settings from the command line, falling back to ini."""

    def value(name: str) -> str:
        flag = config.getoption(f"llmeval_{name}")
        return str(flag if flag is not None else config.getini(f"llmeval_{name}")).strip()

    hard = _parse_hard(value("hard_partitions"))
    minimums = dict(DEFAULT_MIN_PASS_RATE)
    minimums.update(_parse_pairs("min_pass_rate", value("min_pass_rate"), _rate, PARTITIONS))
    clash = sorted(hard & set(_keys(value("min_pass_rate"))))
    if clash:
        raise pytest.UsageError(
            f"llmeval_min_pass_rate: {clash[0]!r} is a hard partition (every failure fails "
            f"the session); remove it from llmeval_hard_partitions to give it a minimum"
        )
    datasets_dir = config.getini("llmeval_datasets_dir").strip()
    return Settings(
        report=Path(value("report")) if value("report") else None,
        tags=tuple(t.strip() for t in value("tags").split(",") if t.strip()),
        hard_partitions=hard,
        min_pass_rate=minimums,
        thresholds=_parse_pairs("thresholds", value("thresholds"), _threshold, None),
        datasets_dir=(config.rootpath / datasets_dir) if datasets_dir else None,
    )


def _parse_hard(spec: str) -> frozenset[str]:
    names = spec.replace(",", " ").split()
    for name in names:
        if name not in PARTITIONS:
            raise pytest.UsageError(
                f"llmeval_hard_partitions: unknown partition {name!r}; "
                f"valid: {', '.join(PARTITIONS)}"
            )
    if "golden" not in names:
        raise pytest.UsageError(
            "llmeval_hard_partitions must include 'golden': every golden example must pass"
        )
    return frozenset(names)


def _keys(spec: str) -> list[str]:
    return [item.partition(":")[0] for item in spec.replace(",", " ").split()]


def _parse_pairs(
    name: str, spec: str, convert: Callable[[str, str], float], valid: tuple[str, ...] | None
) -> dict[str, float]:
    """Parse 'key:value key:value' (commas allowed as separators)."""
    pairs: dict[str, float] = {}
    for item in spec.replace(",", " ").split():
        key, sep, raw = item.partition(":")
        if not sep or not key or not raw:
            raise pytest.UsageError(f"llmeval_{name}: {item!r} is not of the form key:value")
        if valid is not None and key not in valid:
            raise pytest.UsageError(
                f"llmeval_{name}: unknown partition {key!r}; valid: {', '.join(valid)}"
            )
        pairs[key] = convert(f"llmeval_{name}", raw)
    return pairs


def _rate(name: str, raw: str) -> float:
    try:
        rate = float(raw[:-1]) / 100 if raw.endswith("%") else float(raw)
    except ValueError:
        rate = -1.0
    if not 0.0 <= rate <= 1.0:
        raise pytest.UsageError(f"{name}: {raw!r} is not a rate between 0 and 1 (or 0% to 100%)")
    return rate


def _threshold(name: str, raw: str) -> float:
    try:
        return float(raw)
    except ValueError:
        raise pytest.UsageError(f"{name}: {raw!r} is not a number") from None


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
