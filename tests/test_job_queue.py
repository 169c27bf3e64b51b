"""The job queue and the result store without a Flow: a fake Flow answers the queue's calls.

What is checked: owners take turns, each owner's jobs go oldest first, the place in line, the cap
per owner, cancel, a restart of the gateway (jobs reloaded, running images watched again, lost ones
sent again) and the retry of images that could not reach the Flow; the store's files and its time
to live.
"""

import asyncio
import json
import os
import time

import pytest
from fake_flow import FakeFlow, png, settings
from PIL import Image as PILImage

from disco_service.server import job_queue
from disco_service.server.job_queue import JobQueue, TooManyJobs
from disco_service.server.results import ResultStore
from disco_service.wire import JobStatus


async def run_until(queue: JobQueue, condition, timeout: float = 10):
    task = asyncio.create_task(queue.run())
    try:
        deadline = time.time() + timeout
        while not condition():
            assert time.time() < deadline, "timed out"
            await asyncio.sleep(0.01)
    finally:
        task.cancel()


@pytest.fixture(autouse=True)
def quick(monkeypatch):
    monkeypatch.setattr(job_queue, "POLL_S", 0.01)
    monkeypatch.setattr(job_queue, "RETRY_PAUSE_S", 0)


@pytest.fixture
def store(tmp_path):
    return ResultStore(tmp_path / "results", ttl_s=3600)


def test_owners_take_turns_and_each_owner_s_jobs_go_oldest_first(store):
    flow = FakeFlow(store)
    queue = JobQueue(store, flow, slots=1)
    a = [queue.submit("alice", settings(seed=s)) for s in (100, 200, 300)]
    b = queue.submit("bob", settings(n=2, seed=400))
    c = queue.submit("carol", settings(seed=500))
    # places in line, counted in images: alice, bob, carol, alice, bob's second image, alice
    assert [queue.position(j) for j in (*a, b, c)] == [1, 4, 6, 2, 3]
    asyncio.run(run_until(queue, lambda: all(j.finished for j in (*a, b, c))))
    assert [d.tags["seed"] for d in flow.sent] == [100, 400, 500, 200, 401, 300]
    assert [d.tags["batch_index"] for d in flow.sent] == [0, 0, 0, 0, 1, 0]
    assert all(d.tags["run_seed"] == d.tags["seed"] - d.tags["batch_index"] for d in flow.sent)
    assert {j.status for j in (*a, b, c)} == {"done"} and queue.position(a[0]) is None
    assert queue.jobs_of("alice") == [a[2], a[1], a[0]]  # newest first
    assert queue.get("bob", a[0].id) is None  # another owner's job is not there for bob


def test_a_random_seed_is_chosen_for_the_run_and_each_image_has_its_own(store):
    queue = JobQueue(store, FakeFlow(store))
    job = queue.submit("alice", settings(n=3, seed=None))
    seeds = [image.seed for image in job.images]
    assert seeds == [job.settings["seed"] + i for i in range(3)] and 0 <= seeds[0] < 2**32 - 2
    assert len({image.doc_id for image in job.images}) == 3


def test_each_owner_may_have_only_so_many_jobs_waiting_or_running(store):
    queue = JobQueue(store, FakeFlow(store), max_jobs_per_owner=2)
    first = queue.submit("alice", settings())
    queue.submit("alice", settings())
    with pytest.raises(TooManyJobs, match=r"already has 2 jobs queued or running.*DISCO_MAX_JOBS_PER_TOKEN=2"):
        queue.submit("alice", settings())
    queue.submit("bob", settings())  # others are not held back
    asyncio.run(queue.cancel("alice", first.id))
    assert first.status == "cancelled"
    queue.submit("alice", settings())  # a finished job no longer counts


def test_cancel_stops_queued_images_at_once_and_asks_the_flow_for_running_ones(store):
    flow = FakeFlow(store)
    queue = JobQueue(store, flow)
    job = queue.submit("alice", settings(n=2))
    job.images[0].status = JobStatus.RUNNING.value  # as if it had been sent
    assert asyncio.run(queue.cancel("bob", job.id)) is None  # not bob's
    asyncio.run(queue.cancel("alice", job.id))
    assert [i.status for i in job.images] == ["running", "cancelled"]
    assert flow.cancelled == [job.images[0].doc_id]
    assert job.status == "running"  # until the running image stops at its next step


def test_jobs_outlive_a_restart_of_the_gateway(store):
    flow = FakeFlow(store)
    queue = JobQueue(store, flow)
    running = queue.submit("alice", settings(seed=1))
    queued = queue.submit("bob", settings(n=2, seed=50))
    lost = queue.submit("carol", settings(seed=70))
    done = queue.submit("dave", settings(seed=90))
    for job, status in ((running, "running"), (lost, "waiting")):
        job.images[0].status = status  # sent by the gateway that is about to go
        queue._save(job)
    done.images[0].status = "done"
    queue._save(done)

    again = JobQueue(store, FakeFlow(store))  # the new gateway: reads the jobs back
    assert {j.id: j.status for j in again.jobs.values()} == {
        running.id: "running", queued.id: "queued", lost.id: "running", done.id: "done"
    }  # fmt: skip
    assert again.position(again.jobs[queued.id]) == 1
    first_id = again.jobs[running.id].images[0].doc_id
    again.flow.states[first_id] = {"status": "running", "step": 2, "total": 3, "started": time.time() - 4}

    async def scenario():
        task = asyncio.create_task(again.run())
        await asyncio.sleep(0.2)
        image = again.jobs[running.id].images[0]
        assert (image.status, image.step, image.total) == ("running", 2, 3)
        assert again.eta_s(image) == pytest.approx(2.0, abs=0.5)  # 4 s for 2 steps: 2 s for the last
        store.finish(first_id, {"status": "done", "steps_done": 3, "total": 3})  # its sampler finished it
        again.flow.states[first_id] = {"status": "done"}
        monkey_lost_after = job_queue.LOST_AFTER_S
        job_queue.LOST_AFTER_S = 0  # carol's request went down with the old gateway: sent again
        try:
            deadline = time.time() + 10
            while not all(j.finished for j in again.jobs.values()):
                assert time.time() < deadline, {j.id: j.status for j in again.jobs.values()}
                await asyncio.sleep(0.01)
        finally:
            job_queue.LOST_AFTER_S = monkey_lost_after
            task.cancel()

    asyncio.run(scenario())
    assert {j.status for j in again.jobs.values()} == {"done"}
    assert [d.tags["seed"] for d in again.flow.sent] == [50, 70, 51]  # bob, carol again (new id), bob
    assert again.jobs[lost.id].images[0].doc_id != lost.images[0].doc_id  # an id is never sent twice


def test_an_image_that_cannot_reach_the_flow_is_sent_again_under_a_new_id(store):
    flow = FakeFlow(store, {7: ConnectionError("StatusCode.UNAVAILABLE: Communication error with deployment sampler")})
    queue = JobQueue(store, flow)
    job = queue.submit("alice", settings(seed=7))
    asyncio.run(run_until(queue, lambda: job.finished))
    assert job.status == "done" and [d.tags["seed"] for d in flow.sent] == [7, 7]
    assert flow.sent[0].id != flow.sent[1].id == job.images[0].doc_id


def test_an_image_that_failed_in_the_flow_fails_with_the_flow_s_reason(store):
    flow = FakeFlow(store, {8: RuntimeError("the sampler process died")})
    queue = JobQueue(store, flow)
    job = queue.submit("alice", settings(seed=8))
    doc_id = job.images[0].doc_id
    flow.states[doc_id] = {"status": "failed", "error": "the sampler process died (pid 42) at step 2 of 3", "step": 2}
    asyncio.run(run_until(queue, lambda: job.finished))
    assert job.status == "failed" and job.images[0].error == "the sampler process died (pid 42) at step 2 of 3"


def test_settings_the_flow_refuses_fail_the_whole_job_at_once(store):
    from disco.settings import SettingsError

    refusal = SettingsError("text_prompts", "a prompt may be at most 77 CLIP tokens, got 90")
    flow = FakeFlow(store, {9: refusal})
    queue = JobQueue(store, flow)
    job = queue.submit("alice", settings(n=3, seed=9))
    asyncio.run(run_until(queue, lambda: job.finished))
    assert len(flow.sent) == 1  # the other two images were not sent
    assert [i.status for i in job.images] == ["failed"] * 3
    assert {i.error for i in job.images} == {f"SettingsError: {refusal}"}


def test_the_store_keeps_frames_the_final_image_only_when_done_and_forgets_after_its_time(store):
    store.add_frame("a1", 1, png((10, 0, 0)), {"seed": 1})
    store.add_frame("a1", 2, png((20, 0, 0)), {"seed": 1})
    record = store.finish("a1", {"status": "done", "frames": [{"step": 1, "cur_t": 5}, {"step": 2, "cur_t": -1}]})
    assert record["frames"][1] == {"step": 2, "cur_t": -1}
    assert store.file("a1", "final.png").read_bytes() == store.file("a1", "step0002.png").read_bytes()
    assert json.loads(PILImage.open(store.file("a1", "final.png")).text["disco-diffusion"]) == {"seed": 1}
    gif = PILImage.open(store.file("a1", "frames.gif"))  # made from the frame files when asked
    assert gif.n_frames == 2
    assert PILImage.open(store.file("a1", "sprite.png")).format == "PNG"

    store.add_frame("b2", 1, png(), {"seed": 2})
    store.finish("b2", {"status": "cancelled"})
    assert store.file("b2", "final.png") is None and store.latest_frame("b2").name == "step0001.png"
    assert store.file("b2", "../a1/final.png") is None and store.file("b2", "result.json") is None

    old = time.time() - 7200
    for path in (store.entry("a1"), *store.entry("a1").iterdir()):
        os.utime(path, (old, old))
    assert store.sweep() == ["a1"]
    assert not store.used("a1") and store.used("b2")
    with pytest.raises(ValueError, match="job id must be"):
        store.entry("../etc")
