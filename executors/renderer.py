"""Jina executor: frames to PNG image chunks, the final image to ``doc.uri``; raw tensors dropped.

It also answers ``/progress``, ``/cancel`` and ``/forget`` for jobs, from the job board the
samplers write (``DISCO_JOBS_DIR``). The client addresses them here alone
(``target_executor``), which keeps the sampler's replicas for ``/generate``: Jina's
round-robin over the replicas then spreads the images of a call evenly (progress polls would
otherwise take turns in the rotation). These endpoints are asynchronous, so they are answered
while images are being rendered.

Every PNG it returns carries the settings that remake its image (disco_service/outputs.py). With
``parameters={'animations': True}`` (the web page asks for it) each image also gets its frames
as a GIF and a sprite sheet, as data URIs in ``tags['gif']`` and ``tags['sprite']``, and an
animation its frames as an MP4 in ``tags['mp4']`` (at ``tags['mp4_fps']`` frames a second).
"""

import base64
import io
import tempfile
import time
from pathlib import Path

from docarray import Document, DocumentArray
from jina import Executor, requests

from disco_service import config
from disco_service.jobs import JobBoard
from disco_service.outputs import embed_settings_in_uri, image_settings, write_animations
from disco_service.wire import JobStatus

FINISHED_PER_POLL = 8  # an animation's finished frames one progress answer carries


class Renderer(Executor):
    def __init__(self, jobs_dir: str | None = None, **kwargs):
        """``jobs_dir`` (``uses_with``) overrides the service's configuration (``DISCO_JOBS_DIR``)."""
        super().__init__(**kwargs)
        self.board = JobBoard(jobs_dir or config.load().jobs_dir)

    @requests(on="/generate")
    def render(self, docs: DocumentArray, parameters: dict | None = None, **kwargs) -> None:
        for doc in docs:
            recipe = image_settings(doc.tags)
            for chunk in doc.chunks:
                if chunk.tensor is not None:
                    chunk.convert_image_tensor_to_uri()  # PNG data URI
                    chunk.tensor = None
                if chunk.uri:
                    chunk.uri = embed_settings_in_uri(chunk.uri, recipe)
            if (parameters or {}).get("animations") and len(doc.chunks):
                doc.tags.update(_animations(doc.chunks, recipe))
                if doc.tags.get("animation_mode", "None") != "None":
                    doc.tags["mp4"] = _mp4(doc.chunks, float(doc.tags.get("mp4_fps") or doc.tags.get("fps") or 12))
            if len(doc.chunks):
                doc.uri = doc.chunks[-1].uri  # the last frame: the final image, or the latest if stopped early
            doc.embedding = None
            doc.blob = None
            if self.board.read(doc.id) is not None:
                self.board.update(doc.id, returned=time.time())  # a Flow that is stopping waits for this

    @requests(on="/progress")
    async def progress(self, docs: DocumentArray, parameters: dict | None = None, **kwargs) -> None:
        """Per Document id: status, step, total, cur_t, loss (an animation's also frame, frames,
        run_step, run_total, frames_done, last_finished); with ``parameters={'frame': True}`` the
        latest frame as ``doc.uri``; with ``parameters={'finished_from': n}`` an animation's
        finished frames from frame ``n`` on (at most ``FINISHED_PER_POLL``) as chunks with
        ``tags['frame']``. Each poll also tells the sampler the client is still there."""
        want_frame = bool((parameters or {}).get("frame"))
        finished_from = (parameters or {}).get("finished_from")
        for doc in docs:
            self.board.seen(doc.id)
            state = self.board.read(doc.id) or {"status": JobStatus.WAITING.value}
            if want_frame and (png := self.board.latest_frame(doc.id)):
                state = self.board.read(doc.id) or state  # written after the frame: its frame_step is this one's
                doc.uri = "data:image/png;base64," + base64.b64encode(png).decode()
            if finished_from is not None and state.get("last_finished") is not None:
                last = min(int(state["last_finished"]), int(finished_from) + FINISHED_PER_POLL - 1)
                for n in range(int(finished_from), last + 1):
                    if (png := self.board.finished_frame(doc.id, n)) is not None:
                        uri = "data:image/png;base64," + base64.b64encode(png).decode()
                        doc.chunks.append(Document(uri=uri, tags={"frame": n}))
            doc.tags.update(state)

    @requests(on="/forget")
    async def forget(self, docs: DocumentArray, **kwargs) -> None:
        """The client has these jobs' results: remove their files (a job still running keeps them).
        Files of jobs nobody collected go after a day."""
        for doc in docs:
            if (self.board.read(doc.id) or {}).get("status") != JobStatus.RUNNING:
                self.board.forget(doc.id)
        self.board.sweep()

    @requests(on="/cancel")
    async def cancel(self, docs: DocumentArray, **kwargs) -> None:
        """Ask these jobs to stop at their next step (also jobs still waiting for a sampler)."""
        for doc in docs:
            self.board.cancel(doc.id)


def _mp4(chunks, fps: float) -> str:
    """An animation's frames as an MP4 data URI."""
    from disco.video import write_mp4  # PyAV and torch, only for animations

    frames = []
    for chunk in chunks:
        image = Document(uri=chunk.uri)
        image.load_uri_to_image_tensor()
        frames.append(image.tensor)
    buffer = io.BytesIO()
    write_mp4(buffer, frames, fps)
    return "data:video/mp4;base64," + base64.b64encode(buffer.getvalue()).decode()


def _animations(chunks, recipe: dict) -> dict[str, str]:
    """The frames as a GIF and a sprite sheet, as data URIs."""
    with tempfile.TemporaryDirectory() as tmp:
        gif, sprite = Path(tmp) / "frames.gif", Path(tmp) / "sprite.png"
        write_animations(chunks, gif, sprite, recipe)
        return {
            "gif": "data:image/gif;base64," + base64.b64encode(gif.read_bytes()).decode(),
            "sprite": "data:image/png;base64," + base64.b64encode(sprite.read_bytes()).decode(),
        }
