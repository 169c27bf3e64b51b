"""``generate_image``: the PaddleHub module's function, as the client runs it.

Its signature is read from the ``Settings`` fields (``SIGNATURE``): the seed API's parameters in
their order with their defaults, then the client's own keywords (``host``, ``progress``,
``verbose``), then the Disco Diffusion extras, keyword-only. One call: validate (the client's
trust boundary), read the init image, check ``output_dir``, fetch missing model files (local
Flow only), start or reach the Flow, run the jobs, save what came back.
"""

from __future__ import annotations

import inspect
import tempfile
import typing
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from disco.animation_plan import plan_run
from disco.models import is_checkpoint_path
from disco.prompts import data_uri, data_uri_bytes, parse_image_prompt
from disco.settings import (
    SEED_API_NAMES,
    SETTING_NAMES,
    Settings,
    SettingsError,
    check_gobig_start,
    check_prompt_tokens,
    default,
    uses_secondary_model,
    validate_settings,
)
from disco_service import config, wire
from disco_service.client.animations import AnimationRun, plan_animation
from disco_service.client.cpu_estimate import cpu_notice
from disco_service.client.local_flow import local_flow
from disco_service.client.runner import run_coroutine, run_jobs
from disco_service.client.user_files import MAX_IMAGE_BYTES, expand_user_paths, read_user_file, user_path
from disco_service.console import ignore_third_party_warnings, say
from disco_service.outputs import check_output_dir, keep_run, save_outputs
from disco_service.transport import classify
from disco_service.wire import JobStatus

__all__ = [
    "CLIENT_KEYWORDS",
    "collect_settings",
    "download_models",
    "failure",
    "flow_address",
    "generate",
    "generate_image",
    "GenerationFailed",
    "gpu_available",
    "local_checkpoint",
    "make_documents",
    "read_image_prompts",
    "read_init_image",
    "SIGNATURE",
]

CLIENT_KEYWORDS = {
    "host": (str | None, None),
    "progress": (bool, True),
    "verbose": (bool, False),
    "token": (str | None, None),
}


def _signature() -> inspect.Signature:
    hints = typing.get_type_hints(Settings)
    kinds = [
        *((n, inspect.Parameter.POSITIONAL_OR_KEYWORD) for n in SEED_API_NAMES),
        *((n, inspect.Parameter.KEYWORD_ONLY) for n in SETTING_NAMES if n not in SEED_API_NAMES),
    ]
    params = [inspect.Parameter(n, kind, default=default(n), annotation=hints[n]) for n, kind in kinds]
    own = [
        inspect.Parameter(n, inspect.Parameter.KEYWORD_ONLY, default=d, annotation=a)
        for n, (a, d) in CLIENT_KEYWORDS.items()
    ]
    at = len(SEED_API_NAMES)
    return inspect.Signature([*params[:at], *own, *params[at:]], return_annotation="DocumentArray")


SIGNATURE = _signature()


class GenerationFailed(RuntimeError):
    """Some images failed; ``results`` holds what was made (also partial frames), already saved.
    ``messages`` say why, in words; ``codes`` (``wire.ErrorCode``, one per message) say it to programs."""

    def __init__(self, messages: list[str], results=None, codes: list[wire.ErrorCode] | None = None):
        self.messages = messages
        self.results = results
        self.codes = codes if codes is not None else [wire.ErrorCode.INTERNAL] * len(messages)
        super().__init__("; ".join(messages))


def collect_settings(args: tuple, kwargs: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """A call's arguments as (settings values, client keywords). A seed-API parameter passed as
    None means its default (the module's ``Optional`` parameters); unknown names are left for the
    validator, which names them with the nearest valid one."""
    if len(args) > len(SEED_API_NAMES):
        raise TypeError(f"generate_image takes at most {len(SEED_API_NAMES)} positional arguments, got {len(args)}")
    values = dict(zip(SEED_API_NAMES, args, strict=False))
    for name, value in kwargs.items():
        if name in values:
            raise TypeError(f"generate_image got multiple values for argument {name!r}")
        values[name] = value
    own = {n: values.pop(n, d) for n, (_, d) in CLIENT_KEYWORDS.items()}
    values = {k: v for k, v in values.items() if v is not None or k not in SETTING_NAMES or default(k) is None}
    return values, own


def generate_image(*args: Any, **kwargs: Any):
    """Generate ``n_batches`` images; returns a DocumentArray (docarray v1), one Document per image.

    The PaddleHub module's parameters, defaults and return value (``SIGNATURE``, read from the
    ``Settings`` fields). Each Document: ``uri`` the final image (PNG data URI), ``chunks`` the
    frames every ``display_rate`` steps and the last (``tags['cur_t']``, ``tags['step']``),
    ``tags`` the settings and that image's ``seed`` (batch ``i`` uses ``seed + i``), its
    ``status`` and the ``files`` written to ``output_dir``. Disco Diffusion extras
    (``cutn_batches``, ``eta``, ``cut_overview``, ...) are keyword arguments. ``host``: a running
    Flow (default: one started for this call); ``progress``: progress bars; ``verbose``: the
    Flow's own log and the libraries' warnings too; ``token``: the token of a Flow that needs one
    (default: ``DISCO_API_TOKEN``). Ctrl-C stops the run at the next step and keeps what was made.

    Raises ``SettingsError`` (naming the parameter) before anything starts when a setting is
    bad; ``GenerationFailed`` (with ``results``, already saved) when some images failed;
    ``WeightsUnavailable`` when a model file cannot be had.
    """
    values, own = collect_settings(args, kwargs)
    return generate(values, **own)


generate_image.__signature__ = SIGNATURE


def generate(
    values: Mapping[str, Any],
    host: str | None = None,
    progress: bool = True,
    verbose: bool = False,
    token: str | None = None,
):
    """The body of ``generate_image``: settings values in (validated here), a DocumentArray out."""
    from docarray import DocumentArray

    if not verbose:
        ignore_third_party_warnings()
    cfg = config.load()
    # the prompts' CLIP token counts last: open_clip's tokenizer takes seconds to import, a missing file not
    settings = expand_user_paths(validate_settings(values, limits=cfg.limits, tokens=False))
    init_bytes = read_init_image(settings.init_image) if settings.init_image else None
    check_gobig_start(settings, init_bytes is not None)
    settings.image_prompts = read_image_prompts(settings.image_prompts)
    if init_bytes is not None:
        from disco.images import decode_init_image

        decode_init_image(init_bytes, settings.width, settings.height)  # not an image: refused here already
    check_output_dir(settings.output_dir)  # a file, or a folder that cannot be written: refused before any work
    check_prompt_tokens(settings)
    if not host:  # the Flow started here reads the checkpoint path as this process sees it
        settings.diffusion_model = local_checkpoint(settings.diffusion_model)
    animation = None
    if settings.animation_mode != "None":  # one Document, frames written as they finish
        animation = plan_animation(settings, init_bytes)
        docs = DocumentArray([] if animation.complete else [animation.document(cfg.client_timeout_s)])
        plan = animation.plan
    else:
        if settings.seed is None:
            settings.seed = wire.new_run_seed(settings.n_batches)
        wire.check_run_seed(settings.seed, settings.n_batches)
        docs = make_documents(settings, init_bytes, cfg.client_timeout_s)
        plan = plan_run(settings, init_image=init_bytes is not None)  # as the sampler will plan each image
    results, errors = DocumentArray([animation.finished_document()] if animation and not docs else []), []
    if docs:
        use_gpu = settings.use_gpu
        if not host:  # the local Flow loads from the model directory: fetch what is missing first, with progress
            download_models(settings, with_init_loss=plan.with_init_loss, progress=progress, cfg=cfg)
            use_gpu = settings.use_gpu and gpu_available()
            if not use_gpu:
                say(cpu_notice(settings, "no CUDA GPU found" if settings.use_gpu else "use_gpu is off", animation))
        keep, token = (animation.keep_frame if animation else None), token or cfg.api_token
        with flow_address(host, use_gpu, settings.diffusion_model, quiet=not verbose) as address:
            results, errors = run_coroutine(lambda: run_jobs(address, docs, progress, keep, token=token))
    refused = [classify(e) for e in errors]
    failed = [(f"{_name(d)}: {m}", _code(d)) for d in results if (m := failure(d))]
    unsaved = _save(results, settings, animation)  # whatever was made is kept, also when some images failed
    try:
        keep_run(results, settings)  # the run by its batch_name: load_run(batch_name, output_dir=...)
    except OSError as exc:
        unsaved.append(f"keeping the run {settings.batch_name!r} in output_dir failed ({exc})")
    failed += [(m, wire.ErrorCode.INTERNAL) for m in unsaved]
    if refused or failed:
        messages = [f.message for f in refused] + [m for m, _ in failed]
        raise GenerationFailed(messages, results, [f.code for f in refused] + [c for _, c in failed])
    return results


class RunNotFound(LookupError):
    """No run of that ``batch_name`` where ``load_run`` looked (or none for this token)."""


def load_run(batch_name: str, host: str | None = None, token: str | None = None, output_dir: str | Path | None = None):
    """The DocumentArray of the latest run named ``batch_name``, as ``generate_image`` returned it:
    from a server's HTTP port (``host``, e.g. ``http://localhost:51001``; the runs of ``token``, default
    ``DISCO_API_TOKEN``, alone), or from ``output_dir`` (default: the setting's default) for a run made
    with a Flow this process started. Raises ``RunNotFound`` when there is none, ``SettingsError``
    (``batch_name``) for an empty name, ``ValueError`` for a ``host`` that is not an HTTP address, and
    ``OSError`` (urllib's) when the server cannot be reached."""
    from docarray import DocumentArray

    from disco_service.outputs import run_file

    if not isinstance(batch_name, str) or not batch_name:
        raise SettingsError("batch_name", f"{batch_name!r} names no run: give the batch_name of a run")
    if host is None:
        path = run_file(output_dir if output_dir is not None else default("output_dir"), batch_name)
        if not path.is_file():
            raise RunNotFound(f"no run named {batch_name!r} in {str(path.parent.parent)!r}")
        return DocumentArray.from_json(path.read_text())
    if not host.startswith(("http://", "https://")):
        raise ValueError(f"host {host!r}: runs are fetched from the server's HTTP port, e.g. http://localhost:51001")
    token = token or config.load().api_token
    url = f"{host.rstrip('/')}/runs/{urllib.parse.quote(batch_name, safe='')}"
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"} if token else {})
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return DocumentArray.from_json(response.read())
    except urllib.error.HTTPError as exc:
        if exc.code == 404:
            raise RunNotFound(f"no run named {batch_name!r} at {host} for this token") from None
        raise


def _name(doc) -> str:
    if doc.tags.get("animation_mode", "None") != "None":
        return "animation"
    position = doc.tags.get(wire.BATCH_POSITION_TAG)  # with batch_size above 1: its place in the batch
    return f"image {doc.tags.get('batch_index')}" + (f", place {position} in its batch" if position is not None else "")


def _save(results, settings: Settings, animation: AnimationRun | None = None) -> list[str]:
    """Save the results; when ``output_dir`` fails mid-way (disk full, removed), save them to a
    new temporary folder instead, so nothing made is lost. The failures, in words."""
    try:
        if animation:
            for doc in results:
                animation.save(doc)
        else:
            save_outputs(results, settings)
        return []
    except OSError as exc:
        fallback = Path(tempfile.mkdtemp(prefix="disco-unsaved-"))
        settings.output_dir = str(fallback)
        if animation:
            animation.output_dir = fallback
            for doc in results:
                animation.save(doc)
        else:
            save_outputs(results, settings)
        return [f"saving to output_dir failed ({exc}); the images were saved in {fallback} instead"]


def _code(doc) -> wire.ErrorCode:
    """The code of a failed image's Document: its ``error_code`` tag, or why it stopped."""
    told = wire.failure_of_tags(doc.tags)
    return told.code if told is not None else wire.ErrorCode.IMAGE_NOT_FINISHED


def failure(doc) -> str | None:
    """Why an image did not finish, or None (done, or cancelled by its caller)."""
    status, where = doc.tags.get("status"), f"at step {doc.tags.get('steps_done')}"
    if doc.tags.get("error"):
        return str(doc.tags["error"])
    if status == JobStatus.SHUTDOWN:
        return f"the Flow was stopped {where}; the frames made so far are saved"
    if status == JobStatus.ABANDONED:
        return f"the server stopped the job {where}: it heard nothing from this client for too long"
    return None


def local_checkpoint(diffusion_model: str) -> str:
    """For the Flow the client starts on this machine: a checkpoint path as an absolute path (a
    relative one is taken from the current directory), refused naming ``diffusion_model`` when
    there is no such file. A registry name is returned as it is. (A served Flow reads checkpoint
    paths inside its own model directory instead: with ``--host`` the path is the server's.)"""
    if not is_checkpoint_path(diffusion_model):
        return diffusion_model
    path = Path(diffusion_model).expanduser().absolute()
    if not path.is_file():
        raise SettingsError("diffusion_model", f"no checkpoint file {str(path)!r}")
    return str(path)


def read_init_image(source: str | bytes, setting: str = "init_image") -> bytes:
    """The client reads paths and URLs; the server only ever receives bytes. Errors name ``setting``."""
    if isinstance(source, bytes):
        return source
    if source.startswith(("http://", "https://")):
        try:
            with urllib.request.urlopen(source, timeout=30) as response:
                return response.read()
        except OSError as exc:
            raise SettingsError(setting, f"cannot fetch {source}: {exc}") from None
    return read_user_file(setting, source, MAX_IMAGE_BYTES)


def read_image_prompts(prompts: list[str | bytes]) -> list[str]:
    """Each of ``image_prompts`` as the server takes it: the image's bytes as a ``data:`` URI, with
    its ``:weight`` when not 1 (paths and URLs are read here, data URIs and bytes kept). Raises
    ``SettingsError`` naming ``image_prompts`` for a file that cannot be read or is no image."""
    from disco.images import decode_init_image  # torch: needed only when there are image prompts

    sent = []
    for prompt in prompts:
        image = parse_image_prompt(prompt)
        if isinstance(image.source, bytes):
            data = image.source
        else:
            data = data_uri_bytes(image.source)
            if data is None:
                source = str(user_path(image.source)) if image.source.startswith("~") else image.source
                data = read_init_image(source, "image_prompts")
        decode_init_image(data, 64, 64, "image_prompts")  # not an image: refused here, before any work
        uri = data_uri(data, "application/octet-stream")
        sent.append(uri if image.weight == 1 else f"{uri}:{image.weight!r}")
    return sent


def make_documents(settings: Settings, init_bytes: bytes | None, client_timeout_s: float | None = None):
    """One Document per image (``n_batches``), each with its own seed (``seed + i``) and id."""
    from docarray import Document, DocumentArray

    docs = DocumentArray()
    for i in range(settings.n_batches):
        doc = Document(id=uuid.uuid4().hex, tags=wire.request_tags(settings, i, client_timeout_s))
        if init_bytes:
            doc.blob = init_bytes
        docs.append(doc)
    return docs


def download_models(
    settings: Settings, with_init_loss: bool, progress: bool = True, cfg: config.Config | None = None
) -> list[Path]:
    """Ensure the model files these settings need are in the model directory (raises WeightsUnavailable):
    a 3D animation's depth models and a flow-warped video's RAFT too, and only then. Needs no torch:
    it only lists file names and downloads."""
    from disco.animation_plan import depth_models, flow_model_needed
    from disco.weights import ensure_all, files_needed

    cfg = cfg or config.load()
    with_init_loss = with_init_loss and (max(settings.schedule("init_scale")) > 0 or settings.animation_mode != "None")
    depth = depth_models(settings) if settings.animation_mode == "3D" and settings.max_frames > 1 else ()
    flow = flow_model_needed(settings) and settings.max_frames > 1
    names = files_needed(
        settings.diffusion_model, uses_secondary_model(settings), with_init_loss, settings.clip_models, depth, flow
    )
    return ensure_all(names, cfg.model_dir, progress=progress, mirrors=cfg.weights_mirrors)


def gpu_available() -> bool:
    """Whether this machine has a CUDA GPU that torch can use (the Flow started here would use it)."""
    import torch

    return torch.cuda.is_available()


@contextmanager
def flow_address(
    host: str | None, use_gpu: bool = True, diffusion_model: str | None = None, quiet: bool = False
) -> Iterator[str]:
    """A running Flow's address: ``host`` as given, or a Flow started for this call (local_flow.py)."""
    if host:
        yield host if "://" in host else f"grpc://{host}"
        return
    with local_flow(use_gpu, diffusion_model, quiet) as address:
        yield address
