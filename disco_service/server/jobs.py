"""Progress and cancellation of running jobs, shared through a directory.

Jina spreads requests over replicas round-robin, so the replica asked for a job's progress
is often not the one running it. Each job therefore lives in files under one directory
(``DISCO_JOBS_DIR``, default a folder in the system temp dir; on Kubernetes a shared volume):
``<id>.json`` (state, rewritten atomically every step), ``<id>.png`` (latest frame) and
``<id>.cancel`` (the stop request; its text says why: ``cancelled`` by the client, ``shutdown`` when
the Flow stops, ``abandoned`` when the caller went away) and ``<id>.seen`` (touched whenever the
job's client polls its progress, so a job whose client went away can be stopped); an animation also
keeps each finished frame, ``<id>.frame<NNNN>.png``, until its client has them. Any replica can
answer for any job, and the process that supervises a Flow reads it to stop or fail the jobs of
its samplers.
"""

from __future__ import annotations

import json
import logging
import os
import re
import time
from pathlib import Path
from typing import Any

from disco_service.wire import JobStatus

__all__ = ["check_job_id", "JobBoard"]

_LOG = logging.getLogger("disco.service")
_JOB_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")


def check_job_id(job_id: str) -> str:
    """Job ids become file names: letters, digits, '-' and '_' only."""
    if not isinstance(job_id, str) or not _JOB_ID.fullmatch(job_id):
        raise ValueError(f"job id must be 1-64 letters, digits, '-' or '_', got {job_id!r}")
    return job_id


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


class JobBoard:
    def __init__(self, directory: str | Path):
        """``directory``: the board's folder (the service's ``DISCO_JOBS_DIR``), made if missing."""
        self.dir = Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True)

    def _path(self, job_id: str, suffix: str) -> Path:
        return self.dir / f"{check_job_id(job_id)}{suffix}"

    def update(self, job_id: str, frame_png: bytes | None = None, **state: Any) -> None:
        if frame_png is not None:
            _write_atomic(self._path(job_id, ".png"), frame_png)
        current = self.read(job_id) or {}
        current.update({k: v.value if isinstance(v, JobStatus) else v for k, v in state.items()}, updated=time.time())
        _write_atomic(self._path(job_id, ".json"), json.dumps(current).encode())

    def read(self, job_id: str) -> dict[str, Any] | None:
        """The job's state, or None. A file that is not one (any content: empty, cut short, not an
        object) is None too, with a line in the log naming it: it never stops the reader."""
        path = self._path(job_id, ".json")
        try:
            state = json.loads(path.read_bytes())
        except FileNotFoundError:
            return None
        except (OSError, ValueError, RecursionError) as exc:
            _LOG.warning("skipped the job board file %s: %s", path, str(exc)[:200])
            return None
        if not isinstance(state, dict):
            _LOG.warning("skipped the job board file %s: not an object", path)
            return None
        return state

    def latest_frame(self, job_id: str) -> bytes | None:
        try:
            return self._path(job_id, ".png").read_bytes()
        except FileNotFoundError:
            return None

    def add_finished_frame(self, job_id: str, frame: int, png: bytes) -> None:
        """Keep an animation's finished frame ``frame`` (its client fetches it while the job runs)."""
        _write_atomic(self._path(job_id, f".frame{frame:04d}.png"), png)

    def finished_frame(self, job_id: str, frame: int) -> bytes | None:
        try:
            return self._path(job_id, f".frame{frame:04d}.png").read_bytes()
        except FileNotFoundError:
            return None

    def seen(self, job_id: str) -> None:
        """The job's client just asked about it (it is still there, waiting for the result)."""
        self._path(job_id, ".seen").touch()

    def last_seen(self, job_id: str) -> float | None:
        try:
            return self._path(job_id, ".seen").stat().st_mtime
        except FileNotFoundError:
            return None

    def cancel(self, job_id: str, reason: JobStatus = JobStatus.CANCELLED) -> None:
        """Ask the job to stop at its next step (also before it starts); ``reason`` becomes its status."""
        path = self._path(job_id, ".cancel")
        if not path.exists():  # the first reason wins: a client's cancel is not turned into a shutdown
            _write_atomic(path, JobStatus(reason).value.encode())

    def stop_reason(self, job_id: str) -> JobStatus | None:
        """Why the job was asked to stop (cancelled, shutdown or abandoned), or None."""
        try:
            text = self._path(job_id, ".cancel").read_bytes().decode("utf-8", "replace").strip()
        except FileNotFoundError:
            return None
        return JobStatus(text) if text in JobStatus._value2member_map_ else JobStatus.CANCELLED

    def running(self) -> dict[str, dict[str, Any]]:
        """The state of every job still running, by id."""
        jobs = {}
        for path in self.dir.glob("*.json"):
            state = self.read(path.stem) if _JOB_ID.fullmatch(path.stem) else None
            if state and state.get("status") == JobStatus.RUNNING:
                jobs[path.stem] = state
        return jobs

    def forget(self, job_id: str, older_than_s: float = 0) -> None:
        """Remove the job's files (those untouched for ``older_than_s`` seconds)."""
        paths = [self._path(job_id, suffix) for suffix in (".json", ".png", ".cancel", ".seen")]
        paths += self.dir.glob(f"{check_job_id(job_id)}.frame*.png")
        for path in paths:
            if path.exists() and time.time() - path.stat().st_mtime >= older_than_s:
                path.unlink(missing_ok=True)

    def sweep(self, older_than_s: float = 24 * 3600) -> None:
        """Remove files of jobs untouched for a day, so the directory does not grow forever."""
        now = time.time()
        for path in self.dir.glob("*"):
            try:
                if now - path.stat().st_mtime > older_than_s:
                    path.unlink()
            except FileNotFoundError:
                pass
