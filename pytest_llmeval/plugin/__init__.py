"""The pytest edge, the only package that imports pytest. This module is the entry point
(``pytest11``): its hooks make records from reports (outcomes.py says what a report means
for a record); collection.py turns datasets into tests, fixtures.py provides
``llm``/``judge``/``llmeval_record``, controller.py applies the partition rules, budgets
and regression to the exit status and writes the summary and the report, batching.py
runs ``@batched`` fixtures, settings.py reads options, keys.py names the stash keys.

Everything heavier than this module (pydantic, the dataset models) is imported only when
a test uses the ``llmeval`` marker or an example parameter.
"""

from __future__ import annotations

from collections.abc import Generator

import pytest

from .. import context, records
from ..client.llm import interrupt_all
from ..records import Record
from ..settings import Settings
from . import settings
from .collection import known_before_run, selection
from .collection import pytest_collection_modifyitems as pytest_collection_modifyitems
from .collection import pytest_generate_tests as pytest_generate_tests
from .controller import Controller
from .fixtures import embedder as embedder
from .fixtures import judge as judge
from .fixtures import judge_client as judge_client
from .fixtures import llm as llm
from .fixtures import llmeval_draw as llmeval_draw
from .fixtures import llmeval_record as llmeval_record
from .fixtures import session_embedder
from .keys import (
    BATCHES_KEY,
    CONTROLLER_KEY,
    DATASETS_KEY,
    DRAW_KEY,
    DRAWS_KEY,
    ERROR_ATTR,
    EXAMPLE_KEY,
    PREVIOUS_RECORD_KEY,
    RECORD_KEY,
    REPORT_ATTR,
    RUN_KEY,
    RUN_TOKEN_KEY,
    SELECTION_ATTR,
    SELECTION_SENT_KEY,
    SETTINGS_KEY,
    SHARD_TESTS_ATTR,
    SHARD_TESTS_KEY,
    SOFT_ATTR,
)
from .outcomes import test_files, update_record

pytest_plugins = [
    "pytest_llmeval.plugin.otel",  # OpenTelemetry spans as steps (llmeval_otel)
    "pytest_llmeval.plugin.junit",  # the eval in --junitxml (llmeval_junit_properties)
    "pytest_llmeval.plugin.sharding",  # one shard of the examples (llmeval_shard)
]

_MARKERS = (
    "llmeval(dataset, partition=None, tags=None): run the test once per example of the "
    "dataset, passed as the 'example' argument",
    "golden: eval example of the golden partition: every one must pass",
    "regression: eval example of the regression partition (hard by default)",
    "adversarial: eval example of the adversarial partition (soft by default)",
    "distribution: eval example of the distribution partition (soft by default)",
)


def pytest_addoption(parser: pytest.Parser) -> None:
    settings.add_options(parser)


def pytest_configure(config: pytest.Config) -> None:
    for line in _MARKERS:
        config.addinivalue_line("markers", line)
    effective = settings.from_config(config)
    worker = hasattr(config, "workerinput")
    # A worker reads the baseline only to plan its draws (llmeval_repeat = auto): the same
    # plan as the controller's, from the same file, before anything is collected.
    report = settings.read_baseline(effective) if effective.repeat_auto or not worker else None
    baseline = None if report is None else report["records"]
    planned = settings.plan_of(effective, baseline)
    if planned is not None and effective.repeat_auto:
        config.stash[DRAWS_KEY] = planned.draws
    controller = None
    if not worker:
        controller = Controller(config, effective, baseline, planned)
        if report is not None:
            from ..inifile import settings_of_report

            controller.baseline_settings = settings_of_report(report)
    config.stash[SETTINGS_KEY] = effective
    config.stash[DATASETS_KEY] = {}
    run = context.RunContext(effective.thresholds, lambda: session_embedder(config))
    config.stash[RUN_KEY] = run
    config.stash[RUN_TOKEN_KEY] = context.activate(run)
    if controller is not None:
        config.stash[CONTROLLER_KEY] = controller
        config.pluginmanager.register(controller, "llmeval-controller")


def pytest_unconfigure(config: pytest.Config) -> None:
    batches = config.stash.get(BATCHES_KEY, None)
    if batches is not None:
        # Examples still under way (-x) end before the run's clients close: else one could
        # build a client after the close, which nothing would close. (The config's cleanup
        # closes them too, when unconfigure did not get here: a no-op otherwise.)
        batches.close()
    token = config.stash.get(RUN_TOKEN_KEY, None)
    if token is not None:  # pytest_configure got as far as making the run current
        context.deactivate(token)
        config.stash[RUN_KEY].close()
    controller = config.stash.get(CONTROLLER_KEY, None)
    if controller is not None:
        config.pluginmanager.unregister(controller)
        del config.stash[CONTROLLER_KEY]


def pytest_keyboard_interrupt() -> None:
    # Whichever thread the Ctrl-C reached: no client of the run sends or retries anything.
    interrupt_all()


def pytest_report_header(config: pytest.Config) -> list[str]:
    lines = [f"llmeval: {config.stash[SETTINGS_KEY].describe()}"]
    controller = config.stash.get(CONTROLLER_KEY, None)
    if controller is not None and controller.plan is not None:
        # Before the first test: what this run can detect, and the draws it makes.
        from ..runs.plan import plan_lines

        lines += ["llmeval plan:", *(f"  {line}" for line in plan_lines(controller.plan))]
    return lines


# --- records --------------------------------------------------------------------------


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    # A plain hook, not a protocol wrapper: this runs for every test of the session.
    example = item.stash.get(EXAMPLE_KEY, None)
    if example is None:
        return
    record = Record(*known_before_run(item.nodeid, example, item.stash.get(DRAW_KEY, None)))
    if example.human_score is not None or example.human_labels:
        record.human = {"score": example.human_score, "labels": example.human_labels}
    record.limits = example.limits
    record.input, record.expected_output = example.input, example.expected_output
    item.stash[RECORD_KEY] = record
    item.stash[PREVIOUS_RECORD_KEY] = records.bind(record)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    record = item.stash.get(RECORD_KEY, None)
    if record is None:
        return report
    if report.when == "setup" and not item.config.stash.get(SELECTION_SENT_KEY, False):
        # Under xdist the controller collects nothing: each worker's first eval test
        # tells it which eval tests were selected, so none can go missing.
        item.config.stash[SELECTION_SENT_KEY] = True
        if hasattr(item.config, "workerinput"):
            setattr(report, SELECTION_ATTR, selection(item.session.items))
            if SHARD_TESTS_KEY in item.config.stash:
                setattr(report, SHARD_TESTS_ATTR, item.config.stash[SHARD_TESTS_KEY])
    update_record(record, report, call, test_files(item.config))
    if report.failed and record.steps and report.when in ("setup", "call"):
        report.sections.append(("llmeval trajectory", record.trajectory.render()))
    if report.when in ("setup", "call") and record.status == "error":
        # An error (a model call lost after its retries, a broken test), not a failure
        # of the model's quality: shown as pytest shows errors, never softened.
        setattr(report, ERROR_ATTR, record.failure_kind)
    elif (
        report.when in ("setup", "call")
        and report.failed
        and record.status == "failed"
        and _soft(item.config.stash[SETTINGS_KEY], record)
    ):
        # A soft partition's failure is shown and recorded but does not fail the
        # session by itself: the partition's minimum pass rate decides. So for a draw
        # whose case a reducer other than ``all`` decides, at the end of the run.
        record.soft = True
        report.outcome = "skipped"
        report.wasxfail = f"soft failure ({record.partition}): {record.failure_kind}"
        setattr(report, SOFT_ATTR, True)
    if report.when == "teardown":
        setattr(report, REPORT_ATTR, record.to_json())
        records.bind(item.stash[PREVIOUS_RECORD_KEY])
        del item.stash[RECORD_KEY]  # it travels on the report now; items live all session
    return report


def _soft(settings: Settings, record: Record) -> bool:
    if not settings.is_hard(record.partition):
        return True
    return record.draw is not None and settings.reducer_of(record.partition) != "all"


@pytest.hookimpl(tryfirst=True)  # before the xfail plugin claims the report
def pytest_report_teststatus(
    report: pytest.TestReport,
) -> tuple[str, str, tuple[str, dict[str, bool]]] | None:
    if getattr(report, SOFT_ATTR, False):
        return "softfailed", "f", ("SOFTFAIL", {"yellow": True})
    if getattr(report, ERROR_ATTR, None):
        return "error", "E", ("ERROR", {"red": True})
    return None
