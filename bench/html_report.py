"""The run's page at 1,000 records: its size, and how long headless Chromium takes to
load it (from navigation start to the records' table drawn, as the page's script
records it in ``data-rendered-ms``; and the whole ``chromium --dump-dom`` process, start
and exit included).

Two runs of 1,000 records, both from the example suite's v2 report (every record of it,
cycled, each copy its own example id and test):

- ``suite``: as the suite writes them (the same answer checked by several tests, the
  same knowledge-base passages retrieved), which the page stores once;
- ``unique``: every long text made unique (output, judge reasoning, failure reason,
  retrieved passages), the worst case for the page's size.

    python bench/html_report.py                     # runs the example suite first (~1 min)
    python bench/html_report.py --report v2.json    # an example suite v2 report you have
"""

from __future__ import annotations

import argparse
import copy
import json
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from pytest_llmeval.html.report import write_html  # noqa: E402


def suite_report(directory: Path) -> Path:
    target = directory / "v2.json"
    subprocess.run(
        [
            *(sys.executable, "-m", "pytest", "example_suite", "--prompt-version", "v2"),
            *("-q", "-p", "no:cacheprovider", f"--llmeval-report={target}"),
        ],
        cwd=ROOT,
        capture_output=True,
        check=False,
    )
    return target


def scaled(document: dict[str, Any], count: int, *, unique: bool) -> dict[str, Any]:
    source = document["records"]
    records = []
    for i in range(count):
        record = copy.deepcopy(source[i % len(source)])
        tag = f"-x{i // len(source)}"
        record["example_id"] += tag
        record["nodeid"] = record["nodeid"].replace("]", f"{tag}]")
        if unique:
            mark = f" [record {i}]"
            if isinstance(record.get("output"), str):
                record["output"] += mark
            if record.get("failure_reason"):
                record["failure_reason"] += mark
            for verdict in record.get("judge") or []:
                if isinstance(verdict.get("reasoning"), str):
                    verdict["reasoning"] += mark
            for step in record.get("steps") or []:
                if "content" in step:
                    step["content"] += mark
                for found in step.get("documents") or []:
                    if "text" in found:
                        found["text"] += mark
        records.append(record)
    # No baseline: the changed examples would be those of one run, not of 1,000 records.
    return {**document, "records": records, "regression": None}


def load(chromium: str, page: Path, profile: Path) -> tuple[float, float]:
    """(ms to the table drawn, as the page measured it; s the whole chromium process)."""
    start = time.perf_counter()
    done = subprocess.run(
        [
            *(chromium, "--headless", "--no-sandbox", "--disable-gpu"),
            *(f"--user-data-dir={profile}", "--dump-dom", page.as_uri()),
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    wall = time.perf_counter() - start
    found = re.search(r'data-rendered-ms="(\d+)"', done.stdout)
    assert found, "the page's script did not finish"
    return float(found.group(1)), wall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--report", type=Path, help="the example suite's v2 JSON report")
    parser.add_argument("--records", type=int, default=1000)
    parser.add_argument("--repeat", type=int, default=5, help="page loads per run")
    options = parser.parse_args()
    chromium = shutil.which("chromium")
    if chromium is None:
        sys.exit("needs Chromium: apt-get install -y chromium")
    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp)
        report = options.report or suite_report(directory)
        document = json.loads(report.read_text())
        print(f"source: {report.name}, {len(document['records'])} records")
        empty = directory / "empty.html"
        empty.write_text(
            "<!DOCTYPE html><script>document.documentElement.setAttribute("
            '"data-rendered-ms", String(Math.round(performance.now())))</script>'
        )
        walls = [load(chromium, empty, directory / f"e{i}")[1] for i in range(options.repeat)]
        print(f" empty: chromium --dump-dom {statistics.median(walls):.2f}s start to exit")
        for unique in (False, True):
            name = "unique" if unique else "suite"
            page = directory / f"{name}.html"
            start = time.perf_counter()
            write_html(scaled(document, options.records, unique=unique), page)
            written = time.perf_counter() - start
            loads = [load(chromium, page, directory / f"p{name}{i}") for i in range(options.repeat)]
            rendered = statistics.median(ms for ms, _ in loads)
            wall = statistics.median(s for _, s in loads)
            print(
                f"{name:>6}: {options.records} records, {page.stat().st_size / 1e6:.2f} MB, "
                f"written in {written:.2f}s; loaded in {rendered:.0f} ms to the table drawn "
                f"(median of {options.repeat}; max {max(ms for ms, _ in loads):.0f} ms), "
                f"chromium --dump-dom {wall:.2f}s start to exit"
            )


if __name__ == "__main__":
    main()
