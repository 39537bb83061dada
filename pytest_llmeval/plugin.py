"""The pytest edge: options, markers, parametrization over datasets, records on reports,
the gates on the exit status, the terminal summary and the JSON report.

Everything heavier than this module (pydantic, the dataset models) is imported only when
a test uses the ``llmeval`` marker or an example parameter.
"""

from __future__ import annotations

import dataclasses
import inspect
import platform
import subprocess
import sys
import time
import warnings
from collections.abc import Generator
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from . import __version__, embeddings, records, settings, thresholds
from .baseline import compare_runs, decision, read_records, table_lines
from .client import LLMCallError, LLMClient, build_client, interrupt_all
from .errors import (
    DatasetError,
    EmptySelectionWarning,
    JudgeFamilyWarning,
    LLMEvalAssertionError,
)
from .files import nonfinite_as_null, write_json
from .outcomes import raised_by_app
from .partitions import PARTITIONS
from .records import LLM_ERROR, NOT_RUN, WORKER_CRASHED, Record
from .session import (
    BudgetVerdict,
    GateVerdict,
    PartitionStats,
    aggregate,
    build_report,
    check_time_budgets,
    distrust_biased_ties,
    evaluate_gates,
    failure_reasons,
    incomplete_line,
    summary_lines,
)
from .settings import Settings

if TYPE_CHECKING:
    from .dataset import Dataset, Example
    from .embeddings import Embedder
    from .judge import Judge
    from .regression import Comparison

SETTINGS_KEY = pytest.StashKey[Settings]()
CONTROLLER_KEY = pytest.StashKey["Controller"]()
PREVIOUS_THRESHOLDS_KEY = pytest.StashKey[dict[str, float]]()
DATASETS_KEY = pytest.StashKey[dict[Path, "Dataset"]]()
EXAMPLE_KEY = pytest.StashKey["Example"]()
RECORD_KEY = pytest.StashKey[Record]()
PREVIOUS_RECORD_KEY = pytest.StashKey[Record | None]()
EMBEDDING_CLIENTS_KEY = pytest.StashKey[list[LLMClient]]()  # restored after the test (pytester)
REPORT_ATTR = "llmeval_record"  # the record's JSON form, on each eval test's teardown report
SOFT_ATTR = "llmeval_soft"  # set on the call report of a failure in a soft partition
ERROR_ATTR = "llmeval_error"  # the class of an error: a lost model call, a broken test
SELECTION_ATTR = "llmeval_selection"  # a worker's selected eval tests, on its first report
SELECTION_SENT_KEY = pytest.StashKey[bool]()
TEST_FILES_KEY = pytest.StashKey[tuple[str, ...]]()

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
    # The controller reads the baseline: a bad one stops the run before anything changed.
    controller = None if hasattr(config, "workerinput") else Controller(config, effective)
    config.stash[SETTINGS_KEY] = effective
    config.stash[DATASETS_KEY] = {}
    config.stash[PREVIOUS_THRESHOLDS_KEY] = thresholds.configure(effective.thresholds)
    embeddings.set_default(lambda: _session_embedder(config))
    if controller is not None:
        config.stash[CONTROLLER_KEY] = controller
        config.pluginmanager.register(controller, "llmeval-controller")


def pytest_unconfigure(config: pytest.Config) -> None:
    previous = config.stash.get(PREVIOUS_THRESHOLDS_KEY, None)
    if previous is not None:
        thresholds.configure(previous)
    embeddings.set_default(None)
    for client in config.stash.get(EMBEDDING_CLIENTS_KEY, []):
        client.close()
    controller = config.stash.get(CONTROLLER_KEY, None)
    if controller is not None:
        config.pluginmanager.unregister(controller)
        del config.stash[CONTROLLER_KEY]


def _session_embedder(config: pytest.Config) -> Embedder:
    """The embedder of ``llmeval_embedding_model``, built on first use: an OpenAI
    embedding model gets a client of its own (cached, retried, not the app's role)."""
    effective = config.stash[SETTINGS_KEY]

    def client() -> LLMClient:
        # Its own endpoint: a chat server and an embedding server are often two processes.
        base_url = effective.embedding_base_url or effective.app.base_url
        app = dataclasses.replace(effective.app, role="embeddings", base_url=base_url)
        built = build_client(app, effective.cache_dir, effective.cache_mode)
        config.stash.setdefault(EMBEDDING_CLIENTS_KEY, []).append(built)
        return built

    return embeddings.build_embedder(effective.embedding_model, client)


@pytest.fixture(scope="session")
def embedder() -> Embedder:
    """The session's embedder (``llmeval_embedding_model``): ``embedder.embed(texts)``;
    ``assert_similar`` uses it unless given another."""
    return embeddings.default_embedder()


def pytest_keyboard_interrupt() -> None:
    # Whichever thread the Ctrl-C reached: no client sends or retries anything more.
    interrupt_all()


def pytest_report_header(config: pytest.Config) -> str:
    return f"llmeval: {config.stash[SETTINGS_KEY].describe()}"


# --- one test per example -----------------------------------------------------------


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    marker = metafunc.definition.get_closest_marker("llmeval")
    if marker is None:
        return
    if "example" not in metafunc.fixturenames:
        pytest.fail(
            f"{metafunc.function.__name__} is marked llmeval but takes no 'example' argument",
            pytrace=False,
        )
    try:
        dataset = _dataset_for(metafunc, marker)
    except DatasetError as exc:
        problem: DatasetError | None = exc
    else:
        problem = None
    if problem is not None:  # outside the except block: one message, not two
        pytest.fail(f"llmeval dataset error: {problem}", pytrace=False)
    params = dataset.params()
    if inspect.iscoroutinefunction(metafunc.function) and _needs_asyncio_mark(metafunc):
        params = [
            pytest.param(*p.values, id=p.id, marks=[*p.marks, pytest.mark.asyncio]) for p in params
        ]
    metafunc.parametrize("example", params)


def _needs_asyncio_mark(metafunc: pytest.Metafunc) -> bool:
    # pytest-asyncio only runs coroutine tests carrying its marker (in strict mode); an
    # eval test is async on purpose, so mark it unless the user already did.
    return (
        metafunc.config.pluginmanager.hasplugin("asyncio")
        and metafunc.definition.get_closest_marker("asyncio") is None
    )


def _dataset_for(metafunc: pytest.Metafunc, marker: pytest.Mark) -> Dataset:
    from .dataset import load_dataset

    kwargs = dict(marker.kwargs)
    if marker.args:
        kwargs.setdefault("dataset", marker.args[0])
    unknown = set(kwargs) - {"dataset", "partition", "tags"}
    if "dataset" not in kwargs or unknown:
        pytest.fail(
            "usage: @pytest.mark.llmeval(dataset='path', partition=None, tags=None)"
            + (f"; unknown argument(s) {sorted(unknown)}" if unknown else ""),
            pytrace=False,
        )
    path = _resolve(Path(str(kwargs["dataset"])), metafunc)
    cache = metafunc.config.stash[DATASETS_KEY]
    if path not in cache:
        cache[path] = load_dataset(path)
    dataset = cache[path]
    partitions, tags = _as_list(kwargs.get("partition")), _as_list(kwargs.get("tags"))
    for partition in partitions or ():
        if partition not in PARTITIONS:
            pytest.fail(
                f"{metafunc.function.__name__}: llmeval marker asks for unknown partition "
                f"{partition!r}; valid: {', '.join(PARTITIONS)}",
                pytrace=False,
            )
    if partitions is not None or tags is not None:
        dataset = dataset.filter(partitions=partitions, tags=tags)
        if not len(dataset):
            metafunc.definition.warn(
                EmptySelectionWarning(
                    f"{metafunc.function.__name__}: no example of {path} matches "
                    f"partition={partitions} tags={tags}; the test will be skipped"
                )
            )
    return dataset


def _resolve(path: Path, metafunc: pytest.Metafunc) -> Path:
    """Relative paths: the test file's folder first, then the llmeval_datasets_dir."""
    if path.is_absolute():
        return path
    candidates = [metafunc.definition.path.parent / path]
    datasets_dir = metafunc.config.stash[SETTINGS_KEY].datasets_dir
    if datasets_dir is not None:
        candidates.append(datasets_dir / path)
    for candidate in candidates:
        if candidate.exists():
            return candidate
    raise DatasetError(str(path), "not found; looked in " + ", ".join(map(str, candidates)))


def _as_list(value: Any) -> list[str] | None:
    if value is None:
        return None
    return [value] if isinstance(value, str) else list(value)


@pytest.hookimpl(tryfirst=True)  # before -k and -m deselect, so tags are keywords
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if "pytest_llmeval.dataset" not in sys.modules:
        return  # no example can exist without the dataset module
    from .dataset import Example

    wanted = set(config.stash[SETTINGS_KEY].tags)
    kept, dropped = [], []
    for item in items:
        callspec = getattr(item, "callspec", None)
        example = (
            next((v for v in callspec.params.values() if isinstance(v, Example)), None)
            if callspec is not None
            else None
        )
        if example is not None:
            item.stash[EXAMPLE_KEY] = example
            item.extra_keyword_matches.update(example.tags)
            if wanted and wanted.isdisjoint(example.tags):
                dropped.append(item)
                continue
        kept.append(item)
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = kept


# --- records --------------------------------------------------------------------------


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    # A plain hook, not a protocol wrapper: this runs for every test of the session.
    example = item.stash.get(EXAMPLE_KEY, None)
    if example is None:
        return
    record = Record(*_selected(item.nodeid, example))
    if example.human_score is not None or example.human_labels:
        record.human = {"score": example.human_score, "labels": example.human_labels}
    item.stash[RECORD_KEY] = record
    item.stash[PREVIOUS_RECORD_KEY] = records.bind(record)


# What is known of an eval test before it runs, in the order of Record's first fields
# (example id, partition, node id, dataset name and hash, tags): its record's start, and
# what the controller records for a test that never reports back (a crashed worker, an
# interrupted run). A tuple, as it travels from each xdist worker.
Selected = tuple[str, str, str, str | None, str | None, list[str]]


def _selected(nodeid: str, example: Example) -> Selected:
    name, digest = example.dataset_info
    return (example.id, example.partition, nodeid, name, digest, list(example.tags))


def _selection(items: list[pytest.Item]) -> list[Selected]:
    return [
        _selected(item.nodeid, example)
        for item in items
        if (example := item.stash.get(EXAMPLE_KEY, None)) is not None
    ]


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
            setattr(report, SELECTION_ATTR, _selection(item.session.items))
    _update(record, report, call, _test_files(item.config))
    if report.when in ("setup", "call") and record.status == "error":
        # An error (a model call lost after its retries, a broken test), not a failure
        # of the model's quality: shown as pytest shows errors, never softened.
        setattr(report, ERROR_ATTR, record.failure_kind)
    elif (
        report.when in ("setup", "call")
        and report.failed
        and record.status == "failed"
        and not item.config.stash[SETTINGS_KEY].is_hard(record.partition)
    ):
        # A soft partition's failure is shown and recorded but does not fail the
        # session by itself: the partition's minimum pass rate decides.
        record.soft = True
        report.outcome = "skipped"
        report.wasxfail = f"soft failure ({record.partition}): {record.failure_kind}"
        setattr(report, SOFT_ATTR, True)
    if report.when == "teardown":
        setattr(report, REPORT_ATTR, record.to_json())
        records.bind(item.stash[PREVIOUS_RECORD_KEY])
        del item.stash[RECORD_KEY]  # it travels on the report now; items live all session
    return report


def _update(
    record: Record,
    report: pytest.TestReport,
    call: pytest.CallInfo[None],
    test_files: tuple[str, ...],
) -> None:
    """Set the record's timing, status and failure from one phase's report, by the rule
    the README's "Failures and errors" states: an assertion is a quality failure, an
    exception raised in the app's code is the app failing, a model call lost after its
    retries is an error of the infrastructure, and anything else (raised in the test's
    own code, a fixture, or by the plugin refusing its arguments) is a broken test."""
    exc = call.excinfo.value if call.excinfo is not None else None
    record.elapsed_s = (record.elapsed_s or 0.0) + report.duration
    if report.when == "call":
        record.duration_s = report.duration
    elif report.when == "setup":
        record.started_at = report.start
    else:
        record.finished_at = report.stop
    if report.passed:
        return
    if report.skipped:
        if hasattr(report, "wasxfail"):  # an expected failure is still not a pass
            record.fail("failed", "xfail", f"xfail: {report.wasxfail}")
        else:
            record.status = "skipped"
            longrepr = report.longrepr
            record.failure_reason = longrepr[2] if isinstance(longrepr, tuple) else str(longrepr)
        return
    if isinstance(exc, LLMCallError):  # also in setup: a batched fixture's lost call
        record.fail("error", f"{LLM_ERROR}{exc.kind}", str(exc))
    elif report.when == "call" and isinstance(exc, pytest.fail.Exception):
        record.fail("failed", "pytest.fail", _exconly(call))  # the test's own verdict
    elif exc is not None and report.when != "teardown" and raised_by_app(exc, test_files):
        record.fail("failed", f"app error: {type(exc).__name__}", _exconly(call))
    elif report.when != "call":
        kind = f"{report.when} error: {type(exc).__name__}" if exc else f"{report.when} error"
        record.fail("error", kind, _exconly(call))
    elif isinstance(exc, LLMEvalAssertionError):
        record.fail("failed", exc.kind, str(exc))
    elif isinstance(exc, AssertionError):
        record.fail("failed", "assertion", _exconly(call))
    else:
        kind = f"test error: {type(exc).__name__}" if exc else "test error"
        record.fail("error", kind, _exconly(call))


def _test_files(config: pytest.Config) -> tuple[str, ...]:
    """The file name patterns of the test's own code: test modules and conftests."""
    patterns = config.stash.get(TEST_FILES_KEY, None)
    if patterns is None:
        patterns = config.stash[TEST_FILES_KEY] = (*config.getini("python_files"), "conftest.py")
    return patterns


def _exconly(call: pytest.CallInfo[None]) -> str:
    return call.excinfo.exconly()[:2000] if call.excinfo is not None else ""


@pytest.hookimpl(tryfirst=True)  # before the xfail plugin claims the report
def pytest_report_teststatus(
    report: pytest.TestReport,
) -> tuple[str, str, tuple[str, dict[str, bool]]] | None:
    if getattr(report, SOFT_ATTR, False):
        return "softfailed", "f", ("SOFTFAIL", {"yellow": True})
    if getattr(report, ERROR_ATTR, None):
        return "error", "E", ("ERROR", {"red": True})
    return None


@pytest.fixture
def llmeval_record(request: pytest.FixtureRequest) -> Record:
    """The running eval test's record: set ``output``, ``model``, ``prompt_version``,
    ``latency_s``, ``tokens``/``add_usage(...)``, or custom values with ``record[key] = v``."""
    record: Record | None = request.node.stash.get(RECORD_KEY, None)
    if record is None:
        pytest.fail(
            "llmeval_record is only available in eval tests (tests parametrized over dataset "
            "examples with @pytest.mark.llmeval or dataset.params())",
            pytrace=False,
        )
    return record


@pytest.fixture(scope="session")
def llm(pytestconfig: pytest.Config) -> Generator[LLMClient, None, None]:
    """The client for the app under test: ``llm.chat.completions.create(...)``,
    ``llm.complete(prompt)``, ``await llm.aio.chat.completions.create(...)``. Cached,
    retried, bounded, and recorded (model, tokens, cost, latency) in the running test."""
    settings_ = pytestconfig.stash[SETTINGS_KEY]
    client = build_client(settings_.app, settings_.cache_dir, settings_.cache_mode)
    yield client
    client.close()


@pytest.fixture(scope="session")
def judge_client(pytestconfig: pytest.Config) -> Generator[LLMClient, None, None]:
    """The client for the judge model (``--llmeval-judge-model``), with the same cache,
    retries and bounds as ``llm``."""
    settings_ = pytestconfig.stash[SETTINGS_KEY]
    client = build_client(settings_.judge, settings_.cache_dir, settings_.cache_mode)
    yield client
    client.close()


@pytest.fixture(scope="session")
def judge(pytestconfig: pytest.Config, judge_client: LLMClient) -> Judge:
    """The LLM judge: ``judge.score(response, task=..., criteria=...)`` on a 1-5 rubric,
    or ``assert_judge(judge, response, task=..., criteria=...)``."""
    from .judge import Judge, model_family

    settings_ = pytestconfig.stash[SETTINGS_KEY]
    judge_model, app_model = settings_.judge.model, settings_.app.model
    if judge_model and app_model and model_family(judge_model) == model_family(app_model):
        warnings.warn(
            JudgeFamilyWarning(
                f"the judge ({judge_model}) and the model under test ({app_model}) are both "
                f"{model_family(app_model)} models: judges tend to favour their own family; "
                "prefer a judge from another family (--llmeval-judge-model)"
            ),
            stacklevel=2,
        )
    # The temperature was checked at start-up (settings.from_config).
    return Judge(
        judge_client,
        n_samples=settings_.judge_samples,
        temperature=settings_.judge.temperature,
        max_tokens=settings_.judge_max_tokens,
    )


# --- the controller: aggregate, gate, summarise, report -------------------------------


class Controller:
    """Session state on the controlling process (the only process without xdist)."""

    def __init__(self, config: pytest.Config, effective: Settings) -> None:
        self.config = config
        self.settings = effective
        self.records: list[Record] = []
        self.started = time.time()
        self._cached: (
            tuple[int, tuple[list[Record], dict[str, PartitionStats], list[GateVerdict]]] | None
        ) = None
        self.baseline: list[dict[str, Any]] | None = None
        if effective.regression.baseline is not None:
            try:
                self.baseline = read_records(effective.regression.baseline)
            except ValueError as exc:
                raise pytest.UsageError(f"llmeval_baseline: {exc}") from None
        self._compared: tuple[int, list[Comparison] | str] | None = None
        self.selected: dict[str, Selected] = {}  # node id -> what is known before it ran
        self.crashed: dict[str, str] = {}  # node id -> what xdist said of its worker
        self.failed_nodeids: set[str] = set()  # every test with a failed report
        self.session: pytest.Session | None = None
        self.interrupted = False
        self.report_problem: str | None = None  # why the report needed repair

    def pytest_collection_finish(self, session: pytest.Session) -> None:
        if not self.config.option.collectonly:  # nothing runs, so nothing goes missing
            self.selected.update((entry[2], entry) for entry in _selection(session.items))

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        selection = getattr(report, SELECTION_ATTR, None)
        if selection is not None:
            self.selected.update((entry[2], tuple(entry)) for entry in selection)
        if report.failed:
            self.failed_nodeids.add(report.nodeid)
        data = getattr(report, REPORT_ATTR, None)
        if data is not None and report.when == "teardown":
            self.records.append(Record.from_json(data))
        elif report.when not in ("setup", "call", "teardown") and report.failed:
            # xdist's report of a worker that died while running this test: no teardown,
            # so no record will come from it.
            self.crashed[report.nodeid] = str(report.longrepr)

    def pytest_keyboard_interrupt(self) -> None:
        self.interrupted = True

    @pytest.hookimpl(wrapper=True)
    def pytest_runtestloop(self, session: pytest.Session) -> Generator[None, object, object]:
        self.session = session
        result = yield
        # Every worker is done: whatever the summary's last line names (a gate, an
        # error, a test that never ran, a blocking regression...) fails the session, so
        # the exit status always agrees with it.
        if self._failed():
            session.testsfailed += 1
        return result

    def _outcome(self) -> tuple[list[Record], dict[str, PartitionStats], list[GateVerdict]]:
        """Records in a stable order (the same serially and under xdist), their stats and
        the gates' verdicts; computed once per set of records. Every selected eval test
        has a record: one that never reported back gets one saying why."""
        key = hash((len(self.records), len(self.selected), len(self.crashed), self._stopped()))
        if self._cached is None or self._cached[0] != key:
            order = {p: i for i, p in enumerate(PARTITIONS)}
            everything = self.records + self._unreported()
            distrust_biased_ties(everything, self.settings.max_position_bias)
            ordered = sorted(everything, key=lambda r: (order.get(r.partition, 99), r.nodeid))
            stats = aggregate(ordered)
            self._cached = (key, (ordered, stats, evaluate_gates(ordered, stats, self.settings)))
        return self._cached[1]

    def _unreported(self) -> list[Record]:
        """A record for each selected eval test without one: an error when its worker
        crashed while running it, else a test the run never got to (not run)."""
        reported = {r.nodeid for r in self.records}
        missing = []
        for nodeid, known in self.selected.items():
            if nodeid in reported:
                continue
            record = Record(*known)
            if nodeid in self.crashed:
                record.fail("error", WORKER_CRASHED, self.crashed[nodeid])
            else:
                record.status = "skipped"
                record.failure_kind = NOT_RUN
                record.failure_reason = f"not run: {self._stopped() or 'it never reported back'}"
            missing.append(record)
        return missing

    def _stopped(self) -> str | None:
        """Why the run ended before every test ran, or None."""
        if self.interrupted:
            return "the run was interrupted"
        session = self.session
        if session is not None and (session.shouldfail or session.shouldstop):
            return f"the run stopped early ({session.shouldfail or session.shouldstop})"
        return None

    def _other_failures(self) -> int:
        """Failed tests that are not eval tests: they fail the run too."""
        evals = {r.nodeid for r in self.records} | set(self.selected)
        return len(self.failed_nodeids - evals)

    def _comparisons(self) -> list[Comparison] | str | None:
        """The gated comparisons with the baseline (None without one), or the hard error
        (duplicate ids, a score off the scale) that prevented them."""
        if self.baseline is None:
            return None
        ordered = self._outcome()[0]
        key = self._cached[0] if self._cached is not None else 0
        if self._compared is None or self._compared[0] != key:
            result: list[Comparison] | str
            try:
                candidate = [r.to_json() for r in ordered]
                result = compare_runs(self.baseline, candidate, self.settings.regression)
            except ValueError as exc:
                result = f"regression: ERROR, cannot compare with the baseline: {exc}"
            self._compared = (key, result)
        return self._compared[1]

    def _regression_blocks(self) -> bool:
        result = self._comparisons()
        if isinstance(result, str):
            return self.settings.regression.fails
        return result is not None and decision(result, fails=self.settings.regression.fails)[0]

    def _budgets(self) -> list[BudgetVerdict]:
        stats, budgets = self._outcome()[1], self.settings.time_budget
        return check_time_budgets(stats, budgets, strict=self.settings.time_budget_strict)

    def _failed(self) -> bool:
        return bool(self._reasons())

    def _reasons(self) -> list[str]:
        """Everything that fails the run, each named as the summary's last line says it."""
        ordered, _, verdicts = self._outcome()
        return failure_reasons(
            ordered,
            verdicts,
            regression_blocks=self._regression_blocks(),
            budgets=self._budgets(),
            other_failures=self._other_failures(),
        )

    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        if not self.records and not self.selected:
            return
        ordered, stats, verdicts = self._outcome()
        reasons = self._reasons()
        failed = bool(reasons)
        write = terminalreporter.write_line
        terminalreporter.write_sep("=", "llmeval summary", red=failed, green=not failed, bold=True)
        for text, markup in summary_lines(
            ordered,
            stats,
            verdicts,
            budgets=self._budgets(),
            verbosity=terminalreporter.verbosity,
            max_position_bias=self.settings.max_position_bias,
        ):
            write(text, **markup)
        result = self._comparisons()
        if result is not None:
            write("")
            write(f"regression against the baseline {self._baseline_name()}:")
            if isinstance(result, str):
                write(result, red=True, bold=True)
            else:
                blocks = self._regression_blocks()
                for text in table_lines(result, verbose=terminalreporter.verbosity > 0):
                    write(text)
                line = decision(result, fails=self.settings.regression.fails)[1]
                write(line, red=blocks, bold=blocks, green=not blocks)
        write("")
        if self.report_problem:
            write(f"report: {self.report_problem}", yellow=True)
        incomplete = incomplete_line(ordered)
        if incomplete:
            write(incomplete, red=True, bold=True)
        # The last line names everything that fails the run, so that it always agrees
        # with the exit status.
        if failed:
            write(f"llmeval: FAIL ({'; '.join(reasons)})", red=True, bold=True)
        else:
            write("llmeval: PASS", green=True, bold=True)

    def pytest_sessionfinish(self, session: pytest.Session, exitstatus: int) -> None:
        self.session = session
        if exitstatus == pytest.ExitCode.INTERRUPTED:
            self.interrupted = True
        targets = [self.settings.report, self.settings.regression.save_baseline]
        if not any(targets):
            return
        document = build_report(
            *self._outcome(),
            self._run_metadata(int(exitstatus)),
            regression=self._regression_json(),
            budgets=self._budgets(),
            failures=self._reasons(),
        )
        for path in filter(None, targets):
            target = path if path.is_absolute() else self.config.invocation_params.dir / path
            try:
                write_json(target, document)
            except ValueError as exc:
                # A non-finite number from a test's own values: the report is still
                # written (standard JSON, null in its place), and the summary says so.
                self.report_problem = f"{exc}; written as null"
                write_json(target, nonfinite_as_null(document))

    def _baseline_name(self) -> str:
        """The baseline's path as the user would type it: relative to the current
        directory when it is below it."""
        path = self.settings.regression.baseline
        assert path is not None
        try:
            return str(path.relative_to(self.config.invocation_params.dir))
        except ValueError:
            return str(path)

    def _regression_json(self) -> dict[str, Any] | None:
        result = self._comparisons()
        if result is None:
            return None
        return {
            "baseline": str(self.settings.regression.baseline),
            "blocks": self._regression_blocks(),
            "fails_session": self.settings.regression.fails,
            "error": result if isinstance(result, str) else None,
            "comparisons": [] if isinstance(result, str) else [c.to_json() for c in result],
        }

    def _run_metadata(self, exitstatus: int) -> dict[str, Any]:
        finished = time.time()
        return {
            "started_at": datetime.fromtimestamp(self.started, UTC).isoformat(),
            "finished_at": datetime.fromtimestamp(finished, UTC).isoformat(),
            "duration_s": round(finished - self.started, 3),
            "exit_status": exitstatus,
            "args": list(self.config.invocation_params.args),
            "rootdir": str(self.config.rootpath),
            "git_commit": _git_commit(self.config.rootpath),
            "plugin_version": __version__,
            "pytest_version": pytest.__version__,
            "python": platform.python_version(),
            "settings": self.settings.describe(),
        }


def _git_commit(where: Path) -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=where,
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None
