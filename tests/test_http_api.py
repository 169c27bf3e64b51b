"""The service's HTTP routes in-process: the job API, the results by Document id, the token check,
/post's statuses and PaddleHub's route, mounted on a bare FastAPI app over a job queue whose Flow
is fake (tests/fake_flow.py), driven through httpx's ASGI transport. tests/test_jobs.py drives the
same routes end to end, over a served Flow."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import io
import time
import uuid
from collections.abc import AsyncIterator, Callable

import httpx
import pytest
from docarray import DocumentArray
from fake_flow import FakeFlow, png
from fastapi import FastAPI
from fastapi.responses import JSONResponse
from hypothesis import given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from PIL import Image

from disco.settings import DEFAULT_LIMITS, Limits
from disco_service import transport
from disco_service.server import http_api, hub_serving, job_queue
from disco_service.server.job_queue import JobQueue
from disco_service.server.results import ResultStore
from disco_service.server.tokens import Tokens

SMALL = {"text_prompts": ["a lighthouse"], "width_height": [64, 64], "steps": 3, "skip_steps": 0}
ALICE, BOB = "alice-token-0123456789", "bob-token-0123456789ab"


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture(autouse=True)
def quick(monkeypatch):
    monkeypatch.setattr(job_queue, "POLL_S", 0.01)
    monkeypatch.setattr(transport, "RETRY", transport.RetryPolicy(pause_s=0))


@pytest.fixture
def store(tmp_path) -> ResultStore:
    return ResultStore(tmp_path / "results", ttl_s=3600)


@contextlib.asynccontextmanager
async def service(
    store: ResultStore,
    flow: FakeFlow | None = None,
    tokens: tuple[str, ...] = (),
    limits: Limits = DEFAULT_LIMITS,
    max_jobs: int = 10,
) -> AsyncIterator[tuple[httpx.AsyncClient, JobQueue]]:
    """The routes as the gateway mounts them, with the queue running: yields a client and the queue."""
    queue = JobQueue(store, flow or FakeFlow(store), max_jobs_per_owner=max_jobs)
    app = FastAPI()

    @app.post("/post")  # stands in for Jina's REST route: answers the body it is sent
    async def post(body: dict):
        return JSONResponse(body)

    http_api.mount(app, queue, Tokens(tokens), limits)
    hub_serving.mount(app, queue, limits)
    runner = asyncio.create_task(queue.run())
    try:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gateway") as client:
            yield client, queue
    finally:
        runner.cancel()


async def until(client: httpx.AsyncClient, url: str, done: Callable[[dict], bool], headers=None) -> dict:
    """GET ``url`` until ``done(answer)`` (60 s at most: a busy machine is slow): the last answer."""
    deadline = time.time() + 60
    while True:
        answer = (await client.get(url, headers=headers)).json()
        if done(answer):
            return answer
        assert time.time() < deadline, answer
        await asyncio.sleep(0.01)


def colour(data: bytes) -> tuple[int, int, int]:
    """The colour of a fake frame (the store adds its settings to the PNG, so bytes differ)."""
    return Image.open(io.BytesIO(data)).convert("RGB").getpixel((0, 0))


def ended(job: dict) -> bool:
    return job["status"] not in ("queued", "running")


def test_a_job_is_queued_shown_listed_and_its_files_served(store):
    async def scenario():
        async with service(store) as (client, queue):
            answer = await client.post("/jobs", json={**SMALL, "n_batches": 2, "seed": 5})
            assert answer.status_code == 202
            job = answer.json()
            assert answer.headers["location"] == f"/jobs/{job['id']}"
            assert job["status"] == "queued" and job["position"] == 1
            assert [i["seed"] for i in job["images"]] == [5, 6] and job["settings"]["steps"] == 3
            job = await until(client, f"/jobs/{job['id']}", ended)
            assert job["status"] == "done" and job["position"] is None
            image = job["images"][1]
            base = f"/jobs/{job['id']}/images/1"
            assert (image["png"], image["gif"], image["sprite"]) == (
                f"{base}/final.png", f"{base}/frames.gif", f"{base}/sprite.png"
            )  # fmt: skip
            assert image["frame"] is None and image["frame_pngs"] == [] and image["mp4"] is None

            final = await client.get(image["png"])
            assert final.status_code == 200 and final.headers["content-type"] == "image/png"
            assert final.content == store.file(queue.jobs[job["id"]].images[1].doc_id, "final.png").read_bytes()
            assert final.headers["content-disposition"] == 'inline; filename="reverse_diffusion-5_1.png"'
            latest = await client.get(f"{base}/latest.png")
            assert latest.content == final.content
            assert latest.headers["content-disposition"].endswith('filename="reverse_diffusion-5_1-latest.png"')
            assert Image.open(io.BytesIO((await client.get(image["gif"])).content)).format == "GIF"
            assert Image.open(io.BytesIO((await client.get(image["sprite"])).content)).format == "PNG"
            for wrong in (f"/jobs/{job['id']}/images/2/final.png", f"{base}/result.json", f"{base}/../../x"):
                refused = await client.get(wrong)
                assert refused.status_code == 404, wrong
            assert "has images 0 to 1" in (await client.get(f"{base}/result.json")).json()["detail"]

            second = (await client.post("/jobs", json={**SMALL, "seed": 9})).json()
            listed = (await client.get("/jobs")).json()["jobs"]
            assert [j["id"] for j in listed] == [second["id"], job["id"]]  # newest first
            assert [j["id"] for j in (await client.get("/jobs?limit=1")).json()["jobs"]] == [second["id"]]
            assert (await client.get("/jobs/no-such-job")).status_code == 404

    asyncio.run(scenario())


@pytest.mark.parametrize(
    "body,setting,fragment",
    [
        (b"{not json", "settings", "the body is not JSON"),
        ([1, 2], "settings", "must be a JSON object"),
        ({**SMALL, "steps": 0}, "steps", "must be in [1, 1000]"),
        ({**SMALL, "stepz": 3}, "stepz", ""),
        ({**SMALL, "width_height": [128, 128]}, "width_height", "DISCO_MAX_PIXELS"),
        ({**SMALL, "output_dir": "/tmp/x"}, "output_dir", "result store"),
        ({**SMALL, "resume_run": True}, "resume_run", "client.py"),
        ({**SMALL, "init_image": "/etc/passwd"}, "init_image", "does not open paths"),
        ({**SMALL, "init_image": "data:image/png;base64,!!"}, "init_image", "cannot be decoded"),
        ({**SMALL, "init_image": "data:image/png;base64," + base64.b64encode(b"text").decode()}, "init_image", ""),
        ({**SMALL, "video_init_path": "data:video/mp4;base64,AAAA"}, "video_init_path", ""),
    ],
)
def test_a_bad_job_is_refused_naming_the_setting_and_nothing_is_queued(store, body, setting, fragment):
    async def scenario():
        async with service(store, limits=Limits(max_pixels=64 * 64)) as (client, queue):
            if isinstance(body, bytes):
                answer = await client.post("/jobs", content=body)
            else:
                answer = await client.post("/jobs", json=body)
            assert answer.status_code == 400, answer.text
            assert answer.json()["setting"] == setting and fragment in answer.json()["detail"]
            assert queue.jobs == {}

    asyncio.run(scenario())


def test_a_caller_with_too_many_jobs_is_told_the_setting_that_caps_them(store):
    async def scenario():
        async with service(store, FakeFlow(store, hold=asyncio.Event()), max_jobs=1) as (client, _):
            assert (await client.post("/jobs", json=SMALL)).status_code == 202
            refused = await client.post("/jobs", json=SMALL)
            assert refused.status_code == 429 and "DISCO_MAX_JOBS_PER_TOKEN=1" in refused.json()["detail"]

    asyncio.run(scenario())


def test_cancel_ends_queued_images_at_once_and_running_ones_with_their_frames(store):
    async def scenario():
        flow = FakeFlow(store, hold=asyncio.Event())
        async with service(store, flow) as (client, _):
            job = (await client.post("/jobs", json={**SMALL, "n_batches": 2, "seed": 3})).json()
            url = f"/jobs/{job['id']}"
            await until(client, url, lambda j: j["images"][0]["step"] == 1)  # the first runs, the second waits
            cancelled = await client.delete(url)
            assert cancelled.status_code == 200
            assert [i["status"] for i in cancelled.json()["images"]] == ["running", "cancelled"]
            job = await until(client, url, ended)
            first = job["images"][0]
            assert job["status"] == "cancelled" and first["status"] == "cancelled" and first["png"] is None
            refusal = await client.get(f"{url}/images/0/final.png")
            assert refusal.status_code == 409 and "ended as cancelled at step 1 of 3" in refusal.json()["detail"]
            kept = await client.get(first["latest_frame"])  # the frame made before the cancel is kept
            assert kept.status_code == 200 and colour(kept.content) == (1, 0, 0)
            assert Image.open(io.BytesIO((await client.get(first["gif"])).content)).n_frames == 1
            assert (await client.get(f"{url}/images/1/latest.png")).status_code == 404  # never started
            assert (await client.delete("/jobs/no-such-job")).status_code == 404
            assert len(flow.sent) == 1

    asyncio.run(scenario())


def test_an_animation_job_serves_its_frames_and_video(store):
    async def scenario():
        async with service(store) as (client, _):
            body = {**SMALL, "animation_mode": "2D", "max_frames": 3, "seed": 8}
            submitted = (await client.post("/jobs", json=body)).json()
            job = await until(client, f"/jobs/{submitted['id']}", ended)
            image = job["images"][0]
            base = f"/jobs/{job['id']}/images/0"
            assert (image["frames"], image["frames_done"]) == (3, 3)
            assert image["frame_pngs"] == [f"{base}/frame{n:04d}.png" for n in range(3)]
            frame = await client.get(image["frame_pngs"][1])
            assert colour(frame.content) == (40, 0, 0)
            assert frame.headers["content-disposition"] == 'inline; filename="reverse_diffusion-8-frame0001.png"'
            video = await client.get(image["mp4"])
            assert video.status_code == 200 and video.headers["content-type"] == "video/mp4"
            assert video.headers["content-disposition"] == 'inline; filename="reverse_diffusion-8.mp4"'
            assert (await client.get(f"{base}/frame0003.png")).status_code == 404

    asyncio.run(scenario())


def test_with_tokens_every_route_needs_one_and_a_job_is_its_owner_s_alone(store):
    async def scenario():
        async with service(store, tokens=(ALICE, BOB)) as (client, queue):
            for headers, fragment in (
                ({}, "needs a token"),
                ({"Authorization": ALICE}, "must be 'Bearer TOKEN'"),
                (bearer("mallory-token-012345"), "not accepted"),
            ):
                for method, url in (("GET", "/jobs"), ("POST", "/jobs"), ("GET", "/results/x"), ("POST", "/post")):
                    refused = await client.request(method, url, headers=headers)
                    assert refused.status_code == 401, (method, url, headers)
                    assert fragment in refused.json()["detail"] and refused.headers["www-authenticate"] == "Bearer"
            assert (await client.get("/ui/index.html")).status_code == 404  # the page's files are open: not 401
            assert queue.jobs == {}

            job = (await client.post("/jobs", json=SMALL, headers=bearer(ALICE))).json()
            url = f"/jobs/{job['id']}"
            job = await until(client, url, ended, headers=bearer(ALICE))
            doc_id = queue.jobs[job["id"]].images[0].doc_id
            for method, path in (
                ("GET", url),
                ("GET", f"{url}/images/0/final.png"),
                ("GET", f"/results/{doc_id}"),
                ("GET", f"/results/{doc_id}/final.png"),
                ("DELETE", url),  # last: a finished job's DELETE removes it
            ):
                assert (await client.request(method, path, headers=bearer(BOB))).status_code == 404, path
                assert (await client.request(method, path, headers=bearer(ALICE))).status_code == 200, path
            assert (await client.get("/jobs", headers=bearer(BOB))).json()["jobs"] == []
            assert (await client.get("/jobs", headers=bearer(ALICE))).json()["jobs"] == []  # deleted by its owner

    asyncio.run(scenario())


def test_results_by_document_id_for_images_of_no_job(store):
    async def scenario():
        flow = FakeFlow(store)
        async with service(store, flow) as (client, _):
            done, running, unknown = (uuid.uuid4().hex for _ in range(3))
            store.add_frame(done, 1, png((9, 9, 9)), {"seed": 1})
            store.add_frame(done, 2, png(), {"seed": 1})
            store.finish(done, {"status": "done", "seed": 1})
            record = (await client.get(f"/results/{done}")).json()
            base = f"/results/{done}"
            assert record["status"] == "done" and record["files"]["final"] == f"{base}/final.png"
            assert record["files"]["frames"] == [f"{base}/step0001.png", f"{base}/step0002.png"]
            assert colour((await client.get(record["files"]["final"])).content) == (200, 100, 0)
            assert colour((await client.get(record["files"]["frames"][0])).content) == (9, 9, 9)
            assert Image.open(io.BytesIO((await client.get(record["files"]["gif"])).content)).n_frames == 2
            assert (await client.get(f"{base}/result.json")).status_code == 404

            flow.states[running] = {"status": "running", "step": 2, "total": 5, "started": 1.0, "secret": "x"}
            progress = (await client.get(f"/results/{running}")).json()
            assert progress == {"id": running, "status": "running", "step": 2, "total": 5, "started": 1.0,
                                "frame_step": None, "files": {}}  # fmt: skip
            missing = await client.get(f"/results/{unknown}")
            assert missing.status_code == 404 and "unknown, not started" in missing.json()["detail"]
            bad = await client.get("/results/..%2Fjobs")
            assert bad.status_code == 404

    asyncio.run(scenario())


@pytest.mark.parametrize(
    "exception,status,code",
    [
        (None, 200, None),
        ("SettingsError", 400, "setting_invalid"),
        ("UnknownEndpoint", 400, "endpoint_unknown"),
        ("ImageNotFinished", 409, "image_not_finished"),
        ("KeyError", 500, "internal"),
    ],
)
def test_post_answers_with_an_error_get_an_http_error_status(store, exception, status, code):
    body = {"data": [], "header": {}}
    if exception:
        body["header"]["status"] = {"code": "ERROR", "exception": {"name": exception}}

    async def scenario():
        async with service(store) as (client, _):
            answer = await client.post("/post", json=body)
            coded = {**body, "code": code, "setting": None} if code else body  # Jina's answer with its code
            assert answer.status_code == status and answer.json() == coded
            assert int(answer.headers["content-length"]) == len(answer.content)

    asyncio.run(scenario())


def test_paddlehub_s_route_answers_as_hub_serving_does(store):
    async def scenario():
        route = f"/predict/{hub_serving.MODULE}"
        async with service(store, FakeFlow(store, {41: "cancelled"})) as (client, _):
            answer = (await client.post(route, json={**SMALL, "n_batches": 2, "seed": 30})).json()
            assert answer["status"] == "000" and answer["msg"] == ""
            docs = DocumentArray.from_base64(answer["results"])
            assert [d.tags["seed"] for d in docs] == [30, 31] and {d.tags["status"] for d in docs} == {"done"}
            assert all(d.uri.startswith("data:image/png;base64,") and len(d.chunks) == 1 for d in docs)
            assert docs[0].chunks[0].tags["step"] == 3

            refused = (await client.post(route, json={**SMALL, "steps": -1})).json()
            assert refused["status"] == "101" and refused["msg"].startswith("steps:") and refused["results"] == ""
            animation = (await client.post(route, json={**SMALL, "animation_mode": "2D"})).json()
            assert animation["status"] == "101" and "send animations to /jobs" in animation["msg"]
            unfinished = (await client.post(route, json={**SMALL, "seed": 41})).json()
            assert unfinished["status"] == "101" and "image 0 (seed 41) cancelled" in unfinished["msg"]
            assert (await client.post(route, content=b"{oops")).json()["status"] == "112"
            other = (await client.post("/predict/some_other_module", json={})).json()
            assert (other["status"], other["code"], other["results"]) == ("111", "module_not_found", "")
            assert other["msg"] == "Module some_other_module is not available."

    asyncio.run(scenario())


def test_paddlehub_s_route_needs_a_token_too(store):
    async def scenario():
        async with service(store, tokens=(ALICE,)) as (client, queue):
            refused = await client.post(f"/predict/{hub_serving.MODULE}", json=SMALL)
            assert refused.status_code == 401 and queue.jobs == {}
            answer = await client.post(f"/predict/{hub_serving.MODULE}", json=SMALL, headers=bearer(ALICE))
            assert answer.json()["status"] == "000"
            assert [job.owner for job in queue.jobs.values()] == [Tokens([ALICE]).owner(f"Bearer {ALICE}")]

    asyncio.run(scenario())


# ----- a server without GPU: small defaults on the page, and a confirm before a long job -----


def test_a_server_without_gpu_asks_for_a_confirm_before_a_long_job_naming_the_estimate_and_the_limit(store):
    from disco_service.server import routes

    long_job = {"text_prompts": ["a lighthouse"], "width_height": [512, 512], "steps": 100, "n_batches": 2}

    async def scenario(use_gpu: str) -> list[httpx.Response]:
        queue = JobQueue(store, FakeFlow(store))
        app = FastAPI()
        routes.mount_service(app, queue, Tokens(), DEFAULT_LIMITS, use_gpu, confirm_over_s=900)
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gateway") as client:
            return [
                await client.post("/jobs/estimate", json=long_job),
                await client.post("/jobs", json=long_job),
                await client.post("/jobs?confirm=1", json=long_job),
                await client.post("/jobs", json=SMALL),
            ]

    estimate, refused, confirmed, small = asyncio.run(scenario("0"))
    told = estimate.json()
    assert told["device"] == "cpu" and told["long"] is True and told["confirm_over_s"] == 900
    assert told["cpu_seconds"] > 3600  # hours on a CPU
    assert refused.status_code == 409, refused.text
    body = refused.json()
    assert body["code"] == "confirm_required" and body["setting"] is None
    assert f"({told['cpu_seconds']:.0f} s)" in body["detail"]  # the estimate ...
    assert "DISCO_CONFIRM_OVER_S=900" in body["detail"] and "?confirm=1" in body["detail"]  # ... and the limit
    assert confirmed.status_code == 202 and len(confirmed.json()["images"]) == 2
    assert small.status_code == 202  # a small job is not asked about
    estimate, plain, _, _ = asyncio.run(scenario("1"))  # a GPU server asks nothing
    assert estimate.json()["long"] is False and plain.status_code == 202


@given(
    side=st.sampled_from([64, 128, 256, 512, 768]),
    steps=st.integers(20, 400),
    n_batches=st.integers(1, 4),
    limit=st.sampled_from([60.0, 900.0, 3600.0]),
)
@hypothesis_settings(max_examples=25, deadline=None)
def test_a_job_is_refused_exactly_when_its_estimate_exceeds_the_limit(side, steps, n_batches, limit):
    from disco.settings import validate_settings
    from disco_service.server import estimates
    from disco_service.server.quotas import LongJob

    values = {"text_prompts": ["x"], "width_height": [side, side], "steps": steps, "n_batches": n_batches}
    asked = validate_settings(values, tokens=False)  # as the job API checks them (no tokenizer)
    seconds = estimates.estimate(asked, "cpu", limit)["cpu_seconds"]
    check = estimates.long_job_check("cpu", limit)
    if seconds > limit:
        with pytest.raises(LongJob, match=rf"\({seconds:.0f} s\).*DISCO_CONFIRM_OVER_S={limit:g}"):
            check(asked, False)
    else:
        check(asked, False)
    check(asked, True)  # confirmed: never refused
    assert estimates.long_job_check("gpu", limit) is None and estimates.long_job_check("cpu", 0) is None


@given(
    mode=st.sampled_from(["2D", "3D", "Video Input"]),
    frames=st.integers(1, 6),
    steps=st.integers(2, 60),
    frames_skip=st.sampled_from(["0%", "50%", "90%"]),
    turbo=st.booleans(),
)
@hypothesis_settings(max_examples=20, deadline=None)
def test_an_animation_is_estimated_by_its_plan_s_steps(mode, frames, steps, frames_skip, turbo):
    """Every animation mode is timed by the frames and steps its plan makes (a video's frames from
    its bytes, later frames skipping frames_skip_steps, turbo's warped frames none), as the sampler
    will run them, never by max_frames' worth of full frames."""
    from test_animation import coloured_frames, mp4_bytes

    from disco.animation_plan import plan_run
    from disco.settings import validate_settings
    from disco.video import video_info
    from disco_service.client.cpu_estimate import cpu_seconds_per_step, mean_cutouts
    from disco_service.server import estimates

    values = {"text_prompts": ["x"], "width_height": [64, 64], "steps": steps, "skip_steps": 0, "max_frames": 50}
    values.update(animation_mode=mode, frames_skip_steps=frames_skip, turbo_mode=turbo and mode == "3D")
    video = mp4_bytes(coloured_frames(frames), fps=10) if mode == "Video Input" else None
    values.update(
        {"max_frames": frames} if mode != "Video Input" else {"video_init_flow_warp": False, "extract_nth_frame": 1}
    )
    asked = validate_settings(values, tokens=False)
    plan = plan_run(asked, video=video_info(video) if video else None)
    per_step = cpu_seconds_per_step(64, 64, cutn_batches=1, cutouts=mean_cutouts(asked))
    got = estimates.estimate(asked, "cpu", 900, video)["cpu_seconds"]
    assert got == pytest.approx(per_step * plan.run_steps, abs=0.1) and plan.frames == frames
    estimates.long_job_check("cpu", per_step * plan.run_steps + 1)(asked, False, video)  # under the limit: taken


def test_the_page_of_a_server_without_gpu_starts_from_small_settings(monkeypatch):
    from disco.settings import validate_settings
    from disco_service.server import estimates
    from gateway.page_gateway import page_settings

    monkeypatch.setenv("DISCO_USE_GPU", "0")
    cpu = page_settings()
    defaults = {row["name"]: row["default"] for row in cpu["settings"]}
    assert cpu["device"] == "cpu" and cpu["confirm_over_s"] == 900
    assert defaults["width_height"] == [256, 256] and defaults["steps"] == 50 and defaults["n_batches"] == 1
    small = validate_settings({**defaults, "text_prompts": ["x"]}, tokens=False)  # the form's starting job
    assert estimates.estimate(small, "cpu", 900)["long"] is False  # minutes, not hours: no confirm needed
    monkeypatch.setenv("DISCO_USE_GPU", "1")
    gpu = page_settings()
    own = {row["name"]: row["default"] for row in gpu["settings"]}
    assert gpu["device"] == "gpu" and gpu["confirm_over_s"] is None
    assert own["width_height"] != [256, 256] and own["steps"] > 50  # the settings' own defaults
    full = validate_settings({**own, "text_prompts": ["x"]}, tokens=False)
    assert estimates.estimate(full, "cpu", 900)["long"] is True  # which a CPU would take hours over


def kept_run(store: ResultStore, owner: str, name: str, run_seed: int, n: int, shade: int = 0) -> DocumentArray:
    """A run of ``n`` images as the Renderer keeps it: each image's Document (its final image, two
    frames as chunks, its tags) in the result store under ``owner``."""
    from docarray import Document

    def uri(colour):
        return "data:image/png;base64," + base64.b64encode(png(colour)).decode()

    docs = DocumentArray()
    for i in range(n):
        tags = {"batch_name": name, "run_seed": float(run_seed), "seed": float(run_seed + i), "batch_index": float(i)}
        doc = Document(id=uuid.uuid4().hex, uri=uri((shade, i, 9)), tags={**tags, "status": "done"})
        for step in (1, 2):
            doc.chunks.append(Document(uri=uri((shade, i, step)), tags={"step": float(step), "cur_t": float(5 - step)}))
        assert store.claim(doc.id, owner) and store.keep_document(doc.id, doc)
        docs.append(doc)
    return docs


def same_run(got: DocumentArray, want: DocumentArray) -> None:
    assert [d.id for d in got] == [d.id for d in want]
    for a, b in zip(got, want, strict=True):
        assert a.uri == b.uri and a.tags == b.tags
        assert [(c.uri, c.tags) for c in a.chunks] == [(c.uri, c.tags) for c in b.chunks]


def test_a_run_is_fetched_by_its_name_by_its_owner_alone(store):
    from disco_service.server.tokens import fingerprint

    async def scenario():
        async with service(store, tokens=(ALICE, BOB)) as (client, _):
            first = kept_run(store, fingerprint(ALICE), "lighthouses", 7, 2)
            answer = await client.get("/runs/lighthouses", headers=bearer(ALICE))
            assert answer.status_code == 200 and answer.headers["content-type"] == "application/json"
            same_run(DocumentArray.from_json(answer.content), first)
            # a later run of the same name replaces it; another name, or another owner's run, is apart
            later = kept_run(store, fingerprint(ALICE), "lighthouses", 9, 1, shade=50)
            kept_run(store, fingerprint(ALICE), "lighthouses-2", 11, 1)
            bobs = kept_run(store, fingerprint(BOB), "boats", 3, 1)
            answer = await client.get("/runs/lighthouses", headers=bearer(ALICE))
            same_run(DocumentArray.from_json(answer.content), later)
            same_run(DocumentArray.from_json((await client.get("/runs/boats", headers=bearer(BOB))).content), bobs)
            # another token cannot fetch it, and cannot tell it from a name nobody used (404, not 403)
            theirs = await client.get("/runs/boats", headers=bearer(ALICE))
            nobody = await client.get("/runs/ships", headers=bearer(ALICE))
            assert theirs.status_code == nobody.status_code == 404
            assert theirs.json() == {**nobody.json(), "detail": nobody.json()["detail"].replace("ships", "boats")}
            assert theirs.json()["code"] == "result_not_found"
            assert (await client.get("/runs/lighthouses")).status_code == 401  # no token at all

    asyncio.run(scenario())


def test_only_a_named_run_is_kept_and_a_broken_entry_is_skipped(store):
    from docarray import Document

    assert not store.keep_document("a" * 32, Document(tags={"batch_name": "", "seed": 1.0}))
    assert not (store.entry("a" * 32)).exists()
    kept = kept_run(store, "someone", "x", 1, 2)
    (store.entry(kept[0].id) / "run.json").write_text("{not json")  # any content: skipped, not fatal
    assert store.run_documents("x", lambda doc_id: True) == [kept[1].id]
    assert store.run_documents("x", lambda doc_id: False) == []
