"""The monitoring example: a simulated day, drift caught in the afternoon, two failures
promoted and run as regression tests, and the dashboard drawn."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from pytest_llmeval import load_dataset
from pytest_llmeval.monitor import Store

SCRIPT = Path(__file__).parent.parent / "example_suite" / "monitoring" / "simulate.py"


def test_a_simulated_day_from_traffic_to_regression_tests(tmp_path: Path) -> None:
    out = tmp_path / "out"
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "--out", str(out)],
        capture_output=True,
        text=True,
        check=False,
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    text = done.stdout

    # Drift is injected at 14:00: the first drift alert is for that window, none before.
    drifts = re.findall(r"ALERT drift \(critical\) in the window from (\d\d):00", text)
    assert drifts and drifts[0] == "14" and all(int(h) >= 14 for h in drifts)
    store = Store(out / "monitor.db", readonly=True)
    counts = store.counts()
    assert counts["stored"] == counts["evaluated"] == counts["accepted"] > 1000
    assert counts["dropped"] == 0 and counts["pushed"] == 10620
    types = {a["type"] for a in store.alerts()}
    assert types == {"drift", "hallucination", "constraint", "quality"}
    morning = [w for w in store.windows() if w["start"] < store.windows()[14]["start"]]
    assert all(w["hallucination_rate"] in (0, None) for w in morning)
    store.close()

    # Two failures promoted into the copy's regression set, and run at once.
    assert text.count("promoted 1 example(s) to out/suite/datasets/regression.jsonl") == 2
    promoted = [ex for ex in load_dataset(out / "suite" / "datasets") if "production" in ex.tags]
    assert len(promoted) == 2 and all(ex.partition == "regression" for ex in promoted)
    assert all(ex.metadata["must_not_mention"] for ex in promoted)
    assert "regression (hard): PASS, no failures among 4 examples (20 tests)" in text
    assert "20 passed, 204 deselected" in text

    page = (out / "dashboard.html").read_text()
    assert page.count("data:image/png;base64,") >= 4 and "https://" not in page
