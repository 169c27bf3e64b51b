"""The service's own HTTP routes, on the gateway's HTTP port beside Jina's REST API and the page.

Jobs (short requests only; the long call to the executors stays inside the service):

- ``POST /jobs``: settings as JSON (the names of the tags; ``init_image`` and a Video Input's
  ``video_init_path`` as ``data:`` URIs of the files' bytes), validated (400 naming the bad
  setting), queued; answers at once (202) with the job: ``id``, ``status`` ``queued`` and
  ``position`` (its place in line, in images). An animation is a job of one image. On a server
  without GPU, a job estimated to run longer than ``DISCO_CONFIRM_OVER_S`` is refused (409,
  ``confirm_required``, naming the estimate and the limit) unless sent as ``POST /jobs?confirm=1``.
- ``GET /jobs/{id}``: status, position and per image: seed, status, step, total, ``eta_s``,
  ``latest_frame``, and once it ended ``png`` (only when done), ``gif`` and ``sprite`` (URLs); an
  animation's also ``frame`` (the one being made, from 0), ``frames``, ``frames_done``,
  ``frame_pngs`` (its finished frames, as they are made) and, once it ended, ``mp4``; as they are
  made, a VR animation's ``eye_views`` (per frame: ``frame``, ``l``, ``r``) and the steps
  ``intermediate_saves`` keeps, ``partials`` (each: ``frame``, null for a still image, ``end``,
  the notebook's ``NN%`` or step ``jjj``, and ``url``).
- ``DELETE /jobs/{id}``: cancel (queued images at once, running ones at their next step; frames
  kept); on a finished job: delete it and its files (gallery.py).
- ``GET /jobs``: the caller's jobs, newest first (also the images its token asked of the Flow
  itself over gRPC or ``POST /post``, direct_calls.py) (``?limit=N``, default 50; ``?before=T``: those
  created before T, the answer's ``next_before``).
- ``GET /jobs/{id}/images/{i}/{final.png|latest.png|frames.gif|sprite.png|video.mp4|frameNNNN.png}``: the files;
  also ``frameNNNN_l.png``, ``frameNNNN_r.png`` (eye views) and ``partials/{[frameNNNN-]NN%|jjj}.png``
  (intermediate saves; ``%`` sent as ``%25``), downloaded under client.py's names.

Results by Document id, for any caller of ``/generate`` (e.g. a gRPC caller whose connection
dropped): ``GET /results/{id}`` (its record; while it is still running, its progress, and asking
keeps it from being abandoned) and ``GET /results/{id}/{final.png|frames.gif|sprite.png|stepNNNN.png}``
(and the eye views and intermediate saves by the same names as above).
A result answers the caller that sent its image only (its token's owner, results.py); to any other
caller it is not found (404).

Runs by name: ``GET /runs/{batch_name}`` answers the DocumentArray of the caller's latest run of
that ``batch_name`` (over gRPC, ``/post`` or the job API) as ``generate_image`` returned it, in
docarray's JSON; a name the caller never used, or used only by another caller, is not found (404).

Tokens (tokens.py): with ``DISCO_API_TOKENS`` every route but ``GET /`` (health) and the page's
static files needs ``Authorization: Bearer TOKEN``; a job belongs to its token and is not found
(404) for any other. Jina's ``POST /post`` answers an error (``header.status`` set) with an HTTP
error status too: 400 for a refused request, 429 for one over the token's cap and 404 for one naming
another caller's image (direct_calls.py), 409 for an image that did not finish, 500 otherwise, and
with the error's ``code`` and ``setting`` beside Jina's fields.

Every refusal's body is ``{"code": ..., "setting": ..., "detail": ...}``: a ``wire.ErrorCode``, the
setting concerned (or null) and a message for people; an image that failed says the same in its
``error_code``, ``error_setting`` and ``error``.
"""

from __future__ import annotations

import base64
import binascii
import io
import json
import re
from collections.abc import Callable
from typing import Any
from urllib.parse import quote

from fastapi import Request  # at module level: FastAPI reads the handlers' annotations here

from disco.settings import Limits, SettingsError, check_gobig_start, default, validate_settings
from disco_service import wire
from disco_service.outputs import image_stem, picture_name, picture_tags
from disco_service.server import http_guard
from disco_service.server.http_guard import TookTooLong, content_disposition, off_loop, parse_json
from disco_service.server.job_queue import Image, Job, JobQueue, TooManyJobs
from disco_service.server.public_errors import public_message
from disco_service.server.quotas import LongJob, QuotaExceeded
from disco_service.server.results import FINAL, GIF, MP4, SPRITE, ResultStore, animation_frame_name
from disco_service.server.tokens import Tokens, Unauthorized
from disco_service.wire import ErrorCode, Failure, JobStatus

__all__ = [
    "ApiError",
    "decode_data_uri",
    "decode_init_image",
    "decode_video",
    "IMAGE_FILES",
    "image_view",
    "job_view",
    "MEDIA",
    "mount",
    "open_path",
    "picture_links",
    "coded_post_answer",
    "post_failure",
    "post_status",
    "refusal",
    "STATUS_OF",
    "ServiceMiddleware",
    "settings_from_json",
    "SETTINGS_BODY",
    "without_internals",
]

IMAGE_FILES = {"final.png": FINAL, "latest.png": None, "frames.gif": GIF, "sprite.png": SPRITE, "video.mp4": MP4}
MEDIA = {".png": "image/png", ".gif": "image/gif", ".mp4": "video/mp4"}
_ANIMATION_FRAME = re.compile(r"frame(\d{4,})\.png")
# The body of /jobs and /predict in the API's description: the settings (read by the route itself)
SETTINGS_BODY = {
    "requestBody": {
        "required": True,
        "content": {"application/json": {"schema": {"type": "object", "description": "settings by name"}}},
    }
}
# The HTTP status of an error of Jina's /post answers, by its code: a refused request, an image
# that did not finish, a cap, another caller's image; any other is 500.
STATUS_OF = {
    ErrorCode.SETTING_INVALID: 400,
    ErrorCode.REQUEST_INVALID: 400,
    ErrorCode.DOCUMENT_ID_IN_USE: 400,
    ErrorCode.ENDPOINT_UNKNOWN: 400,
    ErrorCode.IMAGE_NOT_FINISHED: 409,
    ErrorCode.QUOTA_EXCEEDED: 429,  # the token's cap, by a direct request (direct_calls.py)
    ErrorCode.RESULT_NOT_FOUND: 404,  # another caller's image
}


class ApiError(Exception):
    """A route's refusal: the HTTP ``status`` and the ``failure`` its body says (``refusal``)."""

    def __init__(self, status: int, code: ErrorCode, message: str, setting: str | None = None):
        super().__init__(message)
        self.status = status
        self.failure = Failure(code, message, setting)


def refusal(status: int, failure: Failure, headers: dict[str, str] | None = None):
    """The JSON answer of a refused request: ``{"code", "setting", "detail"}`` with ``status``."""
    from starlette.responses import JSONResponse

    return JSONResponse(failure.body(), status_code=status, headers=headers)


def open_path(path: str) -> bool:
    """Routes anyone may call: the health check and the page's static files (not its gallery data)."""
    return path == "/" or path == "/ui" or (path.startswith("/ui/") and not path.startswith("/ui/outputs"))


def decode_data_uri(name: str, value: Any, example: str = "data:image/png;base64,...") -> bytes | None:
    """A file sent as JSON in setting ``name``: a ``data:`` URI of its bytes (base64), or None.
    Paths and URLs are refused: the server never opens them. Raises ``SettingsError``."""
    if value in (None, ""):
        return None
    if not isinstance(value, str) or not value.startswith("data:") or ";base64," not in value.split(",", 1)[0] + ",":
        shown = value if not isinstance(value, str) else value[:80]
        raise SettingsError(
            name,
            f"send the file itself as a data URI ({example}): the server does not open paths or URLs, got {shown!r}",
        )
    try:
        return base64.b64decode(value.split(",", 1)[1], validate=True)
    except (binascii.Error, ValueError):
        raise SettingsError(name, "the data URI's base64 cannot be decoded") from None


def decode_init_image(value: Any) -> bytes | None:
    """An ``init_image`` sent as JSON: a ``data:`` URI of the image's bytes, checked to be a picture,
    or None. Raises ``SettingsError``."""
    data = decode_data_uri("init_image", value)
    if data is not None:
        _check_image(data)
    return data


def decode_video(value: Any) -> bytes | None:
    """A ``video_init_path`` sent as JSON: a ``data:`` URI of the video file's bytes, checked to be a
    video PyAV can read (disco.video.video_info), or None. Raises ``SettingsError``."""
    data = decode_data_uri("video_init_path", value, "data:video/mp4;base64,...")
    if data is not None:
        from disco.video import video_info

        video_info(data)  # a SettingsError naming video_init_path when it is not a readable video
    return data


def _check_image(data: bytes) -> None:
    """The bytes are a picture Pillow can read (its header; the sampler decodes it in full)."""
    from PIL import Image as PILImage

    try:
        with PILImage.open(io.BytesIO(data)) as picture:
            width, height = picture.size
    except PILImage.UnidentifiedImageError:
        raise SettingsError("init_image", "the file is not a picture Pillow can read (PNG, JPEG, WebP, ...)") from None
    except Exception as exc:
        raise SettingsError("init_image", f"cannot read the image: {exc}") from None
    if width * height > 2**27:  # as disco.images.MAX_INIT_PIXELS: a decompression bomb
        raise SettingsError("init_image", f"the image claims {width}x{height} pixels, too many pixels to decode")


def settings_from_json(body: Any, limits: Limits) -> tuple[Any, bytes | None, bytes | None]:
    """A job's settings, init image bytes and video bytes from a JSON body (the names of the tags;
    files as data URIs). Raises ``SettingsError`` naming the bad setting. Everything is checked but
    CLIP's 77-token limit of a prompt, which needs the tokenizer (open_clip and torch, too heavy for
    the gateway): the Flow's encoder checks it, and a job whose prompt it refuses fails with its
    message."""
    if not isinstance(body, dict):
        raise SettingsError("settings", f"the body must be a JSON object of settings, got {type(body).__name__}")
    values = wire.restore_numbers(body)
    wire.check_image_prompt_sources(values.get("image_prompts"))  # data URIs only, as the Flow takes them
    init = decode_init_image(values.pop("init_image", None))
    video = decode_video(values.pop("video_init_path", None))
    if values.get("output_dir", default("output_dir")) != default("output_dir"):
        raise SettingsError(
            "output_dir", "the service keeps results in its result store: download them from the job's URLs"
        )
    if values.get("resume_run"):
        raise SettingsError(
            "resume_run", "the job API starts animations afresh: resume one from its files with client.py"
        )
    settings = validate_settings(values, limits=limits, tokens=False)
    check_gobig_start(settings, init is not None)
    if settings.animation_mode == "Video Input":
        if video is None:
            raise SettingsError("video_init_path", "Video Input needs a video: send the file as a data URI")
        if init is not None:
            raise SettingsError("init_image", "Video Input starts every frame from the video: leave init_image out")
    elif video is not None:
        raise SettingsError(
            "video_init_path",
            f"a video is used only with animation_mode 'Video Input', not {settings.animation_mode!r}",
        )
    return settings, init, video


def picture_links(store: ResultStore, doc_id: str, base: str) -> dict[str, list[dict[str, Any]]]:
    """The eye views and intermediate saves kept of an image (``ResultStore.pictures``) with their
    URLs under ``base``: ``eye_views``, one entry per frame (``frame``, ``l``, ``r``: URLs or null),
    and ``partials`` (``frame``, null for a still image; ``end``: ``NN%`` or ``jjj``; ``url``)."""
    eyes: dict[int, dict[str, Any]] = {}
    partials = []
    for name, tags in store.pictures(doc_id):
        url = f"{base}/{quote(name)}"
        if "eye" in tags:
            eyes.setdefault(tags["frame"], {"frame": tags["frame"], "l": None, "r": None})[tags["eye"]] = url
        else:
            partials.append({"frame": tags.get("frame"), "end": tags["partial"], "url": url})
    return {"eye_views": [eyes[n] for n in sorted(eyes)], "partials": partials}


def image_view(queue: JobQueue, job: Job, image: Image) -> dict[str, Any]:
    """One image of a job as the API shows it; an animation's also with the frame being made
    (``frame``, from 0), ``frames``, ``frames_done``, its finished frames (``frame_pngs``) and, once
    it ended with some frame, its ``mp4``; of a batch (``batch_size`` above 1) the batch's further
    images (``batch_links``)."""
    base = f"/jobs/{job.id}/images/{image.index}"
    ended = image.finished_status
    finished_frames = [n for n, _ in queue.store.animation_frames(image.doc_id)]
    has_frames = bool(finished_frames or queue.store.frames(image.doc_id))
    animated = job.settings.get("animation_mode", "None") != "None"
    return {
        "index": image.index,
        "seed": image.seed,
        "status": image.status,
        "step": image.step,
        "total": image.total,
        "eta_s": queue.eta_s(image),
        "error": public_message(image.error),
        "error_code": image.error_code,
        "error_setting": image.error_setting,
        "latest_frame": f"{base}/latest.png" if image.doc_id in queue.latest or has_frames else None,
        "png": f"{base}/final.png" if image.status == JobStatus.DONE else None,
        "gif": f"{base}/frames.gif" if ended and has_frames else None,
        "sprite": f"{base}/sprite.png" if ended and has_frames else None,
        "frame": image.frame if animated else None,
        "frames": (image.frames or job.settings.get("max_frames")) if animated else None,
        "frames_done": len(finished_frames) if animated else None,
        "frame_pngs": [f"{base}/{animation_frame_name(n)}" for n in finished_frames],
        "mp4": f"{base}/video.mp4" if animated and ended and finished_frames else None,
        **picture_links(queue.store, image.doc_id, base),
        **batch_links(queue.store, image.doc_id, int(job.settings.get("batch_size") or 1)),
    }


def batch_links(store: ResultStore, doc_id: str, batch_size: int) -> dict[str, list[dict[str, Any]]]:
    """With ``batch_size`` above 1, ``batch``: the batch's further images, made in the same sampler call as
    image ``doc_id`` and kept in the result store under their own ids (``wire.batch_image_id``), each
    with its ``position`` in the batch, ``id``, ``status`` (None while not recorded), ``result`` (its
    record, ``GET /results/{id}``) and ``png`` (its final image, once done). Nothing at batch_size 1."""
    if batch_size <= 1:
        return {}
    batch = []
    for k, other in enumerate(wire.batch_image_ids(doc_id, batch_size)[1:], start=1):
        status = (store.read(other) or {}).get("status")
        png = f"/results/{other}/{FINAL}" if status == JobStatus.DONE else None
        batch.append({"position": k, "id": other, "status": status, "result": f"/results/{other}", "png": png})
    return {"batch": batch}


def job_view(queue: JobQueue, job: Job) -> dict[str, Any]:
    """A job as the API shows it."""
    settings = {k: v for k, v in job.settings.items() if k not in ("init_image", "output_dir")}
    return {
        "id": job.id,
        "status": job.status,
        "position": queue.position(job),
        "created": job.created,
        "settings": settings,
        "init_image": job.has_init_image,
        "video": job.has_video,
        "images": [image_view(queue, job, image) for image in job.images],
    }


def _file_name(job: Job, image: Image, name: str, position: int | None = None) -> str:
    """A download's name, as client.py names its files: reverse_diffusion-{batch_name}-{seed}_{i}...
    (of a batch's image at ``position``, ``..._{i}_{position}...``); an eye view's or an intermediate
    save's as ``picture_name`` names it in ``output_dir`` (a save's with its ``partials/`` folder)."""
    parts = ("reverse_diffusion", str(job.settings.get("batch_name") or ""), str(job.settings["seed"]))
    prefix = "-".join(p for p in parts if p)
    stem = image_stem(prefix, image.index, position)
    if (tags := picture_tags(name)) is not None:  # an animation's pictures are named by the run, as its frames
        return picture_name(prefix if "frame" in tags else stem, tags)
    ending = {"final.png": ".png", "latest.png": "-latest.png", "frames.gif": ".gif", "sprite.png": "-sprite.png"}
    if name == "video.mp4":
        return f"{prefix}.mp4"  # as client.py names an animation's files
    if frame := _ANIMATION_FRAME.fullmatch(name):
        return f"{prefix}-frame{frame[1]}.png"
    return f"{stem}{ending[name]}"


def mount(
    app,
    queue: JobQueue,
    tokens: Tokens,
    limits: Limits,
    max_body_bytes: int = http_guard.DEFAULT_MAX_BODY_BYTES,
    check_job: Callable[[Any, bool], None] | None = None,
) -> None:
    """Add the job API, the results by Document id, the token check and /post's HTTP statuses to
    ``app``, and around all of its routes the guards of http_guard.py (bodies of at most
    ``max_body_bytes``, the security headers). ``check_job(settings, confirmed, video)``: what ``POST
    /jobs`` asks of a job before it is queued (``confirmed``: sent with ``?confirm=1``); it raises
    ``LongJob`` to refuse it (server/estimates.py)."""
    from fastapi.responses import JSONResponse, Response

    store: ResultStore = queue.store

    async def answer_refusal(request: Request, exc: ApiError):
        return refusal(exc.status, exc.failure)

    app.add_exception_handler(ApiError, answer_refusal)

    def owner(request: Request) -> str:
        return request.state.owner

    def bad(exc: Exception, status: int = 400) -> JSONResponse:
        return refusal(status, wire.failure_of(exc, named=False))

    def find(request: Request, job_id: str) -> Job:
        job = queue.get(owner(request), job_id)
        if job is None:
            raise ApiError(404, ErrorCode.JOB_NOT_FOUND, f"no job {job_id!r} for this caller")
        return job

    @app.post("/jobs", status_code=202, tags=["jobs"], openapi_extra=SETTINGS_BODY)
    async def submit(request: Request):
        """Queue a job; answers at once with its id, status and place in line."""
        try:  # off the event loop: a large body takes a while to read and check
            body = await off_loop(parse_json, await request.body())
            settings, init, video = await off_loop(settings_from_json, body, limits)
            if check_job is not None:
                confirmed = request.query_params.get("confirm", "").lower() in ("1", "true", "yes")
                await off_loop(check_job, settings, confirmed, video)  # a video's length is read from it
            job = queue.submit(owner(request), settings, init, video)
        except SettingsError as exc:
            return bad(exc)
        except LongJob as exc:  # the estimate and the limit; sent again with ?confirm=1, it is queued
            return bad(exc, 409)
        except TookTooLong as exc:
            return bad(exc, 413)
        except TooManyJobs as exc:
            return bad(exc, 429)
        except QuotaExceeded as exc:  # the limit, the numbers and when it resets; Retry-After says when
            return refusal(exc.status, exc.failure, exc.headers)
        return JSONResponse(job_view(queue, job), status_code=202, headers={"Location": f"/jobs/{job.id}"})

    @app.get("/jobs", tags=["jobs"])
    async def list_jobs(request: Request, limit: int = 50, before: float | None = None):
        """The caller's jobs, newest first: the ``limit`` newest (default 50, at most 500) created
        before ``before``; ``next_before`` asks for the page after (null: no more)."""
        limit = max(1, min(limit, 500))
        jobs = queue.jobs_of(owner(request), before=before, limit=limit)
        return {
            "jobs": [job_view(queue, job) for job in jobs],
            "next_before": jobs[-1].created if len(jobs) == limit else None,
        }

    @app.get("/jobs/{job_id}", tags=["jobs"])
    async def show(job_id: str, request: Request):
        """One job: its status, place in line, settings, and per image its progress and file URLs."""
        return job_view(queue, find(request, job_id))

    @app.delete("/jobs/{job_id}", tags=["jobs"])
    async def cancel(job_id: str, request: Request):
        """Cancel: queued images at once, running ones at their next step (their frames are kept).
        A finished job is deleted, with its files."""
        job = find(request, job_id)
        if job.finished:
            from disco_service.server.gallery import delete_job

            delete_job(queue, job)
            return {"id": job_id, "deleted": True}
        return job_view(queue, await queue.cancel(owner(request), job_id))

    @app.get("/jobs/{job_id}/images/{index}/{name}", tags=["jobs"])
    async def image_file(job_id: str, index: int, name: str, request: Request):
        """A file of a job's image: final.png, latest.png, frames.gif, sprite.png, video.mp4, frameNNNN.png,
        a VR frame's eye views frameNNNN_l.png and frameNNNN_r.png."""
        job = find(request, job_id)
        known = name in IMAGE_FILES or _ANIMATION_FRAME.fullmatch(name) or picture_tags(name) is not None
        if not 0 <= index < len(job.images) or not known:
            files = ", ".join(IMAGE_FILES)
            raise ApiError(
                404,
                ErrorCode.FILE_NOT_FOUND,
                f"job {job_id!r} has images 0 to {len(job.images) - 1}, each with {files} (an animation's also "
                "frame0000.png ..., eye views frame0000_l.png ..., intermediate saves partials/50%.png ...)",
            )
        image = job.images[index]
        download = _file_name(job, image, name).rsplit("/", 1)[-1]
        headers = {"Content-Disposition": content_disposition(download)}
        if name == "latest.png":
            png = queue.latest_frame(image)
            if png is None:
                raise ApiError(
                    404, ErrorCode.FILE_NOT_FOUND, f"image {index} of job {job_id!r} has no frame yet ({image.status})"
                )
            return Response(png, media_type="image/png", headers=headers)
        if name == "final.png" and image.status != JobStatus.DONE:
            state = "is not finished yet" if not image.finished_status else f"ended as {image.status}"
            at = f" at step {image.step} of {image.total}" if image.step is not None else ""
            message = f"image {index} of job {job_id!r} {state}{at}: it has no final image"
            raise ApiError(409, ErrorCode.IMAGE_NOT_FINISHED, message)
        if frame := _ANIMATION_FRAME.fullmatch(name):  # a finished frame: there as soon as it is made
            path = store.file(image.doc_id, animation_frame_name(int(frame[1])))
        elif picture_tags(name) is not None:  # an eye view or an intermediate save: there as soon as made
            path = store.file(image.doc_id, name)
        else:
            path = store.file(image.doc_id, IMAGE_FILES[name]) if image.finished_status else None
        if path is None:
            message = f"image {index} of job {job_id!r} has no {name} ({image.status})"
            raise ApiError(404, ErrorCode.FILE_NOT_FOUND, message)
        return Response(path.read_bytes(), media_type=MEDIA[path.suffix], headers=headers)

    @app.get("/jobs/{job_id}/images/{index}/partials/{name}", tags=["jobs"])
    async def image_partial(job_id: str, index: int, name: str, request: Request):
        """A step ``intermediate_saves`` kept: partials/50%.png (``%`` sent as ``%25``), partials/020.png, an
        animation's partials/frame0000-50%.png ..."""
        return await image_file(job_id, index, f"partials/{name}", request)

    def result_id(request: Request, doc_id: str) -> str:
        """The id, if it names a result this caller may see: one it sent (over the job API, gRPC or
        /post), or, in a service without tokens, one of nobody's (made before owners were kept)."""
        try:
            store.entry(doc_id)
        except ValueError:
            raise ApiError(404, ErrorCode.RESULT_NOT_FOUND, f"no result {doc_id!r}: not a Document id") from None
        holder = queue.owner_of_image(doc_id) or store.owner(doc_id)
        if holder != owner(request) and not (holder is None and tokens.open):
            raise ApiError(404, ErrorCode.RESULT_NOT_FOUND, f"no result {doc_id!r} for this caller")
        return doc_id

    @app.get("/results/{doc_id}", tags=["results"])
    async def result(doc_id: str, request: Request):
        """An image's record by the id of the Document sent to /generate; while it runs, its progress
        (asking also keeps it from being stopped as abandoned)."""
        result_id(request, doc_id)
        record = store.read(doc_id)
        if record is None:
            try:
                state = wire.restore_numbers((await queue.flow.progress([doc_id]))[0].tags)
            except Exception:
                state = {}
            if state.get("status") != JobStatus.RUNNING:
                message = f"no result {doc_id!r}: unknown, not started, or older than the store keeps"
                raise ApiError(404, ErrorCode.RESULT_NOT_FOUND, message)
            keep = ("status", "step", "total", "started", "frame_step")
            return {"id": doc_id, **{k: state.get(k) for k in keep}, "files": {}}
        base = f"/results/{doc_id}"
        steps = [f["step"] if isinstance(f, dict) else f for f in record.get("frames", [])]
        files = {"frames": [f"{base}/step{s:04d}.png" for s in steps]}
        if record.get("status") == JobStatus.DONE:
            files["final"] = f"{base}/{FINAL}"
        finished = [n for n, _ in store.animation_frames(doc_id)]
        if steps or finished:
            files.update(gif=f"{base}/{GIF}", sprite=f"{base}/{SPRITE}")
        if finished:
            files.update(frame_pngs=[f"{base}/{animation_frame_name(n)}" for n in finished], mp4=f"{base}/{MP4}")
        files.update(picture_links(store, doc_id, base))
        return {**record, "error": public_message(record.get("error")), "files": files}

    @app.get("/results/{doc_id}/{name}", tags=["results"])
    async def result_file(doc_id: str, name: str, request: Request):
        """A file of an image in the result store by its Document id (final.png, frames.gif, stepNNNN.png...)."""
        result_id(request, doc_id)
        path = store.file(doc_id, name)
        if path is None:
            raise ApiError(404, ErrorCode.FILE_NOT_FOUND, f"result {doc_id!r} has no file {name!r}")
        return Response(path.read_bytes(), media_type=MEDIA[path.suffix])

    @app.get("/results/{doc_id}/partials/{name}", tags=["results"])
    async def result_partial(doc_id: str, name: str, request: Request):
        """A step ``intermediate_saves`` kept of an image in the result store (partials/50%.png ...)."""
        return await result_file(doc_id, f"partials/{name}", request)

    @app.get("/runs/{batch_name}", tags=["results"])
    async def run(batch_name: str, request: Request):
        """A run's DocumentArray by its batch_name, as the caller got it (one Document per image: the final
        image in `uri`, the frames as `chunks`, the settings in `tags`), in docarray's JSON
        (`DocumentArray.from_json`): the latest run of that name this caller made."""
        me = owner(request)

        def may_see(doc_id: str) -> bool:
            holder = queue.owner_of_image(doc_id) or store.owner(doc_id)
            return holder == me or (holder is None and tokens.open)

        texts = [t for doc_id in store.run_documents(batch_name, may_see) if (t := store.document(doc_id))]
        if not texts:  # another caller's run is not told apart from no run: names do not leak
            raise ApiError(404, ErrorCode.RESULT_NOT_FOUND, f"no run named {batch_name!r} for this caller")
        return Response("[" + ",".join(texts) + "]", media_type="application/json")

    app.add_middleware(ServiceMiddleware, tokens=tokens)
    app.add_middleware(http_guard.guard, max_body_bytes=max_body_bytes)  # outermost: every answer has its headers


def post_failure(body: bytes) -> Failure | None:
    """The error a Jina ``/post`` answer carries in ``header.status``, or None."""
    try:
        status = (json.loads(body).get("header") or {}).get("status") or {}
    except (ValueError, AttributeError):
        return None
    if status.get("code") not in (1, "ERROR"):  # jina's StatusProto.ERROR
        return None
    exception = status.get("exception") or {}
    return wire.failure_of_exception(exception.get("name", ""), exception.get("args") or [])


def post_status(body: bytes) -> int:
    """The HTTP status of a Jina ``/post`` answer: 200, or for an error in ``header.status`` the status
    of its code (``STATUS_OF``: 400 the request was refused, 409 an image did not finish), else 500."""
    failure = post_failure(body)
    return 200 if failure is None else STATUS_OF.get(failure.code, 500)


def coded_post_answer(body: bytes) -> bytes:
    """A Jina ``/post`` answer with, for an error, its ``code`` and ``setting`` beside Jina's fields."""
    failure = post_failure(body)
    if failure is None:
        return body
    return json.dumps({**json.loads(body), "code": failure.code.value, "setting": failure.setting}).encode()


def without_internals(body: bytes) -> bytes:
    """A Jina ``/post`` answer without the server's internals: an error's tracebacks (``stacks``) and
    server paths in its message are left out (public_errors.py), logged in full."""
    if b'"exception"' not in body:  # a success: not parsed again
        return body
    try:
        answer = json.loads(body)
        exception = answer["header"]["status"]["exception"]
    except (ValueError, TypeError, KeyError, RecursionError):
        return body
    if not isinstance(exception, dict):
        return body
    stacks = exception.pop("stacks", None)
    if stacks:
        from disco_service.server.public_errors import LOG

        LOG.warning("a /post request failed; its traceback, not shown to the caller:\n%s", "".join(map(str, stacks)))
    if isinstance(exception.get("args"), list):
        exception["args"] = [public_message(str(arg), log=True) for arg in exception["args"]]
    return json.dumps(answer).encode()


class ServiceMiddleware:
    """An ASGI middleware (plain, so requests reach the app in the order they came): the token check
    of every route but the open ones (``request.state.owner``), and an HTTP error status for Jina's
    ``/post`` answers that carry an error."""

    def __init__(self, app, tokens: Tokens):
        self.app = app
        self.tokens = tokens

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        state = scope.setdefault("state", {})
        if open_path(scope["path"]):
            state["owner"] = None
        else:
            headers = dict(scope.get("headers") or [])
            authorization = headers.get(b"authorization", b"").decode("latin-1") or None
            try:
                state["owner"] = self.tokens.owner(authorization)
            except Unauthorized as exc:
                answer = refusal(401, wire.failure_of(exc, named=False), {"WWW-Authenticate": "Bearer"})
                return await answer(scope, receive, send)
        if scope["path"] != "/post":
            return await self.app(scope, receive, send)
        start: dict = {}
        body: list[bytes] = []

        async def answer(message) -> None:
            """Hold /post's answer until its body is complete, then send it with its status."""
            if message["type"] == "http.response.start":
                start.update(message)
                return
            if message["type"] != "http.response.body":
                return await send(message)
            body.append(message.get("body", b""))
            if message.get("more_body"):
                return
            data = without_internals(b"".join(body))
            status = post_status(data) if start["status"] == 200 else start["status"]
            data = coded_post_answer(data)
            headers = [(k, v) for k, v in start["headers"] if k.lower() != b"content-length"]
            headers.append((b"content-length", str(len(data)).encode()))
            await send({"type": "http.response.start", "status": status, "headers": headers})
            await send({"type": "http.response.body", "body": data})

        await self.app(scope, receive, answer)
