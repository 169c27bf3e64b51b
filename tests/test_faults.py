"""Faults in users' hands, over real processes and real signals: clients other than client.py,
a caller that goes away, Ctrl-C to the whole process group, a sampler killed mid-job, and a
served Flow stopped while clients wait.
"""

import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
import uuid
from pathlib import Path

import psutil
import pytest
from boards import board_states
from docarray import Document, DocumentArray
from jina import Client

from disco.settings import SettingsError, validate_settings
from disco_service.wire import settings_to_tags

ROOT = Path(__file__).resolve().parent.parent
TINY = dict(width_height=[64, 64], steps=4, skip_steps=1, display_rate=2, cutn_batches=1, use_gpu=False)
TINY.update(cut_overview="[1]*1000", cut_innercut="[1]*1000")


def raw_request(**changes) -> DocumentArray:
    """A request as a plain Jina client builds it from docs/serving.md: settings as tags, no bookkeeping."""
    tags = {k: v for k, v in settings_to_tags(validate_settings(**TINY, seed=1, n_batches=1)).items()}
    tags.update(changes)
    return DocumentArray([Document(id=uuid.uuid4().hex, tags={k: v for k, v in tags.items() if v != "DROP"})])


def wait_for(condition, timeout: float, what: str):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if value := condition():
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


# ----- clients other than client.py -----


def test_a_misspelt_key_is_refused_by_name_and_nothing_runs(served_flow, flow_env):
    docs = raw_request(text_prompt=["a lighthouse"])
    with pytest.raises(Exception, match=r"text_prompt: unknown setting; did you mean .{0,4}text_prompts"):
        Client(host=served_flow).post("/generate", docs)
    assert docs[0].id not in board_states(flow_env["DISCO_STATE_DIR"])  # no job started


def test_a_missing_or_null_seed_is_random_and_reported(served_flow):
    seeds = []
    for docs in (raw_request(seed="DROP"), raw_request(seed=None)):
        doc = Client(host=served_flow).post("/generate", docs)[0]
        assert doc.tags["status"] == "done"
        seeds.append(doc.tags["seed"])
    assert all(isinstance(s, float) and s.is_integer() and 0 <= s < 2**32 for s in seeds)  # protobuf: floats
    assert seeds[0] != seeds[1]


def test_the_cost_cap_refuses_big_jobs_with_a_clear_message(monkeypatch):
    from disco_service import config

    monkeypatch.setenv("DISCO_MAX_PIXEL_STEPS", str(64 * 64 * 10))
    limits = config.load().limits  # as the server's first executor reads them
    validate_settings(**{**TINY, "steps": 11, "skip_steps": 1}, limits=limits)  # exactly at the cap
    with pytest.raises(SettingsError, match=r"steps: 64x64 pixels x 11 steps .* above this server's cap") as info:
        validate_settings(**{**TINY, "steps": 12, "skip_steps": 1}, limits=limits)
    assert "DISCO_MAX_PIXEL_STEPS" in str(info.value)


def test_a_job_nobody_polls_stops_as_abandoned_and_its_frames_are_kept(served_flow, served_http):
    """A plain client that posts and never polls ``/progress``: the server's own timeout ends the job,
    the call fails saying so, and the frames made are in the result store under the Document's id."""
    from conftest import SERVER_CLIENT_TIMEOUT_S

    started = time.time()
    docs = raw_request(steps=1000, skip_steps=0, display_rate=5)
    with pytest.raises(Exception, match=rf"image {docs[0].id} was stopped as abandoned .* at step \d+ of 1000"):
        Client(host=served_flow).post("/generate", docs)
    took = time.time() - started
    assert SERVER_CLIENT_TIMEOUT_S < took < SERVER_CLIENT_TIMEOUT_S + 60, took
    with urllib.request.urlopen(f"{served_http}/results/{docs[0].id}", timeout=30) as response:
        record = json.load(response)
    assert record["status"] == "abandoned" and 0 < record["steps_done"] < 1000
    assert len(record["files"]["frames"]) >= 1 and record["files"]["gif"]


# ----- the CLI in a terminal: Ctrl-C reaches the whole foreground process group -----


def cli(out: Path, *extra: str) -> list[str]:
    return [sys.executable, str(ROOT / "client.py"), "--text_prompts", "a lighthouse", "--width_height", "64", "64",
            "--skip_steps", "0", "--display_rate", "1", "--n_batches", "1", "--cut_overview", "[1]*1000",
            "--cut_innercut", "[1]*1000", "--cutn_batches", "1", "--output_dir", str(out), "--no_progress",
            *extra]  # fmt: skip


def new_job(board: Path, before: set, min_step: int) -> dict | None:
    """A job not in ``before`` running at step ``min_step`` or later on the boards under ``board``."""
    for doc_id, state in board_states(board).items():
        if doc_id not in before and state.get("status") == "running" and state.get("step", 0) >= min_step:
            return {**state, "id": doc_id}
    return None


def alive(processes) -> list:
    return [p for p in processes if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]


def test_ctrl_c_in_a_terminal_keeps_the_frames_and_stops_the_local_flow(flow_env, tmp_path):
    board, out = Path(flow_env["DISCO_STATE_DIR"]), tmp_path / "out"
    before = set(board_states(board))
    client = subprocess.Popen(
        cli(out, "--steps", "300", "--seed", "9"), start_new_session=True, text=True,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    try:
        wait_for(lambda: new_job(board, before, 3), 300, "the job to make 3 steps")
        flow = psutil.Process(client.pid).children(recursive=True)
        os.killpg(client.pid, signal.SIGINT)  # what a terminal does on Ctrl-C
        stdout, stderr = client.communicate(timeout=180)
    finally:
        client.kill()
    assert client.returncode == 130, stderr[-3000:]
    assert "Traceback" not in stderr
    message = f"interrupted: stopped at the next step; the frames made so far are saved in {out}"
    assert stderr.strip().splitlines()[-1] == message
    # the job's board file may already be gone (the client has collected jobs removed): count frames
    names = {p.name for p in out.iterdir()}
    steps = len([n for n in names if re.fullmatch(r"reverse_diffusion-9_0-step\d{4}\.png", n)])
    assert 3 <= steps < 300, sorted(names)
    frames = {f"reverse_diffusion-9_0-step{i:04d}.png" for i in range(1, steps + 1)}
    # the picture it reached is named for its end (cancelled), beside its frames, GIF and sprite sheet
    assert names == frames | {f"reverse_diffusion-9_0{end}" for end in ("-cancelled.png", ".gif", "-sprite.png")}
    assert json.loads(stdout)[0]["status"] == "cancelled"
    wait_for(lambda: not alive(flow), 60, "the local Flow's processes to exit")


# ----- a served Flow (serve.py): a sampler killed mid-job, then the Flow stopped while a client waits -----


def test_a_killed_sampler_and_a_stopped_flow(flow_env, tmp_path):
    from served import wait_ready

    from disco_service.client.local_flow import free_port

    board, port, log = Path(flow_env["DISCO_STATE_DIR"]), free_port(), tmp_path / "serve.log"
    address = f"grpc://127.0.0.1:{port}"
    command = [sys.executable, str(ROOT / "serve.py"), f"--port={port}", f"--http-port={free_port()}", "--replicas=1"]
    with open(log, "w") as out:
        serve = subprocess.Popen(
            command, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
            env={**os.environ, **flow_env, "PYTHONUNBUFFERED": "1"},
        )  # fmt: skip
    everything = []
    try:
        wait_ready(address, serve, log)
        everything = psutil.Process(serve.pid).children(recursive=True)

        # 1. the sampler process dies mid-job: the client keeps the frames, says so, exits 1
        before = set(board_states(board))
        first = subprocess.Popen(cli(tmp_path / "a", "--steps", "300", "--seed", "5", "--host", address), text=True,
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE)  # fmt: skip
        job = wait_for(lambda: new_job(board, before, 3), 120, "the job to make 3 steps")
        os.kill(int(job["replica"].rpartition(":")[2]), signal.SIGKILL)
        killed = time.time()
        # a request sent now, while serve.py brings the Flow back, waits for it instead of failing UNAVAILABLE
        waiting = subprocess.Popen(cli(tmp_path / "w", "--steps", "3", "--seed", "8", "--host", address), text=True,
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE)  # fmt: skip
        _, stderr = first.communicate(timeout=120)
        assert first.returncode == 1, stderr[-3000:]
        assert "Traceback" not in stderr
        assert "error: image 0: the sampler process died" in stderr.strip().splitlines()[-1]
        names = {p.name for p in (tmp_path / "a").iterdir()}
        assert "reverse_diffusion-5_0-failed.png" in names and "reverse_diffusion-5_0-step0001.png" in names, names

        # 2. the Flow comes back by itself and serves the next request
        wait_for(lambda: log.read_text().count("Flow is ready to serve!") >= 2, 240, "the Flow to restart")
        print(f"the Flow served again {time.time() - killed:.1f} s after the sampler was killed")
        _, stderr = waiting.communicate(timeout=300)
        assert waiting.returncode == 0, stderr[-3000:]
        assert "trying again for up to 3 minutes (Ctrl-C stops)" in stderr  # it said why it waited
        assert (tmp_path / "w" / "reverse_diffusion-8_0.png").exists()
        print(f"a request sent right after the kill was done {time.time() - killed:.1f} s after it")
        everything += psutil.Process(serve.pid).children(recursive=True)
        assert Client(host=address).post("/generate", raw_request())[0].tags["status"] == "done"

        # 3. SIGTERM to serve.py while a client waits: the job stops at its next step, its frames go back
        before = set(board_states(board))
        second = subprocess.Popen(cli(tmp_path / "b", "--steps", "300", "--seed", "6", "--host", address), text=True,
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE)  # fmt: skip
        wait_for(lambda: new_job(board, before, 2), 120, "the second job to make 2 steps")
        stopped = time.time()
        serve.send_signal(signal.SIGTERM)
        _, stderr = second.communicate(timeout=120)
        assert second.returncode == 1, stderr[-3000:]
        assert "error: image 0: the Flow was stopped at step" in stderr.strip().splitlines()[-1]
        assert "reverse_diffusion-6_0-shutdown.png" in {p.name for p in (tmp_path / "b").iterdir()}
        assert serve.wait(60) == 0
        print(f"serve.py exited {time.time() - stopped:.1f} s after SIGTERM")
        assert "waiting for 1 running job(s) to stop at their next step" in log.read_text()
        wait_for(lambda: not alive(everything), 30, "every process of the Flow to exit")
    finally:
        if serve.poll() is None:
            serve.kill()
        for process in alive(everything):
            process.kill()
