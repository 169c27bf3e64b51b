"""A VR animation's eye views and the steps ``intermediate_saves`` keeps, past the client: the sampler
writes them into the result store as it makes them, ``GET /jobs/{id}`` and ``GET /results/{id}`` list
them, the file routes serve them to their owner alone, ``files.zip`` holds them, all under the names
client.py gives them in ``output_dir`` (``disco_service.outputs.picture_name``). In-process: the
routes over a job queue whose Flow runs the real sampler (tiny models) in this process."""

from __future__ import annotations

import asyncio
import dataclasses
import io
import time
import zipfile
from pathlib import Path
from urllib.parse import quote

import httpx
import numpy as np
import pytest
from fake_flow import FakeFlow
from fastapi import FastAPI
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image
from test_animation import ANIMATED, sampler
from test_animation_3d import MOVE, SlopedDepth, in_process_flow
from test_http_api import ALICE, BOB, bearer, ended, until
from test_http_properties import SMALL, InProcessClient, build_app

from disco.clip_model import encode_texts
from disco.prompts import prompt_sets
from disco.settings import DEFAULT_LIMITS
from disco_service import transport, wire
from disco_service.client import api
from disco_service.outputs import data_uri_bytes, picture_name, picture_tags, read_png_settings
from disco_service.server import gallery, http_api, job_queue
from disco_service.server.job_queue import JobQueue
from disco_service.server.results import ResultStore
from disco_service.server.tokens import Tokens

# a 3D VR animation of 2 frames: frame 0 runs 2 steps (j 0, 1) and keeps j 1, frame 1 runs 1 step (j 0)
VR_RUN = {**ANIMATED, **MOVE, "animation_mode": "3D", "vr_mode": True, "max_frames": 2, "intermediate_saves": [1]}


@pytest.fixture(autouse=True)
def quick(monkeypatch):
    monkeypatch.setattr(job_queue, "POLL_S", 0.01)
    monkeypatch.setattr(transport, "RETRY", transport.RetryPolicy(pause_s=0))


class SamplerFlow(FakeFlow):
    """The queue's Flow: each image through the encoder's embeddings and the real sampler, here."""

    def __init__(self, store: ResultStore, models, tmp_path: Path):
        super().__init__(store)
        self.executor = sampler(models, tmp_path)
        self.executor.store = store
        self.models = models

    async def generate(self, doc):
        self.sent.append(doc)
        doc.tags.update(wire.restore_numbers(doc.tags))
        sets = prompt_sets(wire.settings_from_tags(doc.tags).text_prompts)
        texts = [t for prompts in sets.values() for t in prompts]
        doc.embedding = encode_texts(self.models.clip, texts).numpy()
        doc.tags["prompt_weights"] = [1.0] * len(texts)
        doc.tags["prompt_sets"] = [[frame, len(prompts)] for frame, prompts in sets.items()]
        self.executor._generate(doc)
        return doc


def pixels(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))


def test_a_vr_runs_eye_views_and_saves_are_listed_served_and_zipped_under_the_clients_names(
    tiny_models, tmp_path, monkeypatch
):
    models = dataclasses.replace(tiny_models, depth=SlopedDepth())
    store = ResultStore(tmp_path / "results", ttl_s=3600)
    flow = SamplerFlow(store, models, tmp_path)

    async def scenario():
        queue = JobQueue(store, flow)
        app = FastAPI()
        http_api.mount(app, queue, Tokens((ALICE, BOB)), DEFAULT_LIMITS)
        gallery.mount(app, queue)
        runner = asyncio.create_task(queue.run())
        try:
            async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://g") as client:
                answer = await client.post("/jobs", json={**VR_RUN, "seed": 7}, headers=bearer(ALICE))
                assert answer.status_code == 202, answer.text
                url = f"/jobs/{answer.json()['id']}"
                job = await until(client, url, ended, headers=bearer(ALICE))
                fetched = {}
                image = job["images"][0]
                base = f"{url}/images/0"
                for link in [u for pair in image["eye_views"] for u in (pair["l"], pair["r"])] + [
                    p["url"] for p in image["partials"]
                ]:
                    fetched[link] = await client.get(link, headers=bearer(ALICE))
                    assert (await client.get(link, headers=bearer(BOB))).status_code == 404  # another token's
                doc_id = queue.jobs[job["id"]].images[0].doc_id
                record = (await client.get(f"/results/{doc_id}", headers=bearer(ALICE))).json()
                by_id = await client.get(f"/results/{doc_id}/partials/frame0000-001.png", headers=bearer(ALICE))
                refused = [
                    (await client.get(f"{base}/{name}", headers=bearer(ALICE))).status_code
                    for name in ("frame0000_x.png", "partials/frame0000-002.png", "partials/..%2F..%2Fresult.json")
                ]
                archive = await client.get(f"{url}/files.zip", headers=bearer(ALICE))
                return job, base, fetched, doc_id, record, by_id, refused, archive
        finally:
            runner.cancel()

    job, base, fetched, doc_id, record, by_id, refused, archive = asyncio.run(scenario())
    image = job["images"][0]
    assert job["status"] == "done" and image["frames_done"] == 2
    assert image["eye_views"] == [
        {"frame": n, "l": f"{base}/frame{n:04d}_l.png", "r": f"{base}/frame{n:04d}_r.png"} for n in (0, 1)
    ]
    assert image["partials"] == [{"frame": 0, "end": "001", "url": f"{base}/partials/frame0000-001.png"}]
    assert record["files"]["eye_views"][1]["r"] == f"/results/{doc_id}/frame0001_r.png"
    assert record["files"]["partials"][0]["url"] == f"/results/{doc_id}/partials/frame0000-001.png"
    assert refused == [404, 404, 404]

    # what the route serves is the stored file's exact bytes, and the picture the sampler sent back
    sent = {picture_name("", m.tags): data_uri_bytes(m.uri) for m in flow.sent[0].matches}
    assert sorted(sent) == ["frame0000_l.png", "frame0000_r.png", "frame0001_l.png", "frame0001_r.png",
                            "partials/frame0000-001.png"]  # fmt: skip
    for link, answer in fetched.items():
        name = link.removeprefix(f"{base}/")
        assert answer.status_code == 200 and answer.headers["content-type"] == "image/png"
        assert answer.content == store.file(doc_id, name).read_bytes()
        assert np.array_equal(pixels(answer.content), pixels(sent[name]))
        assert answer.headers["content-disposition"].endswith(
            f'filename="{picture_name("reverse_diffusion-7", picture_tags(name)).split("/")[-1]}"'
        )
    assert by_id.status_code == 200 and by_id.content == fetched[f"{base}/partials/frame0000-001.png"].content
    left, right = (pixels(fetched[f"{base}/frame0001_{e}.png"].content) for e in "lr")
    assert left.shape == (64, 64, 3) and not np.array_equal(left, right)

    # the zip holds them as client.py writes them to output_dir: the same names, the same pictures
    assert archive.status_code == 200
    zipped = zipfile.ZipFile(io.BytesIO(archive.content))
    monkeypatch.setattr(api, "run_jobs", in_process_flow(models, sampler(models, tmp_path / "client")))
    monkeypatch.setenv("DISCO_CLIENT_TIMEOUT_S", "3600")
    out = tmp_path / "out"
    api.generate_image(**VR_RUN, seed=7, output_dir=str(out), host="grpc://127.0.0.1:9", progress=False)
    written = {str(p.relative_to(out)) for p in out.rglob("*.png") if p.name.endswith(("_l.png", "_r.png"))}
    written |= {str(p.relative_to(out)) for p in (out / "partials").iterdir()}
    assert written == {
        "reverse_diffusion-7-frame0000_l.png", "reverse_diffusion-7-frame0000_r.png",
        "reverse_diffusion-7-frame0001_l.png", "reverse_diffusion-7-frame0001_r.png",
        "partials/reverse_diffusion-7-frame0000-001.png",
    }  # fmt: skip
    assert written <= set(zipped.namelist())
    assert {"reverse_diffusion-7-frame0000.png", "reverse_diffusion-7.mp4"} <= set(zipped.namelist())
    for name in written:
        assert np.array_equal(pixels(zipped.read(name)), pixels((out / name).read_bytes())), name


def test_a_still_images_saves_are_named_by_its_index_and_only_known_names_are_kept():
    tags = {"partial": "40%", "step": 3}
    assert picture_name("", tags) == "partials/40%.png"
    assert picture_name("reverse_diffusion-3_0", tags) == "partials/reverse_diffusion-3_0-40%.png"
    assert picture_name("", {"eye": "l"}) is None  # an eye view belongs to a frame
    for bad in ({"eye": "x", "frame": 1}, {"partial": "../x"}, {"partial": "4%"}, {"partial": "50%", "frame": -1},
                {"partial": "50%", "frame": 1.5}, {"step": 3}):  # fmt: skip
        assert picture_name("", bad) is None, bad


FRAMES = st.one_of(st.none(), st.integers(0, 20_000))
PICTURE_TAGS = st.one_of(
    st.builds(lambda f, e: {"eye": e, "frame": f}, st.integers(0, 20_000), st.sampled_from("lr")),
    st.builds(
        lambda f, end: {"partial": end} if f is None else {"partial": end, "frame": f},
        FRAMES,
        st.one_of(st.integers(0, 999).map(lambda j: f"{j:03d}"), st.integers(0, 100).map(lambda p: f"{p:02d}%")),
    ),
)


@given(tags=PICTURE_TAGS, stem=st.sampled_from(["reverse_diffusion-7", "reverse_diffusion-run-7_2"]))
def test_a_pictures_stored_name_reads_back_as_its_tags_and_the_clients_name_ends_alike(tags, stem):
    stored = picture_name("", tags)
    assert picture_tags(stored) == tags
    folder, _, file = picture_name(stem, tags).rpartition("/")
    # the client's name is the stored one behind the stem, in the same folder (partials/ or none)
    assert (folder, file) == (stored.rpartition("/")[0], f"{stem}-{stored.rpartition('/')[2]}")


def _reaches_the_route(name: str) -> bool:
    """A name httpx sends as it is: no empty, ``.`` or ``..`` segment (those it normalises away)."""
    return bool(name) and all(part not in ("", ".", "..") for part in name.split("/"))


NAMES = st.one_of(
    st.text(min_size=1, max_size=40),
    st.from_regex(r"(partials/)?(frame\d{3,5}[-_])?(\d{1,4}%?|[lrx])\.png", fullmatch=True),
    st.sampled_from(["partials/50%.png", "partials/020.png", "partials/50%25.png", "partials/..%2Fresult.json"]),
).filter(_reaches_the_route)


@given(name=NAMES)
@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
def test_a_file_name_of_any_text_is_a_200_for_a_kept_picture_or_a_404_never_a_500(tmp_path_factory, name):
    app, queue = build_app(tmp_path_factory.mktemp("names"))
    with InProcessClient(app) as client:
        job_id = client.post("/jobs", json={**SMALL, "seed": 5}).json()["id"]
        asyncio.run(queue.wait(job_id))
        doc_id = queue.jobs[job_id].images[0].doc_id
        kept = [
            queue.store.add_picture(doc_id, t, _png(), {"seed": 5}) for t in ({"partial": "50%"}, {"partial": "020"})
        ]
        for url in (f"/jobs/{job_id}/images/0/{quote(name)}", f"/results/{doc_id}/{quote(name)}"):
            answer = client.get(url)
            assert answer.status_code in (200, 404), (url, answer.status_code, answer.text[:200])
            if picture_tags(name) is not None or "/" in name:  # a picture's name: only one that is kept is there
                assert (answer.status_code == 200) == (name in kept), url
            if answer.status_code == 200 and name in kept:
                assert answer.content == queue.store.file(doc_id, name).read_bytes()
                assert answer.headers["content-type"] == "image/png"


def _png() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8), (1, 2, 3)).save(buffer, format="PNG")
    return buffer.getvalue()


def test_the_store_keeps_pictures_by_name_refuses_other_tags_and_sweeps_them(tmp_path):
    store = ResultStore(tmp_path / "results", ttl_s=60)
    doc_id = "a" * 32
    for tags in ({"partial": "100%"}, {"eye": "r", "frame": 2}, {"partial": "50%"}, {"eye": "l", "frame": 2.0}):
        store.add_picture(doc_id, tags, _png(), {"seed": 5})
    assert store.pictures(doc_id) == [
        ("partials/50%.png", {"partial": "50%"}),
        ("partials/100%.png", {"partial": "100%"}),
        ("frame0002_l.png", {"eye": "l", "frame": 2}),
        ("frame0002_r.png", {"eye": "r", "frame": 2}),
    ]  # a still image's first, then by frame: eye views before saves, 50% before 100%
    assert read_png_settings(store.file(doc_id, "frame0002_l.png"))["seed"] == 5  # its recipe
    for bad in ({"eye": "l"}, {"partial": "../../x"}, {"partial": "50%", "frame": -1}, {"step": 3}):
        with pytest.raises(ValueError, match="not an eye view or an intermediate save"):
            store.add_picture(doc_id, bad, _png(), {})
    (store.entry(doc_id) / "partials" / "notes.txt").write_text("not a picture")
    (store.entry(doc_id) / "result.json").write_text("{}")
    for name in ("partials/notes.txt", "partials/../result.json", "../" + doc_id + "/result.json", "frame2_l.png"):
        assert store.file(doc_id, name) is None, name
    assert "partials/notes.txt" not in [name for name, _ in store.pictures(doc_id)]
    assert store.frames(doc_id) == [] and store.animation_frames(doc_id) == []  # not taken for frames
    assert store.sweep(now=time.time() + 3600) == [doc_id] and not store.entry(doc_id).exists()
