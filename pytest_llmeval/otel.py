"""OpenTelemetry spans as trajectory steps: an app instrumented with the GenAI semantic
conventions needs no change for its steps to be checked.

A span processor added to the app's tracer provider turns each GenAI span that ends while
an eval test runs into a :class:`~pytest_llmeval.records.Step` (source ``"otel"``) of
that test's record (the record current in the context the span ends in: a ContextVar, so
asyncio tasks and the plugin's pools see theirs). Spans end children first; a step takes
its place by its span's start time among the steps the spans added.

The mapping follows the OpenTelemetry GenAI semantic conventions as released in
open-telemetry/semantic-conventions-genai v0.1.0 (docs/gen-ai/client-inference.md,
client-embeddings.md, execute-tool.md, retrieval.md), keyed by ``gen_ai.operation.name``:

- ``chat``, ``text_completion``, ``generate_content``: an ``llm`` step named by
  ``gen_ai.request.model`` (else ``gen_ai.response.model``), tokens from
  ``gen_ai.usage.input_tokens``/``output_tokens``, the reply's text and the tool calls it
  asked for from ``gen_ai.output.messages`` (its ``text`` and ``tool_call`` parts);
- ``embeddings``: an ``embedding`` step;
- ``execute_tool``: a ``tool`` step, ``gen_ai.tool.name`` with the parsed
  ``gen_ai.tool.call.arguments`` and ``gen_ai.tool.call.result``;
- ``retrieval``: a ``retrieval`` step named by ``gen_ai.data_source.id``, its documents
  from ``gen_ai.retrieval.documents``; OpenInference's RETRIEVER spans (LlamaIndex's,
  Arize's) from their ``retrieval.documents.N.document.id/score/content``.

Any other span (``invoke_agent``, HTTP, ...) is no step. A span with an ERROR status
gives its step an ``error`` (``error.type`` and the status description).

opentelemetry-sdk (the ``otel`` extra) is imported only by :func:`install` and
:func:`processor`.
"""

from __future__ import annotations

import bisect
import json
import logging
import sys
import threading
import types
import weakref
from collections.abc import Iterator, Mapping
from functools import cache
from itertools import count
from typing import TYPE_CHECKING, Any, Literal

from .client.pricing import cost_usd
from .files import nonfinite_as_null
from .records import Document, Record, Step, ToolCall, as_document, current_record

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor

_LLM_OPERATIONS = frozenset({"chat", "text_completion", "generate_content"})
_OUR_CLIENT = "pytest_llmeval.client"
_log = logging.getLogger(__name__)

Installed = Literal["added", "set", "already", "no sdk", "other provider"]


def step_of(span: ReadableSpan) -> Step | None:
    """The trajectory step of a finished span, or None for a span that is no step."""
    attributes: Mapping[str, Any] = span.attributes or {}
    operation = attributes.get("gen_ai.operation.name")
    step: Step
    if operation in _LLM_OPERATIONS or operation == "embeddings":
        model = attributes.get("gen_ai.request.model") or attributes.get("gen_ai.response.model")
        kind = "embedding" if operation == "embeddings" else "llm"
        step = {"kind": kind, "name": str(model or span.name), "source": "otel"}
        tokens = attributes.get("gen_ai.usage.input_tokens")
        if isinstance(tokens, int):
            step["prompt_tokens"] = tokens
        tokens = attributes.get("gen_ai.usage.output_tokens")
        if isinstance(tokens, int):
            step["completion_tokens"] = tokens
        if kind == "llm":
            _reply(step, attributes.get("gen_ai.output.messages"))
        if span.start_time is not None and span.end_time is not None:
            step["latency_s"] = round((span.end_time - span.start_time) / 1e9, 6)
    elif operation == "execute_tool":
        name = attributes.get("gen_ai.tool.name") or span.name.removeprefix("execute_tool ")
        step = {"kind": "tool", "name": str(name), "source": "otel"}
        if "gen_ai.tool.call.arguments" in attributes:
            step["args"] = _json(attributes["gen_ai.tool.call.arguments"])
        if "gen_ai.tool.call.result" in attributes:
            step["result"] = _json(attributes["gen_ai.tool.call.result"])
    elif operation == "retrieval" or attributes.get("openinference.span.kind") == "RETRIEVER":
        source = attributes.get("gen_ai.data_source.id")
        step = {"kind": "retrieval", "name": str(source or span.name), "source": "otel"}
        documents = list(_documents(attributes))
        if documents:
            step["documents"] = documents
    else:
        return None
    error = _error(span, attributes)
    if error is not None:
        step["error"] = error
    return step


def collect(span: ReadableSpan, prices: Mapping[str, tuple[float, float]]) -> None:
    """Add the step of ``span`` to the record current where it ended, if any: in the
    place its start time gives it among the steps spans added to that record."""
    record = current_record()
    if record is None:
        return
    step = step_of(span)
    if step is None:
        return
    if step["kind"] in ("llm", "embedding"):
        if _inside_our_client():
            # The llm fixture's own call (already a step) or the judge's (never one),
            # seen by an instrumentation of the openai package.
            return
        _count_call(record, step, prices)
    _place(record, step, span.start_time or 0)


# The steps spans added to each live record, as (start time, step) in start order; the
# entry goes with its record (a Record is a dataclass with ==, so not a dict key itself).
_added: dict[int, list[tuple[int, Step]]] = {}
_lock = threading.Lock()


def _place(record: Record, step: Step, start: int) -> None:
    with _lock:
        added = _added.get(id(record))
        if added is None:
            added = _added[id(record)] = []
            weakref.finalize(record, _added.pop, id(record), None)
        at = bisect.bisect_right(added, start, key=lambda entry: entry[0])
        # Before the first step of ours that started later (its child, ended earlier).
        later = added[at][1] if at < len(added) else None
        position = next((i for i, s in enumerate(record.steps) if s is later), None)
        if position is None:
            record.steps.append(step)
        else:
            record.steps.insert(position, step)
        added.insert(at, (start, step))


def _count_call(record: Record, step: Step, prices: Mapping[str, tuple[float, float]]) -> None:
    """A model call the app made itself counts in the record as one through the ``llm``
    fixture does: tokens, cost, per-model usage, latency, and one request (a span is the
    whole call, its retries unseen)."""
    model = step["name"]
    prompt, completion = step.get("prompt_tokens", 0), step.get("completion_tokens", 0)
    step["cost_usd"] = cost_usd(prices, model, prompt, completion)
    record.note_call(
        model,
        prompt_tokens=prompt,
        completion_tokens=completion,
        cost_usd=step["cost_usd"],
        cached=False,
    )
    record.note_request(model)
    record.model = record.model or model
    if "latency_s" in step:
        record.latency_s = (record.latency_s or 0.0) + step["latency_s"]


def _inside_our_client() -> bool:
    """Whether this span ends inside the plugin's client (the span of an instrumented
    openai package ends in the call's own thread, under the client's frames)."""
    frame: types.FrameType | None = sys._getframe(1)
    while frame is not None:
        if str(frame.f_globals.get("__name__", "")).startswith(_OUR_CLIENT):
            return True
        frame = frame.f_back
    return False


def _reply(step: Step, messages: Any) -> None:
    """The reply's text and tool calls from ``gen_ai.output.messages``: a JSON text (an
    attribute holds no structure in the Python SDK), or a sequence of one per message.
    The first message is the reply, as the first choice is for the ``llm`` fixture."""
    parsed = _json(messages)
    if isinstance(parsed, list) and parsed and isinstance(parsed[0], str):
        parsed = [_json(m) for m in parsed]
    if not isinstance(parsed, list) or not parsed or not isinstance(parsed[0], Mapping):
        return
    parts = parsed[0].get("parts")
    if not isinstance(parts, list):
        return
    parts = [p for p in parts if isinstance(p, Mapping)]
    text = [p["content"] for p in parts if p.get("type") == "text" and p.get("content")]
    calls: list[ToolCall] = [
        {"name": str(p.get("name") or ""), "args": _json(p.get("arguments")), "id": p.get("id")}
        for p in parts
        if p.get("type") == "tool_call"
    ]
    if text:
        step["content"] = "".join(str(t) for t in text)
    if calls:
        step["tool_calls"] = calls


def _documents(attributes: Mapping[str, Any]) -> Iterator[Document]:
    """The retrieved documents, in rank order: ``gen_ai.retrieval.documents`` (objects
    with ``id`` and ``score``, extra fields allowed), else OpenInference's flattened
    ``retrieval.documents.N.document.*``. A document without an id keeps its rank."""
    listed = _json(attributes.get("gen_ai.retrieval.documents"))
    if isinstance(listed, list) and listed and isinstance(listed[0], str):
        listed = [_json(d) for d in listed]
    if isinstance(listed, list):
        for rank, found in enumerate(listed, 1):
            if isinstance(found, Mapping):
                yield as_document(found, rank)
        return
    for rank in count(1):
        prefix = f"retrieval.documents.{rank - 1}.document."
        found = {
            key: attributes[prefix + key]
            for key in ("id", "score", "content")
            if prefix + key in attributes
        }
        if not found:
            return
        yield as_document(found, rank)


def _error(span: ReadableSpan, attributes: Mapping[str, Any]) -> str | None:
    status = span.status
    if status is None or status.status_code.name != "ERROR":
        return None
    kind = attributes.get("error.type")
    description = status.description
    if kind and description and not str(description).startswith(str(kind)):
        return f"{kind}: {description}"
    return str(description or kind or "error")


def _json(value: Any) -> Any:
    """An attribute's value as JSON data: a JSON text parsed (else kept as text), a
    sequence as a list."""
    if isinstance(value, str):
        try:
            return nonfinite_as_null(json.loads(value))
        except ValueError:
            return value
    if isinstance(value, tuple | list):
        return list(value)
    return value


# --- the processor ---------------------------------------------------------------------

_prices: dict[str, tuple[float, float]] = {}  # the run's price table (llmeval_prices)


@cache
def processor() -> SpanProcessor:
    """The span processor, one per process (every run's records are reached through the
    context, so one serves them all)."""
    from opentelemetry.sdk.trace import SpanProcessor

    class SpanSteps(SpanProcessor):
        """Turns each GenAI span that ends in an eval test into a step of its record."""

        def on_end(self, span: ReadableSpan) -> None:
            try:
                collect(span, _prices)
            except Exception:  # the app's span.end() must not fail for our sake
                _log.exception("llmeval: span %r could not become a step", span.name)

    return SpanSteps()


def install(prices: Mapping[str, tuple[float, float]] | None = None) -> Installed:
    """Collect the spans of the global tracer provider from now on: add the processor
    to the app's opentelemetry-sdk ``TracerProvider``, or, when the app set none, set one
    holding it. Returns what was done: ``added``, ``set``, ``already`` (an earlier run in
    this process did), or why nothing could be: ``no sdk``, ``other provider`` (not the
    SDK's, so it takes no processor). ``prices`` gives the steps' cost."""
    global _holder
    _prices.clear()
    _prices.update(prices or {})
    try:
        from opentelemetry import trace
        from opentelemetry.sdk.trace import TracerProvider
    except ImportError:
        return "no sdk"
    provider = trace.get_tracer_provider()
    if provider is _holder:
        return "already"
    if isinstance(provider, TracerProvider):
        provider.add_span_processor(processor())
        _holder = provider
        return "added"
    if not isinstance(provider, trace.ProxyTracerProvider):
        return "other provider"
    ours = TracerProvider()
    ours.add_span_processor(processor())
    trace.set_tracer_provider(ours)
    _holder = ours
    return "set"


_holder: object = None  # the tracer provider the processor was added to
