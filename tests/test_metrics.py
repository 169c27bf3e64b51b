"""``GET /metrics`` in-process (the app called through httpx's ASGI transport), on SQLite and
PostgreSQL: the text parses as Prometheus', its numbers follow jobs as they are submitted, sent,
run and finished, two gateways of one store report the same numbers, and every metric is named in
the docs."""

import asyncio
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI
from prometheus_client.parser import text_string_to_metric_families

from disco_service.server import metrics
from disco_service.server.store import open_store

ROOT = Path(__file__).resolve().parent.parent
LEASE_S = 30.0


class Clock:
    def __init__(self, now: float = 1_800_000_000.0):
        self.now = now

    def __call__(self) -> float:
        return self.now


class InProcess:
    """Calls an ASGI app in this process, one request at a time (no server, no port)."""

    def __init__(self, app):
        self.app = app

    def get(self, path: str) -> httpx.Response:
        async def call() -> httpx.Response:
            transport = httpx.ASGITransport(app=self.app)
            async with httpx.AsyncClient(transport=transport, base_url="http://gateway") as client:
                return await client.get(path)

        return asyncio.run(call())


def scrape(client: InProcess) -> dict[tuple[str, tuple], float]:
    """Every sample of ``GET /metrics``: (name, sorted labels) -> value."""
    answer = client.get("/metrics")
    assert answer.status_code == 200 and answer.headers["content-type"].startswith("text/plain")
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(answer.text)
        for sample in family.samples
    }


def gateway(store, slots: int = 2) -> InProcess:
    app = FastAPI()
    metrics.mount(app, store, slots)
    return InProcess(app)


def test_the_numbers_follow_jobs_from_submission_to_their_end(target):
    clock = Clock()
    store, other = open_store(target, clock), open_store(target, clock)  # two gateways, one store
    try:
        first, second = gateway(store), gateway(other)
        empty = scrape(first)
        assert empty[("disco_jobs", (("status", "queued"),))] == 0 and empty[("disco_images_in_flight", ())] == 0
        assert empty[("disco_sampler_slots", ())] == 2
        assert empty[("disco_image_queue_wait_seconds_count", ())] == 0

        store.submit("j1", "alice", {"steps": 10}, [1, 2])
        store.submit("j2", "bob", {"steps": 10}, [3])
        seen = scrape(second)  # the other gateway sees the jobs it did not take
        assert seen[("disco_jobs", (("status", "queued"),))] == 2
        assert seen[("disco_images", (("status", "queued"),))] == 3

        clock.now += 12  # 12 s in the queue
        image = store.claim_next("gw-a", LEASE_S, slots=2)
        store.mark_sent(image.doc_id, "gw-a")
        store.update_progress(image.doc_id, status="running", started=clock.now + 1, step=0, total=10)
        seen = scrape(first)
        assert seen[("disco_images_in_flight", ())] == 1
        assert seen[("disco_jobs", (("status", "running"),))] == 1
        assert seen[("disco_jobs", (("status", "queued"),))] == 1
        assert seen[("disco_image_queue_wait_seconds_count", ())] == 1
        assert seen[("disco_image_queue_wait_seconds_sum", ())] == pytest.approx(12)
        assert seen[("disco_image_queue_wait_seconds_bucket", (("le", "5.0"),))] == 0
        assert seen[("disco_image_queue_wait_seconds_bucket", (("le", "15.0"),))] == 1

        clock.now += 21  # started 1 s after sending, ended 20 s after starting: 2 s a step
        store.finish(image.doc_id, "done", step=10, total=10)
        store.request_cancel("j2")
        seen = scrape(first)
        assert seen[("disco_images_in_flight", ())] == 0
        assert seen[("disco_images_ended_total", (("outcome", "done"),))] == 1
        assert seen[("disco_images_ended_total", (("outcome", "cancelled"),))] == 1
        assert seen[("disco_jobs", (("status", "cancelled"),))] == 1  # j2's image was never sent
        assert seen[("disco_jobs", (("status", "running"),))] == 1  # j1: one image done, one queued still
        assert seen[("disco_jobs", (("status", "queued"),))] == 0
        assert seen[("disco_image_run_seconds_sum", ())] == pytest.approx(20)
        assert seen[("disco_image_step_seconds_count", ())] == 1
        assert seen[("disco_image_step_seconds_sum", ())] == pytest.approx(2)
        assert seen[("disco_image_step_seconds_bucket", (("le", "1.0"),))] == 0
        assert seen[("disco_image_step_seconds_bucket", (("le", "2.0"),))] == 1
        assert seen[("disco_image_step_seconds_bucket", (("le", "+Inf"),))] == 1
        assert scrape(second) == {**seen, ("disco_sampler_slots", ()): 2}  # the same numbers from either gateway
    finally:
        store.close()
        other.close()


def test_a_store_out_of_reach_answers_503(tmp_path):
    store = open_store(tmp_path / "jobs.sqlite3")
    client = gateway(store)
    store.close()  # every read now fails
    answer = client.get("/metrics")
    assert answer.status_code == 503 and "state store" in answer.text


def test_every_metric_is_named_in_the_docs():
    text = (ROOT / "docs" / "serving.md").read_text()
    for name in metrics.METRICS:
        assert f"`{name}`" in text, name


def test_the_served_gateway_answers_metrics_for_its_jobs(served_http):
    from conftest import TINY
    from test_jobs import call, wait_for_job

    status, job = call("POST", f"{served_http}/jobs", {**TINY, "n_batches": 2, "seed": 41})
    assert status == 202
    wait_for_job(served_http, job["id"], lambda j: j["status"] not in ("queued", "running"))
    status, text = call("GET", f"{served_http}/metrics")
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text.decode())
        for s in family.samples
    }
    assert status == 200 and samples[("disco_images_ended_total", (("outcome", "done"),))] >= 2
    assert samples[("disco_image_run_seconds_count", ())] >= 2 and samples[("disco_sampler_slots", ())] == 1
    assert samples[("disco_image_step_seconds_sum", ())] > 0
