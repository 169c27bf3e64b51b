"""A drop-in for PaddleHub's ``hub serving`` of ``disco_diffusion_clip_rn50``.

``hub serving start -m disco_diffusion_clip_rn50`` answers ``POST /predict/disco_diffusion_clip_rn50``
with the module's keyword arguments as a JSON body (``{"text_prompts": [...], "steps": ...}``) by
calling its ``serving_method``, which returns ``generate_image(...).to_base64()``: the
DocumentArray (docarray v1) of ``n_batches`` images. The answer is
``{"msg": "", "results": <that base64 text>, "status": "000"}``; on an error ``status`` is ``"101"``
with the error as ``msg`` and ``results`` empty, and ``"111"`` names a module that is not served.
Beside PaddleHub's fields, an error's answer carries ``code`` (a ``wire.ErrorCode``) and ``setting``
(the setting concerned, or null), as the job API's refusals do.
This route does the same, as a job of the job queue (so it waits its turn, and the result is also
kept in the result store): it answers when every image is done, and an image that did not finish
is an error (``"101"``), never a plain success. Unlike the module, the server writes no files to
an ``output_dir``.
"""

from __future__ import annotations

import base64
from typing import Any

from fastapi import Request  # at module level: FastAPI reads the handlers' annotations here

from disco.settings import Limits, SettingsError
from disco_service import wire
from disco_service.server.http_api import SETTINGS_BODY, settings_from_json
from disco_service.server.http_guard import TookTooLong, off_loop, parse_json
from disco_service.server.job_queue import Job, JobQueue, TooManyJobs
from disco_service.server.public_errors import public_message
from disco_service.server.results import ResultStore
from disco_service.wire import ErrorCode, Failure, JobStatus

__all__ = ["answer", "image_documents", "MODULE", "mount"]

MODULE = "disco_diffusion_clip_rn50"


def answer(status: str, msg: str = "", results: Any = "", failure: Failure | None = None) -> dict[str, Any]:
    """``hub serving``'s answer: ``000`` results, ``101`` an error of the prediction, ``111`` no such module,
    ``112`` a body that is not JSON; with a ``failure``, its ``code`` and ``setting`` too (``msg`` is
    its message)."""
    if failure is None:
        return {"msg": msg, "results": results, "status": status}
    return {"msg": failure.message, "results": results, "status": status, **failure.body("msg")}


def image_documents(job: Job, store: ResultStore):
    """The job's images as the module returns them: one Document per image, ``uri`` its final PNG (data
    URI), ``chunks`` its frames with ``tags['step']`` and ``tags['cur_t']``, ``tags`` its settings, seed
    and status."""
    from docarray import Document, DocumentArray

    def data_uri(path) -> str:
        return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode()

    docs = DocumentArray()
    for image in job.images:
        record = store.read(image.doc_id) or {}
        tags = {**record.get("settings", {}), "seed": image.seed, "status": image.status}
        tags.update(steps_done=record.get("steps_done"), batch_index=image.index, run_seed=job.settings["seed"])
        doc = Document(id=image.doc_id, tags=tags)
        cur_t = {f["step"]: f.get("cur_t") for f in record.get("frames", []) if isinstance(f, dict)}
        for step, path in store.frames(image.doc_id):
            doc.chunks.append(Document(uri=data_uri(path), tags={"step": step, "cur_t": cur_t.get(step)}))
        if (final := store.file(image.doc_id, "final.png")) is not None:
            doc.uri = data_uri(final)
        docs.append(doc)
    return docs


def mount(app, queue: JobQueue, limits: Limits) -> None:
    """Add ``POST /predict/{module}`` to ``app`` (the token check of http_api.py applies to it)."""

    @app.post("/predict/{module}", tags=["PaddleHub"], openapi_extra=SETTINGS_BODY)
    async def predict(module: str, request: Request):
        """PaddleHub's ``hub serving`` for disco_diffusion_clip_rn50: waits until the images are done."""
        if module != MODULE:
            return answer("111", failure=Failure(ErrorCode.MODULE_NOT_FOUND, f"Module {module} is not available."))
        try:  # off the event loop: a large body takes a while to read and check
            body = await off_loop(parse_json, await request.body())
        except SettingsError:
            message = f"send the module's arguments as a JSON object to /predict/{MODULE}"
            return answer("112", failure=Failure(ErrorCode.REQUEST_INVALID, message))
        try:
            settings, init, _ = await off_loop(settings_from_json, body, limits)
            if settings.animation_mode != "None":
                raise SettingsError("animation_mode", f"{MODULE} makes still images: send animations to /jobs")
            if settings.batch_size != 1:  # the module's answer has one image per batch
                raise SettingsError(
                    "batch_size",
                    f"must be 1 for {MODULE} (its answer has one image per sampler call), got {settings.batch_size}: "
                    "ask for more images with n_batches, or send batches to /jobs",
                )
            job = queue.submit(request.state.owner, settings, init)
        except (SettingsError, TooManyJobs, TookTooLong) as exc:
            return answer("101", failure=wire.failure_of(exc, named=False))
        job = await queue.wait(job.id)
        if job.status != JobStatus.DONE:
            failed = [
                f"image {i.index} (seed {i.seed}) {i.status}" + (f": {public_message(i.error)}" if i.error else "")
                for i in job.images
                if i.status != JobStatus.DONE
            ]
            codes = {i.error_code for i in job.images if i.status != JobStatus.DONE}
            code = ErrorCode(codes.pop()) if len(codes) == 1 and None not in codes else ErrorCode.IMAGE_NOT_FINISHED
            settings = {i.error_setting for i in job.images if i.status != JobStatus.DONE}
            setting = settings.pop() if len(settings) == 1 else None
            return answer("101", failure=Failure(code, f"job {job.id} did not finish: " + "; ".join(failed), setting))
        return answer("000", "", image_documents(job, queue.store).to_base64())
