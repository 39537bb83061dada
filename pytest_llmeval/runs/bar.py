"""The bar a run is judged by, against its baseline's: every way the candidate's is lower.
A hard partition's example that the baseline ran and this run did not (deleted, renamed
or not selected; a partition this run ran none of is not compared), a partition made
soft, a minimum pass rate or a threshold lowered (or no longer set), a regression gate
dropped, delta raised, alpha lowered, strict or regression_fails turned off. Each lowering has a
key; under ``llmeval_bar_locked`` one whose key is not in ``llmeval_bar_accept`` fails
the run."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TypedDict

from ..partitions import PARTITIONS
from ..records import Record, RecordJSON
from ..settings import Settings


class LoweringJSON(TypedDict):
    key: str
    message: str
    accepted: bool


class BarJSON(TypedDict):
    """The report's ``bar``: the lowerings against the baseline, and whether they fail
    the run (locked, one of them not accepted)."""

    locked: bool
    blocks: bool
    lowered: list[LoweringJSON]


@dataclass(frozen=True)
class Lowering:
    key: str  # what llmeval_bar_accept names: "example:golden-01", "min_pass_rate:distribution"
    message: str
    accepted: bool = False

    def to_json(self) -> LoweringJSON:
        return {"key": self.key, "message": self.message, "accepted": self.accepted}


def lowered(
    baseline: Sequence[RecordJSON],
    baseline_settings: Settings | None,
    records: Sequence[Record],
    settings: Settings,
) -> list[Lowering]:
    """How this run's bar is lower than the baseline's (``baseline_settings`` None: a
    baseline that recorded no options, whose examples alone are compared)."""
    found = _examples(baseline, baseline_settings or settings, records)
    if baseline_settings is not None:
        found += _options(baseline_settings, settings)
    return [Lowering(key, message, accepted=key in settings.bar_accept) for key, message in found]


def blocks(lowerings: Sequence[Lowering], settings: Settings) -> bool:
    return settings.bar_locked and any(not low.accepted for low in lowerings)


def bar_json(lowerings: Sequence[Lowering], settings: Settings) -> BarJSON:
    return {
        "locked": settings.bar_locked,
        "blocks": blocks(lowerings, settings),
        "lowered": [low.to_json() for low in lowerings],
    }


def bar_lines(lowerings: Sequence[Lowering], settings: Settings) -> list[str]:
    """The summary's section: one line per lowering, then what it does to the run."""
    if not lowerings:
        return []
    lines = [f"bar lowered against the baseline ({len(lowerings)}):"]
    for low in lowerings:
        lines.append(f"  {low.key}: {low.message}{' (accepted)' if low.accepted else ''}")
    if blocks(lowerings, settings):
        lines.append("bar: BLOCK (llmeval_bar_locked; accept a lowering in llmeval_bar_accept)")
    elif settings.bar_locked:
        lines.append("bar: every lowering accepted (llmeval_bar_accept)")
    else:
        lines.append("bar: not locked (llmeval_bar_locked = yes would block)")
    return lines


def _examples(
    baseline: Sequence[RecordJSON], hard: Settings, records: Sequence[Record]
) -> list[tuple[str, str]]:
    ran: dict[str, set[str]] = {}
    for record in records:
        ran.setdefault(record.partition, set()).add(record.example_id)
    found = []
    seen: set[str] = set()
    for entry in baseline:
        partition, example = str(entry["partition"]), str(entry["example_id"])
        if not hard.is_hard(partition) or partition not in ran or example in seen:
            continue
        seen.add(example)
        if example not in ran[partition]:
            found.append(
                (
                    f"example:{example}",
                    f"{partition} example not in this run (deleted, renamed or not selected)",
                )
            )
    return found


def _options(base: Settings, now: Settings) -> list[tuple[str, str]]:
    found = []
    for partition in PARTITIONS:
        if base.is_hard(partition) and not now.is_hard(partition):
            found.append((f"hard:{partition}", f"{partition} is no longer a hard partition"))
        elif not now.is_hard(partition) and now.minimum(partition) < base.minimum(partition):
            found.append(
                (
                    f"min_pass_rate:{partition}",
                    f"minimum pass rate {_rate(base.minimum(partition))} -> "
                    f"{_rate(now.minimum(partition))}",
                )
            )
    found += _lower_numbers("threshold", base.thresholds, now.thresholds, "no longer set")
    for metric, part in base.regression.gate:
        gates = now.regression.gate
        if (metric, None) not in gates and (metric, part) not in gates:
            gate = f"{metric}.{part}" if part else metric
            found.append((f"gate:{gate}", "regression gate dropped"))
    for metric, delta in base.regression.delta.items():
        if now.regression.delta.get(metric, delta) > delta:
            found.append(
                (f"delta:{metric}", f"delta raised {delta:g} -> {now.regression.delta[metric]:g}")
            )
    if now.regression.alpha < base.regression.alpha:
        found.append(
            ("alpha", f"alpha lowered {base.regression.alpha:g} -> {now.regression.alpha:g}")
        )
    if base.regression.strict and not now.regression.strict:
        found.append(("strict", "strict regression turned off"))
    if base.regression.fails and not now.regression.fails:
        found.append(("regression_fails", "a blocking regression no longer fails the session"))
    return found


def _lower_numbers(
    kind: str, base: Mapping[str, float], now: Mapping[str, float], gone: str
) -> list[tuple[str, str]]:
    found = []
    for name, value in sorted(base.items()):
        if name not in now:
            found.append((f"{kind}:{name}", f"{kind} {value:g} {gone} (the default applies)"))
        elif now[name] < value:
            found.append((f"{kind}:{name}", f"{kind} lowered {value:g} -> {now[name]:g}"))
    return found


def _rate(value: float) -> str:
    return f"{value:.0%}"
