"""The scripted demo server the example suite's cache was recorded from.

It is an OpenAI-compatible server on 127.0.0.1 (the plugin's ``FakeOpenAIServer``) whose
replies are scripted, not a model's: for each question of the datasets it answers as
written in ``demo/v1.jsonl`` or ``demo/v2.jsonl``, picking the file by the prompt version
it sees in the system prompt: the tool calls a model would ask for, round by round, then
the answer (or, for the looping agent, the same tool call for ever); a conversation's
turns each have their own script, found by the customer's turns so far. One question is
scripted to be flaky (``flaky.jsonl``): the draws of a repeated test send identical
requests, and the server answers them in turn from the script's ``outputs``, the second
of three wrong. Judge requests are answered by ``demo_judge.py``.

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
import threading
from collections import Counter
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypedDict

import demo_judge  # beside this script, so on sys.path when it runs
from app import HOLIDAY

from pytest_llmeval import load_dataset
from pytest_llmeval.testing import FakeOpenAIServer, calls

HERE = Path(__file__).resolve().parent

CACHE = HERE / "llmeval-cache"
# The flaky example's dataset: a file of its own, drawn 3 times by its test (outside
# datasets/, where every file is a partition).
FLAKY = HERE / "flaky.jsonl"
# The baseline holds two draws of each distribution example, so that the power plan knows
# how much an example's draws disagree (example_suite/pytest.ini).
BASELINE_DRAWS = "distribution:2"
UNSCRIPTED = "I'm not sure. — Brightdesk Support"


class Script(TypedDict):
    """One turn of the model: rounds of tool calls (tool name -> arguments), then the
    answer; no answer (None) asks for the last round's calls again and again. A flaky
    answer has ``outputs``: the n-th identical request gets the n-th (``output`` is the
    first)."""

    calls: list[dict[str, dict[str, Any]]]
    output: str | None
    outputs: list[str]


Scripts = dict[tuple[str, tuple[str, ...]], Script]  # (version, customer's turns) -> script


def scripts() -> Scripts:
    """(prompt version, the customer's turns so far) -> that turn's script."""
    examples = {ex.id: ex for ex in [*load_dataset(HERE / "datasets"), *load_dataset(FLAKY)]}
    found: Scripts = {}
    for version in ("v1", "v2"):
        for line in (HERE / "demo" / f"{version}.jsonl").read_text(encoding="utf-8").splitlines():
            entry = json.loads(line)
            example = examples[entry["id"]]
            asked = example.user_turns or [example.input["question"]]
            for n, turn in enumerate(entry.get("turns", [entry]), 1):
                outputs = turn.get("outputs", [])
                found[(version, tuple(asked[:n]))] = Script(
                    calls=turn.get("calls", []),
                    output=outputs[0] if outputs else turn["output"],
                    outputs=outputs,
                )
    return found


def scripted_replies() -> dict[tuple[str, str], str]:
    """(prompt version, question) -> the scripted answer, for the one-question examples
    that get one."""
    return {
        (version, asked[0]): script["output"]
        for (version, asked), script in scripts().items()
        if len(asked) == 1 and script["output"] is not None
    }


def make_reply(extra: Mapping[tuple[str, str], str] | None = None) -> Any:
    """The server's reply function; ``extra`` adds (prompt version, question) answers."""
    known = scripts()
    for (version, question), output in (extra or {}).items():
        known[(version, (question,))] = Script(calls=[], output=output, outputs=[])
    answered: Counter[tuple[str, tuple[str, ...]]] = Counter()  # flaky answers given
    lock = threading.Lock()  # the server answers from several threads

    def reply(request: dict[str, Any]) -> str | dict[str, Any]:
        verdict = demo_judge.reply(request)
        if verdict is not None:
            return verdict
        messages = request.get("messages", [])
        system = next((m["content"] for m in messages if m["role"] == "system"), "")
        version = "v2" if HOLIDAY in system else "v1"
        asked = tuple(m["content"] for m in messages if m["role"] == "user")
        script = known.get((version, asked))
        if script is None:
            return UNSCRIPTED
        # This turn's round: the model's messages since the customer's last one.
        last = max(i for i, m in enumerate(messages) if m["role"] == "user")
        round_ = sum(m["role"] == "assistant" for m in messages[last:])
        rounds = script["calls"]
        if round_ < len(rounds) or (script["output"] is None and rounds):
            return calls(*rounds[min(round_, len(rounds) - 1)].items())
        if script["outputs"]:
            with lock:
                answered[(version, asked)] += 1
                n = answered[(version, asked)]
            return script["outputs"][(n - 1) % len(script["outputs"])]
        return script["output"] or UNSCRIPTED

    return reply


def record() -> int:
    """Record every response the suite asks for, for both prompt versions: v1 with the
    baseline's draws (its draw 1 asks what a run without draws asks)."""
    shutil.rmtree(CACHE, ignore_errors=True)
    with FakeOpenAIServer(make_reply()) as server:
        env = {**os.environ, "OPENAI_API_KEY": "demo-key"}
        for version, draws in (("v1", [f"--llmeval-repeat={BASELINE_DRAWS}"]), ("v2", [])):
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
                *draws,
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
