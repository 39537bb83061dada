"""Default metric thresholds by partition, and their overrides from ini.

Resolution order: the value passed to the helper, then ``metric.partition`` from ini,
then ``metric`` from ini, then the built-in partition default, then the built-in default.
The ini's overrides are the current run's (context.py).
"""

from __future__ import annotations

import math
from collections.abc import Mapping

from .context import current_run

# metric -> partition (None = any) -> threshold. Golden is stricter where it matters.
DEFAULTS: dict[str, dict[str | None, float]] = {
    "token_f1": {None: 0.8},
    "similarity": {None: 0.85, "golden": 0.88},
    "judge": {None: 3.0, "golden": 4.0},
    "retrieval_recall": {None: 0.8, "golden": 1.0},
}


def resolve(metric: str, partition: str | None, explicit: float | None = None) -> float:
    """The threshold for ``metric`` in ``partition``."""
    if explicit is not None:
        if not math.isfinite(explicit):  # nan never passes, -inf always would
            raise ValueError(f"threshold={explicit!r} for {metric}: a threshold is a finite number")
        return explicit
    found = applied(current_run().thresholds, metric, partition)
    if found is None:
        raise KeyError(f"no default threshold for metric {metric!r}; pass threshold=")
    return found


def applied(overrides: Mapping[str, float], metric: str, partition: str | None) -> float | None:
    """The threshold ``overrides`` (llmeval_thresholds) and the defaults give ``metric``
    in ``partition``, or None: no default and none configured."""
    if partition is not None and f"{metric}.{partition}" in overrides:
        return overrides[f"{metric}.{partition}"]
    if metric in overrides:
        return overrides[metric]
    defaults = DEFAULTS.get(metric)
    return None if defaults is None else defaults.get(partition, defaults[None])


def configured(metric: str, partition: str | None, explicit: float | None = None) -> float | None:
    """The threshold for ``metric`` in ``partition`` when one is given or configured in
    ini, else None (a metric recorded but not asserted unless asked)."""
    overrides = current_run().thresholds
    if explicit is not None or metric in overrides or f"{metric}.{partition}" in overrides:
        return resolve(metric, partition, explicit)
    return None
