"""Jina's own ways into the Flow under the job API's rules: the cap, and images answering their owner."""

import pytest
from docarray import Document, DocumentArray
from jina.types.request.data import DataRequest

from disco.settings import validate_settings
from disco_service.server.direct_calls import CALLER, DirectCalls, NotYourImage
from disco_service.server.job_queue import JobQueue, TooManyJobs
from disco_service.server.results import ResultStore
from disco_service.server.tokens import OPEN, SERVICE, Tokens

ALICE, BOB = "alice-token-0123456789", "bob-token-0123456789ab"


class NoFlow:
    async def generate(self, doc): ...

    async def progress(self, ids, frame=False, keep_alive=True):
        return []

    async def cancel(self, ids): ...


def request(endpoint: str, *ids: str) -> DataRequest:
    made = DataRequest()
    made.header.exec_endpoint = endpoint
    made.data.docs = DocumentArray([Document(id=i) for i in ids])
    return made


@pytest.fixture
def calls(tmp_path):
    tokens = Tokens([ALICE, BOB])
    queue = JobQueue(ResultStore(tmp_path), NoFlow(), max_jobs_per_owner=2)
    return DirectCalls(queue, tokens), tokens


def as_caller(owner, action):
    token = CALLER.set(owner)
    try:
        return action()
    finally:
        CALLER.reset(token)


def test_a_generate_request_counts_toward_its_token_s_cap_with_the_job_api_s_jobs(calls):
    direct, tokens = calls
    alice = tokens.owner(f"Bearer {ALICE}")
    first = as_caller(alice, lambda: direct.admit(request("/generate", "a1")))
    direct.queue.submit(alice, validate_settings(text_prompts=["x"], n_batches=1, seed=1))  # a job API job
    with pytest.raises(TooManyJobs, match=r"already has 2 jobs queued or running.*POST /jobs"):
        as_caller(alice, lambda: direct.admit(request("/generate", "a2")))
    with pytest.raises(TooManyJobs):  # and the job API counts the request too
        direct.queue.submit(alice, validate_settings(text_prompts=["x"], n_batches=1, seed=2))
    bob = tokens.owner(f"Bearer {BOB}")
    as_caller(bob, lambda: direct.admit(request("/generate", "b1")))  # bob's own cap
    first()  # alice's request answered: room for one more
    assert as_caller(alice, lambda: direct.admit(request("/generate", "a3"))) is not None


def test_an_image_belongs_to_the_caller_that_sent_it(calls):
    direct, tokens = calls
    alice, bob = tokens.owner(f"Bearer {ALICE}"), tokens.owner(f"Bearer {BOB}")
    as_caller(alice, lambda: direct.admit(request("/generate", "mine")))
    assert direct.queue.store.owner("mine") == alice
    record = direct.queue.store.finish("mine", {"status": "done"})
    assert record["owner"] == alice  # the record carries its owner
    for endpoint in ("/generate", "/progress", "/cancel", "/forget"):
        with pytest.raises(NotYourImage, match="no image 'mine' for this caller"):
            as_caller(bob, lambda e=endpoint: direct.admit(request(e, "mine")))
    assert as_caller(alice, lambda: direct.admit(request("/cancel", "mine"))) is None  # hers: passes
    assert as_caller(bob, lambda: direct.admit(request("/progress", "never-sent"))) is None
    assert as_caller(SERVICE, lambda: direct.admit(request("/cancel", "mine"))) is None  # the job API itself


def test_without_a_known_caller_only_an_open_service_takes_the_request(tmp_path, calls):
    direct, _ = calls
    with pytest.raises(NotYourImage, match="not known: send it with a token"):
        direct.admit(request("/generate", "x1"))
    assert direct.admit(request("_jina_dry_run_")) is None  # the health check passes
    open_calls = DirectCalls(JobQueue(ResultStore(tmp_path / "open"), NoFlow(), max_jobs_per_owner=1), Tokens())
    for i in range(3):  # an open service has no cap
        assert open_calls.admit(request("/generate", f"o{i}")) is not None
    assert open_calls.queue.store.owner("o0") == OPEN


def test_the_store_keeps_the_first_claim_and_sweeps_claims_of_images_gone(tmp_path):
    store = ResultStore(tmp_path, ttl_s=60)
    assert store.claim("img", "alice") and store.claim("img", "alice")
    assert not store.claim("img", "bob") and store.owner("img") == "alice"
    assert store.owner("other") is None and store.owner("../x") is None
    with pytest.raises(ValueError):
        store.claim("../x", "alice")
    store.sweep(now=store.owners.joinpath("img").stat().st_mtime + 61)
    assert store.owner("img") is None


def generate_request(tags: dict, *ids: str) -> DataRequest:
    made = DataRequest()
    made.header.exec_endpoint = "/generate"
    made.data.docs = DocumentArray([Document(id=i, tags=tags) for i in ids])
    return made


def test_a_generate_request_is_a_job_of_its_caller_until_its_answer_ends_it(calls):
    from disco_service.wire import request_tags

    direct, tokens = calls
    alice, bob = tokens.owner(f"Bearer {ALICE}"), tokens.owner(f"Bearer {BOB}")
    queue = direct.queue
    tags = request_tags(
        validate_settings(
            {"text_prompts": ["a fox"], "width_height": [64, 64], "seed": 40, "n_batches": 2}, tokens=False
        ),
        1,
    )
    answered = as_caller(alice, lambda: direct.admit(generate_request(tags, "fox1")))
    [job] = queue.jobs_of(alice)
    assert queue.jobs_of(bob) == []  # nor does bob see it
    assert job.status == "running" and [(i.doc_id, i.status, i.seed) for i in job.images] == [("fox1", "waiting", 41)]
    assert job.settings["text_prompts"] == ["a fox"] and job.settings["seed"] == 41 and job.settings["n_batches"] == 1
    assert "fox1" in queue.in_flight  # watched: its progress and frames reach the job
    assert queue.state.claim_next("another-gateway", 30, slots=5) is None  # sent already: never sent again
    assert queue.state.in_flight() == 1  # it holds a sampler
    queue.store.finish("fox1", {"status": "done", "steps_done": 7})
    answered()
    [job] = queue.jobs_of(alice)
    assert (job.status, job.images[0].step) == ("done", 7) and "fox1" not in queue.in_flight
    assert queue.state.in_flight() == 0

    # an answer without a record: the image failed before it finished; the same id may be sent again
    answered = as_caller(bob, lambda: direct.admit(generate_request(tags, "hare1")))
    answered()
    [failed] = queue.jobs_of(bob)
    assert failed.status == "failed" and "ended before the image was finished" in failed.images[0].error
    answered = as_caller(bob, lambda: direct.admit(generate_request(tags, "hare1")))
    assert [j.status for j in queue.jobs_of(bob)] == ["running"]  # the failed try is forgotten
    with pytest.raises(NotYourImage, match="'hare1' is being made or was made"):
        as_caller(bob, lambda: direct.admit(generate_request(tags, "hare1")))
    with pytest.raises(NotYourImage, match="'fox1' is being made or was made"):
        as_caller(alice, lambda: direct.admit(generate_request(tags, "fox1")))


def test_a_generate_request_counts_toward_its_token_s_daily_quota(calls):
    from disco_service.server.quotas import Quota, QuotaExceeded
    from disco_service.transport import classify
    from disco_service.wire import request_tags

    direct, tokens = calls
    alice = tokens.owner(f"Bearer {ALICE}")
    direct.queue.state.quota = Quota(max_images_per_day=2)
    tags = request_tags(
        validate_settings({"text_prompts": ["x"], "width_height": [64, 64], "seed": 3}, tokens=False), 0
    )
    as_caller(alice, lambda: direct.admit(generate_request(tags, "q1", "q2")))()  # two images: the day's all
    with pytest.raises(QuotaExceeded, match=r"DISCO_MAX_IMAGES_PER_DAY") as refused:
        as_caller(alice, lambda: direct.admit(generate_request(tags, "q3")))
    assert classify(refused.value).code == "quota_exceeded"  # as a gRPC caller reads it
    assert direct.queue.state.usage(alice)["images"] == 2 and len(direct.queue.jobs_of(alice)) == 1


class PollingFlow(NoFlow):
    """Records each ``/progress`` poll: its ids, and whether it tells the sampler a caller waits."""

    def __init__(self) -> None:
        self.polls: list[tuple[list[str], bool, bool]] = []

    async def progress(self, ids, frame=False, keep_alive=True):
        self.polls.append((list(ids), frame, keep_alive))
        return [Document(id=i, tags={"status": "running", "step": 1.0, "frame_step": 1.0}) for i in ids]


def test_watching_a_caller_s_request_does_not_keep_it_alive_but_the_job_api_s_images_are(tmp_path):
    """A caller that went away (e.g. behind a proxy that gave up) leaves its image to be stopped as
    abandoned: the gateway's own watch of that request must not count as the caller's poll."""
    import asyncio

    from disco_service.wire import request_tags

    flow, tokens = PollingFlow(), Tokens([ALICE, BOB])
    queue = JobQueue(ResultStore(tmp_path), flow, max_jobs_per_owner=3)
    direct, alice = DirectCalls(queue, tokens), tokens.owner(f"Bearer {ALICE}")
    fox = validate_settings({"text_prompts": ["a fox"], "width_height": [64, 64], "seed": 3}, tokens=False)
    tags = request_tags(fox, 0)
    as_caller(alice, lambda: direct.admit(generate_request(tags, "call1")))
    job = queue.submit(alice, validate_settings(text_prompts=["x"], n_batches=1, seed=1, width_height=[64, 64]))
    queue.in_flight[job.images[0].doc_id] = (job, job.images[0], None)  # the job API's, as after a restart
    asyncio.run(queue._poll())
    kept = {i: alive for ids, _, alive in flow.polls for i in ids}
    assert kept == {"call1": False, job.images[0].doc_id: True}, flow.polls
    assert all(not alive for ids, frame, alive in flow.polls if frame and "call1" in ids)  # nor its frame fetch
