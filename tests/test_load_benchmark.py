"""benchmarks/load.py in its smallest form, so that it keeps running: 2 gateways, 4 jobs, 2 pages.

It starts real processes (two uvicorn gateways, the fake sampler, PostgreSQL when installed, else
one SQLite file) and takes about 20 s, hence ``slow``.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_the_load_benchmark_runs_every_job_once_within_the_slots_and_polling_costs_more(tmp_path):
    out = tmp_path / "load.json"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    command = [sys.executable, str(ROOT / "benchmarks" / "load.py"), "--jobs=4", "--pages=2", f"--out={out}"]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr

    result = json.loads(out.read_text())
    assert out.with_suffix(".md").read_text().startswith("| |")
    phases = {p["phase"]: p for p in result["phases"]}
    assert list(phases) == ["none", "events", "polling"]
    for phase in phases.values():
        assert phase["jobs"] == 4 and phase["lost"] == 0 and phase["statuses"] == {"done": 4}
        assert phase["sent"] == 4 and phase["sent_twice"] == 0  # every Document id reached the sampler once
        assert 1 <= phase["peak_in_flight"] <= result["slots"]
        assert phase["wait_s"]["p50"] <= phase["wait_s"]["p95"]
        assert phase["statements_per_s"] > 0
    assert phases["none"]["requests"] == {"POST /jobs": 4}
    assert phases["events"]["requests"] == {"POST /jobs": 4}  # the pages' streams were open before
    assert phases["polling"]["requests"]["GET /jobs"] >= 2
    assert result["polling_over_events"]["requests_per_s"] > 1
    if result["backend"] == "postgresql":  # SQLite's changes are heard only by the gateway that made them
        assert phases["events"]["done_events"] == phases["events"]["done_events_expected"] == 2
