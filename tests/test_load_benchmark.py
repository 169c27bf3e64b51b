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
    command = [
        sys.executable, str(ROOT / "benchmarks" / "load.py"), "--jobs=4", "--pages=2", "--idle-s=2", f"--out={out}"
    ]  # fmt: skip
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr

    result = json.loads(out.read_text())
    assert out.with_suffix(".md").read_text().startswith("| |")
    phases = {p["phase"]: p for p in result["phases"]}
    assert list(phases) == ["idle", "idle-events", "none", "events", "polling"]
    for name in ("idle", "idle-events", "none", "polling"):  # no stream open, or no job: the event hub reads nothing
        assert phases[name]["statements_per_s_by"].get("events", 0) == 0, name
    assert phases["events"]["statements_per_s_by"]["events"] > 0  # with streams, it reads the jobs that change
    assert phases.pop("idle")["requests"] == {} and phases.pop("idle-events")["pages"] == 2
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


def test_store_statements_are_counted_by_the_module_that_asked(tmp_path):
    from fake_flow import FakeFlow, settings

    from benchmarks import load
    from disco_service.server.job_queue import JobQueue
    from disco_service.server.results import ResultStore
    from disco_service.server.store import open_store

    state = open_store(tmp_path / "state.sqlite3")
    counts = load.count_statements(state)
    results = ResultStore(tmp_path / "results")
    queue = JobQueue(results, FakeFlow(results), state=state)
    assert counts["statements"] == 0  # counted from count_statements on; the queue's own reads come after it
    queue.submit("owner", settings(n=2))
    by_queue = counts["statements_by"]["job_queue"]
    assert by_queue > 0 and counts["transactions"] > 0
    state.get_job("nothing")  # asked from here, outside the service
    assert counts["statements_by"]["other"] >= 1
    assert counts["statements"] == sum(counts["statements_by"].values())
    state.close()


def test_a_run_with_a_lost_job_a_second_send_or_too_many_in_flight_is_a_failure():
    from benchmarks import load

    phase = {"phase": "events", "jobs": 4, "lost": 0, "errors": [], "sent_twice": 0, "peak_in_flight": 2}
    phase.update(done_events=2, done_events_expected=2)
    result = {"slots": 2, "backend": "postgresql", "phases": [phase]}
    assert load.problems(result) == []
    result["phases"] = [{**phase, "lost": 1, "errors": ["x: boom"]}, {**phase, "sent_twice": 1}]
    result["phases"] += [{**phase, "peak_in_flight": 3}, {**phase, "done_events": 1}]
    assert len(load.problems(result)) == 4
    assert "1 of 4 jobs not done (x: boom)" in load.problems(result)[0]
    assert load.request_kind("GET", "/jobs/abc/images/0/final.png") == "GET /jobs/{id}/..."
    assert load.request_kind("GET", "/jobs/events") == "GET /jobs/events"
    assert load.percentile([3.0, 1.0, 2.0], 0.5) == 2.0
