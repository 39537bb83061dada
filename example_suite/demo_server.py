"""The scripted demo server the example suite's cache was recorded from.

It is an OpenAI-compatible server on 127.0.0.1 (the plugin's ``FakeOpenAIServer``) whose
replies are scripted, not a model's: for each question of the datasets it returns the
answer written in ``demo/v1.jsonl`` or ``demo/v2.jsonl``, picking the file by the prompt
version it sees in the system prompt; judge requests are answered by ``demo_judge.py``.

    python example_suite/demo_server.py record   # re-record example_suite/llmeval-cache
    python example_suite/demo_server.py serve    # run it, to point a client at
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import demo_judge  # beside this script, so on sys.path when it runs
from app import HOLIDAY

from pytest_llmeval import load_dataset
from pytest_llmeval.testing import FakeOpenAIServer

HERE = Path(__file__).resolve().parent

CACHE = HERE / "llmeval-cache"


def scripted_replies() -> dict[tuple[str, str], str]:
    """(prompt version, question) -> the scripted answer."""
    questions = {ex.id: ex.input["question"] for ex in load_dataset(HERE / "datasets")}
    replies = {}
    for version in ("v1", "v2"):
        for line in (HERE / "demo" / f"{version}.jsonl").read_text(encoding="utf-8").splitlines():
            entry = json.loads(line)
            replies[(version, questions[entry["id"]])] = entry["output"]
    return replies


def make_reply(extra: Mapping[tuple[str, str], str] | None = None) -> Any:
    """The server's reply function; ``extra`` adds (prompt version, question) answers."""
    replies = {**scripted_replies(), **(extra or {})}

    def reply(request: dict[str, Any]) -> str:
        verdict = demo_judge.reply(request)
        if verdict is not None:
            return verdict
        messages = request.get("messages", [])
        system = next((m["content"] for m in messages if m["role"] == "system"), "")
        question = messages[-1]["content"] if messages else ""
        version = "v2" if HOLIDAY in system else "v1"
        return replies.get((version, question), "I'm not sure. — Brightdesk Support")

    return reply


def record() -> int:
    """Record every response the suite asks for, for both prompt versions."""
    shutil.rmtree(CACHE, ignore_errors=True)
    with FakeOpenAIServer(make_reply()) as server:
        env = {**os.environ, "OPENAI_API_KEY": "demo-key"}
        for version in ("v1", "v2"):
            command = [
                sys.executable,
                "-m",
                "pytest",
                str(HERE),
                "-q",
                "-p",
                "no:cacheprovider",
                f"--prompt-version={version}",
                "--llmeval-cache=use",
                f"--llmeval-base-url={server.base_url}",
            ]
            print(f"$ {' '.join(command[2:])}", flush=True)
            subprocess.run(command, env=env, check=False, stdout=subprocess.DEVNULL)
        print(f"recorded {server.total_requests} responses into {CACHE}")
    return 0


def serve() -> int:
    with FakeOpenAIServer(make_reply()) as server:
        print(f"demo server at {server.base_url} (Ctrl-C stops it)", flush=True)
        try:
            while True:
                input()
        except (KeyboardInterrupt, EOFError):
            return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("command", choices=["record", "serve"])
    return record() if parser.parse_args().command == "record" else serve()


if __name__ == "__main__":
    sys.exit(main())
