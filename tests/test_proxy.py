"""Behind a reverse proxy: Debian's nginx in front of the HTTP port, with a read timeout of 9 s.

A job that takes about a minute is submitted, watched and fetched through it with short requests,
while one event stream follows it through the proxy to its end, kept open by heartbeats; an image
held in one ``POST /post`` gets the proxy's 504 instead, and is kept in the result store all the same. (The page
through the proxy: tests/test_ui.py.)
"""

import contextlib
import io
import json
import os
import subprocess
import threading
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import needs
import pytest
from boards import board_states
from conftest import TINY
from PIL import Image
from test_jobs import call

from disco_service.client.local_flow import free_port

READ_TIMEOUT_S = 9  # above the event stream's 5 s heartbeat, below any image's length

pytestmark = needs.nginx_mark


def nginx_config(folder: Path, port: int, upstream: str) -> str:
    """A proxy as a server would have it, run as this user: its files in ``folder``."""
    user = "user root;" if os.geteuid() == 0 else ""  # workers as root too, so they can use folder
    kinds = ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    temp = " ".join(f"{kind}_temp_path {folder / kind};" for kind in kinds)
    return f"""
{user}
daemon off;
worker_processes 1;
pid {folder / "nginx.pid"};
error_log {folder / "error.log"} warn;
events {{ worker_connections 64; }}
http {{
    access_log {folder / "access.log"};
    {temp}
    server {{
        listen 127.0.0.1:{port};
        client_max_body_size 20m;
        location / {{
            proxy_pass {upstream};
            proxy_http_version 1.1;
            proxy_read_timeout {READ_TIMEOUT_S}s;
        }}
    }}
}}
"""


def answers(address: str) -> bool:
    try:
        return call("GET", f"{address}/")[0] == 200
    except OSError:  # not listening yet
        return False


@contextlib.contextmanager
def running_proxy(upstream: str, folder: Path) -> Iterator[str]:
    """nginx in front of ``upstream`` (its files in ``folder``), while the block runs: its address."""
    port = free_port()
    config = folder / "nginx.conf"
    config.write_text(nginx_config(folder, port, upstream))
    process = subprocess.Popen(
        [needs.need_nginx(), "-c", str(config), "-p", str(folder)], stderr=subprocess.PIPE, text=True
    )
    address = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 30
        while not answers(address):
            assert process.poll() is None and time.time() < deadline, process.stderr.read()
            time.sleep(0.2)
        yield address
    finally:
        process.terminate()
        process.wait(30)


@pytest.fixture
def proxy(served_http, tmp_path) -> Iterator[str]:
    with running_proxy(served_http, tmp_path) as address:
        yield address


def test_a_long_job_through_a_proxy_with_a_short_read_timeout(proxy, served_http, flow_env):
    # the old way: one POST held open for the whole image; the proxy gives up after its read timeout
    doc_id = uuid.uuid4().hex
    held = {**TINY, "steps": 200, "skip_steps": 0, "n_batches": 1, "client_timeout_s": READ_TIMEOUT_S + 3}
    started = time.time()
    status, _ = call("POST", f"{proxy}/post", {"execEndpoint": "/generate", "data": [{"id": doc_id, "tags": held}]},
                     timeout=120)  # fmt: skip
    assert status == 504 and READ_TIMEOUT_S <= time.time() - started < READ_TIMEOUT_S + 10
    # nobody polls it (asking GET /results/ID would keep it going): the Flow stops it as abandoned
    deadline = time.time() + 120
    while board_states(flow_env["DISCO_STATE_DIR"]).get(doc_id, {"status": "running"})["status"] == "running":
        assert time.time() < deadline
        time.sleep(1)
    record = call("GET", f"{proxy}/results/{doc_id}")[1]  # made as far as it went, and kept in the store
    assert record["status"] == "abandoned" and record["files"]["frames"]

    # the job API: every request is short, the job takes longer than the read timeout (12 steps of
    # about 2 s each); one event stream follows it meanwhile, kept open through the proxy by the
    # gateway's heartbeats
    stream = EventStream(f"{proxy}/jobs/events")
    longer = {**TINY, "steps": 12, "skip_steps": 0, "display_rate": 4, "seed": 12, "n_batches": 1}
    status, job = call("POST", f"{proxy}/jobs", longer)
    assert status == 202
    started, slowest, polls = time.time(), 0.0, 0
    while job["status"] in ("queued", "running"):
        time.sleep(2)
        asked = time.time()
        status, job = call("GET", f"{proxy}/jobs/{job['id']}", timeout=READ_TIMEOUT_S)
        slowest, polls = max(slowest, time.time() - asked), polls + 1
        assert status == 200 and time.time() - started < 600, job
    took = time.time() - started
    print(f"a job of {took:.0f} s watched through the proxy in {polls} requests, the slowest {slowest:.2f} s")
    assert job["status"] == "done" and took > READ_TIMEOUT_S and slowest < 5
    image = job["images"][0]
    status, png = call("GET", proxy + image["png"])
    assert status == 200 and Image.open(io.BytesIO(png)).size == (64, 64)
    assert json.loads(Image.open(io.BytesIO(png)).text["disco-diffusion"])["seed"] == 12
    assert call("GET", served_http + image["png"])[1] == png  # the same file as without the proxy
    stream.listener.join(60)
    print(f"the same job followed through the proxy by one event stream: {len(stream.kinds)} events")
    assert stream.closed == [] and stream.kinds[0] == "queued" and stream.kinds[-1] == "done", stream


class EventStream:
    """``GET /jobs/events`` read in a thread until the first job's end: the kinds of event it gave,
    and when it was closed (by the proxy or the server) before that end."""

    def __init__(self, address: str):
        self.kinds: list[str] = []
        self.closed: list[float] = []
        opened = threading.Event()

        def listen() -> None:
            with urllib.request.urlopen(address, timeout=READ_TIMEOUT_S * 4) as stream:
                opened.set()
                for raw in stream:
                    line = raw.decode().strip()
                    if line.startswith("event: "):
                        self.kinds.append(line.removeprefix("event: "))
                        if self.kinds[-1] in ("done", "failed", "cancelled"):
                            return
            self.closed.append(time.time())

        self.listener = threading.Thread(target=listen, daemon=True)
        self.listener.start()
        assert opened.wait(30), "the event stream did not open through the proxy"

    def __repr__(self) -> str:
        return f"EventStream(kinds={self.kinds}, closed={self.closed})"
