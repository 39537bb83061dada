"""A test's trajectory: the steps an app took for one example (model calls made through
the ``llm`` fixture, tools and retrievers it ran, OpenTelemetry spans it emitted), what
the pipeline helpers read from it, and ``@traced``, which records a function's calls.
"""

from __future__ import annotations

import functools
import inspect
import json
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, Literal, TypeVar, overload

from .files import nonfinite_as_null
from .records import Document, Record, Step, ToolCall, as_document, current_record

F = TypeVar("F", bound=Callable[..., Any])
Order = Literal["in_order", "exact", "any"]
ArgsRule = Literal["subset", "exact"]
_SHOWN = 80  # characters of a value shown in a step's line


class Trajectory(Sequence[Step]):
    """The steps of one test, in the order they started."""

    def __init__(self, steps: Sequence[Step] | Record | None = None) -> None:
        """``steps``: a record's (``llmeval_record.trajectory``), a list of steps, or by
        default the running test's."""
        if steps is None:
            record = current_record()
            if record is None:
                raise LookupError("no eval test is running: pass the steps or a record")
            steps = record
        self.steps: list[Step] = list(steps.steps if isinstance(steps, Record) else steps)

    @overload
    def __getitem__(self, index: int) -> Step: ...
    @overload
    def __getitem__(self, index: slice) -> Sequence[Step]: ...
    def __getitem__(self, index: int | slice) -> Step | Sequence[Step]:
        return self.steps[index]

    def __len__(self) -> int:
        return len(self.steps)

    def __iter__(self) -> Iterator[Step]:
        return iter(self.steps)

    def tool_calls(self) -> list[ToolCall]:
        """The tools the app ran (its ``tool`` steps); when it recorded none, the calls the
        model asked for in its replies."""
        ran = [
            ToolCall(name=s["name"], args=s.get("args"), id=None)
            for s in self.steps
            if s["kind"] == "tool"
        ]
        if ran:
            return ran
        return [call for s in self.steps for call in s.get("tool_calls", [])]

    def retrieved(self) -> list[Document]:
        """The documents of every retrieval step, in order, each id once."""
        seen: dict[str, Document] = {}
        for step in self.steps:
            for document in step.get("documents", []):
                seen.setdefault(document["id"], document)
        return list(seen.values())

    def retrieved_ids(self) -> list[str]:
        return [d["id"] for d in self.retrieved()]

    def retrieved_text(self) -> str:
        """The retrieved documents' text, for grounding an answer in what the app saw."""
        return "\n\n".join(d["text"] for d in self.retrieved() if d.get("text"))

    @property
    def cost_usd(self) -> float:
        return sum(s.get("cost_usd") or 0.0 for s in self.steps)

    def render(self) -> str:
        """A numbered list, one line per step."""
        return "\n".join(f"{i}. {describe(step)}" for i, step in enumerate(self.steps, 1))


def describe(step: Step) -> str:
    """One line: ``llm gpt-4o: asked for lookup_order(order_id='A1') (212+14 tokens)``."""
    kind, name = step["kind"], step["name"]
    if kind in ("llm", "embedding"):
        parts = [f"{kind} {name}"]
        if step.get("tool_calls"):
            parts.append(": asked for " + ", ".join(call_text(c) for c in step["tool_calls"]))
        elif step.get("content"):
            parts.append(f": {_short(step['content'])}")
        usage = []
        if step.get("prompt_tokens") or step.get("completion_tokens"):
            usage.append(
                f"{step.get('prompt_tokens', 0)}+{step.get('completion_tokens', 0)} tokens"
            )
        if step.get("cached"):
            usage.append("cached")
        line = "".join(parts) + (f" ({', '.join(usage)})" if usage else "")
    else:
        line = f"{kind} {call_text({'name': name, 'args': step.get('args'), 'id': None})}"
        if step.get("documents"):
            line += " -> " + ", ".join(_document_text(d) for d in step["documents"])
        elif "result" in step:
            line += f" -> {_short(step['result'])}"
    if step.get("error"):
        line += f" FAILED: {step['error']}"
    return line


def call_text(call: ToolCall) -> str:
    """``lookup_order(order_id='A1')``."""
    args = call.get("args")
    if isinstance(args, Mapping):
        inner = ", ".join(f"{k}={_short(v)}" for k, v in args.items())
    elif args is None:
        inner = ""
    else:
        inner = _short(args)
    return f"{call['name']}({inner})"


def _document_text(document: Document) -> str:
    score = document.get("score")
    return document["id"] + (f" ({score:.3g})" if score is not None else "")


def _short(value: Any) -> str:
    text = repr(value) if isinstance(value, str) else json.dumps(value, default=repr)
    return text if len(text) <= _SHOWN else text[: _SHOWN - 3] + "..."


# --- matching tool calls ---------------------------------------------------------------


def expected_call(expected: str | Mapping[str, Any]) -> ToolCall:
    """An expected call: a tool name, or ``{"name": ..., "args": {...}}`` (no args: any)."""
    if isinstance(expected, str):
        return {"name": expected, "args": None, "id": None}
    if "name" not in expected:
        raise ValueError(f"an expected tool call needs a name: {dict(expected)!r}")
    return {"name": str(expected["name"]), "args": expected.get("args"), "id": None}


def call_matches(actual: ToolCall, expected: ToolCall, args: ArgsRule) -> bool:
    if actual["name"] != expected["name"]:
        return False
    wanted = expected.get("args")
    if wanted is None:
        return True
    got = actual.get("args")
    if args == "exact" or not isinstance(wanted, Mapping) or not isinstance(got, Mapping):
        return bool(got == wanted)
    return all(key in got and got[key] == value for key, value in wanted.items())


def match_calls(
    actual: Sequence[ToolCall], expected: Sequence[ToolCall], order: Order, args: ArgsRule
) -> list[int | None]:
    """For each expected call, the index of the actual call it matched, or None.
    ``exact``: position by position; ``in_order``: a subsequence (other calls may come
    between); ``any``: anywhere, each actual call used once."""
    if order == "exact":
        return [
            i if i < len(actual) and call_matches(actual[i], want, args) else None
            for i, want in enumerate(expected)
        ]
    if order == "any":
        return _most_matched(actual, expected, args)
    found: list[int | None] = []
    start = 0
    for want in expected:
        hit = next(
            (i for i in range(start, len(actual)) if call_matches(actual[i], want, args)), None
        )
        found.append(hit)
        if hit is not None:
            start = hit + 1
    return found


def _most_matched(
    actual: Sequence[ToolCall], expected: Sequence[ToolCall], args: ArgsRule
) -> list[int | None]:
    """A largest matching of expected calls to actual ones, each used once (augmenting
    paths): a first-come choice could give an expected call with any arguments the only
    call another expected one matches."""
    fits = [
        [i for i, call in enumerate(actual) if call_matches(call, want, args)] for want in expected
    ]
    owner: dict[int, int] = {}  # actual call -> expected call

    def place(want: int, seen: set[int]) -> bool:
        for i in fits[want]:
            if i not in seen:
                seen.add(i)
                if i not in owner or place(owner[i], seen):
                    owner[i] = want
                    return True
        return False

    for want in range(len(expected)):
        place(want, set())
    found: list[int | None] = [None] * len(expected)
    for i, want in owner.items():
        found[want] = i
    return found


# --- @traced ---------------------------------------------------------------------------


@overload
def traced(func: F, /) -> F: ...
@overload
def traced(*, kind: str = "tool", name: str | None = None) -> Callable[[F], F]: ...
def traced(
    func: F | None = None, /, *, kind: str = "tool", name: str | None = None
) -> F | Callable[[F], F]:
    """Record each call of a function as a step of the running test's trajectory: its
    arguments, and its result or the exception it raised. With ``kind="retrieval"`` the
    result is taken as the retrieved documents (see ``Record.step``). Sync and async
    functions alike; outside an eval test the function just runs. A call that would pass
    one of the example's limits raises :class:`StepLimitError` instead of running."""

    def decorate(function: F) -> F:
        step_name = name or function.__name__
        signature = inspect.signature(function)

        def begin(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Step | None:
            """The call's step, in the trajectory from now on (filled in by ``end``), so
            that steps it makes itself, and calls running beside it, count after it."""
            __tracebackhide__ = True
            record = current_record()
            if record is None:
                return None
            step: Step = {"kind": kind, "name": step_name, "source": "app"}
            step["args"] = loose_json(_arguments(signature, args, kwargs))
            return record.begin_step(step)

        def end(step: Step | None, result: Any, error: BaseException | None) -> Any:
            """The result the caller gets: a retriever's iterator is read once, here, and
            handed on as a list."""
            if kind == "retrieval" and result is not None and not isinstance(result, Sequence):
                result = list(result)
            if step is None:
                return result
            if error is not None:
                step["error"] = f"{type(error).__name__}: {error}"
            elif kind == "retrieval" and result is not None:
                step["documents"] = [as_document(d, rank) for rank, d in enumerate(result, 1)]
            elif result is not None:
                step["result"] = loose_json(result)
            return result

        if inspect.iscoroutinefunction(function):

            @functools.wraps(function)
            async def run_async(*args: Any, **kwargs: Any) -> Any:
                __tracebackhide__ = True
                started = begin(args, kwargs)
                try:
                    result = await function(*args, **kwargs)
                except BaseException as exc:
                    end(started, None, exc)
                    raise
                return end(started, result, None)

            return run_async  # type: ignore[return-value]

        @functools.wraps(function)
        def run(*args: Any, **kwargs: Any) -> Any:
            __tracebackhide__ = True
            started = begin(args, kwargs)
            try:
                result = function(*args, **kwargs)
            except BaseException as exc:
                end(started, None, exc)
                raise
            return end(started, result, None)

        return run  # type: ignore[return-value]

    return decorate(func) if func is not None else decorate


def _arguments(
    signature: inspect.Signature, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> dict[str, Any]:
    """The call's arguments by name (``{}`` for none), ``**kwargs`` among them, as a
    model's tool call would have them."""
    try:
        bound = signature.bind(*args, **kwargs)
    except TypeError:
        return {"args": list(args), **kwargs}  # the call itself will say what is wrong
    arguments: dict[str, Any] = {}
    for name, value in bound.arguments.items():
        if signature.parameters[name].kind is inspect.Parameter.VAR_KEYWORD:
            arguments.update(value)
        elif name not in ("self", "cls"):
            arguments[name] = value
    return arguments


def loose_json(value: Any) -> Any:
    """``value`` as JSON data, anything JSON cannot hold as its ``repr``: a traced
    function's arguments and result are the app's objects, not chosen for the report."""
    try:
        return nonfinite_as_null(json.loads(json.dumps(value, default=repr, allow_nan=True)))
    except (TypeError, ValueError):  # a circular reference, say
        return repr(value)
