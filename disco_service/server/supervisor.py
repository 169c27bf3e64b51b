"""Keeps a Flow serving: restarts it when one of its processes dies, drains it before stopping.

The Flow runs in a child process (``serve.py --flow-only``) in a session of its own, so a
terminal's Ctrl-C reaches only this process, which decides what happens:

- a process of the Flow dies (the OOM killer, kill -9; a sampler, the encoder, the renderer or the
  gateway): a dead sampler's jobs are marked ``failed`` (``sampler_died``) on the job board, the
  other running jobs stop at their next step as ``shutdown`` (waited for at most
  ``RESTART_DRAIN_S``), the Flow's processes get SIGTERM and ``STOP_GRACE_S`` to exit before
  SIGKILL, and the whole Flow is started again;
- SIGINT or SIGTERM: running jobs stop at their next step as ``shutdown``, their frames go back
  to their callers (waited for at most ``DISCO_STOP_TIMEOUT_S``), then the Flow stops.

Either way a job that was still running when its sampler was stopped is marked ``failed``
(``executor_restarting``, with the step it reached) on the board once the processes are gone, so
nothing is left ``running``: the job queue sends such images again under a new Document id, or
fails them (job_queue.py). It logs what it is waiting for. Jobs are found on the job board,
in the server's state store (``--state-store``): each names the process running it.
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

__all__ = ["log", "LOST_NOTICE_S", "POLL_S", "RESTART_DRAIN_S", "ROOT", "STOP_GRACE_S", "Supervisor"]

ROOT = Path(__file__).resolve().parents[2]  # the repository: serve.py, flow.yml

POLL_S = 0.5
LOST_NOTICE_S = 10  # how long a dead sampler's jobs wait for their clients to ask about them
RESTART_DRAIN_S = 60.0  # at a restart, how long running jobs get to stop at their next step (at most)
STOP_GRACE_S = 15.0  # how long the Flow's processes get to exit after SIGTERM before SIGKILL


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
        """Fail the dead sampler's jobs, stop the others at their next step, stop the Flow (marking
        any job it cut short), start it again; False when a stop came first."""
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
        self._drain(min(self.stop_timeout_s, RESTART_DRAIN_S))
        self._stop_flow(f"the Flow was restarted after process {pids} died", drain=False)
        started = time.time()
        if not self._start():
            return False
        log(f"the Flow is serving again ({time.time() - started:.0f} s)")
        return True

    def _drain(self, timeout_s: float) -> None:
        """Stop this Flow's running jobs at their next step and wait (at most ``timeout_s`` seconds)
        until they stopped and, while the whole Flow is up, until their callers have them."""
        jobs = self._own_jobs({p.pid for p in self.members if _alive(p)})
        if not jobs:
            return
        for job_id in jobs:
            self.board.cancel(job_id, JobStatus.SHUTDOWN)
        log(f"waiting for {len(jobs)} running job(s) to stop at their next step: {', '.join(jobs)}")
        deadline = time.time() + timeout_s
        while time.time() < deadline:
            whole = all(_alive(p) for p in self.members)
            if not any(self._in_flight(job_id, whole) for job_id in jobs):
                log("running jobs stopped and sent back" if whole else "running jobs stopped")
                return
            time.sleep(0.1)
        log(f"running jobs did not stop within {timeout_s:.0f} s")

    def _in_flight(self, job_id: str, whole: bool = True) -> bool:
        """Still running on a live sampler, or (``whole``: every process of the Flow is up, so it can
        still reach its caller) stopped but not yet through the Renderer to its caller."""
        state = self.board.read(job_id)
        if state is None:
            return False  # its client collected it and had it removed
        if state.get("status") == JobStatus.RUNNING:
            return bool(self._own_jobs({p.pid for p in self.members if _alive(p)}).get(job_id))
        return whole and not state.get("returned")

    def _mark_interrupted(self, jobs: dict[str, dict], why: str) -> None:
        """Mark ``jobs`` (run by processes now gone) that still read ``running`` on the board as
        failed with code ``executor_restarting`` and the step they reached, so that nobody waits for them."""
        for job_id in jobs:
            state = self.board.read(job_id) or {}
            if state.get("status") != JobStatus.RUNNING:
                continue  # it ended by itself (stopped at its step, finished, or failed)
            error = f"{why} at step {state.get('step')} of {state.get('total')}"
            failure = Failure(ErrorCode.EXECUTOR_RESTARTING, error)
            self.board.update(job_id, status=JobStatus.FAILED, **failure.tags(), finished=time.time())
            log(f"job {job_id} was cut short: {error}")

    def _stop_flow(self, why: str = "the Flow was stopped", drain: bool = True) -> None:
        """Stop the Flow: drain its jobs and SIGTERM the Flow, which closes its executors (60 s), or
        (not ``drain``, a restart) SIGTERM every process and give them ``STOP_GRACE_S`` seconds; then
        SIGKILL what is left, and mark the jobs it cut short (``why``)."""
        if self.flow is None or self.flow.poll() is not None:
            return
        if drain:
            self._drain(self.stop_timeout_s)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            if drain:
                self.flow.terminate()  # the Flow closes its executors
            else:  # a Flow with a dead member does not close cleanly: each process exits on its own
                os.killpg(self.flow.pid, signal.SIGTERM)
        deadline = time.time() + (60 if drain else STOP_GRACE_S)
        while time.time() < deadline and any(_alive(p) for p in self.members):
            time.sleep(0.1)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.flow.pid, signal.SIGKILL)  # whatever is left of its process group
        for process in self.members:  # an executor that left the group is stopped all the same
            with contextlib.suppress(psutil.Error):
                process.kill()
        self.flow.wait()
        self._mark_interrupted(self._own_jobs({p.pid for p in self.members}), why)  # those its processes ran
        self.members = []


def _alive(process: psutil.Process) -> bool:
    try:
        return process.is_running() and process.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False
