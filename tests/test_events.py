"""Jobs followed by Server-Sent Events, in this process (a fake Flow, the ASGI app called directly).

What is checked: a submitted job's events arrive in order through to its end (queued, sent,
started, step, frame, image_ended, done), another token's stream gets none of them (heartbeats
only), a client that reconnects with ``Last-Event-ID`` gets what it missed (or ``resync``), and
with PostgreSQL an event of a job run by one gateway reaches a stream on another.
"""

import asyncio
import base64
import json
import time

import pytest
from fastapi import FastAPI
from test_job_queue import FakeFlow, png, settings

from disco.settings import DEFAULT_LIMITS
from disco_service import transport
from disco_service.server import events, http_api, job_queue
from disco_service.server.job_queue import JobQueue
from disco_service.server.results import ResultStore
from disco_service.server.tokens import Tokens, fingerprint

ALICE, BOB = "alice-token-0123456789", "bob-token-0123456789ab"


class SlowFlow(FakeFlow):
    """A fake Flow whose images run until released, with the progress the test sets."""

    def __init__(self, store):
        super().__init__(store)
        self.release = asyncio.Event()

    async def generate(self, doc):
        await self.release.wait()
        return await super().generate(doc)

    async def progress(self, ids, frame=False, keep_alive=True):
        docs = await super().progress(ids)
        if frame:
            for doc in docs:
                doc.uri = "data:image/png;base64," + base64.b64encode(png()).decode()
        return docs


@pytest.fixture(autouse=True)
def quick(monkeypatch):
    monkeypatch.setattr(job_queue, "POLL_S", 0.01)
    monkeypatch.setattr(transport, "RETRY", transport.RetryPolicy(pause_s=0))


def service(store: ResultStore, flow, state=None) -> tuple[FastAPI, JobQueue, events.EventHub]:
    queue = JobQueue(store, flow, state=state)
    hub = events.EventHub(queue, heartbeat_s=0.2)
    app = FastAPI()
    tokens = Tokens([ALICE], [BOB])  # bob is an operator
    events.mount(app, hub, tokens.is_admin)
    http_api.mount(app, queue, tokens, DEFAULT_LIMITS)
    return app, queue, hub


class Stream:
    """One open ``GET /jobs/events`` on an ASGI app: its events as they arrive, its heartbeats."""

    def __init__(self, app, token: str, last_event_id: str | None = None, query: bytes = b""):
        self.events: list[dict] = []
        self.heartbeats = 0
        self._text = ""
        self._gone = asyncio.Event()
        headers = [(b"authorization", f"Bearer {token}".encode())]
        if last_event_id:
            headers.append((b"last-event-id", last_event_id.encode()))
        scope = {
            "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "GET", "scheme": "http",
            "path": "/jobs/events", "raw_path": b"/jobs/events", "query_string": query, "root_path": "",
            "headers": headers, "client": ("127.0.0.1", 1), "server": ("test", 80),
        }  # fmt: skip
        self.status: int | None = None
        self.task = asyncio.create_task(app(scope, self._receive, self._send))

    async def _receive(self):
        await self._gone.wait()
        return {"type": "http.disconnect"}

    async def _send(self, message):
        if message["type"] == "http.response.start":
            self.status = message["status"]
            return
        self._text += message.get("body", b"").decode()
        while "\n\n" in self._text:
            block, self._text = self._text.split("\n\n", 1)
            fields = dict(line.split(": ", 1) for line in block.splitlines() if ": " in line and line[0] != ":")
            if block.startswith(": heartbeat"):
                self.heartbeats += 1
            if "data" in fields:
                self.events.append({"id": fields["id"], "event": fields["event"], **json.loads(fields["data"])})

    def types(self) -> list[str]:
        return [e["event"] for e in self.events]

    async def until(self, condition, timeout: float = 10) -> None:
        deadline = time.time() + timeout
        while not condition():
            assert time.time() < deadline, f"timed out; events so far: {self.types()}"
            await asyncio.sleep(0.01)

    async def close(self) -> None:
        self._gone.set()
        await asyncio.wait_for(self.task, 5)


def test_a_job_s_events_arrive_in_order_and_only_on_its_token_s_stream(tmp_path):
    async def scenario():
        store = ResultStore(tmp_path / "results", ttl_s=3600)
        flow = SlowFlow(store)
        app, queue, hub = service(store, flow)
        await app.router.startup()
        running = asyncio.create_task(queue.run())
        mine, theirs = Stream(app, ALICE), Stream(app, BOB)
        await asyncio.sleep(0.05)
        job = queue.submit(fingerprint(ALICE), settings())
        await mine.until(lambda: "sent" in mine.types())
        doc_id = job.images[0].doc_id
        flow.states[doc_id] = {"status": "running", "step": 1, "total": 3, "started": time.time()}
        await mine.until(lambda: "started" in mine.types())
        flow.states[doc_id] = {"status": "running", "step": 2, "total": 3, "frame_step": 2, "started": time.time()}
        await mine.until(lambda: "frame" in mine.types() and "step" in mine.types())
        flow.release.set()
        await mine.until(lambda: "done" in mine.types())
        await theirs.until(lambda: theirs.heartbeats >= 2)
        running.cancel()
        await mine.close()
        await theirs.close()
        hub.stop()
        return mine, theirs, job

    mine, theirs, job = asyncio.run(scenario())
    assert mine.status == 200
    kinds = mine.types()
    assert kinds[:3] == ["queued", "sent", "started"] and kinds[-2:] == ["image_ended", "done"], kinds
    assert kinds.index("step") < kinds.index("image_ended") and kinds.index("frame") < kinds.index("image_ended")
    assert all(e["job"]["id"] == job.id for e in mine.events)
    assert mine.events[-1]["job"]["status"] == "done" and mine.events[-1]["job"]["images"][0]["png"]
    step = next(e for e in mine.events if e["event"] == "step")
    assert (step["image"], step["job"]["images"][0]["step"]) == (0, 2)
    assert theirs.events == [] and theirs.heartbeats >= 2  # another token's stream hears nothing of it


def test_a_client_that_reconnects_gets_what_it_missed_or_is_told_to_read_again(tmp_path):
    async def scenario():
        store = ResultStore(tmp_path / "results", ttl_s=3600)
        app, queue, hub = service(store, FakeFlow(store))
        await app.router.startup()
        first, other_tab = Stream(app, ALICE), Stream(app, ALICE)
        await asyncio.sleep(0.05)
        queue.submit(fingerprint(ALICE), settings())
        await first.until(lambda: first.types() == ["queued"])
        await first.close()
        running = asyncio.create_task(queue.run())  # runs while the first stream is away (another tab listens)
        await other_tab.until(lambda: "done" in other_tab.types())
        again = Stream(app, ALICE, last_event_id=first.events[-1]["id"])
        await again.until(lambda: "done" in again.types())
        lost = Stream(app, ALICE, last_event_id="another-gateway-12")
        await lost.until(lambda: lost.types() == ["resync"])
        await again.close()
        await lost.close()
        await other_tab.close()
        last = other_tab.events[-1]["id"]
        queue.submit(fingerprint(ALICE), settings(seed=5))  # runs while nobody listens: its changes are not read
        await asyncio.sleep(0.3)
        unheard = Stream(app, ALICE, last_event_id=last)
        await unheard.until(lambda: unheard.types() == ["resync"])
        running.cancel()
        await unheard.close()
        hub.stop()
        return again

    again = asyncio.run(scenario())
    assert again.types() == ["sent", "image_ended", "done"]


def test_the_hub_reads_nothing_while_nobody_listens_and_only_the_jobs_of_those_who_do(tmp_path):
    from benchmarks.load import count_statements

    async def scenario():
        store = ResultStore(tmp_path / "results", ttl_s=3600)
        state = job_queue.open_store(tmp_path / "state.sqlite3")
        counts = count_statements(state)
        app, queue, hub = service(store, FakeFlow(store), state=state)
        await app.router.startup()
        running = asyncio.create_task(queue.run())

        async def run_job(owner: str, seed: int) -> int:
            """The statements the hub ran while one job of ``owner`` went from submitted to done."""
            before = counts["statements_by"].get("events", 0)
            job = queue.submit(owner, settings(seed=seed, n=2))
            await queue.wait(job.id)
            await asyncio.sleep(0.2)  # the last changes reach the hub
            return counts["statements_by"].get("events", 0) - before

        nobody = await run_job(fingerprint(ALICE), 1)
        stream = Stream(app, BOB)  # bob follows his own jobs only
        await asyncio.sleep(0.05)
        of_others = await run_job(fingerprint(ALICE), 2)
        of_his_own = await run_job(fingerprint(BOB), 3)
        running.cancel()
        await stream.close()
        hub.stop()
        return nobody, of_others, of_his_own, stream

    nobody, of_others, of_his_own, stream = asyncio.run(scenario())
    assert nobody == 0  # no stream open: not one statement
    assert of_others == 1  # the owner of alice's job, read once; her job's changes are not read
    assert of_his_own >= 4 and "done" in stream.types()  # bob's own job is read at its changes


def test_with_postgresql_a_stream_on_one_gateway_follows_a_job_another_gateway_runs(tmp_path, postgres):
    url = postgres.new_database()

    async def scenario():
        store = ResultStore(tmp_path / "results", ttl_s=3600)
        flow = SlowFlow(store)
        runner_app, runner, runner_hub = service(store, flow, state=url)  # gateway A: runs the job
        watcher_app, watcher, watcher_hub = service(store, FakeFlow(store), state=url)  # gateway B: only streams
        await watcher_app.router.startup()
        stream = Stream(watcher_app, ALICE)
        await asyncio.sleep(0.3)  # B listens
        job = runner.submit(fingerprint(ALICE), settings())
        running = asyncio.create_task(runner.run())
        await stream.until(lambda: "sent" in stream.types())
        flow.release.set()
        await stream.until(lambda: "done" in stream.types())
        running.cancel()
        await stream.close()
        watcher_hub.stop()
        return stream, job

    stream, job = asyncio.run(scenario())
    assert stream.types() == ["queued", "sent", "image_ended", "done"], stream.types()
    assert {e["job"]["id"] for e in stream.events} == {job.id}


def test_a_queued_job_hears_that_its_place_in_line_moved(tmp_path):
    async def scenario():
        store = ResultStore(tmp_path / "results", ttl_s=3600)
        flow = SlowFlow(store)
        app, queue, hub = service(store, flow)
        await app.router.startup()
        stream = Stream(app, BOB)
        await asyncio.sleep(0.05)
        first = queue.submit(fingerprint(ALICE), settings(seed=1))
        second = queue.submit(fingerprint(ALICE), settings(seed=2))
        mine = queue.submit(fingerprint(BOB), settings(seed=3))  # 2nd in line: after alice's first, before her second
        await stream.until(lambda: stream.types() == ["queued"])
        assert stream.events[0]["job"]["position"] == 2
        running = asyncio.create_task(queue.run())  # alice's first image is sent: bob's job is next
        await stream.until(lambda: len(stream.events) >= 2)
        running.cancel()
        await stream.close()
        hub.stop()
        return stream, mine, (first, second)

    stream, mine, _ = asyncio.run(scenario())
    moved = stream.events[1]
    assert (moved["event"], moved["job"]["id"], moved["job"]["position"]) == ("update", mine.id, 1)


def test_an_operator_may_follow_every_job_and_nobody_else_may(tmp_path):
    async def scenario():
        store = ResultStore(tmp_path / "results", ttl_s=3600)
        app, queue, hub = service(store, FakeFlow(store))
        await app.router.startup()
        everything, refused = Stream(app, BOB, query=b"all=1"), Stream(app, ALICE, query=b"all=1")
        await asyncio.sleep(0.05)
        job = queue.submit(fingerprint(ALICE), settings())
        await everything.until(lambda: everything.types() == ["queued"])
        await everything.close()
        await refused.task
        hub.stop()
        return everything, refused, job

    everything, refused, job = asyncio.run(scenario())
    assert everything.events[0]["job"]["id"] == job.id
    assert refused.status == 403


def test_places_in_line_are_told_from_one_read_of_the_line_not_by_reading_every_queued_job(tmp_path):
    from benchmarks.load import count_statements

    n = 12

    async def scenario():
        store = ResultStore(tmp_path / "results", ttl_s=3600)
        state = job_queue.open_store(tmp_path / "state.sqlite3")
        counts = count_statements(state)
        app, queue, hub = service(store, FakeFlow(store), state=state)
        queue.max_jobs_per_owner = n
        await app.router.startup()
        stream = Stream(app, ALICE)
        await asyncio.sleep(0.05)
        jobs = [queue.submit(fingerprint(ALICE), settings(seed=s)) for s in range(n)]
        await stream.until(lambda: stream.types().count("queued") == n)
        before = counts["statements_by"].get("events", 0)
        running = asyncio.create_task(queue.run())
        for job in jobs:
            await queue.wait(job.id)
        await stream.until(lambda: stream.types().count("done") == n)
        running.cancel()
        await stream.close()
        hub.stop()
        return counts["statements_by"].get("events", 0) - before, stream, jobs

    statements, stream, jobs = asyncio.run(scenario())
    # each job's own changes (sent, ended, done) are read; the line once per change that moves it:
    # a few statements a job, where reading every queued job again at each move grows with n squared
    assert statements <= 6 * n, statements
    told = 0
    for place, job in enumerate(jobs, 1):  # each job's place only goes down before it is sent
        shown = [e["job"]["position"] for e in stream.events if e["job"]["id"] == job.id and e["event"] == "update"]
        first = next(e for e in stream.events if e["job"]["id"] == job.id)["job"]["position"]
        assert first == place and [first, *shown] == sorted(set([first, *shown]), reverse=True), (place, shown)
        told += len(shown)
    assert told >= n  # the moves were told (each send moves every job behind it; moves close together come as one)
