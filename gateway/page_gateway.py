"""The Flow's gateway: Jina's gRPC and HTTP servers, with the web page at ``/ui/`` on the HTTP one.

Jina builds one server per protocol (``gateway: protocol: [grpc, http]``). This gateway keeps
them, and serves the HTTP one with Jina's own app (``/post``, ``/`` health; ``BUILT_IN_ROUTES``) plus
the static files of ``ui/`` mounted at ``/ui``. Only files inside ``ui/`` are served (Starlette's
StaticFiles refuses paths outside it); nothing here reads a path or URL from a request.

It also makes the Flow a shared service:

- the job API, the results by Document id (disco_service/server/http_api.py) and PaddleHub's
  ``/predict/disco_diffusion_clip_rn50`` (disco_service/server/hub_serving.py) and ``/metrics``
  (Prometheus, disco_service/server/metrics.py) on the HTTP port; the jobs
  run in this process, which calls its own Flow over gRPC (disco_service/server/job_queue.py);
- tokens (``DISCO_API_TOKENS``, disco_service/server/tokens.py) on both ports; without them the service
  is open, and says so in its log when it listens beyond this machine;
- a request to an endpoint the Flow does not serve is refused, naming the ones it does (Jina
  would pass it through every executor and answer it unchanged).

With ``DISCO_OUTPUT_DIR`` set, the page's gallery also shows the images already in that folder
(e.g. the one ``client.py`` writes to on the same machine): ``/ui/outputs`` lists the final PNGs
this project wrote there (those carrying their settings), ``/ui/outputs/NAME`` serves one of
them or its GIF and sprite sheet, by exact name among the folder's own files.

The page builds its form from ``/ui/settings.json`` (``page_settings``): every setting as
``disco.settings.settings_schema`` words it, with this server's limits, and the names of the
wire protocol the page speaks. The page keeps no copy of either.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import socket
from pathlib import Path

from jina.serve.runtimes.gateway.composite import CompositeGateway
from jina.serve.runtimes.gateway.grpc import GRPCGateway
from jina.serve.runtimes.gateway.http import HTTPGateway

from disco.settings import PREVIEWED_SETTINGS, settings_schema
from disco_service import config, wire
from disco_service.outputs import png_settings
from disco_service.server import estimates, events, flow_secret, http_api, routes, tokens
from disco_service.server.direct_calls import CallerMiddleware, DirectCalls, caller_interceptor
from disco_service.server.job_queue import JobQueue
from disco_service.server.results import ResultStore
from disco_service.transport import FlowClient

ROOT = Path(__file__).resolve().parent.parent
UI_DIR = ROOT / "ui"
MAX_LISTED = 200  # the newest images, so a large folder stays quick to list
# frames, sprite sheets and the last pictures of images stopped early sit beside each final PNG
NOT_FINAL = re.compile(r"-(step\d+|sprite|cancelled|abandoned|shutdown|failed|unfinished)\.png$")


def output_dir() -> Path | None:
    value = config.load().output_dir
    return value if value and value.is_dir() else None


def page_settings() -> dict:
    """What the page's form and its requests are made from: every setting (name, kind, default,
    meaning, what is allowed, low/high/choices, seed-API flag; ``settings_schema`` with this
    server's limits), the executor that answers /progress and /cancel, the tags a request may
    carry besides the settings, the largest seed, the job statuses and the settings whose value may
    be a schedule (``schedule_settings``: the page plots them with ``POST /schedules/preview``). It
    depends on the server's configuration only, never on the request. ``device``: where the samplers run (``cpu``
    or ``gpu``); on a CPU the form starts from small settings (``estimates.CPU_DEFAULTS`` as the
    rows' defaults) and ``confirm_over_s`` is how long a job may be estimated to run before the
    page asks (None: never)."""
    cfg = config.load()
    where = estimates.device(cfg.use_gpu)
    return {
        "settings": estimates.page_rows(settings_schema(cfg.limits), where),
        "device": where,
        "confirm_over_s": (cfg.confirm_over_s or None) if where == "cpu" else None,
        "job_state_executor": wire.JOB_STATE_EXECUTOR,
        "request_tags": list(wire.REQUEST_TAGS),
        "max_seed": wire.MAX_SEED,
        "job_statuses": [status.value for status in wire.JobStatus],
        "event_types": list(events.EVENT_TYPES),
        "schedule_settings": list(PREVIEWED_SETTINGS),
    }


def saved_images(directory: Path) -> list[dict]:
    """The final images in ``directory`` that carry their settings, newest first, with their
    GIF and sprite sheet when those are there."""
    names = set(os.listdir(directory))
    finals = [n for n in names if n.startswith("reverse_diffusion-") and n.endswith(".png") and not NOT_FINAL.search(n)]
    finals.sort(key=lambda n: (directory / n).stat().st_mtime, reverse=True)
    entries = []
    for name in finals[:MAX_LISTED]:
        settings = png_settings((directory / name).read_bytes())
        if settings is None:
            continue  # not one of ours
        stem = name.removesuffix(".png")
        gif, sprite = f"{stem}.gif", f"{stem}-sprite.png"
        entries.append(
            {"name": name, "settings": settings, "gif": gif if gif in names else None,
             "sprite": sprite if sprite in names else None}
        )  # fmt: skip
    return entries


def saved_file(directory: Path, name: str) -> Path | None:
    """``directory / name`` when ``name`` is exactly one of its PNG or GIF files (no other path)."""
    if not name.endswith((".png", ".gif")) or name not in os.listdir(directory):
        return None
    path = directory / name
    return path if path.is_file() else None


class UnknownEndpoint(ValueError):
    """A request names an endpoint the Flow does not serve."""

    code = wire.ErrorCode.ENDPOINT_UNKNOWN


class ImageNotFinished(RuntimeError):
    """An image of the request stopped before its last step; the message says which, why and where its frames are."""

    code = wire.ErrorCode.IMAGE_NOT_FINISHED


def honest_answers(handle, admit=None):
    """Jina's request handler (request -> futures), answering with an error (``header.status``, which
    gRPC clients raise and HTTP answers with an error status) what would otherwise pass as a success,
    and what ``admit`` refuses (request -> what to call once it is answered, or None; raises the
    refusal: disco_service/server/direct_calls.py):

    - a request to an endpoint the Flow does not serve (Jina would pass it through every executor and
      answer it unchanged): the error names the ones it serves (Jina's own, such as its dry run, pass);
    - a ``/generate`` whose images did not finish and whose caller neither accepted unfinished images
      nor watched them (the Renderer names them in its result, ``wire.NOT_FINISHED``)."""

    def answer(request, return_type):
        endpoint = request.header.exec_endpoint
        if endpoint in wire.ENDPOINTS or endpoint.startswith("_jina"):
            try:
                done = admit(request) if admit is not None else None
            except Exception as refusal:
                request.add_exception(refusal.with_traceback(None))  # a refusal: no server paths in the answer
                return _answered(request)
            response, floating = handle(request=request, return_type=return_type)
            answered = asyncio.ensure_future(_finished_or_error(response))
            if done is not None:
                answered.add_done_callback(lambda future: done(_answer_of(future)))
            return answered, floating
        served = ", ".join(wire.ENDPOINTS[:-1]) + f" and {wire.ENDPOINTS[-1]}"
        request.add_exception(UnknownEndpoint(f"unknown endpoint {endpoint!r}: this Flow serves {served}"))
        return _answered(request)

    return answer


def _answer_of(future):
    """The answered request of a finished future, or None when it failed or was cancelled."""
    if future.cancelled() or future.exception() is not None:
        return None
    return future.result()


def _answered(request):
    """A request answered here, as Jina's handler answers: (a future of the request, no floating task)."""
    answered = asyncio.get_running_loop().create_future()
    answered.set_result(request)
    return answered, None


async def _finished_or_error(pending):
    response = await pending
    results = response.parameters.get("__results__") or {}
    notes = [note for result in results.values() for note in (result or {}).get(wire.NOT_FINISHED) or []]
    if notes and not response.header.status.code:
        response.add_exception(ImageNotFinished("; ".join(notes)))
    return response


# Every route that Jina or FastAPI adds to the HTTP app by itself, and what becomes of it here:
# "callers" (kept, behind the token like every route), "health" (kept, open: it answers {}), or "off"
# (removed). Nothing kept tells a caller how the Flow is laid out inside.
BUILT_IN_ROUTES = {
    "/": "health",  # load balancers' and Kubernetes' health check
    "/post": "callers",  # Jina's HTTP client; under the job API's rules (direct_calls.py)
    "/openapi.json": "callers",  # the description of the HTTP API, for callers' tools
    "/status": "off",  # Jina's version, the Python and OS versions and the JINA_* environment
    "/dry_run": "off",  # its failure names the executors' addresses; GET / and gRPC's health check remain
    "/docs": "off",  # Swagger UI: scripts from a CDN, and no way to send the token; the page is at /ui/
    "/docs/oauth2-redirect": "off",
    "/redoc": "off",
    "/index": "off",  # Jina's CRUD routes: this Flow serves none of them (wire.ENDPOINTS)
    "/search": "off",
    "/update": "off",
    "/delete": "off",
}


def prune_built_in_routes(app) -> list[str]:
    """Remove the routes ``BUILT_IN_ROUTES`` turns off from ``app``, and name this service in its API
    description where Jina names itself and its version; returns the paths removed."""
    off = {path for path, decision in BUILT_IN_ROUTES.items() if decision == "off"}
    removed = [route.path for route in app.router.routes if getattr(route, "path", None) in off]
    app.router.routes[:] = [route for route in app.router.routes if getattr(route, "path", None) not in off]
    app.title, app.version, app.openapi_schema = "Disco Diffusion", "1", None
    app.description = "Images from text prompts: the job API (/jobs), results (/results) and the page (/ui/)."
    app.docs_url = app.redoc_url = None
    return removed


class PageHTTPGateway(HTTPGateway):
    """Jina's HTTP gateway, with the page mounted at ``/ui`` and the service's own routes, and
    Jina's and FastAPI's own routes as ``BUILT_IN_ROUTES`` decides."""

    service: tuple[JobQueue, tokens.Tokens, config.Config] | None = None  # set by DiscoGateway

    @property
    def app(self):
        from fastapi.responses import RedirectResponse
        from starlette.staticfiles import StaticFiles

        app = super().app
        prune_built_in_routes(app)
        app.add_api_route("/ui", lambda: RedirectResponse("/ui/"), include_in_schema=False)
        app.add_api_route("/ui/settings.json", page_settings, include_in_schema=False)
        app.add_api_route("/ui/outputs", _list_saved, include_in_schema=False)
        app.add_api_route("/ui/outputs/{name}", _send_saved, include_in_schema=False)
        if self.service is not None:
            queue, accepted, cfg = self.service
            routes.mount_service(app, queue, accepted, cfg.limits, cfg.use_gpu, cfg.max_body_bytes, cfg.confirm_over_s)
            app.add_middleware(CallerMiddleware, tokens=accepted)  # who sends Jina's POST /post
            running: list[asyncio.Task] = []
            app.add_event_handler("startup", lambda: running.append(asyncio.create_task(queue.run())))
            app.add_event_handler("shutdown", lambda: [task.cancel() for task in running])
        app.mount("/ui/", StaticFiles(directory=UI_DIR, html=True), name="ui")
        return app


def _list_saved() -> dict:
    directory = output_dir()
    return {"folder": directory is not None, "images": saved_images(directory) if directory else []}


def _send_saved(name: str):
    from fastapi.responses import FileResponse

    directory = output_dir()
    path = saved_file(directory, name) if directory else None
    if path is None:
        failure = wire.Failure(wire.ErrorCode.FILE_NOT_FOUND, f"{name!r} is not an image in the output folder")
        return http_api.refusal(404, failure)
    return FileResponse(path)


class DiscoGateway(CompositeGateway):
    """Jina's composite gateway, with its HTTP server replaced by ``PageHTTPGateway``, tokens on both
    servers, the endpoints checked, and the job queue (which calls this gateway's own gRPC port)."""

    def __init__(self, flow_secret: str | None = None, **kwargs):
        """``flow_secret`` (``uses_with``): what the executors require of this gateway's calls
        (disco_service/server/flow_secret.py); sent as gRPC metadata on every call to them."""
        _send_flow_secret(kwargs.get("runtime_args"), flow_secret)
        super().__init__(**kwargs)
        cfg = config.load()
        accepted = tokens.Tokens(cfg.api_tokens, cfg.admin_tokens)
        ports = dict(zip((str(p).lower() for p in self.protocols), self.ports, strict=True))
        grpc_port = next(port for protocol, port in ports.items() if "grpc" in protocol)
        addresses = json.loads(self.runtime_args.deployments_addresses or "{}")
        queue = JobQueue(
            ResultStore(cfg.results_dir, cfg.result_ttl_s),
            FlowClient(f"grpc://127.0.0.1:{grpc_port}", accepted.service_metadata()),
            slots=len(addresses.get(wire.SAMPLER) or [None]),
            max_jobs_per_owner=cfg.max_jobs_per_token,
            state=cfg.store_target(grpc_port),  # this server's own SQLite file, or the shared database
            claimer=f"{socket.gethostname()}:{grpc_port}",
        )
        direct = DirectCalls(queue, accepted)
        accepted.store = queue.state  # tokens added and revoked there count at the next request
        queue.state.quota = cfg.quota()
        streamer = self._request_handler.streamer._streamer
        streamer._request_handler = honest_answers(streamer._request_handler, direct.admit)
        servers = []
        for server, server_kwargs in zip(self.servers, self._server_kwargs, strict=True):
            if isinstance(server, HTTPGateway):
                server = PageHTTPGateway(**server_kwargs)
                server.service = (queue, accepted, cfg)
            elif isinstance(server, GRPCGateway):
                server.grpc_tracing_server_interceptors = [
                    tokens.interceptor(accepted),
                    caller_interceptor(accepted),
                    *(server.grpc_tracing_server_interceptors or []),
                ]
            servers.append(server)
        self.servers = self.gateways = servers
        if accepted.open and self.host not in tokens.LOOPBACK:
            self.logger.warning(
                f"this service is open: anyone who can reach {self.host} ports {', '.join(map(str, self.ports))} can "
                "use it, see and cancel every job. Set DISCO_API_TOKENS to require tokens."
            )


def _send_flow_secret(runtime_args, given: str | None) -> None:
    """Add the Flow's secret to the gRPC metadata Jina's gateway sends to each executor
    (``deployments_metadata``), before the request handler that reads it is built."""
    if runtime_args is None:
        return
    read = runtime_args.get if isinstance(runtime_args, dict) else lambda name: getattr(runtime_args, name, None)
    executors = list(json.loads(read("deployments_addresses") or "{}"))
    current = json.loads(read("deployments_metadata") or "{}")
    value = json.dumps(flow_secret.deployments_metadata(current, executors, flow_secret.resolve(given)))
    if isinstance(runtime_args, dict):
        runtime_args["deployments_metadata"] = value
    else:
        runtime_args.deployments_metadata = value
