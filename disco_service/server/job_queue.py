"""The job API's queue: callers hand in jobs with short requests; the service runs them on its Flow.

A job is ``n_batches`` images, each one Document on the Flow (its own id and seed, ``seed + i``).
Jobs wait here, per owner (a token's fingerprint, see tokens.py), and are sent one image at a time
whenever a sampler is free (``slots``: the Flow's sampler replicas), taking owners in turn
(round-robin), so one caller's long list does not hold back another's single image. While images
run, the queue polls ``/progress`` for them (which also tells the Flow that someone is waiting, so
they are not abandoned) and keeps each new frame. Each image ends in the result store
(results.py), written by the Flow itself.

Jobs are kept as files (``DISCO_RESULTS_DIR/jobs/<id>.json``, the init image beside it), so they
survive a restart of the gateway: queued images are sent later, images that were running are
watched again (their results reach the store all the same), and an image whose request was lost
before it started is queued again under a new id. A request that fails because the Flow cannot
be reached before the image started (a sampler restarting) is retried for ``RETRY_FOR_S``.
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

from disco.settings import Settings
from disco_service import wire
from disco_service.outputs import data_uri_bytes
from disco_service.server.public_errors import LOG, public_message
from disco_service.server.results import ResultStore
from disco_service.wire import JobStatus

__all__ = [
    "FlowCalls",
    "Image",
    "image_tags",
    "Job",
    "JobQueue",
    "LOST_AFTER_S",
    "POLL_S",
    "RETRY_FOR_S",
    "RETRY_PAUSE_S",
    "TooManyJobs",
]

POLL_S = 1.0
LOST_AFTER_S = 30  # an image left "waiting" this long after a gateway restart was lost with the old gateway
RETRY_FOR_S = 300  # how long an image that could not reach the Flow keeps being retried
RETRY_PAUSE_S = 2.0
# A finished job's status: the first of these that one of its images has, else done.
_WORST_FIRST = (JobStatus.FAILED, JobStatus.SHUTDOWN, JobStatus.ABANDONED, JobStatus.CANCELLED)


class TooManyJobs(RuntimeError):
    """The owner already has ``max_jobs_per_owner`` jobs queued or running."""


class FlowCalls(Protocol):
    """What the queue needs from the Flow (over gRPC in the service; a fake in tests)."""

    async def generate(self, doc: Any) -> Any: ...  # the Document back; raises when the request fails

    async def progress(self, ids: list[str], frame: bool = False) -> list[Any]: ...

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
    ):
        """``store``: the result store (jobs are kept in its ``jobs`` folder); ``flow``: the calls to
        the Flow; ``slots``: images sent at once (the sampler replicas); ``max_jobs_per_owner``: jobs
        one owner may have queued or running."""
        self.store = store
        self.flow = flow
        self.slots = max(1, int(slots))
        self.max_jobs_per_owner = max_jobs_per_owner
        self.clock = clock
        self.dir = store.dir / "jobs"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.jobs: dict[str, Job] = {}
        self.rotation: list[str] = []  # owners, in the order they first came
        self.last_served: str | None = None  # the owner whose image went last: the turn passes to the next
        self.in_flight: dict[str, tuple[Job, Image, asyncio.Task | None]] = {}
        self.latest: dict[str, bytes] = {}  # doc id -> the latest frame (PNG) of a running image
        self.resumed: dict[str, float] = {}  # doc id -> when this gateway took over watching it
        self._wake: asyncio.Event | None = None
        self._done: dict[str, asyncio.Event] = {}
        self._load()

    # ----- what callers ask -----

    def submit(
        self, owner: str, settings: Settings, init_image: bytes | None = None, video: bytes | None = None
    ) -> Job:
        """Queue a job of ``settings.n_batches`` images (a random run seed when ``seed`` is None); an
        animation is one image (``n_batches`` 1), of ``video``'s frames for Video Input. Raises
        ``TooManyJobs`` when the owner has ``max_jobs_per_owner`` unfinished jobs."""
        unfinished = [j for j in self.jobs.values() if j.owner == owner and not j.finished]
        if len(unfinished) >= self.max_jobs_per_owner:
            raise TooManyJobs(
                f"this caller already has {len(unfinished)} jobs queued or running, the most this service "
                f"allows (DISCO_MAX_JOBS_PER_TOKEN={self.max_jobs_per_owner}): wait for one to finish or cancel one"
            )
        if settings.seed is None:
            settings.seed = wire.new_run_seed(settings.n_batches)
        wire.check_run_seed(settings.seed, settings.n_batches)
        now = self.clock()
        job = Job(
            id=f"{int(now * 1000):x}{secrets.token_hex(6)}",
            owner=owner,
            created=now,
            settings=wire.settings_to_tags(settings),
            images=[Image(i, settings.seed + i, uuid.uuid4().hex) for i in range(settings.n_batches)],
            has_init_image=init_image is not None,
            has_video=video is not None,
        )
        if init_image is not None:
            (self.dir / f"{job.id}.init").write_bytes(init_image)
        if video is not None:
            (self.dir / f"{job.id}.video").write_bytes(video)
        self.jobs[job.id] = job
        if owner not in self.rotation:
            self.rotation.append(owner)
        self._save(job)
        self._poke()
        return job

    def get(self, owner: str, job_id: str) -> Job | None:
        """The job, if it exists and belongs to ``owner`` (another owner's job is not there for them)."""
        job = self.jobs.get(job_id)
        return job if job is not None and job.owner == owner else None

    def jobs_of(self, owner: str) -> list[Job]:
        """The owner's jobs, newest first."""
        return sorted((j for j in self.jobs.values() if j.owner == owner), key=lambda j: j.created, reverse=True)

    def owner_of_image(self, doc_id: str) -> str | None:
        """The owner of the job an image (Document id) belongs to, or None for images of no job."""
        for job in self.jobs.values():
            if any(i.doc_id == doc_id for i in job.images):
                return job.owner
        return None

    async def cancel(self, owner: str, job_id: str) -> Job | None:
        """Cancel the owner's job: queued images at once, running ones at their next step (their
        frames are kept). None when the owner has no such job."""
        job = self.get(owner, job_id)
        if job is None:
            return None
        job.cancelled = True
        now = self.clock()
        for image in job.images:
            if image.status == JobStatus.QUEUED:
                image.status, image.finished = JobStatus.CANCELLED.value, now
        running = [i.doc_id for i in job.images if not i.finished_status]
        self._save(job)
        self._forget_inputs(job)  # a running image has its input already; none is sent again
        if running:
            try:
                await self.flow.cancel(running)
            except Exception as exc:  # the Flow is unreachable: the images stop when it is back, or are lost
                for image in job.images:
                    if not image.finished_status and image.error is None:
                        image.error = f"cancel not delivered yet: {exc}"
        self._finish_if_done(job)
        return job

    def position(self, job: Job) -> int | None:
        """For a job none of whose images has been sent: its place in line, counted in images
        (1: its first image is the next to be sent). None otherwise."""
        if job.status != JobStatus.QUEUED:
            return None
        for place, (queued_job, _) in enumerate(self._dispatch_order(), start=1):
            if queued_job is job:
                return place
        return None

    async def wait(self, job_id: str) -> Job:
        """Until the job has finished."""
        job = self.jobs[job_id]
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
        """The next image to send: owners take turns; each owner's jobs go oldest first."""
        order = self._dispatch_order(limit=1)
        if not order:
            return None
        job, image = order[0]
        self.last_served = job.owner
        return job, image

    def _dispatch_order(self, limit: int | None = None) -> list[tuple[Job, Image]]:
        """The queued images in the order they will be sent (if nothing else arrives)."""
        queues: dict[str, list[tuple[Job, Image]]] = {}
        for job in sorted(self.jobs.values(), key=lambda j: j.created):
            for image in job.images:
                if image.status == JobStatus.QUEUED:
                    queues.setdefault(job.owner, []).append((job, image))
        order: list[tuple[Job, Image]] = []
        turn = self.rotation.index(self.last_served) + 1 if self.last_served in self.rotation else 0
        while any(queues.values()) and (limit is None or len(order) < limit):
            owner = self.rotation[turn % len(self.rotation)]
            if queues.get(owner):
                order.append(queues[owner].pop(0))
            turn += 1
        return order

    async def run(self) -> None:
        """Send queued images while samplers are free and watch the running ones, until cancelled."""
        self._wake = asyncio.Event()
        for job in self.jobs.values():  # images an earlier gateway had sent: watch them again
            for image in job.images:
                if image.status in (JobStatus.WAITING, JobStatus.RUNNING):
                    self.in_flight[image.doc_id] = (job, image, None)
                    self.resumed[image.doc_id] = self.clock()
        self.sweep()
        swept = self.clock()
        while True:
            while len(self.in_flight) < self.slots and (picked := self.next_image()):
                self._send(*picked)
            try:
                await self._poll()
            except Exception:  # progress is best effort: each image's own answer decides
                pass
            if self.clock() - swept > 3600:
                swept = self.clock()
                self.sweep()
            try:
                await asyncio.wait_for(self._wake.wait(), POLL_S)
            except TimeoutError:
                pass
            self._wake.clear()

    def _send(self, job: Job, image: Image) -> None:
        now = self.clock()
        image.status, image.sent = JobStatus.WAITING.value, now
        image.first_sent = image.first_sent or now
        self._save(job)
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
            self._end(job, image, tags.get("status") or JobStatus.DONE.value, tags.get("steps_done"), tags.get("error"))
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            await self._failed(job, image, exc)

    async def _failed(self, job: Job, image: Image, exc: Exception) -> None:
        from disco_service.transport import server_message, unreachable

        state: dict[str, Any] = {}
        try:
            state = wire.restore_numbers((await self.flow.progress([image.doc_id]))[0].tags)
        except Exception:
            pass
        status = state.get("status")
        if status and JobStatus(status).finished:
            self._end(job, image, status, state.get("step"), state.get("error"))
        elif unreachable(exc) and status in (None, JobStatus.WAITING) and not job.cancelled and self._may_retry(image):
            await asyncio.sleep(RETRY_PAUSE_S)  # the Flow is coming back: send the image again, under a new id
            self._requeue(job, image)
        else:
            message = server_message(exc)
            self._end(job, image, JobStatus.FAILED.value, state.get("step"), message)
            if message.startswith("SettingsError:"):  # the Flow refused the settings: its other images too
                for other in job.images:
                    if other.status == JobStatus.QUEUED:
                        self._end(job, other, JobStatus.FAILED.value, None, message)

    def _may_retry(self, image: Image) -> bool:
        return self.clock() - (image.first_sent or self.clock()) < RETRY_FOR_S

    def _requeue(self, job: Job, image: Image) -> None:
        if job.cancelled:  # its input is gone with the cancel: it ends here
            self._end(job, image, JobStatus.CANCELLED.value, None, None)
            return
        self.in_flight.pop(image.doc_id, None)
        self.resumed.pop(image.doc_id, None)
        image.doc_id, image.status, image.sent = uuid.uuid4().hex, JobStatus.QUEUED.value, None
        self._save(job)
        self._poke()

    def _end(self, job: Job, image: Image, status: str, step: Any, error: Any) -> None:
        self.in_flight.pop(image.doc_id, None)
        self.resumed.pop(image.doc_id, None)
        self.latest.pop(image.doc_id, None)
        image.status = JobStatus(status).value
        image.step = step if step is not None else image.step
        image.error = str(error) if error else None
        image.finished = self.clock()
        public_message(image.error, log=True)  # the full text in the server's log; callers see it without internals
        record = self.store.read(image.doc_id) or {}
        if animation := record.get("animation"):  # the frames it finished and the run's steps, from its record
            image.frames, image.frames_done = animation.get("frames"), len(animation.get("frames_done") or [])
            image.total = record.get("total", image.total)
        self._save(job)
        self._finish_if_done(job)
        self._poke()

    async def _poll(self) -> None:
        if not self.in_flight:
            return
        states = await self.flow.progress(list(self.in_flight))
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
                if tags.get("frame_step") and tags["frame_step"] != image.frame_step:
                    fresh.append(image)
            if task is None:  # watched again after a restart: there is no request to wait for
                self._check_resumed(job, image, status, tags)
        if fresh:
            for state in await self.flow.progress([i.doc_id for i in fresh], frame=True):
                image = next((i for i in fresh if i.doc_id == state.id), None)
                tags = wire.restore_numbers(state.tags)
                if image is not None and state.uri and state.uri.startswith("data:image/png;base64,"):
                    self.latest[image.doc_id] = data_uri_bytes(state.uri)
                    image.frame_step = tags.get("frame_step")

    def _check_resumed(self, job: Job, image: Image, status: str, tags: dict[str, Any]) -> None:
        record = self.store.read(image.doc_id)
        if record is not None:
            self._end(job, image, record["status"], record.get("steps_done"), record.get("error"))
        elif JobStatus(status).finished:
            self._end(job, image, status, tags.get("step"), tags.get("error"))
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

    def _save(self, job: Job) -> None:
        job.changed = self.clock()
        path = self.dir / f"{job.id}.json"
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(job.record()))
        os.replace(tmp, path)

    def _forget_inputs(self, job: Job) -> None:
        """Remove the job's input files (init image, video): a cancelled or finished job's leave at once."""
        for suffix in (".init", ".video"):
            (self.dir / f"{job.id}{suffix}").unlink(missing_ok=True)

    def _load(self) -> None:
        """The kept jobs; a file that is not a job (any content: empty, ``null``, cut short, another
        kind) is skipped with a line in the log naming it."""
        for path in sorted(self.dir.glob("*.json")):
            try:
                job = Job.from_record(json.loads(path.read_bytes()))
            except (ValueError, RecursionError, OSError) as exc:
                LOG.warning("skipped the job file %s: %s", path, str(exc)[:200])
                continue
            self.jobs[job.id] = job
        for job in sorted(self.jobs.values(), key=lambda j: j.created):
            if job.owner not in self.rotation:
                self.rotation.append(job.owner)

    def sweep(self) -> list[str]:
        """Forget finished jobs untouched for the store's time to live (their images go by the store's own sweep)."""
        gone = [j.id for j in self.jobs.values() if j.finished and self.clock() - j.changed > self.store.ttl_s]
        for job_id in gone:
            del self.jobs[job_id]
            for suffix in (".json", ".init", ".video"):
                Path(self.dir / f"{job_id}{suffix}").unlink(missing_ok=True)
        self.store.sweep()
        return gone
