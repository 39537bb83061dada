"""Root conftest for the plugin's own test suite: pytester drives inner pytest runs, and
a local OpenAI-compatible server stands in for every API (no test touches the internet)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pytest_llmeval.client import ClientConfig, LLMClient
from pytest_llmeval.client.cache import ResponseCache
from pytest_llmeval.judge import Judge
from pytest_llmeval.testing import FakeOpenAIServer

pytest_plugins = ["pytester"]


@pytest.fixture(scope="session", autouse=True)
def _http_stack_loaded() -> None:
    """Load the whole HTTP stack once, before any in-process pytester run. pytester
    restores sys.modules after each run, and httpx's transport imports httpcore at the
    first request: imported inside a run, it would be imported again by the next one,
    whose exceptions the transport no longer recognises (a dropped connection would
    escape as httpcore's own error instead of openai's APIConnectionError)."""
    import openai

    with FakeOpenAIServer() as server:
        client = openai.OpenAI(base_url=server.base_url, api_key="k", max_retries=0)
        client.chat.completions.create(model="m", messages=[{"role": "user", "content": "hi"}])
        client.close()


@pytest.fixture
def fake_openai() -> Iterator[FakeOpenAIServer]:
    """A fresh server on 127.0.0.1 that echoes the last user message."""
    with FakeOpenAIServer() as server:
        yield server


@pytest.fixture
def make_judge(fake_openai: FakeOpenAIServer, tmp_path: Path) -> Iterator[Any]:
    """``make_judge(reply, **options)``: a Judge on the fake server, which answers every
    judge request with ``reply`` (a string, or a callable of the request body)."""
    clients: list[LLMClient] = []

    def make(reply: Any, **options: Any) -> Judge:
        fake_openai.reply = reply if callable(reply) else (lambda request: reply)
        client = LLMClient(
            ClientConfig(
                role="judge",
                model="judge-model",
                base_url=fake_openai.base_url,
                api_key="k",
                max_retries=0,
            ),
            ResponseCache(tmp_path / "cache", "off"),
        )
        clients.append(client)
        return Judge(client, **options)

    yield make
    for client in clients:
        client.close()


# The files whose tests take longest, longest first (measured: `pytest --durations=0`).
# Under xdist (`--dist loadfile`) a file is one unit of work: started first, they leave
# the many short files to fill in at the end, and both workers finish together.
SLOWEST_FIRST = (
    "test_interop.py",
    "test_example_suite.py",
    "test_example_suite_views.py",
    "test_batched_pipeline.py",
    "test_batched.py",
    "test_limits.py",
    "test_monitoring_example.py",
    "test_regression_run.py",
    "test_llm_fixture.py",
    "test_otel.py",
    "test_html_report.py",
    "test_client_interrupt.py",
    "test_draws_statistics.py",
    "test_outcomes.py",
    "test_embeddings.py",
    "test_repeats.py",
    "test_agents.py",
    "test_plugin.py",
    "test_client.py",
    "test_regression.py",
)


def pytest_configure(config: pytest.Config) -> None:
    # pytest-xdist would order the files by their number of tests, which puts the few
    # slow ones last; the collection's order below is kept instead.
    if hasattr(config.option, "loadscopereorder"):
        config.option.loadscopereorder = False


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    rank = {name: index for index, name in enumerate(SLOWEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))
