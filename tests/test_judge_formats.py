"""The judge against servers that refuse a response format the way servers we did not
write do (llama.cpp's Python server: HTTP 500 with a validation error naming
`response_format`): stepped down without spending retries, remembered per endpoint,
recorded in each verdict and named in the summary."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pytest_llmeval.client import ClientConfig, LLMCallError, LLMClient
from pytest_llmeval.client.cache import ResponseCache
from pytest_llmeval.judge import Judge
from pytest_llmeval.records import Record, bind
from pytest_llmeval.runs.render import summary_lines
from pytest_llmeval.testing import FakeOpenAIServer

VERDICT = json.dumps({"reasoning": "right price", "score": 4})
PREFERENCE = json.dumps({"reasoning": "same", "winner": "tie"})
CLAIMS = json.dumps({"claims": [{"claim": "Team is $29", "label": "SUPPORTED"}]})
# What llama-cpp-python's server answers a json_schema request with (its request model
# only knows "text" and "json_object"), as a 500.
LLAMA_CPP_500 = {
    "error": {
        "message": "[{'type': 'literal_error', 'loc': ('body', 'response_format', 'type'), "
        "'msg': \"Input should be 'text' or 'json_object'\", 'input': 'json_schema'}]",
        "type": "internal_server_error",
    }
}


def reject_with(server: FakeOpenAIServer, status: int, formats: set[str], body: Any) -> None:
    """Make ``server`` answer requests asking for one of ``formats`` with ``status``."""
    base: Any = server._httpd.RequestHandlerClass

    class Rejecting(base):  # type: ignore[misc]
        def _serve(self, path: str, request: dict[str, Any]) -> None:
            if (request.get("response_format") or {}).get("type") in formats:
                self._send(status, body)
            else:
                super()._serve(path, request)

    server._httpd.RequestHandlerClass = Rejecting


def judge_reply(request: dict[str, Any]) -> str:
    """A valid reply to each of the three judge prompts."""
    system = request["messages"][0]["content"]
    if "on the 1-5 scale" in system:
        return VERDICT
    return PREFERENCE if "comparing two responses" in system else CLAIMS


def formats_sent(server: FakeOpenAIServer) -> list[str | None]:
    return [(b.get("response_format") or {}).get("type") for b in server.bodies]


@pytest.fixture
def client(fake_openai: FakeOpenAIServer, tmp_path: Path) -> Iterator[LLMClient]:
    """A judge client that retries as the plugin's does by default (4 retries)."""
    fake_openai.reply = judge_reply
    client = LLMClient(
        ClientConfig(
            role="judge",
            model="judge-model",
            base_url=fake_openai.base_url,
            api_key="k",
            max_retries=4,
            retry_base_delay=0.001,
        ),
        ResponseCache(tmp_path / "cache", "off"),
    )
    yield client
    client.close()


def rubric(judge: Judge, response: str = "The Team plan is $29.") -> Any:
    return judge.score(response, task="Answer billing questions", criteria=["quotes the price"])


def test_a_500_naming_response_format_steps_down_once_without_retries(
    client: LLMClient, fake_openai: FakeOpenAIServer
) -> None:
    reject_with(fake_openai, 500, {"json_schema"}, LLAMA_CPP_500)
    judge = Judge(client)
    record = Record(example_id="e", partition="distribution")
    previous = bind(record)
    try:
        assert rubric(judge).mean == 4
        assert rubric(judge, "another response").mean == 4
    finally:
        bind(previous)
    # One json_schema request (not 1 + 4 retries), then JSON mode, remembered.
    assert formats_sent(fake_openai) == ["json_schema", "json_object", "json_object"]
    verdict = record.judge[0]
    assert verdict["response_format"] == "json_object"
    assert verdict["endpoint"] == fake_openai.base_url


def test_every_verdict_kind_records_its_format_and_endpoint(
    client: LLMClient, fake_openai: FakeOpenAIServer
) -> None:
    reject_with(fake_openai, 500, {"json_schema", "json_object"}, LLAMA_CPP_500)
    judge = Judge(client)
    record = Record(example_id="e", partition="distribution")
    previous = bind(record)
    try:
        rubric(judge)
        judge.compare("a", "b", task="t", criteria=["c"])
        judge.check_grounding("Team is $29.", "Team costs $29.")
    finally:
        bind(previous)
    assert [(v["kind"], v["response_format"], v["endpoint"]) for v in record.judge] == [
        ("rubric", "text", fake_openai.base_url),
        ("pairwise", "text", fake_openai.base_url),
        ("grounding", "text", fake_openai.base_url),
    ]
    assert formats_sent(fake_openai) == ["json_schema", "json_object", None, None, None, None]


def test_the_format_is_remembered_per_endpoint_for_every_judge_of_the_client(
    client: LLMClient, fake_openai: FakeOpenAIServer
) -> None:
    reject_with(fake_openai, 500, {"json_schema"}, LLAMA_CPP_500)
    rubric(Judge(client))
    fake_openai.reset_counters()
    rubric(Judge(client))  # another judge of the same client: already known
    assert formats_sent(fake_openai) == ["json_object"]
    fake_openai.reset_counters()
    rubric(Judge(client, model="other-model"))  # another endpoint: found out again
    assert formats_sent(fake_openai) == ["json_schema", "json_object"]


def test_a_400_naming_the_format_steps_down_as_before(
    client: LLMClient, fake_openai: FakeOpenAIServer
) -> None:
    fake_openai.reject_formats = {"json_schema"}  # a 400 "response_format ... not supported"
    assert rubric(Judge(client)).mean == 4
    assert formats_sent(fake_openai) == ["json_schema", "json_object"]


def test_an_error_that_does_not_name_the_format_is_not_a_rejection(
    client: LLMClient, fake_openai: FakeOpenAIServer
) -> None:
    judge = Judge(client)
    fake_openai.fault_sequence = ["400"]  # "fault 400": about something else
    with pytest.raises(LLMCallError) as info:
        rubric(judge)
    assert info.value.kind == "bad_request" and formats_sent(fake_openai) == ["json_schema"]
    # A transient 500 while the format is being tried is asked again with the retries.
    fake_openai.reset_counters()
    fake_openai.fault_sequence = ["500", "500"]
    assert rubric(judge).mean == 4
    assert formats_sent(fake_openai) == ["json_schema"] * 3


def test_retries_are_not_spent_on_a_format_once_accepted_either(
    client: LLMClient, fake_openai: FakeOpenAIServer
) -> None:
    judge = Judge(client)
    rubric(judge)  # json_schema accepted
    fake_openai.reset_counters()
    fake_openai.fault_sequence = ["500"]  # a transient failure: the client retries it
    assert rubric(judge, "again").mean == 4
    assert formats_sent(fake_openai) == ["json_schema", "json_schema"]


def verdicts_json(**formats: str) -> list[Record]:
    record = Record(example_id="e", partition="distribution")
    for url, fmt in formats.items():
        record.judge.append(
            {"kind": "grounding", "response_format": fmt, "endpoint": url, "model": "m"}
        )
    return [record]


def test_the_summary_names_the_format_of_each_endpoint() -> None:
    records = verdicts_json(a="json_object", b="json_schema", c="text")
    text = [line for line, _ in summary_lines(records, {}, [])]
    assert (
        "judge formats: a model m: json_object (json_schema rejected); b model m: json_schema; "
        "c model m: text (json_schema and json_object rejected)"
    ) in text


SUITE = """
import pytest
from pytest_llmeval import assert_judge

@pytest.mark.llmeval(dataset="data.jsonl")
def test_rated(example, judge):
    assert_judge(judge, example.input["answer"], task="answer", criteria=["is right"])
"""


def test_a_suite_against_a_server_that_rejects_json_schema_with_500(
    pytester: pytest.Pytester,
    client: LLMClient,
    fake_openai: FakeOpenAIServer,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    reject_with(fake_openai, 500, {"json_schema"}, LLAMA_CPP_500)
    rows = [{"id": f"d{i}", "partition": "distribution", "input": {"answer": f"{i}"}} for i in "12"]
    pytester.path.joinpath("data.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    pytester.makepyfile(test_suite=SUITE)
    pytester.makeini(
        "[pytest]\nasyncio_default_fixture_loop_scope = function\n"
        "llmeval_retry_base_delay = 0.001\nllmeval_cache = off\n"
        f"llmeval_judge_base_url = {fake_openai.base_url}\nllmeval_judge_model = gemma\n"
    )
    result = pytester.runpytest()
    result.assert_outcomes(passed=2)
    result.stdout.fnmatch_lines(
        [f"judge formats: {fake_openai.base_url} model gemma: json_object (json_schema rejected)"]
    )
    assert formats_sent(fake_openai) == ["json_schema", "json_object", "json_object"]


def test_trying_a_format_spends_no_more_attempts_than_the_client_would(
    fake_openai: FakeOpenAIServer, tmp_path: Path
) -> None:
    """The request that tries a format counts against the call's retries: a hung server
    gets 1 + llmeval_timeout_retries attempts, as for any other call."""
    fake_openai.reply = judge_reply
    fake_openai.hang = 0.5
    fake_openai.fault_sequence = ["timeout"] * 3
    config = ClientConfig(
        role="judge",
        model="judge-model",
        base_url=fake_openai.base_url,
        api_key="k",
        timeout=0.1,
        max_retries=4,
        timeout_retries=1,
        retry_base_delay=0.001,
    )
    client = LLMClient(config, ResponseCache(tmp_path / "cache", "off"))
    try:
        with pytest.raises(LLMCallError) as info:
            rubric(Judge(client))
    finally:
        client.close()
    assert info.value.kind == "timeout" and fake_openai.total_requests == 2


def test_a_rerun_takes_the_cached_reply_of_the_format_that_followed_a_rejection(
    fake_openai: FakeOpenAIServer, tmp_path: Path
) -> None:
    """A rejection is never cached; the reply in the format after it is. A second run
    (a new process: the endpoint's formats are not remembered) sends nothing, and a
    replay finds it."""
    fake_openai.reply = judge_reply
    reject_with(fake_openai, 500, {"json_schema"}, LLAMA_CPP_500)

    def run(mode: str) -> tuple[float, str]:
        config = ClientConfig(
            role="judge", model="judge-model", base_url=fake_openai.base_url, api_key="k"
        )
        client = LLMClient(config, ResponseCache(tmp_path / "cache", mode))
        record = Record(example_id="e", partition="distribution")
        previous = bind(record)
        try:
            return float(rubric(Judge(client)).mean), record.judge[0]["response_format"]
        finally:
            bind(previous)
            client.close()

    assert run("use") == (4, "json_object")
    assert formats_sent(fake_openai) == ["json_schema", "json_object"]
    assert run("use") == run("replay") == (4, "json_object")
    assert fake_openai.total_requests == 2  # nothing more was sent
