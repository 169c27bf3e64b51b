"""The wire protocol: what a Document carries between the client and the Flow's executors.

A request is one Document per image, or one per animation. ``doc.tags`` holds the settings
(their names as in ``disco.settings.Settings``) and the request's bookkeeping (``REQUEST_TAGS``).
``doc.blob`` carries the picture the job starts from, as bytes (the server never opens a path or
URL): the init image; for an animation resumed at ``start_frame`` > 0 in 2D, the PNG of frame
``start_frame - 1``; for ``Video Input``, the video file, and when a flow-warped one
(``video_init_flow_warp``) is resumed, ``doc.uri`` carries frame ``start_frame - 1``'s PNG, as read
back from ``output_dir``, as a ``data:`` URI (``resumed_frame``). On the way back, tags carry the job's
``status`` (a ``JobStatus``), ``steps_done``, ``error`` and the like, and chunks carry the frames
with ``step`` and ``cur_t`` (an animation's chunks: its finished frames, with ``frame`` and
``seed``; its tags: ``frames_done`` and the MP4's rate, ``mp4_fps``).

Between the encoder and the sampler, ``doc.embedding`` carries the prompts embedded by every model
of ``clip_models``, side by side: an array ``(n_prompts, d_1 + d_2 + ...)``, model by model in the
setting's order (each block normalised; ``d`` is the model's width: 1024 for RN50, 512 for ViT-B/32),
with their widths in ``tags['clip_embedding_widths']`` and the prompts' weights in
``tags['prompt_weights']``. With RN50 alone this is the ``(n_prompts, 1024)`` array it has always
been, and a Document without the widths tag is read that way (``pack_embeddings`` /
``unpack_embeddings``). One array keeps the Document small (binary, not a Struct of floats) and leaves
``doc.chunks`` to the frames.

gRPC's Struct carries every number as a float, and Jina's HTTP gateway reads a tag's 1 or 0 as
true or false (docarray's tag type tries bool first): ``restore_numbers`` gives each value back
the type of its ``Settings`` field, once, wherever tags are read.

Errors cross processes as codes (``ErrorCode``), never as wording to search: a failed image's
tags carry ``error`` (a message for people), ``error_code`` and, when one setting is to blame,
``error_setting``; HTTP bodies carry ``code``, ``setting`` and the message; gRPC carries the code in
its trailing metadata (``ERROR_CODE_METADATA``) or, for an executor's exception, in the exception's
class name that Jina reports (``EXCEPTION_CODES``). ``Failure`` is one such error.

Validation happens at the two trust boundaries: the client API and the Flow's first executor
(``settings_from_request``). Later hops decode without checking again (``settings_from_tags``).
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import numpy as np

from disco.animation_plan import flow_model_needed
from disco.prompts import data_uri_bytes, parse_image_prompt
from disco.settings import (
    DEFAULT_LIMITS,
    SETTING_NAMES,
    Limits,
    Settings,
    SettingsError,
    check_gobig_start,
    kind,
    validate_settings,
)

__all__ = [
    "resumed_frame",
    "BATCH_OF_TAG",
    "BATCH_POSITION_TAG",
    "batch_documents",
    "batch_image_id",
    "batch_image_ids",
    "ACCEPT_UNFINISHED",
    "KEEP_ALIVE",
    "cast_tags",
    "ERROR_CODE_METADATA",
    "ERROR_TAGS",
    "ErrorCode",
    "EXCEPTION_CODES",
    "Failure",
    "failure_of",
    "failure_of_exception",
    "failure_of_tags",
    "RESTARTING",
    "setting_of",
    "check_image_prompt_sources",
    "check_request_media",
    "check_run_seed",
    "ENDPOINTS",
    "INT_TAGS",
    "JOB_STATE_EXECUTOR",
    "JobStatus",
    "MAX_SEED",
    "new_run_seed",
    "NOT_FINISHED",
    "pack_embeddings",
    "REQUEST_TAGS",
    "request_tags",
    "request_tags_animation",
    "restore_numbers",
    "settings_from_request",
    "settings_from_tags",
    "settings_to_tags",
    "STOP_REASONS",
    "unpack_embeddings",
]

# The Flow's executors, as flow.yml names them.
ENCODER, SAMPLER, RENDERER = "encoder", "sampler", "renderer"
JOB_STATE_EXECUTOR = RENDERER  # it answers /progress, /cancel and /forget from the job board

# The Flow's endpoints: any other is refused, naming these.
GENERATE, PROGRESS, CANCEL, FORGET = "/generate", "/progress", "/cancel", "/forget"
ENDPOINTS = (GENERATE, PROGRESS, CANCEL, FORGET)
# A request parameter of ``/generate``: give unfinished images back as Documents with their status
# (and frames so far) instead of an error. client.py sets it; a caller that polled ``/progress`` for
# an image gets it back so too (it watched the job, so it knows). Nobody else mistakes a half-made
# picture for a finished one.
ACCEPT_UNFINISHED = "accept_unfinished"
# ``/progress`` with ``parameters[KEEP_ALIVE] = False`` reads an image's state without telling its
# sampler that its caller still waits (a gateway watching a caller's own request).
KEEP_ALIVE = "keep_alive"
# The Renderer's result (``parameters['__results__']``) naming the images that did not finish and
# were not accepted so: the gateway answers the request with an error of them.
NOT_FINISHED = "not_finished"

# Tags a request may carry besides the settings: the client's bookkeeping for one image of a run.
REQUEST_TAGS = ("batch_index", "run_seed", "client_timeout_s", "start_frame")
# With batch_size above 1 the sampler answers each request's Document with batch_size Documents: the
# one sent (image 0) and one per further image, each tagged with its place in the batch and the id
# of the Document sent (``batch_image_id``).
BATCH_POSITION_TAG = "batch_position"
BATCH_OF_TAG = "batch_of"
# Whole numbers that are not settings: bookkeeping, progress and results.
INT_TAGS = (
    *("seed", "run_seed", "batch_index", BATCH_POSITION_TAG, "steps_done", "step", "total", "cur_t"),
    *("frame_step", "frame_cur_t"),
    *("start_frame", "frame", "frames", "frames_done", "last_finished", "run_step", "run_total"),
)

MAX_SEED = 2**32 - 1
# The encoder's results for the sampler: each model's embedding width, and the prompts' weights.
EMBEDDING_WIDTHS_TAG, PROMPT_WEIGHTS_TAG = "clip_embedding_widths", "prompt_weights"


class JobStatus(StrEnum):
    """Where a job is. Tags, the job board, the result store and the job API hold its ``value``."""

    QUEUED = "queued"  # in the service's job queue (POST /jobs), not sent to the Flow yet
    WAITING = "waiting"  # sent, no sampler has it yet
    RUNNING = "running"
    DONE = "done"
    CANCELLED = "cancelled"  # its caller asked it to stop
    ABANDONED = "abandoned"  # its caller stopped polling
    SHUTDOWN = "shutdown"  # the Flow was stopped
    FAILED = "failed"  # an error (NaN, an exception, the sampler died): see the error tag

    @property
    def finished(self) -> bool:
        return self not in (JobStatus.QUEUED, JobStatus.WAITING, JobStatus.RUNNING)


STOP_REASONS = (JobStatus.CANCELLED, JobStatus.SHUTDOWN, JobStatus.ABANDONED)


class ErrorCode(StrEnum):
    """Why a request was refused or an image failed: stable names that callers switch on (the
    messages beside them are for people and may be reworded)."""

    SETTING_INVALID = "setting_invalid"  # a setting's value is not allowed (``setting`` names it)
    REQUEST_INVALID = "request_invalid"  # the request is malformed otherwise (not one setting's fault)
    DOCUMENT_ID_IN_USE = "document_id_in_use"  # a Document id the service still keeps an image under
    ENDPOINT_UNKNOWN = "endpoint_unknown"  # an endpoint the Flow does not serve
    TOKEN_REQUIRED = "token_required"  # the service needs a token and none was sent
    TOKEN_MALFORMED = "token_malformed"  # the authorization is not ``Bearer TOKEN``
    TOKEN_REJECTED = "token_rejected"  # a token the service does not know
    GATEWAY_ONLY = "gateway_only"  # a call straight to an executor, without the Flow's secret
    QUOTA_EXCEEDED = "quota_exceeded"  # a quota refuses the job (jobs at once, images a day, a full queue...)
    CONFIRM_REQUIRED = "confirm_required"  # a job estimated to run longer than the server asks about: send ?confirm=1
    ADMIN_REQUIRED = "admin_required"  # an operator's route, and the token is not one of DISCO_ADMIN_TOKENS
    JOB_NOT_FOUND = "job_not_found"  # no such job for this caller
    RESULT_NOT_FOUND = "result_not_found"  # no such result (Document id) for this caller
    FILE_NOT_FOUND = "file_not_found"  # the job or result has no such file (yet)
    MODULE_NOT_FOUND = "module_not_found"  # PaddleHub's route names a module this server does not serve
    MODEL_UNAVAILABLE = "model_unavailable"  # a model file (or the package it needs) the server cannot get
    IMAGE_NOT_FINISHED = "image_not_finished"  # it stopped (or has not ended) before its last step
    FLOW_UNREACHABLE = "flow_unreachable"  # nothing answers at the Flow's address
    EXECUTOR_RESTARTING = "executor_restarting"  # the gateway answers, one of its executors does not (yet)
    SAMPLING_FAILED = "sampling_failed"  # a fault while sampling (NaN, an exception): the frames so far are kept
    SAMPLER_DIED = "sampler_died"  # the sampler's process died during the job
    CONNECTION_LOST = "connection_lost"  # the call to the Flow broke while the image was being made
    INTERNAL = "internal"  # anything else: the server's log says more


# Codes of a Flow that is (re)starting: a request that never reached a sampler may be sent again.
RESTARTING = (ErrorCode.FLOW_UNREACHABLE, ErrorCode.EXECUTOR_RESTARTING)
# The trailing gRPC metadata key of the code of a refusal the gateway makes itself (a missing token).
ERROR_CODE_METADATA = "disco-error-code"
# The tags of a failed image: the message, its code and the setting concerned.
ERROR_TAGS = ("error", "error_code", "error_setting")
# The codes of the service's exceptions that cross a process: Jina reports an executor's exception
# by its class name and arguments, so the name is what arrives.
EXCEPTION_CODES = {
    "SettingsError": ErrorCode.SETTING_INVALID,
    "ValueError": ErrorCode.REQUEST_INVALID,
    "DocumentIdInUse": ErrorCode.DOCUMENT_ID_IN_USE,
    "UnknownEndpoint": ErrorCode.ENDPOINT_UNKNOWN,
    "ImageNotFinished": ErrorCode.IMAGE_NOT_FINISHED,
    "SamplingFailed": ErrorCode.SAMPLING_FAILED,
    "WeightsUnavailable": ErrorCode.MODEL_UNAVAILABLE,
    "MissingPackage": ErrorCode.MODEL_UNAVAILABLE,
    "TooManyJobs": ErrorCode.QUOTA_EXCEEDED,
    "QuotaExceeded": ErrorCode.QUOTA_EXCEEDED,
    "TookTooLong": ErrorCode.REQUEST_INVALID,
    "NotYourImage": ErrorCode.RESULT_NOT_FOUND,
}


@dataclass(frozen=True)
class Failure:
    """One refusal or failure as it crosses a process: ``code``, the human ``message`` and the
    ``setting`` concerned (or None); ``executor``: the Flow's executor it is about, when one is."""

    code: ErrorCode
    message: str
    setting: str | None = None
    executor: str | None = None

    def tags(self) -> dict[str, Any]:
        """As a failed Document's tags (``ERROR_TAGS``)."""
        return {"error": self.message, "error_code": self.code.value, "error_setting": self.setting}

    def body(self, message_key: str = "detail") -> dict[str, Any]:
        """As an HTTP body: ``code``, ``setting`` and the message under ``message_key``."""
        return {"code": self.code.value, "setting": self.setting, message_key: self.message}


def setting_of(message: str) -> str | None:
    """The setting a ``SettingsError``'s message names (it starts ``name: ...``), or None. The one
    place that reads it from text: another process receives the exception's message only."""
    name, colon, _ = str(message).partition(":")
    return name if colon and name.isidentifier() else None


def failure_of_exception(name: str, args: list[str] | tuple[str, ...]) -> Failure:
    """An exception another process raised, as Jina reports it (class ``name``, ``args`` as text):
    its code by ``EXCEPTION_CODES`` (``internal`` for others) and the message ``Name: first arg``."""
    first = str(args[0]) if args else ""
    code = EXCEPTION_CODES.get(name, ErrorCode.INTERNAL)
    setting = setting_of(first) if code == ErrorCode.SETTING_INVALID else None
    return Failure(code, f"{name}: {first}" if first else name, setting)


def failure_of(exc: BaseException, named: bool = True) -> Failure:
    """An exception raised in this process: a ``SettingsError`` names its setting; an exception with
    a ``code`` attribute (an ``ErrorCode``) keeps it; others are coded by their class name. The
    message is ``Name: text`` as another process would see it, or the text alone (``named`` False)."""
    code = getattr(exc, "code", None)
    message = f"{type(exc).__name__}: {exc}" if named else str(exc)
    if isinstance(code, ErrorCode):
        return Failure(code, message)
    if isinstance(exc, SettingsError):
        return Failure(ErrorCode.SETTING_INVALID, message, exc.parameter)
    return Failure(EXCEPTION_CODES.get(type(exc).__name__, ErrorCode.INTERNAL), message)


def failure_of_tags(tags: Mapping[str, Any]) -> Failure | None:
    """The failure a Document's (or a job board state's) tags carry, or None. Tags from before codes
    were sent, with an ``error`` only, read as ``internal``."""
    if not tags.get("error"):
        return None
    try:
        code = ErrorCode(tags.get("error_code") or ErrorCode.INTERNAL)
    except ValueError:
        code = ErrorCode.INTERNAL
    return Failure(code, str(tags["error"]), tags.get("error_setting") or None)


def new_run_seed(n_batches: int = 1) -> int:
    """A random seed for a run whose images use ``seed + i`` (``i < n_batches``): all stay below 2**32."""
    return random.randint(0, MAX_SEED - (n_batches - 1))


def check_run_seed(seed: int, n_batches: int) -> None:
    """Image ``i`` of a run uses ``seed + i``; the last must still be a valid seed."""
    if seed + n_batches - 1 > MAX_SEED:
        raise SettingsError(
            "seed", f"seed + n_batches - 1 must stay below 2**32, got seed {seed} with n_batches {n_batches}"
        )


def settings_to_tags(settings: Settings) -> dict[str, Any]:
    """Settings as Document tags (JSON types: frame numbers of a prompt schedule as text); the init
    image and a video travel separately, as bytes (a video's path stays, for the record)."""
    tags = settings.to_dict()
    tags["init_image"] = None
    if not isinstance(tags["video_init_path"], str):
        tags["video_init_path"] = None
    if isinstance(tags["text_prompts"], Mapping):
        tags["text_prompts"] = {str(frame): prompts for frame, prompts in tags["text_prompts"].items()}
    return tags


def request_tags_animation(settings: Settings, start_frame: int, client_timeout_s: float | None = None):
    """The tags of an animation's one request: the settings, its seed and the frame it starts at."""
    tags = request_tags(settings, 0, client_timeout_s)
    tags["start_frame"] = start_frame
    return tags


def batch_image_id(doc_id: str, position: int) -> str:
    """The Document id of image ``position`` (1 or more) of the batch sent as Document ``doc_id``:
    ``{doc_id}-{position}`` (ids are file names of the result store, at most 64 characters: a longer
    sent id is cut to make room)."""
    end = f"-{position}"
    return doc_id[: 64 - len(end)] + end


def batch_image_ids(doc_id: str, batch_size: int) -> list[str]:
    """The ids of every image of the batch sent as Document ``doc_id``: ``doc_id`` itself (image 0),
    then ``batch_image_id`` of each further image, in their order in the batch."""
    return [doc_id, *(batch_image_id(doc_id, k) for k in range(1, batch_size))]


def batch_documents(doc: Any, batch_size: int) -> list[Any]:
    """The Documents of one sampler call's images: ``doc`` itself (image 0) and, with ``batch_size``
    above 1, one more per image, with id ``{doc.id}-{k}`` (``batch_image_id``) and ``doc``'s tags
    (the same seed and ``batch_index``) plus ``batch_position`` k and ``batch_of`` (``doc.id``, the
    job the board and the client follow). With batch_size 1 ``doc`` alone, its tags unchanged."""
    if batch_size == 1:
        return [doc]
    from docarray import Document  # the client's and the executors' own: not needed to read the wire's tags

    doc.tags[BATCH_POSITION_TAG] = 0
    ids = batch_image_ids(doc.id, batch_size)
    further = [
        Document(id=ids[k], tags={**doc.tags, BATCH_POSITION_TAG: k, BATCH_OF_TAG: doc.id})
        for k in range(1, batch_size)
    ]
    return [doc, *further]


def request_tags(settings: Settings, batch_index: int, client_timeout_s: float | None = None) -> dict[str, Any]:
    """The tags of image ``batch_index`` of a run: the settings, that image's own seed and the bookkeeping."""
    tags = {**settings_to_tags(settings), "seed": settings.seed + batch_index}
    tags.update(batch_index=batch_index, run_seed=settings.seed)
    if client_timeout_s is not None:
        tags["client_timeout_s"] = client_timeout_s  # this client polls progress, so silence means gone
    return tags


def _whole(value: Any) -> Any:
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def restore_numbers(tags: Mapping[str, Any]) -> dict[str, Any]:
    """``tags`` with every number given its setting's type: whole numbers of ``int``,
    ``int_or_schedule`` and ``steps`` settings and of ``INT_TAGS`` as ``int``; a true/false in a number setting
    (or in a list of numbers) read as the 1/0 it stands for (HTTP). Other values, schedule texts
    among them, are left as they are (the validator judges them), and so are the frame numbers of
    prompts by frame: keys of tags stay text, or the Document could not travel on (protobuf's
    ``Struct`` has text keys only)."""
    out = dict(tags)
    for key, value in tags.items():
        if key in SETTING_NAMES:
            k = kind(key)
            if k in ("int", "int_or_schedule"):
                out[key] = _whole(value)
            elif k in ("float", "number_or_schedule") and isinstance(value, bool):
                out[key] = int(value)
            elif k == "size" and isinstance(value, list | tuple):
                out[key] = [_whole(v) for v in value]
            elif k == "steps":  # intermediate_saves: a count or a list of steps
                out[key] = [_whole(v) for v in value] if isinstance(value, list | tuple) else _whole(value)
            elif k == "numbers" and isinstance(value, list | tuple):
                out[key] = [int(v) if isinstance(v, bool) else v for v in value]
        elif key in INT_TAGS:
            out[key] = _whole(value)
        elif key == "client_timeout_s" and isinstance(value, bool):
            out[key] = int(value)
    return out


def settings_from_request(tags: Mapping[str, Any], limits: Limits = DEFAULT_LIMITS) -> Settings:
    """One Document's settings, validated strictly (the server's trust boundary): an unknown tag (a
    misspelt setting) is refused by name; ``limits`` are this server's caps.

    A Document is one image: without ``n_batches`` it is taken as 1, and ``n_batches`` other than 1
    is refused unless the Document says which image of a run it is (``batch_index`` below
    ``n_batches``, as client.py sends them). The server never opens paths or URLs: an ``init_image``
    in the tags is refused (its bytes go in ``doc.blob``), and so is an ``image_prompts`` entry that is
    not a base64 ``data:`` URI. Raises ``SettingsError`` naming the setting."""
    restored = restore_numbers(tags)
    values = {"n_batches": 1} | {k: v for k, v in restored.items() if k not in REQUEST_TAGS}
    if values.get("init_image") not in (None, ""):
        raise SettingsError(
            "init_image",
            f"the server does not open paths or URLs: send the image's bytes in doc.blob, got {values['init_image']!r}",
        )
    check_image_prompt_sources(values.get("image_prompts"))
    settings = validate_settings(values, limits=limits)
    index = restored.get("batch_index")
    if settings.n_batches != 1 and not (isinstance(index, int) and 0 <= index < settings.n_batches):
        raise SettingsError(
            "n_batches",
            f"a Document is one image: send one Document per image (n_batches 1), got n_batches "
            f"{settings.n_batches}" + (f" with batch_index {index!r}" if index is not None else ""),
        )
    return settings


def check_image_prompt_sources(prompts: Any) -> None:
    """Each of ``image_prompts`` as a server takes it: a base64 ``data:`` URI of the image's bytes,
    optionally with ``:weight`` after it (a list; one alone, or None, also do). Raises
    ``SettingsError`` naming ``image_prompts`` for a path or URL (the server never opens them)."""
    if isinstance(prompts, str | bytes | bytearray):
        prompts = [prompts]
    if not isinstance(prompts, list | tuple):
        return  # not a list: validate_settings names it
    for prompt in prompts:
        source = parse_image_prompt(prompt).source if isinstance(prompt, str) and prompt.strip() else prompt
        if not isinstance(source, str) or data_uri_bytes(source) is None:
            shown = repr(source if not isinstance(source, str) or len(source) <= 60 else source[:57] + "...")
            raise SettingsError(
                "image_prompts",
                f"the server does not open paths or URLs: send each image's bytes as a base64 data: URI, got {shown}",
            )


def check_request_media(
    settings: Settings, blob: bytes | None, start_frame: Any = 0, previous_frame: Any = None
) -> int:
    """The bytes an animation's request must carry (see the module's docstring), its
    ``start_frame`` and, for a flow-warped Video Input run resumed, ``previous_frame`` (``doc.uri``),
    checked at the server's trust boundary; returns ``start_frame``. Raises ``SettingsError`` naming
    the setting the missing part stands for."""
    if isinstance(start_frame, bool) or not isinstance(start_frame, int | float) or start_frame != int(start_frame):
        raise SettingsError("resume_from_frame", f"start_frame must be a frame number, got {start_frame!r}")
    start_frame = int(start_frame)
    check_gobig_start(settings, bool(blob))
    if settings.animation_mode == "None":
        return 0
    if not 0 <= start_frame < settings.max_frames:
        raise SettingsError(
            "resume_from_frame", f"start_frame must be in [0, {settings.max_frames - 1}], got {start_frame}"
        )
    if settings.animation_mode == "Video Input" and not blob:
        raise SettingsError(
            "video_init_path",
            "Video Input needs the video's bytes in the request (clients read the file and send them)",
        )
    if start_frame > 0 and flow_model_needed(settings):
        resumed_frame(settings, start_frame, previous_frame)
    if settings.animation_mode in ("2D", "3D") and start_frame > 0 and not blob:
        mode, previous = settings.animation_mode, start_frame - 1
        raise SettingsError(
            "resume_from_frame", f"a {mode} animation resumed at frame {start_frame} needs frame {previous}'s PNG"
        )
    return start_frame


def resumed_frame(settings: Settings, start_frame: int, uri: Any) -> np.ndarray:
    """Frame ``start_frame - 1`` of a Video Input run with optical flow resumed at ``start_frame``, as
    its request carries it (``doc.uri``: a ``data:`` URI of its PNG, as read back from ``output_dir``),
    decoded to (height, width, 3) uint8; of a run written blended (``video_init_blend_mode`` other than
    ``"None"``) the frame as written, which the resumed run starts from as the notebook does. Raises
    ``SettingsError`` naming ``resume_from_frame`` when the frame is missing, not a PNG or not of the
    run's size."""
    import io

    from PIL import Image, UnidentifiedImageError

    needs = f"a flow-warped Video Input animation resumed at frame {start_frame} needs frame {start_frame - 1}"
    try:
        data = data_uri_bytes(uri) if isinstance(uri, str) else None
    except SettingsError:
        data = None
    if not data:
        raise SettingsError("resume_from_frame", f"{needs}'s PNG as a data URI in the request's uri")
    try:
        with Image.open(io.BytesIO(data)) as picture:
            if picture.format != "PNG" or picture.size != (settings.width, settings.height):
                raise SettingsError(
                    "resume_from_frame",
                    f"{needs} as a {settings.width}x{settings.height} PNG, got a {picture.format} of "
                    f"{picture.size[0]}x{picture.size[1]}",
                )
            return np.asarray(picture.convert("RGB"))
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise SettingsError("resume_from_frame", f"{needs}'s PNG, which cannot be read: {exc}") from None


def settings_from_tags(tags: Mapping[str, Any]) -> Settings:
    """The settings a request carries after the first executor validated them: decoded, not checked
    again (prompts by frame get their frame numbers back as numbers)."""
    restored = restore_numbers(tags)
    if isinstance(restored.get("text_prompts"), Mapping):
        restored["text_prompts"] = {int(float(frame)): texts for frame, texts in restored["text_prompts"].items()}
    return Settings(**{k: restored[k] for k in SETTING_NAMES if k in restored})


def cast_tags(doc: Any) -> None:
    """A returned Document's tags (and its chunks') with their numbers' types restored, in place."""
    for tags in [doc.tags, *(c.tags for c in doc.chunks)]:
        tags.update(restore_numbers(tags))


def pack_embeddings(embeddings: Mapping[str, np.ndarray]) -> tuple[np.ndarray, list[int]]:
    """Each model's prompt embeddings ``(n_prompts, d)``, in ``clip_models`` order, as one float32 array
    ``(n_prompts, sum d)`` for ``doc.embedding`` and the widths for ``tags['clip_embedding_widths']``."""
    blocks = [np.asarray(e, dtype=np.float32) for e in embeddings.values()]
    if not blocks or any(b.ndim != 2 or b.shape[0] != blocks[0].shape[0] for b in blocks):
        raise ValueError(f"embeddings must be (n_prompts, d) arrays, one per model, got {[b.shape for b in blocks]}")
    return np.concatenate(blocks, axis=1), [b.shape[1] for b in blocks]


def unpack_embeddings(embedding: Any, tags: Mapping[str, Any], clip_models: list[str]) -> dict[str, np.ndarray]:
    """``doc.embedding`` split back into each model's ``(n_prompts, d)`` embeddings, by model name.
    Without a widths tag the whole array belongs to the only model (RN50's format). A Document whose
    widths do not fit its ``clip_models`` or its array raises ValueError saying what it holds."""
    array = np.array(embedding, dtype=np.float32)  # a writable copy
    widths = tags.get(EMBEDDING_WIDTHS_TAG)
    if widths is None:
        if len(clip_models) != 1:
            raise ValueError(f"the Document has one prompt embedding for {len(clip_models)} clip_models and no "
                             f"{EMBEDDING_WIDTHS_TAG}: send it through the PromptEncoder")  # fmt: skip
        widths = [array.shape[-1]]
    widths = [_whole(w) for w in widths]
    if (
        array.ndim != 2
        or len(widths) != len(clip_models)
        or not all(isinstance(w, int) and w > 0 for w in widths)
        or sum(widths) != array.shape[1]
    ):
        raise ValueError(
            f"the Document's prompt embedding {array.shape} with {EMBEDDING_WIDTHS_TAG} {widths} does not fit "
            f"clip_models {clip_models}"
        )
    starts = np.cumsum([0, *widths])
    return {
        name: np.ascontiguousarray(array[:, a:b])
        for name, a, b in zip(clip_models, starts[:-1], starts[1:], strict=True)
    }
