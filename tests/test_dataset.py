"""Loading, validating and saving datasets in their three forms."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from pytest_llmeval import Dataset, DatasetError, Example, load_dataset


def example(id: str, partition: str = "golden", **fields: Any) -> dict[str, Any]:
    return {"id": id, "partition": partition, "input": {"q": id}, **fields}


def write_jsonl(path: Path, rows: list[Any]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.fixture
def rows() -> list[dict[str, Any]]:
    return [
        example("g1", expected_output="yes", tags=["billing"], created_at="2026-01-02T03:04:05Z"),
        example("r1", "regression", expected_output=None, context="doc", cluster="c1"),
        example("a1", "adversarial", metadata={"k": 1}),
        example("d1", "distribution", human_score=4.0),
    ]


def test_jsonl_document_and_directory_load_the_same(
    tmp_path: Path, rows: list[dict[str, Any]]
) -> None:
    jsonl = load_dataset(write_jsonl(tmp_path / "set.jsonl", rows))
    (tmp_path / "set.json").write_text(
        json.dumps({"name": "set", "task_type": "qa", "examples": rows})
    )
    document = load_dataset(tmp_path / "set.json")
    folder = tmp_path / "set"
    folder.mkdir()
    for row in rows:
        write_jsonl(
            folder / f"{row['partition']}.jsonl",
            [{k: v for k, v in row.items() if k != "partition"}],
        )
    directory = load_dataset(folder)
    assert [e.id for e in jsonl] == ["g1", "r1", "a1", "d1"]
    assert {e.id for e in directory} == {e.id for e in jsonl}
    assert document.task_type == "qa" and jsonl.name == "set"
    assert jsonl.content_hash() == document.content_hash() == directory.content_hash()
    assert jsonl.partition_counts() == {
        "golden": 1,
        "regression": 1,
        "adversarial": 1,
        "distribution": 1,
    }
    assert jsonl["g1"].created_at is not None and jsonl["g1"].tags == ("billing",)


@pytest.mark.parametrize("target", ["out.jsonl", "out.json", "out_dir"])
def test_save_round_trips(tmp_path: Path, rows: list[dict[str, Any]], target: str) -> None:
    original = load_dataset(write_jsonl(tmp_path / "in.jsonl", rows))
    written = original.save(tmp_path / target)
    again = load_dataset(written)
    assert [e.model_dump() for e in sorted(again, key=lambda e: e.id)] == [
        e.model_dump() for e in sorted(original, key=lambda e: e.id)
    ]
    assert again.content_hash() == original.content_hash()
    assert not [p for p in tmp_path.rglob("*.tmp")], "no temporary files left behind"


def test_filter_and_tag_counts(tmp_path: Path, rows: list[dict[str, Any]]) -> None:
    ds = load_dataset(write_jsonl(tmp_path / "d.jsonl", rows))
    assert [e.id for e in ds.filter(partitions=["golden", "distribution"])] == ["g1", "d1"]
    assert [e.id for e in ds.filter(tags=["billing"])] == ["g1"]
    assert ds.tag_counts() == {"billing": 1}


def test_params_carry_ids_and_partition_marks(tmp_path: Path, rows: list[dict[str, Any]]) -> None:
    params = load_dataset(write_jsonl(tmp_path / "d.jsonl", rows)).params()
    assert [p.id for p in params] == ["g1", "r1", "a1", "d1"]
    assert [p.marks[0].name for p in params] == [
        "golden",
        "regression",
        "adversarial",
        "distribution",
    ]
    assert isinstance(params[0].values[0], Example)


def test_blank_lines_are_allowed_in_jsonl(tmp_path: Path) -> None:
    path = tmp_path / "d.jsonl"
    path.write_text("\n" + json.dumps(example("a")) + "\n\n" + json.dumps(example("b")) + "\n")
    assert len(load_dataset(path)) == 2


# --- every malformed input names the file, the line or example, and the problem -------


def error_of(path: Path) -> DatasetError:
    with pytest.raises(DatasetError) as info:
        load_dataset(path)
    return info.value


def test_broken_json_line_names_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "d.jsonl"
    path.write_text(json.dumps(example("a")) + "\n" + '{"id": "b", "partition": \n')
    err = error_of(path)
    assert err.line == 2
    assert str(err).startswith(f"{path}:2: invalid JSON")


def test_broken_json_document_names_the_line(tmp_path: Path) -> None:
    path = tmp_path / "d.json"
    path.write_text('{\n  "name": "x",\n  "examples": [,]\n}')
    err = error_of(path)
    assert err.line == 3 and "invalid JSON" in str(err)


def test_duplicate_id_names_both_places(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "d.jsonl", [example("a"), example("b"), example("a")])
    err = error_of(path)
    assert err.example_id == "a" and err.line == 3
    assert f"first defined at {path}:1, again at {path}:3" in str(err)


def test_duplicate_id_across_directory_files(tmp_path: Path) -> None:
    write_jsonl(tmp_path / "golden.jsonl", [{"id": "x", "input": {}}])
    write_jsonl(tmp_path / "regression.jsonl", [{"id": "x", "input": {}}])
    err = error_of(tmp_path)
    assert "golden.jsonl:1" in str(err) and "regression.jsonl:1" in str(err)


def test_unknown_partition_lists_valid_ones(tmp_path: Path) -> None:
    err = error_of(write_jsonl(tmp_path / "d.jsonl", [example("a", "gold")]))
    assert err.field == "partition" and err.example_id == "a"
    assert "unknown partition 'gold'; valid: golden, regression, adversarial, distribution" in str(
        err
    )


@pytest.mark.parametrize(
    ("row", "field", "words"),
    [
        ({"id": "a", "partition": "golden"}, "input", "required field is missing"),
        ({"id": "a", "partition": "golden", "input": "text"}, "input", "valid dictionary"),
        ({"id": "a", "partition": "golden", "input": {}, "tags": "x"}, "tags", "valid tuple"),
        (
            {"id": "a", "partition": "golden", "input": {}, "expected_output": 3},
            "expected_output",
            "valid string",
        ),
        (
            {"id": "a", "partition": "golden", "input": {}, "expected": "x"},
            "expected",
            "unknown field",
        ),
    ],
)
def test_missing_or_mistyped_field_names_example_and_field(
    tmp_path: Path, row: dict[str, Any], field: str, words: str
) -> None:
    err = error_of(write_jsonl(tmp_path / "d.jsonl", [row]))
    assert (err.example_id, err.field, err.line) == ("a", field, 1)
    assert words in str(err)


def test_missing_id_in_document_is_named_by_position(tmp_path: Path) -> None:
    path = tmp_path / "d.json"
    path.write_text(
        json.dumps({"name": "d", "examples": [example("a"), {"partition": "golden", "input": {}}]})
    )
    err = error_of(path)
    assert err.example_id == "#1" and err.field == "id"


def test_several_problems_in_one_example_are_all_reported(tmp_path: Path) -> None:
    err = error_of(
        write_jsonl(tmp_path / "d.jsonl", [{"id": "a", "partition": "nope", "input": 1}])
    )
    assert "field 'partition'" in str(err) and "field 'input'" in str(err)


@pytest.mark.parametrize("content", ["", "  \n\n"])
def test_empty_file(tmp_path: Path, content: str) -> None:
    path = tmp_path / "d.jsonl"
    path.write_text(content)
    assert "file is empty" in str(error_of(path))


def test_document_with_no_examples_or_wrong_shape(tmp_path: Path) -> None:
    path = tmp_path / "d.json"
    path.write_text('{"name": "d", "examples": []}')
    assert "'examples' is empty" in str(error_of(path))
    path.write_text("[1, 2]")
    assert "expected a JSON object" in str(error_of(path))
    path.write_text('{"examples": [{"id": "a", "partition": "golden", "input": {}}], "extra": 1}')
    assert "unknown top-level key(s) 'extra'" in str(error_of(path))


def test_non_object_line(tmp_path: Path) -> None:
    err = error_of(write_jsonl(tmp_path / "d.jsonl", [example("a"), [1, 2]]))
    assert err.line == 2 and "expected a JSON object, got list" in str(err)


def test_unreadable_paths(tmp_path: Path) -> None:
    assert "no such file or directory" in str(error_of(tmp_path / "missing.jsonl"))
    (tmp_path / "data.csv").write_text("id\n")
    assert "unsupported file type" in str(error_of(tmp_path / "data.csv"))
    binary = tmp_path / "bin.jsonl"
    binary.write_bytes(b"\xff\xfe\x00")
    assert "not UTF-8" in str(error_of(binary))
    folder = tmp_path / "set"
    (folder / "golden.jsonl").mkdir(parents=True)  # a read that fails with an OSError
    err = error_of(folder)
    assert err.path.endswith("golden.jsonl") and "cannot read: Is a directory" in str(err)


def test_directory_problems(tmp_path: Path) -> None:
    assert "holds no .json or .jsonl" in str(error_of(tmp_path))
    write_jsonl(tmp_path / "golden.jsonl", [{"id": "a", "partition": "regression", "input": {}}])
    err = error_of(tmp_path)
    assert err.field == "partition" and "in a file named for 'golden'" in str(err)
    write_jsonl(tmp_path / "golden.jsonl", [{"id": "a", "input": {}}])
    write_jsonl(tmp_path / "misc.jsonl", [{"id": "b", "input": {}}])
    assert "not dataset files: misc.jsonl;" in str(error_of(tmp_path))


def test_files_in_a_dataset_folder_that_are_not_datasets_are_named(tmp_path: Path) -> None:
    write_jsonl(tmp_path / "golden.jsonl", [{"id": "a", "input": {}}])
    (tmp_path / "distribution.json").write_text(
        json.dumps({"name": "d", "examples": [{"id": "b", "input": {}}]})
    )
    for name in ("notes.txt", "distribution.yaml", "README.md", "golden.jsonl~"):
        (tmp_path / name).write_text("x")
    (tmp_path / "old").mkdir()
    err = error_of(tmp_path)
    assert err.path == str(tmp_path) and err.line is None
    assert str(err) == (
        f"{tmp_path}: not dataset files: README.md, distribution.yaml, golden.jsonl~, "
        "notes.txt, old/; a dataset folder holds one file per partition, named golden.jsonl, "
        "regression.jsonl, adversarial.jsonl, distribution.jsonl (or .json): rename or move "
        "the others (hidden files such as .gitkeep are ignored)"
    )


def test_hidden_files_in_a_dataset_folder_are_ignored(tmp_path: Path) -> None:
    write_jsonl(tmp_path / "golden.jsonl", [{"id": "a", "input": {}}])
    (tmp_path / ".gitkeep").write_text("")
    (tmp_path / ".golden.jsonl.123.tmp").write_text("half a line")  # an atomic write's
    (tmp_path / ".cache").mkdir()
    assert [e.id for e in load_dataset(tmp_path)] == ["a"]
    (tmp_path / "golden.jsonl").unlink()
    assert "holds no .json or .jsonl" in str(error_of(tmp_path))


# --- NaN and infinities: Python's json reads them, no other parser does -----------------


@pytest.mark.parametrize(
    ("fields", "field", "token"),
    [
        ('"input": {}, "human_score": NaN', "human_score", "NaN"),
        ('"input": {"x": [1, Infinity]}', "input.x.1", "Infinity"),
        ('"input": {}, "metadata": {"t": -Infinity}', "metadata.t", "-Infinity"),
        ('"input": {}, "human_labels": {"s": 1e999}', "human_labels.s", "1e999"),
    ],
)
def test_nonfinite_number_in_a_jsonl_line_names_line_example_and_field(
    tmp_path: Path, fields: str, field: str, token: str
) -> None:
    path = tmp_path / "d.jsonl"
    line = '{"id": "a", "partition": "golden", ' + fields + "}"
    path.write_text(json.dumps(example("first")) + "\n" + line + "\n")
    err = error_of(path)
    assert (err.line, err.example_id, err.field) == (2, "a", field)
    assert str(err).startswith(f"{path}:2, example 'a', field '{field}': {token} ")
    assert "write null for a missing value" in str(err)


def test_nonfinite_number_in_a_document_names_example_and_field(tmp_path: Path) -> None:
    path = tmp_path / "d.json"
    rows = [example("a"), example("b", human_score=4)]
    path.write_text(json.dumps({"name": "d", "examples": rows}).replace("4", "NaN"))
    err = error_of(path)
    assert (err.example_id, err.field) == ("b", "human_score")
    assert str(err) == (
        f"{path}, example 'b', field 'human_score': NaN is not standard JSON (numbers must be "
        "finite); write null for a missing value"
    )
    path.write_text(json.dumps({"name": "d", "examples": [{"partition": "golden", "input": {}}]}))
    path.write_text(path.read_text().replace("{}", '{"v": NaN}'))
    assert (error_of(path).example_id, error_of(path).field) == ("#0", "input.v")
    path.write_text('{"name": NaN, "examples": [{"id": "a", "partition": "golden", "input": {}}]}')
    assert (error_of(path).example_id, error_of(path).field) == (None, "name")


def test_nonfinite_number_in_a_folder_dataset(tmp_path: Path) -> None:
    (tmp_path / "golden.jsonl").write_text('{"id": "a", "input": {}, "human_score": NaN}\n')
    err = error_of(tmp_path)
    assert (err.path, err.line, err.field) == (str(tmp_path / "golden.jsonl"), 1, "human_score")


def test_an_example_built_in_python_holds_no_nan_either(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="finite number"):
        Example(id="a", partition="golden", input={}, human_score=float("nan"))
    nan_inside = Dataset("d", (Example(id="a", partition="golden", input={"x": float("nan")}),))
    for target in ("d.jsonl", "d.json", "folder"):
        with pytest.raises(ValueError, match=r"input\.x is nan, which standard JSON cannot"):
            nan_inside.save(tmp_path / target)
    assert not list(tmp_path.rglob("*.json*")), "nothing written"


def test_dataset_lookup_by_id(tmp_path: Path) -> None:
    ds = Dataset("d", (Example(id="a", partition="golden", input={}),))
    assert ds["a"].id == "a"
    with pytest.raises(KeyError):
        ds["b"]
