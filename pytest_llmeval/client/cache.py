"""The response cache: one JSON file per response, keyed by a hash of everything that
changes the output (endpoint, model, messages or input, sampling parameters, sample index)
and nothing that does not (keys, headers, timeouts, retries, the server's address).

Writes go to a temporary file that is renamed over the entry, so concurrent writers
(threads, asyncio tasks, xdist workers) and a kill -9 in the middle of a write never
leave a half-written entry where a reader looks. Credentials are never part of an entry:
the stored request is built from the call's parameters only, minus transport options.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import math
import os
import time
import uuid
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import CacheCorruptError, CacheCorruptWarning, CacheMissError

CACHE_MODES = ("use", "replay", "refresh", "off")
ENTRY_FORMAT = 1
# Call options that change how a request travels, not what comes back. Headers are left
# out above all because they may carry credentials.
TRANSPORT_OPTIONS = frozenset(
    {"timeout", "extra_headers", "extra_query", "max_retries", "idempotency_key", "stream"}
)


class InvalidResponse(ValueError):
    """A body that is not a valid response of its endpoint (a 200 that carries an error, a
    field missing, per-token embeddings). ``retryable``: whether asking again may help."""

    def __init__(self, message: str, *, retryable: bool = True) -> None:
        super().__init__(message)
        self.retryable = retryable


def parse_body(endpoint: str, body: bytes | str) -> tuple[dict[str, Any], Any]:
    """(the JSON object, the validated response) of a response body; raises
    :class:`InvalidResponse`."""
    try:
        data = json.loads(body, parse_constant=_not_json, parse_float=_finite)
    except ValueError as exc:
        raise InvalidResponse(f"the body is not JSON ({exc}): {_preview(body)}") from None
    return data, parse_response(endpoint, data)


def parse_response(endpoint: str, data: Any) -> Any:
    """The response object (``ChatCompletion``, ``CreateEmbeddingResponse``) of a JSON
    body, validated; raises :class:`InvalidResponse` saying what the server sent and
    what to do."""
    from pydantic import ValidationError

    model = _response_model(endpoint)
    if model is None:  # an endpoint this layer does not know: nothing to check it against
        return data
    name = model.__name__
    if not isinstance(data, dict):
        raise InvalidResponse(f"the body is a JSON {type(data).__name__}, not a {name}")
    error = data.get("error")
    if error and not (data.get("choices") or data.get("data")):
        message = error.get("message", error) if isinstance(error, dict) else error
        raise InvalidResponse(
            f"the server answered 200 with an error instead of a {name}: {message}"
        )
    if endpoint == "embeddings":
        _check_pooled(data)
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        problems = exc.errors()
        first = problems[0]
        where = ".".join(str(part) for part in first["loc"]) or "the body"
        raise InvalidResponse(
            f"the body is not a valid {name} ({len(problems)} problem"
            f"{'s' if len(problems) != 1 else ''}, first: {where}: {first['msg']}): "
            f"{_preview(json.dumps(data))}; check that the base URL is an OpenAI-compatible "
            "/v1 endpoint"
        ) from None


def _response_model(endpoint: str) -> Any:
    if endpoint == "chat.completions":
        from openai.types.chat import ChatCompletion

        return ChatCompletion
    if endpoint == "embeddings":
        from openai.types import CreateEmbeddingResponse

        return CreateEmbeddingResponse
    return None


def _check_pooled(data: dict[str, Any]) -> None:
    """llama.cpp's server, for a model without pooling, returns one vector per token of
    each input: a list of lists where one vector belongs. Asking again gives the same."""
    items = data.get("data")
    for item in items if isinstance(items, list) else []:
        vectors = item.get("embedding") if isinstance(item, dict) else None
        if isinstance(vectors, list) and vectors and isinstance(vectors[0], list):
            raise InvalidResponse(
                f"the server returned one vector per token ({len(vectors)} vectors of "
                f"{len(vectors[0])} for input {item.get('index', 0)}), not one per input: "
                "start llama.cpp's server with pooling (llama-server --pooling mean; "
                "llama-cpp-python's: --kv_overrides ARCH.pooling_type=int:1) or use an "
                "embedding model",
                retryable=False,
            )


def _not_json(constant: str) -> Any:
    raise ValueError(f"{constant} is not a JSON value")


def _finite(text: str) -> float:
    number = float(text)
    if not math.isfinite(number):  # 1e999: valid JSON, but no float holds it
        raise ValueError(f"{text} is out of a float's range")
    return number


def _preview(body: bytes | str, width: int = 200) -> str:
    text = body.decode("utf-8", "replace") if isinstance(body, bytes) else body
    text = " ".join(text.split())
    return repr(text if len(text) <= width else text[: width - 3] + "...")


def keyed_request(endpoint: str, params: Mapping[str, Any], sample: int = 0) -> dict[str, Any]:
    """The part of a call that determines its response: what the key hashes and what an
    entry stores."""
    request = {k: v for k, v in params.items() if k not in TRANSPORT_OPTIONS and v is not None}
    request["endpoint"] = endpoint
    if sample:
        request["sample"] = sample
    return request


def cache_key(request: Mapping[str, Any]) -> str:
    blob = json.dumps(request, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(blob.encode()).hexdigest()


@dataclass(frozen=True)
class Entry:
    key: str
    request: dict[str, Any]
    response: dict[str, Any]
    latency_s: float
    parsed: Any = field(default=None, compare=False, repr=False)  # the validated response


class _Corrupt(Exception):
    """An entry file that is there but is not a valid recorded response."""


class ResponseCache:
    """Cached responses under ``directory``, read and written according to ``mode``."""

    def __init__(self, directory: Path, mode: str = "use") -> None:
        if mode not in CACHE_MODES:
            raise ValueError(f"cache mode {mode!r}; valid: {', '.join(CACHE_MODES)}")
        self.directory = directory
        self.mode = mode

    @property
    def reads(self) -> bool:
        return self.mode in ("use", "replay")

    @property
    def writes(self) -> bool:
        return self.mode in ("use", "refresh")

    def path(self, key: str) -> Path:
        return self.directory / key[:2] / f"{key}.json"

    def holds(self, request: Mapping[str, Any]) -> bool:
        """Whether a lookup would find a recorded response (it never raises: a miss in
        replay mode, or a corrupt entry, is False)."""
        if not self.reads:
            return False
        key = cache_key(request)
        try:
            return self._load(self.path(key), key, str(request.get("endpoint"))) is not None
        except _Corrupt:
            return False

    def get(self, request: Mapping[str, Any]) -> Entry | None:
        """The recorded response, validated, or None (a miss). In replay mode a miss
        raises :class:`CacheMissError` naming the request and the nearest recorded
        entries. An entry that is not a valid response is a miss with a
        :class:`CacheCorruptWarning` (the response is fetched again and rewritten); in
        replay mode, a :class:`CacheCorruptError` naming the file."""
        if not self.reads:
            return None
        key = cache_key(request)
        path = self.path(key)
        try:
            entry = self._load(path, key, str(request.get("endpoint")))
        except _Corrupt as exc:
            if self.mode == "replay":
                raise CacheCorruptError(
                    f"corrupt entry {path} (cache mode 'replay', which never calls the "
                    f"API) for {describe(request)}: {exc}. Delete the file and record it "
                    "again with --llmeval-cache=use (or refresh) against a server."
                ) from None
            warnings.warn(
                CacheCorruptWarning(f"llmeval cache: corrupt entry, refetched: {path}: {exc}"),
                stacklevel=2,
            )
            return None
        if entry is None and self.mode == "replay":
            raise CacheMissError(self._miss_message(key, request))
        return entry

    def put(
        self, request: Mapping[str, Any], response: Mapping[str, Any], latency_s: float
    ) -> None:
        if not self.writes:
            return
        # Nothing invalid is ever stored: a bad reply would be replayed on every run.
        parse_response(str(request.get("endpoint")), response)
        key = cache_key(request)
        document = {
            "format": ENTRY_FORMAT,
            "key": key,
            "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "latency_s": round(latency_s, 6),
            "request": dict(request),
            "response": dict(response),
        }
        target = self.path(key)
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{key}.{os.getpid()}.{uuid.uuid4().hex}.tmp")
        try:
            text = json.dumps(document, ensure_ascii=False, indent=1, allow_nan=False)
            tmp.write_text(text, encoding="utf-8")
            os.replace(tmp, target)
        finally:
            tmp.unlink(missing_ok=True)

    def entries(self) -> list[Entry]:
        """Every readable entry (temporary files of interrupted writes are skipped)."""
        if not self.directory.is_dir():
            return []
        found = []
        for path in sorted(self.directory.glob("*/*.json")):
            try:
                entry = self._load(path)
            except _Corrupt:
                continue
            if entry is not None:
                found.append(entry)
        return found

    def _load(
        self, path: Path, key: str | None = None, endpoint: str | None = None
    ) -> Entry | None:
        """The entry in ``path`` (None: no such file). With ``key``, it must be that key's
        entry, and with ``endpoint``, its response a valid response of it; else _Corrupt."""
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise _Corrupt(f"unreadable: {exc}") from None
        try:
            document = json.loads(text, parse_constant=_not_json, parse_float=_finite)
        except ValueError as exc:
            raise _Corrupt(f"not JSON ({exc})") from None
        try:
            entry = Entry(
                str(document["key"]),
                dict(document["request"]),
                dict(document["response"]),
                float(document.get("latency_s", 0.0)),
            )
        except KeyError as exc:
            raise _Corrupt(f"no {exc.args[0]!r} field") from None
        except (TypeError, ValueError, AttributeError) as exc:
            raise _Corrupt(f"not an entry ({exc})") from None
        if key is not None and entry.key != key:
            raise _Corrupt(f"it holds the entry of key {entry.key[:12]}, not {key[:12]}")
        if endpoint is None:
            return entry
        try:
            parsed = parse_response(endpoint, entry.response)
        except InvalidResponse as exc:
            raise _Corrupt(f"the recorded response is invalid: {exc}") from None
        return Entry(entry.key, entry.request, entry.response, entry.latency_s, parsed)

    def _miss_message(self, key: str, request: Mapping[str, Any]) -> str:
        lines = [
            f"no recorded response in {self.directory} (cache mode 'replay', which never "
            f"calls the API) for {describe(request)} [key {key[:12]}].",
            "Record it with --llmeval-cache=use (or refresh) against a server, or check "
            "what changed in the request.",
        ]
        nearest = self._nearest(request)
        if nearest:
            lines.append("Nearest recorded requests:")
            for score, entry in nearest:
                changed = sorted(
                    k
                    for k in set(request) | set(entry.request)
                    if request.get(k) != entry.request.get(k)
                )
                lines.append(
                    f"  {score:.0%} alike, differs in {', '.join(changed)}: "
                    f"{describe(entry.request)}"
                )
        else:
            lines.append("The cache holds no entries at all.")
        return "\n".join(lines)

    def _nearest(self, request: Mapping[str, Any], count: int = 3) -> list[tuple[float, Entry]]:
        wanted = json.dumps(request, sort_keys=True)
        scored = []
        for entry in self.entries():
            if entry.request.get("endpoint") != request.get("endpoint"):
                continue
            ratio = difflib.SequenceMatcher(
                None, wanted, json.dumps(entry.request, sort_keys=True), autojunk=False
            ).quick_ratio()
            scored.append((ratio, entry))
        scored.sort(key=lambda pair: -pair[0])
        return scored[:count]


def describe(request: Mapping[str, Any], width: int = 80) -> str:
    """One line naming a request: endpoint, model, and the last message or the input."""
    messages = request.get("messages")
    if isinstance(messages, list) and messages:
        text = str(messages[-1].get("content", "")) if isinstance(messages[-1], dict) else ""
    else:
        text = str(request.get("input", ""))
    text = " ".join(text.split())
    if len(text) > width:
        text = text[: width - 3] + "..."
    sample = f" sample {request['sample']}" if request.get("sample") else ""
    draw = f" draw {request['draw']}" if request.get("draw") else ""
    return f"{request.get('endpoint')} model={request.get('model')!r}{sample}{draw} {text!r}"
