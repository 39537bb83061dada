"""A judge panel over the run (``llmeval_judge_models``): how its judges agree, by
Krippendorff's alpha over every verdict of the run (each verdict a unit, each judge a
coder; ordinal for rubric means, nominal for pairwise winners), and each judge's own
mean. The summary's "judge panel:" lines and the report's ``judge_panel`` block.

Only verdicts that carry a ``panel`` count: a run without a panel has neither. The
verdicts come from every xdist worker's records, so the agreement is the whole run's.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import TypedDict

from ..agreement import Value, krippendorff_alpha
from ..records import JudgeVerdict, Record, is_pairwise, is_rubric


class PanelJudgeJSON(TypedDict):
    """One judge of the panel over the run's verdicts of one kind."""

    model: str
    answered: int  # the verdicts it gave an answer to (the others: missing)
    mean: float | None  # rubric: the mean of its means (None: none, or pairwise)
    # pairwise: how often it preferred the candidate (a), the baseline (b), neither
    preferred: dict[str, int] | None


class PanelKindJSON(TypedDict):
    """The panel over the run's rubric or pairwise verdicts."""

    verdicts: int
    metric: str  # the level of Krippendorff's alpha: "ordinal" or "nominal"
    alpha: float | None  # None: undefined (fewer than two answers to one verdict, or
    # every answer the same)
    judges: list[PanelJudgeJSON]


class JudgePanelJSON(TypedDict):
    """The report's ``judge_panel``: the run's judges, and their agreement per kind."""

    judges: list[str]
    rubric: PanelKindJSON | None
    pairwise: PanelKindJSON | None


def panel_summary(verdicts: Iterable[JudgeVerdict]) -> JudgePanelJSON | None:
    """The panel's agreement over ``verdicts`` (None: none came from a panel)."""
    rubric: list[dict[str, Value | None]] = []
    pairwise: list[dict[str, Value | None]] = []
    judges: list[str] = []  # in the order the panel names them
    for verdict in verdicts:
        unit: dict[str, Value | None]
        if is_rubric(verdict) and verdict.get("panel"):
            unit = {p["model"]: p["mean"] for p in verdict["panel"]}
            rubric.append(unit)
        elif is_pairwise(verdict) and verdict.get("panel"):
            unit = {p["model"]: p["winner"] for p in verdict["panel"]}
            pairwise.append(unit)
        else:
            continue
        judges += [m for m in unit if m not in judges]
    if not judges:
        return None
    return {
        "judges": judges,
        "rubric": _kind(rubric, judges, "ordinal") if rubric else None,
        "pairwise": _kind(pairwise, judges, "nominal") if pairwise else None,
    }


def _kind(units: list[dict[str, Value | None]], judges: list[str], metric: str) -> PanelKindJSON:
    alpha = krippendorff_alpha(
        [[unit.get(j) for j in judges] for unit in units],
        "ordinal" if metric == "ordinal" else "nominal",
    )
    entries: list[PanelJudgeJSON] = []
    for judge in judges:
        answers = [a for unit in units if (a := unit.get(judge)) is not None]
        numbers = [float(a) for a in answers if not isinstance(a, str)]
        entries.append(
            {
                "model": judge,
                "answered": len(answers),
                "mean": sum(numbers) / len(numbers) if metric == "ordinal" and numbers else None,
                "preferred": {w: answers.count(w) for w in ("a", "b", "tie")}
                if metric == "nominal"
                else None,
            }
        )
    return {
        "verdicts": len(units),
        "metric": metric,
        "alpha": None if math.isnan(alpha) else alpha,
        "judges": entries,
    }


def panel_json(records: Sequence[Record]) -> JudgePanelJSON | None:
    """The report's ``judge_panel`` block of the run's records."""
    return panel_summary(v for r in records for v in r.judge)


def panel_lines(records: Sequence[Record]) -> list[str]:
    """The summary's "judge panel:" lines: per kind of verdict, the judges' agreement
    and each judge's mean (rubric) or preferences (pairwise)."""
    summary = panel_json(records)
    if summary is None:
        return []
    lines = []
    n = len(summary["judges"])
    for kind in ("rubric", "pairwise"):
        part = summary["rubric"] if kind == "rubric" else summary["pairwise"]
        if part is None:
            continue
        alpha = "undefined" if part["alpha"] is None else f"{part['alpha']:.2f}"
        judges = []
        for j in part["judges"]:
            missing = part["verdicts"] - j["answered"]
            if j["preferred"] is not None:
                won = j["preferred"]
                said = f"candidate {won['a']}, baseline {won['b']}, tie {won['tie']}"
            else:
                said = "mean " + ("-" if j["mean"] is None else f"{j['mean']:.2f}")
            judges.append(f"{j['model']} {said}" + (f" ({missing} missing)" if missing else ""))
        lines.append(
            f"judge panel: {n} judges over {part['verdicts']} {kind} verdicts, "
            f"Krippendorff's alpha ({part['metric']}) {alpha}; {'; '.join(judges)}"
        )
    return lines
