"""One job's life on a sampler: started on the job board, its steps driven until done or stopped,
and the record it leaves in the result store and in the Document's tags.

The sampler hands a ``SamplingRun`` the steps of an image or of an animation (an iterator of
steps done, which does the work as it is read) and the plan they follow
(``disco.animation_plan.AnimationPlan``); the run stops at the next step when the job board says
the job was cancelled, the Flow stops, or the caller was silent for ``timeout_s`` seconds, and
turns a fault into ``failed`` with its error, so the frames made so far still go back. The same
fields, shaped the same for an image and an animation, go to the job board, the result store's
record and the Document.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from disco.animation_plan import AnimationPlan
from disco_service import wire
from disco_service.server.jobs import JobBoard
from disco_service.server.results import ResultStore
from disco_service.wire import JobStatus

__all__ = ["SamplingRun"]


@dataclass
class SamplingRun:
    """One job on one sampler replica: ``drive`` its steps, then ``end`` it (record out)."""

    job_id: str
    plan: AnimationPlan
    board: JobBoard
    replica: str  # host:pid of the sampler running it
    timeout_s: float  # a caller silent this long (seconds) is gone: the job stops as abandoned
    status: JobStatus = JobStatus.DONE
    step: int = 0  # the last step done (of an animation: counted over the whole run)
    failure: wire.Failure | None = None  # why a failed job failed: its code, message and setting
    started: float = 0.0  # Unix time
    finished: float = 0.0

    @property
    def error(self) -> str | None:
        """``ExceptionName: message`` of a failed job, else None."""
        return self.failure.message if self.failure else None

    def error_tags(self) -> dict[str, Any]:
        """The failure's tags (``error``, ``error_code``, ``error_setting``), or ``error`` None."""
        return self.failure.tags() if self.failure else {"error": None}

    @property
    def animation(self) -> bool:
        return self.plan.mode != "None"

    @property
    def total(self) -> int:
        """The steps the job takes: of an image its sampled steps, of an animation every frame's."""
        return self.plan.run_steps

    def drive(self, steps: Iterable[int]) -> None:
        """Mark the job running, then read ``steps`` (each item: the steps done so far) until they
        end, the job is asked to stop (its status becomes the reason), its caller stops polling
        (``abandoned``), or reading them raises (``failed``, with ``error``). Raises nothing."""
        self.started = time.time()
        # a still image's steps are its own and GoBig's tiles'; an animation shows its frame's
        shown: dict[str, Any] = {"total": self.plan.first_steps if self.animation else self.plan.run_steps}
        if self.animation:
            shown.update(frame=self.plan.start_frame, frames=self.plan.frames, run_total=self.total)
        self.board.update(
            self.job_id, status=JobStatus.RUNNING, step=0, replica=self.replica, started=self.started, **shown
        )
        try:
            if reason := self.board.stop_reason(self.job_id):
                self.status = reason
            else:
                for done in steps:
                    self.step = done
                    if reason := self.board.stop_reason(self.job_id):
                        self.status = reason  # stop at this step; the frames so far go back
                        break
                    # a caller silent for that long is gone (or never watched): free the sampler for others
                    if time.time() - (self.board.last_seen(self.job_id) or self.started) > self.timeout_s:
                        self.status = JobStatus.ABANDONED
                        break
        except Exception as exc:  # any fault mid-run: report it, keep the frames made so far
            self.status, self.failure = JobStatus.FAILED, wire.failure_of(exc)
            if self.failure.code == wire.ErrorCode.INTERNAL:  # any other exception mid-run: a sampling fault
                self.failure = wire.Failure(wire.ErrorCode.SAMPLING_FAILED, self.failure.message)
        self.finished = time.time()

    def record(self, seed: int, settings: Mapping[str, Any], frames: list[dict]) -> dict[str, Any]:
        """The job's record for the result store: status, seed, ``settings`` (the image's recipe),
        steps, error, times, ``frames`` (an image's kept frames: step and diffusion timestep), and
        of an animation its frame count, MP4 rate and first frame."""
        record = {
            "status": JobStatus(self.status).value, "seed": seed, "settings": dict(settings),
            "steps_done": self.step, "total": self.total, **self.error_tags(), "replica": self.replica,
            "started": self.started, "finished": self.finished, "frames": frames,
        }  # fmt: skip
        if self.animation:
            record["animation"] = {
                "frames": self.plan.frames,
                "fps": self.plan.fps,
                "start_frame": self.plan.start_frame,
            }
        return record

    def end(self, store: ResultStore, record: Mapping[str, Any]) -> dict[str, Any]:
        """Keep ``record`` in ``store``, mark the job ended on the board, and return the tags the
        Document goes back with (status, steps_done, total, replica, times, and error if any)."""
        store.finish(self.job_id, dict(record))
        self.board.update(self.job_id, status=self.status, **self.error_tags(), finished=self.finished)
        tags = {
            "status": JobStatus(self.status).value, "steps_done": self.step, "total": self.total,
            "replica": self.replica, "started": self.started, "finished": self.finished,
        }  # fmt: skip
        if self.failure:
            tags.update(self.error_tags())
        return tags
