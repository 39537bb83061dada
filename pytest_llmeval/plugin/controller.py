"""The controller: on the controlling process (the only one without xdist) it gathers
every eval test's record, gives one to each selected test that never reported back,
applies the partition rules, budgets and regression to the exit status, and writes the
summary and the JSON report."""

from __future__ import annotations

import os
import platform
import subprocess
import time
from collections.abc import Callable, Generator
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from .. import __version__
from ..files import nonfinite_as_null, write_json
from ..partitions import PARTITIONS
from ..records import NOT_RUN, WORKER_CRASHED, Record, RecordJSON
from ..runs.compare import compare_runs, decision
from ..runs.draws import Flaky, aggregate_cases, reduce_draws
from ..runs.render import summary_lines, table_lines
from ..runs.report import ReportJSON, build_report
from ..runs.summary import (
    BudgetVerdict,
    PartitionStats,
    PartitionVerdict,
    check_partitions,
    check_time_budgets,
    distrust_biased_ties,
    failure_reasons,
    incomplete_line,
)
from ..settings import Settings
from .collection import Selected, selection
from .keys import REPORT_ATTR, SELECTION_ATTR, SHARD_TESTS_ATTR, SHARD_TESTS_KEY

STEP_SUMMARY = "GITHUB_STEP_SUMMARY"  # GitHub Actions' job summary file

if TYPE_CHECKING:
    from ..runs.plan import Plan
    from ..stats import Comparison


# The run's records (one per test), its partition stats and rules' verdicts (over cases:
# an example's draws count once), and its flaky cases.
Outcome = tuple[list[Record], dict[str, PartitionStats], list[PartitionVerdict], list[Flaky]]


class Controller:
    """Session state on the controlling process (the only process without xdist)."""

    def __init__(
        self,
        config: pytest.Config,
        effective: Settings,
        baseline: list[RecordJSON] | None,
        planned: Plan | None = None,
    ) -> None:
        self.config = config
        self.settings = effective
        self.plan = planned  # the power plan against the baseline, shown before the run
        self.records: list[Record] = []
        self.started = time.time()
        self._cached: tuple[int, Outcome] | None = None
        self.baseline = baseline  # its records, read by settings.read_baseline
        self._compared: tuple[int, list[Comparison] | str] | None = None
        self.selected: dict[str, Selected] = {}  # node id -> what is known before it ran
        self.shard_tests: list[str] | None = None  # --llmeval-shard: every shard's eval tests
        self.crashed: dict[str, str] = {}  # node id -> what xdist said of its worker
        self.failed_nodeids: set[str] = set()  # every test with a failed report
        self.session: pytest.Session | None = None
        self.interrupted = False
        self.report_problem: str | None = None  # why the report needed repair
        self.view_problems: list[str] = []  # the run's page, Markdown or history not written

    def pytest_collection_finish(self, session: pytest.Session) -> None:
        if not self.config.option.collectonly:  # nothing runs, so nothing goes missing
            self.selected.update((entry[2], entry) for entry in selection(session.items))
            self.shard_tests = self.config.stash.get(SHARD_TESTS_KEY, None)

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        selection = getattr(report, SELECTION_ATTR, None)
        if selection is not None:
            self.selected.update((entry[2], tuple(entry)) for entry in selection)
        tests = getattr(report, SHARD_TESTS_ATTR, None)
        if tests is not None:
            self.shard_tests = list(tests)
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
        # Every worker is done: whatever the summary's last line names (a partition rule,
        # an error, a test that never ran, a blocking regression...) fails the session, so
        # the exit status always agrees with it.
        if self._failed():
            session.testsfailed += 1
        return result

    def _outcome(self) -> Outcome:
        """Records in a stable order (the same serially and under xdist), their stats and
        the partition rules' verdicts; computed once per set of records. Every selected
        eval test has a record: one that never reported back gets one saying why."""
        key = hash((len(self.records), len(self.selected), len(self.crashed), self._stopped()))
        if self._cached is None or self._cached[0] != key:
            order = {p: i for i, p in enumerate(PARTITIONS)}
            everything = self.records + self._unreported()
            distrust_biased_ties(everything, self.settings.max_position_bias)
            ordered = sorted(everything, key=lambda r: (order.get(r.partition, 99), r.nodeid))
            reduced = reduce_draws(ordered, self.settings)  # repeated draws: one case each
            stats = aggregate_cases(reduced)
            verdicts = check_partitions(reduced.cases, stats, self.settings)
            self._cached = (key, (ordered, stats, verdicts, reduced.flaky))
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
            except (KeyError, TypeError) as exc:  # a record of another shape (edited?)
                result = (
                    "regression: ERROR, cannot compare with the baseline: a record lacks or "
                    f"mistypes a field ({type(exc).__name__}: {exc})"
                )
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
        ordered, _, verdicts, _ = self._outcome()
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
        ordered, stats, verdicts, flaky = self._outcome()
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
            flaky=flaky,
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
        for problem in self.view_problems:
            write(problem, yellow=True)
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
        if not any(targets) and not self._views():
            return
        ordered, stats, verdicts, flaky = self._outcome()
        document = build_report(
            ordered,
            stats,
            verdicts,
            self._run_metadata(int(exitstatus)),
            flaky=flaky,
            regression=self._regression_json(),
            budgets=self._budgets(),
            failures=self._reasons(),
        )
        finite: ReportJSON | None = None  # the document as standard JSON, once known
        for path in filter(None, targets):
            target = path if path.is_absolute() else self.config.invocation_params.dir / path
            try:
                write_json(target, finite or document)
                finite = finite or document  # written: it holds no NaN
            except ValueError as exc:
                # A non-finite number from a test's own values: the report is still
                # written (standard JSON, null in its place), and the summary says so.
                self.report_problem = f"{exc}; written as null"
                finite = nonfinite_as_null(document)
                write_json(target, finite)
        self._write_views(finite or nonfinite_as_null(document))

    def verdicts(
        self,
    ) -> tuple[Outcome, list[str], list[Comparison] | str | None, list[BudgetVerdict]]:
        """The run's outcome, what fails it, the regression comparisons (or the error that
        prevented them) and the time budgets' verdicts, as the summary shows them (the
        JUnit properties read them)."""
        return self._outcome(), self._reasons(), self._comparisons(), self._budgets()

    def _views(self) -> bool:
        """Whether the run is also written as a page, Markdown or into a history: only a
        session that selected eval tests (a unit-test job in the same CI adds nothing)."""
        if self.config.option.collectonly or not (self.records or self.selected):
            return False
        s = self.settings
        return bool(s.html or s.markdown or s.history_dir or os.environ.get(STEP_SUMMARY))

    def _write_views(self, document: ReportJSON) -> None:
        """The run's HTML page, its Markdown summary and its entry in the history: each
        written even when the run failed or was interrupted, each on its own (one that
        cannot be written is said in the summary, never the end of the session)."""
        if not self._views():
            return
        here = self.config.invocation_params.dir
        s = self.settings
        html = None if s.html is None else s.html if s.html.is_absolute() else here / s.html
        views: list[tuple[str, Callable[[], object]]] = []
        if s.history_dir is not None:
            from ..runs.history import add_run

            history = s.history_dir
            views.append(("history", lambda: add_run(document, history)))
        if html is not None:
            from ..html.report import write_html

            views.append(("page", lambda: write_html(document, html, baseline=self.baseline)))
        summary = os.environ.get(STEP_SUMMARY)
        if s.markdown is not None or summary:
            from ..runs.markdown import write_markdown

            md = s.markdown if s.markdown is None or s.markdown.is_absolute() else here / s.markdown
            # The page's link, as the Markdown file's folder reaches it.
            link = html if html is None or md is None else os.path.relpath(html, md.parent)
            views.append(
                (
                    "Markdown",
                    lambda: write_markdown(
                        document, md, html=link, step_summary=summary, baseline=self.baseline
                    ),
                )
            )
        for name, write in views:
            try:
                write()
            except Exception as exc:  # a view is never worth the session's verdict
                self.view_problems.append(f"the run's {name} was not written: {exc}")

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
            **self._shard(),
        }

    def _shard(self) -> dict[str, Any]:
        """The shard this run was (``llmeval merge`` checks the shards against each other):
        its index and count, and the eval tests of every shard (unknown when no worker of
        this shard ran an eval test)."""
        if self.settings.shard is None:
            return {}
        index, count = self.settings.shard
        return {"shard": {"index": index, "count": count, "tests": self.shard_tests}}


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
