"""Jobs followed by events instead of polling: ``GET /jobs/events``, a Server-Sent Events stream.

Each event is about one job of the caller's token (an operator's token may ask for every job
with ``?all=1``): ``queued``, ``sent`` (handed to the Flow), ``started`` (a sampler took an image),
``step``, ``frame`` (a new latest frame, or a finished frame of an animation), ``image_ended`` (one
image finished, its status in the job), the job's end as its status (``done``, ``failed``,
``cancelled``, ``shutdown``, ``abandoned``), ``update`` (anything else, e.g. an image queued again)
and ``deleted``. Its ``data`` is JSON: ``type``, ``image`` (the image's index, or null) and
``job`` (the job as ``GET /jobs/{id}`` shows it; ``deleted``: only its ``id``). A comment line
is sent every ``HEARTBEAT_S`` seconds so that a proxy's read timeout (nginx: 60 s by default,
often 15 s) does not close a quiet stream. Each event has an ``id``; a client that reconnects with
``Last-Event-ID`` gets the events it missed from this gateway's recent ones, or a ``resync`` event
(read ``GET /jobs`` again) when they are gone or were another gateway's.

Where events come from: the state store tells the hub which job changed after each committed
change (``JobStore.listeners``); the hub reads the job once, compares it with what it saw before
and sends the differences to the streams of its owner. With PostgreSQL the changes of every
gateway arrive through ``LISTEN`` (the store ``NOTIFY``s each one), so a stream on one gateway
follows jobs that another runs. With SQLite they are heard in this process only: a gateway's
streams follow the jobs this gateway's queue and routes change.

What it costs the store: nothing while no stream is open (a change is only noted as unheard), and
with streams open only the changed jobs of owners who listen are read (a job's owner is read once,
then remembered). A client that reconnects after changes went unheard for its token is told to
``resync`` instead of getting a backlog with holes.
"""

from __future__ import annotations

import asyncio
import collections
import json
import logging
import secrets
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from fastapi import Request  # at module level: FastAPI reads the handlers' annotations here

from disco_service.server.job_queue import Job, JobQueue
from disco_service.server.store.base import CHANNEL
from disco_service.wire import JobStatus

__all__ = ["EVENT_TYPES", "EventHub", "HEARTBEAT_S", "mount"]

log = logging.getLogger(__name__)

HEARTBEAT_S = 5.0
BACKLOG = 1000  # recent events kept for clients that reconnect with Last-Event-ID
SNAPSHOTS = 10_000  # jobs whose last state is remembered (finished ones are forgotten first)
STREAM_QUEUE = 1000  # events waiting for one slow stream before it is closed (its client reconnects)
EVENT_TYPES = (
    "queued",
    "sent",
    "started",
    "step",
    "frame",
    "image_ended",
    *(status.value for status in JobStatus if status.finished),
    "update",
    "deleted",
    "resync",
)


def _state(job: Job) -> tuple:
    """What the events compare: the job's status and, per image, status, step, frame step and frames."""
    return (job.status, tuple((i.status, i.step, i.frame_step, i.frames_done, i.doc_id) for i in job.images))


def differences(old: tuple | None, job: Job) -> list[tuple[str, int | None]]:
    """The events between the state ``old`` (``_state``, None: never seen) and ``job`` now:
    ``(type, image index or None)``, in the order they happened."""
    found: list[tuple[str, int | None]] = []
    if old is None:  # first heard of: it was queued (perhaps a moment ago, and already sent since)
        found.append(("queued", None))
    before = old[1] if old is not None else ()
    for image in job.images:
        prior = before[image.index] if image.index < len(before) else None
        was = prior[0] if prior else None
        if image.status == JobStatus.WAITING and was != JobStatus.WAITING:
            found.append(("sent", image.index))
        if image.status == JobStatus.RUNNING and was != JobStatus.RUNNING:
            found.append(("started", image.index))
        elif image.status == JobStatus.RUNNING and prior and prior[1] != image.step:
            found.append(("step", image.index))
        if prior is not None and (image.frame_step, image.frames_done) != (prior[2], prior[3]):
            if image.frame_step is not None or image.frames_done:
                found.append(("frame", image.index))
        if image.finished_status and (was is None or not JobStatus(was).finished):
            found.append(("image_ended", image.index))
    if job.finished and (old is None or not JobStatus(old[0]).finished):
        found.append((job.status, None))
    if not found and old is not None and old != _state(job):
        found.append(("update", None))
    return found


@dataclass(eq=False)
class _Stream:
    owner: str | None  # None: every owner's jobs (an operator)
    queue: asyncio.Queue = field(default_factory=lambda: asyncio.Queue(STREAM_QUEUE))


class EventHub:
    """Turns the state store's changes into events for the open streams (see the module's text)."""

    def __init__(self, queue: JobQueue, heartbeat_s: float = HEARTBEAT_S):
        self.queue = queue
        self.heartbeat_s = heartbeat_s
        self.epoch = secrets.token_hex(4)  # event ids are this gateway's: "<epoch>-<n>"
        self._streams: set[_Stream] = set()
        self._snapshots: collections.OrderedDict[str, tuple[str, tuple]] = collections.OrderedDict()
        self._recent: collections.deque[tuple[int, str, str]] = collections.deque(maxlen=BACKLOG)
        self._seq = 0
        self._places: dict[str, int] = {}  # queued job -> the place in line its last event showed
        self._views: dict[str, dict[str, Any]] = {}  # queued job -> its last event's view (its place changes alone)
        self._pending: dict[str, None] = {}
        self._owners: collections.OrderedDict[str, str] = collections.OrderedDict()  # job -> owner, as read
        self._unheard: dict[str, int] = {}  # owner -> the last event id (number) before a change of theirs went unread
        self._unheard_any = -1  # ... before a change of a job whose owner was not known went unread
        self._line_check = False  # unread changes may have moved the line of a followed queued job
        self._kick: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._tasks: list[asyncio.Task] = []
        self.events_sent = 0  # events written to streams, all streams together

    # ----- hearing of changes -----

    def start(self) -> None:
        """Start hearing of changes (call in the running event loop): the store's listeners and,
        with PostgreSQL, ``LISTEN`` on its channel."""
        self._loop = asyncio.get_running_loop()
        self._kick = asyncio.Event()
        self._tasks.append(asyncio.create_task(self._process()))
        if self.queue.state.dialect == "postgresql":
            self._tasks.append(asyncio.create_task(self._listen(self.queue.state.url)))
        else:
            self.queue.state.listeners.append(self.changed)

    def stop(self) -> None:
        """Stop hearing of changes."""
        if self.changed in self.queue.state.listeners:
            self.queue.state.listeners.remove(self.changed)
        for task in self._tasks:
            task.cancel()
        self._tasks.clear()

    def changed(self, job_id: str) -> None:
        """The store says ``job_id`` changed (from any thread)."""
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        if _running_loop() is loop:
            self._mark(job_id)
        else:
            loop.call_soon_threadsafe(self._mark, job_id)

    def _mark(self, job_id: str) -> None:
        if not self._wants(self._owners.get(job_id), known=job_id in self._owners):
            self._unread(job_id)
            if self._places and self._streams:  # another owner's change may move a followed job in line
                self._line_check = True
                if self._kick is not None:
                    self._kick.set()
            return
        self._pending[job_id] = None
        if self._kick is not None:
            self._kick.set()

    def _wants(self, owner: str | None, known: bool = True) -> bool:
        """Whether an open stream follows ``owner``'s jobs (an owner not ``known`` yet: whether any stream is open)."""
        if not known:
            return bool(self._streams)
        return any(stream.owner is None or stream.owner == owner for stream in self._streams)

    def _unread(self, job_id: str) -> None:
        """A change nobody listens to is not read; a client reconnecting from before it is told to resync."""
        owner = self._owners.get(job_id)
        if owner is None:
            self._unheard_any = self._seq
        else:
            self._unheard[owner] = self._seq

    def _learn_owner(self, job_id: str, owner: str) -> None:
        self._owners[job_id] = owner
        self._owners.move_to_end(job_id)
        while len(self._owners) > SNAPSHOTS:
            self._owners.popitem(last=False)

    async def _process(self) -> None:
        assert self._kick is not None
        while True:
            await self._kick.wait()
            self._kick.clear()
            while self._pending or self._line_check:  # changes that came together are read once
                if not self._pending:  # then the line, once for every change since that may have moved it
                    self._line_check = False
                    try:
                        self._line_moved()
                    except Exception as exc:
                        log.warning("events: the queue could not be read (%s)", exc)
                    continue
                job_id = next(iter(self._pending))
                del self._pending[job_id]
                try:
                    self.publish_changes(job_id)
                except Exception as exc:  # the store is out of reach: the next change tries again
                    log.warning("events: job %s could not be read (%s)", job_id, exc)
                await asyncio.sleep(0)

    async def _listen(self, url: str) -> None:
        """PostgreSQL's notifications of every gateway's changes, connected again when lost."""
        import psycopg

        while True:
            try:
                async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
                    await conn.execute(f"LISTEN {CHANNEL}")
                    for job_id, (_, state) in list(self._snapshots.items()):  # what changed while away
                        if not JobStatus(state[0]).finished:
                            self._mark(job_id)
                    async for notice in conn.notifies():
                        self._mark(notice.payload)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("events: listening to the state store failed (%s); trying again", exc)
                await asyncio.sleep(1)

    # ----- making events -----

    def publish_changes(self, job_id: str) -> int:
        """Read ``job_id`` and send the events since it was last read to its owner's streams; how
        many. A job whose owner nobody follows is not read (its owner once, when not known yet)."""
        owner = self._owners.get(job_id)
        if owner is None:
            stored = self.queue.state.get_job(job_id)
            owner = stored.owner if stored is not None else None
            if owner is not None:
                self._learn_owner(job_id, owner)
        if owner is not None and not self._wants(owner):
            self._unread(job_id)
            return 0
        job = self.queue.get(owner, job_id) if owner is not None else None
        if job is None:
            self._owners.pop(job_id, None)
            seen = self._snapshots.pop(job_id, None)
            if seen is None:
                return 0
            self._send(seen[0], "deleted", None, {"id": job_id})
            self._forget_place(job_id)
            self._line_check = True
            return 1
        seen = self._snapshots.get(job_id)
        found = differences(seen[1] if seen else None, job)
        self._remember(job)
        if found:
            from disco_service.server.http_api import job_view

            view = job_view(self.queue, job)
            if view["position"] is None:
                self._forget_place(job_id)
            else:
                self._places[job_id], self._views[job_id] = view["position"], view
            for kind, index in found:
                self._send(job.owner, kind, index, view)
            if any(kind not in ("started", "step", "frame") for kind, _ in found):
                self._line_check = True  # read once the changes that came together are (_process)
        return len(found)

    def _forget_place(self, job_id: str) -> None:
        self._places.pop(job_id, None)
        self._views.pop(job_id, None)

    def _line_moved(self) -> None:
        """After a change that may move the line (an image sent, ended or queued again, a job
        added or removed): the line is read once, and each followed queued job whose place
        differs from the one its last event showed gets an ``update`` with its new place (the
        job itself is not read again: any other change of it comes as a change of its own). A
        job no longer in line is read again (it was sent or ended meanwhile)."""
        watched = [job_id for job_id in self._places if self._wants(self._owners.get(job_id))]
        if not watched:  # no stream shows a place in line: nothing to read
            return
        places: dict[str, int] = {}
        for place, image in enumerate(self.queue.state.queue(), 1):
            places.setdefault(image.job_id, place)
        for job_id in watched:
            place, view, owner = places.get(job_id), self._views.get(job_id), self._owners.get(job_id)
            if place == self._places[job_id]:
                continue
            if place is None or view is None or owner is None:
                self._forget_place(job_id)
                self._mark(job_id)
                continue
            self._places[job_id] = place
            self._views[job_id] = view = {**view, "position": place}
            self._send(owner, "update", None, view)

    def _remember(self, job: Job) -> None:
        self._learn_owner(job.id, job.owner)
        self._snapshots[job.id] = (job.owner, _state(job))
        self._snapshots.move_to_end(job.id)
        while len(self._snapshots) > SNAPSHOTS:
            finished = next((k for k, (_, s) in self._snapshots.items() if JobStatus(s[0]).finished), None)
            self._snapshots.pop(finished if finished is not None else next(iter(self._snapshots)))

    def _send(self, owner: str, kind: str, index: int | None, view: dict[str, Any]) -> None:
        self._seq += 1
        text = _frame(f"{self.epoch}-{self._seq}", kind, {"type": kind, "image": index, "job": view})
        self._recent.append((self._seq, owner, text))
        for stream in list(self._streams):
            if stream.owner is None or stream.owner == owner:
                try:
                    stream.queue.put_nowait(text)
                except asyncio.QueueFull:  # a client that does not read: closed, it reconnects and resumes
                    self._streams.discard(stream)
                    while not stream.queue.empty():
                        stream.queue.get_nowait()
                    stream.queue.put_nowait(None)

    # ----- streams -----

    def missed(self, owner: str | None, last_event_id: str | None) -> list[str] | None:
        """The recent events after ``last_event_id`` for ``owner``; None when they cannot be told
        (another gateway's id, or older than the backlog): the client must read the jobs again."""
        epoch, _, number = (last_event_id or "").partition("-")
        if epoch != self.epoch or not number.isdigit():
            return None
        after = int(number)
        oldest = self._recent[0][0] if self._recent else self._seq + 1
        if after > self._seq or after < oldest - 1:  # not made yet, or dropped from the backlog
            return None
        theirs = self._unheard.values() if owner is None else [self._unheard.get(owner, -1)]
        unheard = max([self._unheard_any, *theirs])
        if unheard >= after:  # a change of its jobs since then was not read: the backlog has a hole
            return None
        return [text for seq, who, text in self._recent if seq > after and (owner is None or who == owner)]

    async def stream(self, owner: str | None, last_event_id: str | None = None) -> AsyncIterator[str]:
        """The text of an event stream for ``owner`` (None: every owner): what it missed since
        ``last_event_id``, then events as they come, a heartbeat comment when quiet."""
        stream = _Stream(owner)
        self._streams.add(stream)
        try:
            yield f"retry: 2000\n: events of {'every job' if owner is None else 'this token'}\n\n"
            if last_event_id:
                missed = self.missed(owner, last_event_id)
                if missed is None:
                    self._seq += 1
                    yield _frame(f"{self.epoch}-{self._seq}", "resync", {"type": "resync", "image": None, "job": None})
                else:
                    for text in missed:
                        yield text
            while True:
                try:
                    text = await asyncio.wait_for(stream.queue.get(), self.heartbeat_s)
                except TimeoutError:
                    yield ": heartbeat\n\n"
                    continue
                if text is None:
                    return
                self.events_sent += 1
                yield text
        finally:
            self._streams.discard(stream)

    @property
    def streams(self) -> int:
        """How many streams are open."""
        return len(self._streams)


def _frame(event_id: str, kind: str, data: dict[str, Any]) -> str:
    return f"id: {event_id}\nevent: {kind}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n"


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


def mount(app, hub: EventHub, is_admin=lambda owner: False) -> None:
    """Add ``GET /jobs/events`` to ``app`` (before the job API's ``/jobs/{id}``, which would take it)
    and start the hub with the app. ``is_admin(owner)``: whether an owner may ask for every job."""
    from fastapi.responses import StreamingResponse

    from disco_service.server.http_api import ApiError
    from disco_service.wire import ErrorCode

    async def events(request: Request, all: bool = False):
        """Server-Sent Events of the caller's jobs (``?all=1``: every job, for an operator)."""
        owner = request.state.owner
        if all and not is_admin(owner):
            raise ApiError(403, ErrorCode.ADMIN_REQUIRED, "only an operator's token may follow every job")
        headers = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
        last = request.headers.get("last-event-id") or request.query_params.get("last_event_id")
        return StreamingResponse(
            hub.stream(None if all else owner, last), media_type="text/event-stream", headers=headers
        )

    app.add_api_route("/jobs/events", events, methods=["GET"], tags=["jobs"])
    app.add_event_handler("startup", hub.start)
    app.add_event_handler("shutdown", hub.stop)
