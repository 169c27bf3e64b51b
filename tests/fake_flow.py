"""A fake Flow for the job queue and the HTTP routes: it answers the queue's calls (``generate``,
``progress``, ``cancel``) at once, writing into the result store what the real Flow would."""

from __future__ import annotations

import asyncio
import io

from docarray import Document
from PIL import Image as PILImage

from disco.settings import Settings, validate_settings
from disco_service.server.results import ResultStore
from disco_service.wire import JobStatus

__all__ = ["FakeFlow", "png", "settings"]

STEPS = 3  # the steps of every fake image


def png(colour: tuple[int, int, int] = (200, 100, 0)) -> bytes:
    """An 8x8 PNG of one colour."""
    buffer = io.BytesIO()
    PILImage.new("RGB", (8, 8), colour).save(buffer, format="PNG")
    return buffer.getvalue()


def settings(n: int = 1, seed: int | None = 10) -> Settings:
    """The settings of a small job of ``n`` images."""
    return validate_settings(
        text_prompts=["a lighthouse"], width_height=[64, 64], steps=3, skip_steps=0, n_batches=n, seed=seed
    )


class FakeFlow:
    """Answers like the Flow: each image is done at once (or as ``outcomes`` say), and recorded in the
    store: its frames (steps 1 to 3, or an animation's frames 0 to ``max_frames - 1``) and its record.

    ``outcomes``: doc id or seed -> an exception to raise, or the status to end with. ``hold``: while
    this event is not set, images stay running after their first frame (a cancel ends them at once,
    as ``cancelled`` with that frame kept)."""

    def __init__(self, store: ResultStore, outcomes: dict | None = None, hold: asyncio.Event | None = None):
        self.store = store
        self.sent: list[Document] = []
        self.cancelled: list[str] = []
        self.outcomes = outcomes or {}
        self.states: dict[str, dict] = {}
        self.hold = hold

    async def generate(self, doc: Document) -> Document:
        self.sent.append(doc)
        outcome = self.outcomes.pop(doc.id, None) or self.outcomes.pop(doc.tags["seed"], None)
        if isinstance(outcome, Exception):
            raise outcome
        seed = doc.tags["seed"]
        record: dict = {"seed": seed, "total": STEPS}
        if doc.tags.get("animation_mode", "None") != "None":
            frames = int(doc.tags.get("max_frames") or 1)
            for frame in range(frames):
                self.store.add_animation_frame(doc.id, frame, png((frame * 40 % 256, 0, 0)), {"seed": seed})
            record["animation"] = {"frames": frames, "fps": 12}
        steps_done = STEPS
        if self.hold is not None:
            self.store.add_frame(doc.id, 1, png((1, 0, 0)), {"seed": seed})
            self.states[doc.id] = {"status": JobStatus.RUNNING.value, "step": 1, "total": STEPS}
            while not self.hold.is_set() and doc.id not in self.cancelled:
                await asyncio.sleep(0.01)
            if doc.id in self.cancelled:
                outcome, steps_done = JobStatus.CANCELLED.value, 1
        status = outcome or JobStatus.DONE.value
        if steps_done == STEPS and "animation" not in record:
            self.store.add_frame(doc.id, STEPS, png(), {"seed": seed})
        self.store.finish(doc.id, {**record, "status": status, "steps_done": steps_done})
        if self.hold is not None:
            self.states[doc.id] = {"status": status}
        return Document(id=doc.id, tags={**doc.tags, "status": status, "steps_done": float(steps_done)})

    async def progress(self, ids: list[str], frame: bool = False, keep_alive: bool = True) -> list[Document]:
        return [Document(id=i, tags=self.states.get(i, {"status": "waiting"})) for i in ids]

    async def cancel(self, ids: list[str]) -> None:
        self.cancelled += ids
