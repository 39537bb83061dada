"""Root conftest for the plugin's own test suite: pytester drives inner pytest runs, and
a local OpenAI-compatible server stands in for every API (no test touches the internet)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from pytest_llmeval.testing import FakeOpenAIServer

pytest_plugins = ["pytester"]


@pytest.fixture
def fake_openai() -> Iterator[FakeOpenAIServer]:
    """A fresh server on 127.0.0.1 that echoes the last user message."""
    with FakeOpenAIServer() as server:
        yield server
