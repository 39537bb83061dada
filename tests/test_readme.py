"""The README's set-up commands are the ones CI runs, word for word."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_readme_starts_with_the_two_commands_that_ci_runs() -> None:
    readme = (ROOT / "README.md").read_text()
    blocks = re.findall(r"```bash\n(.*?)\n```", readme, flags=re.S)
    example, tests = blocks[0].strip(), blocks[1].strip()
    assert example.endswith("pytest example_suite")
    assert tests.endswith(".venv/bin/pytest")
    ci_lines = (ROOT / ".ci" / "run").read_text().splitlines()
    assert example in ci_lines and tests in ci_lines
