"""OpenTelemetry spans into the trajectories (``llmeval_otel``): at the setup of the first
eval test after the app imported opentelemetry (its tracing is configured by then, at
import or in a conftest), the span processor of ``pytest_llmeval.otel`` joins the app's
tracer provider. Nothing of opentelemetry is imported before the app imported it."""

from __future__ import annotations

import sys
import warnings

import pytest

from ..errors import LLMEvalWarning
from .keys import EXAMPLE_KEY, SETTINGS_KEY

_DONE_KEY = pytest.StashKey[bool]()  # installed, or given up on, for this session


@pytest.hookimpl(tryfirst=True)  # before the fixtures run: a batched one emits spans
def pytest_runtest_setup(item: pytest.Item) -> None:
    config = item.config
    if config.stash.get(_DONE_KEY, False) or EXAMPLE_KEY not in item.stash:
        return
    if config.stash[SETTINGS_KEY].otel == "off":
        config.stash[_DONE_KEY] = True
        return
    if "opentelemetry.trace" not in sys.modules:
        return  # the app traces nothing (yet): looked at again at the next eval test
    config.stash[_DONE_KEY] = True
    from .. import otel

    done = otel.install(config.stash[SETTINGS_KEY].app.prices)
    if done == "other provider":
        from opentelemetry import trace

        provider = type(trace.get_tracer_provider()).__name__
        warnings.warn(
            LLMEvalWarning(
                f"llmeval_otel: the tracer provider is a {provider}, not opentelemetry-sdk's "
                "TracerProvider: its spans cannot become trajectory steps"
            ),
            stacklevel=1,
        )
