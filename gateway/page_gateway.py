"""The Flow's gateway: Jina's gRPC and HTTP servers, with the web page at ``/ui/`` on the HTTP one.

Jina builds one server per protocol (``gateway: protocol: [grpc, http]``). This gateway keeps
them, and serves the HTTP one with Jina's own app (``/post``, ``/status``, ``/`` health) plus
the static files of ``ui/`` mounted at ``/ui``. Only files inside ``ui/`` are served (Starlette's
StaticFiles refuses paths outside it); nothing here reads a path or URL from a request.

With ``DISCO_OUTPUT_DIR`` set, the page's gallery also shows the images already in that folder
(e.g. the one ``client.py`` writes to on the same machine): ``/ui/outputs`` lists the final PNGs
this project wrote there (those carrying their settings), ``/ui/outputs/NAME`` serves one of
them or its GIF and sprite sheet, by exact name among the folder's own files.

The page builds its form from ``/ui/settings.json`` (``page_settings``): every setting as
``disco.settings.settings_schema`` words it, with this server's limits, and the names of the
wire protocol the page speaks. The page keeps no copy of either.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from jina.serve.runtimes.gateway.composite import CompositeGateway
from jina.serve.runtimes.gateway.http import HTTPGateway

from disco.settings import settings_schema
from disco_service import config, wire
from disco_service.outputs import png_settings

ROOT = Path(__file__).resolve().parent.parent
UI_DIR = ROOT / "ui"
MAX_LISTED = 200  # the newest images, so a large folder stays quick to list
NOT_FINAL = re.compile(r"-(step\d+|sprite)\.png$")  # frames and sprite sheets sit beside each final PNG


def output_dir() -> Path | None:
    value = config.load().output_dir
    return value if value and value.is_dir() else None


def page_settings() -> dict:
    """What the page's form and its requests are made from: every setting (name, kind, default,
    meaning, what is allowed, low/high/choices, seed-API flag; ``settings_schema`` with this
    server's limits), the executor that answers /progress and /cancel, the tags a request may
    carry besides the settings, the largest seed and the job statuses. It depends on the
    server's configuration only, never on the request."""
    return {
        "settings": settings_schema(config.load().limits),
        "job_state_executor": wire.JOB_STATE_EXECUTOR,
        "request_tags": list(wire.REQUEST_TAGS),
        "max_seed": wire.MAX_SEED,
        "job_statuses": [status.value for status in wire.JobStatus],
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


class PageHTTPGateway(HTTPGateway):
    """Jina's HTTP gateway, with the page mounted at ``/ui``."""

    @property
    def app(self):
        from fastapi.responses import RedirectResponse
        from starlette.staticfiles import StaticFiles

        app = super().app
        app.add_api_route("/ui", lambda: RedirectResponse("/ui/"), include_in_schema=False)
        app.add_api_route("/ui/settings.json", page_settings, include_in_schema=False)
        app.add_api_route("/ui/outputs", _list_saved, include_in_schema=False)
        app.add_api_route("/ui/outputs/{name}", _send_saved, include_in_schema=False)
        app.mount("/ui/", StaticFiles(directory=UI_DIR, html=True), name="ui")
        return app


def _list_saved() -> dict:
    directory = output_dir()
    return {"folder": directory is not None, "images": saved_images(directory) if directory else []}


def _send_saved(name: str):
    from fastapi import HTTPException
    from fastapi.responses import FileResponse

    directory = output_dir()
    path = saved_file(directory, name) if directory else None
    if path is None:
        raise HTTPException(status_code=404, detail=f"{name!r} is not an image in the output folder")
    return FileResponse(path)


class DiscoGateway(CompositeGateway):
    """Jina's composite gateway, with its HTTP server replaced by ``PageHTTPGateway``."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.servers = [
            PageHTTPGateway(**server_kwargs) if isinstance(server, HTTPGateway) else server
            for server, server_kwargs in zip(self.servers, self._server_kwargs, strict=True)
        ]
        self.gateways = self.servers
