"""The plugin's fixtures: ``llm``, ``judge_client``, ``judge``, ``embedder`` and
``llmeval_record``."""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Generator
from typing import TYPE_CHECKING

import pytest

from .. import embeddings
from ..client.llm import ClientConfig, LLMClient, build_client
from ..errors import JudgeFamilyWarning
from ..records import Record
from .keys import RECORD_KEY, RUN_KEY, SETTINGS_KEY

if TYPE_CHECKING:
    from ..embeddings import Embedder
    from ..judge import Judge


def run_client(config: pytest.Config, client_config: ClientConfig) -> LLMClient:
    """A client with the run's cache, in the run's pools (which close it at its end)."""
    effective = config.stash[SETTINGS_KEY]
    pools = config.stash[RUN_KEY].pools
    return build_client(client_config, effective.cache_dir, effective.cache_mode, pools)


def session_embedder(config: pytest.Config) -> Embedder:
    """The embedder of ``llmeval_embedding_model``, built on first use: an OpenAI
    embedding model gets a client of its own (cached, retried, not the app's role)."""
    effective = config.stash[SETTINGS_KEY]

    def client() -> LLMClient:
        # Its own endpoint: a chat server and an embedding server are often two processes.
        base_url = effective.embedding_base_url or effective.app.base_url
        app = dataclasses.replace(effective.app, role="embeddings", base_url=base_url)
        return run_client(config, app)

    return embeddings.build_embedder(effective.embedding_model, client)


@pytest.fixture(scope="session")
def embedder() -> Embedder:
    """The session's embedder (``llmeval_embedding_model``): ``embedder.embed(texts)``;
    ``assert_similar`` uses it unless given another."""
    return embeddings.default_embedder()


@pytest.fixture
def llmeval_draw() -> int:
    """Which draw of its example the running eval test is: 1 to k with llmeval_repeat
    (each draw is a test of its own, ``test_answer[golden-01-r2]``), else 1."""
    return 1  # a repeated test's parametrization gives its own value


@pytest.fixture
def llmeval_record(request: pytest.FixtureRequest) -> Record:
    """The running eval test's record: set ``output``, ``model``, ``prompt_version``,
    ``latency_s``, ``tokens``/``add_usage(...)``, or custom values with ``record[key] = v``."""
    record: Record | None = request.node.stash.get(RECORD_KEY, None)
    if record is None:
        pytest.fail(
            "llmeval_record is only available in eval tests (tests parametrized over dataset "
            "examples with @pytest.mark.llmeval or dataset.params())",
            pytrace=False,
        )
    return record


@pytest.fixture(scope="session")
def llm(pytestconfig: pytest.Config) -> Generator[LLMClient, None, None]:
    """The client for the app under test: ``llm.chat.completions.create(...)``,
    ``llm.complete(prompt)``, ``await llm.aio.chat.completions.create(...)``. Cached,
    retried, bounded, and recorded (model, tokens, cost, latency) in the running test."""
    client = run_client(pytestconfig, pytestconfig.stash[SETTINGS_KEY].app)
    yield client
    client.close()


@pytest.fixture(scope="session")
def judge_client(pytestconfig: pytest.Config) -> Generator[LLMClient, None, None]:
    """The client for the judge model (``--llmeval-judge-model``), with the same cache,
    retries and bounds as ``llm``."""
    client = run_client(pytestconfig, pytestconfig.stash[SETTINGS_KEY].judge)
    yield client
    client.close()


@pytest.fixture(scope="session")
def judge(pytestconfig: pytest.Config, judge_client: LLMClient) -> Judge:
    """The LLM judge: ``judge.score(response, task=..., criteria=...)`` on a 1-5 rubric,
    or ``assert_judge(judge, response, task=..., criteria=...)``. With
    ``llmeval_judge_models``, a panel of judges on the one judge client."""
    from ..judge import Judge, model_family

    settings_ = pytestconfig.stash[SETTINGS_KEY]
    app_model = settings_.app.model
    for judge_model in settings_.judge_models or (settings_.judge.model,):
        if judge_model and app_model and model_family(judge_model) == model_family(app_model):
            warnings.warn(
                JudgeFamilyWarning(
                    f"the judge ({judge_model}) and the model under test ({app_model}) are "
                    f"both {model_family(app_model)} models: judges tend to favour their own "
                    "family; prefer a judge from another family (--llmeval-judge-model)"
                ),
                stacklevel=2,
            )
    # The temperature and the panel were checked at start-up (the core's settings.build).
    return Judge(
        judge_client,
        models=settings_.judge_models,
        n_samples=settings_.judge_samples,
        temperature=settings_.judge.temperature,
        max_tokens=settings_.judge_max_tokens,
    )
