"""Progress and cancellation of running images, shared through the state store.

Jina spreads requests over replicas round-robin, so the replica asked for an image's progress is
often not the one making it. Each image (by Document id) therefore has its place on the board in
the service's state store (``store/board.py``; the same store as the job queue's: this server's
SQLite file, or the PostgreSQL database several gateways share): its state (rewritten each step),
its latest frame, its stop request (``cancelled`` by the client, ``shutdown`` when the Flow
stops, ``abandoned`` when the caller went away; the first reason stays) and when its client last
asked about it (so an image whose client went away can be stopped); an animation also keeps each
finished frame until its client has them. Any replica can answer for any image, and the process
that supervises a Flow reads the board to stop or fail the images of its samplers.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from disco_service.server.store import JobStore, open_store
from disco_service.server.store.board import LATEST_FRAME
from disco_service.wire import JobStatus

__all__ = ["check_job_id", "JobBoard", "SWEEP_AFTER_S"]

_JOB_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")
SWEEP_AFTER_S = 24 * 3600  # an image nobody collected leaves the board after a day


def check_job_id(job_id: str) -> str:
    """Job ids name files of the result store: letters, digits, '-' and '_' only (1 to 64).
    Raises ``ValueError`` for any other."""
    if not isinstance(job_id, str) or not _JOB_ID.fullmatch(job_id):
        raise ValueError(f"job id must be 1-64 letters, digits, '-' or '_', got {job_id!r}")
    return job_id


def _plain(value: Any) -> Any:
    return value.value if isinstance(value, JobStatus) else value


class JobBoard:
    """The job board of one state store; every method checks the job id (``ValueError``)."""

    def __init__(self, store: JobStore | str | Path):
        """``store``: an open state store, or where it is (``open_store``: a SQLite file or a
        ``postgresql://`` URL; the executors get it as ``state_store``, serve.py as ``--state-store``)."""
        self.store = store if isinstance(store, JobStore) else open_store(store)

    def close(self) -> None:
        """Close the store's connection."""
        self.store.close()

    def update(self, job_id: str, frame_png: bytes | None = None, **state: Any) -> None:
        """Merge ``state`` (JSON-able; ``JobStatus`` values as their text) into the job's state,
        with ``updated`` set to now; ``frame_png`` (PNG bytes) becomes its latest frame."""
        values = {key: _plain(value) for key, value in state.items()}
        values["updated"] = self.store.clock()
        self.store.board_update(check_job_id(job_id), values, frame_png)

    def read(self, job_id: str) -> dict[str, Any] | None:
        """The job's state, or None when none was written."""
        return self.store.board_read(check_job_id(job_id))

    def latest_frame(self, job_id: str) -> bytes | None:
        """The job's latest frame (PNG bytes), or None."""
        return self.store.board_frame(check_job_id(job_id), LATEST_FRAME)

    def add_finished_frame(self, job_id: str, frame: int, png: bytes) -> None:
        """Keep an animation's finished frame ``frame`` (its client fetches it while the job runs)."""
        self.store.board_put_frame(check_job_id(job_id), int(frame), png)

    def finished_frame(self, job_id: str, frame: int) -> bytes | None:
        """An animation's finished frame ``frame`` (PNG bytes), or None."""
        return self.store.board_frame(check_job_id(job_id), int(frame))

    def seen(self, job_id: str) -> None:
        """The job's client just asked about it (it is still there, waiting for the result)."""
        self.store.board_seen(check_job_id(job_id))

    def last_seen(self, job_id: str) -> float | None:
        """When the job's client last asked about it (seconds since the epoch), or None."""
        return self.store.board_last_seen(check_job_id(job_id))

    def cancel(self, job_id: str, reason: JobStatus = JobStatus.CANCELLED) -> None:
        """Ask the job to stop at its next step (also before it starts); ``reason`` becomes its status.
        The first reason wins: a client's cancel is not turned into a shutdown."""
        self.store.board_cancel(check_job_id(job_id), JobStatus(reason).value)

    def stop_reason(self, job_id: str) -> JobStatus | None:
        """Why the job was asked to stop (cancelled, shutdown or abandoned), or None."""
        text = self.store.board_stop_reason(check_job_id(job_id))
        if text is None:
            return None
        return JobStatus(text) if text in JobStatus._value2member_map_ else JobStatus.CANCELLED

    def running(self) -> dict[str, dict[str, Any]]:
        """The state of every job still running, by id."""
        return dict(self.store.board_with_status(JobStatus.RUNNING.value))

    def forget(self, job_id: str, older_than_s: float = 0) -> None:
        """Remove the job from the board (when untouched for ``older_than_s`` seconds)."""
        self.store.board_forget(check_job_id(job_id), older_than_s)

    def sweep(self, older_than_s: float = SWEEP_AFTER_S) -> None:
        """Remove jobs untouched for ``older_than_s`` seconds (a day), so the board does not grow forever."""
        self.store.board_sweep(older_than_s)
