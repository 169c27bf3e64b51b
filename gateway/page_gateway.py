"""The Flow's gateway: Jina's gRPC and HTTP servers, with the web page at ``/ui/`` on the HTTP one.

Jina builds one server per protocol (``gateway: protocol: [grpc, http]``). This gateway keeps
them, and serves the HTTP one with Jina's own app (``/post``, ``/status``, ``/`` health) plus
the static files of ``ui/`` mounted at ``/ui``. Only files inside ``ui/`` are served (Starlette's
StaticFiles refuses paths outside it); nothing here reads a path or URL from a request.
"""

from __future__ import annotations

from pathlib import Path

from jina.serve.runtimes.gateway.composite import CompositeGateway
from jina.serve.runtimes.gateway.http import HTTPGateway

UI_DIR = Path(__file__).resolve().parent.parent / "ui"


class PageHTTPGateway(HTTPGateway):
    """Jina's HTTP gateway, with the page mounted at ``/ui``."""

    @property
    def app(self):
        from fastapi.responses import RedirectResponse
        from starlette.staticfiles import StaticFiles

        app = super().app
        app.add_api_route("/ui", lambda: RedirectResponse("/ui/"), include_in_schema=False)
        app.mount("/ui/", StaticFiles(directory=UI_DIR, html=True), name="ui")
        return app


class DiscoGateway(CompositeGateway):
    """Jina's composite gateway, with its HTTP server replaced by ``PageHTTPGateway``."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.servers = [
            PageHTTPGateway(**server_kwargs) if isinstance(server, HTTPGateway) else server
            for server, server_kwargs in zip(self.servers, self._server_kwargs, strict=True)
        ]
        self.gateways = self.servers
