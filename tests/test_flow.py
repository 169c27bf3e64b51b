"""The product end to end: a real Flow over real gRPC on 127.0.0.1, the client, the CLI.

Weights are recipe files with the real layouts and names (tests/make_test_weights.py), so
the images are noise; what is checked is the machinery: transport, frames, seeds, files,
progress, cancel and errors.
"""

import asyncio
import os
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from boards import board_states
from conftest import TINY, hand_made_png
from docarray import Document, DocumentArray
from jina import Client

import client as disco_client
from disco.settings import validate_settings
from disco_service.client.api import make_documents
from disco_service.transport import post
from disco_service.wire import ACCEPT_UNFINISHED, JOB_STATE_EXECUTOR

ROOT = Path(__file__).resolve().parent.parent
NAME = re.compile(r"reverse_diffusion-(?:[\w .()-]+-)?\d+(?:-run\d+)?_\d+(?:-step\d{4}|-sprite)?\.(?:png|gif)")


def request_docs(seed=3, n=1, **settings):
    s = validate_settings(**{**TINY, "seed": seed, "n_batches": n, **settings})
    return make_documents(s, None)


def image_of(uri: str) -> np.ndarray:
    d = Document(uri=uri)
    d.load_uri_to_image_tensor()
    return d.tensor


def test_client_post_over_grpc(served_flow):
    result = Client(host=served_flow).post("/generate", request_docs())
    doc = result[0]
    # steps 4, skip 1: three steps; display_rate 2 keeps steps 1 and 3 (the last)
    assert [int(c.tags["step"]) for c in doc.chunks] == [1, 3]
    assert [int(c.tags["cur_t"]) for c in doc.chunks] == [1, -1]
    assert all(c.uri.startswith("data:image/png;base64,") and c.tensor is None for c in doc.chunks)
    assert image_of(doc.uri).shape == (64, 64, 3)
    assert doc.uri == doc.chunks[-1].uri
    assert doc.embedding is None and doc.tags["status"] == "done"


def test_generate_image_seeds_files_and_names(served_flow, tmp_path):
    out = tmp_path / "out"
    da = disco_client.generate_image(
        text_prompts=["a lighthouse:1", "sea:-0.5"],
        seed=11,
        n_batches=2,
        output_dir=str(out),
        host=served_flow,
        progress=False,
        **TINY,
    )
    assert len(da) == 2
    assert [d.tags["seed"] for d in da] == [11, 12] and all(isinstance(d.tags["seed"], int) for d in da)
    again = disco_client.generate_image(
        text_prompts=["a lighthouse:1", "sea:-0.5"],
        seed=11,
        n_batches=1,
        output_dir=str(out),
        host=served_flow,
        progress=False,
        **TINY,
    )
    assert np.array_equal(image_of(da[0].uri), image_of(again[0].uri))  # same seed, same pixels
    assert not np.array_equal(image_of(da[0].uri), image_of(da[1].uri))  # seed + 1, another image

    names = sorted(p.name for p in out.iterdir())
    assert all(NAME.fullmatch(n) for n in names), names
    first = {
        "reverse_diffusion-11_0.png",
        "reverse_diffusion-11_0-step0001.png",
        "reverse_diffusion-11_0-step0003.png",
        "reverse_diffusion-11_0.gif",
        "reverse_diffusion-11_0-sprite.png",
        "reverse_diffusion-11_1.png",
    }
    assert first <= set(names)
    assert "reverse_diffusion-11-run2_0.png" in names  # the second run did not overwrite the first
    assert (out / "reverse_diffusion-11_0.png").read_bytes() != b""
    assert da[0].tags["files"][0].endswith("reverse_diffusion-11_0.png")


def test_generate_image_returns_every_image_of_a_batch(served_flow, tmp_path):
    """A batch's Documents through the served Flow: the sampler's extra Documents travel through the
    Renderer and back over gRPC, each a full image with distinct files (n_batches x batch_size:
    tests/test_batch_service.py, in-process)."""
    from disco_service import wire

    da = disco_client.generate_image(
        text_prompts=["a lighthouse"], seed=21, n_batches=1, batch_size=3, output_dir=str(tmp_path / "out"),
        host=served_flow, progress=False, **{**TINY, "steps": 2},
    )  # fmt: skip
    assert len(da) == 3
    assert sorted((d.tags["seed"], d.tags["batch_index"], d.tags[wire.BATCH_POSITION_TAG]) for d in da) == [
        (21, 0, 0), (21, 0, 1), (21, 0, 2),
    ]  # fmt: skip
    assert all(d.tags["status"] == "done" and d.uri.startswith("data:image/png") and len(d.chunks) for d in da)
    assert len({d.uri for d in da}) == 3
    files = [f for d in da for f in d.tags["files"]]
    assert len(files) == len(set(files)) and all(Path(f).is_file() for f in files)


def test_seed_snippet_runs_as_written(served_flow, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    da = disco_client.generate_image(
        text_prompts=["A lighthouse"],
        output_dir="./disco_diffusion_clip_rn50_out/",
        n_batches=1,
        host=served_flow,
        progress=False,
        **TINY,
    )
    da[0].save_uri_to_file("disco_diffusion_clip_rn50_out-result.png")
    da[0].chunks.plot_image_sprites(skip_empty=True, show_index=True, keep_aspect_ratio=True)
    da[0].chunks.save_gif(
        "disco_diffusion_clip_rn50_out-result.gif", show_index=True, inline_display=True, size_ratio=0.5
    )
    assert (tmp_path / "disco_diffusion_clip_rn50_out-result.png").stat().st_size > 0
    assert (tmp_path / "disco_diffusion_clip_rn50_out-result.gif").stat().st_size > 0
    assert isinstance(da[0].tags["seed"], int)  # seed=None became a random seed, reported


async def _generate_and_watch(address, docs, cancel_after_step=None):
    client = Client(host=address, asyncio=True)
    job = asyncio.create_task(post(client, "/generate", docs))
    ids, job_state = DocumentArray([Document(id=docs[0].id)]), JOB_STATE_EXECUTOR
    seen = []
    while not job.done():
        state = await post(client, "/progress", ids, job_state, parameters={"frame": True})
        seen.append(state[0])
        step = state[0].tags.get("step")
        if cancel_after_step is not None and step is not None and step >= cancel_after_step:
            await post(client, "/cancel", ids, job_state)
            cancel_after_step = None
        await asyncio.sleep(0.3)
    return await job, seen


def test_progress_is_answered_during_a_run(served_flow):
    docs = request_docs(steps=8, skip_steps=0, display_rate=3)
    result, seen = asyncio.run(_generate_and_watch(served_flow, docs))
    running = [s for s in seen if s.tags.get("status") == "running" and s.tags.get("step")]
    assert running, "no progress was reported while the job ran"
    steps = [int(s.tags["step"]) for s in running]
    assert steps == sorted(steps) and 0 < steps[0] < 8
    assert all(int(s.tags["total"]) == 8 for s in running)
    assert any(s.uri and s.uri.startswith("data:image/png") for s in running)  # the latest frame
    assert result[0].tags["status"] == "done" and int(result[0].tags["steps_done"]) == 8


def test_cancel_stops_at_the_next_step_and_keeps_frames(served_flow):
    docs = request_docs(steps=30, skip_steps=0, display_rate=1)
    result, _ = asyncio.run(_generate_and_watch(served_flow, docs, cancel_after_step=2))
    doc = result[0]
    assert doc.tags["status"] == "cancelled"
    done = int(doc.tags["steps_done"])
    assert 2 <= done < 30
    assert len(doc.chunks) == done and doc.uri == doc.chunks[-1].uri  # every frame made so far is kept


def test_bad_request_fails_alone_and_the_flow_serves_the_next(served_flow):
    bad = request_docs()
    bad[0].tags["steps"] = -5  # skips the client's validation: the server checks again
    with pytest.raises(Exception, match="steps"):
        Client(host=served_flow).post("/generate", bad)
    bad_image = request_docs()
    bad_image[0].blob = b"definitely not an image"
    with pytest.raises(Exception, match="init_image"):
        Client(host=served_flow).post("/generate", bad_image)
    assert Client(host=served_flow).post("/generate", request_docs())[0].tags["status"] == "done"


EXPLODING = dict(clamp_grad=False, clip_guidance_scale=1e38, steps=6, skip_steps=0, display_rate=1)


def test_nan_mid_sampling_fails_that_job_keeps_its_frames_and_the_flow_goes_on(served_flow):
    with pytest.raises(
        Exception, match=r"ImageNotFinished.* failed at step \d+ of 6: SamplingFailed: the image became NaN"
    ):
        Client(host=served_flow).post("/generate", request_docs(**EXPLODING))  # a plain caller: an error
    result = Client(host=served_flow).post("/generate", request_docs(**EXPLODING), parameters={ACCEPT_UNFINISHED: True})
    doc = result[0]
    assert doc.tags["status"] == "failed" and doc.tags["error_code"] == "sampling_failed"
    assert "NaN at step" in doc.tags["error"]
    failed_at = int(re.search(r"NaN at step (\d+)", doc.tags["error"])[1])
    assert failed_at >= 2 and len(doc.chunks) == failed_at - 1  # the good frames before the failure came back
    assert Client(host=served_flow).post("/generate", request_docs())[0].tags["status"] == "done"


def test_generate_image_saves_what_was_made_then_raises(served_flow, tmp_path):
    with pytest.raises(disco_client.GenerationFailed, match="image 0: SamplingFailed: the image became NaN") as info:
        disco_client.generate_image(
            text_prompts=["x"],
            seed=5,
            n_batches=1,
            output_dir=str(tmp_path),
            host=served_flow,
            progress=False,
            **{**TINY, **EXPLODING},
        )
    results = info.value.results
    assert len(results) == 1 and results[0].tags["status"] == "failed"
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(Path(f).name for f in results[0].tags["files"])


def test_two_clients_at_once_get_their_own_correct_images(served_flow, tmp_path):
    outcomes = {}

    def call(seed):
        outcomes[seed] = disco_client.generate_image(
            text_prompts=["a lighthouse"],
            seed=seed,
            n_batches=1,
            output_dir=str(tmp_path / str(seed)),
            host=served_flow,
            progress=False,
            **TINY,
        )

    threads = [threading.Thread(target=call, args=(seed,)) for seed in (31, 32)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(300)
    assert sorted(outcomes) == [31, 32]
    assert [outcomes[s][0].tags["seed"] for s in (31, 32)] == [31, 32]
    a, b = (image_of(outcomes[s][0].uri) for s in (31, 32))
    assert not np.array_equal(a, b)
    alone = disco_client.generate_image(
        text_prompts=["a lighthouse"],
        seed=31,
        n_batches=1,
        output_dir=str(tmp_path / "alone"),
        host=served_flow,
        progress=False,
        **TINY,
    )
    assert np.array_equal(image_of(alone[0].uri), a)  # sharing the Flow did not change the picture


def test_the_server_never_reads_paths_or_urls_sent_by_clients(served_flow):
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    hits = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802
            hits.append(self.path)
            self.send_error(404)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        for source in (f"http://127.0.0.1:{server.server_port}/image.png", "/etc/hostname"):
            docs = request_docs()
            docs[0].tags["init_image"] = source  # a path or URL in the settings, no bytes: refused, not ignored
            with pytest.raises(Exception, match="init_image: the server does not open paths or URLs: send the image"):
                Client(host=served_flow).post("/generate", docs)
        docs = request_docs()
        docs[0].tags["output_dir"] = "/should/never/be/created"
        assert Client(host=served_flow).post("/generate", docs)[0].tags["status"] == "done"
    finally:
        server.shutdown()
    assert hits == []
    assert not Path("/should/never/be/created").exists()


def test_a_served_flow_reads_checkpoints_only_from_its_model_directory(served_flow, model_dir, tmp_path):
    import torch

    from disco.unet import MODEL_CONFIGS, layout_shapes

    # a checkpoint of KaliYuga's layout that stores one number per tensor
    state = {k: torch.zeros(()).expand(s) for k, s in layout_shapes(MODEL_CONFIGS["PulpSciFiDiffusion"]).items()}
    (model_dir / "mine").mkdir(exist_ok=True)
    torch.save(state, model_dir / "mine" / "ft.pt")
    torch.save(state, tmp_path / "theirs.pt")
    outside = request_docs(diffusion_model=str(tmp_path / "theirs.pt"))
    with pytest.raises(Exception, match=r"diffusion_model: .*theirs\.pt.* is outside this server.*\(DISCO_MODEL_DIR\)"):
        Client(host=served_flow).post("/generate", outside)
    doc = Client(host=served_flow).post("/generate", request_docs(diffusion_model="mine/ft.pt"))[0]
    assert doc.tags["status"] == "done" and image_of(doc.uri).shape == (64, 64, 3)


def test_a_client_that_goes_away_frees_the_sampler(served_flow, flow_env, tmp_path):
    before = set(board_states(flow_env["DISCO_STATE_DIR"]))
    cmd = [sys.executable, str(ROOT / "client.py"), "--text_prompts", "x", "--width_height", "64", "64",
           "--steps", "200", "--skip_steps", "0", "--cut_overview", "[1]*1000", "--cut_innercut", "[1]*1000",
           "--cutn_batches", "1", "--n_batches", "1", "--output_dir", str(tmp_path), "--host", served_flow,
           "--no_progress"]  # fmt: skip
    client = subprocess.Popen(cmd, env={**os.environ, "DISCO_CLIENT_TIMEOUT_S": "3"}, stderr=subprocess.DEVNULL)
    try:
        job = None
        deadline = time.time() + 120
        while time.time() < deadline and job is None:
            for doc_id, state in board_states(flow_env["DISCO_STATE_DIR"]).items():
                if doc_id not in before and state.get("status") == "running" and state.get("step", 0) >= 2:
                    job = doc_id
            time.sleep(0.2)
        assert job is not None, "the job did not start"
    finally:
        client.kill()
        client.wait()
    deadline = time.time() + 60
    while time.time() < deadline and board_states(flow_env["DISCO_STATE_DIR"])[job].get("status") == "running":
        time.sleep(0.5)
    state = board_states(flow_env["DISCO_STATE_DIR"])[job]
    assert state["status"] == "abandoned"
    assert state["step"] < 200


def test_cli_against_the_served_flow(served_flow, tmp_path):
    cmd = [
        sys.executable,
        str(ROOT / "client.py"),
        "--text_prompts",
        "a lighthouse",
        "--width_height",
        "64",
        "64",
        "--steps",
        "3",
        "--skip_steps",
        "0",
        "--display_rate",
        "1",
        "--n_batches",
        "1",
        "--seed",
        "7",
        "--cut_overview",
        "[1]*1000",
        "--cut_innercut",
        "[1]*1000",
        "--cutn_batches",
        "1",
        "--perlin_init",
        "False",
        "--output_dir",
        str(tmp_path),
        "--host",
        served_flow,
        "--no_progress",
    ]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert (tmp_path / "reverse_diffusion-7_0.png").exists()
    assert '"seed": 7' in done.stdout


def test_cli_bad_input_exits_2_without_traceback(tmp_path):
    done = subprocess.run(
        [
            sys.executable,
            str(ROOT / "client.py"),
            "--text_prompts",
            "x",
            "--width_height",
            "100",
            "64",
            "--output_dir",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2
    assert "width_height" in done.stderr and "multiples of 64" in done.stderr
    assert "Traceback" not in done.stderr
    assert not any(tmp_path.iterdir())  # nothing started, nothing written


@pytest.mark.parametrize(
    "make, fragment",
    [
        (lambda d: d / "missing.png", "no such file"),
        (lambda d: (d / "notes.png").write_text("not an image") and d / "notes.png", "cannot read the image"),
        (lambda d: _big_png(d / "huge.png"), "too many pixels"),
    ],
    ids=["missing", "not-an-image", "too-many-pixels"],
)
def test_cli_refuses_a_bad_init_image_before_starting_anything(tmp_path, make, fragment, monkeypatch, capsys):
    """The command line's own code in this process (test_cli_bad_input_exits_2_without_traceback runs
    the program: its exit code and its stderr without a traceback)."""
    source = make(tmp_path)
    out = tmp_path / "out"
    monkeypatch.setenv("DISCO_MAX_PIXELS", str(64 * 64))
    monkeypatch.setenv("DISCO_MODEL_DIR", str(tmp_path / "no-models"))
    code = disco_client.main(["--init_image", str(source), "--width_height", "64", "64", "--output_dir", str(out)])
    stderr = capsys.readouterr().err
    assert code == 2, stderr[-2000:]
    assert stderr.startswith("error: init_image: ") and fragment in stderr
    assert not out.exists() and not (tmp_path / "no-models").exists()  # refused before any download or Flow


def _big_png(path: Path) -> Path:
    path.write_bytes(hand_made_png(20000, 20000, 8, 2))  # a header claiming 400 megapixels: a decompression bomb
    return path


def test_cli_help_explains_every_parameter():
    done = subprocess.run(
        [sys.executable, str(ROOT / "client.py"), "--help"], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0
    for name in (
        "--text_prompts",
        "--width_height",
        "--steps",
        "--perlin_mode",
        "--cut_overview",
        "--host",
        "--use_secondary_model",
        "--output_dir",
    ):
        assert name in done.stdout


def test_generate_image_starts_the_flow_in_process(flow_env, tmp_path):
    da = disco_client.generate_image(
        text_prompts=["a lighthouse"], seed=21, n_batches=1, output_dir=str(tmp_path), progress=False, **TINY
    )
    assert len(da) == 1 and len(da[0].chunks) == 2
    assert (tmp_path / "reverse_diffusion-21_0.png").exists()
    # and the Flow is gone afterwards: nothing keeps running in this process
    assert not [t for t in threading.enumerate() if "flow" in t.name.lower()]
