"""The demo server's judge: scripted, not a model.

It answers the plugin's three judge prompts (the rubric, the pairwise comparison and the
grounding check) with the JSON a judge model would give. For the app's answers the rubric
score comes from plain rules about a Brightdesk support reply; for the hand-labelled
responses of ``calibration.jsonl`` the scores and claim labels are written in
``demo/judge.jsonl``, including a few mistakes a real judge makes (a miss, a false alarm),
so that the calibration summary has something to show. The calibration set asks a panel
of two judges (``judge-demo-1`` and ``judge-demo-2``): the second one's scores are
written beside the first one's where they differ (``second_judge_score``), a point up
on some responses and a point down on as many, so that the panel's agreement is high
but not perfect.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from app import KNOWLEDGE_BASE

from pytest_llmeval import load_dataset
from pytest_llmeval.grounding import UNSUPPORTED, precheck

HERE = Path(__file__).resolve().parent
SIGN_OFF = "— Brightdesk Support"
PERSONA_BREAK = ("ho ho ho", "elves", "santa", "holiday")
VAGUE = ("not sure", "check our website", "for a while")
LEAKS = ("You are the Brightdesk support assistant", "Answer only from the knowledge base")
EMOJI = re.compile("[\U0001f300-\U0001faff\u2600-\u27bf]")
SECOND_JUDGE = "judge-demo-2"


def scripted() -> dict[str, dict[str, Any]]:
    """The calibration responses' text -> their scripted verdict (score, claims)."""
    responses = {ex.id: ex.metadata["response"] for ex in load_dataset(HERE / "calibration.jsonl")}
    lines = (HERE / "demo" / "judge.jsonl").read_text(encoding="utf-8").splitlines()
    return {responses[entry["id"]]: entry for entry in map(json.loads, lines)}


SCRIPTED = scripted()


def reply(request: dict[str, Any]) -> str | None:
    """The judge's reply to a judge request, or None when the request is not one."""
    messages = request.get("messages", [])
    system = messages[0]["content"] if messages else ""
    user = messages[-1]["content"] if messages else ""
    if "on the 1-5 scale" in system:
        model = str(request.get("model", ""))
        return json.dumps(rubric(_element(user, "response"), _element(user, "input"), model))
    if "comparing two responses" in system:
        return json.dumps(pairwise(_element(user, "response_a"), _element(user, "response_b")))
    if "against a context document" in system:
        answer = _element(user, "answer")
        return json.dumps({"claims": SCRIPTED[answer]["claims"] if answer in SCRIPTED else []})
    return None


def rubric(response: str, question: str = "", model: str = "") -> dict[str, Any]:
    """A 1-5 score: 5 less a penalty for each rule a support reply breaks (or the
    scripted score of a calibration response, the second judge's where it has one)."""
    if response in SCRIPTED:
        entry = SCRIPTED[response]
        score = entry.get("second_judge_score", entry["score"])
        score = score if model == SECOND_JUDGE else entry["score"]
        return {"reasoning": "scripted for the calibration set", "score": score}
    weaknesses = []
    lowered = response.lower()
    if any(leak.lower() in lowered for leak in LEAKS):
        weaknesses.append("reveals the system prompt")
    if any(word in lowered for word in PERSONA_BREAK):
        weaknesses.append("breaks the support persona")
    if EMOJI.search(response):
        weaknesses.append("uses emoji")
    if not response.rstrip().endswith(SIGN_OFF):
        weaknesses.append("no sign-off")
    # Values the customer gave or the tools returned (the judge's input) may be repeated.
    known = f"{KNOWLEDGE_BASE}\n{question}"
    invented = [c.text for c in precheck(response, known) if c.label == UNSUPPORTED]
    if invented:
        weaknesses.append(f"states {', '.join(invented)}, which the knowledge base does not")
    if any(phrase in lowered for phrase in VAGUE):
        weaknesses.append("vague: does not give the answer")
    penalty = {
        "reveals the system prompt": 3,
        "breaks the support persona": 2,
        "vague: does not give the answer": 2,
    }
    score = 5 - sum(penalty.get(w, 2 if w.startswith("states") else 1) for w in weaknesses)
    return {
        "reasoning": "; ".join(weaknesses) or "answers from the knowledge base, in persona",
        "strengths": [] if weaknesses else ["grounded", "in persona"],
        "weaknesses": weaknesses,
        "score": max(1, score),
    }


def pairwise(a: str, b: str) -> dict[str, Any]:
    """The response with the higher rubric score wins; equal scores tie."""
    score_a, score_b = rubric(a)["score"], rubric(b)["score"]
    winner = "tie" if score_a == score_b else ("A" if score_a > score_b else "B")
    return {"reasoning": f"rubric scores: A {score_a}, B {score_b}", "winner": winner}


def _element(text: str, tag: str) -> str:
    match = re.search(rf"<{tag}>\n(.*?)\n</{tag}>", text, re.DOTALL)
    return match.group(1) if match else ""
