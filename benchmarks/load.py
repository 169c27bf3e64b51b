"""Several gateways sharing one job queue, and the cost of pages that follow jobs by events or by polling.

    python benchmarks/load.py                          # 2 gateways, PostgreSQL, 40 jobs from 5 tokens, 20 pages
    python benchmarks/load.py --jobs 4 --pages 2       # a quick look (SQLite when PostgreSQL is not installed)
    python tests/make_test_weights.py /tmp/models
    python benchmarks/load.py --real /tmp/models       # a served Flow on those weights instead of the fake sampler

What runs, each in its own process: ``--gateways`` gateways (uvicorn serving a FastAPI app with the
service's routes, ``routes.mount_service``, over a ``JobQueue``; each its own claimer name) on one
state store (a throwaway PostgreSQL cluster from ``tests/pg_cluster.py``, or one SQLite file with
``--database sqlite``), and one sampler with ``--slots`` slots. The sampler is fake by default: each
image takes ``--steps`` steps of ``--step-s`` seconds and writes its frame and record into the
result store, as the Flow would; it measures the queue, not the models. It also counts the
Document ids it was sent and the images it ran at once (it runs whatever it is sent, so a queue that
sent too many would show). With ``--real``, ``serve.py`` serves a Flow with ``--slots`` sampler
replicas on the given weights, and the gateways call it over gRPC.

The workload runs three times, with the same jobs: ``--jobs`` one-image jobs from ``--tokens`` tokens
(job k from token k mod tokens), handed in at once and alternately to the gateways over HTTP,
followed by ``--pages`` open pages (page k: token k mod tokens, gateway k mod gateways):

- ``idle`` and ``idle-events``: no job at all for ``--idle-s`` seconds, with no page and with the
  ``--pages`` event streams open: what a quiet service costs its store;
- ``none``: no page;
- ``events``: each page reads ``GET /jobs`` once, then follows ``GET /jobs/events`` (as the page does);
- ``polling``: each page asks ``GET /jobs`` every ``--poll-s`` seconds (as the page did before events).

Per phase: queue wait (submitted to sent to the sampler) and run time (sent to finished) at p50 and
p95, every job done, no Document id sent twice, the most images in flight against the slots; and, at
the gateways, requests per second and the state store's statements per second (each statement a
store runs is counted in its process). It prints a table and writes JSON and markdown to
``benchmarks/results/load-<backend>-<date>.{json,md}``.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import io
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
PHASES = ("idle", "idle-events", "none", "events", "polling")
COUNTERS_PATH = "/bench/counters"
ANSWERING_REQUESTS = "http_guard"  # the outermost service module of every request (its guard middleware)
ROLES = {ANSWERING_REQUESTS: "answering requests", "events": "the event hub", "job_queue": "the queue's loop"}


def percentile(values: list[float], q: float) -> float:
    """The ``q`` quantile (0..1) of ``values`` by linear interpolation between the nearest ranks.
    Raises ``ValueError`` for no values."""
    if not values:
        raise ValueError("no values")
    ordered = sorted(values)
    at = (len(ordered) - 1) * q
    low = int(at)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (at - low)


def free_port() -> int:
    """A TCP port free on 127.0.0.1 now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def tiny_png() -> bytes:
    """An 8x8 PNG: the fake sampler's frames."""
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (8, 8), (200, 100, 0)).save(buffer, format="PNG")
    return buffer.getvalue()


# ----- the fake sampler (its own process) -----


def sampler_app(results_dir: Path, step_s: float):
    """The fake sampler: ``POST /generate`` runs one image (its ``steps`` tag, ``step_s`` seconds a
    step) and writes its frame and record into the result store; ``/progress`` and ``/cancel`` answer
    like the Flow; ``GET /stats`` tells the Document ids it was sent, with when, and the most images
    it ran at once since ``POST /reset``."""
    from fastapi import FastAPI

    from disco_service.server.results import ResultStore

    app = FastAPI()
    store = ResultStore(results_dir)
    frame = tiny_png()
    states: dict[str, dict[str, Any]] = {}
    cancelled: set[str] = set()
    sent: list[list[Any]] = []  # [doc id, received, finished]
    running = {"now": 0, "peak": 0}

    @app.post("/generate")
    async def generate(body: dict):
        doc_id, tags = body["id"], body["tags"]
        steps = int(tags.get("steps") or 1)
        entry = [doc_id, time.time(), None]
        sent.append(entry)
        running["now"] += 1
        running["peak"] = max(running["peak"], running["now"])
        status, done = "done", steps
        try:
            states[doc_id] = {"status": "running", "step": 0, "total": steps, "started": time.time()}
            for step in range(1, steps + 1):
                await asyncio.sleep(step_s)
                if doc_id in cancelled:
                    status, done = "cancelled", step - 1
                    break
                states[doc_id].update(step=step, **({"frame_step": step} if step % 5 == 0 else {}))
            if status == "done":
                store.add_frame(doc_id, steps, frame, {"seed": tags.get("seed")})
            store.finish(doc_id, {"seed": tags.get("seed"), "total": steps, "status": status, "steps_done": done})
            states[doc_id] = {"status": status}
        finally:
            running["now"] -= 1
            entry[2] = time.time()
        return {"id": doc_id, "tags": {**tags, "status": status, "steps_done": float(done)}}

    @app.post("/progress")
    async def progress(body: dict):
        uri = "data:image/png;base64," + base64.b64encode(frame).decode() if body.get("frame") else None
        return [{"id": i, "tags": states.get(i, {"status": "waiting"}), "uri": uri} for i in body["ids"]]

    @app.post("/cancel")
    async def cancel(body: dict):
        cancelled.update(body["ids"])
        return {}

    @app.get("/stats")
    async def stats():
        return {"sent": sent, "peak": running["peak"]}

    @app.post("/reset")
    async def reset():
        running["peak"] = running["now"]
        return {}

    return app


class HttpFlow:
    """The job queue's calls to the fake sampler (``job_queue.FlowCalls``), over HTTP."""

    def __init__(self, address: str):
        import httpx

        self.http = httpx.AsyncClient(base_url=address, timeout=600)

    async def generate(self, doc: Any) -> Any:
        """Run one image (a ``Document``) on the sampler; the Document it answers, with its status."""
        from docarray import Document

        answer = await self.http.post("/generate", json={"id": doc.id, "tags": dict(doc.tags)})
        answer.raise_for_status()
        body = answer.json()
        return Document(id=body["id"], tags=body["tags"])

    async def progress(self, ids: list[str], frame: bool = False, keep_alive: bool = True) -> list[Any]:
        """The state of each image in ``ids`` (a Document each; ``frame``: with the latest frame as its uri)."""
        from docarray import Document

        answer = await self.http.post("/progress", json={"ids": ids, "frame": frame})
        answer.raise_for_status()
        return [Document(id=d["id"], tags=d["tags"], uri=d["uri"]) for d in answer.json()]

    async def cancel(self, ids: list[str]) -> None:
        """Ask the sampler to stop these images at their next step."""
        await self.http.post("/cancel", json={"ids": ids})


# ----- a gateway (its own process) -----


def count_statements(store) -> dict[str, Any]:
    """Count, from now on, the statements and transactions that ``store`` (a ``JobStore``) runs, in
    all and by the module of the service that asked (``events``, ``job_queue``, ``http_api``, ...);
    the counts (a dict updated in place)."""
    counts: dict[str, Any] = {"statements": 0, "transactions": 0, "statements_by": {}}
    begin = store._begin
    asking = ["?"]  # the module whose transaction runs now (the store's lock runs one at a time)

    class Counted:
        def __init__(self, cursor):
            self._cursor = cursor

        def execute(self, *args, **kwargs):
            counts["statements"] += 1
            counts["statements_by"][asking[0]] = counts["statements_by"].get(asking[0], 0) + 1
            return self._cursor.execute(*args, **kwargs)

        def __getattr__(self, name):
            return getattr(self._cursor, name)

    @contextmanager
    def counted_begin(write: bool):
        counts["transactions"] += 1
        asking[0] = asker()
        with begin(write) as cursor:
            yield Counted(cursor)

    store._begin = counted_begin
    return counts


def asker() -> str:
    """The module of the service (outside the store) furthest down the stack from here: where the
    work began (``http_api`` answering a request, ``events`` reading a change, ``job_queue``'s loop)."""
    found, frame = "other", sys._getframe(1)
    while frame is not None:
        name = frame.f_globals.get("__name__", "")
        if name.startswith("disco_service.server.") and not name.startswith("disco_service.server.store"):
            found = name.rsplit(".", 1)[-1]
        frame = frame.f_back
    return found


def request_kind(method: str, path: str) -> str:
    """A request's route for the counts: ``GET /jobs``, ``GET /jobs/events``, ``GET /jobs/{id}`` ..."""
    if path.startswith("/jobs/") and path != "/jobs/events":
        path = "/jobs/{id}" + ("/..." if path.count("/") > 2 else "")
    return f"{method} {path}"


def counting(app, counts: dict[str, Any]):
    """``app`` (ASGI) with each HTTP request counted by ``request_kind`` in ``counts['requests']``,
    and ``GET /bench/counters`` answering ``counts`` as JSON (not counted, no token)."""
    requests: dict[str, int] = counts.setdefault("requests", {})

    async def counted(scope, receive, send):
        if scope["type"] == "http" and scope["path"] == COUNTERS_PATH:
            body = json.dumps(counts).encode()
            headers = [(b"content-type", b"application/json")]
            await send({"type": "http.response.start", "status": 200, "headers": headers})
            await send({"type": "http.response.body", "body": body})
            return
        if scope["type"] == "http":
            kind = request_kind(scope["method"], scope["path"])
            requests[kind] = requests.get(kind, 0) + 1
        await app(scope, receive, send)

    return counted


def run_gateway(args: argparse.Namespace) -> None:
    """Serve one gateway until terminated: the service's routes over a JobQueue on ``--database``."""
    import uvicorn
    from fastapi import FastAPI

    from disco.settings import DEFAULT_LIMITS
    from disco_service.server.job_queue import JobQueue
    from disco_service.server.results import ResultStore
    from disco_service.server.routes import mount_service
    from disco_service.server.store import open_store
    from disco_service.server.tokens import Tokens

    state = open_store(args.database)
    counts: dict[str, Any] = {"store": count_statements(state)}
    if args.flow.startswith("grpc://"):
        from disco_service.transport import FlowClient

        flow: Any = FlowClient(args.flow, (("authorization", f"Bearer {args.flow_token}"),))
    else:
        flow = HttpFlow(args.flow)
    tokens = Tokens(args.api_tokens.split(","), store=state)  # as the gateway: tokens in the store count too
    queue = JobQueue(ResultStore(args.results), flow, slots=args.slots, state=state, claimer=args.claimer)
    app = FastAPI()
    mount_service(app, queue, tokens, DEFAULT_LIMITS)
    running: list[asyncio.Task] = []
    app.add_event_handler("startup", lambda: running.append(asyncio.create_task(queue.run())))
    app.add_event_handler("shutdown", lambda: [task.cancel() for task in running])
    uvicorn.run(counting(app, counts), host="127.0.0.1", port=args.port, log_level="warning")


def run_sampler(args: argparse.Namespace) -> None:
    """Serve the fake sampler until terminated."""
    import uvicorn

    uvicorn.run(sampler_app(Path(args.results), args.step_s), host="127.0.0.1", port=args.port, log_level="warning")


# ----- the benchmark -----


class Processes:
    """Child processes (each in its own session, its output in a log file), stopped together."""

    def __init__(self, folder: Path):
        self.folder = folder
        self.started: list[tuple[str, subprocess.Popen]] = []

    def start(self, name: str, command: list[str], env: dict[str, str] | None = None) -> subprocess.Popen:
        log = open(self.folder / f"{name}.log", "w")  # noqa: SIM115 (open for the process's whole life)
        child = subprocess.Popen(
            command, env={**os.environ, **(env or {})}, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        self.started.append((name, child))
        return child

    def check(self) -> None:
        for name, child in self.started:
            if child.poll() is not None:
                sys.exit(f"{name} exited with {child.returncode}:\n{self.log(name)[-3000:]}")

    def log(self, name: str) -> str:
        return (self.folder / f"{name}.log").read_text()

    def stop(self) -> None:
        for _, child in reversed(self.started):
            if child.poll() is None:
                os.killpg(child.pid, signal.SIGTERM)
        for _, child in self.started:
            try:
                child.wait(60)
            except subprocess.TimeoutExpired:
                os.killpg(child.pid, signal.SIGKILL)


async def wait_until_up(url: str, processes: Processes, timeout_s: float = 300) -> None:
    """Return once ``url`` answers; exit with a child's log when one dies, or after ``timeout_s``."""
    import httpx

    deadline = time.time() + timeout_s
    async with httpx.AsyncClient(timeout=5) as http:
        while True:
            processes.check()
            try:
                if (await http.get(url)).status_code < 500:
                    return
            except httpx.HTTPError:
                pass
            if time.time() > deadline:
                sys.exit(f"{url} did not answer within {timeout_s:.0f} s")
            await asyncio.sleep(0.3)


async def events_page(http, gateway: str, token: str, seen: dict[str, int]) -> None:
    """A page that follows its token's jobs by events: ``GET /jobs`` once, then the event stream."""
    headers = {"Authorization": f"Bearer {token}"}
    (await http.get(f"{gateway}/jobs", headers=headers)).raise_for_status()
    async with http.stream("GET", f"{gateway}/jobs/events", headers=headers) as stream:
        async for line in stream.aiter_lines():
            if line.startswith("event: "):
                kind = line.removeprefix("event: ")
                seen[kind] = seen.get(kind, 0) + 1


async def polling_page(http, gateway: str, token: str, every_s: float, seen: dict[str, int]) -> None:
    """A page that follows its token's jobs by asking ``GET /jobs`` every ``every_s`` seconds."""
    headers = {"Authorization": f"Bearer {token}"}
    while True:
        asked = time.monotonic()
        (await http.get(f"{gateway}/jobs", headers=headers)).raise_for_status()
        seen["GET /jobs"] = seen.get("GET /jobs", 0) + 1
        await asyncio.sleep(max(0.0, every_s - (time.monotonic() - asked)))


async def counters(http, gateways: list[str]) -> list[dict[str, Any]]:
    """Each gateway's counts now: requests by kind and its store's statements (``counting``)."""
    return [(await http.get(f"{g}{COUNTERS_PATH}")).json() for g in gateways]


def _difference(after: list[dict], before: list[dict]) -> dict[str, Any]:
    """Requests by kind and store statements and transactions between two readings, all gateways together."""
    requests: dict[str, int] = {}
    for new, old in zip(after, before, strict=True):
        for kind, n in new["requests"].items():
            requests[kind] = requests.get(kind, 0) + n - old["requests"].get(kind, 0)
    store = {
        name: sum(new["store"][name] - old["store"][name] for new, old in zip(after, before, strict=True))
        for name in ("statements", "transactions")
    }
    by: dict[str, int] = {}
    for new, old in zip(after, before, strict=True):
        for name, n in new["store"]["statements_by"].items():
            by[name] = by.get(name, 0) + n - old["store"]["statements_by"].get(name, 0)
    by = {k: v for k, v in sorted(by.items(), key=lambda kv: -kv[1]) if v}
    return {"requests": {k: v for k, v in sorted(requests.items()) if v}, **store, "statements_by": by}


async def run_idle_phase(
    phase: str, args: argparse.Namespace, gateways: list[str], tokens: list[str]
) -> dict[str, Any]:
    """``--idle-s`` seconds without a job, with the event streams of ``--pages`` pages open
    (``idle-events``) or none (``idle``); its figures: requests and store statements per second."""
    import httpx

    limits = httpx.Limits(max_connections=args.pages + 20, max_keepalive_connections=args.pages + 20)
    async with httpx.AsyncClient(timeout=httpx.Timeout(60, read=None), limits=limits) as http:
        seen: list[dict[str, int]] = [{} for _ in range(args.pages)]
        pages = [
            asyncio.create_task(events_page(http, gateways[k % len(gateways)], tokens[k % len(tokens)], seen[k]))
            for k in range(args.pages if phase == "idle-events" else 0)
        ]
        await asyncio.sleep(1.0)  # the streams are open
        before, started = await counters(http, gateways), time.time()
        await asyncio.sleep(args.idle_s)
        ended = time.time()
        after = await counters(http, gateways)
        for task in pages:
            task.cancel()
        await asyncio.gather(*pages, return_exceptions=True)
    elapsed = ended - started
    cost = _difference(after, before)
    return {
        "phase": phase,
        "pages": len(pages),
        "seconds": elapsed,
        "jobs": 0,
        "lost": 0,
        "requests": cost["requests"],
        "requests_per_s": sum(cost["requests"].values()) / elapsed,
        "statements_per_s": cost["statements"] / elapsed,
        "transactions_per_s": cost["transactions"] / elapsed,
        "statements_per_s_by": {name: n / elapsed for name, n in cost["statements_by"].items()},
    }


async def run_phase(
    phase: str,
    args: argparse.Namespace,
    gateways: list[str],
    tokens: list[str],
    database: str,
    sampler: str | None,
    flow_results: Path | None = None,
) -> dict[str, Any]:
    """One run of the workload with the pages of ``phase``; its figures."""
    import httpx

    from disco_service.server.store import open_store
    from disco_service.wire import JobStatus

    settings = {
        "text_prompts": ["a lighthouse in a storm:1"], "width_height": [args.size, args.size], "steps": args.steps,
        "skip_steps": 0, "display_rate": args.steps, "n_batches": 1, "cutn_batches": 1,
        "cut_overview": "[1]*1000", "cut_innercut": "[1]*1000",
    }  # fmt: skip
    limits = httpx.Limits(max_connections=args.pages + 20, max_keepalive_connections=args.pages + 20)
    async with httpx.AsyncClient(timeout=httpx.Timeout(60, read=None), limits=limits) as http:
        if sampler:
            await http.post(f"{sampler}/reset")
        seen: list[dict[str, int]] = [{} for _ in range(args.pages)]
        pages: list[asyncio.Task] = []
        for k in range(args.pages if phase != "none" else 0):
            gateway, token = gateways[k % len(gateways)], tokens[k % len(tokens)]
            if phase == "events":
                pages.append(asyncio.create_task(events_page(http, gateway, token, seen[k])))
            else:
                pages.append(asyncio.create_task(polling_page(http, gateway, token, args.poll_s, seen[k])))
        await asyncio.sleep(1.0)  # the pages are open (their first requests answered) before the jobs come
        before, started = await counters(http, gateways), time.time()
        jobs = []
        for k in range(args.jobs):
            gateway, token = gateways[k % len(gateways)], tokens[k % len(tokens)]
            answer = await http.post(f"{gateway}/jobs", json=settings, headers={"Authorization": f"Bearer {token}"})
            answer.raise_for_status()
            jobs.append(answer.json()["id"])
        with open_store(database) as store:  # read here, not through the gateways: uncounted
            while True:
                stored = [store.get_job(j) for j in jobs]
                images = store.images_of(jobs)
                if all(JobStatus(i.status).finished for j in jobs for i in images[j]):
                    break
                for task in pages:
                    if task.done() and task.exception():
                        raise task.exception()
                await asyncio.sleep(0.2)
        ended = time.time()
        await asyncio.sleep(1.0)  # the last events reach the pages
        after = await counters(http, gateways)
        for task in pages:
            task.cancel()
        await asyncio.gather(*pages, return_exceptions=True)
        stats = (await http.get(f"{sampler}/stats")).json() if sampler else None
    elapsed = ended - started
    all_images = [(j, i) for j in stored for i in images[j.id]]
    waits = [i.first_sent - j.created for j, i in all_images if i.first_sent]
    runs = [i.finished - i.first_sent for j, i in all_images if i.first_sent and i.finished]
    doc_ids = {i.doc_id for _, i in all_images}
    cost = _difference(after, before)
    figures: dict[str, Any] = {
        "phase": phase,
        "pages": len(pages),
        "seconds": elapsed,
        "jobs": len(jobs),
        "statuses": {s: sum(i.status == s for _, i in all_images) for s in sorted({i.status for _, i in all_images})},
        "lost": sum(i.status != "done" for _, i in all_images),
        "errors": sorted({f"{i.error_code}: {i.error}" for _, i in all_images if i.error})[:5],
        "wait_s": {"p50": percentile(waits, 0.5), "p95": percentile(waits, 0.95), "max": max(waits)},
        "run_s": {"p50": percentile(runs, 0.5), "p95": percentile(runs, 0.95), "max": max(runs)},
        "requests": cost["requests"],
        "requests_per_s": sum(cost["requests"].values()) / elapsed,
        "statements_per_s": cost["statements"] / elapsed,
        "transactions_per_s": cost["transactions"] / elapsed,
        "statements_per_s_by": {name: n / elapsed for name, n in cost["statements_by"].items()},
        "page_saw": {kind: sum(s.get(kind, 0) for s in seen) for kind in sorted({k for s in seen for k in s})},
    }
    if phase == "events":  # each page hears the end of every job of its token, whichever gateway ran it
        of_token = [sum(1 for j in range(args.jobs) if j % len(tokens) == k % len(tokens)) for k in range(len(pages))]
        figures.update(done_events=figures["page_saw"].get("done", 0), done_events_expected=sum(of_token))
    if flow_results is not None:  # the served Flow: one record per Document id it ran (a reused id it refuses)
        from disco_service.server.results import ResultStore

        kept = ResultStore(flow_results)
        figures["records"] = sum(kept.read(doc_id) is not None for doc_id in doc_ids)
    if stats is not None:
        mine = [entry for entry in stats["sent"] if entry[0] in doc_ids]
        sent_ids = [entry[0] for entry in mine]
        figures.update(sent=len(sent_ids), sent_twice=len(sent_ids) - len(set(sent_ids)), peak_in_flight=stats["peak"])
    return figures


def start_real_flow(model_dir: Path, slots: int, folder: Path, processes: Processes, token: str) -> str:
    """Start ``serve.py`` with ``slots`` sampler replicas on ``model_dir``'s weights; its gRPC address.
    It keeps its results in ``folder/flow-results``, its own: its caller is the gateways' ``token``,
    not the jobs' owners, whom the gateways record as the owners in their result folder."""
    grpc_port, http_port = free_port(), free_port()
    ready = folder / "flow-ready"
    env = {"DISCO_MODEL_DIR": str(model_dir), "DISCO_API_TOKENS": token, "PYTHONUNBUFFERED": "1"}
    env.update(DISCO_JOBS_DIR=str(folder / "flow-jobs"), DISCO_RESULTS_DIR=str(folder / "flow-results"))
    env.update(DISCO_STATE_DIR=str(folder / "flow-state"))
    command = [sys.executable, str(ROOT / "serve.py"), f"--port={grpc_port}", f"--http-port={http_port}",
               f"--replicas={slots}", f"--ready-file={ready}", "--quiet"]  # fmt: skip
    processes.start("flow", command, env)
    deadline = time.time() + 600
    while not ready.exists():
        processes.check()
        if time.time() > deadline:
            sys.exit("serve.py was not ready within 600 s")
        time.sleep(0.5)
    return f"grpc://127.0.0.1:{grpc_port}"


def markdown(result: dict[str, Any]) -> str:
    """The result as a markdown table, phases side by side, and the ratio polling / events."""
    phases = {p["phase"]: p for p in result["phases"]}
    rows = [
        ("queue wait p50 / p95 (s)", lambda p: f"{p['wait_s']['p50']:.2f} / {p['wait_s']['p95']:.2f}"),
        ("run time p50 / p95 (s)", lambda p: f"{p['run_s']['p50']:.2f} / {p['run_s']['p95']:.2f}"),
        ("jobs done / lost", lambda p: f"{p['jobs'] - p['lost']} / {p['lost']}"),
        ("Document ids sent / sent twice", lambda p: f"{p.get('sent', '-')} / {p.get('sent_twice', '-')}"),
        ("the Flow's result records", lambda p: f"{p.get('records', '-')}"),
        ("most in flight (slots)", lambda p: f"{p.get('peak_in_flight', '-')} ({result['slots']})"),
        (
            "end events the pages got / expected",
            lambda p: f"{p['done_events']} / {p['done_events_expected']}" if "done_events" in p else "-",
        ),
        ("requests/s at the gateways", lambda p: f"{p['requests_per_s']:.1f}"),
        ("store statements/s", lambda p: f"{p['statements_per_s']:.0f}"),
        ("store transactions/s", lambda p: f"{p['transactions_per_s']:.0f}"),
        ("seconds", lambda p: f"{p['seconds']:.1f}"),
    ]
    askers = sorted({name for p in phases.values() for name in p["statements_per_s_by"]})
    for name in askers:
        label = f"... {ROLES.get(name, name)} ({name}.py)"
        rows.insert(-2, (label, lambda p, name=name: f"{p['statements_per_s_by'].get(name, 0):.0f}"))
    head = "| | " + " | ".join(f"{name} ({phases[name]['pages']} pages)" for name in phases) + " |"
    lines = [head, "|---" * (len(phases) + 1) + "|"]

    def cell(show, phase: dict[str, Any]) -> str:
        try:
            return show(phase)
        except (KeyError, TypeError):  # a figure this phase has not (an idle phase: no jobs)
            return "-"

    for label, show in rows:
        cells = [cell(show, phases[name]) for name in phases]
        if any(cell not in ("-", "- / -") for cell in cells):  # a row that applies to no phase is left out
            lines.append(f"| {label} | " + " | ".join(cells) + " |")
    if result.get("ideal_seconds"):
        lines += [
            "",
            f"The fake sampler's work alone, on {result['slots']} slots, takes {result['ideal_seconds']:.1f} s "
            "a phase.",
        ]
    ratio = result.get("polling_over_events")
    if ratio:
        lines += [
            "",
            f"Polling / events: {ratio['requests_per_s']:.1f}x the requests per second, "
            f"{ratio['statements_per_s']:.1f}x the store statements per second in all, "
            f"{ratio['request_statements_per_s']:.1f}x those run to answer requests.",
        ]
    return "\n".join(lines) + "\n"


def ratios(phases: dict[str, dict[str, Any]]) -> dict[str, float] | None:
    """Polling over events: requests/s, all store statements/s, and the statements/s run to answer
    requests (what the pages' requests cost the store; the event hub's reads for the open streams
    are in the statements in all)."""
    if not {"events", "polling"} <= phases.keys():
        return None
    events, polling = phases["events"], phases["polling"]

    def answering(phase: dict[str, Any]) -> float:
        return phase["statements_per_s_by"].get(ANSWERING_REQUESTS, 0.0)

    return {
        "requests_per_s": polling["requests_per_s"] / max(events["requests_per_s"], 1e-9),
        "statements_per_s": polling["statements_per_s"] / max(events["statements_per_s"], 1e-9),
        "request_statements_per_s": answering(polling) / max(answering(events), 1e-9),
    }


def problems(result: dict[str, Any]) -> list[str]:
    """What went wrong in a run: jobs not done, a Document id sent twice, more images in flight than
    slots, a job the Flow kept no record of, end events a page on PostgreSQL did not get."""
    found = []
    for p in result["phases"]:
        name = p["phase"]
        if p["lost"]:
            found.append(f"{name}: {p['lost']} of {p['jobs']} jobs not done ({'; '.join(p['errors'])})")
        if p.get("sent_twice"):
            found.append(f"{name}: {p['sent_twice']} Document ids sent twice")
        if p.get("peak_in_flight", 0) > result["slots"]:
            found.append(f"{name}: {p['peak_in_flight']} images in flight on {result['slots']} slots")
        if "records" in p and p["records"] != p["jobs"]:
            found.append(f"{name}: the Flow kept {p['records']} records of {p['jobs']} images")
        if result["backend"] == "postgresql" and p.get("done_events") != p.get("done_events_expected"):
            found.append(f"{name}: the pages got {p['done_events']} of {p['done_events_expected']} end events")
    return found


def open_database(choice: str, folder: Path) -> tuple[str, str, Any]:
    """The state store's URL for ``choice`` (auto, postgresql, sqlite, or a URL), its backend's
    name, and a cluster to stop afterwards (or None). Exits when PostgreSQL is asked for and missing."""
    if choice.startswith(("postgresql://", "postgres://")):
        return choice, "postgresql", None
    if choice in ("auto", "postgresql"):
        sys.path.insert(0, str(ROOT / "tests"))
        from pg_cluster import INSTALL_HINT, cluster

        found = cluster()
        if found is not None:
            return found.new_database(), "postgresql", found
        if choice == "postgresql":
            sys.exit(INSTALL_HINT)
    return f"sqlite:///{folder / 'state.sqlite3'}", "sqlite", None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=40, help="one-image jobs per phase (default 40)")
    parser.add_argument("--tokens", type=int, default=5, help="callers, one token each (default 5)")
    parser.add_argument("--pages", type=int, default=20, help="open pages while following (default 20)")
    parser.add_argument("--gateways", type=int, default=2, help="gateway processes (default 2)")
    parser.add_argument("--slots", type=int, default=2, help="the sampler's slots (default 2)")
    parser.add_argument("--steps", type=int, default=20, help="steps of each image (default 20)")
    parser.add_argument("--step-s", type=float, default=0.05, help="the fake sampler's seconds per step (default 0.05)")
    parser.add_argument("--size", type=int, default=64, help="width and height of each image (default 64)")
    parser.add_argument("--poll-s", type=float, default=1.0, help="a polling page's period (default 1 s)")
    parser.add_argument("--idle-s", type=float, default=10.0, help="length of the idle phases (default 10 s)")
    parser.add_argument("--phases", default=",".join(PHASES), help="phases, in order (default all)")
    parser.add_argument("--database", default="auto", help="auto, postgresql, sqlite or a URL")
    parser.add_argument("--real", type=Path, metavar="MODEL_DIR", help="serve a Flow on these weights")
    parser.add_argument("--out", type=Path, help="the JSON file (default in benchmarks/results)")
    parser.add_argument("--note", default="", help="a line kept with the results (e.g. what else ran on the machine)")
    args = parser.parse_args(argv)
    phases_asked = [p for p in args.phases.split(",") if p]
    if unknown := set(phases_asked) - set(PHASES):
        parser.error(f"unknown phases {sorted(unknown)}; known: {', '.join(PHASES)}")

    tokens = [f"load-token-{k}-{os.urandom(8).hex()}" for k in range(args.tokens)]
    with tempfile.TemporaryDirectory(prefix="disco-load-") as tmp:
        folder = Path(tmp)
        database, backend, cluster = open_database(args.database, folder)
        processes = Processes(folder)
        results_dir = folder / "results"
        env = {"PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
        try:
            flow_token = f"load-flow-{os.urandom(8).hex()}"
            flow_results = folder / "flow-results" if args.real else None
            if args.real:
                flow, sampler = start_real_flow(args.real, args.slots, folder, processes, flow_token), None
            else:
                port = free_port()
                flow = sampler = f"http://127.0.0.1:{port}"
                role = [sys.executable, __file__, "--role=sampler", f"--port={port}", f"--results={results_dir}"]
                processes.start("sampler", [*role, f"--step-s={args.step_s}"], env)
            gateways = []
            for k in range(args.gateways):
                port = free_port()
                command = [sys.executable, __file__, "--role=gateway", f"--port={port}", f"--results={results_dir}",
                           f"--database={database}", f"--flow={flow}", f"--flow-token={flow_token}",
                           f"--slots={args.slots}", f"--claimer=gateway-{k}",
                           f"--api-tokens={','.join(tokens)}"]  # fmt: skip
                processes.start(f"gateway-{k}", command, env)
                gateways.append(f"http://127.0.0.1:{port}")
            for url in [*(f"{g}{COUNTERS_PATH}" for g in gateways), *([f"{sampler}/stats"] if sampler else [])]:
                asyncio.run(wait_until_up(url, processes))
            print(f"{args.gateways} gateways on {backend}, {'a served Flow' if args.real else 'the fake sampler'} "
                  f"with {args.slots} slots", flush=True)  # fmt: skip
            phases = []
            for phase in phases_asked:
                if phase.startswith("idle"):
                    figures = asyncio.run(run_idle_phase(phase, args, gateways, tokens))
                else:
                    figures = asyncio.run(run_phase(phase, args, gateways, tokens, database, sampler, flow_results))
                processes.check()
                phases.append(figures)
                wait = f", wait p50 {figures['wait_s']['p50']:.2f} s" if "wait_s" in figures else ""
                print(f"{phase}: {figures['seconds']:.1f} s{wait}, {figures['requests_per_s']:.1f} requests/s, "
                      f"{figures['statements_per_s']:.0f} statements/s", flush=True)  # fmt: skip
        finally:
            processes.stop()
            if cluster is not None:
                cluster.stop()

    by_name = {p["phase"]: p for p in phases}
    result = {
        "backend": backend, "gateways": args.gateways, "slots": args.slots, "tokens": args.tokens,
        "jobs": args.jobs, "pages": args.pages, "poll_s": args.poll_s, "steps": args.steps, "idle_s": args.idle_s,
        "sampler": f"served Flow on {args.real}" if args.real else f"fake: {args.step_s} s a step",
        "cpu_count": os.cpu_count(), "note": args.note, "date": time.strftime("%Y-%m-%d %H:%M:%S"),
        "ideal_seconds": None if args.real else -(-args.jobs // args.slots) * args.steps * args.step_s,
        "phases": phases, "polling_over_events": ratios(by_name),
    }  # fmt: skip
    table = markdown(result)
    print(table)
    out = args.out or RESULTS / f"load-{backend}-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1) + "\n")
    out.with_suffix(".md").write_text(table)
    print(f"wrote {out} and {out.with_suffix('.md').name}")
    for problem in problems(result):
        print(f"FAILED {problem}")
    return 1 if problems(result) else 0


def role_main(argv: list[str]) -> None:
    """A child's entry: ``--role=gateway`` or ``--role=sampler`` with its options."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--role", choices=("gateway", "sampler"), required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--results", type=Path, required=True)
    parser.add_argument("--step-s", type=float, default=0.05)
    parser.add_argument("--database")
    parser.add_argument("--flow")
    parser.add_argument("--flow-token", default="")
    parser.add_argument("--slots", type=int, default=1)
    parser.add_argument("--claimer")
    parser.add_argument("--api-tokens", default="")
    args = parser.parse_args(argv)
    (run_gateway if args.role == "gateway" else run_sampler)(args)


if __name__ == "__main__":
    if any(a.startswith("--role") for a in sys.argv[1:]):
        role_main(sys.argv[1:])
    else:
        sys.exit(main())
