"""The ``llmeval`` command. Exit codes: 0 ok, 1 the check failed (or found nothing to
check; for ``compare``, the candidate is blocked), 2 usage error."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .partitions import PARTITIONS
from .settings import OPTIONS

if TYPE_CHECKING:
    from .inifile import IniFile

_DEFAULTS = {name: default for name, _, default in OPTIONS}
_HELP = {name: text for name, text, _ in OPTIONS}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="llmeval", description="pytest-llmeval tools")
    commands = parser.add_subparsers(dest="command", required=True)
    dataset = commands.add_parser("dataset", help="check and describe eval datasets")
    actions = dataset.add_subparsers(dest="action", required=True)
    validate = actions.add_parser("validate", help="load datasets and report every problem")
    validate.add_argument("paths", nargs="+", metavar="PATH")
    stats = actions.add_parser("stats", help="examples per partition and tag, content hash")
    stats.add_argument("path", metavar="PATH")
    stats.add_argument("--json", action="store_true", help="print JSON for machines")
    calibrate = commands.add_parser(
        "calibrate", help="agreement of the judge, similarity and grounding with human labels"
    )
    calibrate.add_argument("report", metavar="REPORT.json", help="a --llmeval-report file")
    calibrate.add_argument("--json", action="store_true", help="print JSON for machines")
    compare = commands.add_parser(
        "compare",
        help="compare a run's report with a baseline report (exit 0 proceed, 1 block)",
    )
    compare.add_argument("baseline", metavar="BASELINE.json", help="the baseline run's report")
    compare.add_argument("candidate", metavar="CANDIDATE.json", help="the candidate's report")
    for name in ("gate", "delta", "alpha"):
        compare.add_argument(f"--{name}", default=_DEFAULTS[name], help=_HELP[name])
    compare.add_argument("--strict", action="store_true", help=_HELP["strict"])
    compare.add_argument("-v", "--verbose", action="store_true", help="show every warning")
    compare.add_argument("--json", action="store_true", help="print JSON for machines")
    plan = commands.add_parser(
        "plan",
        help="the power plan of a run against a baseline: MDE80 per gated comparison, the "
        "draws per example that reach delta, the expected model calls and cost",
    )
    plan.add_argument("baseline", metavar="BASELINE.json", help="the baseline run's report")
    for name in ("gate", "delta", "alpha", "prices"):
        plan.add_argument(f"--{name}", default=_DEFAULTS[name], help=_HELP[name])
    plan.add_argument(
        "--repeat",
        default="auto",
        metavar="DRAWS",
        help="the run's draws per example, as llmeval_repeat: 'auto' (default: the plan "
        "chooses), a number, or per partition ('golden:3 distribution:1'; others 1)",
    )
    plan.add_argument(
        "--repeat-max",
        default="5",
        metavar="N",
        help="the most draws per example the plan may ask for (default: 5)",
    )
    plan.add_argument("--json", action="store_true", help="print JSON for machines")
    promote = commands.add_parser(
        "promote",
        help="turn production failures of a monitor database into regression examples",
    )
    promote.add_argument("db", metavar="MONITOR_DB", help="the monitor's SQLite file")
    promote.add_argument(
        "--to", required=True, metavar="DATASET", help="dataset folder, .jsonl or .json file"
    )
    promote.add_argument(
        "--alert",
        action="append",
        metavar="TYPE",
        help="only failures with an alert of this type (hallucination, constraint, "
        "quality, ...); repeatable; default: any",
    )
    promote.add_argument("--since", metavar="TIME", help="served at or after (ISO or epoch)")
    promote.add_argument("--until", metavar="TIME", help="served before (ISO or epoch)")
    promote.add_argument(
        "--request-id", action="append", metavar="ID", help="only this request; repeatable"
    )
    promote.add_argument(
        "--note", help="the root cause, for every promoted example (asked when omitted)"
    )
    promote.add_argument(
        "--expected", help="the reference answer (asked when omitted and interactive)"
    )
    promote.add_argument(
        "--partition", default="regression", choices=PARTITIONS, help="default: regression"
    )
    promote.add_argument("--dry-run", action="store_true", help="show, write nothing")
    dashboard = commands.add_parser(
        "dashboard", help="draw a monitor database (and CI reports) as one HTML page"
    )
    dashboard.add_argument("db", metavar="MONITOR_DB", help="the monitor's SQLite file")
    dashboard.add_argument(
        "--runs", nargs="+", default=[], metavar="REPORT", help="JSON reports of CI runs"
    )
    dashboard.add_argument("--out", required=True, metavar="FILE.html", help="the page")
    history = commands.add_parser(
        "history",
        help="the runs of a history folder (llmeval_history_dir) in start order: pass rate, "
        "gated metric means, cost and p95 latency, as one HTML page or JSON",
    )
    history.add_argument("directory", metavar="DIR", help="a folder of run reports")
    history.add_argument("--html", metavar="FILE.html", help="draw the runs as one HTML page")
    history.add_argument("--json", action="store_true", help="print the series as JSON")
    merge = commands.add_parser(
        "merge",
        help="merge the reports of a run's shards (--llmeval-shard) into one report, judged "
        "by the options the shards' sessions read, as a session judges a run",
    )
    merge.add_argument("shards", nargs="+", metavar="SHARD.json", help="every shard's report")
    merge.add_argument("-o", "--output", required=True, metavar="RUN.json", help="the report")
    gate = commands.add_parser(
        "gate",
        help="apply the session's rules to a report (the golden rule, pass rates, budgets, "
        "regression against the baseline): the summary, and exit 0 or 1",
    )
    gate.add_argument("report", metavar="RUN.json", help="a report, such as llmeval merge's")
    gate.add_argument("-q", "--quiet", action="store_true", help="the verdicts only, as -q")
    gate.add_argument("-v", "--verbose", action="store_true", help="as pytest -v")
    for each in (merge, gate):
        each.add_argument(
            "--baseline", metavar="BASELINE.json", help="compare with it (default: the session's)"
        )
        each.add_argument(
            "-c",
            dest="inifile",
            metavar="FILE",
            help="judge by this pytest configuration file instead of the recorded options",
        )
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse exits 2 on usage errors, 0 on --help
        return int(exc.code or 0)
    if args.command == "history":
        from .monitor.dashboard import history_command

        html = Path(args.html) if args.html else None
        return history_command(Path(args.directory), html=html, as_json=args.json)
    if args.command == "calibrate":
        return _calibrate(args.report, as_json=args.json)
    if args.command == "compare":
        return _compare(args)
    if args.command in ("merge", "gate"):
        return _judge(args)
    if args.command == "plan":
        return _plan(args)
    if args.command == "promote":
        return _promote(args)
    if args.command == "dashboard":
        return _dashboard(args)
    if args.action == "validate":
        return _validate(args.paths)
    return _stats(args.path, as_json=args.json)


def _validate(paths: Sequence[str]) -> int:
    from .dataset import load_dataset
    from .errors import DatasetError

    status = 0
    for path in paths:
        try:
            dataset = load_dataset(path)
        except DatasetError as exc:
            print(f"INVALID {exc}", file=sys.stderr)
            status = 1
            continue
        counts = ", ".join(f"{p} {n}" for p, n in dataset.partition_counts().items() if n)
        print(f"ok {path}: {len(dataset)} examples ({counts})")
    return status


def _stats(path: str, *, as_json: bool) -> int:
    from .dataset import load_dataset
    from .errors import DatasetError

    try:
        dataset = load_dataset(path)
    except DatasetError as exc:
        print(f"INVALID {exc}", file=sys.stderr)
        return 1
    summary: dict[str, Any] = {
        "name": dataset.name,
        "task_type": dataset.task_type,
        "examples": len(dataset),
        "partitions": dataset.partition_counts(),
        "tags": dataset.tag_counts(),
        "reference_free": sum(ex.expected_output is None for ex in dataset),
        "content_hash": dataset.content_hash(),
    }
    if as_json:
        print(json.dumps(summary, indent=2, allow_nan=False))
        return 0
    print(
        f"{dataset.name}: {len(dataset)} examples"
        + (f" ({dataset.task_type})" if dataset.task_type else "")
    )
    width = max(map(len, PARTITIONS))
    for partition, count in summary["partitions"].items():
        print(f"  {partition:<{width}}  {count:>6}")
    if summary["tags"]:
        print("tags: " + ", ".join(f"{t} {n}" for t, n in summary["tags"].items()))
    print(f"reference-free examples: {summary['reference_free']}")
    print(f"content hash: {summary['content_hash']}")
    return 0


def _calibrate(path: str, *, as_json: bool) -> int:
    try:
        with open(path, encoding="utf-8") as file:
            records = json.load(file)["records"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        print(f"llmeval calibrate: cannot read a report from {path}: {exc}", file=sys.stderr)
        return 2
    from .calibration import from_records, summary_lines

    result = from_records(records)
    if result is None:
        print(f"{path}: no record carries human labels (human_score, human_labels)")
        return 1
    print(
        json.dumps(result, indent=2, allow_nan=False)
        if as_json
        else "\n".join(summary_lines(result))
    )
    return 0


def _compare(args: argparse.Namespace) -> int:
    from .runs.compare import check_deltas, compare_runs, decision
    from .runs.render import table_lines
    from .runs.report import read_records
    from .settings import regression_settings

    values = {
        "gate": args.gate,
        "delta": args.delta,
        "alpha": args.alpha,
        "strict": "yes" if args.strict else "no",
        "regression_fails": "yes",
    }
    try:
        settings = regression_settings(values.__getitem__, lambda name: None)
        check_deltas(settings.delta)  # before reading: a bad flag is the first thing to fix
        baseline = read_records(Path(args.baseline))
        candidate = read_records(Path(args.candidate))
        comparisons = compare_runs(baseline, candidate, settings)
    except ValueError as exc:  # ConfigError too
        print(f"llmeval compare: {exc}", file=sys.stderr)
        return 2
    blocks, line = decision(comparisons)
    if args.json:
        document = {
            "baseline": args.baseline,
            "candidate": args.candidate,
            "blocks": blocks,
            "decision": line,
            "comparisons": [c.to_json() for c in comparisons],
        }
        print(json.dumps(document, indent=2, ensure_ascii=False, allow_nan=False))
    else:
        print(f"{args.candidate} against the baseline {args.baseline}:")
        print("\n".join([*table_lines(comparisons, verbose=args.verbose), line]))
    return 1 if blocks else 0


def _judge(args: argparse.Namespace) -> int:
    """``llmeval merge`` and ``llmeval gate``: a run, from shards merged or from one
    report, judged as its session judged it (``_settings_of``)."""
    from .errors import ConfigError
    from .files import shown_path
    from .inifile import settings_of_report
    from .records import Record
    from .runs.merge import merge_shards
    from .runs.report import read_report
    from .runs.verdict import judge_run, report_of, verdict_lines

    name = f"llmeval {args.command}"
    try:
        if args.command == "merge":
            shards = [(path, read_report(Path(path))) for path in args.shards]
            records, run = merge_shards(shards)
        else:
            report = read_report(Path(args.report))
            records, run = report["records"], report["run"]
        if not records:
            print(f"{name}: no eval test in the run: nothing to judge", file=sys.stderr)
            return 1
        flags = {"baseline": args.baseline} if args.baseline else {}
        settings = _settings_of(run, args.inifile).settings(flags)
        baseline_path = settings.regression.baseline
        baseline, baseline_settings = None, None
        if baseline_path is not None:
            base = read_report(baseline_path)
            baseline, baseline_settings = base["records"], settings_of_report(base)
    except (ConfigError, ValueError) as exc:  # MergeError and a bad report too
        print(f"{name}: {exc}", file=sys.stderr)
        return 2
    verdict = judge_run(
        [Record.from_json(r) for r in records],
        settings,
        baseline,
        baseline_settings=baseline_settings,
        filtered=bool(run.get("filtered")),
    )
    if args.command == "merge":
        from .files import write_json

        document = report_of(verdict, settings, run)
        write_json(Path(args.output), document)
        print(f"{args.output}: {len(records)} tests from {len(args.shards)} shards")
        return 0
    shown = "" if baseline_path is None else shown_path(baseline_path, Path.cwd())
    verbosity = -1 if args.quiet else 1 if args.verbose else 0
    for text, _ in verdict_lines(verdict, settings, baseline_name=shown, verbosity=verbosity):
        print(text)
    return 0 if verdict.passed else 1


def _settings_of(run: dict[str, Any], inifile: str | None) -> IniFile:
    """What judges a report: the options its session read (recorded in ``run``), else
    (an older report, or ``-c FILE``) the project's pytest configuration."""
    from .inifile import IniFile, find_ini

    recorded = None if inifile is not None else IniFile.recorded(run)
    return recorded or find_ini(Path.cwd(), Path(inifile) if inifile else None)


def _plan(args: argparse.Namespace) -> int:
    from .client.pricing import parse_prices
    from .runs.compare import check_deltas
    from .runs.plan import plan, plan_lines
    from .runs.report import read_records
    from .settings import regression_settings

    values = {
        "gate": args.gate,
        "delta": args.delta,
        "alpha": args.alpha,
        "strict": "no",
        "regression_fails": "yes",
    }
    try:
        settings = regression_settings(values.__getitem__, lambda name: None)
        check_deltas(settings.delta)
        try:
            prices = parse_prices(args.prices)
        except ValueError as exc:
            raise ValueError(f"--prices: {exc}") from None
        if not args.repeat_max.isdigit() or int(args.repeat_max) < 1:
            raise ValueError(f"--repeat-max: {args.repeat_max!r} is not a whole number >= 1")
        draws = _draws(args.repeat)
        baseline = read_records(Path(args.baseline))
        planned = plan(
            baseline,
            settings,
            draws=draws,
            repeat_max=int(args.repeat_max),
            prices=prices or None,
        )
    except ValueError as exc:  # ConfigError too
        print(f"llmeval plan: {exc}", file=sys.stderr)
        return 2
    if args.json:
        document = {"baseline": args.baseline, **planned.to_json()}
        print(json.dumps(document, indent=2, ensure_ascii=False, allow_nan=False))
    else:
        print(f"power plan of a run against the baseline {args.baseline}:")
        print("\n".join(plan_lines(planned)))
    return 0


def _draws(raw: str) -> dict[str, int] | None:
    """``--repeat``: None for auto, else the draws of every partition (1 unless named)."""
    if raw.strip() == "auto":
        return None
    if raw.strip().isdigit() and int(raw) >= 1:
        return dict.fromkeys(PARTITIONS, int(raw))
    draws = dict.fromkeys(PARTITIONS, 1)
    for item in raw.replace(",", " ").split():
        partition, _, count = item.partition(":")
        if partition not in PARTITIONS or not count.isdigit() or int(count) < 1:
            raise ValueError(
                f"--repeat: {item!r} is not auto, a number of draws or partition:draws "
                f"(partitions: {', '.join(PARTITIONS)})"
            )
        draws[partition] = int(count)
    return draws


def _time(value: str | None) -> float | None:
    """An ISO date-time (local time unless it says otherwise) or epoch seconds."""
    if value is None:
        return None
    from datetime import datetime

    try:
        return float(value)
    except ValueError:
        return datetime.fromisoformat(value).timestamp()


def _promote(args: argparse.Namespace) -> int:
    from .errors import DatasetError
    from .monitor.promote import promote

    interactive = sys.stdin.isatty()
    if args.note is None and not interactive and not args.dry_run:
        print("llmeval promote: pass --note (the root cause) when not interactive", file=sys.stderr)
        return 2

    def ask(what: str) -> Any:
        def question(sample: Any, alerts: list[dict[str, Any]]) -> str:
            kinds = ", ".join(sorted({a["type"] for a in alerts}))
            print(f"\n{sample.request_id} ({kinds}): {sample.text}\n  output: {sample.output}")
            return input(f"  {what}: ").strip()

        return question

    try:
        result = promote(
            args.db,
            args.to,
            note=args.note if args.note is not None else ask("root cause"),
            expected=args.expected
            if args.expected is not None or not interactive
            else ask("expected answer (blank for none)"),
            alert_types=args.alert,
            since=_time(args.since),
            until=_time(args.until),
            request_ids=args.request_id,
            partition=args.partition,
            dry_run=args.dry_run,
        )
    except (OSError, ValueError, DatasetError) as exc:
        print(f"llmeval promote: {exc}", file=sys.stderr)
        return 2
    verb = "would promote" if args.dry_run else "promoted"
    print(f"{verb} {len(result.added)} example(s) to {result.target}")
    for example in result.added:
        print(f"  {example.id}: {', '.join(example.tags[1:])}")
    if result.duplicates:
        print(f"skipped {len(result.duplicates)} duplicate(s) by input:")
        for request_id, same in result.duplicates:
            print(f"  {request_id}: same input as {same}")
    return 0 if result.added else 1


def _dashboard(args: argparse.Namespace) -> int:
    from .monitor.dashboard import write_dashboard

    try:
        out = write_dashboard(args.db, args.out, args.runs)
    except (OSError, ValueError) as exc:
        print(f"llmeval dashboard: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
