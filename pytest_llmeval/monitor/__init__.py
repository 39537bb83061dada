"""Production monitoring: sample live traffic, evaluate it in the background with the
plugin's metrics and judge, store everything in SQLite, alert, and detect drift against
a baseline run. ``llmeval promote`` turns what it finds into regression examples and
``llmeval dashboard`` draws it.
"""

from __future__ import annotations

from .evaluators import (
    Alert,
    AlertSpec,
    Evaluation,
    Evaluator,
    constraints_evaluator,
    grounding_evaluator,
    judge_evaluator,
)
from .sampler import Sampler
from .store import Sample, Store
from .windows import baseline_scores
from .worker import Monitor, MonitorStats

__all__ = [
    "Alert",
    "AlertSpec",
    "Evaluation",
    "Evaluator",
    "Monitor",
    "MonitorStats",
    "Sample",
    "Sampler",
    "Store",
    "baseline_scores",
    "constraints_evaluator",
    "grounding_evaluator",
    "judge_evaluator",
]
