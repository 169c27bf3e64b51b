"""Disco Diffusion (CLIP RN50) client: ``generate_image`` and the command line.

    from client import generate_image
    da = generate_image(text_prompts=["A lighthouse in a storm:1", "yellow color scheme:0.5"], steps=250)

    python client.py --text_prompts "A lighthouse in a storm" --steps 250 [--host grpc://host:51000]

Without ``host`` the Flow in ``flow.yml`` is started for this call on a free local port and
stopped afterwards (local_flow.py). Settings are checked here before anything starts, and again
by the server. Inside a running event loop (Jupyter) the calls to the Flow run in a thread of
their own.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import signal
import sys
import threading
import urllib.request
import uuid
from collections.abc import Callable, Coroutine, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from disco.settings import (
    LIGHTHOUSE,
    SETTING_NAMES,
    Settings,
    SettingsError,
    describe,
    settings_to_tags,
    validate_settings,
)
from disco.weights import WeightsUnavailable
from disco_service.console import ignore_third_party_warnings, say
from disco_service.cpu_estimate import SMALL_RUN, cpu_notice
from disco_service.local_flow import FlowFailed, local_flow
from disco_service.outputs import read_png_settings, save_outputs
from disco_service.progress import ProgressBars

ROOT = Path(__file__).resolve().parent

PROGRESS_INTERVAL_S = 0.5
SEED_NAMES = list(SETTING_NAMES[: SETTING_NAMES.index("output_dir") + 1])


def generate_image(
    text_prompts: list[str] | None = [LIGHTHOUSE, "yellow color scheme"],  # noqa: B006 (the seed API's default)
    init_image: str | None = None,
    width_height: list[int] | None = [1280, 768],  # noqa: B006
    skip_steps: int | None = 10,
    steps: int | None = 250,
    init_scale: int | None = 1000,
    clip_guidance_scale: int | None = 5000,
    tv_scale: int | None = 0,
    range_scale: int | None = 150,
    sat_scale: int | None = 0,
    perlin_init: bool | None = False,
    perlin_mode: str | None = "mixed",
    seed: int | None = None,
    display_rate: int | None = 10,
    n_batches: int | None = 4,
    batch_name: str | None = "",
    use_gpu: bool | None = True,
    output_dir: str | None = "disco_diffusion_clip_rn50_out",
    *,
    host: str | None = None,
    progress: bool = True,
    verbose: bool = False,
    **extras: Any,
):
    """Generate ``n_batches`` images; returns a DocumentArray (docarray v1), one Document per image.

    Each Document: ``uri`` the final image (PNG data URI), ``chunks`` the frames every
    ``display_rate`` steps and the last (``tags['cur_t']``, ``tags['step']``), ``tags`` the
    settings and that image's ``seed`` (batch ``i`` uses ``seed + i``). Files are written to
    ``output_dir``. Disco Diffusion extras (``cutn_batches``, ``eta``, ``cut_overview``, ...) are
    keyword arguments. Ctrl-C stops the run at the next step and keeps what was made.
    ``verbose=True`` shows the Flow's own log and the libraries' warnings too.
    """
    if not verbose:
        ignore_third_party_warnings()
    local = {k: v for k, v in locals().items() if k in SEED_NAMES}
    settings = validate_settings(
        {k: v for k, v in local.items() if v is not None or k in ("seed", "init_image")}, **extras
    )
    init_bytes = read_init_image(settings.init_image) if settings.init_image else None
    if init_bytes is not None:
        from disco.images import decode_init_image

        decode_init_image(init_bytes, settings.width, settings.height)  # not an image, a bomb: refused here already
    if settings.seed is None:
        settings.seed = random.randint(0, 2**32 - 1 - settings.n_batches)
    if settings.seed + settings.n_batches - 1 > 2**32 - 1:
        raise SettingsError("seed", f"seed + n_batches - 1 must stay below 2**32, got {settings.seed}")
    docs = make_documents(settings, init_bytes)
    use_gpu = settings.use_gpu
    if not host:  # the local Flow loads from the model directory: fetch what is missing first, with progress
        download_models(settings, with_init_loss=init_bytes is not None, progress=progress)
        use_gpu = settings.use_gpu and gpu_available()
        if not use_gpu:
            say(cpu_notice(settings, "no CUDA GPU found" if settings.use_gpu else "use_gpu is off"))
    with flow_address(host, use_gpu, settings.diffusion_model, quiet=not verbose) as address:
        results, errors = run_coroutine(lambda: _run(address, docs, progress))
    save_outputs(results, settings)  # whatever was made is kept, also when some images failed
    failed = [f"image {d.tags.get('batch_index')}: {m}" for d in results if (m := _failure(d))]
    if errors or failed:
        raise GenerationFailed([_server_message(e) for e in errors] + failed, results)
    return results


def _failure(doc) -> str | None:
    """Why an image did not finish, or None (done, or cancelled by its caller)."""
    status, where = doc.tags.get("status"), f"at step {doc.tags.get('steps_done')}"
    if doc.tags.get("error"):
        return str(doc.tags["error"])
    if status == "shutdown":
        return f"the Flow was stopped {where}; the frames made so far are saved"
    if status == "abandoned":
        return f"the server stopped the job {where}: it heard nothing from this client for too long"
    return None


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


def read_init_image(source: str | bytes) -> bytes:
    """The client reads paths and URLs; the server only ever receives bytes."""
    if isinstance(source, bytes):
        return source
    if source.startswith(("http://", "https://")):
        try:
            with urllib.request.urlopen(source, timeout=30) as response:
                return response.read()
        except OSError as exc:
            raise SettingsError("init_image", f"cannot fetch {source}: {exc}") from None
    path = Path(source).expanduser()
    if not path.is_file():
        raise SettingsError("init_image", f"no such file: {path}")
    return path.read_bytes()


def client_timeout_s() -> float:
    """How long the server keeps a job running after its client stopped polling (gone or killed)."""
    return float(os.environ.get("DISCO_CLIENT_TIMEOUT_S", 60))


def make_documents(settings: Settings, init_bytes: bytes | None):
    from docarray import Document, DocumentArray

    tags = settings_to_tags(settings)
    docs = DocumentArray()
    for i in range(settings.n_batches):
        doc = Document(
            id=uuid.uuid4().hex,
            tags={
                **tags,
                "seed": settings.seed + i,
                "batch_index": i,
                "run_seed": settings.seed,
                "client_timeout_s": client_timeout_s(),  # this client polls progress, so silence means gone
            },
        )
        if init_bytes:
            doc.blob = init_bytes
        docs.append(doc)
    return docs


def download_models(settings: Settings, with_init_loss: bool, progress: bool = True) -> list[Path]:
    """Ensure the model files these settings need are in the model directory (raises WeightsUnavailable)."""
    from disco.loading import files_needed
    from disco.weights import ensure_all

    with_init_loss = with_init_loss and settings.init_scale > 0
    return ensure_all(
        files_needed(settings.diffusion_model, settings.use_secondary_model, with_init_loss), progress=progress
    )


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


# The executor that answers /progress and /cancel (flow.yml's name for the Renderer).
JOB_STATE_EXECUTOR = "renderer"


async def _post(client, endpoint: str, docs, target_executor: str | None = None, parameters: dict | None = None):
    from docarray import DocumentArray

    out = DocumentArray()
    async for response in client.post(endpoint, docs, parameters=parameters or {}, target_executor=target_executor):
        out.extend(response)
    return out


async def _run(address: str, docs, show_progress: bool = True):
    """Send one request per image (replicas can spread them), poll progress, cancel on Ctrl-C.

    Polls also fetch each new frame, so when a job's request fails mid-run (its sampler
    process died) the frames made so far are still here and come back as a failed image.
    """
    from docarray import DocumentArray
    from jina import Client

    client = Client(host=address, asyncio=True)
    bars = ProgressBars(docs, enabled=show_progress)
    watcher = JobWatcher(client, docs)
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    try:
        loop.add_signal_handler(signal.SIGINT, stop.set)
    except (RuntimeError, ValueError, NotImplementedError):  # not the main thread: no Ctrl-C handling
        pass

    jobs = [asyncio.create_task(_post(client, "/generate", DocumentArray([d]))) for d in docs]

    async def watch() -> None:
        while not all(j.done() for j in jobs):
            if stop.is_set():
                bars.note("stopping: cancelling at the next step, keeping the frames made so far")
                await _post(client, "/cancel", DocumentArray([type(d)(id=d.id) for d in docs]), JOB_STATE_EXECUTOR)
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
    for i, (doc, out) in enumerate(zip(docs, outcomes, strict=True)):
        if isinstance(out, BaseException) and watcher.started(doc.id):
            outcomes[i] = DocumentArray([await watcher.lost(doc, _server_message(out))])
    try:  # collected: the server may remove the jobs' files now
        await _post(client, "/forget", DocumentArray([type(d)(id=d.id) for d in docs]), JOB_STATE_EXECUTOR)
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
        cast_tags(doc)
    return results, errors


class JobWatcher:
    """Polls ``/progress`` for a run's images and keeps every frame it sees (each fetched once)."""

    def __init__(self, client, docs):
        self.client = client
        self.states: dict[str, dict] = {}
        self.frames: dict[str, list] = {d.id: [] for d in docs}

    async def _progress(self, ids: list[str], frame: bool = False):
        from docarray import Document, DocumentArray

        query = DocumentArray([Document(id=i) for i in ids])
        return await _post(self.client, "/progress", query, JOB_STATE_EXECUTOR, {"frame": frame} if frame else None)

    async def poll(self, pending) -> list:
        """The jobs' states (for the bars); fetches the frame of any job that made a new one."""
        states = await self._progress([d.id for d in pending])
        fresh = []
        for state in states:
            self.states[state.id] = dict(state.tags)
            kept = self.frames[state.id]
            if state.tags.get("frame_step") and (not kept or kept[-1].tags["step"] < state.tags["frame_step"]):
                fresh.append(state.id)
        if fresh:
            from docarray import Document

            for state in await self._progress(fresh, frame=True):
                if state.uri and state.tags.get("frame_step"):
                    step, cur_t = state.tags["frame_step"], state.tags.get("frame_cur_t")
                    self.frames[state.id].append(Document(uri=state.uri, tags={"step": step, "cur_t": cur_t}))
        return states

    def started(self, job_id: str) -> bool:
        return (self.states.get(job_id) or {}).get("status", "waiting") != "waiting"

    async def lost(self, doc, message: str):
        """A failed Document for a job whose request failed mid-run: its frames so far and why.

        The server marks a job whose sampler process died; its own message is used when the
        Flow still answers within a few seconds.
        """
        from docarray import Document

        state = self.states.get(doc.id, {})
        for _ in range(20):  # the server keeps the Flow up about 10 s for this question
            try:
                latest = dict((await self._progress([doc.id]))[0].tags)
            except Exception:
                break  # the Flow is gone (stopped, or restarting)
            if latest.get("status") not in ("running", "waiting", None):
                state = latest
                break
            await asyncio.sleep(0.5)
        step, total = (int(state[k]) if state.get(k) is not None else "?" for k in ("step", "total"))
        if state.get("status") == "failed" and state.get("error"):
            error = state["error"]
        elif "deployment sampler" in message:  # the gateway could no longer reach the job's sampler
            error = f"the sampler process died at step {step} of {total}; the server restarts it"
        else:
            error = f"the connection to the Flow broke at step {step} of {total}: {message.splitlines()[0]}"
        out = Document(
            id=doc.id, tags={**doc.tags, "status": "failed", "error": error, "steps_done": state.get("step")}
        )
        for frame in self.frames[doc.id]:
            out.chunks.append(frame)
        if len(out.chunks):
            out.uri = out.chunks[-1].uri
        return out


class GenerationFailed(RuntimeError):
    """Some images failed; ``results`` holds what was made (also partial frames), already saved."""

    def __init__(self, messages: list[str], results=None):
        self.messages = messages
        self.results = results
        super().__init__("; ".join(messages))


def _server_message(error: BaseException) -> str:
    """The server's own error text (its exception's message), not a gRPC dump."""
    status = getattr(error, "args", [None])[0]
    exc = getattr(getattr(status, "status", None), "exception", None)
    if exc is not None and exc.args:
        return f"{exc.name}: {exc.args[0]}"
    return f"{type(error).__name__}: {error}"


INT_TAGS = {
    "seed",
    "run_seed",
    "batch_index",
    "steps",
    "skip_steps",
    "display_rate",
    "n_batches",
    "cutn_batches",
    "batch_size",
    "steps_done",
    "step",
    "cur_t",
    "total",
}


def cast_tags(doc) -> None:
    """gRPC carries numbers as floats (protobuf Struct): give whole-number settings back their type."""
    for tags in [doc.tags, *(c.tags for c in doc.chunks)]:
        for key in INT_TAGS & set(tags):
            if isinstance(tags[key], float) and tags[key].is_integer():
                tags[key] = int(tags[key])
        if "width_height" in tags:
            tags["width_height"] = [int(v) for v in tags["width_height"]]


# ----- command line -----


def _bool(text: str) -> bool:
    lowered = text.lower()
    if lowered in ("true", "1", "yes", "on"):
        return True
    if lowered in ("false", "0", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


def build_parser() -> argparse.ArgumentParser:
    """The command line: every setting with its meaning, what is allowed and its default (disco/settings.py)."""
    defaults = Settings()
    parser = argparse.ArgumentParser(
        prog="client.py",
        description="Disco Diffusion (CLIP RN50) text-to-image, served as a Jina Flow.",
        epilog=f"A first try on a CPU: {SMALL_RUN}",
    )
    parser.add_argument(
        "--host",
        default=None,
        help="a running Flow, e.g. grpc://localhost:51000 (default: start one for this run, on free local ports)",
    )
    parser.add_argument(
        "--settings",
        type=Path,
        help="a YAML file of settings, or a PNG this project wrote (remakes that image); flags given here override it",
    )
    parser.add_argument("--no_progress", action="store_true", help="no progress bars")
    parser.add_argument(
        "--verbose", action="store_true", help="also show the Flow's own log and the libraries' warnings"
    )
    parser.add_argument(
        "--download",
        action="store_true",
        help="only download the model files these settings need into $DISCO_MODEL_DIR "
        "(~/.cache/disco-diffusion unless set), print their paths and exit",
    )
    for name in SETTING_NAMES:
        default = getattr(defaults, name)
        meaning, allowed, shown = describe(name)
        kwargs: dict[str, Any] = {"default": argparse.SUPPRESS, "help": f"{meaning}; {allowed} (default: {shown})"}
        if isinstance(default, bool):
            kwargs.update(type=_bool, metavar="{true,false}")
        elif name in ("text_prompts",):
            kwargs.update(nargs="+")
        elif name == "width_height":
            kwargs.update(nargs=2, type=int, metavar=("WIDTH", "HEIGHT"))
        elif name in (
            "init_image",
            "style",
            "artist",
            "batch_name",
            "output_dir",
            "perlin_mode",
            "diffusion_sampling_mode",
            "diffusion_model",
            "cut_overview",
            "cut_innercut",
            "cut_icgray_p",
        ):
            kwargs.update(type=str)
        elif name == "cut_ic_pow":
            kwargs.update(type=lambda v: float(v) if v.replace(".", "", 1).isdigit() else v)
        elif isinstance(default, int) or name in ("seed",):
            kwargs.update(type=int)
        else:
            kwargs.update(type=float)
        parser.add_argument(f"--{name}", **kwargs)
    return parser


def main(argv: list[str] | None = None, generate: Callable[..., Any] = generate_image) -> int:
    parser = build_parser()
    args = vars(parser.parse_args(argv))
    host, settings_file, no_progress = args.pop("host"), args.pop("settings"), args.pop("no_progress")
    download_only, verbose = args.pop("download"), args.pop("verbose")
    if not verbose:  # gRPC's core logs connection notices (too_many_pings) on its own; read when it starts
        os.environ.setdefault("GRPC_VERBOSITY", "NONE")
    try:
        values = read_settings_file(settings_file).to_dict() if settings_file else {}
        values.update(args)
        if download_only:
            settings = validate_settings(values)
            for path in download_models(settings, settings.init_image is not None, progress=not no_progress):
                print(path)
            return 0
        da = generate(**values, host=host, progress=not no_progress, verbose=verbose)
    except SettingsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except GenerationFailed as exc:
        if exc.results:
            _print_summary(exc.results)  # what was made is saved: say where
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except (WeightsUnavailable, FlowFailed) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:  # before any image started (loading, starting the Flow)
        print("interrupted: nothing was made", file=sys.stderr)
        return 130
    _print_summary(da)
    if any(d.tags.get("status") == "cancelled" for d in da):
        where = Path(da[0].tags.get("output_dir", ".")) if len(da) else Path(".")
        print(f"interrupted: stopped at the next step; the frames made so far are saved in {where}", file=sys.stderr)
        return 130
    return 0


def read_settings_file(path: Path) -> Settings:
    """Settings from a YAML file, or those embedded in a PNG this project wrote."""
    if path.suffix.lower() == ".png":
        return validate_settings(read_png_settings(path))
    return Settings.from_yaml(path)


def _print_summary(docs) -> None:
    summary = [
        {"seed": d.tags.get("seed"), "status": d.tags.get("status"), "files": d.tags.get("files", [])} for d in docs
    ]
    print(json.dumps(summary, indent=1))


if __name__ == "__main__":
    sys.exit(main())
