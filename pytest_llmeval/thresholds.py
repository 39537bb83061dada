"""Default metric thresholds by partition, and their overrides from ini.

Resolution order: the value passed to the helper, then ``metric.partition`` from ini,
then ``metric`` from ini, then the built-in partition default, then the built-in default.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

# metric -> partition (None = any) -> threshold. Golden is stricter where it matters.
DEFAULTS: dict[str, dict[str | None, float]] = {
    "token_f1": {None: 0.8},
    "similarity": {None: 0.85, "golden": 0.88},
    "judge": {None: 3.0, "golden": 4.0},
}

_overrides: dict[str, float] = {}


def configure(overrides: Mapping[str, float]) -> dict[str, float]:
    """Install ini overrides (keys ``metric`` or ``metric.partition``); returns the
    previous ones so a nested pytest run (pytester) can restore them."""
    global _overrides
    previous, _overrides = _overrides, dict(overrides)
    return previous


def resolve(metric: str, partition: str | None, explicit: float | None = None) -> float:
    """The threshold for ``metric`` in ``partition``."""
    if explicit is not None:
        if not math.isfinite(explicit):  # nan never passes, -inf always would
            raise ValueError(f"threshold={explicit!r} for {metric}: a threshold is a finite number")
        return explicit
    if partition is not None and f"{metric}.{partition}" in _overrides:
        return _overrides[f"{metric}.{partition}"]
    if metric in _overrides:
        return _overrides[metric]
    defaults = DEFAULTS.get(metric)
    if defaults is None:
        raise KeyError(f"no default threshold for metric {metric!r}; pass threshold=")
    return defaults.get(partition, defaults[None])
