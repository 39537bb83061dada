"""Numeric options: a count is a whole number and every number is finite, or pytest stops
at start-up with one line naming the option and the value (exit 4)."""

from __future__ import annotations

from pathlib import Path

import pytest

from pytest_llmeval.settings import OPTIONS, build

pytestmark = pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")


@pytest.fixture
def one_test(pytester: pytest.Pytester) -> pytest.Pytester:
    pytester.makeini("[pytest]\nasyncio_default_fixture_loop_scope = function\n")
    pytester.makepyfile("def test_nothing():\n    pass\n")
    return pytester


@pytest.mark.parametrize(
    ("option", "value", "should_be"),
    [
        ("--llmeval-judge-samples", "2.5", "a whole number >= 1"),
        ("--llmeval-concurrency", "1.5", "'auto' or a whole number >= 1"),
        ("--llmeval-max-retries", "2.5", "a whole number >= 0"),
        ("--llmeval-max-retries", "inf", "a whole number >= 0"),
        ("--llmeval-max-concurrency", "nan", "a whole number >= 1"),
        ("--llmeval-judge-max-concurrency", "8.0", "a whole number >= 1"),
        ("--llmeval-timeout", "inf", "a finite number >= 0.001"),
        ("--llmeval-judge-timeout", "1e999", "a finite number >= 0.001"),
        ("--llmeval-retry-base-delay", "nan", "a finite number >= 0"),
        ("--llmeval-temperature", "-inf", "a finite number >= 0"),
        ("--llmeval-alpha", "inf", "a finite number >= 0"),
        ("--llmeval-thresholds", "token_f1:nan", "a number (it must be finite)"),
        ("--llmeval-thresholds", "judge.golden:-inf", "a number (it must be finite)"),
        ("--llmeval-delta", "judge:inf", "a number (it must be finite)"),
        ("--llmeval-delta", "judge:0", "a positive number (δ is the smallest change that matters)"),
        (
            "--llmeval-delta",
            "pass_rate:-0.1",
            "a positive number (δ is the smallest change that matters)",
        ),
    ],
)
def test_a_bad_number_is_a_one_line_usage_error(
    one_test: pytest.Pytester, option: str, value: str, should_be: str
) -> None:
    result = one_test.runpytest(f"{option}={value}")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    key = option.removeprefix("--").replace("-", "_")
    number = value.rpartition(":")[2]
    message = f"ERROR: {key}: {number!r} is not {should_be}"
    assert [line for line in result.stderr.lines if line.strip()] == [message]
    assert result.stdout.lines == []  # no traceback, no tests run


def test_an_ini_key_is_checked_the_same_way(one_test: pytest.Pytester) -> None:
    one_test.makeini(
        "[pytest]\nasyncio_default_fixture_loop_scope = function\nllmeval_timeout = inf\n"
    )
    result = one_test.runpytest()
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["ERROR: llmeval_timeout: 'inf' is not a finite number >= 0.001"])


@pytest.mark.parametrize(
    "options",
    [
        ["--llmeval-judge-samples=3", "--llmeval-max-retries=0", "--llmeval-concurrency= 4 "],
        ["--llmeval-timeout=0.5", "--llmeval-judge-timeout=1e3", "--llmeval-temperature=0"],
        ["--llmeval-thresholds=token_f1:-1 judge:4.5", "--llmeval-delta=judge:0.25"],
    ],
)
def test_valid_numbers_still_run(one_test: pytest.Pytester, options: list[str]) -> None:
    result = one_test.runpytest(*options)
    assert result.ret == pytest.ExitCode.OK, result.stderr.str()


@pytest.mark.parametrize(
    ("raw", "concurrency", "adaptive"),
    [("auto", None, True), (" AUTO ", None, True), ("8", 8, False)],
)
def test_concurrency_is_auto_by_default_and_auto_makes_the_endpoint_limits_adapt(
    raw: str, concurrency: int | None, adaptive: bool
) -> None:
    def value(name: str) -> str:
        if name == "concurrency":
            return raw
        return next(default for option, _, default in OPTIONS if option == name)

    settings = build(value, lambda name: None, rootpath=Path("."), datasets_dir="")
    assert settings.concurrency == concurrency
    assert settings.app.adaptive is settings.judge.adaptive is adaptive
    assert settings.app.max_concurrency == settings.judge.max_concurrency == 256
    assert next(d for option, _, d in OPTIONS if option == "concurrency") == "auto"
