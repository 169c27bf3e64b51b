"""batch_size above 1 through the service, in one process: the sampler answers each sent Document with
its batch's images, the Renderer and the client's files treat each as a full image."""

from pathlib import Path

import pytest
from conftest import TINY
from docarray import DocumentArray
from hypothesis import given, settings
from hypothesis import strategies as st

from disco.clip_catalog import DEFAULT_CLIP_MODEL
from disco.clip_model import encode_texts
from disco.settings import SettingsError, validate_settings
from disco_service import wire
from disco_service.client import api
from disco_service.outputs import png_settings
from disco_service.server.results import ResultStore


@pytest.fixture
def executors(tiny_models, tmp_path, monkeypatch):
    """The sampler (its models the tiny ones) and the Renderer, sharing a job board and a result store;
    ``calls`` counts the sampler's ``sample_image`` calls."""
    import executors.diffusion_sampler as sampling
    from executors.diffusion_sampler import DiffusionSampler
    from executors.renderer import Renderer

    board, results = str(tmp_path / "jobs.sqlite3"), str(tmp_path / "results")
    sampler = DiffusionSampler(model_dir=str(tmp_path), use_gpu="0", preload="none", state_store=board,
                               results_dir=results)  # fmt: skip
    monkeypatch.setattr(sampler.cache, "models", lambda *args, **kwargs: tiny_models)
    calls = []
    real = sampling.sample_image

    def counting(*args, **kwargs):
        calls.append(args[0].batch_size)
        return real(*args, **kwargs)

    monkeypatch.setattr(sampling, "sample_image", counting)
    return sampler, Renderer(state_store=board, results_dir=results), ResultStore(results, 3600), calls


def with_embeddings(tiny_models, docs):
    """The Documents as the encoder passes them on (one prompt, embedded by the tiny CLIP)."""
    embeds = encode_texts(tiny_models.clip, ["a red apple"]).numpy()
    for doc in docs:
        doc.embedding, doc.tags[wire.EMBEDDING_WIDTHS_TAG] = wire.pack_embeddings({DEFAULT_CLIP_MODEL: embeds})
        doc.tags[wire.PROMPT_WEIGHTS_TAG] = [1.0]
        doc.tags["prompt_sets"] = [[0, 1]]
    return docs


def run(tiny_models, executors, tmp_path, monkeypatch, **given):
    """``generate_image`` with the sampler and the Renderer in this process standing for the Flow (one
    request per Document, as ``run_jobs`` sends them); the Documents sent and those returned."""
    sampler, renderer, store = executors[:3]
    sent = []

    async def in_process(address, docs, show_progress, on_finished_frame=None, token=None):
        answers = DocumentArray()
        for doc in docs:
            sent.append(doc)
            store.claim(doc.id, "alice")  # as the gateway records who sent an image
            answer = sampler.generate(with_embeddings(tiny_models, DocumentArray([doc])))
            renderer.render(answer, parameters={wire.ACCEPT_UNFINISHED: True})
            answers.extend(answer)
        for doc in answers:
            wire.cast_tags(doc)
        return answers, []

    monkeypatch.setattr(api, "run_jobs", in_process)
    values = {**TINY, "seed": 7, "steps": 3, "display_rate": 1, "output_dir": str(tmp_path / "out"), **given}
    answer = api.generate_image(**values, host="grpc://127.0.0.1:1", progress=False)
    return sent, answer


def test_n_batches_times_batch_size_images_one_sampler_call_per_batch(tiny_models, executors, tmp_path, monkeypatch):
    sent, answer = run(
        tiny_models,
        executors,
        tmp_path,
        monkeypatch,
        n_batches=2,
        batch_size=2,
        steps=3,
        batch_name="fox",
        intermediate_saves=[1],
    )
    store, calls = executors[2], executors[3]
    assert calls == [2, 2]  # one call per batch, each painting 2 images
    assert len(answer) == 4
    tags = [(d.tags["seed"], d.tags["batch_index"], d.tags[wire.BATCH_POSITION_TAG]) for d in answer]
    assert sorted(tags) == [(7, 0, 0), (7, 0, 1), (8, 1, 0), (8, 1, 1)]
    first = sent[0].id
    assert {d.id for d in answer} == {
        first,
        wire.batch_image_id(first, 1),
        sent[1].id,
        wire.batch_image_id(sent[1].id, 1),
    }
    finals = set()
    for doc in answer:
        assert doc.tags["status"] == wire.JobStatus.DONE
        assert [int(c.tags["step"]) for c in doc.chunks] == [1, 2]  # every display_rate-th step and the last
        assert doc.uri.startswith("data:image/png") and doc.uri == doc.chunks[-1].uri
        finals.add(doc.uri)
        record = store.read(doc.id)  # each image's own record and final image in the result store
        assert store.owner(doc.id) == "alice"  # a batch's images answer their sender alone
        assert record["status"] == "done" and (store.entry(doc.id) / "final.png").is_file()
    assert len(finals) == 4  # four different pictures
    files = [f for d in answer for f in d.tags["files"]]
    names = [Path(f).name for f in files]
    assert len(names) == len(set(names))  # nothing overwritten
    finals_written = sorted(n for n in names if n.endswith(("_0.png", "_1.png")))
    assert finals_written == [f"reverse_diffusion-fox-7_{i}_{k}.png" for i in (0, 1) for k in (0, 1)]
    ordered = [sent[0].id, wire.batch_image_id(sent[0].id, 1), sent[1].id, wire.batch_image_id(sent[1].id, 1)]
    assert store.run_documents("fox", lambda doc_id: True) == ordered  # GET /runs/fox: every image, in order
    partials = sorted(Path(f).name for f in files if Path(f).parent.name == "partials")
    assert partials == [f"reverse_diffusion-fox-7_{i}_{k}-001.png" for i in (0, 1) for k in (0, 1)]  # each its own
    assert len({(Path(f).read_bytes()) for f in files if Path(f).parent.name == "partials"}) == 4
    remade = png_settings((tmp_path / "out" / finals_written[1]).read_bytes())
    assert remade["seed"] == 7 and remade["batch_size"] == 2 and remade["n_batches"] == 1


def test_batch_size_one_answers_one_document_as_before(tiny_models, executors, tmp_path, monkeypatch):
    sent, answer = run(tiny_models, executors, tmp_path, monkeypatch, n_batches=2, steps=2)
    assert executors[3] == [1, 1]
    assert [d.id for d in answer] == [d.id for d in sent]
    assert all(wire.BATCH_POSITION_TAG not in d.tags and wire.BATCH_OF_TAG not in d.tags for d in answer)
    files = [Path(f) for d in answer for f in d.tags["files"]]
    assert sorted(f.name for f in files if f.name.endswith(("_0.png", "_1.png"))) == [
        "reverse_diffusion-7_0.png",
        "reverse_diffusion-7_1.png",
    ]


def test_a_failed_batch_names_every_image_and_keeps_each(tiny_models, executors, tmp_path, monkeypatch):
    """A batch that turns NaN fails as a whole: every image comes back failed with its frames so far,
    saved, and the error names each by its batch and its place in it."""
    import torch

    import executors.diffusion_sampler as sampling
    from disco.sampler import StepReport

    def turns_nan(s, *args, **kwargs):
        fine = torch.full((s.batch_size, 3, 64, 64), 0.5)
        yield StepReport(1, 2, 1, fine[0], None, images=fine)
        nan = torch.full((s.batch_size, 3, 64, 64), float("nan"))
        yield StepReport(2, 2, -1, nan[0], None, images=nan)

    monkeypatch.setattr(sampling, "sample_image", turns_nan)
    with pytest.raises(api.GenerationFailed) as failed:
        run(tiny_models, executors, tmp_path, monkeypatch, batch_size=2, n_batches=1)
    assert [m.split(":")[0] for m in failed.value.messages] == ["image 0, place 0 in its batch",
                                                                "image 0, place 1 in its batch"]  # fmt: skip
    assert all("NaN at step 2" in m for m in failed.value.messages)
    for doc in failed.value.results:
        assert doc.tags["status"] == "failed" and [int(c.tags["step"]) for c in doc.chunks] == [1]
    names = sorted(Path(f).name for d in failed.value.results for f in d.tags["files"] if f.endswith("failed.png"))
    assert names == ["reverse_diffusion-7_0_0-failed.png", "reverse_diffusion-7_0_1-failed.png"]


def test_a_batch_whose_image_id_is_taken_fails_before_sampling(tiny_models, executors):
    from executors.diffusion_sampler import DocumentIdInUse

    sampler, _, store, calls = executors
    doc = with_embeddings(tiny_models, api.make_documents(validate_settings(TINY, batch_size=3, seed=1), None))[0]
    store.claim(doc.id, "alice")
    store.claim(wire.batch_image_id(doc.id, 2), "mallory")
    with pytest.raises(DocumentIdInUse, match="image 2 of the batch"):
        sampler.generate(DocumentArray([doc]))
    assert calls == [] and store.owner(wire.batch_image_id(doc.id, 2)) == "mallory"


# ----- the job API, quotas and estimates -----


def test_the_job_api_paints_batches_and_shows_each_image(tmp_path, monkeypatch):
    """POST /jobs with batch_size 2: each of the job's images is one batch (one sampler call); its
    view lists the batch's further images, which the caller can fetch, the zip holds all of them under
    client.py's names, deleting the job removes them; /predict (one image per batch in its answer)
    refuses a batch naming batch_size."""
    import asyncio
    import io

    from fake_flow import FakeFlow, png
    from PIL import Image
    from test_http_api import ended, service, until

    from disco_service import transport
    from disco_service.server import gallery, hub_serving, job_queue

    monkeypatch.setattr(job_queue, "POLL_S", 0.01)
    monkeypatch.setattr(transport, "RETRY", transport.RetryPolicy(pause_s=0))

    class BatchFlow(FakeFlow):
        """Keeps a batch's further images as the sampler does: claimed for the sender, recorded."""

        async def generate(self, doc):
            answer = await super().generate(doc)
            for k in range(1, int(doc.tags.get("batch_size") or 1)):
                other = wire.batch_image_id(doc.id, k)
                self.store.claim(other, self.store.owner(doc.id))
                self.store.add_frame(other, 3, png((0, 50 * k, 0)), {"seed": doc.tags["seed"]})
                self.store.finish(other, {"status": "done", "seed": doc.tags["seed"], "steps_done": 3})
            return answer

    store = ResultStore(tmp_path / "results", 3600)
    body = {"text_prompts": ["a lighthouse"], "width_height": [64, 64], "steps": 3, "skip_steps": 0, "seed": 5}

    async def scenario():
        async with service(store, BatchFlow(store)) as (client, queue):
            made = (await client.post("/jobs", json={**body, "n_batches": 2, "batch_size": 2})).json()
            job = await until(client, f"/jobs/{made['id']}", ended)
            assert job["status"] == "done" and len(job["images"]) == 2
            for image in job["images"]:
                [other] = image["batch"]
                assert other["position"] == 1 and other["status"] == "done"
                picture = await client.get(other["png"])
                assert Image.open(io.BytesIO(picture.content)).convert("RGB").getpixel((0, 0)) == (0, 50, 0)
            kept = queue.jobs[made["id"]]
            names = sorted(name for name, _ in gallery.job_files(queue, kept))
            assert [n for n in names if n.endswith("_0.png") or n.endswith("_1.png")] == [
                f"reverse_diffusion-5_{i}_{k}.png" for i in (0, 1) for k in (0, 1)
            ]
            extras = [image["batch"][0]["id"] for image in job["images"]]
            gallery.delete_job(queue, kept)
            assert not any(store.used(doc_id) for doc_id in extras)

            route = f"/predict/{hub_serving.MODULE}"
            refused = (await client.post(route, json={**body, "batch_size": 2})).json()
            assert (
                refused["status"] == "101"
                and refused["msg"].startswith("batch_size:")
                and "n_batches" in refused["msg"]
            )

    asyncio.run(scenario())


def test_the_job_api_reads_a_batch(tmp_path):
    from disco.errors import Limits
    from disco_service.server.http_api import settings_from_json

    assert settings_from_json({"width_height": [64, 64], "batch_size": 3}, Limits())[0].batch_size == 3
    with pytest.raises(SettingsError) as err:
        settings_from_json({"width_height": [64, 64], "batch_size": 3, "animation_mode": "2D"}, Limits())
    assert err.value.parameter == "batch_size"


@settings(max_examples=25, deadline=None)
@given(st.integers(1, 8), st.integers(1, 4), st.integers(2, 60))
def test_pixel_steps_count_every_image_of_every_batch(batch, calls, steps):
    from disco_service.server.quotas import job_pixel_steps

    tags = {"width_height": [64, 128], "steps": steps, "skip_steps": 1, "batch_size": batch}
    assert job_pixel_steps(tags, calls) == 64 * 128 * (steps - 1) * calls * batch


def test_the_day_quota_counts_a_batchs_images(tmp_path):
    from disco_service.server.quotas import Quota, QuotaExceeded
    from disco_service.server.store import open_store

    store = open_store(str(tmp_path / "jobs.sqlite3"))
    store.quota = Quota(max_images_per_day=5)
    store.submit("j1", "alice", {"text_prompts": ["x"], "seed": 7, "batch_size": 2}, [7, 8])  # 2 calls of 2
    assert store.usage("alice")["images"] == 4
    with pytest.raises(QuotaExceeded, match="this job adds 2"):
        store.submit("j2", "alice", {"text_prompts": ["x"], "seed": 9, "batch_size": 2}, [9])


def test_the_cpu_notice_counts_a_batchs_images():
    from disco.settings import validate_settings
    from disco_service.client.cpu_estimate import cpu_notice

    one = cpu_notice(validate_settings(width_height=[256, 256], n_batches=2), "no CUDA GPU found")
    four = cpu_notice(validate_settings(width_height=[256, 256], n_batches=2, batch_size=2), "no CUDA GPU found")
    assert "2 images of 256x256" in one
    assert "4 images (2 batches of 2) of 256x256" in four


def test_a_callers_batch_is_listed_with_its_job(tmp_path):
    """A caller's own /generate request of a batch is recorded as a job (direct_calls); its view lists
    the batch's further images with their result URLs, which answer that caller alone."""
    from docarray import Document
    from jina.types.request.data import DataRequest

    from disco_service.server import http_api
    from disco_service.server.direct_calls import CALLER, DirectCalls
    from disco_service.server.job_queue import JobQueue
    from disco_service.server.tokens import Tokens

    class NoFlow:
        async def generate(self, doc): ...

        async def progress(self, ids, frame=False, keep_alive=True):
            return []

        async def cancel(self, ids): ...

    store = ResultStore(tmp_path)
    tokens = Tokens(["alice-token-0123456789"])
    direct = DirectCalls(JobQueue(store, NoFlow(), max_jobs_per_owner=2), tokens)
    alice = tokens.owner("Bearer alice-token-0123456789")
    settings = validate_settings({**TINY, "text_prompts": ["a fox"], "seed": 40, "batch_size": 3}, tokens=False)
    made = DataRequest()
    made.header.exec_endpoint = wire.GENERATE
    made.data.docs = DocumentArray([Document(id="fox1", tags=wire.request_tags(settings, 0))])
    token = CALLER.set(alice)
    try:
        answered = direct.admit(made)
    finally:
        CALLER.reset(token)
    for k, doc_id in enumerate(["fox1", "fox1-1", "fox1-2"]):  # what the sampler keeps (it claims the others)
        assert store.claim(doc_id, alice)
        if k < 2:
            store.finish(doc_id, {"status": "done", "steps_done": 3})
    answered()
    [job] = direct.queue.jobs_of(alice)
    [image] = http_api.job_view(direct.queue, job)["images"]
    assert image["batch"] == [
        {
            "position": 1,
            "id": "fox1-1",
            "status": "done",
            "result": "/results/fox1-1",
            "png": "/results/fox1-1/final.png",
        },
        {"position": 2, "id": "fox1-2", "status": None, "result": "/results/fox1-2", "png": None},
    ]
    one = direct.queue.submit(alice, validate_settings({**TINY, "text_prompts": ["a hare"], "seed": 41}, tokens=False))
    assert "batch" not in http_api.job_view(direct.queue, one)["images"][0]  # batch_size 1: the view as before


def test_a_batch_whose_request_broke_mid_run_comes_back_as_every_one_of_its_images_failed():
    """The client's answer to a request that broke mid-run (the Flow gone): B failed Documents, as a
    finished batch answers B, image 0 with the frames polled so far, each saying why and where."""
    import asyncio

    from docarray import Document

    from disco_service.client.runner import JobWatcher

    sent = Document(id="job", tags={"batch_size": 3.0, "seed": 5.0})  # numbers arrive as floats
    watcher = JobWatcher(None, [sent])
    watcher.states["job"] = {"status": "running", "step": 2, "total": 4}
    watcher.frames["job"].append(Document(uri="data:image/png;base64,AAAA", tags={"step": 2}))

    async def flow_gone(*args, **kwargs):
        raise ConnectionError("the Flow is gone")

    watcher._progress = flow_gone
    images = asyncio.run(watcher.lost(sent, ConnectionError("connection reset")))
    assert [d.id for d in images] == ["job", "job-1", "job-2"]
    assert [d.tags[wire.BATCH_POSITION_TAG] for d in images] == [0, 1, 2]
    assert all(d.tags[wire.BATCH_OF_TAG] == "job" for d in images[1:])
    assert all(d.tags["status"] == "failed" and "at step 2 of 4" in d.tags["error"] for d in images)
    assert len(images[0].chunks) == 1 and images[0].uri and not len(images[1].chunks)
    # a batch of one answers its one image, as before
    single = Document(id="one", tags={"batch_size": 1.0})
    watcher = JobWatcher(None, [single])
    watcher._progress = flow_gone
    assert [d.id for d in asyncio.run(watcher.lost(single, ConnectionError("reset")))] == ["one"]
