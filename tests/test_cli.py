"""The llmeval command: dataset validate and stats, with their exit codes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from pytest_llmeval.cli import main

GOOD = [
    {"id": "g1", "partition": "golden", "input": {}, "expected_output": "a", "tags": ["billing"]},
    {"id": "d1", "partition": "distribution", "input": {}, "tags": ["billing", "sso"]},
]


@pytest.fixture
def good(tmp_path: Path) -> Path:
    path = tmp_path / "good.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in GOOD))
    return path


def test_validate_ok_and_invalid(
    good: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"id": "x", "partition": "golden"}\n')
    assert main(["dataset", "validate", str(good)]) == 0
    assert capsys.readouterr().out == f"ok {good}: 2 examples (golden 1, distribution 1)\n"
    assert main(["dataset", "validate", str(good), str(bad)]) == 1
    err = capsys.readouterr().err
    assert err == f"INVALID {bad}:1, example 'x', field 'input': required field is missing\n"


def test_stats_text_and_json(good: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["dataset", "stats", str(good)]) == 0
    text = capsys.readouterr().out
    assert "good: 2 examples" in text and "tags: billing 2, sso 1" in text
    assert "reference-free examples: 1" in text
    assert main(["dataset", "stats", str(good), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["partitions"] == {"golden": 1, "regression": 0, "adversarial": 0, "distribution": 1}
    assert len(data["content_hash"]) == 64


def test_usage_errors_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["dataset"]) == 2
    assert main(["bogus"]) == 2
    assert "usage: llmeval" in capsys.readouterr().err


def test_console_script_is_installed(good: Path) -> None:
    script = Path(sys.executable).with_name("llmeval")
    out = subprocess.run(
        [str(script), "dataset", "stats", str(good)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert out.returncode == 0 and "2 examples" in out.stdout
