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
from ..files import nonfinite_as_null, shown_path, write_json
from ..records import NOT_RUN, WORKER_CRASHED, Record, RecordJSON
from ..runs.report import ReportJSON
from ..runs.verdict import Verdict, judge_run, report_of, verdict_lines
from ..settings import Settings
from .collection import Selected, selection
from .keys import REPORT_ATTR, SELECTION_ATTR, SHARD_TESTS_ATTR, SHARD_TESTS_KEY

STEP_SUMMARY = "GITHUB_STEP_SUMMARY"  # GitHub Actions' job summary file

if TYPE_CHECKING:
    from ..runs.plan import Plan


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
        self._cached: tuple[int, Verdict] | None = None
        self.baseline = baseline  # its records, read by settings.read_baseline
        self.baseline_settings: Settings | None = None  # the options its session read
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

    def _verdict(self) -> Verdict:
        """The run judged (``runs.verdict``), computed once per set of records. Every
        selected eval test has a record: one that never reported back gets one saying why."""
        key = hash(
            (
                len(self.records),
                len(self.selected),
                len(self.crashed),
                len(self.failed_nodeids),
                self._stopped(),
            )
        )
        if self._cached is None or self._cached[0] != key:
            verdict = judge_run(
                self.records + self._unreported(),
                self.settings,
                self.baseline,
                baseline_settings=self.baseline_settings,
                filtered=self._filtered(),
                other_failures=self._other_failures(),
            )
            self._cached = (key, verdict)
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

    def _failed(self) -> bool:
        return not self._verdict().passed

    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        if not self.records and not self.selected:
            return
        verdict = self._verdict()
        notes = [f"report: {self.report_problem}"] if self.report_problem else []
        terminalreporter.write_sep(
            "=", "llmeval summary", red=not verdict.passed, green=verdict.passed, bold=True
        )
        for text, markup in verdict_lines(
            verdict,
            self.settings,
            baseline_name=self._baseline_name() if self.baseline is not None else "",
            verbosity=terminalreporter.verbosity,
            notes=notes + self.view_problems,
        ):
            terminalreporter.write_line(text, **markup)

    def pytest_sessionfinish(self, session: pytest.Session, exitstatus: int) -> None:
        self.session = session
        if exitstatus == pytest.ExitCode.INTERRUPTED:
            self.interrupted = True
        targets = [self.settings.report, self.settings.regression.save_baseline]
        if not any(targets) and not self._views():
            return
        document = report_of(self._verdict(), self.settings, self._run_metadata(int(exitstatus)))
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

    def verdict(self) -> Verdict:
        """The run judged, as the summary shows it (the JUnit properties read it)."""
        return self._verdict()

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
        return shown_path(path, self.config.invocation_params.dir)

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
            "options": self._options(),
            "filtered": self._filtered(),
            **self._shard(),
        }

    def _filtered(self) -> bool:
        """Whether this run selected its tests with -k, -m or llmeval_tags."""
        option = self.config.option
        return bool(getattr(option, "markexpr", "") or getattr(option, "keyword", "")) or bool(
            self.settings.tags
        )

    def _options(self) -> dict[str, str]:
        """Every option's text as this session read it, the baseline as the path it read
        (``llmeval gate`` judges the report by them)."""
        baseline = self.settings.regression.baseline
        return {**self.settings.options, "baseline": str(baseline) if baseline else ""}

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
