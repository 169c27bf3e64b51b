"""Running a client's images on a Flow: one ``/generate`` request per image, progress polls, cancel on Ctrl-C.

The images of a run go out as separate ``/generate`` requests (replicas can spread them); while
they run, ``/progress`` polls to the Renderer (``wire.JOB_STATE_EXECUTOR``) feed the progress
bars and fetch each new frame, so a job whose request fails mid-run (its sampler died) still
comes back with the frames made so far. A request that cannot reach the Flow before its image
started (the Flow restarting after a fault) is sent again as ``transport.RETRY`` says. Inside a
running event loop (Jupyter) the calls run in a thread of their own (``run_coroutine``).
"""

from __future__ import annotations

import asyncio
import signal
import threading
import time
from collections.abc import Callable, Coroutine
from typing import Any

from disco_service import transport, wire
from disco_service.client.progress import ProgressBars
from disco_service.console import say
from disco_service.outputs import data_uri_bytes
from disco_service.transport import _ids_of, bearer_metadata, classify, flow_client, post
from disco_service.wire import JobStatus

__all__ = [
    "FrameCallback",
    "JobWatcher",
    "PROGRESS_INTERVAL_S",
    "run_coroutine",
    "run_jobs",
]

PROGRESS_INTERVAL_S = 0.5
FrameCallback = Callable[[Any, int, bytes], None]


def run_coroutine(make: Callable[[], Coroutine[Any, Any, Any]]) -> Any:
    """``asyncio.run``, also from inside a running event loop (Jupyter): then in a thread of its own."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(make())
    outcome: dict[str, Any] = {}

    def run() -> None:
        try:
            outcome["value"] = asyncio.run(make())
        except BaseException as exc:  # handed to the caller's thread
            outcome["error"] = exc

    thread = threading.Thread(target=run, name="disco-client")
    thread.start()
    thread.join()
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]


def _ids(docs):
    return _ids_of([d.id for d in docs])


async def run_jobs(
    address: str,
    docs,
    show_progress: bool = True,
    on_finished_frame: FrameCallback | None = None,
    token: str | None = None,
):
    """Send one request per image, poll progress, cancel on Ctrl-C; ``(results, errors)``.

    ``on_finished_frame(doc, frame, png)`` is called with each finished frame of an animation as
    soon as a poll sees it (the client writes it at once).

    ``results``: a DocumentArray of what came back (also failed images with their frames so
    far), numbers restored (``wire.cast_tags``); ``errors``: the exceptions of requests that
    failed before their job started. ``token``: sent as the ``authorization`` metadata.
    """
    from docarray import DocumentArray

    client = flow_client(address)
    auth = bearer_metadata(token)
    bars = ProgressBars(docs, enabled=show_progress)
    watcher = JobWatcher(client, docs, on_finished_frame, auth)
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    try:
        loop.add_signal_handler(signal.SIGINT, stop.set)
    except (RuntimeError, ValueError, NotImplementedError):  # not the main thread: no Ctrl-C handling
        pass

    unfinished_too = {wire.ACCEPT_UNFINISHED: True}  # cancelled and failed images come back with their frames
    noted: list[str] = []

    async def generate(doc):
        """One image's request; sent again while the Flow cannot be reached and the image has not started."""
        first_try = None
        while True:
            try:
                return await post(client, wire.GENERATE, DocumentArray([doc]), None, unfinished_too, auth)
            except Exception as exc:
                failure, retry = classify(exc), transport.RETRY
                if not retry.retries(failure) or watcher.started(doc.id) or stop.is_set():
                    raise
                first_try = first_try or time.monotonic()
                if not retry.within(first_try, time.monotonic()):
                    raise
                if not noted:
                    noted.append(failure.message)
                    say(f"{noted[0]}: trying again for up to {retry.for_s / 60:g} minutes (Ctrl-C stops)")
                try:
                    await asyncio.wait_for(stop.wait(), retry.pause_s)
                except TimeoutError:
                    continue
                raise  # Ctrl-C while waiting for the Flow: it never got the image

    jobs = [asyncio.create_task(generate(d)) for d in docs]

    async def watch() -> None:
        while not all(j.done() for j in jobs):
            if stop.is_set():
                bars.note("stopping: cancelling at the next step, keeping the frames made so far")
                try:
                    await post(client, wire.CANCEL, _ids(docs), wire.JOB_STATE_EXECUTOR, metadata=auth)
                except Exception as exc:  # the Flow cannot be reached: its images stop as abandoned
                    if classify(exc).code not in wire.RESTARTING:
                        raise
                return
            pending = [d for d, j in zip(docs, jobs, strict=True) if not j.done()]
            try:
                bars.update(await watcher.poll(pending))
            except Exception:  # progress is best effort; the job's own result decides
                pass
            try:
                await asyncio.wait_for(stop.wait(), PROGRESS_INTERVAL_S)
            except TimeoutError:
                pass

    polling = asyncio.create_task(watch())
    try:
        outcomes = await asyncio.gather(*jobs, return_exceptions=True)
    finally:
        await polling  # it returns once every job is done (or after sending a cancel)
        try:
            loop.remove_signal_handler(signal.SIGINT)
        except (RuntimeError, ValueError, NotImplementedError):
            pass
    if any(isinstance(out, BaseException) for out in outcomes):
        await watcher.catch_up()  # an animation's frames finished since the last poll are kept too
    for i, (doc, out) in enumerate(zip(docs, outcomes, strict=True)):
        if isinstance(out, BaseException) and watcher.started(doc.id):
            outcomes[i] = DocumentArray(await watcher.lost(doc, out))
    try:  # collected: the server may remove the jobs' files now
        await post(client, wire.FORGET, _ids(docs), wire.JOB_STATE_EXECUTOR, metadata=auth)
    except Exception:  # a Flow that is gone keeps them until its sweep (a day)
        pass
    bars.finish([o for o in outcomes if not isinstance(o, BaseException)])
    bars.close()
    errors = [o for o in outcomes if isinstance(o, BaseException)]
    results = DocumentArray()
    for out in outcomes:
        if not isinstance(out, BaseException):
            results.extend(out)
    for doc in results:
        wire.cast_tags(doc)
    return results, errors


class JobWatcher:
    """Polls ``/progress`` for a run's images and keeps every frame it sees (each fetched once); of an
    animation, every finished frame (each handed to ``on_finished_frame``)."""

    def __init__(self, client, docs, on_finished_frame: FrameCallback | None = None, metadata: tuple = ()):
        self.client = client
        self.metadata = metadata
        self.states: dict[str, dict] = {}
        self.frames: dict[str, list] = {d.id: [] for d in docs}
        self.docs = {d.id: d for d in docs}
        # an animation's next finished frame to fetch, by job id
        self.next_finished = {d.id: int(d.tags.get("start_frame") or 0) for d in docs if _is_animation(d)}
        self.on_finished_frame = on_finished_frame

    async def _progress(self, ids: list[str], frame: bool = False, finished_from: int | None = None):
        parameters = {"frame": True} if frame else {}
        if finished_from is not None:
            parameters["finished_from"] = finished_from
        return await post(
            self.client, wire.PROGRESS, _ids_of(ids), wire.JOB_STATE_EXECUTOR, parameters or None, self.metadata
        )

    async def _fetch_finished(self, job_id: str, last: int) -> None:
        """Fetch an animation's finished frames up to ``last`` that this client does not have yet."""
        while self.next_finished[job_id] <= last:
            answer = await self._progress([job_id], finished_from=self.next_finished[job_id])
            chunks = sorted(answer[0].chunks, key=lambda c: int(c.tags["frame"])) if len(answer) else []
            if not chunks:
                return
            for chunk in chunks:
                frame = int(chunk.tags["frame"])
                if frame != self.next_finished[job_id]:
                    return  # not on the board (yet): the next poll asks again
                self.frames[job_id].append(chunk)
                if self.on_finished_frame is not None:
                    self.on_finished_frame(self.docs[job_id], frame, data_uri_bytes(chunk.uri))
                self.next_finished[job_id] = frame + 1

    async def poll(self, pending) -> list:
        """The jobs' states (for the bars); fetches the frame of any job that made a new one, and
        an animation's new finished frames."""
        states = await self._progress([d.id for d in pending])
        fresh = []
        for state in states:
            self.states[state.id] = wire.restore_numbers(state.tags)
            if state.id in self.next_finished:
                last = self.states[state.id].get("last_finished")
                if last is not None:
                    await self._fetch_finished(state.id, int(last))
                continue
            kept = self.frames[state.id]
            step = self.states[state.id].get("frame_step")
            if step and (not kept or kept[-1].tags["step"] < step):
                fresh.append(state.id)
        if fresh:
            from docarray import Document

            for state in await self._progress(fresh, frame=True):
                tags = wire.restore_numbers(state.tags)
                if state.uri and tags.get("frame_step"):
                    frame = Document(uri=state.uri, tags={"step": tags["frame_step"], "cur_t": tags.get("frame_cur_t")})
                    self.frames[state.id].append(frame)
        return states

    async def catch_up(self) -> None:
        """Fetch the finished frames of animations that ended since the last poll (best effort)."""
        for job_id in self.next_finished:
            try:
                state = wire.restore_numbers((await self._progress([job_id]))[0].tags)
                if state.get("last_finished") is not None:
                    await self._fetch_finished(job_id, int(state["last_finished"]))
            except Exception:
                pass

    def started(self, job_id: str) -> bool:
        return (self.states.get(job_id) or {}).get("status", JobStatus.WAITING) != JobStatus.WAITING

    async def lost(self, doc, error: BaseException) -> list:
        """The failed Documents of a job whose request failed mid-run: its image's frames so far and
        why; a batch (``batch_size`` B above 1) answers B of them, as a finished batch does, the
        further images without frames (the board shows image 0's alone).

        The server marks a job whose sampler process died; its own message is used when the
        Flow still answers within a few seconds.
        """
        from docarray import Document

        state = self.states.get(doc.id, {})
        for _ in range(20):  # the server keeps the Flow up about 10 s for this question
            try:
                latest = wire.restore_numbers((await self._progress([doc.id]))[0].tags)
            except Exception:
                break  # the Flow is gone (stopped, or restarting)
            if latest.get("status") not in (JobStatus.RUNNING, JobStatus.WAITING, None):
                state = latest
                break
            await asyncio.sleep(0.5)
        step, total = (state.get(k, "?") for k in ("step", "total"))
        failure = classify(error)
        if state.get("status") == JobStatus.FAILED and (told := wire.failure_of_tags(state)) is not None:
            failure = told
        elif failure.code == wire.ErrorCode.EXECUTOR_RESTARTING and failure.executor == wire.SAMPLER:
            # the gateway could no longer reach the job's sampler
            message = f"the sampler process died at step {step} of {total}; the server restarts it"
            failure = wire.Failure(wire.ErrorCode.SAMPLER_DIED, message)
        else:
            message = f"the connection to the Flow broke at step {step} of {total}: {failure.message}"
            failure = wire.Failure(wire.ErrorCode.CONNECTION_LOST, message)
        out = Document(
            id=doc.id,
            tags={**doc.tags, "status": JobStatus.FAILED.value, **failure.tags(), "steps_done": state.get("step")},
        )
        for frame in self.frames[doc.id]:
            out.chunks.append(frame)
        if len(out.chunks):
            out.uri = out.chunks[-1].uri
        return wire.batch_documents(out, int(doc.tags.get("batch_size") or 1))


def _is_animation(doc) -> bool:
    return doc.tags.get("animation_mode", "None") != "None"
