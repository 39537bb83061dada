"""The statistics of STATISTICS.md: is a candidate worse than its baseline? Nothing here
knows about runs, reports or pytest.

    samples.py      the input: per-example samples, settings, valid samples, pairs, missing
    permutation.py  sign flips, independent splits, Wilcoxon-Pratt, and their fast replays
    intervals.py    Wilson, Newcombe method 10, a test inverted into its CI
    paired.py       McNemar mid-p, sign flips, paired t, clustered; the variance split
    unpaired.py     the fallback without shared ids: Boschloo, Welch, permutation
    power.py        MDE80 and the n needed for δ
    verdict.py      the verdict, its plain-language line, Holm (no numpy)
    comparison.py   Comparison, what a comparison reports (no numpy)
    regression.py   compare, compare_unpaired, detect_regression: the entry points

Names are imported on first use: numpy and scipy load with the first comparison.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

_EXPORTS = {
    "Comparison": "comparison",
    "Kind": "comparison",
    "KINDS": "comparison",
    "VarianceSplit": "comparison",
    "Verdict": "comparison",
    "VERDICTS": "comparison",
    "Samples": "samples",
    "Scores": "samples",
    "samples_from_pairs": "samples",
    "compare": "regression",
    "compare_unpaired": "regression",
    "detect_regression": "regression",
    "apply_holm": "verdict",
    "ci_percent": "verdict",
    "fmt_number": "verdict",
    "holm": "verdict",
    "minimum_n": "verdict",
    "mde": "power",
}
__all__ = [
    "KINDS",
    "VERDICTS",
    "Comparison",
    "Kind",
    "Samples",
    "Scores",
    "VarianceSplit",
    "Verdict",
    "apply_holm",
    "ci_percent",
    "compare",
    "compare_unpaired",
    "detect_regression",
    "fmt_number",
    "holm",
    "mde",
    "minimum_n",
    "samples_from_pairs",
]

if TYPE_CHECKING:
    from .comparison import KINDS, VERDICTS, Comparison, Kind, VarianceSplit, Verdict
    from .power import mde
    from .regression import compare, compare_unpaired, detect_regression
    from .samples import Samples, Scores, samples_from_pairs
    from .verdict import apply_holm, ci_percent, fmt_number, holm, minimum_n


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'pytest_llmeval.stats' has no attribute {name!r}")
    return getattr(importlib.import_module(f".{module}", __name__), name)


def __dir__() -> list[str]:
    return sorted(__all__)
