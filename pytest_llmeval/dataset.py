"""Eval datasets: the example model, the three file forms, validation, saving.

Forms: a JSON document ``{"name", "task_type", "examples": [...]}``, JSON Lines (one
example per line), or a directory with one file per partition (``golden.jsonl`` ...),
where the file name gives the partition. Every load error names the file, the line or
the example, and what is wrong; nothing is silently dropped (unknown fields, and files
in a dataset folder that are not datasets, are errors). Only standard JSON is read:
``NaN`` and ``Infinity``, which Python's json accepts, are errors.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from .errors import DatasetError
from .files import dumps, write_json, write_text_atomic
from .partitions import PARTITIONS, Partition
from .records import StepLimits

DATASET_SUFFIXES = (".jsonl", ".json")
_DOCUMENT_KEYS = {"name", "task_type", "description", "examples"}


@dataclass(frozen=True)
class Location:
    """Where an example was defined: a JSONL line, or an index in a JSON document."""

    path: str
    line: int | None = None
    index: int | None = None

    def __str__(self) -> str:
        if self.line is not None:
            return f"{self.path}:{self.line}"
        return f"{self.path} (examples[{self.index}])"


_ROLES = ("system", "user", "assistant", "tool")


class ExpectedToolCall(BaseModel):
    """A tool call an example expects: the tool's name, and the arguments that must
    match (``assert_tool_calls`` decides whether others may be there too)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1)
    args: dict[str, Any] | None = None


class Example(BaseModel):
    """One eval example. Unknown fields are rejected so that a typo never drops data."""

    # An example built in Python holds no NaN either: not in its float fields, and one in
    # ``input`` or ``metadata`` is kept (not silently turned into null) until writing it,
    # as standard JSON, names it.
    model_config = ConfigDict(
        extra="forbid", frozen=True, allow_inf_nan=False, ser_json_inf_nan="constants"
    )

    id: str = Field(min_length=1)
    partition: Partition
    input: dict[str, Any]
    expected_output: str | None = None
    metadata: dict[str, Any] = Field(default_factory=dict)
    created_at: datetime | None = None
    tags: tuple[str, ...] = ()
    context: str | None = None
    cluster: str | None = None
    human_score: float | None = None
    human_labels: dict[str, Any] = Field(default_factory=dict)
    # Pipelines and agents: what the trajectory should hold, and what it may take.
    expected_tool_calls: tuple[ExpectedToolCall, ...] | None = None
    relevant_ids: tuple[str, ...] | dict[str, float] | None = None  # a dict: graded
    max_steps: int | None = Field(default=None, ge=1)
    max_tool_calls: int | None = Field(default=None, ge=0)
    max_cost: float | None = Field(default=None, ge=0)
    # (dataset name, content hash), set by load_dataset. A slot rather than a pydantic
    # PrivateAttr, which would cost a deep copy of its default per validated example.
    __slots__ = ("_source",)

    @field_validator("input")
    @classmethod
    def _conversation(cls, value: dict[str, Any]) -> dict[str, Any]:
        """``input.messages``, when present, is a conversation: ``{"role", "content"}``
        turns with at least one of the user's."""
        messages = value.get("messages")
        if messages is None:
            return value
        if not isinstance(messages, list) or not messages:
            raise ValueError("input.messages must be a non-empty list of turns")
        for i, turn in enumerate(messages):
            if not isinstance(turn, dict) or turn.get("role") not in _ROLES:
                raise ValueError(
                    f"input.messages[{i}] must be a turn with a role ({', '.join(_ROLES)})"
                )
            if not isinstance(turn.get("content"), str | None):
                raise ValueError(f"input.messages[{i}].content must be text")
        if not any(turn["role"] == "user" for turn in messages):
            raise ValueError("input.messages holds no user turn")
        return value

    @property
    def limits(self) -> StepLimits:
        """What this example's trajectory may take (``max_steps``, ...), as set."""
        limits = StepLimits()
        if self.max_steps is not None:
            limits["max_steps"] = self.max_steps
        if self.max_tool_calls is not None:
            limits["max_tool_calls"] = self.max_tool_calls
        if self.max_cost is not None:
            limits["max_cost"] = self.max_cost
        return limits

    @property
    def user_turns(self) -> list[str]:
        """The user's turns of ``input.messages``, in order."""
        turns = self.input.get("messages") or []
        return [t.get("content") or "" for t in turns if t["role"] == "user"]

    @property
    def dataset_info(self) -> tuple[str | None, str | None]:
        """The name and content hash of the dataset this example was loaded from."""
        return getattr(self, "_source", (None, None))

    def to_json(self) -> dict[str, Any]:
        """The JSON form, without fields left at their defaults."""
        return self.model_dump(mode="json", exclude_defaults=True)


Located = tuple[Example, Location]


@dataclass(frozen=True)
class Dataset:
    """A validated, ordered collection of examples with unique ids."""

    name: str
    examples: tuple[Example, ...]
    task_type: str | None = None
    source: str | None = None

    def __len__(self) -> int:
        return len(self.examples)

    def __iter__(self) -> Iterator[Example]:
        return iter(self.examples)

    def __getitem__(self, example_id: str) -> Example:
        for example in self.examples:
            if example.id == example_id:
                return example
        raise KeyError(example_id)

    def partition_counts(self) -> dict[str, int]:
        """Examples per partition, every partition listed (zeros included)."""
        counts = dict.fromkeys(PARTITIONS, 0)
        for example in self.examples:
            counts[example.partition] += 1
        return counts

    def tag_counts(self) -> dict[str, int]:
        """Examples per tag, most common first."""
        counts: dict[str, int] = {}
        for example in self.examples:
            for tag in example.tags:
                counts[tag] = counts.get(tag, 0) + 1
        return dict(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))

    def filter(
        self, *, partitions: Sequence[str] | None = None, tags: Sequence[str] | None = None
    ) -> Dataset:
        """The examples in any of ``partitions`` and carrying any of ``tags``."""
        kept = tuple(
            ex
            for ex in self.examples
            if (partitions is None or ex.partition in partitions)
            and (tags is None or any(t in ex.tags for t in tags))
        )
        return Dataset(self.name, kept, self.task_type, self.source)

    def content_hash(self) -> str:
        """sha256 of the examples' canonical JSON, independent of file form and order."""
        canonical = sorted((ex.to_json() for ex in self.examples), key=lambda d: d["id"])
        blob = json.dumps(
            canonical, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
        )
        return hashlib.sha256(blob.encode()).hexdigest()

    def params(self) -> list[Any]:
        """``pytest.param`` per example, id = example id, marked with its partition.

        For ``pytest.mark.parametrize("example", dataset.params())``. The pytest side lives
        in the plugin; this method only reaches it, for the API's sake.
        """
        from .plugin.collection import params

        return params(self.examples)

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the dataset as ``.json``, ``.jsonl``, or (any other path) a directory
        of ``<partition>.jsonl`` files. Returns the path written."""
        target = Path(path)
        if target.suffix == ".jsonl":
            _write_jsonl(target, self.examples)
        elif target.suffix == ".json":
            doc: dict[str, Any] = {"name": self.name}
            if self.task_type is not None:
                doc["task_type"] = self.task_type
            doc["examples"] = [ex.to_json() for ex in self.examples]
            write_json(target, doc)
        else:
            target.mkdir(parents=True, exist_ok=True)
            for partition in PARTITIONS:
                part = [ex for ex in self.examples if ex.partition == partition]
                if part:
                    _write_jsonl(target / f"{partition}.jsonl", part)
        return target


def load_dataset(path: str | os.PathLike[str], *, name: str | None = None) -> Dataset:
    """Load and validate a dataset from a ``.json`` file, a ``.jsonl`` file or a directory.

    Raises :class:`DatasetError` naming the file, the line or example id, and the problem.
    """
    root = Path(path)
    shown = str(path)
    if not root.exists():
        raise DatasetError(shown, "no such file or directory")
    task_type: str | None = None
    located: list[Located] = []
    if root.is_dir():
        for file in _folder_files(root, shown):
            located += _load_file(file, str(file), file.stem)[1]
        default_name = root.name
    elif root.suffix in DATASET_SUFFIXES:
        task_type, located = _load_file(root, shown, None)
        default_name = root.stem
    else:
        raise DatasetError(shown, "unsupported file type; use .json, .jsonl or a directory")
    _check_unique(located)
    dataset = Dataset(name or default_name, tuple(ex for ex, _ in located), task_type, shown)
    info = (dataset.name, dataset.content_hash())
    for example in dataset.examples:
        object.__setattr__(example, "_source", info)  # the model is frozen
    return dataset


def _folder_files(root: Path, shown: str) -> list[Path]:
    """The dataset files of a folder dataset. Anything else in it (notes, a README, a
    misnamed partition, a subfolder) is an error rather than data silently left out;
    hidden entries (``.gitkeep``, ``.DS_Store``, editors' and atomic writes' temporary
    files) are ignored."""
    valid = [p + s for p in PARTITIONS for s in DATASET_SUFFIXES]
    entries = sorted(p for p in root.iterdir() if not p.name.startswith("."))
    strays = [p.name + ("/" if p.is_dir() else "") for p in entries if p.name not in valid]
    if strays:
        raise DatasetError(
            shown,
            f"not dataset files: {', '.join(strays)}; a dataset folder holds one file per "
            f"partition, named {', '.join(p + '.jsonl' for p in PARTITIONS)} (or .json): "
            "rename or move the others (hidden files such as .gitkeep are ignored)",
        )
    if not entries:
        raise DatasetError(shown, "directory holds no .json or .jsonl dataset files")
    return entries


def _load_file(file: Path, shown: str, partition: str | None) -> tuple[str | None, list[Located]]:
    text = _read_text(file, shown)
    if not text.strip():
        raise DatasetError(shown, "file is empty")
    if file.suffix == ".jsonl":
        return None, list(_parse_jsonl(text, shown, partition))
    return _parse_document(text, shown, partition)


def _read_text(file: Path, shown: str) -> str:
    try:
        return file.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise DatasetError(shown, f"not UTF-8 text ({exc.reason} at byte {exc.start})") from exc
    except OSError as exc:
        raise DatasetError(shown, f"cannot read: {exc.strerror or exc}") from exc


def _parse_jsonl(text: str, shown: str, partition: str | None) -> Iterator[Located]:
    for lineno, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            raw, nonfinite = _loads(line)
        except json.JSONDecodeError as exc:
            raise DatasetError(
                shown, f"invalid JSON: {exc.msg} (column {exc.colno})", line=lineno
            ) from exc
        if nonfinite:
            _reject_nonfinite(raw, shown, line=lineno, fallback_id=None)
        example = _validate(raw, shown, partition, line=lineno, fallback_id=None)
        yield example, Location(shown, line=lineno)


def _parse_document(
    text: str, shown: str, partition: str | None
) -> tuple[str | None, list[Located]]:
    try:
        doc, nonfinite = _loads(text)
    except json.JSONDecodeError as exc:
        raise DatasetError(
            shown, f"invalid JSON: {exc.msg} (column {exc.colno})", line=exc.lineno
        ) from exc
    if nonfinite:
        examples = doc.get("examples") if isinstance(doc, dict) else None
        for index, raw in enumerate(examples if isinstance(examples, list) else ()):
            _reject_nonfinite(raw, shown, line=None, fallback_id=f"#{index}")
        found = _first_nonfinite(doc)  # outside the examples ("name": NaN)
        assert found is not None
        raise DatasetError(shown, found[1].problem(), field=found[0] or None)
    if not isinstance(doc, dict) or not isinstance(doc.get("examples"), list):
        raise DatasetError(shown, 'expected a JSON object {"name", "task_type", "examples": [...]}')
    unknown = sorted(set(doc) - _DOCUMENT_KEYS)
    if unknown:
        raise DatasetError(
            shown,
            f"unknown top-level key(s) {', '.join(map(repr, unknown))}; "
            f"expected {', '.join(sorted(_DOCUMENT_KEYS))}",
        )
    task_type = doc.get("task_type")
    if task_type is not None and not isinstance(task_type, str):
        raise DatasetError(shown, "'task_type' must be a string", field="task_type")
    if not doc["examples"]:
        raise DatasetError(shown, "'examples' is empty")
    located = []
    for index, raw in enumerate(doc["examples"]):
        example = _validate(raw, shown, partition, line=None, fallback_id=f"#{index}")
        located.append((example, Location(shown, index=index)))
    return task_type, located


class _NonFinite:
    """Stands in for a NaN or an infinity while parsing, so that the error can name the
    field that held it."""

    __slots__ = ("token",)

    def __init__(self, token: str) -> None:
        self.token = token

    def problem(self) -> str:
        if self.token in ("NaN", "Infinity", "-Infinity"):
            what = f"{self.token} is not standard JSON (numbers must be finite)"
        else:
            what = f"{self.token} is out of range (it would be infinity)"
        return f"{what}; write null for a missing value"


def _loads(text: str) -> tuple[Any, bool]:
    """``json.loads`` with NaN, Infinity, -Infinity and overflowing numbers (``1e999``)
    parsed as :class:`_NonFinite`, and whether there was any."""
    found: list[_NonFinite] = []

    def constant(token: str) -> _NonFinite:
        found.append(_NonFinite(token))
        return found[-1]

    def number(token: str) -> float | _NonFinite:
        value = float(token)
        return value if math.isfinite(value) else constant(token)

    return json.loads(text, parse_constant=constant, parse_float=number), bool(found)


def _first_nonfinite(value: Any, path: str = "") -> tuple[str, _NonFinite] | None:
    """The field (``input.scores.2``, as pydantic names one) and marker of the first NaN
    or infinity in a parsed value."""
    if isinstance(value, _NonFinite):
        return path, value
    if isinstance(value, dict | list):
        for key, item in value.items() if isinstance(value, dict) else enumerate(value):
            found = _first_nonfinite(item, f"{path}.{key}" if path else str(key))
            if found is not None:
                return found
    return None


def _reject_nonfinite(raw: Any, shown: str, *, line: int | None, fallback_id: str | None) -> None:
    """Raise a DatasetError naming the example and field of the first NaN or infinity in
    ``raw`` (one example as parsed), if any."""
    found = _first_nonfinite(raw)
    if found is None:
        return
    field, marker = found
    raw_id = raw.get("id") if isinstance(raw, dict) else None
    raise DatasetError(
        shown,
        marker.problem(),
        line=line,
        example_id=raw_id if isinstance(raw_id, str) and raw_id else fallback_id,
        field=field or None,
    )


def _validate(
    raw: Any, shown: str, partition: str | None, *, line: int | None, fallback_id: str | None
) -> Example:
    if not isinstance(raw, dict):
        raise DatasetError(
            shown,
            f"expected a JSON object, got {type(raw).__name__}",
            line=line,
            example_id=fallback_id,
        )
    raw_id = raw.get("id")
    example_id = raw_id if isinstance(raw_id, str) and raw_id else fallback_id
    if partition is not None:
        given = raw.get("partition", partition)
        if given != partition:
            raise DatasetError(
                shown,
                f"partition {given!r} in a file named for {partition!r}",
                line=line,
                example_id=example_id,
                field="partition",
            )
        raw = {**raw, "partition": partition}
    try:
        return Example.model_validate(raw)
    except ValidationError as exc:
        raise _explain(exc, shown, line, example_id) from None


def _explain(
    exc: ValidationError, shown: str, line: int | None, example_id: str | None
) -> DatasetError:
    problems = []
    for err in exc.errors():
        field = ".".join(str(part) for part in err["loc"])
        if err["type"] == "literal_error" and err["loc"] == ("partition",):
            msg = f"unknown partition {err['input']!r}; valid: {', '.join(PARTITIONS)}"
        elif err["type"] == "extra_forbidden":
            model = ExpectedToolCall if err["loc"][0] == "expected_tool_calls" else Example
            msg = f"unknown field; valid fields: {', '.join(model.model_fields)}"
        elif err["type"] == "missing":
            msg = "required field is missing"
        elif err["type"] == "value_error":  # our validators' own messages say it all
            msg = str(err["ctx"]["error"])
        else:
            msg = f"{err['msg']} (got {err['input']!r:.60})"
        problems.append((field, msg))
    if len(problems) == 1:
        field, msg = problems[0]
        return DatasetError(shown, msg, line=line, example_id=example_id, field=field)
    joined = "; ".join(f"field {field!r}: {msg}" for field, msg in problems)
    return DatasetError(shown, joined, line=line, example_id=example_id)


def _check_unique(located: list[Located]) -> None:
    seen: dict[str, Location] = {}
    for example, where in located:
        if example.id in seen:
            raise DatasetError(
                where.path,
                f"duplicate id; first defined at {seen[example.id]}, again at {where}",
                line=where.line,
                example_id=example.id,
                field="id",
            )
        seen[example.id] = where


def _write_jsonl(path: Path, examples: Sequence[Example]) -> None:
    lines = []
    for example in examples:
        try:
            lines.append(dumps(example.to_json()) + "\n")
        except ValueError as exc:  # a NaN in an example built in Python
            raise ValueError(f"{path}, example {example.id!r}: {exc}") from None
    write_text_atomic(path, "".join(lines))
