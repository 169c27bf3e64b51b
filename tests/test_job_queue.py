"""The job queue and the result store without a Flow: a fake Flow answers the queue's calls.

What is checked, on both state stores (a SQLite file and a PostgreSQL database): owners take turns,
each owner's jobs go oldest first, the place in line, the cap per owner, cancel, a restart of the
gateway (jobs reloaded, running images watched again, lost ones sent again), the retry of images
that could not reach the Flow, job files of an earlier version imported, and two gateways sharing
one queue (one of them dying mid-image); the result store's files and its time to live.
"""

import asyncio
import io
import json
import os
import time

import pytest
from docarray import Document
from fake_flow import FakeFlow, png, settings
from PIL import Image as PILImage

from disco_service import transport
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
    monkeypatch.setattr(transport, "RETRY", transport.RetryPolicy(pause_s=0))


@pytest.fixture
def store(tmp_path):
    return ResultStore(tmp_path / "results", ttl_s=3600)


@pytest.fixture(params=["sqlite", "postgresql"])
def state(request):
    """The queue's state store: the default SQLite file beside the results, or a fresh PostgreSQL database."""
    return None if request.param == "sqlite" else request.getfixturevalue("postgres").new_database()


def test_owners_take_turns_and_each_owner_s_jobs_go_oldest_first(store, state):
    flow = FakeFlow(store)
    queue = JobQueue(store, flow, slots=1, state=state)
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


def test_a_random_seed_is_chosen_for_the_run_and_each_image_has_its_own(store, state):
    queue = JobQueue(store, FakeFlow(store), state=state)
    job = queue.submit("alice", settings(n=3, seed=None))
    seeds = [image.seed for image in job.images]
    assert seeds == [job.settings["seed"] + i for i in range(3)] and 0 <= seeds[0] < 2**32 - 2
    assert len({image.doc_id for image in job.images}) == 3


def test_each_owner_may_have_only_so_many_jobs_waiting_or_running(store, state):
    queue = JobQueue(store, FakeFlow(store), max_jobs_per_owner=2, state=state)
    first = queue.submit("alice", settings())
    queue.submit("alice", settings())
    with pytest.raises(TooManyJobs, match=r"already has 2 jobs queued or running.*DISCO_MAX_JOBS_PER_TOKEN=2"):
        queue.submit("alice", settings())
    queue.submit("bob", settings())  # others are not held back
    asyncio.run(queue.cancel("alice", first.id))
    assert first.status == "cancelled"
    queue.submit("alice", settings())  # a finished job no longer counts


def test_cancel_stops_queued_images_at_once_and_asks_the_flow_for_running_ones(store, state):
    flow = FakeFlow(store)
    queue = JobQueue(store, flow, state=state)
    job = queue.submit("alice", settings(n=2))
    job.images[0].status = JobStatus.RUNNING.value  # as if it had been sent
    queue._save(job)
    assert asyncio.run(queue.cancel("bob", job.id)) is None  # not bob's
    asyncio.run(queue.cancel("alice", job.id))
    assert [i.status for i in job.images] == ["running", "cancelled"]
    assert flow.cancelled == [job.images[0].doc_id]
    assert job.status == "running"  # until the running image stops at its next step


def test_jobs_outlive_a_restart_of_the_gateway(store, state):
    flow = FakeFlow(store)
    queue = JobQueue(store, flow, state=state)
    running = queue.submit("alice", settings(seed=1))
    queued = queue.submit("bob", settings(n=2, seed=50))
    lost = queue.submit("carol", settings(seed=70))
    done = queue.submit("dave", settings(seed=90))
    for job, status in ((running, "running"), (lost, "waiting")):
        job.images[0].status = status  # sent by the gateway that is about to go
        queue._save(job)
    done.images[0].status = "done"
    queue._save(done)

    again = JobQueue(store, FakeFlow(store), state=state)  # the new gateway: reads the jobs back
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


def test_an_image_that_cannot_reach_the_flow_is_sent_again_under_a_new_id(store, state):
    flow = FakeFlow(store, {7: ConnectionError("StatusCode.UNAVAILABLE: Communication error with deployment sampler")})
    queue = JobQueue(store, flow, state=state)
    job = queue.submit("alice", settings(seed=7))
    asyncio.run(run_until(queue, lambda: job.finished))
    assert job.status == "done" and [d.tags["seed"] for d in flow.sent] == [7, 7]
    assert flow.sent[0].id != flow.sent[1].id == job.images[0].doc_id


def test_an_image_that_failed_in_the_flow_fails_with_the_flow_s_reason(store, state):
    flow = FakeFlow(store, {8: RuntimeError("the image became NaN")})
    queue = JobQueue(store, flow, state=state)
    job = queue.submit("alice", settings(seed=8))
    doc_id = job.images[0].doc_id
    nan = "SamplingFailed: the image became NaN at step 2"
    flow.states[doc_id] = {"status": "failed", "error": nan, "error_code": "sampling_failed", "step": 2}
    asyncio.run(run_until(queue, lambda: job.finished))
    assert job.status == "failed" and job.images[0].error == nan and job.images[0].error_code == "sampling_failed"
    assert len(flow.sent) == 1  # a fault of the image itself is not tried again


def test_an_image_whose_sampler_died_is_sent_again_under_a_new_id(store, state):
    flow = FakeFlow(store, {8: RuntimeError("the sampler process died")})
    queue = JobQueue(store, flow, state=state)
    job = queue.submit("alice", settings(seed=8))
    doc_id = job.images[0].doc_id
    died = "the sampler process died (pid 42) at step 2 of 3"
    flow.states[doc_id] = {"status": "failed", "error": died, "error_code": "sampler_died", "step": 2}
    asyncio.run(run_until(queue, lambda: job.finished))
    assert job.status == "done" and [d.tags["seed"] for d in flow.sent] == [8, 8]
    assert flow.sent[0].id == doc_id != flow.sent[1].id == job.images[0].doc_id
    assert queue.state.image(job.images[0].doc_id).interrupted == 1


class DyingFlow(FakeFlow):
    """A Flow whose sampler dies at step 2 of every image it is sent (a frame of step 1 kept)."""

    async def generate(self, doc: Document) -> Document:
        self.sent.append(doc)
        self.store.add_frame(doc.id, 1, png((1, 2, 3)), {"seed": doc.tags["seed"]})
        died = f"the sampler process died (pid {len(self.sent)}) at step 2 of 3"
        self.states[doc.id] = {"status": "failed", "error": died, "error_code": "sampler_died", "step": 2}
        raise RuntimeError("the sampler process died")


def test_an_image_that_keeps_killing_its_sampler_fails_after_the_limit_with_its_frames(store, state):
    flow = DyingFlow(store)
    queue = JobQueue(store, flow, slots=1, state=state)
    job = queue.submit("alice", settings(seed=3))
    after = queue.submit("bob", settings(seed=4))
    asyncio.run(run_until(queue, lambda: job.finished and after.finished))
    image = job.images[0]
    assert len(flow.sent) == 2 * (job_queue.MAX_INTERRUPTIONS + 1)  # bob's image was served in turn, and failed alike
    sent_ids = [d.id for d in flow.sent]
    assert len(set(sent_ids)) == len(sent_ids)  # never the same Document id twice
    assert (job.status, image.error_code, image.step) == ("failed", "sampler_died", 2)
    assert image.error.startswith("the sampler process died") and "tried 3 times" in image.error
    kept = PILImage.open(io.BytesIO(queue.latest_frame(image))).convert("RGB")
    assert kept.getpixel((0, 0)) == (1, 2, 3)  # the frame of its last try is kept


def test_an_image_stopped_by_a_restart_is_sent_again_by_the_restarted_gateway(store, state):
    flow = FakeFlow(store)
    queue = JobQueue(store, flow, state=state)
    job = queue.submit("alice", settings(seed=5))
    stored = queue.state.claim_next(queue.claimer, job_queue.LEASE_S, 1)
    queue.state.mark_sent(stored.doc_id, queue.claimer)  # sent by the gateway that went down
    store.add_frame(stored.doc_id, 1, png(), {"seed": 5})
    store.finish(stored.doc_id, {"status": "shutdown", "steps_done": 1, "total": 3})  # the sampler stopped it
    again = JobQueue(store, FakeFlow(store), state=state)
    again.flow.states[stored.doc_id] = {"status": "shutdown", "step": 1}
    rerun = again.jobs[job.id]
    asyncio.run(run_until(again, lambda: rerun.finished))
    assert rerun.status == "done" and [d.id for d in again.flow.sent] == [rerun.images[0].doc_id]
    assert rerun.images[0].doc_id != stored.doc_id and store.read(stored.doc_id)["status"] == "shutdown"


def test_an_image_stopped_as_shutdown_keeps_its_slot_for_a_while_then_goes_again(store, state, monkeypatch):
    monkeypatch.setattr(job_queue, "RESEND_PAUSE_S", 0.5)
    flow = FakeFlow(store, {11: "shutdown"})  # the Flow is stopping: its sampler stopped the image
    sent_at: list[float] = []
    generate = flow.generate

    async def timed(doc):
        sent_at.append(time.time())
        return await generate(doc)

    flow.generate = timed
    queue = JobQueue(store, flow, slots=1, state=state)
    job = queue.submit("alice", settings(seed=11))
    other = queue.submit("bob", settings(seed=12))
    asyncio.run(run_until(queue, lambda: job.finished and other.finished))
    assert sent_at[1] - sent_at[0] >= 0.5  # nothing was sent to the stopping Flow meanwhile
    assert sorted(d.tags["seed"] for d in flow.sent) == [11, 11, 12]
    assert job.status == other.status == "done" and flow.sent[0].id != job.images[0].doc_id


def test_a_running_image_whose_sampler_went_silent_is_taken_for_dead(store, state, monkeypatch):
    monkeypatch.setattr(job_queue, "STALE_S", 60)
    queue = JobQueue(store, FakeFlow(store), state=state)
    job = queue.submit("alice", settings(seed=6))
    stored = queue.state.claim_next(queue.claimer, job_queue.LEASE_S, 1)
    queue.state.mark_sent(stored.doc_id, queue.claimer)
    again = JobQueue(store, DyingFlow(store), state=state)  # every try dies: it ends failed
    again.flow.states[stored.doc_id] = {"status": "running", "step": 2, "total": 3, "updated": time.time() - 61}
    rerun = again.jobs[job.id]
    asyncio.run(run_until(again, lambda: rerun.finished))
    assert rerun.status == "failed" and rerun.images[0].error_code == "sampler_died"
    assert len(again.flow.sent) == job_queue.MAX_INTERRUPTIONS  # the silent try counted as the first


def test_settings_the_flow_refuses_fail_the_whole_job_at_once(store, state):
    from disco.settings import SettingsError

    refusal = SettingsError("text_prompts", "a prompt may be at most 77 CLIP tokens, got 90")
    flow = FakeFlow(store, {9: refusal})
    queue = JobQueue(store, flow, state=state)
    job = queue.submit("alice", settings(n=3, seed=9))
    asyncio.run(run_until(queue, lambda: job.finished))
    assert len(flow.sent) == 1  # the other two images were not sent
    assert [i.status for i in job.images] == ["failed"] * 3
    assert {i.error for i in job.images} == {f"SettingsError: {refusal}"}
    assert {(i.error_code, i.error_setting) for i in job.images} == {("setting_invalid", "text_prompts")}


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


class SharedFlow(FakeFlow):
    """One Flow behind two gateways: its samplers work on their own (a request that goes away does
    not stop its image), ``hold`` keeps images of those seeds running until released; it counts the
    images in its samplers at once."""

    def __init__(self, store: ResultStore, hold=()):
        super().__init__(store)
        self.hold = {seed: asyncio.Event() for seed in hold}
        self.working, self.most_working = 0, 0

    async def _sample(self, doc):
        self.working += 1
        self.most_working = max(self.most_working, self.working)
        self.states[doc.id] = {"status": "running", "step": 1, "total": 3}
        try:
            await asyncio.sleep(0.05)
            if doc.tags["seed"] in self.hold:
                await self.hold[doc.tags["seed"]].wait()
            self.store.finish(doc.id, {"status": "done", "seed": doc.tags["seed"], "steps_done": 3, "total": 3})
            self.states[doc.id] = {"status": "done"}
        finally:
            self.working -= 1
        return Document(id=doc.id, tags={**doc.tags, "status": "done", "steps_done": 3.0})

    async def generate(self, doc):
        self.sent.append(doc)
        return await asyncio.shield(asyncio.ensure_future(self._sample(doc)))


def test_two_gateways_share_one_queue(store, state, monkeypatch):
    monkeypatch.setattr(job_queue, "LEASE_S", 0.5)
    flow = SharedFlow(store, hold=[100])
    first = JobQueue(store, flow, slots=2, state=state, claimer="gateway-a")
    second = JobQueue(store, flow, slots=2, state=state, claimer="gateway-b")  # the same store
    jobs = []
    for n, owner in enumerate(["alice", "bob", "carol", "alice", "bob", "carol"]):
        gateway = (first, second)[n % 2]  # submitted to both in turn
        jobs.append((owner, gateway.submit(owner, settings(n=2, seed=100 + 10 * n)).id))
    for owner, job_id in jobs:  # each gateway sees every job
        assert first.get(owner, job_id) is not None and second.get(owner, job_id) is not None

    async def scenario():
        tasks = {queue: asyncio.create_task(queue.run()) for queue in (first, second)}
        deadline = time.time() + 20
        while not any(d.tags["seed"] == 100 for d in flow.sent):
            assert time.time() < deadline
            await asyncio.sleep(0.01)
        holder = next(q for q in (first, second) if any(i.seed == 100 for _, i, _ in q.in_flight.values()))
        survivor = second if holder is first else first
        tasks[holder].cancel()  # that gateway dies (as with kill -9): its claims are no longer renewed
        for _, _, task in holder.in_flight.values():
            if task is not None:
                task.cancel()
        await asyncio.sleep(0.8)  # its lease runs out: the other gateway takes its images over
        flow.hold[100].set()  # the sampler finishes the image all the same
        try:
            while not all(survivor.get(owner, job_id).finished for owner, job_id in jobs):
                assert time.time() < deadline, {j: survivor.get(o, j).status for o, j in jobs}
                await asyncio.sleep(0.01)
        finally:
            tasks[survivor].cancel()

    asyncio.run(scenario())
    assert {first.get(owner, job_id).status for owner, job_id in jobs} == {"done"}
    sent_seeds = [d.tags["seed"] for d in flow.sent]
    assert sorted(sent_seeds) == sorted(100 + 10 * n + i for n in range(6) for i in range(2))  # each once
    assert len({d.id for d in flow.sent}) == len(flow.sent)  # no Document id twice
    assert flow.most_working <= 2  # never more than the slots, over both gateways
    assert first.state.in_flight() == 0


def test_job_files_of_an_earlier_version_are_imported_once(store, state):
    flow = FakeFlow(store)
    folder = store.dir / "jobs"
    folder.mkdir(parents=True)
    old = job_queue.Job(
        id="0123abcd",
        owner="alice",
        created=time.time(),
        settings={"seed": 5},
        images=[job_queue.Image(0, 5, "d0", status="done", step=3), job_queue.Image(1, 6, "d1")],
    )
    (folder / "0123abcd.json").write_text(json.dumps(old.record()))
    (folder / "broken.json").write_text("{not json")
    queue = JobQueue(store, flow, state=state)
    job = queue.get("alice", "0123abcd")
    assert [(i.doc_id, i.status, i.step) for i in job.images] == [("d0", "done", 3), ("d1", "queued", None)]
    assert (folder / "0123abcd.json.imported").exists() and not (folder / "0123abcd.json").exists()
    assert (folder / "broken.json").exists()  # skipped, left as it was
    again = JobQueue(store, flow, state=state)  # nothing imported twice
    assert [j.id for j in again.jobs_of("alice")] == ["0123abcd"]
