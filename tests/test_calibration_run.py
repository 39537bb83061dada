"""Calibration end to end: labelled examples, the judge and OpenAI-compatible embeddings on
the fake server, the summary's calibration section, the report, and llmeval calibrate."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

# Imported before the in-process runs: pytester drops the modules a run imports, and
# numpy cannot be imported twice in one process.
import pytest_llmeval.calibration  # noqa: F401
from pytest_llmeval.cli import main
from pytest_llmeval.testing import FakeOpenAIServer

REFERENCE = "the team plan costs $29"
# response -> (judge score, human score, acceptable, human claim labels)
LABELLED: dict[str, tuple[int, int, bool, dict[str, str]]] = {
    "the team plan costs $29": (5, 5, True, {"$29": "SUPPORTED"}),
    "the team plan costs $27": (3, 2, False, {"$27": "UNSUPPORTED"}),
    "happy holidays from the elves": (1, 1, False, {}),
    "yes the team plan is $29": (4, 4, True, {"$29": "SUPPORTED"}),
}

SUITE = """
import pytest
from pytest_llmeval import LLMEvalAssertionError, assert_grounded, assert_similar

@pytest.mark.llmeval(dataset="labelled.jsonl")
def test_metrics(example, judge):
    response = example.metadata["response"]
    judge.score(response, task="answer", criteria=["states the right price"])
    for check in (
        lambda: assert_similar(response, example.expected_output, threshold=0.9),
        lambda: assert_grounded(response, "The Team plan costs $29 per agent."),
    ):
        try:
            check()
        except LLMEvalAssertionError:
            pass

def test_the_embedder_fixture_is_the_configured_one(embedder):
    assert embedder.name == "openai:embed-x"
"""


def scripted_judge(request: dict[str, Any]) -> str:
    response = re.search(r"<response>\n(.*?)\n</response>", request["messages"][-1]["content"])
    assert response
    score = LABELLED[response.group(1)][0]
    return json.dumps({"reasoning": "scripted", "score": score})


@pytest.fixture
def report(
    pytester: pytest.Pytester, fake_openai: FakeOpenAIServer, monkeypatch: pytest.MonkeyPatch
) -> pytest.RunResult:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    fake_openai.reply = scripted_judge
    pytester.makeini(
        "[pytest]\nasyncio_default_fixture_loop_scope = function\n"
        f"llmeval_base_url = {fake_openai.base_url}\n"
        "llmeval_judge_model = judge-x\nllmeval_embedding_model = embed-x\n"
        "llmeval_report = report.json\n"
    )
    rows = [
        {
            "id": f"label-{i}",
            "partition": "distribution",
            "input": {"question": "What does Team cost?"},
            "expected_output": REFERENCE,
            "metadata": {"response": response},
            "human_score": human,
            "human_labels": {"acceptable": ok, **({"claims": claims} if claims else {})},
        }
        for i, (response, (_, human, ok, claims)) in enumerate(LABELLED.items())
    ]
    pytester.path.joinpath("labelled.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    pytester.makepyfile(test_labelled=SUITE)
    return pytester.runpytest()


def test_the_summary_shows_agreement_with_people(
    report: pytest.RunResult, fake_openai: FakeOpenAIServer
) -> None:
    assert report.ret == pytest.ExitCode.OK
    report.stdout.fnmatch_lines(
        [
            "calibration against human labels (4 labelled examples):",
            # judge 5 3 1 4 against people 5 2 1 4: the same order, one point off once
            "  judge vs human scores (n=4): Spearman 1.00 (p 0.000), weighted kappa *, "
            "mean absolute error 0.25",
            "  similarity (2 good, 2 bad pairs): best threshold *; the configured 0.90 gives *",
            "  grounding on 3 labelled claims: precision 1.00, recall 1.00 "
            "(1 of 1 unsupported claims caught, 0 false alarms)",
        ]
    )
    assert fake_openai.requests["/embeddings"] == 4  # the reference is embedded once


def test_the_report_carries_it_and_llmeval_calibrate_reads_it(
    report: pytest.RunResult, pytester: pytest.Pytester, capsys: pytest.CaptureFixture[str]
) -> None:
    path = pytester.path / "report.json"
    calibration = json.loads(path.read_text())["calibration"]
    assert calibration["judge"]["n"] == 4 and calibration["judge"]["mae"] == 0.25
    assert calibration["grounding"]["tp"] == 1 and calibration["grounding"]["fp"] == 0
    assert main(["calibrate", str(path)]) == 0
    text = capsys.readouterr().out
    assert text.splitlines()[0] == "calibration against human labels (4 labelled examples):"
    assert "precision 1.00, recall 1.00" in text
    assert main(["calibrate", str(path), "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == calibration


def test_calibrate_exit_codes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    unlabelled = tmp_path / "plain.json"
    unlabelled.write_text(json.dumps({"records": [{"example_id": "a", "human": None}]}))
    assert main(["calibrate", str(unlabelled)]) == 1
    assert "no record carries human labels" in capsys.readouterr().out
    assert main(["calibrate", str(tmp_path / "missing.json")]) == 2
    assert "cannot read a report" in capsys.readouterr().err
