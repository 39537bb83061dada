"""Atomic writes and standard JSON: what the report, baselines and datasets are written with."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest

from pytest_llmeval.files import dumps, nonfinite, write_json


def test_write_json_writes_standard_json(tmp_path: Path) -> None:
    document = {"name": "é", "scores": [1.5, None], "nested": {"ok": True}}
    write_json(tmp_path / "out" / "r.json", document)
    text = (tmp_path / "out" / "r.json").read_text(encoding="utf-8")
    assert json.loads(text) == document and "é" in text and text.endswith("}\n")


@pytest.mark.parametrize(
    ("document", "where", "value"),
    [
        ({"runs": [{"metrics": [{}, {"score": math.nan}]}]}, "runs[0].metrics[1].score", "nan"),
        ({"partitions": {"golden": {"mean": math.inf}}}, "partitions.golden.mean", "inf"),
        ([1, (2, -math.inf)], "[1][1]", "-inf"),
    ],
)  # fmt: skip
def test_a_nonfinite_number_is_an_error_naming_its_key_path(
    tmp_path: Path, document: Any, where: str, value: str
) -> None:
    target = tmp_path / "report.json"
    target.write_text("{}\n")
    with pytest.raises(ValueError) as info:
        write_json(target, document)
    assert str(info.value) == (
        f"{target}: {where} is {value}, which standard JSON cannot hold; "
        "store null (None) for a value that is undefined"
    )
    assert target.read_text() == "{}\n", "the old file is left as it was"
    assert [p.name for p in tmp_path.iterdir()] == ["report.json"], "no temporary file left"


def test_a_bare_nonfinite_number_and_other_errors() -> None:
    with pytest.raises(ValueError, match=r"^the document is nan, which"):
        dumps(math.nan)
    circular: list[Any] = []
    circular.append(circular)
    with pytest.raises(ValueError, match="Circular reference"):
        dumps(circular)


def test_nonfinite_lists_every_path_in_order() -> None:
    found = list(nonfinite({"a": [1.0, math.nan], "b": {"c": math.inf}, "d": "nan", "e": 10**400}))
    assert [(where, str(value)) for where, value in found] == [("a[1]", "nan"), ("b.c", "inf")]


def test_a_nonfinite_key_is_named_too() -> None:
    with pytest.raises(ValueError, match=r"^scores\.nan \(a key\) is nan, which"):
        dumps({"scores": {math.nan: 1}})
