"""The job API's queue: callers hand in jobs with short requests; the service runs them on its Flow.

A job is ``n_batches`` images, each one Document on the Flow (its own id and seed, ``seed + i``).
Jobs wait here, per owner (a token's fingerprint, see tokens.py), and are sent one image at a time
whenever a sampler is free (``slots``: the Flow's sampler replicas), taking owners in turn
(round-robin), so one caller's long list does not hold back another's single image. While images
run, the queue polls ``/progress`` for them (which also tells the Flow that someone is waiting, so
they are not abandoned) and keeps each new frame. Each image ends in the result store
(results.py), written by the Flow itself.

Jobs and images live in the state store (``disco_service.server.store``: SQLite by default,
PostgreSQL to share one queue between gateways); an init image or video is a file beside the
results (``DISCO_RESULTS_DIR/jobs/<id>.init``). The turn between owners and the free sampler slots
are decided there: each image is claimed by one gateway (``claimer``) with a lease it renews, so
gateways that share a store never send an image twice nor more images than the slots. Jobs survive
a restart of the gateway, or its death: queued images are sent later, images that were running are
watched again by whoever takes them over (their results reach the result store all the same), and
an image whose request was lost before it started is queued again under a new id. A request that
fails because the Flow cannot be reached before the image started (a sampler restarting) is
retried as ``transport.RETRY`` says. An image that a process of the Flow died under (stopped as
``shutdown`` by a restart, failed as ``sampler_died`` or ``executor_restarting``) is sent again
under a new id up to ``MAX_INTERRUPTIONS`` times, then fails with that reason, its frames kept. An
image that failed keeps its message, code and setting (``error``, ``error_code``, ``error_setting``).
"""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
import socket
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Protocol

from disco.settings import Settings
from disco_service import transport, wire
from disco_service.outputs import data_uri_bytes
from disco_service.server.public_errors import public_message
from disco_service.server.results import ResultStore
from disco_service.server.store import AlreadySent, JobStore, StoredImage, StoredJob, TooManyUnfinished, open_store
from disco_service.wire import JobStatus

__all__ = [
    "CALLER_REQUEST",
    "FlowCalls",
    "Image",
    "image_tags",
    "Job",
    "JobQueue",
    "LEASE_S",
    "LOST_AFTER_S",
    "MAX_INTERRUPTIONS",
    "POLL_S",
    "TooManyJobs",
]

log = logging.getLogger(__name__)

POLL_S = 1.0
LOST_AFTER_S = 30  # an image left "waiting" this long after a gateway restart was lost with the old gateway
LEASE_S = 30.0  # a gateway renews its claims well within this; after it, another gateway takes its images over
# An image that a process of the Flow died under is sent again (under a new id) this many times, then fails.
MAX_INTERRUPTIONS = 2
RESEND_PAUSE_S = 5.0  # an image stopped as "shutdown" goes again after this, unless this gateway was stopped too
STALE_S = 900  # a running image whose sampler wrote nothing for this long is taken for dead (no supervisor marked it)
# How an image ends when a process of the Flow died under it: the supervisor's marks, and a sampler's stop.
_INTERRUPTED_CODES = (wire.ErrorCode.SAMPLER_DIED, wire.ErrorCode.EXECUTOR_RESTARTING)
# A finished job's status: the first of these that one of its images has, else done.
_WORST_FIRST = (JobStatus.FAILED, JobStatus.SHUTDOWN, JobStatus.ABANDONED, JobStatus.CANCELLED)
# what a running image's progress writes to the state store
_PROGRESS = ("status", "step", "total", "started", "frame", "frames", "frames_done", "run_step", "run_total")


# What the queue holds for an image of a caller's own request (record_call) in place of its own task:
# the image is watched (progress, frames), and ends when the request is answered (end_call).
CALLER_REQUEST: Any = "a caller's own request"


class TooManyJobs(RuntimeError):
    """The owner already has ``max_jobs_per_owner`` jobs queued or running."""

    code = wire.ErrorCode.QUOTA_EXCEEDED


def _is_call(task: Any) -> bool:
    """Whether an image in flight is a caller's own request (``record_call``), not one this queue sent."""
    return task is CALLER_REQUEST


class FlowCalls(Protocol):
    """What the queue needs from the Flow (over gRPC in the service; a fake in tests)."""

    async def generate(self, doc: Any) -> Any: ...  # the Document back; raises when the request fails

    # ``keep_alive``: the poll tells the sampler someone still waits (the job API's own images);
    # False for a caller's own request, which that caller keeps alive itself or abandons
    async def progress(self, ids: list[str], frame: bool = False, keep_alive: bool = True) -> list[Any]: ...

    async def cancel(self, ids: list[str]) -> None: ...


@dataclass
class Image:
    index: int
    seed: int
    doc_id: str
    status: str = JobStatus.QUEUED.value
    step: int | None = None
    total: int | None = None
    error: str | None = None
    error_code: str | None = None  # a wire.ErrorCode's value, with the error
    error_setting: str | None = None  # the setting the error is about, if one is
    started: float | None = None  # when its sampler started it
    finished: float | None = None
    sent: float | None = None  # when it was (last) sent to the Flow
    first_sent: float | None = None
    frame_step: int | None = None  # the step of the latest frame fetched
    # an animation's: the frame being made (from 0), its frames, finished frames, steps of the whole run
    frame: int | None = None
    frames: int | None = None
    frames_done: int | None = None
    run_step: int | None = None
    run_total: int | None = None

    @property
    def finished_status(self) -> bool:
        return JobStatus(self.status).finished


@dataclass
class Job:
    id: str
    owner: str
    created: float
    settings: dict[str, Any]  # the settings as tags (wire.settings_to_tags), with the run's seed
    images: list[Image]
    has_init_image: bool = False
    has_video: bool = False  # Video Input: the video's bytes are kept beside the job
    cancelled: bool = False
    changed: float = field(default_factory=time.time)

    @property
    def status(self) -> str:
        """queued (no image sent yet), running (some image not finished), else done, or the worst
        way an image ended (failed, shutdown, abandoned, cancelled)."""
        statuses = [JobStatus(i.status) for i in self.images]
        if all(s == JobStatus.QUEUED for s in statuses):
            return JobStatus.QUEUED.value
        if not all(s.finished for s in statuses):
            return JobStatus.RUNNING.value
        return next((s.value for s in _WORST_FIRST if s in statuses), JobStatus.DONE.value)

    @property
    def finished(self) -> bool:
        return JobStatus(self.status).finished

    def record(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_record(cls, record: Any) -> Job:
        """A job from its file's record. Raises ``ValueError`` naming what is wrong for a record
        that is not one (another type, a field missing or of the wrong kind)."""
        if not isinstance(record, dict) or not isinstance(record.get("images"), list) or not record["images"]:
            raise ValueError("not a job record: an object with a list of images is needed")
        try:
            fields = {k: v for k, v in record.items() if k != "images"}
            if not all(isinstance(image, dict) for image in record["images"]):
                raise TypeError("each image must be an object")
            job = cls(**fields, images=[Image(**image) for image in record["images"]])
        except TypeError as exc:
            raise ValueError(f"not a job record: {exc}") from None
        _check_job(job)
        return job


def _check_job(job: Job) -> None:
    """Raises ``ValueError`` unless every field the queue reads has its kind (a file may hold anything)."""
    from disco_service.server.jobs import check_job_id

    def number(value: Any, optional: bool = True) -> bool:
        kinds = (int, float)
        return (optional and value is None) or (isinstance(value, kinds) and not isinstance(value, bool))

    check_job_id(job.id)
    if not isinstance(job.owner, str) or not isinstance(job.settings, dict) or not number(job.created, False):
        raise ValueError("not a job record: owner, settings or created is of the wrong kind")
    if not number(job.settings.get("seed"), False) or not number(job.changed, False):
        raise ValueError("not a job record: the run's seed or its time of change is missing")
    for image in job.images:
        check_job_id(image.doc_id)
        JobStatus(image.status)  # a ValueError for a status that is not one
        if not all(isinstance(v, int) and not isinstance(v, bool) for v in (image.index, image.seed)):
            raise ValueError("not a job record: an image's index and seed must be whole numbers")
        if not all(isinstance(v, str | None) for v in (image.error,)):
            raise ValueError("not a job record: an image's error must be text")
        numbers = ("step", "total", "started", "finished", "sent", "first_sent", "frame_step", "frame", "frames")
        numbers += ("frames_done", "run_step", "run_total")
        if not all(number(getattr(image, name)) for name in numbers):
            raise ValueError("not a job record: an image's steps and times must be numbers")


_STORED_NAME = {"index": "idx"}  # an Image's field -> the store's column, where their names differ


def _image_values(stored: StoredImage) -> dict[str, Any]:
    return {f.name: getattr(stored, _STORED_NAME.get(f.name, f.name)) for f in fields(Image)}


def image_tags(job: Job, image: Image) -> dict[str, Any]:
    """The tags of one image's Document: the settings, its seed and which image of the run it is (an
    animation's also the frame it starts at: the first)."""
    tags = {**job.settings, "seed": image.seed, "batch_index": image.index, "run_seed": job.settings["seed"]}
    if job.settings.get("animation_mode", "None") != "None":
        tags["start_frame"] = 0
    return tags


class JobQueue:
    def __init__(
        self,
        store: ResultStore,
        flow: FlowCalls,
        slots: int = 1,
        max_jobs_per_owner: int = 10,
        clock: Callable[[], float] = time.time,
        state: JobStore | str | Path | None = None,
        claimer: str | None = None,
    ):
        """``store``: the result store (init images and videos are kept in its ``jobs`` folder);
        ``flow``: the calls to the Flow; ``slots``: images in flight at once over every gateway of
        the state store (the sampler replicas); ``max_jobs_per_owner``: jobs one owner may have
        queued or running; ``state``: the state store, or where it is (``open_store``; default a
        SQLite file in the ``jobs`` folder); ``claimer``: this gateway's name in its claims (default
        the host name: a gateway restarted on its host takes its own images back at once)."""
        self.store = store
        self.flow = flow
        self.slots = max(1, int(slots))
        self.max_jobs_per_owner = max_jobs_per_owner
        self.clock = clock
        self.dir = store.dir / "jobs"
        self.dir.mkdir(parents=True, exist_ok=True)
        if state is None or isinstance(state, str | Path):
            state = open_store(state or self.dir / "jobs.sqlite3", clock)
        self.state: JobStore = state
        self.claimer = claimer or socket.gethostname()
        self._jobs: dict[str, Job] = {}  # the jobs read so far, brought up to date at each read of the store
        self.in_flight: dict[str, tuple[Job, Image, asyncio.Task | None]] = {}
        self.latest: dict[str, bytes] = {}  # doc id -> the latest frame (PNG) of a running image
        self.resumed: dict[str, float] = {}  # doc id -> when this gateway took over watching it
        self._wake: asyncio.Event | None = None
        self._done: dict[str, asyncio.Event] = {}
        self._import_files()

    # ----- what callers ask -----

    def submit(
        self, owner: str, settings: Settings, init_image: bytes | None = None, video: bytes | None = None
    ) -> Job:
        """Queue a job of ``settings.n_batches`` images (a random run seed when ``seed`` is None); an
        animation is one image (``n_batches`` 1), of ``video``'s frames for Video Input. Raises
        ``TooManyJobs`` when the owner has ``max_jobs_per_owner`` unfinished jobs."""
        if settings.seed is None:
            settings.seed = wire.new_run_seed(settings.n_batches)
        wire.check_run_seed(settings.seed, settings.n_batches)
        job_id = f"{int(self.clock() * 1000):x}{secrets.token_hex(6)}"
        files = [(self.dir / f"{job_id}.init", init_image), (self.dir / f"{job_id}.video", video)]
        for path, data in files:  # before the job: another gateway may send it at once
            if data is not None:
                path.write_bytes(data)
        try:
            self.state.submit(
                job_id,
                owner,
                wire.settings_to_tags(settings),
                [settings.seed + i for i in range(settings.n_batches)],
                has_init_image=init_image is not None,
                has_video=video is not None,
                max_unfinished=self.max_jobs_per_owner,
            )
        except BaseException as exc:  # refused (a quota, the queue drains) or failed: its files go
            for path, _ in files:
                path.unlink(missing_ok=True)
            if not isinstance(exc, TooManyUnfinished):
                raise
            raise TooManyJobs(
                f"this caller already has {exc.count} jobs queued or running, the most this service "
                f"allows (DISCO_MAX_JOBS_PER_TOKEN={self.max_jobs_per_owner}): wait for one to finish or cancel one"
            ) from None
        job = self._read_job(job_id)
        assert job is not None
        self._poke()
        return job

    def record_call(self, owner: str, docs: list[tuple[str, dict[str, Any]]], max_unfinished: int | None) -> Job:
        """Record a caller's own ``/generate`` request to the Flow (gRPC or ``POST /post``,
        direct_calls.py) as a job of ``owner``, so that it is listed, shown and cancelled like the job
        API's: ``docs`` are its images (Document id, tags), sent already by this gateway (claimed by
        it, no claimer sends them again); the queue watches them (progress, latest frame) until
        ``end_call``.
        Raises ``TooManyUnfinished`` (``max_unfinished``: the owner's cap, None for none),
        ``QuotaExceeded`` and ``AlreadySent`` (an id sent before, or one of an image still being made)."""
        for doc_id, _ in docs:  # sent again after a try that failed before it started: the try is forgotten
            stored = self.state.image(doc_id)
            if stored is not None:
                tried = self.state.images(stored.job_id)
                if all(i.finished_status and self.store.read(i.doc_id) is None for i in tried):
                    self.state.delete_job(stored.job_id)
                else:
                    raise AlreadySent(  # the encoder's words for a reused id (executors/prompt_encoder.py)
                        f"Document id {doc_id!r} was already used for an image ({stored.status}); "
                        "send each image with a new id"
                    )
        first = wire.restore_numbers(docs[0][1]) if docs else {}
        seeds = [_whole_seed(wire.restore_numbers(tags).get("seed")) for _, tags in docs]
        settings = {k: v for k, v in first.items() if k in wire.SETTING_NAMES}
        settings.update(seed=seeds[0], n_batches=len(docs))
        job_id = f"{int(self.clock() * 1000):x}{secrets.token_hex(6)}"
        self.state.submit(
            job_id,
            owner,
            settings,
            seeds,
            doc_ids=[doc_id for doc_id, _ in docs],
            max_unfinished=max_unfinished,
            sent_by=self.claimer,
            lease_s=LEASE_S,
        )
        job = self._read_job(job_id)
        assert job is not None
        for image in job.images:
            self.store.claim(image.doc_id, owner)
            self.in_flight[image.doc_id] = (job, image, CALLER_REQUEST)
        return job

    def end_call(self, job: Job, answer: Any = None) -> None:
        """A request recorded by ``record_call`` was answered (``answer``: the Documents it answered
        with, when it has them): each image ends as its result record says, else as its Document's
        tags say, else as failed (the request ended before the image did)."""
        answered = {doc.id: wire.restore_numbers(doc.tags) for doc in answer or ()}
        current = self._read_job(job.id)  # deleted meanwhile: nothing to end
        for image in current.images if current is not None else ():
            if image.finished_status:
                self.in_flight.pop(image.doc_id, None)
                continue
            record = self.store.read(image.doc_id)
            tags = record if record is not None else answered.get(image.doc_id) or {}
            status = tags.get("status")
            if not status or not JobStatus(status).finished:
                failure = wire.failure_of_tags(tags) or wire.Failure(
                    wire.ErrorCode.INTERNAL, "the request ended before the image was finished"
                )
                self._end(current, image, JobStatus.FAILED.value, tags.get("step"), failure)
            else:
                self._end(current, image, status, tags.get("steps_done", tags.get("step")), wire.failure_of_tags(tags))

    def unfinished_jobs(self, owner: str) -> list[Job]:
        """The owner's jobs queued or running."""
        return [job for job in self.jobs_of(owner) if not job.finished]

    def get(self, owner: str, job_id: str) -> Job | None:
        """The job, if it exists and belongs to ``owner`` (another owner's job is not there for them)."""
        job = self._read_job(job_id)
        return job if job is not None and job.owner == owner else None

    def jobs_of(self, owner: str | None, before: float | None = None, limit: int | None = None) -> list[Job]:
        """The owner's jobs (everyone's for None), newest first: created before ``before``, at most ``limit``."""
        return self._read_jobs(self.state.jobs(owner, before=before, limit=limit))

    @property
    def jobs(self) -> dict[str, Job]:
        """Every job of the state store (whichever gateway took it), by id."""
        found = {job.id: job for job in self._read_jobs(self.state.jobs())}
        for gone in set(self._jobs) - set(found):
            del self._jobs[gone]
        return found

    def owner_of_image(self, doc_id: str) -> str | None:
        """The owner of the job an image (Document id) belongs to, or None for images of no job."""
        return self.state.owner_of(doc_id)

    async def cancel(self, owner: str, job_id: str) -> Job | None:
        """Cancel the owner's job: queued images at once, running ones at their next step (their
        frames are kept). None when the owner has no such job."""
        job = self.get(owner, job_id)
        if job is None:
            return None
        running = self.state.request_cancel(job_id)
        self._read_job(job_id)
        self._forget_inputs(job)  # a running image has its input already; none is sent again
        if running:
            try:
                await self.flow.cancel(running)
            except Exception as exc:  # the Flow is unreachable: the images stop when it is back, or are lost
                for image in job.images:
                    if not image.finished_status and image.error is None:
                        failure = transport.classify(exc)
                        image.error = f"cancel not delivered yet: {failure.message}"
                        image.error_code = failure.code.value
                        self.state.update_progress(image.doc_id, error=image.error, error_code=image.error_code)
        self._finish_if_done(job)
        return job

    def position(self, job: Job) -> int | None:
        """For a job none of whose images has been sent: its place in line, counted in images
        (1: its first image is the next to be sent). None otherwise."""
        if job.status != JobStatus.QUEUED:
            return None
        return self.state.position(job.id)

    async def wait(self, job_id: str) -> Job:
        """Until the job has finished (here or through another gateway). Raises ``KeyError`` for an unknown job."""
        job = self._read_job(job_id)
        if job is None:
            raise KeyError(job_id)
        if not job.finished:
            await self._done.setdefault(job_id, asyncio.Event()).wait()
        return job

    def latest_frame(self, image: Image) -> bytes | None:
        """The image's latest frame as PNG bytes: fetched while it runs, from the store once it ended."""
        if image.doc_id in self.latest:
            return self.latest[image.doc_id]
        path = self.store.latest_frame(image.doc_id)
        return path.read_bytes() if path else None

    def eta_s(self, image: Image) -> float | None:
        """Seconds until the image is done, from its pace so far; None before its first step."""
        step, total = (image.run_step, image.run_total) if image.run_total else (image.step, image.total)
        if image.status != JobStatus.RUNNING or not step or not total or not image.started:
            return None
        elapsed = max(0.0, self.clock() - image.started)
        return round(elapsed / step * (total - step), 1)

    # ----- sending, watching -----

    def next_image(self) -> tuple[Job, Image] | None:
        """The next image to be claimed: owners take turns; each owner's jobs go oldest first."""
        order = self.state.queue(limit=1)
        job = self._read_job(order[0].job_id) if order else None
        return (job, job.images[order[0].idx]) if job is not None else None

    async def run(self) -> None:
        """Claim and send queued images while samplers are free, watch the running ones and keep
        this gateway's claims alive, until cancelled."""
        self._wake = asyncio.Event()
        self._watch(self.state.claimed_by(self.claimer))  # this gateway's images from before a restart
        self.sweep()
        swept = renewed = self.clock()
        while True:
            try:
                self._watch(self.state.expire(self.claimer, LEASE_S))  # images whose gateway went away
                while (claimed := self.state.claim_next(self.claimer, LEASE_S, self.slots)) is not None:
                    self._send(claimed)
            except Exception as exc:  # the store is out of reach for now: try again at the next round
                log.warning("job queue: the state store could not be read or written (%s); trying again", exc)
            try:
                await self._poll()
            except Exception:  # progress is best effort: each image's own answer decides
                pass
            try:
                if self.in_flight and self.clock() - renewed > LEASE_S / 3:
                    self.state.renew(self.claimer, LEASE_S)
                    renewed = self.clock()
                self._wake_waiters()
            except Exception as exc:
                log.warning("job queue: the state store could not be read or written (%s); trying again", exc)
            if self.clock() - swept > 3600:
                swept = self.clock()
                self.sweep()
            try:
                await asyncio.wait_for(self._wake.wait(), POLL_S)
            except TimeoutError:
                pass
            self._wake.clear()

    def _watch(self, images: list[StoredImage]) -> None:
        """Watch images this gateway now holds without having sent them (sent before a restart, or
        by a gateway that went away); one claimed but never sent goes back to the queue."""
        for stored in images:
            if stored.doc_id in self.in_flight:
                continue
            if stored.status == JobStatus.QUEUED:
                self.state.requeue(stored.doc_id)
                continue
            job = self._read_job(stored.job_id)
            if job is not None:
                image = job.images[stored.idx]
                self.in_flight[image.doc_id] = (job, image, None)
                self.resumed[image.doc_id] = self.clock()

    def _send(self, claimed: StoredImage) -> None:
        job = self._read_job(claimed.job_id)
        try:
            sent = self.state.mark_sent(claimed.doc_id, self.claimer) if job is not None else None
        except AlreadySent:
            self.state.requeue(claimed.doc_id)  # it goes again under a new id
            return
        if job is None or sent is None:  # cancelled since it was claimed
            return
        image = job.images[sent.idx]
        for name, value in _image_values(sent).items():
            setattr(image, name, value)
        self.store.claim(image.doc_id, job.owner)  # its result answers the job's owner only
        self.in_flight[image.doc_id] = (job, image, asyncio.create_task(self._generate(job, image)))

    async def _generate(self, job: Job, image: Image) -> None:
        from docarray import Document

        doc = Document(id=image.doc_id, tags=image_tags(job, image))
        try:
            if job.has_video:  # Video Input: every frame starts from the video's
                doc.blob = (self.dir / f"{job.id}.video").read_bytes()
            elif job.has_init_image:
                doc.blob = (self.dir / f"{job.id}.init").read_bytes()
        except OSError:  # removed with its cancelled job, or by hand
            status = JobStatus.CANCELLED if job.cancelled else JobStatus.FAILED
            self._end(job, image, status.value, None, None if job.cancelled else "the job's input file is gone")
            return
        try:
            result = await self.flow.generate(doc)
            tags = wire.restore_numbers(result.tags)
            status = tags.get("status") or JobStatus.DONE.value
            self._settle(job, image, status, tags.get("steps_done"), wire.failure_of_tags(tags))
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            await self._failed(job, image, exc)

    async def _failed(self, job: Job, image: Image, exc: Exception) -> None:
        state: dict[str, Any] = {}
        try:
            state = wire.restore_numbers((await self.flow.progress([image.doc_id]))[0].tags)
        except Exception:
            pass
        status = state.get("status")
        failure, retry = transport.classify(exc), transport.RETRY
        if status and JobStatus(status).finished:
            self._settle(job, image, status, state.get("step"), wire.failure_of_tags(state))
        elif status == JobStatus.RUNNING:  # the call broke mid-image: its board entry will say how it ends
            self.in_flight[image.doc_id] = (job, image, None)
            self.resumed[image.doc_id] = self.clock()
        elif retry.retries(failure) and status in (None, JobStatus.WAITING) and self._may_retry(job, image):
            await asyncio.sleep(retry.pause_s)  # the Flow is coming back: send the image again, under a new id
            self._requeue(job, image)
        else:
            self._end(job, image, JobStatus.FAILED.value, state.get("step"), failure)
            if failure.code == wire.ErrorCode.SETTING_INVALID:  # the Flow refused the settings: its other images too
                for other in job.images:
                    if other.status == JobStatus.QUEUED:
                        self._end(job, other, JobStatus.FAILED.value, None, failure)

    def _may_retry(self, job: Job, image: Image) -> bool:
        return not job.cancelled and transport.RETRY.within(image.first_sent or self.clock(), self.clock())

    def _requeue(self, job: Job, image: Image, interrupted: bool = False) -> None:
        if job.cancelled:  # its input is gone with the cancel: it ends here
            self._end(job, image, JobStatus.CANCELLED.value, None, None)
            return
        self.in_flight.pop(image.doc_id, None)
        self.resumed.pop(image.doc_id, None)
        new_id = self.state.requeue(image.doc_id, uuid.uuid4().hex, interrupted=interrupted)
        if new_id is not None:
            image.doc_id, image.status, image.sent = new_id, JobStatus.QUEUED.value, None
        self._poke()

    def _settle(self, job: Job, image: Image, status: str, step: Any, failure: wire.Failure | None) -> None:
        """End the image as the Flow reports it, unless a process of the Flow died under it (stopped
        as ``shutdown`` by a restart, failed as ``sampler_died`` or ``executor_restarting``): then it
        is sent again under a new Document id, up to ``MAX_INTERRUPTIONS`` times, and after that it
        fails with that reason, the frames of its last try kept."""
        if not _interrupted(status, failure):
            self._end(job, image, status, step, failure)
            return
        stored = self.state.image(image.doc_id)
        count = stored.interrupted if stored is not None else MAX_INTERRUPTIONS
        if not job.cancelled and count < MAX_INTERRUPTIONS:
            log.warning("job queue: image %s was interrupted (%s): sending it again", image.doc_id, status)
            held = self.in_flight.get(image.doc_id)
            if status == JobStatus.SHUTDOWN and held is not None and held[2] is not None:
                # The Flow is stopping, this gateway perhaps with it: meanwhile the image keeps its
                # slot, so nothing is sent to a Flow going down; a restarted gateway takes it over.
                asyncio.get_running_loop().call_later(RESEND_PAUSE_S, self._requeue, job, image, True)
                return
            self._requeue(job, image, interrupted=True)
            return
        if failure is None or failure.code not in _INTERRUPTED_CODES:
            failure = wire.Failure(wire.ErrorCode.EXECUTOR_RESTARTING, "the Flow was restarted while making it")
        message = f"{failure.message}; tried {count + 1} times, each stopped by a process of the Flow that died"
        self._end(job, image, JobStatus.FAILED.value, step, wire.Failure(failure.code, message))

    def _end(self, job: Job, image: Image, status: str, step: Any, failure: wire.Failure | None) -> None:
        self.in_flight.pop(image.doc_id, None)
        self.resumed.pop(image.doc_id, None)
        self.latest.pop(image.doc_id, None)
        if failure is not None:
            public_message(
                failure.message, log=True
            )  # the full text in the server's log; callers see it without internals
        record = self.store.read(image.doc_id) or {}
        if animation := record.get("animation"):  # the frames it finished and the run's steps, from its record
            frames_done = len(animation.get("frames_done") or [])
            self.state.update_progress(image.doc_id, frames=animation.get("frames"), frames_done=frames_done)
            total = record.get("total", image.total)
        else:
            total = None
        self.state.finish(
            image.doc_id,
            JobStatus(status).value,
            step=step,
            total=total,
            error=failure.message if failure else None,
            error_code=failure.code.value if failure else None,
            error_setting=failure.setting if failure else None,
        )
        self._read_job(job.id)  # the store's account: the first end of an image stays
        self._finish_if_done(job)
        self._poke()

    async def _poll(self) -> None:
        if not self.in_flight:
            return
        states = await self._progress(list(self.in_flight))
        fresh = []
        for state in states:
            if state.id not in self.in_flight:
                continue
            job, image, task = self.in_flight[state.id]
            tags = wire.restore_numbers(state.tags)
            status = tags.get("status") or JobStatus.WAITING.value
            if status == JobStatus.RUNNING:
                image.status = status
                image.step, image.total = tags.get("step", image.step), tags.get("total", image.total)
                if tags.get("run_total"):  # an animation: its steps count over the whole run, like its record's
                    image.step, image.total = tags.get("run_step", image.step), tags["run_total"]
                image.started = tags.get("started", image.started)
                for name in ("frame", "frames", "frames_done", "run_step", "run_total"):
                    setattr(image, name, tags.get(name, getattr(image, name)))
                self.state.update_progress(image.doc_id, **{name: getattr(image, name) for name in _PROGRESS})
                if tags.get("frame_step") and tags["frame_step"] != image.frame_step:
                    fresh.append(image)
            if task is None:  # watched again after a restart: there is no request to wait for
                self._check_resumed(job, image, status, tags)
        if fresh:
            for state in await self._progress([i.doc_id for i in fresh], frame=True):
                image = next((i for i in fresh if i.doc_id == state.id), None)
                tags = wire.restore_numbers(state.tags)
                if image is not None and state.uri and state.uri.startswith("data:image/png;base64,"):
                    self.latest[image.doc_id] = data_uri_bytes(state.uri)
                    image.frame_step = tags.get("frame_step")
                    self.state.update_progress(image.doc_id, frame_step=image.frame_step)

    async def _progress(self, ids: list[str], frame: bool = False) -> list[Any]:
        """The Flow's progress of the images ``ids``: the job API's own polled keeping them alive, a
        caller's own request (``record_call``) only watched (its caller keeps it alive, or it is
        stopped as abandoned)."""
        calls = [i for i in ids if _is_call(self.in_flight.get(i, (None, None, None))[2])]
        own = [i for i in ids if i not in calls]
        groups = ((own, True), (calls, False))
        return [s for some, alive in groups if some for s in await self.flow.progress(some, frame, keep_alive=alive)]

    def _check_resumed(self, job: Job, image: Image, status: str, tags: dict[str, Any]) -> None:
        record = self.store.read(image.doc_id)
        if record is not None:
            self._settle(job, image, record["status"], record.get("steps_done"), wire.failure_of_tags(record))
        elif JobStatus(status).finished:
            self._settle(job, image, status, tags.get("step"), wire.failure_of_tags(tags))
        elif status == JobStatus.RUNNING and time.time() - float(tags.get("updated") or time.time()) > STALE_S:
            failure = wire.Failure(wire.ErrorCode.SAMPLER_DIED, f"its sampler made no progress for {STALE_S} s")
            self._settle(job, image, JobStatus.FAILED.value, tags.get("step"), failure)
        elif status == JobStatus.WAITING and self.clock() - self.resumed.get(image.doc_id, 0) > LOST_AFTER_S:
            self._requeue(job, image)  # its request went down with the old gateway before a sampler took it

    # ----- keeping jobs -----

    def _finish_if_done(self, job: Job) -> None:
        if job.finished:
            self._forget_inputs(job)  # no image of it is sent again: its init image or video is not kept
        if job.finished and job.id in self._done:
            self._done.pop(job.id).set()

    def _poke(self) -> None:
        if self._wake is not None:
            self._wake.set()

    def _wake_waiters(self) -> None:
        """Callers of ``wait`` whose job another gateway finished."""
        for job_id in list(self._done):
            job = self._read_job(job_id)
            if job is None or job.finished:
                self._done.pop(job_id).set()

    def _read_job(self, job_id: str) -> Job | None:
        """The job as the state store has it now (the same object on every read), or None."""
        stored = self.state.get_job(job_id)
        if stored is None:
            self._jobs.pop(job_id, None)
            return None
        return self._merge(stored, self.state.images(job_id))

    def _read_jobs(self, stored: list[StoredJob]) -> list[Job]:
        images = self.state.images_of([job.id for job in stored])
        return [self._merge(job, images[job.id]) for job in stored]

    def _merge(self, stored: StoredJob, images: list[StoredImage]) -> Job:
        job = self._jobs.get(stored.id)
        if job is None:
            job = self._jobs[stored.id] = Job(
                id=stored.id,
                owner=stored.owner,
                created=stored.created,
                settings=stored.settings,
                images=[],
                has_init_image=stored.has_init_image,
                has_video=stored.has_video,
            )
        job.cancelled, job.changed = stored.cancelled, stored.changed
        for stored_image in images:
            values = _image_values(stored_image)
            if stored_image.idx < len(job.images):
                for name, value in values.items():
                    setattr(job.images[stored_image.idx], name, value)
            else:
                job.images.append(Image(**values))
        return job

    def _import_files(self) -> None:
        """Jobs an earlier version kept as files (``jobs/<id>.json``) go into the state store once
        (the file is renamed ``<id>.json.imported``); a file that cannot be read or stored is
        skipped and named in the log."""
        for path in sorted(self.dir.glob("*.json")):
            try:
                job = Job.from_record(json.loads(path.read_text()))
                if self.state.get_job(job.id) is None:
                    images = job.images
                    self.state.submit(
                        job.id,
                        job.owner,
                        job.settings,
                        [image.seed for image in images],
                        doc_ids=[image.doc_id for image in images],
                        has_init_image=job.has_init_image,
                        has_video=job.has_video,
                    )
                    self._save(job)  # its images as they were
                path.rename(path.with_name(path.name + ".imported"))
            except Exception as exc:
                log.warning("job queue: skipped the job file %s, which could not be imported: %s", path, exc)

    def _save(self, job: Job) -> None:
        """Write the job's images as they are here over the store's (repairs and tests; the queue's
        own changes go through the store's claims, progress and ends)."""
        for image in job.images:
            values = asdict(image)
            self.state.set_image(job.id, values.pop("index"), **values)

    def _forget_inputs(self, job: Job) -> None:
        """Remove the job's input files (init image, video): a cancelled or finished job's leave at once."""
        for suffix in (".init", ".video"):
            (self.dir / f"{job.id}{suffix}").unlink(missing_ok=True)

    def sweep(self) -> list[str]:
        """Forget finished jobs untouched for the store's time to live (their images go by the store's own sweep)."""
        gone = self.state.prune(self.store.ttl_s)
        for job_id in gone:
            self._jobs.pop(job_id, None)
            for suffix in (".init", ".video"):
                Path(self.dir / f"{job_id}{suffix}").unlink(missing_ok=True)
        self.store.sweep()
        return gone


def _whole_seed(value: Any) -> int:
    """A Document's seed tag as a whole number (0 when it has none: a request without settings)."""
    try:
        return int(value)
    except (TypeError, ValueError):
        return 0


def _interrupted(status: str, failure: wire.Failure | None) -> bool:
    """Whether an image ended so because a process of the Flow died or the Flow was restarted."""
    if status == JobStatus.SHUTDOWN:
        return True
    return status == JobStatus.FAILED and failure is not None and failure.code in _INTERRUPTED_CODES
