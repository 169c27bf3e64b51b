"""Keeps a Flow serving: restarts it when one of its processes dies, drains it before stopping.

The Flow runs in a child process (``serve.py --flow-only``) in a session of its own, so a
terminal's Ctrl-C reaches only this process, which decides what happens:

- an executor process dies (the OOM killer, kill -9): its jobs are marked ``failed`` on the job
  board with a message saying so, the other running jobs stop at their next step as
  ``shutdown`` and go back to their callers, and the whole Flow is started again;
- SIGINT or SIGTERM: running jobs stop at their next step as ``shutdown``, their frames go back
  to their callers, then the Flow stops. It logs what it is waiting for.

Jobs are found on the job board, in the server's state store (``--state-store``): each names the
process running it.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

from disco_service import config
from disco_service.server.jobs import JobBoard
from disco_service.wire import ErrorCode, Failure, JobStatus

__all__ = ["log", "LOST_NOTICE_S", "POLL_S", "ROOT", "Supervisor"]

ROOT = Path(__file__).resolve().parents[2]  # the repository: serve.py, flow.yml

POLL_S = 0.5
LOST_NOTICE_S = 10  # how long a dead sampler's jobs wait for their clients to ask about them


def log(message: str) -> None:
    print(f"[serve] {message}", file=sys.stderr, flush=True)


class Supervisor:
    def __init__(
        self,
        flow_args: list[str],
        ready_file: Path | None = None,
        stop_with_parent: bool = False,
        quiet: bool = False,
        cfg: config.Config | None = None,
        state_store: str | None = None,
    ):
        """``flow_args``: serve.py's flags for the Flow it runs; ``quiet``: a client's own Flow, which
        stops without saying so; ``cfg``: the service's configuration (stop timeout); ``state_store``:
        the store holding the Flow's job board (default: the store of flow.yml's port)."""
        cfg = cfg or config.load()
        self.flow_args = flow_args
        self.ready_file = ready_file
        self.parent = os.getppid() if stop_with_parent else None
        self.quiet = quiet
        self.stop_timeout_s = cfg.stop_timeout_s
        self.board = JobBoard(state_store or cfg.store_target(config.FLOW_GRPC_PORT))
        self.host = socket.gethostname()
        self.stop_signal: int | None = None
        self.flow: subprocess.Popen | None = None
        self.members: list[psutil.Process] = []

    def run(self) -> int:
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, self._on_signal)
        try:
            started = self._start()
            while started and (dead := self._watch()):
                started = self._restart_after(dead)
            return 0
        finally:
            self._stop_flow()

    def _on_signal(self, signum: int, frame) -> None:
        if self.stop_signal is None and not self.quiet:  # a client's own Flow stops quietly after its run
            log(f"{signal.Signals(signum).name} received: stopping")
        self.stop_signal = signum

    def _stopping(self) -> bool:
        if self.parent is not None and os.getppid() != self.parent:
            self.stop_signal = self.stop_signal or signal.SIGTERM  # the process that started us is gone
        return self.stop_signal is not None

    def _start(self) -> bool:
        """Start the Flow and wait until it serves; False when a stop came first."""
        with tempfile.TemporaryDirectory() as tmp:
            flow_ready = Path(tmp) / "ready"
            command = [sys.executable, str(ROOT / "serve.py"), "--flow-only", "--ready-file", str(flow_ready)]
            self.flow = subprocess.Popen(command + self.flow_args, start_new_session=True)
            while not flow_ready.exists():
                if self._stopping():
                    return False
                if self.flow.poll() is not None:
                    raise SystemExit(f"error: the Flow exited with {self.flow.returncode} while starting")
                time.sleep(POLL_S)
        root = psutil.Process(self.flow.pid)
        self.members = [root, *root.children(recursive=True)]
        if self.ready_file:
            self.ready_file.write_text(str(self.flow.pid))
        return True

    def _watch(self) -> list[psutil.Process]:
        """Wait for a stop (returns []) or a dead process of the Flow (returns those)."""
        while not self._stopping():
            dead = [p for p in self.members if not _alive(p)]
            if dead:
                return dead
            time.sleep(POLL_S)
        return []

    def _own_jobs(self, pids: set[int]) -> dict[str, dict]:
        jobs = {}
        for job_id, state in self.board.running().items():
            host, _, pid = str(state.get("replica", "")).rpartition(":")
            if host == self.host and pid.isdigit() and int(pid) in pids:
                jobs[job_id] = state
        return jobs

    def _restart_after(self, dead: list[psutil.Process]) -> bool:
        """Fail the dead process's jobs, drain the others, start the Flow again; False when a stop came first."""
        pids = ", ".join(str(p.pid) for p in dead)
        lost = self._own_jobs({p.pid for p in dead})
        for job_id, state in lost.items():
            error = f"the sampler process died (pid {pids}) at step {state.get('step')} of {state.get('total')}"
            failure = Failure(ErrorCode.SAMPLER_DIED, error)
            self.board.update(job_id, status=JobStatus.FAILED, **failure.tags(), finished=time.time())
        log(f"process {pids} of the Flow died (jobs lost: {', '.join(lost) or 'none'}): restarting the Flow")
        marked, deadline = time.time(), time.time() + LOST_NOTICE_S
        while time.time() < deadline and any((self.board.last_seen(j) or 0) <= marked for j in lost):
            time.sleep(0.1)  # clients that poll read why their job failed before the Flow goes down
        self._drain()
        self._stop_flow(kill=True)  # a Flow with a dead member does not close cleanly
        started = time.time()
        if not self._start():
            return False
        log(f"the Flow is serving again ({time.time() - started:.0f} s)")
        return True

    def _drain(self) -> None:
        """Stop this Flow's running jobs at their next step and wait until their callers have them."""
        jobs = self._own_jobs({p.pid for p in self.members if _alive(p)})
        if not jobs:
            return
        for job_id in jobs:
            self.board.cancel(job_id, JobStatus.SHUTDOWN)
        log(f"waiting for {len(jobs)} running job(s) to stop at their next step: {', '.join(jobs)}")
        deadline = time.time() + self.stop_timeout_s
        while time.time() < deadline and any(self._in_flight(job_id) for job_id in jobs):
            if not all(_alive(p) for p in self.members):
                break  # nothing more will come back from a Flow with a dead member
            time.sleep(0.1)
        log("running jobs stopped and sent back")

    def _in_flight(self, job_id: str) -> bool:
        """Still running, or stopped but not yet through the Renderer to its caller."""
        state = self.board.read(job_id)
        if state is None:
            return False  # its client collected it and had it removed
        return state.get("status") == JobStatus.RUNNING or not state.get("returned")

    def _stop_flow(self, kill: bool = False) -> None:
        if self.flow is None or self.flow.poll() is not None:
            return
        if not kill:
            self._drain()
            self.flow.terminate()  # the Flow closes its executors
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.flow.wait(60)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.flow.pid, signal.SIGKILL)  # whatever is left of its process group
        self.flow.wait()
        self.members = []


def _alive(process: psutil.Process) -> bool:
    try:
        return process.is_running() and process.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False
