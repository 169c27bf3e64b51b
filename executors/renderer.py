"""Jina executor: frames to PNG image chunks, the final image to ``doc.uri``; raw tensors dropped.

It also answers ``/progress``, ``/cancel`` and ``/forget`` for jobs, from the job board the
samplers write (in the state store). The client addresses them here alone
(``target_executor``), which keeps the sampler's replicas for ``/generate``: Jina's
round-robin over the replicas then spreads the images of a call evenly (progress polls would
otherwise take turns in the rotation). These endpoints are asynchronous, so they are answered
while images are being rendered.

Every PNG it returns carries the settings that remake its image (disco_service/outputs.py). Each
image's frames also go to the result store as a GIF and a sprite sheet (``DISCO_RESULTS_DIR``);
with ``parameters={'animations': True}`` (the web page asks for it) they come back as data URIs
in ``tags['gif']`` and ``tags['sprite']`` too, and an animation its frames as an MP4 in
``tags['mp4']`` (at ``tags['mp4_fps']`` frames a second).

An image that did not finish (cancelled, abandoned, shutdown, failed) is no plain success: this
executor names each such image, its status and where its frames are kept in its result
(``{'not_finished': [...]}``), and the gateway fails the request with that message
(``ImageNotFinished``), unless the caller asked for unfinished images
(``parameters={'accept_unfinished': True}``, as client.py does) or watched the image by polling
``/progress``; those get the Document back with its ``status``, ``error`` and frames so far.
"""

import base64
import io
import time

from docarray import Document, DocumentArray
from jina import Executor, requests

from disco_service import config
from disco_service.outputs import embed_settings_in_uri, image_settings
from disco_service.server.flow_secret import guard_executor, resolve
from disco_service.server.jobs import JobBoard
from disco_service.server.results import GIF, SPRITE, ResultStore
from disco_service.wire import ACCEPT_UNFINISHED, BATCH_OF_TAG, KEEP_ALIVE, NOT_FINISHED, JobStatus

SWEEP_EVERY_S = 3600

FINISHED_PER_POLL = 8  # an animation's finished frames one progress answer carries


class Renderer(Executor):
    def __init__(
        self,
        state_store: str | None = None,
        results_dir: str | None = None,
        flow_secret: str | None = None,
        **kwargs,
    ):
        """``state_store`` (the store holding the job board: a SQLite file or a ``postgresql://``
        URL) and ``results_dir`` (``uses_with``) override the service's configuration (its store,
        ``DISCO_RESULTS_DIR``); ``flow_secret``: what the gateway's calls must carry
        (server/flow_secret.py)."""
        super().__init__(**kwargs)
        cfg = config.load()
        guard_executor(self, resolve(flow_secret))
        self.board = JobBoard(state_store or cfg.store_target(config.FLOW_GRPC_PORT))
        self.store = ResultStore(results_dir or cfg.results_dir, cfg.result_ttl_s)
        self.swept = 0.0

    @requests(on="/generate")
    def render(self, docs: DocumentArray, parameters: dict | None = None, **kwargs) -> dict | None:
        parameters = parameters or {}
        for doc in docs:
            recipe = image_settings(doc.tags)
            for chunk in doc.chunks:
                if chunk.tensor is not None:
                    chunk.convert_image_tensor_to_uri()  # PNG data URI
                    chunk.tensor = None
                if chunk.uri:
                    chunk.uri = embed_settings_in_uri(chunk.uri, recipe)
            if len(doc.chunks):
                self.store.write_animations(doc.id, doc.chunks, recipe)
                if parameters.get("animations"):
                    doc.tags.update(_animations(self.store, doc.id))
                    if doc.tags.get("animation_mode", "None") != "None":
                        doc.tags["mp4"] = _mp4(doc.chunks, float(doc.tags.get("mp4_fps") or doc.tags.get("fps") or 12))
                doc.uri = doc.chunks[-1].uri  # the last frame: the final image, or the latest if stopped early
            if doc.tensor is not None:  # a final image that is not its last frame: GoBig's enlarged image
                doc.convert_image_tensor_to_uri()
                doc.uri = embed_settings_in_uri(doc.uri, recipe)
                doc.tensor = None
            doc.embedding = None
            doc.blob = None
            self.store.keep_document(doc.id, doc)  # the run, by its batch_name (GET /runs/{batch_name})
            if self.board.read(doc.id) is not None:
                self.board.update(doc.id, returned=time.time())  # a Flow that is stopping waits for this
        self._sweep()
        unfinished = [d for d in docs if d.tags.get("status") not in (None, JobStatus.DONE)]
        if unfinished and not parameters.get(ACCEPT_UNFINISHED):
            # a batch's further images are watched through the Document sent (batch_of)
            unwatched = [d for d in unfinished if self.board.last_seen(d.tags.get(BATCH_OF_TAG) or d.id) is None]
            if unwatched:  # the gateway makes the request an error of these (gateway/page_gateway.py)
                return {NOT_FINISHED: [_not_finished(d) for d in unwatched]}
        return None

    @requests(on="/progress")
    async def progress(self, docs: DocumentArray, parameters: dict | None = None, **kwargs) -> None:
        """Per Document id: status, step, total, cur_t, loss (an animation's also frame, frames,
        run_step, run_total, frames_done, last_finished); with ``parameters={'frame': True}`` the
        latest frame as ``doc.uri``; with ``parameters={'finished_from': n}`` an animation's
        finished frames from frame ``n`` on (at most ``FINISHED_PER_POLL``) as chunks with
        ``tags['frame']``. Each poll also tells the sampler the client is still there, unless
        ``parameters={'keep_alive': False}`` (a gateway watching a caller's own request)."""
        want_frame = bool((parameters or {}).get("frame"))
        keep_alive = (parameters or {}).get(KEEP_ALIVE, True) is not False
        finished_from = (parameters or {}).get("finished_from")
        for doc in docs:
            if keep_alive:
                self.board.seen(doc.id)
            state = self.board.read(doc.id)
            if state is None:  # forgotten by the board: the store's record, if any
                state = {k: v for k, v in (self.store.read(doc.id) or {"status": JobStatus.WAITING.value}).items()}
                state.pop("frames", None)  # its list of kept frames: not progress
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
        """The client has these jobs' results: remove them from the job board (a job still running
        stays). Jobs nobody collected go after a day; the result store keeps the images for
        ``DISCO_RESULT_TTL_S``."""
        for doc in docs:
            if (self.board.read(doc.id) or {}).get("status") != JobStatus.RUNNING:
                self.board.forget(doc.id)
        self.board.sweep()

    @requests(on="/cancel")
    async def cancel(self, docs: DocumentArray, **kwargs) -> None:
        """Ask these jobs to stop at their next step (also jobs still waiting for a sampler)."""
        for doc in docs:
            self.board.cancel(doc.id)

    def _sweep(self) -> None:
        if time.time() - self.swept > SWEEP_EVERY_S:
            self.swept = time.time()
            self.store.sweep()


def _not_finished(doc) -> str:
    status, step, total = doc.tags.get("status"), doc.tags.get("steps_done"), doc.tags.get("total")
    where = f"at step {_whole(step)}" + (f" of {_whole(total)}" if total is not None else "")
    why = {
        JobStatus.CANCELLED: "was cancelled",
        JobStatus.ABANDONED: "was stopped as abandoned (nobody polled /progress for it)",
        JobStatus.SHUTDOWN: "was stopped because the Flow is stopping",
        JobStatus.FAILED: "failed",
    }.get(status, f"ended as {status}")
    error = f": {doc.tags['error']}" if doc.tags.get("error") else ""
    kept = "its frames so far are kept" if len(doc.chunks) else "it made no frames; its record is kept"
    return f"image {doc.id} {why} {where}{error}; {kept} in the result store (GET /results/{doc.id} on the HTTP port)"


def _whole(value):
    return int(value) if isinstance(value, float) and value.is_integer() else value


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


def _animations(store: ResultStore, doc_id: str) -> dict[str, str]:
    """The frames' GIF and sprite sheet from the store, as data URIs."""
    out = {}
    for tag, name, mime in (("gif", GIF, "image/gif"), ("sprite", SPRITE, "image/png")):
        path = store.entry(doc_id) / name
        if path.is_file():
            out[tag] = f"data:{mime};base64," + base64.b64encode(path.read_bytes()).decode()
    return out
