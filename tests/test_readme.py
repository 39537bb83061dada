"""The README's set-up commands are the ones CI runs, word for word."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def test_readme_starts_with_the_two_commands_that_ci_runs() -> None:
    readme = (ROOT / "README.md").read_text()
    blocks = re.findall(r"```bash\n(.*?)\n```", readme, flags=re.S)
    example, tests = blocks[0].strip(), blocks[1].strip()
    assert example.endswith("pytest example_suite")
    assert tests.endswith(".venv/bin/pytest -n auto --dist loadfile")
    ci_lines = (ROOT / ".ci" / "run").read_text().splitlines()
    assert example in ci_lines and tests in ci_lines


def test_every_option_is_in_the_configuration_reference() -> None:
    """Each flag and ini key is in one of the README's tables: its ini key, or for the
    judge's copies of the app's keys, the shared row that names each flag."""
    from pytest_llmeval.settings import OPTIONS

    readme = (ROOT / "README.md").read_text()
    missing = [
        name
        for name, _, _ in OPTIONS
        if f"| `llmeval_{name}` |" not in readme
        and not (
            name.startswith("judge_")
            and f"-{name.replace('_', '-')}`" in readme
            and "`llmeval_judge_*`" in readme
        )
    ]
    assert missing == []
    assert "| `llmeval_datasets_dir` |" in readme


def test_readme_tutorial_runs_as_written(pytester: pytest.Pytester) -> None:
    readme = (ROOT / "README.md").read_text()
    dataset = re.search(r"Save this as `evals/support.jsonl`:\n\n```json\n(.*?)```", readme, re.S)
    test_file = re.search(r"`evals/test_support.py`:\n\n```python\n(.*?)```", readme, re.S)
    shown = re.search(r"```\n(evals/test_support.py \.\..*?)```", readme, re.S)
    assert dataset and test_file and shown
    pytester.makeini("[pytest]\nasyncio_default_fixture_loop_scope = function\n")
    evals = pytester.mkdir("evals")
    (evals / "support.jsonl").write_text(dataset.group(1))
    (evals / "test_support.py").write_text(test_file.group(1))
    result = pytester.runpytest("evals", "-m", "golden")
    assert result.ret == 0
    # The summary as the README shows it, timings aside.
    # Timings vary, and so do the widths of the table's columns (a wall time of 100ms is
    # wider than its header) and the order of examples that took the same time.
    expected = [
        re.sub(r" +\d+ms", " *", re.sub(r"^ +\d+ms  golden-.*", "*golden-*", line))
        .replace("  wall", "*wall")
        .replace("in 0.05s", "in *")
        .replace("[", "[[]")
        for line in shown.group(1).splitlines()
    ]
    result.stdout.fnmatch_lines(expected, consecutive=True)
