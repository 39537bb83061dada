"""JUnit XML that carries the eval (pytest's ``--junitxml``): the run's verdicts as
properties of the test suite, each eval test's failure or soft failure with its scores
against their thresholds, and, when asked (``llmeval_junit_properties``), each eval
test's example, partition, scores and cost as properties of its testcase.

Only with ``--junitxml``: without it, no report is touched. Suite properties are valid in
every JUnit family (pytest's default, xunit2, included); testcase properties are not in
xunit2's schema, so they are for ``junit_family = xunit1``, and said once otherwise."""

from __future__ import annotations

from collections.abc import Generator
from typing import TYPE_CHECKING

import pytest
from _pytest.junitxml import xml_key  # the LogXML of --junitxml (record_testsuite_property's)

from ..errors import LLMEvalWarning
from ..records import Record, RecordJSON, is_pairwise, is_rubric
from ..runs.compare import decision
from ..runs.markdown import scores_line
from ..runs.summary import incomplete_line
from .keys import CONTROLLER_KEY, RECORD_KEY, REPORT_ATTR, SETTINGS_KEY, SOFT_ATTR

if TYPE_CHECKING:
    from .controller import Controller

PREFIX = "llmeval"  # of every property's name: a test's own record_property keeps its names


@pytest.hookimpl(trylast=True)  # after the plugin's settings and junitxml's LogXML exist
def pytest_configure(config: pytest.Config) -> None:
    xml = config.stash.get(xml_key, None)
    settings = config.stash.get(SETTINGS_KEY, None)
    if xml is None or settings is None or not settings.junit_properties:
        return
    if xml.family not in ("xunit1", "legacy"):
        # As pytest says of record_property: xunit2's schema has no testcase properties.
        config.issue_config_time_warning(
            LLMEvalWarning(
                f"llmeval_junit_properties: testcase properties are not valid in "
                f"junit_family {xml.family!r}, whose validators reject them (use "
                "junit_family = xunit1); the suite's properties are valid in both"
            ),
            stacklevel=2,
        )


@pytest.hookimpl(wrapper=True, tryfirst=True)  # outermost: after the plugin made the record
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    # The option, not the LogXML: an xdist worker makes the reports, the controller the XML.
    if not item.config.option.xmlpath:
        return report
    record = item.stash.get(RECORD_KEY, None)
    if record is not None and report.when in ("setup", "call") and record.status == "failed":
        soft = getattr(report, SOFT_ATTR, False)
        if report.failed or soft:
            _carry(report, failure_line(record), soft=soft)
    if report.when == "teardown" and item.config.stash[SETTINGS_KEY].junit_properties:
        data = getattr(report, REPORT_ATTR, None)
        if data is not None:
            report.user_properties += testcase_properties(data)
    return report


def failure_line(record: Record) -> str:
    """``llmeval: token_f1 0.42 < 0.70; judge 2.00 < 4.00``: each failed metric against
    its threshold, else what failed the test."""
    return f"{PREFIX}: {scores_line(record.metrics) or record.failure_kind or 'failed'}"


def _carry(report: pytest.TestReport, line: str, *, soft: bool) -> None:
    """The line in the failure's message (JUnit's ``message`` attribute: the first line,
    so that a shortened message keeps it) and in its text; a soft failure, which JUnit
    shows as skipped, in its reason."""
    if soft:
        report.wasxfail = f"{report.wasxfail}; {line}"
        return
    longrepr = report.longrepr
    crash = getattr(longrepr, "reprcrash", None)
    if crash is not None:
        crash.message = f"{line}\n{crash.message}"
    addsection = getattr(longrepr, "addsection", None)  # a traceback's (ExceptionRepr)
    if addsection is not None:
        addsection(PREFIX, line)
    elif isinstance(longrepr, str):
        report.longrepr = f"{longrepr}\n{line}"


def testcase_properties(data: RecordJSON) -> list[tuple[str, object]]:
    """An eval test's properties: its example, partition and draw, status, each metric's
    score and threshold, each judge verdict, cost and latency."""
    props: list[tuple[str, object]] = [
        (f"{PREFIX}.example_id", data["example_id"]),
        (f"{PREFIX}.partition", data["partition"]),
    ]
    if data.get("draw") is not None:
        props.append((f"{PREFIX}.draw", data["draw"]))
    status = data["status"] + (" (soft)" if data.get("soft") else "")
    props.append((f"{PREFIX}.status", status))
    for metric in data.get("metrics", []):
        name = f"{PREFIX}.{metric['name']}"
        score = metric["score"]
        props.append((f"{name}.score", "undefined" if score is None else _number(score)))
        if metric["threshold"] is not None:
            props.append((f"{name}.threshold", _number(metric["threshold"])))
    for verdict in data.get("judge", []):
        if is_rubric(verdict):
            mean = verdict["mean"]
            props.append((f"{PREFIX}.judge.score", "no verdict" if mean is None else _number(mean)))
        elif is_pairwise(verdict):
            props.append((f"{PREFIX}.judge.winner", verdict["winner"]))
    cost, latency = data.get("cost_usd"), data.get("latency_s")
    if cost is not None:
        props.append((f"{PREFIX}.cost_usd", _number(cost, 6)))
    if latency is not None:
        props.append((f"{PREFIX}.latency_s", _number(latency, 3)))
    return props


@pytest.hookimpl(tryfirst=True)  # before LogXML's writes the file
def pytest_sessionfinish(session: pytest.Session) -> None:
    config = session.config
    xml = config.stash.get(xml_key, None)
    controller = config.stash.get(CONTROLLER_KEY, None)
    if xml is None or controller is None:
        return
    for name, value in suite_properties(controller):
        xml.add_global_property(name, value)


def suite_properties(controller: Controller) -> list[tuple[str, str]]:
    """The run's verdicts, as the llmeval summary says them: the outcome and what fails
    it, each partition rule and pass rate, the regression decision and each gated
    comparison's verdict, time budgets, flaky examples and an incomplete run."""
    if not controller.records and not controller.selected:
        return []  # no eval test in this session
    verdict = controller.verdict()
    ordered, stats, verdicts, flaky = (
        verdict.records,
        verdict.stats,
        verdict.verdicts,
        verdict.flaky,
    )
    reasons, compared, budgets = verdict.reasons, verdict.comparisons, verdict.budgets
    props = [(PREFIX, f"FAIL ({'; '.join(reasons)})" if reasons else "PASS")]
    props += [(f"{PREFIX}.gate.{v.partition}", v.message) for v in verdicts]
    props += [(f"{PREFIX}.pass_rate.{p}", _number(s.pass_rate)) for p, s in stats.items()]
    if isinstance(compared, str):
        props.append((f"{PREFIX}.regression", compared))
    elif compared is not None:
        fails = controller.settings.regression.fails
        props.append((f"{PREFIX}.regression", decision(compared, fails=fails)[1]))
        props += [
            (f"{PREFIX}.regression.{c.metric}.{c.partition}", f"{c.verdict}: {c.line}")
            for c in compared
        ]
    for budget in budgets:
        state = "over (the session fails)" if budget.fails else "over" if budget.over else "within"
        props.append(
            (
                f"{PREFIX}.time_budget.{budget.partition}",
                f"{state}: {budget.wall_s:.2f}s of {budget.budget_s:g}s",
            )
        )
    if flaky:
        listed = ", ".join(f"{f.example_id} ({f.passed} of {f.draws})" for f in flaky[:10])
        more = f" and {len(flaky) - 10} more" if len(flaky) > 10 else ""
        props.append((f"{PREFIX}.flaky", f"{len(flaky)}: {listed}{more}"))
    incomplete = incomplete_line(ordered)
    if incomplete:
        props.append((f"{PREFIX}.incomplete", incomplete))
    return props


def _number(value: float, digits: int = 4) -> str:
    return f"{value:.{digits}f}".rstrip("0").rstrip(".") if value == value else "nan"
