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
import os
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import LLMEvalError

CACHE_MODES = ("use", "replay", "refresh", "off")
ENTRY_FORMAT = 1
# Call options that change how a request travels, not what comes back. Headers are left
# out above all because they may carry credentials.
TRANSPORT_OPTIONS = frozenset(
    {"timeout", "extra_headers", "extra_query", "max_retries", "idempotency_key", "stream"}
)


class CacheMissError(LLMEvalError):
    """A replay-mode lookup found no recorded response."""


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

    def get(self, request: Mapping[str, Any]) -> Entry | None:
        """The recorded response, or None (a miss). In replay mode a miss raises
        :class:`CacheMissError` naming the request and the nearest recorded entries."""
        if not self.reads:
            return None
        key = cache_key(request)
        entry = self._load(self.path(key))
        if entry is None and self.mode == "replay":
            raise CacheMissError(self._miss_message(key, request))
        return entry

    def put(
        self, request: Mapping[str, Any], response: Mapping[str, Any], latency_s: float
    ) -> None:
        if not self.writes:
            return
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
            tmp.write_text(json.dumps(document, ensure_ascii=False, indent=1), encoding="utf-8")
            os.replace(tmp, target)
        finally:
            tmp.unlink(missing_ok=True)

    def entries(self) -> list[Entry]:
        """Every readable entry (temporary files of interrupted writes are skipped)."""
        if not self.directory.is_dir():
            return []
        found = (self._load(p) for p in sorted(self.directory.glob("*/*.json")))
        return [e for e in found if e is not None]

    def _load(self, path: Path) -> Entry | None:
        try:
            document = json.loads(path.read_text(encoding="utf-8"))
            return Entry(
                document["key"],
                document["request"],
                document["response"],
                float(document.get("latency_s", 0.0)),
            )
        except FileNotFoundError:
            return None
        except (OSError, ValueError, KeyError, TypeError):
            return None  # unreadable entries are misses; a refresh rewrites them

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
    return f"{request.get('endpoint')} model={request.get('model')!r}{sample} {text!r}"
