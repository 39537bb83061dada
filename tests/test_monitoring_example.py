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

# A shorter day, the script's own main() with its TRAFFIC scaled before the day starts.
# The hours around the incident (12:00 to 14:00) serve a quarter of their traffic (713
# requests, not 2,850) sampled at four times the rate (0.4, not 0.1), so each window holds
# as many base-rate samples as the full day's: the drift test at 14:00 keeps its power
# (about 0.8; 10 of 12 other seeds alert at 14:00). The night and morning serve a fortieth
# (98 requests, quiet windows where no alert may fire either); the hours after 14:00,
# which no assertion needs, serve none.
DRIVER = """
import importlib.util, sys
script, out = sys.argv[1:]
spec = importlib.util.spec_from_file_location("simulate", script)
simulate = importlib.util.module_from_spec(spec)
spec.loader.exec_module(simulate)
scale = [40] * 12 + [4] * 3
simulate.TRAFFIC[:] = [round(n / k) for n, k in zip(simulate.TRAFFIC, scale)] + [0] * 9
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
    assert "serving a simulated day (811 requests); drift from 14:00" in text

    # Drift is injected at 14:00: the first drift alert is for that window, none before.
    drifts = re.findall(r"ALERT drift \(critical\) in the window from (\d\d):00", text)
    assert drifts and drifts[0] == "14" and all(int(h) >= 14 for h in drifts)
    store = Store(out / "monitor.db", readonly=True)
    counts = store.counts()
    assert counts["stored"] == counts["evaluated"] == counts["accepted"] > 350
    assert counts["dropped"] == 0 and counts["pushed"] == 811
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
    # The suite's 8 regression examples and the 2 promoted, 6 tests each.
    assert "regression (hard): PASS, no failures among 10 examples (60 tests)" in text
    assert "60 passed, 274 deselected" in text

    page = (out / "dashboard.html").read_text()
    assert page.count('<figure class="chart">') >= 4 and "https://" not in page
