"""The per-test record and its JSON form: the one wire format between xdist workers
and the controller, and the unit of the JSON report.

Every entry of a record is a TypedDict here, written by the ``to_json`` of metrics.py,
judge.py and grounding.py and read by runs/, calibration.py and the monitor, so that a
renamed key is a type error. Python 3.11 cannot tell ``NotRequired`` keys under
postponed annotations, so a TypedDict with optional keys is a ``total=False`` subclass.
"""

from __future__ import annotations

import json
import math
import operator
import threading
from collections.abc import Iterable, Mapping
from contextvars import ContextVar
from dataclasses import dataclass, field, fields
from typing import TYPE_CHECKING, Any, Literal, TypedDict, TypeGuard, cast

from .files import nonfinite_as_null

if TYPE_CHECKING:
    from .trajectory import Trajectory

Status = Literal["passed", "failed", "error", "skipped"]
LLM_ERROR = "llm_error:"  # failure kind prefix of a model call that failed after retries
WORKER_CRASHED = "worker crashed"  # failure kind of a test whose xdist worker died in it
NOT_RUN = "not run"  # failure kind of a selected test the run ended before


class _CheckRequired(TypedDict):
    name: str
    passed: bool


class CheckEntry(_CheckRequired, total=False):
    """One named check of ``assert_constraints`` (``CheckOutcome.to_json``)."""

    detail: str  # only when the check said something
    error: str  # only when the check raised


class ClaimEntry(TypedDict):
    """One labelled claim of a grounding check (``Claim.to_json``)."""

    text: str
    label: str
    kind: str
    evidence: str


class MetricEntry(TypedDict):
    """One metric of a record (``MetricResult.to_json``)."""

    name: str
    score: float | None  # None: undefined (a NaN)
    threshold: float | None
    passed: bool
    # Each metric's own: token_f1's precision and recall, grounding's claims
    # (ClaimEntry), constraints' checks (CheckEntry), ...; a user's metric adds any.
    details: dict[str, Any]


class RubricPanelEntry(TypedDict):
    """One panel judge's answer to a rubric verdict (``RubricVerdict.panel``)."""

    model: str
    mean: float | None  # None: this judge gave no verdict (missing, not a score)
    scores: list[int | None]
    stable: bool
    reasoning: str
    prompt_sha256: str
    failures: list[str]
    response_format: str | None


class PairwisePanelEntry(TypedDict):
    """One panel judge's answer to a pairwise verdict (``PairwiseVerdict.panel``)."""

    model: str
    winner: str | None  # None: this judge gave no verdict (missing)
    a_first: str | None
    b_first: str | None
    position_bias: bool | None
    reasoning: list[str]
    prompt_sha256: str
    failures: list[str]
    response_format: str | None


class _RubricRequired(TypedDict):
    kind: Literal["rubric"]
    mean: float | None  # None: no valid sample
    scores: list[int | None]  # None: a sample that gave no verdict
    variance: float
    stable: bool
    reasoning: str
    strengths: list[str]
    weaknesses: list[str]
    model: str
    prompt_sha256: str
    parser: str
    scale: list[int]
    failures: list[str]
    response_format: str | None
    endpoint: str | None


class RubricVerdict(_RubricRequired, total=False):
    """A rubric verdict over the judge's samples (``JudgeResult.to_json``); a judge
    panel's also keeps each judge's answer (``panel``)."""

    panel: list[RubricPanelEntry]


class _PairwiseRequired(TypedDict):
    kind: Literal["pairwise"]
    winner: str  # "a", "b" or "tie"
    a_first: str
    b_first: str
    position_bias: bool
    reasoning: list[str]
    model: str
    prompt_sha256: str
    parser: str
    response_format: str | None
    endpoint: str | None


class PairwiseVerdict(_PairwiseRequired, total=False):
    """A comparison asked in both orders (``PairwiseResult.to_json``); a judge panel's
    also keeps each judge's answer (``panel``)."""

    panel: list[PairwisePanelEntry]


class GroundingVerdict(TypedDict):
    """The labelled claims of an answer (``GroundingResult.to_json``)."""

    kind: Literal["grounding"]
    method: str  # "precheck" or "judge+precheck"
    faithfulness: float
    unsupported: int
    claims: list[ClaimEntry]
    model: str | None
    prompt_sha256: str | None


class JudgedGroundingVerdict(GroundingVerdict):
    """The judge's grounding verdict, as a record keeps it (``JudgedGrounding``)."""

    response_format: str | None
    endpoint: str | None


JudgeVerdict = RubricVerdict | PairwiseVerdict | JudgedGroundingVerdict


def is_rubric(verdict: JudgeVerdict) -> TypeGuard[RubricVerdict]:
    # .get: a report's verdict is read as it was written, a hand-made one may lack a kind.
    return verdict.get("kind") == "rubric"


def is_pairwise(verdict: JudgeVerdict) -> TypeGuard[PairwiseVerdict]:
    return verdict.get("kind") == "pairwise"


class ModelUsage(TypedDict):
    """One model's calls of one record (``Record.usage[model]``)."""

    calls: int
    cache_hits: int
    requests: int  # absent from reports written before requests were counted
    prompt_tokens: int
    completion_tokens: int
    cost_usd: float | None  # None: the model has no known price


class Tokens(TypedDict, total=False):
    """A record's token totals; a count is absent until it is not 0."""

    prompt: int
    completion: int


class HumanLabels(TypedDict):
    """An example's human labels, for calibration (``Example.human_*``)."""

    score: float | None
    # The dataset's free-form labels; calibration reads "acceptable" (bool) and "claims"
    # (claim text -> label).
    labels: dict[str, Any]


class ToolCall(TypedDict):
    """A tool call: one the model asked for (in an llm step), or one the app ran."""

    name: str
    args: Any  # the parsed JSON arguments; the raw text when they are not JSON
    id: str | None


class _DocumentRequired(TypedDict):
    id: str


class Document(_DocumentRequired, total=False):
    """A document a retriever returned, in rank order."""

    score: float | None
    text: str


class _StepRequired(TypedDict):
    kind: str  # "llm", "tool", "retrieval", or the app's own
    name: str  # the model, the tool, the retriever


class Step(_StepRequired, total=False):
    """One step of a test's trajectory (``Record.steps``): a model call made through the
    ``llm`` fixture, a step the app recorded (``llmeval_record.step``, ``@traced``), or an
    OpenTelemetry span of the app's."""

    args: Any
    result: Any
    content: str  # an llm step's reply text
    tool_calls: list[ToolCall]  # an llm step's: the calls the model asked for
    documents: list[Document]  # a retrieval step's
    prompt_tokens: int
    completion_tokens: int
    cost_usd: float | None
    latency_s: float
    cached: bool
    error: str  # the step failed: how
    source: str  # "llm" (the fixture), "app" (step, traced) or "otel" (a span)


class StepLimits(TypedDict, total=False):
    """What a test's trajectory may take (the example's ``max_steps``, ...): the step
    that would pass a limit is stopped before it runs, so it costs nothing."""

    max_steps: int
    max_tool_calls: int
    max_cost: float


class RecordJSON(TypedDict):
    """``Record.to_json()``: one key per field of :class:`Record`. A report read from
    disk may be older and lack some, so its readers ``.get`` what came later."""

    example_id: str
    partition: str
    nodeid: str
    dataset: str | None
    dataset_hash: str | None
    tags: list[str]
    cluster: str | None
    draw: int | None
    model: str | None
    prompt_version: str | None
    output: Any  # any JSON value
    metrics: list[MetricEntry]
    judge: list[JudgeVerdict]
    latency_s: float | None
    duration_s: float | None
    elapsed_s: float | None
    started_at: float | None
    finished_at: float | None
    tokens: Tokens
    cost_usd: float | None
    llm_calls: int
    cache_hits: int
    requests: int
    usage: dict[str, ModelUsage]
    status: Status
    failure_kind: str | None
    failure_reason: str | None
    soft: bool
    human: HumanLabels | None
    steps: list[Step]
    limits: StepLimits
    extra: dict[str, Any]
    input: dict[str, Any] | None
    expected_output: str | None


# Slots: a record has more fields than CPython shares the keys of in instance dicts (30),
# and 10,000 records would each carry a whole dict (13 MiB in bench/overhead.py).
@dataclass(slots=True, weakref_slot=True)  # otel.py keeps per-record state weakly
class Record:
    """What one eval test produced. Assertion helpers and the ``llmeval_record`` fixture
    fill it; the plugin sets status, failure and timing from pytest's reports."""

    example_id: str
    partition: str
    nodeid: str = ""
    dataset: str | None = None
    dataset_hash: str | None = None
    tags: list[str] = field(default_factory=list)
    # The example's cluster (examples of one document or conversation are not independent:
    # the regression statistics resample them together).
    cluster: str | None = None
    # Which of the example's repeated draws this test is (1..k), None when it is drawn once
    # (``llmeval_repeat``): the draws of one test and example are one case, reduced to one
    # verdict.
    draw: int | None = None
    model: str | None = None
    prompt_version: str | None = None
    output: Any = None
    metrics: list[MetricEntry] = field(default_factory=list)
    judge: list[JudgeVerdict] = field(default_factory=list)
    latency_s: float | None = None
    duration_s: float | None = None
    # The test's own time: its setup, call and teardown, with a batched fixture's window
    # counted as this example's share of it. The judge's and every retry's time are in it.
    elapsed_s: float | None = None
    started_at: float | None = None  # epoch seconds: setup's start, for partition wall time
    finished_at: float | None = None  # epoch seconds: teardown's end
    tokens: Tokens = field(default_factory=Tokens)
    cost_usd: float | None = None
    llm_calls: int = 0
    cache_hits: int = 0
    requests: int = 0  # HTTP requests sent for the calls: retries and failed ones included
    usage: dict[str, ModelUsage] = field(default_factory=dict)  # per model
    status: Status = "passed"
    failure_kind: str | None = None
    failure_reason: str | None = None
    soft: bool = False
    human: HumanLabels | None = None  # for calibration
    steps: list[Step] = field(default_factory=list)  # the trajectory, in order
    limits: StepLimits = field(default_factory=StepLimits)
    extra: dict[str, Any] = field(default_factory=dict)
    # The example's, for whoever reads the record without the dataset (the run's page).
    input: dict[str, Any] | None = None
    expected_output: str | None = None

    def __setitem__(self, key: str, value: Any) -> None:
        """``record["key"] = value``: a custom JSON-safe value kept in ``extra``."""
        __tracebackhide__ = True
        self.extra[key] = _json_safe(key, value)

    def __getitem__(self, key: str) -> Any:
        return self.extra[key]

    def step(
        self,
        kind: str,
        name: str,
        *,
        args: Any = None,
        result: Any = None,
        documents: Iterable[Any] | None = None,
        error: str | None = None,
    ) -> Step:
        """Add one step of the app's to the trajectory: a tool it ran, a retriever's
        documents (dicts or objects with ``id``, ``score``, ``text``; or ``(id, score)``),
        or any step of its own. Raises :class:`StepLimitError` instead when the step would
        pass one of the example's limits."""
        __tracebackhide__ = True
        step: Step = {"kind": kind, "name": name, "source": "app"}
        if args is not None:
            step["args"] = _json_safe(f"{name} args", args)
        if documents is not None:
            step["documents"] = [as_document(d) for d in documents]
        elif result is not None:
            step["result"] = _json_safe(f"{name} result", result)
        if error is not None:
            step["error"] = error
        return self.begin_step(step)

    @property
    def trajectory(self) -> Trajectory:
        """The steps so far, as a :class:`~pytest_llmeval.trajectory.Trajectory`."""
        from .trajectory import Trajectory

        return Trajectory(self)

    def begin_step(self, step: Step) -> Step:
        """Append ``step`` now, when it starts (its caller fills it in when it ends), or
        raise :class:`StepLimitError` if it would pass one of the limits. Checked and
        appended at once, under a lock: steps started concurrently, or inside another
        step, all count. The failure is also set on the record, so that an app that
        catches the error and goes on still fails."""
        __tracebackhide__ = True
        from .errors import StepLimitError

        with _STEPS_LOCK:
            try:
                self._check_limits(step["kind"], step["name"])
            except StepLimitError as exc:
                self.fail("failed", exc.kind, str(exc))
                raise
            self.steps.append(step)
        return step

    def _check_limits(self, kind: str, name: str) -> None:
        __tracebackhide__ = True
        from .errors import StepLimitError

        limits = self.limits
        if not limits:
            return
        what = f"{kind} {name}"
        most = limits.get("max_steps")
        if most is not None and len(self.steps) >= most:
            raise StepLimitError(
                "max_steps", f"max_steps={most}: stopped before step {len(self.steps) + 1} ({what})"
            )
        most = limits.get("max_tool_calls")
        if most is not None and kind == "tool" and _tool_steps(self.steps) >= most:
            raise StepLimitError(
                "max_tool_calls",
                f"max_tool_calls={most}: stopped before tool call {most + 1} ({what})",
            )
        ceiling = limits.get("max_cost")
        spent = sum(s.get("cost_usd") or 0.0 for s in self.steps)
        if ceiling is not None and kind == "llm" and spent > ceiling:
            raise StepLimitError(
                "max_cost", f"max_cost=${ceiling:g}: ${spent:.6g} spent, stopped before {what}"
            )

    def add_usage(
        self, *, prompt_tokens: int = 0, completion_tokens: int = 0, cost_usd: float = 0.0
    ) -> None:
        """Add one call's token counts and cost to the totals."""
        if prompt_tokens:
            self.tokens["prompt"] = self.tokens.get("prompt", 0) + int(prompt_tokens)
        if completion_tokens:
            self.tokens["completion"] = self.tokens.get("completion", 0) + int(completion_tokens)
        if cost_usd:
            self.cost_usd = (self.cost_usd or 0.0) + float(cost_usd)

    def note_call(
        self,
        model: str,
        *,
        prompt_tokens: int,
        completion_tokens: int,
        cost_usd: float | None,
        cached: bool,
    ) -> None:
        """Count one model call (the client layer calls this): totals and per model."""
        self.llm_calls += 1
        self.cache_hits += int(cached)
        self.add_usage(
            prompt_tokens=prompt_tokens,
            completion_tokens=completion_tokens,
            cost_usd=cost_usd or 0.0,
        )
        per_model = self.usage.setdefault(model, _no_usage())
        per_model["calls"] += 1
        per_model["cache_hits"] += int(cached)
        per_model["prompt_tokens"] += prompt_tokens
        per_model["completion_tokens"] += completion_tokens
        if cost_usd is not None:
            per_model["cost_usd"] = (per_model["cost_usd"] or 0.0) + cost_usd

    def note_request(self, model: str) -> None:
        """Count one HTTP request sent to ``model`` (each retry is one; the client layer
        calls this), so that the run's count matches the server's."""
        self.requests += 1
        per_model = self.usage.setdefault(model, _no_usage())
        per_model["requests"] = per_model.get("requests", 0) + 1

    def absorb(self, other: Record) -> None:
        """Add what ``other`` collected (a batched fixture computed it for this test's
        example ahead of the test): calls, usage, verdicts, metrics, values set on it."""
        merge_usage(self.usage, other.usage)
        self.llm_calls += other.llm_calls
        self.cache_hits += other.cache_hits
        self.requests += other.requests
        self.add_usage(
            prompt_tokens=other.tokens.get("prompt", 0),
            completion_tokens=other.tokens.get("completion", 0),
            cost_usd=other.cost_usd or 0.0,
        )
        if other.latency_s is not None:
            self.latency_s = (self.latency_s or 0.0) + other.latency_s
        if other.elapsed_s is not None:
            self.elapsed_s = (self.elapsed_s or 0.0) + other.elapsed_s
        for name in ("model", "prompt_version", "output"):
            if getattr(other, name) is not None:
                setattr(self, name, getattr(other, name))
        self.metrics += other.metrics
        self.judge += other.judge
        self.steps += other.steps
        if other.status != "passed" and other.failure_kind:  # a limit the app caught
            self.fail(other.status, other.failure_kind, other.failure_reason or "")
        self.extra.update(other.extra)

    def fail(self, status: Status, kind: str, reason: str) -> None:
        """Mark the record as not passed; the first failure is the one kept."""
        if self.status in ("passed", "skipped") or status == "error":
            self.status = status
            self.failure_kind = kind
            self.failure_reason = reason

    @property
    def case(self) -> str:
        """The node id of the test this record is a draw of: its own without ``-r<draw>``
        (the draws of one test and example share it)."""
        return case_of(self.nodeid, self.example_id, self.draw)

    @property
    def effective_latency_s(self) -> float | None:
        """The model's latency when known, else the test's own call duration."""
        return self.latency_s if self.latency_s is not None else self.duration_s

    def to_json(self) -> RecordJSON:
        # A shallow copy: every value is JSON-safe already (dataclasses.asdict's deep copy
        # was most of the plugin's per-test cost). Its keys are the fields, RecordJSON's
        # (tests/test_record_types.py checks both against a real run's report).
        data = cast(RecordJSON, dict(zip(_NAMES, _VALUES(self), strict=True)))
        if not isinstance(self.output, str | None):
            data["output"] = _json_safe("output", self.output)
        return data

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Record:
        """The record of a :class:`RecordJSON` (a worker's, or a report's: a newer
        report's may hold keys this version does not know, which are dropped)."""
        if data.keys() <= _FIELDS:
            return cls(**data)
        return cls(**{k: v for k, v in data.items() if k in _FIELDS})  # a newer report


def draw_id(example_id: str, draw: int | None) -> str:
    """The test id of an example's draw: ``golden-01-r2`` (the id alone when drawn once)."""
    return example_id if draw is None else f"{example_id}-r{draw}"


def case_of(nodeid: str, example_id: str, draw: int | None) -> str:
    """The node id of a draw's case: its own with the draw's id put back to the
    example's (``test_f[golden-01-r2]`` -> ``test_f[golden-01]``)."""
    if draw is None:
        return nodeid
    head, bracket, params = nodeid.partition("[")
    # pytest writes a non-ASCII id escaped (golden-caf\xe9-r2) unless told not to.
    for shown in (example_id, _ascii_escaped(example_id)):
        if draw_id(shown, draw) in params:
            return head + bracket + params.replace(draw_id(shown, draw), shown, 1)
    return nodeid


def _ascii_escaped(text: str) -> str:
    """An id as pytest shows it in a node id (its ``ascii_escaped``)."""
    escaped = text.encode("unicode_escape").decode("ascii")
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode() for c in escaped)


_STEPS_LOCK = threading.Lock()  # a step's limit check and its append are one step
_NAMES = tuple(f.name for f in fields(Record))
_VALUES = operator.attrgetter(*_NAMES)
_FIELDS = frozenset(_NAMES)


def _tool_steps(steps: list[Step]) -> int:
    return sum(s["kind"] == "tool" for s in steps)


def as_document(found: Any, rank: int | None = None) -> Document:
    """A retriever's result as a :class:`Document`: a mapping or an object with ``id``
    (and optionally ``score``, ``text``), an ``(id, score)`` pair, or a bare id. Given its
    ``rank`` (a document recorded on the app's behalf, which must never fail its call), one
    without an id is named ``#rank`` and a score that is no number is dropped; without,
    both are errors."""
    if isinstance(found, str | int):
        return {"id": str(found)}
    if isinstance(found, tuple) and len(found) == 2:
        return {"id": str(found[0]), "score": _score(found[1], rank)}

    def get(key: str) -> Any:
        return found.get(key) if isinstance(found, Mapping) else getattr(found, key, None)

    ident = get("id")
    if ident is None and rank is None:
        raise TypeError(f"a retrieved document needs an id: {found!r}")
    document: Document = {"id": f"#{rank}" if ident is None else str(ident)}
    if get("score") is not None:
        document["score"] = _score(get("score"), rank)
    text = get("text")
    if text is None:
        text = get("page_content") or get("content")  # LangChain's and LlamaIndex's names
    if text is not None:
        document["text"] = str(text)
    return document


def _score(value: Any, rank: int | None = None) -> float | None:
    try:
        score = float(value)
    except (TypeError, ValueError):
        if rank is None:
            raise
        return None
    return score if math.isfinite(score) else None


_USAGE_COUNTS: tuple[
    Literal["calls", "cache_hits", "requests", "prompt_tokens", "completion_tokens"], ...
] = ("calls", "cache_hits", "requests", "prompt_tokens", "completion_tokens")


def _no_usage() -> ModelUsage:
    """One model's usage before its first call."""
    return {
        "calls": 0,
        "cache_hits": 0,
        "requests": 0,
        "prompt_tokens": 0,
        "completion_tokens": 0,
        "cost_usd": None,
    }


def merge_usage(into: dict[str, ModelUsage], usage: Mapping[str, ModelUsage]) -> None:
    """Add per-model usage to ``into``: a batched example's to its test's, or each
    test's to the run's."""
    for model, counts in usage.items():
        mine = into.setdefault(model, _no_usage())
        for key in _USAGE_COUNTS:
            mine[key] = mine.get(key, 0) + counts.get(key, 0)
        if counts["cost_usd"] is not None:
            mine["cost_usd"] = (mine["cost_usd"] or 0.0) + counts["cost_usd"]


def _json_safe(key: str, value: Any) -> Any:
    """Reject values that cannot travel between xdist workers or into the JSON report,
    at the user's line rather than at the end of the session; a NaN or an infinity
    anywhere in the value becomes None (standard JSON has neither: undefined is null)."""
    __tracebackhide__ = True
    try:
        json.dumps(value, allow_nan=False)
        return value  # the usual case: one pass, no copy
    except ValueError:
        pass  # a non-finite number somewhere, or a circular reference
    except TypeError as exc:
        raise _not_serialisable(key, exc) from None
    try:
        json.dumps(value, allow_nan=True)
    except (TypeError, ValueError) as exc:
        raise _not_serialisable(key, exc) from None
    return nonfinite_as_null(value)


def _not_serialisable(key: str, exc: Exception) -> TypeError:
    return TypeError(
        f"llmeval record value {key!r} must be JSON-serialisable "
        f"(str, number, bool, None, list, dict): {exc}"
    )


# The record of the eval test running in this context. A ContextVar: an asyncio task (a
# batched fixture's example) binds its own in its copy of the context, and our pools run
# work in a copy of the submitter's; a thread a test starts itself sees it only when run
# in a copy of the test's context (contextvars.copy_context().run, asyncio.to_thread).
_current: ContextVar[Record | None] = ContextVar("llmeval_record", default=None)


def current_record() -> Record | None:
    """The record of the eval test now running (or of the example a batched fixture is
    computing in this task), or None outside one."""
    return _current.get()


def bind(record: Record | None) -> Record | None:
    """Make ``record`` current in this context (in an asyncio task: in that task alone);
    returns the previous one so it can be restored."""
    previous = _current.get()
    _current.set(record)
    return previous
