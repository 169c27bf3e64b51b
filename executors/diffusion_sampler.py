"""Jina executor: guided reverse diffusion, one Document per image, with progress and cancel.

``/generate`` runs one job at a time per replica (Jina serialises synchronous endpoints).
A job whose caller has not polled ``/progress`` for ``client_timeout_s`` seconds
(``DISCO_CLIENT_TIMEOUT_S``, default 60, counted from its start until the first poll; a
client's ``client_timeout_s`` tag may shorten it) stops at its next step as ``abandoned``:
Jina's gateway does not pass on that a caller hung up, so silence is the sign. A job asked to
stop ends with the reason as its status (``cancelled``, ``shutdown``, ``abandoned``) and its frames so far.
Bad input fails the request before sampling starts; a fault during sampling (NaN, an
exception) ends the job with ``tags['status'] == 'failed'`` and ``tags['error']``, and the
frames made so far still go back.
Jobs publish their state on the shared job board; ``/progress`` and ``/cancel`` are answered
from it by the Renderer, to which the client addresses them, so this executor's replicas
receive ``/generate`` requests only and Jina's round-robin hands consecutive images to
different replicas. Each kept frame and, at the end, the image's record go to the result store
(``DISCO_RESULTS_DIR``, disco_service/results.py) as they are made, so a result is kept even when
its caller (or the gateway) is gone before the image comes back.
"""

import os
import socket
import time

import numpy as np
import torch
from docarray import Document, DocumentArray
from jina import Executor, requests

from disco.images import decode_init_image, png_bytes, to_uint8_hwc
from disco.loading import ModelCache, select_device
from disco.sampler import sample_image
from disco.settings import DIFFUSION_MODELS
from disco_service import config, wire
from disco_service.jobs import JobBoard
from disco_service.outputs import image_settings
from disco_service.results import ResultStore
from disco_service.wire import JobStatus


class SamplingFailed(RuntimeError):
    pass


class DiffusionSampler(Executor):
    def __init__(
        self,
        model_dir: str | None = None,
        use_gpu: bool | None = None,
        preload: str | None = DIFFUSION_MODELS[0],
        jobs_dir: str | None = None,
        mode: str | None = None,
        client_timeout_s: float | None = None,
        results_dir: str | None = None,
        **kwargs,
    ):
        """Arguments (``uses_with``, or ``serve.py``'s flags) override the service's configuration
        (``disco_service.config``). ``preload``: the diffusion model loaded at start (``none``: on
        the first request); ``mode``: ``fast`` or ``exact`` (disco/fast.py)."""
        super().__init__(**kwargs)
        cfg = config.load()
        device = select_device(use_gpu if use_gpu is not None else cfg.use_gpu, "DISCO_USE_GPU")
        self.cache = ModelCache(model_dir or cfg.model_dir, device, mode or cfg.mode, cfg.weights_mirrors)
        if preload and preload != "none":  # load the models at start, not on the first request
            self.cache.models(preload, use_secondary_model=True, with_init_loss=False)
        self.board = JobBoard(jobs_dir or cfg.jobs_dir)
        self.board.sweep()
        self.store = ResultStore(results_dir or cfg.results_dir, cfg.result_ttl_s)
        self.replica = f"{socket.gethostname()}:{os.getpid()}"
        self.client_timeout_s = float(client_timeout_s or cfg.client_timeout_s)

    @requests(on="/generate")
    def generate(self, docs: DocumentArray, **kwargs) -> None:
        for doc in docs:
            self._generate(doc)

    def _generate(self, doc: Document) -> None:
        s = wire.settings_from_tags(doc.tags)  # validated by the encoder, the Flow's first executor
        seed = s.seed
        init = decode_init_image(doc.blob, s.width, s.height) if doc.blob else None
        if doc.embedding is None:
            raise ValueError("the Document has no prompt embedding: send it through the PromptEncoder first")
        embeds = torch.from_numpy(np.array(doc.embedding, dtype=np.float32))  # a writable copy
        weights = [float(w) for w in doc.tags["prompt_weights"]]
        models = self.cache.models(s.diffusion_model, s.use_secondary_model, init is not None and s.init_scale > 0)

        started = time.time()
        status, step, error = JobStatus.DONE, 0, None
        asked = float(doc.tags.get("client_timeout_s") or 0)
        timeout = min(self.client_timeout_s, asked) if asked else self.client_timeout_s
        total = s.steps - s.skip_steps
        recipe = image_settings(doc.tags)
        kept: list[dict] = []  # the frames in the store: step and diffusion timestep
        self.board.update(doc.id, status=JobStatus.RUNNING, step=0, total=total, replica=self.replica, started=started)
        try:
            if reason := self.board.stop_reason(doc.id):
                status = reason
            else:
                for report in sample_image(s, embeds, weights, models, seed=seed, init_image=init):
                    step = report.step
                    png = None
                    if report.image is not None:
                        if not torch.isfinite(report.image).all():
                            raise SamplingFailed(f"the image became NaN at step {report.step}")
                        frame = to_uint8_hwc(report.image)
                        doc.chunks.append(Document(tensor=frame, tags={"step": report.step, "cur_t": report.cur_t}))
                        png = png_bytes(frame)
                        self.store.add_frame(doc.id, report.step, png, recipe)
                        kept.append({"step": report.step, "cur_t": report.cur_t})
                    shown = {"loss": report.loss} if report.loss is not None else {}
                    if png is not None:
                        shown.update(frame_step=report.step, frame_cur_t=report.cur_t)  # pollers fetch new frames
                    self.board.update(doc.id, png, step=report.step, total=report.total, cur_t=report.cur_t, **shown)
                    if reason := self.board.stop_reason(doc.id):
                        status = reason  # stop at this step; the frames so far go back
                        break
                    # a caller silent for that long is gone (or never watched): free the sampler for others
                    if time.time() - (self.board.last_seen(doc.id) or started) > timeout:
                        status = JobStatus.ABANDONED
                        break
        except Exception as exc:  # any fault mid-run: report it, keep the frames made so far
            status, error = JobStatus.FAILED, f"{type(exc).__name__}: {exc}"
        finished = time.time()
        self.store.finish(
            doc.id,
            {"status": JobStatus(status).value, "seed": seed, "settings": recipe, "steps_done": step, "total": total,
             "error": error, "replica": self.replica, "started": started, "finished": finished, "frames": kept},
        )  # fmt: skip
        self.board.update(doc.id, status=status, error=error, finished=finished)
        doc.tags.update(
            status=JobStatus(status).value,
            steps_done=step,
            total=total,
            replica=self.replica,
            started=started,
            finished=finished,
        )
        if error:
            doc.tags["error"] = error
