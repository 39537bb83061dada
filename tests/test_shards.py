"""``--llmeval-shard I/N``: each example in exactly one shard by a stable hash of its
dataset and id, the other tests in shard 1, each shard's report naming every shard's
tests; serially and under xdist alike."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from test_plugin import ANSWERS, rows, suite

import pytest_llmeval.stats.regression  # noqa: F401  (numpy outside pytester's runs)
from pytest_llmeval.cli import main
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


# test_plugin's answers, and a test that is no dataset example (shard 1 runs it).
MERGED = ANSWERS + "\n\ndef test_plain():\n    pass\n"

# Timings differ from run to run; everything else of a partition must not.
TIMED = ("latency_p50_s", "latency_p95_s", "wall_s")


def untimed(partitions: dict[str, Any]) -> dict[str, Any]:
    return {p: {k: v for k, v in s.items() if k not in TIMED} for p, s in partitions.items()}


def verdict_lines(lines: list[str]) -> list[str]:
    """The summary's verdicts and regression section, without timings."""
    start = next(i for i, line in enumerate(lines) if line.startswith("golden rule"))
    end = next(i for i in range(start, len(lines)) if lines[i].startswith("llmeval: "))
    return [
        line
        for line in lines[start : end + 1]
        if line and not line.startswith(("  ", "slowest", "tokens", "model calls", "usage"))
    ]


def test_three_shards_merged_and_gated_are_the_whole_run(
    pytester: pytest.Pytester, capsys: pytest.CaptureFixture[str]
) -> None:
    data = rows(golden=3, regression=6, distribution=12)
    suite(pytester, data, MERGED.format(wrong=[]), ini="llmeval_min_pass_rate = distribution:0.8")
    assert pytester.runpytest("--llmeval-save-baseline=base.json").ret == 0
    wrong = ["golden-01", "regression-02", "distribution-03", "distribution-07", "distribution-09"]
    pytester.makepyfile(test_evals=MERGED.format(wrong=wrong))
    flags = ["--llmeval-baseline=base.json", "-p", "no:cacheprovider"]
    whole = pytester.runpytest(*flags, "--llmeval-report=whole.json")
    assert whole.ret == 1
    shards = [
        pytester.runpytest(*flags, f"--llmeval-shard={i}/3", f"--llmeval-report=shard-{i}.json")
        for i in (1, 2, 3)
    ]
    assert {r.ret for r in shards} <= {0, 1}
    shard_files = ["shard-1.json", "shard-2.json", "shard-3.json"]
    assert main(["merge", *shard_files, "--baseline", "base.json", "-o", "run.json"]) == 0
    merged, alone = report(pytester.path / "run.json"), report(pytester.path / "whole.json")
    assert untimed(merged["partitions"]) == untimed(alone["partitions"])
    assert merged["gates"] == alone["gates"]
    assert merged["regression"]["comparisons"] == alone["regression"]["comparisons"]
    assert (merged["passed"], merged["failures"]) == (alone["passed"], alone["failures"])
    assert [r["nodeid"] for r in merged["records"]] == [r["nodeid"] for r in alone["records"]]
    assert [s["index"] for s in merged["run"]["shards"]] == [1, 2, 3]
    capsys.readouterr()
    assert main(["gate", "run.json", "--baseline", "base.json"]) == whole.ret == 1
    assert verdict_lines(capsys.readouterr().out.splitlines()) == verdict_lines(whole.outlines)
    # The report is judged by the options its sessions read, whatever the ini says now;
    # -c judges by a file instead.
    pytester.makeini("[pytest]\nllmeval_min_pass_rate = distribution:0.5\n")
    distribution = [line for line in whole.outlines if line.startswith("distribution (soft)")]
    assert distribution[0].startswith("distribution (soft): FAIL")
    for extra, expected in (([], "FAIL"), (["-c", "tox.ini"], "PASS")):
        main(["gate", "run.json", "--baseline", "base.json", *extra])
        out = capsys.readouterr().out.splitlines()
        shown = [line for line in out if line.startswith("distribution (soft)")]
        assert shown[0].startswith(f"distribution (soft): {expected}"), shown


def test_merge_refuses_shards_that_are_not_one_run_and_names_what_differs(
    pytester: pytest.Pytester, capsys: pytest.CaptureFixture[str]
) -> None:
    suite(pytester, rows(golden=2, distribution=6), MERGED.format(wrong=[]))
    for i in (1, 2):
        pytester.runpytest(f"--llmeval-shard={i}/2", f"--llmeval-report=s{i}.json")
    first, second = report(pytester.path / "s1.json"), report(pytester.path / "s2.json")

    def merge(*documents: dict[str, Any]) -> str:
        names = []
        for index, document in enumerate(documents):
            path = pytester.path / f"edited-{index}.json"
            path.write_text(json.dumps(document))
            names.append(path.name)
        capsys.readouterr()
        assert main(["merge", *names, "-o", "out.json"]) == 2
        return capsys.readouterr().err.strip()

    assert merge(first) == "llmeval merge: shard 2/2 missing"
    assert merge(first, first, second) == (
        "llmeval merge: shard 1/2 is given twice: edited-0.json, edited-1.json"
    )
    other = json.loads(json.dumps(second))
    other["run"]["git_commit"] = "0123abc"
    assert merge(first, other) == (
        f"llmeval merge: the shards differ in git commit (edited-0.json: "
        f"{first['run']['git_commit']}; edited-1.json: 0123abc)"
    )
    other = json.loads(json.dumps(second))
    other["run"]["datasets"]["data"] = "changed"
    assert merge(first, other).startswith("llmeval merge: the shards differ in dataset 'data' (")
    stolen = json.loads(json.dumps(second))
    stolen["records"].append(first["records"][0])
    moved = first["records"][0]["nodeid"]
    assert merge(first, stolen) == (
        f"llmeval merge: {moved} is in two shards: edited-0.json and edited-1.json"
    )
    lost = json.loads(json.dumps(second))
    gone = lost["records"].pop()["nodeid"]
    assert merge(first, lost) == f"llmeval merge: 1 test(s) of the run in no shard: {gone}"
    other = json.loads(json.dumps(second))
    other["run"]["options"]["min_pass_rate"] = "distribution:0.5"
    assert merge(first, other) == (
        "llmeval merge: the shards differ in llmeval_min_pass_rate (edited-0.json: ''; "
        "edited-1.json: 'distribution:0.5')"
    )
    # Each job's own cache, endpoint and concurrency do not make another run.
    own = json.loads(json.dumps(second))
    own["run"]["options"].update(cache_dir="/elsewhere", base_url="http://10.0.0.2:9/v1")
    for index, document in enumerate((first, own)):
        (pytester.path / f"own-{index}.json").write_text(json.dumps(document))
    assert main(["merge", "own-0.json", "own-1.json", "-o", "own.json"]) == 0
    selected = json.loads(json.dumps(second))
    selected["run"]["shard"]["tests"] = selected["run"]["shard"]["tests"][1:]
    assert "the shards selected different tests" in merge(first, selected)
    assert merge(first, {**second, "run": {**second["run"], "shard": None}}) == (
        "llmeval merge: edited-1.json is not a shard's report (run with --llmeval-shard I/N)"
    )
    assert main(["merge", "s1.json", "s2.json", "-o", "run.json"]) == 0
    assert main(["gate", "run.json"]) == 0
    assert capsys.readouterr().out.splitlines()[-1] == "llmeval: PASS"
    # The session's options judge the report, not whatever the ini says now.
    pytester.makeini("[pytest]\nllmeval_hard_partitions = golden distribution\n")
    assert main(["gate", "run.json"]) == 0
    assert main(["gate", "run.json", "-c", "tox.ini"]) == 0  # all pass either way
    empty = {**first, "records": []}
    (pytester.path / "empty.json").write_text(json.dumps(empty))
    capsys.readouterr()
    assert main(["gate", "empty.json"]) == 1
    assert "nothing to judge" in capsys.readouterr().err


def test_a_shard_without_tests_passes_and_its_report_says_so(pytester: pytest.Pytester) -> None:
    suite(pytester, rows(golden=1), MERGED.format(wrong=[]))
    empty = next(i for i in (2, 3) if i != shard_of("data", "golden-00", 3))
    result = pytester.runpytest(f"--llmeval-shard={empty}/3", "--llmeval-report=r.json")
    assert result.ret == pytest.ExitCode.OK  # not 5: no test is this shard's share
    written = report(pytester.path / "r.json")
    assert written["records"] == []
    assert written["run"]["shard"] == {
        "index": empty,
        "count": 3,
        "tests": ["test_evals.py::test_answer[golden-00]"],
    }


def test_the_command_reads_the_ini_pytest_would(tmp_path: Path) -> None:
    from pytest_llmeval.inifile import find_ini

    (tmp_path / "sub").mkdir()
    (tmp_path / "setup.cfg").write_text("[metadata]\nname = x\n")  # no pytest section
    (tmp_path / "pyproject.toml").write_text(
        '[tool.pytest.ini_options]\nllmeval_min_pass_rate = "distribution:0.7"\n'
        'llmeval_hard_partitions = "golden regression adversarial"\n'
    )
    ini = find_ini(tmp_path / "sub")
    assert (ini.path, ini.rootpath) == (tmp_path / "pyproject.toml", tmp_path)
    settings = ini.settings()
    assert settings.minimum("distribution") == 0.7 and settings.is_hard("adversarial")
    assert ini.settings({"baseline": "b.json"}).regression.baseline == Path.cwd() / "b.json"
    (tmp_path / "sub" / "pytest.ini").write_text("[pytest]\nllmeval_min_pass_rate = nope\n")
    with pytest.raises(ConfigError, match="llmeval_min_pass_rate"):
        find_ini(tmp_path / "sub").settings()
    explicit = find_ini(tmp_path / "sub", tmp_path / "pyproject.toml")
    assert explicit.settings().minimum("distribution") == 0.7
