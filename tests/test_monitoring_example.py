"""The monitoring example: a simulated day, drift caught in the afternoon, two failures
promoted and run as regression tests, and the dashboard drawn."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from pytest_llmeval import load_dataset
from pytest_llmeval.monitor import Store

pytest.importorskip("matplotlib", reason="the dashboard needs the monitor extra")

SCRIPT = Path(__file__).parent.parent / "example_suite" / "monitoring" / "simulate.py"

# A shorter day: a quarter of each hour's traffic (2,656 requests, not 10,620), sampled at
# four times the rate (0.4, not 0.1), so that each hourly window holds as many base-rate
# samples as the full day's, and the drift test has the same power at 14:00. The script's
# own main() runs, with its TRAFFIC scaled before the day starts.
DRIVER = """
import importlib.util, sys
script, out = sys.argv[1:]
spec = importlib.util.spec_from_file_location("simulate", script)
simulate = importlib.util.module_from_spec(spec)
spec.loader.exec_module(simulate)
simulate.TRAFFIC[:] = [round(n / 4) for n in simulate.TRAFFIC]
sys.exit(simulate.main(["--out", out, "--rate", "0.4"]))
"""


def test_a_simulated_day_from_traffic_to_regression_tests(tmp_path: Path) -> None:
    out = tmp_path / "out"
    done = subprocess.run(
        [sys.executable, "-c", DRIVER, str(SCRIPT), str(out)],
        capture_output=True,
        text=True,
        check=False,
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    text = done.stdout
    assert "serving a simulated day (2656 requests); drift from 14:00" in text

    # Drift is injected at 14:00: the first drift alert is for that window, none before.
    drifts = re.findall(r"ALERT drift \(critical\) in the window from (\d\d):00", text)
    assert drifts and drifts[0] == "14" and all(int(h) >= 14 for h in drifts)
    store = Store(out / "monitor.db", readonly=True)
    counts = store.counts()
    assert counts["stored"] == counts["evaluated"] == counts["accepted"] > 1000
    assert counts["dropped"] == 0 and counts["pushed"] == 2656
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
