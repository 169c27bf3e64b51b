"""The operator, quotas and the gallery, in this process (a fake Flow, httpx's ASGI transport).

What is checked: an operator lists and cancels every token's job, pauses the queue (running
images finish, nothing new is sent) and drains it (new jobs refused with 503 and Retry-After);
tokens added and revoked in the state store count at the next request, also from the command
line; daily quotas refuse with the limit named and when it resets, the queue cap with 503; the
estimate route; a finished job deleted with its files, paging, and a job's files as one zip.
"""

import asyncio
import io
import zipfile

import httpx
import pytest
from fastapi import FastAPI
from test_job_queue import FakeFlow

from disco.settings import DEFAULT_LIMITS
from disco_service import transport
from disco_service.server import admin, estimates, gallery, http_api, job_queue
from disco_service.server import tokens as tokens_module
from disco_service.server.job_queue import JobQueue
from disco_service.server.quotas import Quota
from disco_service.server.results import ResultStore
from disco_service.server.tokens import Tokens, fingerprint

ALICE, BOB, BOSS = "alice-token-0123456789", "bob-token-0123456789ab", "boss-token-0123456789ab"
TINY = {"text_prompts": ["a lighthouse"], "width_height": [64, 64], "steps": 3, "skip_steps": 0, "n_batches": 1}


@pytest.fixture(autouse=True)
def quick(monkeypatch):
    monkeypatch.setattr(job_queue, "POLL_S", 0.01)
    monkeypatch.setattr(transport, "RETRY", transport.RetryPolicy(pause_s=0))


class Api:
    """The service's routes in this process; ``call(token, method, path)``; ``run`` runs the queue until a condition."""

    def __init__(self, tmp_path, quota: Quota | None = None):
        self.store = ResultStore(tmp_path / "results", ttl_s=3600)
        self.flow = FakeFlow(self.store)
        self.queue = JobQueue(self.store, self.flow, state=str(tmp_path / "state.sqlite3"))
        self.queue.state.quota = quota
        self.tokens = Tokens([ALICE, BOB], [BOSS], store=self.queue.state)
        self.app = FastAPI()
        http_api.mount(self.app, self.queue, self.tokens, DEFAULT_LIMITS)
        admin.mount(self.app, self.queue, self.tokens)
        gallery.mount(self.app, self.queue)
        estimates.mount(self.app, self.queue, DEFAULT_LIMITS, "0")

    def call(self, token: str, method: str, path: str, **kwargs) -> httpx.Response:
        async def send():
            transport = httpx.ASGITransport(app=self.app)
            async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
                return await client.request(method, path, headers={"Authorization": f"Bearer {token}"}, **kwargs)

        return asyncio.run(send())

    def run(self, condition, timeout: float = 10) -> None:
        async def until():
            task = asyncio.create_task(self.queue.run())
            try:
                for _ in range(int(timeout / 0.01)):
                    if condition():
                        return
                    await asyncio.sleep(0.01)
                raise AssertionError("timed out")
            finally:
                task.cancel()

        asyncio.run(until())


def test_an_operator_sees_and_cancels_every_job_pauses_and_drains(tmp_path):
    api = Api(tmp_path)
    mine = api.call(ALICE, "POST", "/jobs", json=TINY).json()
    api.call(BOB, "POST", "/jobs", json=TINY)
    assert api.call(ALICE, "GET", "/admin/jobs").json()["code"] == "admin_required"
    listed = api.call(BOSS, "GET", "/admin/jobs").json()["jobs"]
    assert {job["owner"] for job in listed} == {fingerprint(ALICE), fingerprint(BOB)}
    cancelled = api.call(BOSS, "DELETE", f"/admin/jobs/{mine['id']}").json()
    assert cancelled["status"] == "cancelled" and api.call(ALICE, "GET", f"/jobs/{mine['id']}").json()["status"] == (
        "cancelled"
    )
    assert api.call(BOSS, "POST", "/admin/pause").json()["paused"] is True
    api.run(lambda: True)  # a round of the queue: nothing is sent while paused
    assert api.flow.sent == []
    assert api.call(BOSS, "POST", "/admin/drain").json()["draining"] is True
    refused = api.call(ALICE, "POST", "/jobs", json=TINY)
    assert refused.status_code == 503 and refused.headers["Retry-After"] == "60"
    assert refused.json()["code"] == "quota_exceeded" and "draining" in refused.json()["detail"]
    assert api.call(BOSS, "POST", "/admin/resume").json() == {
        **api.call(BOSS, "GET", "/admin/queue").json(),
        "paused": False,
        "draining": False,
    }
    bob_job = api.queue.jobs_of(fingerprint(BOB))[0]
    api.run(lambda: bob_job.finished)
    assert bob_job.status == "done" and len(api.flow.sent) == 1


def test_tokens_added_and_revoked_in_the_store_count_at_the_next_request(tmp_path, monkeypatch, capsys):
    api = Api(tmp_path)
    assert api.call(ALICE, "GET", "/jobs").status_code == 200
    new = api.call(BOSS, "POST", "/admin/tokens", json={"label": "carol"}).json()
    assert api.call(new["token"], "GET", "/jobs").status_code == 200
    assert api.call(BOSS, "DELETE", f"/admin/tokens/{new['owner']}").status_code == 200
    refused = api.call(new["token"], "GET", "/jobs")
    assert refused.status_code == 401 and refused.json()["code"] == "token_rejected"
    # the command line, on the same store: a token of DISCO_API_TOKENS revoked without a restart
    monkeypatch.setenv("DISCO_DATABASE_URL", f"sqlite:///{tmp_path / 'state.sqlite3'}")
    assert tokens_module.main(["revoke", ALICE]) == 0
    assert api.call(ALICE, "GET", "/jobs").status_code == 401
    assert tokens_module.main(["add", "dave-token-0123456789", "--label", "dave"]) == 0
    assert api.call("dave-token-0123456789", "GET", "/jobs").status_code == 200
    assert tokens_module.main(["list"]) == 0
    listed = capsys.readouterr().out
    assert f"{fingerprint(ALICE)}  revoked" in listed and "dave" in listed and ALICE not in listed


def test_quotas_refuse_naming_the_limit_and_when_it_resets(tmp_path):
    api = Api(tmp_path, Quota(max_images_per_day=3, max_pixel_steps_per_day=64 * 64 * 3 * 5, max_queued_images=4))
    assert api.call(ALICE, "POST", "/jobs", json={**TINY, "n_batches": 2}).status_code == 202
    refused = api.call(ALICE, "POST", "/jobs", json={**TINY, "n_batches": 2})
    body = refused.json()
    assert refused.status_code == 429 and body["code"] == "quota_exceeded" and body["setting"] is None
    assert "asked for 2 images today and this job adds 2, the most per day is 3" in body["detail"]
    assert "DISCO_MAX_IMAGES_PER_DAY" in body["detail"] and "00:00 UTC" in body["detail"]
    assert 0 < int(refused.headers["Retry-After"]) <= 86400
    pixel = api.call(BOB, "POST", "/jobs", json={**TINY, "steps": 10}).json()  # 10 of the day's 15 steps at 64x64
    assert pixel["status"] == "queued"
    too_much = api.call(BOB, "POST", "/jobs", json={**TINY, "steps": 10})  # 20 > 15
    assert too_much.status_code == 429 and "DISCO_MAX_PIXEL_STEPS_PER_DAY" in too_much.json()["detail"]
    full = api.call(BOSS, "POST", "/jobs", json={**TINY, "n_batches": 2})  # the operator: no daily quota, but the cap
    assert full.status_code == 503 and "DISCO_MAX_QUEUED_IMAGES" in full.json()["detail"]
    assert full.headers["Retry-After"] == "60"
    estimate = api.call(ALICE, "POST", "/jobs/estimate", json={**TINY, "width_height": [512, 512], "steps": 250})
    answer = estimate.json()
    assert answer["device"] == "cpu" and answer["long"] is True and "h in all" in answer["notice"]
    assert answer["usage"]["images"] == 2 and answer["quota"]["max_images_per_day"] == 3


def test_a_finished_job_is_deleted_with_its_files_paged_and_zipped(tmp_path):
    api = Api(tmp_path)
    ids = [api.call(ALICE, "POST", "/jobs", json={**TINY, "seed": s}).json()["id"] for s in (1, 2, 3)]
    api.run(lambda: all(job.finished for job in api.queue.jobs_of(fingerprint(ALICE))))
    first = api.call(ALICE, "GET", "/jobs", params={"limit": 2}).json()
    assert [job["id"] for job in first["jobs"]] == ids[::-1][:2]
    rest = api.call(ALICE, "GET", "/jobs", params={"limit": 2, "before": first["next_before"]}).json()
    assert [job["id"] for job in rest["jobs"]] == [ids[0]] and rest["next_before"] is None
    answer = api.call(ALICE, "GET", f"/jobs/{ids[0]}/files.zip")
    assert answer.status_code == 200 and answer.headers["content-type"] == "application/zip"
    names = zipfile.ZipFile(io.BytesIO(answer.content)).namelist()
    assert "reverse_diffusion-1_0.png" in names and "reverse_diffusion-1_0.gif" in names
    assert api.call(BOB, "GET", f"/jobs/{ids[0]}/files.zip").status_code == 404  # another token's
    doc_id = api.queue.get(fingerprint(ALICE), ids[0]).images[0].doc_id
    assert api.store.entry(doc_id).exists()
    assert api.call(ALICE, "DELETE", f"/jobs/{ids[0]}").json() == {"id": ids[0], "deleted": True}
    assert api.call(ALICE, "GET", f"/jobs/{ids[0]}").status_code == 404 and not api.store.entry(doc_id).exists()
    assert len(api.call(ALICE, "GET", "/jobs").json()["jobs"]) == 2
