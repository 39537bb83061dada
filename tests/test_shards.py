"""``--llmeval-shard I/N``: each example in exactly one shard by a stable hash of its
dataset and id, the other tests in shard 1, each shard's report naming every shard's
tests; serially and under xdist alike."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from test_plugin import rows, suite

import pytest_llmeval.stats.regression  # noqa: F401  (numpy outside pytester's runs)
from pytest_llmeval.errors import ConfigError
from pytest_llmeval.shards import parse_shard, shard_of

SUITE = """
import pytest

@pytest.mark.llmeval(dataset="data.jsonl")
def test_answer(example):
    assert example.id != "golden-03"

@pytest.mark.llmeval(dataset="data.jsonl", repeat=2)
def test_drawn(example, llmeval_draw):
    pass

def test_plain():
    pass
"""


def selected(result: pytest.RunResult) -> set[str]:
    return {line for line in result.outlines if "::" in line}


def test_parse_shard() -> None:
    assert parse_shard("") is None
    assert parse_shard("2/4") == (2, 4)
    assert parse_shard(" 1 / 1 ") == (1, 1)
    for bad in ("0/4", "5/4", "2", "a/b", "2/4/1", "-1/2"):
        with pytest.raises(ConfigError, match="is not I/N with 1 <= I <= N"):
            parse_shard(bad)


def test_an_examples_shard_depends_on_its_dataset_and_id_alone() -> None:
    ids = [f"ex-{i}" for i in range(400)]
    shards = [shard_of("qa", i, 4) for i in ids]
    assert set(shards) == {1, 2, 3, 4}
    assert min(shards.count(s) for s in (1, 2, 3, 4)) > 70  # near 100 each
    assert shards == [shard_of("qa", i, 4) for i in ids]  # the same every time
    assert [shard_of("other", i, 4) for i in ids] != shards  # the dataset is in the hash


def test_the_shards_split_the_examples_and_shard_1_runs_the_other_tests(
    pytester: pytest.Pytester,
) -> None:
    suite(pytester, rows(golden=4, distribution=8), SUITE)
    whole = selected(pytester.runpytest("--co", "-q"))
    shards = [
        selected(pytester.runpytest("--co", "-q", f"--llmeval-shard={i}/3")) for i in (1, 2, 3)
    ]
    assert set().union(*shards) == whole
    assert sum(map(len, shards)) == len(whole)  # no test in two shards
    assert all(shards)
    plain = "test_evals.py::test_plain"
    assert [plain in s for s in shards] == [True, False, False]
    # An example's draws stay together.
    assert sum("test_drawn" in t and t.endswith("-r1]") for t in whole) == 12
    for shard in shards:
        for test in shard:
            if test.endswith("-r1]"):
                assert test.replace("-r1]", "-r2]") in shard
    # Adding an example moves no other.
    added = {"id": "added", "partition": "distribution", "input": {}, "expected_output": None}
    data = [*rows(golden=4, distribution=8), added]
    pytester.path.joinpath("data.jsonl").write_text("".join(json.dumps(r) + "\n" for r in data))
    again = [
        selected(pytester.runpytest("--co", "-q", f"--llmeval-shard={i}/3")) for i in (1, 2, 3)
    ]
    assert [{t for t in s if "added" not in t} for s in again] == shards


def report(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text())  # type: ignore[no-any-return]


@pytest.mark.parametrize("workers", [[], ["-n", "2"]], ids=["serial", "xdist"])
def test_each_shard_gates_its_own_examples_and_names_every_shards_tests(
    pytester: pytest.Pytester, workers: list[str]
) -> None:
    suite(pytester, rows(golden=4, distribution=8), SUITE)
    whole = sorted(t for t in selected(pytester.runpytest("--co", "-q")) if "test_plain" not in t)
    failing = shard_of("data", "golden-03", 2)
    for index in (1, 2):
        out = pytester.path / f"shard-{index}.json"
        result = pytester.runpytest(
            f"--llmeval-shard={index}/2", f"--llmeval-report={out}", *workers
        )
        assert result.ret == (1 if index == failing else 0)
        result.stdout.fnmatch_lines([f"*shard: {index}/2*"])
        run = report(out)
        assert run["run"]["shard"] == {"index": index, "count": 2, "tests": whole}
        ids = {r["example_id"] for r in run["records"]}
        assert ids == {
            e["id"] for e in rows(golden=4, distribution=8) if shard_of("data", e["id"], 2) == index
        }
        assert ("golden-03" in ids) == (index == failing)


def test_a_bad_shard_is_a_usage_error(pytester: pytest.Pytester) -> None:
    suite(pytester, rows(golden=1), SUITE)
    result = pytester.runpytest("--llmeval-shard=3/2")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert [line for line in result.stderr.lines if line.strip()] == [
        "ERROR: llmeval_shard: '3/2' is not I/N with 1 <= I <= N (e.g. 2/4: the second of "
        "four shards)"
    ]
