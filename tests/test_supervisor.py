"""The supervisor's restart without a Flow: stand-in processes play the gateway and the samplers,
writing on a real job board, so what a restart does to the jobs it interrupts is seen directly."""

import os
import signal
import subprocess
import sys
import textwrap
import time

import psutil
import pytest

from disco_service import config
from disco_service.server import supervisor
from disco_service.server.jobs import JobBoard
from disco_service.server.supervisor import Supervisor

# A sampler's stand-in: runs job argv[2] on the board argv[1], a step every 50 ms; with argv[3] == "1"
# it stops at its next step when asked (as a sampler does), else it ignores stops and SIGTERM alike.
SAMPLER = textwrap.dedent(
    """
    import os, signal, socket, sys, time
    from disco_service.server.jobs import JobBoard
    board, job, obeys = JobBoard(sys.argv[1]), sys.argv[2], sys.argv[3] == "1"
    if not obeys:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    board.update(job, status="running", step=0, total=1000, replica=f"{socket.gethostname()}:{os.getpid()}")
    step = 0
    while True:
        time.sleep(0.05)
        if obeys and (reason := board.stop_reason(job)):
            board.update(job, status=reason, step=step)
            break
        step += 1
        board.update(job, step=step)
    time.sleep(3600)
    """
)
# The Flow's stand-in: starts a gateway (idle) and the samplers, then waits.
FLOW = textwrap.dedent(
    """
    import subprocess, sys, time
    board, code = sys.argv[1], sys.argv[2]
    children = [subprocess.Popen([sys.executable, "-c", "import time; time.sleep(3600)"])]
    for job, obeys in (("obeys", "1"), ("stubborn", "0")):
        children.append(subprocess.Popen([sys.executable, "-c", code, board, job, obeys]))
    time.sleep(3600)
    """
)


@pytest.fixture
def flow(tmp_path, monkeypatch):
    """A Supervisor holding a stand-in Flow: (supervisor, board, its gateway and sampler processes)."""
    monkeypatch.setattr(supervisor, "RESTART_DRAIN_S", 2.0)
    monkeypatch.setattr(supervisor, "STOP_GRACE_S", 1.0)
    monkeypatch.setattr(supervisor, "LOST_NOTICE_S", 0)
    store = str(tmp_path / "jobs.sqlite3")
    board = JobBoard(store)
    sup = Supervisor([], cfg=config.load({}), quiet=True, state_store=store)
    env = {**os.environ, "PYTHONPATH": str(supervisor.ROOT)}
    sup.flow = subprocess.Popen([sys.executable, "-c", FLOW, store, SAMPLER], start_new_session=True, env=env)
    try:
        deadline = time.time() + 60
        while set(board.running()) != {"obeys", "stubborn"} or min(s["step"] for s in board.running().values()) < 2:
            assert time.time() < deadline, "the stand-in samplers did not start"
            time.sleep(0.05)
        root = psutil.Process(sup.flow.pid)
        sup.members = [root, *root.children(recursive=True)]
        gateway = next(p for p in sup.members[1:] if "sleep(3600)" in " ".join(p.cmdline()) and len(p.cmdline()) == 3)
        samplers = {board.read(job)["replica"].rpartition(":")[2]: job for job in ("obeys", "stubborn")}
        by_job = {samplers[str(p.pid)]: p for p in sup.members if str(p.pid) in samplers}
        yield sup, board, gateway, by_job
    finally:
        os.killpg(sup.flow.pid, signal.SIGKILL)
        sup.flow.wait()


def kill(process: psutil.Process) -> None:
    """SIGKILL, then wait until it is dead (a zombie: its parent, the stand-in Flow, does not reap it)."""
    process.kill()
    deadline = time.time() + 10
    while supervisor._alive(process):
        assert time.time() < deadline
        time.sleep(0.05)


def restart(sup: Supervisor, dead: list[psutil.Process]) -> float:
    """Run the supervisor's restart after ``dead`` died (the Flow is not started again); its seconds."""
    sup._start = lambda: False
    started = time.time()
    assert sup._restart_after(dead) is False
    return time.time() - started


def test_a_dead_gateway_stops_the_samplers_jobs_and_marks_the_one_it_cut_short(flow):
    sup, board, gateway, samplers = flow
    everything = list(sup.members)
    kill(gateway)
    took = restart(sup, [gateway])
    assert board.read("obeys")["status"] == "shutdown"  # stopped at its next step by the sampler itself
    stubborn = board.read("stubborn")
    assert stubborn["status"] == "failed" and stubborn["error_code"] == "executor_restarting"
    assert f"after process {gateway.pid} died at step {stubborn['step']} of 1000" in stubborn["error"]
    assert not board.running()  # nothing is left "running" for a caller to wait on
    deadline = time.time() + 5  # SIGKILLed: gone once the kernel has delivered it
    while [p for p in everything if supervisor._alive(p)] and time.time() < deadline:
        time.sleep(0.05)
    assert not [p for p in everything if supervisor._alive(p)]
    assert took < supervisor.RESTART_DRAIN_S + supervisor.STOP_GRACE_S + 5  # bounded, SIGKILL after the grace


def test_a_dead_sampler_s_job_fails_as_sampler_died_and_the_other_stops(flow):
    sup, board, gateway, samplers = flow
    kill(samplers["stubborn"])
    restart(sup, [samplers["stubborn"]])
    died = board.read("stubborn")
    assert died["status"] == "failed" and died["error_code"] == "sampler_died"
    assert f"the sampler process died (pid {samplers['stubborn'].pid})" in died["error"]
    assert board.read("obeys")["status"] == "shutdown"
