"""Token prices: ``model=input/output`` in USD per million tokens, each a finite number
>= 0, or a one-line usage error at start-up."""

from __future__ import annotations

import math

import pytest

from pytest_llmeval.client.pricing import cost_usd, parse_prices

pytestmark = pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")


def test_prices_parse_into_input_and_output_rates() -> None:
    prices = parse_prices("gpt-4o-mini=0.15/0.60, free=0/0 local=-0.0/0")
    assert prices == {"gpt-4o-mini": (0.15, 0.60), "free": (0.0, 0.0), "local": (0.0, 0.0)}
    assert math.copysign(1.0, prices["local"][0]) == 1.0  # no -0.0 costs in the report
    assert cost_usd(prices, "gpt-4o-mini", 1_000_000, 1_000_000) == pytest.approx(0.75)


@pytest.mark.parametrize(
    ("spec", "bad"),
    [
        ("m=nan/1", "nan"),
        ("m=1/NaN", "NaN"),
        ("m=inf/1", "inf"),
        ("m=1/-Infinity", "-Infinity"),
        ("m=1e999/1", "1e999"),  # overflows to inf
        ("m=-0.15/0.60", "-0.15"),
        ("ok=1/2 m=0.15/-1", "-1"),
    ],
)
def test_a_price_must_be_finite_and_not_negative(spec: str, bad: str) -> None:
    item = spec.split()[-1]
    with pytest.raises(ValueError) as info:
        parse_prices(spec)
    assert str(info.value) == (
        f"{item!r}: the price {bad!r} is not a finite number >= 0 (USD per million tokens)"
    )


def test_a_malformed_item_still_names_the_form() -> None:
    with pytest.raises(ValueError, match=r"'m=x/1' is not of the form model=input/output"):
        parse_prices("m=x/1")


@pytest.mark.parametrize("spec", ["m=nan/1", "m=1/-2"])
def test_a_bad_price_is_a_one_line_usage_error(pytester: pytest.Pytester, spec: str) -> None:
    pytester.makeini("[pytest]\nasyncio_default_fixture_loop_scope = function\n")
    pytester.makepyfile("def test_nothing():\n    pass\n")
    result = pytester.runpytest("--llmeval-prices", spec)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    bad = spec.partition("=")[2].split("/")
    value = bad[0] if bad[0] == "nan" else bad[1]
    assert [line for line in result.stderr.lines if line.strip()] == [
        f"ERROR: llmeval_prices: {spec!r}: the price {value!r} is not a finite number >= 0 "
        "(USD per million tokens)"
    ]
    assert result.stdout.lines == []
