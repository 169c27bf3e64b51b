"""Fault injection on a served Flow (serve.py, one sampler): each kind of process of the Flow is
killed (SIGKILL) in turn while a job runs, and another token's job waits behind it.

Each case asserts: the interrupted job ends (done through the restarted Flow, or failed with a
reason and its frames kept), the other token's job is served, and no image was made twice (the
result records, one folder per Document id, hold at most one finished image per seed). The cases
share one served Flow, which the supervisor restarts after each kill.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
import requests
from boards import board_states
from conftest import ROOT, TINY, TOKENS

pytestmark = pytest.mark.slow

ALICE, BOB = ({"Authorization": f"Bearer {TOKENS[name]}"} for name in ("alice", "bob"))
LONG = {**TINY, "steps": 8, "skip_steps": 0, "display_rate": 1, "n_batches": 1}  # long enough to be killed mid-image
SHORT = {**TINY, "n_batches": 1}


class Served:
    """serve.py in its own process group, with alice's and bob's tokens."""

    def __init__(self, folder: Path, env: dict[str, str]):
        from served import wait_ready

        from disco_service.client.local_flow import free_port

        self.folder, self.grpc_port, self.http_port = folder, free_port(), free_port()
        self.http = f"http://127.0.0.1:{self.http_port}"
        self.board, self.results = folder / "state", folder / "results"  # the board: in the state store
        self.log = folder / "serve.log"
        tokens = folder / "tokens"
        tokens.write_text("\n".join(TOKENS.values()) + "\n")
        env = {**os.environ, **env, "PYTHONUNBUFFERED": "1", "DISCO_API_TOKENS": f"@{tokens}"}
        env.update(DISCO_RESULTS_DIR=str(self.results))
        env.update(DISCO_STATE_DIR=str(self.board), DISCO_CLIENT_TIMEOUT_S="600")
        command = [sys.executable, str(ROOT / "serve.py"), f"--port={self.grpc_port}"]
        command += [f"--http-port={self.http_port}", "--replicas=1", "--host=127.0.0.1"]
        with open(self.log, "w") as out:
            self.process = subprocess.Popen(
                command, stdout=out, stderr=subprocess.STDOUT, start_new_session=True, env=env, cwd=ROOT
            )
        wait_ready(f"grpc://127.0.0.1:{self.grpc_port}", self.process, self.log)

    def call(self, headers: dict, method: str, path: str, **kwargs) -> requests.Response | None:
        """The answer, or None while the gateway is down (restarting)."""
        try:
            return requests.request(method, self.http + path, headers=headers, timeout=10, **kwargs)
        except requests.RequestException:
            return None

    def job(self, headers: dict, job_id: str) -> dict | None:
        answer = self.call(headers, "GET", f"/jobs/{job_id}")
        return answer.json() if answer is not None and answer.status_code == 200 else None

    def flow_processes(self) -> dict[str, psutil.Process]:
        """The Flow's processes by kind: gateway, encoder, sampler, renderer (found by their
        listening ports: the gateway's are known; the sampler runs the board's running job; the
        encoder was started before the renderer, as flow.yml lists them)."""
        listeners = []
        for process in psutil.Process(self.process.pid).children(recursive=True):
            try:
                ports = {c.laddr.port for c in process.net_connections("inet") if c.status == psutil.CONN_LISTEN}
            except psutil.Error:
                continue
            if ports:
                listeners.append((process, ports))
        gateway = next(p for p, ports in listeners if self.http_port in ports)
        running = [s for s in _board_states(self.board) if s.get("status") == "running"]
        sampler_pid = int(running[0]["replica"].rpartition(":")[2])
        sampler = next(p for p, _ in listeners if p.pid == sampler_pid)
        others = sorted((p for p, _ in listeners if p not in (gateway, sampler)), key=lambda p: p.create_time())
        assert len(others) == 2, [(p.pid, ports) for p, ports in listeners]
        return {"gateway": gateway, "sampler": sampler, "encoder": others[0], "renderer": others[1]}

    def stop(self) -> None:
        everything = psutil.Process(self.process.pid).children(recursive=True)
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(120)
        finally:
            for process in [self.process, *everything]:
                try:
                    process.kill()
                except (psutil.Error, ProcessLookupError):
                    pass


def _board_states(state_dir: Path) -> list[dict]:
    return list(board_states(state_dir).values())


def wait_for(condition, timeout: float, what: str):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if result := condition():
            return result
        time.sleep(0.5)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


@pytest.fixture(scope="module")
def served(flow_env, tmp_path_factory):
    flow = Served(tmp_path_factory.mktemp("crash"), flow_env)
    yield flow
    flow.stop()


def records_of_seed(results: Path, seed: int) -> list[dict]:
    """The result records of every Document made with ``seed`` (one folder per Document id)."""
    records = []
    for path in (results / "images").glob("*/result.json"):
        record = json.loads(path.read_text())
        if record.get("seed") == seed:
            records.append(record)
    return records


@pytest.mark.parametrize("kind", ["gateway", "encoder", "sampler", "renderer"])
def test_a_killed_process_ends_the_job_right_and_the_next_job_is_served(served, kind):
    seed = {"gateway": 301, "encoder": 302, "sampler": 303, "renderer": 304}[kind]
    submitted = served.call(ALICE, "POST", "/jobs", json={**LONG, "seed": seed})
    assert submitted is not None and submitted.status_code == 202, submitted and submitted.text
    job_id = submitted.json()["id"]

    def step() -> int:
        return ((served.job(ALICE, job_id) or {}).get("images") or [{}])[0].get("step") or 0

    wait_for(lambda: step() >= 2, 180, "alice's job to reach step 2")
    behind = served.call(BOB, "POST", "/jobs", json={**SHORT, "seed": seed + 100})
    assert behind is not None and behind.status_code == 202, behind and behind.text
    victim = served.flow_processes()[kind]
    killed = time.time()
    victim.kill()

    def ended(headers, job):
        state = served.job(headers, job)
        return state if state and state["status"] not in ("queued", "running") else None

    job = wait_for(lambda: ended(ALICE, job_id), 240, f"alice's job to end after the {kind} was killed")
    image = job["images"][0]
    print(f"{kind}: alice's job ended {job['status']} {time.time() - killed:.1f} s after the kill", flush=True)
    if job["status"] != "done":
        assert job["status"] == "failed" and image["error_code"] in ("sampler_died", "executor_restarting"), job
        assert image["error"] and image["latest_frame"], image  # a reason, and its frames kept
        assert served.call(ALICE, "GET", image["latest_frame"]).status_code == 200
    other = wait_for(lambda: ended(BOB, behind.json()["id"]), 240, "bob's job to be served")
    assert other["status"] == "done", other
    print(f"{kind}: bob's job done {time.time() - killed:.1f} s after the kill", flush=True)
    for run_seed, status in ((seed, job["status"]), (seed + 100, "done")):
        records = records_of_seed(served.results, run_seed)
        finished = [r for r in records if r["status"] == "done"]
        assert len(finished) == (1 if status == "done" else 0), records  # never made twice
        assert len(records) <= 3, records
    assert not [s for s in _board_states(served.board) if s.get("status") == "running"]
