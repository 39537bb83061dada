"""Token prices per model and the cost of a call."""

from __future__ import annotations

import math
from collections.abc import Mapping


def parse_prices(spec: str) -> dict[str, tuple[float, float]]:
    """Parse ``model=input/output`` pairs, in USD per million tokens:
    ``gpt-4o-mini=0.15/0.60 gpt-4o=2.50/10``. Raises ValueError naming the bad item.

    A price is a finite number >= 0: float() also reads ``nan`` and ``inf``, which would
    make every cost (and the report's totals) NaN or infinite."""
    prices: dict[str, tuple[float, float]] = {}
    for item in spec.replace(",", " ").split():
        model, sep, rates = item.rpartition("=")
        prompt, slash, completion = rates.partition("/")
        try:
            if not (sep and model and slash):
                raise ValueError
            pair = (float(prompt), float(completion))
        except ValueError:
            raise ValueError(
                f"{item!r} is not of the form model=input/output (USD per million tokens)"
            ) from None
        for text, price in zip((prompt, completion), pair, strict=True):
            if not (math.isfinite(price) and price >= 0):
                raise ValueError(
                    f"{item!r}: the price {text!r} is not a finite number >= 0 "
                    "(USD per million tokens)"
                )
        prices[model] = (pair[0] + 0.0, pair[1] + 0.0)  # -0.0 + 0.0 is 0.0
    return prices


def cost_usd(
    prices: Mapping[str, tuple[float, float]], model: str, prompt: int, completion: int
) -> float | None:
    """The cost of a call, or None when the model has no price. A dated model name
    (``gpt-4o-mini-2024-07-18``) takes the price of its longest listed prefix."""
    rates = prices.get(model)
    if rates is None:
        matches = [name for name in prices if model.startswith(name)]
        if not matches:
            return None
        rates = prices[max(matches, key=len)]
    return (prompt * rates[0] + completion * rates[1]) / 1_000_000
