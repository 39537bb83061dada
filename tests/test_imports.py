"""Loading the plugin costs what pytest costs: nothing heavy is imported until needed."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

HEAVY = ("openai", "numpy", "scipy", "pydantic", "torch")

PROBE = """
import json, sys
import pytest
code = pytest.main({args!r})
print(json.dumps({{
    "code": int(code),
    "plugin": "pytest_llmeval.plugin" in sys.modules,
    "heavy": sorted(m for m in {heavy!r} if m in sys.modules),
}}))
"""


def probe(tmp_path: Path, *args: str) -> dict[str, object]:
    out = subprocess.run(
        [sys.executable, "-c", PROBE.format(args=list(args), heavy=HEAVY)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def test_version_imports_nothing_heavy(tmp_path: Path) -> None:
    assert probe(tmp_path, "--version")["heavy"] == []
    # The doubled flag loads every plugin (to list them), ours included.
    assert probe(tmp_path, "--version", "--version") == {"code": 0, "plugin": True, "heavy": []}


def test_run_without_eval_tests_imports_nothing_heavy(tmp_path: Path) -> None:
    tmp_path.joinpath("test_plain.py").write_text("def test_one():\n    assert 1 + 1 == 2\n")
    result = probe(tmp_path, "-q", "-p", "no:cacheprovider")
    assert result == {"code": 0, "plugin": True, "heavy": []}


def test_eval_run_needs_pydantic_but_not_the_model_stack(tmp_path: Path) -> None:
    """The probe can fail: an eval test does import the dataset models."""
    tmp_path.joinpath("data.jsonl").write_text(
        '{"id": "a", "partition": "golden", "input": {}, "expected_output": "x"}\n'
    )
    tmp_path.joinpath("test_eval.py").write_text(
        "import pytest\n"
        "from pytest_llmeval import assert_exact_match\n"
        "@pytest.mark.llmeval(dataset='data.jsonl')\n"
        "def test_a(example):\n"
        "    assert_exact_match('x', example.expected_output)\n"
    )
    result = probe(tmp_path, "-q", "-p", "no:cacheprovider")
    assert result == {"code": 0, "plugin": True, "heavy": ["pydantic"]}


@pytest.mark.parametrize(
    "name", ["load_dataset", "assert_token_f1", "max_length", "Record", "detect_regression"]
)
def test_public_names_resolve(name: str) -> None:
    import pytest_llmeval

    assert name in pytest_llmeval.__all__
    assert getattr(pytest_llmeval, name).__name__ == name


def test_unknown_public_name_is_an_attribute_error() -> None:
    import pytest_llmeval

    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        pytest_llmeval.nope  # noqa: B018


def test_all_lists_exactly_the_lazy_exports() -> None:
    import pytest_llmeval

    assert set(pytest_llmeval.__all__) == {*pytest_llmeval._EXPORTS, "__version__"}
