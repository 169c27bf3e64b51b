"""What the state store hands back: one job, one image (rows of the ``jobs`` and ``images`` tables)."""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

from disco_service.wire import JobStatus

__all__ = ["AlreadySent", "IMAGE_COLUMNS", "JOB_COLUMNS", "StoredImage", "StoredJob", "TooManyUnfinished"]


class AlreadySent(RuntimeError):
    """A Document id was about to be sent a second time (the Flow refuses reused ids; a claimer that
    took an image over must send it under a new id)."""


class TooManyUnfinished(RuntimeError):
    """The owner already has as many unfinished jobs as allowed; ``count`` says how many."""

    def __init__(self, count: int, limit: int):
        super().__init__(f"the owner has {count} unfinished jobs, the most allowed is {limit}")
        self.count, self.limit = count, limit


@dataclass
class StoredJob:
    id: str
    owner: str
    created: float  # seconds since the epoch
    changed: float  # the last change of the job or one of its images
    settings: dict[str, Any]  # JSON-able (the settings as Document tags)
    has_init_image: bool = False
    has_video: bool = False
    cancelled: bool = False


@dataclass
class StoredImage:
    job_id: str
    idx: int  # which image of the job (from 0)
    seed: int
    doc_id: str  # the Document id of its next (or current) sending
    status: str = JobStatus.QUEUED.value
    step: int | None = None
    total: int | None = None
    error_code: str | None = None
    error: str | None = None
    error_setting: str | None = None
    created: float = 0.0  # when its job was submitted
    claimed: float | None = None
    sent: float | None = None  # when it was (last) sent
    first_sent: float | None = None
    started: float | None = None  # when a sampler started it
    finished: float | None = None
    updated: float | None = None
    claimer: str | None = None  # the gateway that holds it while the lease runs
    lease_until: float | None = None
    sent_doc_id: str | None = None  # the Document id it was last sent under
    attempt: int = 0  # how many times it was sent
    cancel_reason: str | None = None  # cancelled, shutdown or abandoned: asked to stop
    frame_step: int | None = None  # the step of the latest frame seen
    frame: int | None = None  # an animation's: the frame being made, its frames, finished frames
    frames: int | None = None
    frames_done: int | None = None
    run_step: int | None = None  # an animation's steps over the whole run
    run_total: int | None = None
    interrupted: int = 0  # how many times a process of the Flow died while it was being made

    @property
    def finished_status(self) -> bool:
        return JobStatus(self.status).finished


JOB_COLUMNS = tuple(f.name for f in fields(StoredJob))
IMAGE_COLUMNS = tuple(f.name for f in fields(StoredImage))
