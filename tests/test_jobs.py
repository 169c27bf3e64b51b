"""The job API over real HTTP: submit, watch, fetch and cancel with short requests; the result store
by Document id for a gRPC caller whose connection dropped; PaddleHub's ``hub serving`` route; the
shell example of docs/serving.md as written."""

import base64
import io
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import pytest
from conftest import TINY
from PIL import Image

from disco.settings import validate_settings

ROOT = Path(__file__).resolve().parent.parent


def call(
    method: str, url: str, body=None, timeout: float = 10, headers: dict | None = None
) -> tuple[int, dict | bytes]:
    """One short request: (HTTP status, JSON answer or bytes). Every job API request must answer quickly."""
    data = json.dumps(body).encode() if body is not None and not isinstance(body, bytes) else body
    request = urllib.request.Request(url, data, {"Content-Type": "application/json", **(headers or {})}, method=method)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            status, raw, kind = response.status, response.read(), response.headers.get("Content-Type", "")
    except urllib.error.HTTPError as error:
        status, raw, kind = error.code, error.read(), error.headers.get("Content-Type", "")
    return status, json.loads(raw) if "json" in kind else raw


def wait_for_job(base: str, job_id: str, until, timeout: float = 180, headers: dict | None = None) -> dict:
    deadline = time.time() + timeout
    while True:
        status, job = call("GET", f"{base}/jobs/{job_id}", headers=headers)
        assert status == 200, job
        if until(job):
            return job
        assert time.time() < deadline, job
        time.sleep(0.5)


def test_a_job_is_submitted_watched_and_fetched_with_short_requests(served_http):
    started = time.time()
    status, job = call(
        "POST", f"{served_http}/jobs", {**TINY, "text_prompts": ["a lighthouse"], "n_batches": 2, "seed": 21}
    )
    assert status == 202 and job["status"] == "queued" and job["position"] >= 1  # answered before any image
    print(f"POST /jobs answered in {time.time() - started:.2f} s")
    assert [(i["seed"], i["status"], i["png"]) for i in job["images"]] == [(21, "queued", None), (22, "queued", None)]

    seen = []
    job = wait_for_job(served_http, job["id"], lambda j: seen.append(j) or j["status"] not in ("queued", "running"))
    assert job["status"] == "done" and job["position"] is None
    running = [i for j in seen for i in j["images"] if i["status"] == "running" and i["step"]]
    assert running and all(i["total"] == 3 and i["latest_frame"] for i in running)
    for image in job["images"]:
        assert (image["status"], image["step"], image["total"], image["eta_s"]) == ("done", 3, 3, None)
        status, final = call("GET", served_http + image["png"])
        picture = Image.open(io.BytesIO(final))
        assert status == 200 and picture.size == (64, 64)
        assert json.loads(picture.text["disco-diffusion"])["seed"] == image["seed"]  # it remakes itself
        assert Image.open(io.BytesIO(call("GET", served_http + image["gif"])[1])).n_frames == 2
        assert Image.open(io.BytesIO(call("GET", served_http + image["sprite"])[1])).format == "PNG"
        assert call("GET", served_http + image["latest_frame"])[1] == final
    status, listing = call("GET", f"{served_http}/jobs")
    assert status == 200 and listing["jobs"][0]["id"] == job["id"]  # newest first
    assert [j["id"] for j in call("GET", f"{served_http}/jobs?limit=1")[1]["jobs"]] == [job["id"]]
    assert call("GET", f"{served_http}/jobs/{job['id']}/images/2/final.png")[0] == 404


@pytest.mark.parametrize(
    "body, setting, fragment",
    [
        ({"steps": 0}, "steps", "must be in [1, 1000], got 0"),
        ({"text_prompt": ["x"]}, "text_prompt", "did you mean 'text_prompts'"),
        ({"init_image": "/some/path.jpg"}, "init_image", "the server does not open paths or URLs"),
        ({"init_image": "data:image/png;base64,bm90IGFuIGltYWdl"}, "init_image", "not a picture Pillow can read"),
        ({"output_dir": "/tmp/elsewhere"}, "output_dir", "download them from the job's URLs"),
        ({"animation_mode": "Video Input"}, "video_init_path", "Video Input needs a video"),
        ({"animation_mode": "Video Input", "video_init_path": "/videos/a.mp4"}, "video_init_path", "paths or URLs"),
        ({"video_init_path": "data:video/mp4;base64,bm90IGEgdmlkZW8="}, "video_init_path", "cannot read the video"),
        ({"animation_mode": "2D", "resume_run": True}, "resume_run", "resume one from its files with client.py"),
        (["a", "list"], "settings", "the body must be a JSON object of settings"),
    ],
)
def test_a_bad_job_is_refused_naming_the_setting(served_http, body, setting, fragment):
    status, answer = call("POST", f"{served_http}/jobs", body)
    assert status == 400 and answer["code"] == "setting_invalid" and answer["setting"] == setting, answer
    assert fragment in answer["detail"], answer


def test_an_init_image_travels_as_a_data_uri(served_http):
    buffer = io.BytesIO()
    Image.new("RGB", (100, 60), (250, 250, 250)).save(buffer, format="PNG")
    init = "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()
    body = {**TINY, "init_image": init, "init_scale": 0, "skip_steps": 2, "seed": 3, "n_batches": 1}
    _, job = call("POST", f"{served_http}/jobs", body)
    job = wait_for_job(served_http, job["id"], lambda j: j["status"] not in ("queued", "running"))
    assert job["status"] == "done" and job["init_image"] is True


def test_an_animation_is_one_job_with_its_frames_and_mp4(served_http):
    body = {**TINY, "animation_mode": "2D", "max_frames": 2, "frames_skip_steps": "50%", "zoom": "0: (1.1)"}
    status, job = call("POST", f"{served_http}/jobs", {**body, "seed": 8, "n_batches": 3})
    assert status == 202 and len(job["images"]) == 1  # one animation, whatever n_batches says
    seen = []
    job = wait_for_job(served_http, job["id"], lambda j: seen.append(j) or j["status"] not in ("queued", "running"))
    image = job["images"][0]
    assert job["status"] == "done" and (image["frames"], image["frames_done"]) == (2, 2), job
    running = [i for j in seen for i in j["images"] if i["status"] == "running" and i["step"]]
    assert running and {i["frame"] for i in running} <= {0, 1} and all(i["frames"] == 2 for i in running)
    # steps count over the whole run: frame 0's 3, then frame 1's 2 (half of 4 skipped)
    assert all(i["total"] == 5 and i["step"] <= 5 for i in running) and (image["step"], image["total"]) == (5, 5)
    assert [p.rsplit("/", 1)[1] for p in image["frame_pngs"]] == ["frame0000.png", "frame0001.png"]
    last = call("GET", served_http + image["frame_pngs"][-1])[1]
    assert call("GET", served_http + image["png"])[1] == last  # the final image is the last frame
    assert json.loads(Image.open(io.BytesIO(last)).text["disco-diffusion"])["animation_mode"] == "2D"
    status, mp4 = call("GET", served_http + image["mp4"])
    import av

    with av.open(io.BytesIO(mp4)) as video:
        frames = [f.to_ndarray(format="rgb24") for f in video.decode(video=0)]
    assert status == 200 and len(frames) == 2 and frames[0].shape == (64, 64, 3)


def test_a_video_input_job_takes_the_video_as_a_data_uri(served_http):
    from test_animation import coloured_frames, mp4_bytes

    clip = "data:video/mp4;base64," + base64.b64encode(mp4_bytes(coloured_frames(4), fps=10)).decode()
    body = {**TINY, "animation_mode": "Video Input", "video_init_path": clip, "extract_nth_frame": 2}
    status, job = call("POST", f"{served_http}/jobs", {**body, "frames_skip_steps": "50%", "seed": 4})
    assert status == 202 and job["video"] is True
    job = wait_for_job(served_http, job["id"], lambda j: j["status"] not in ("queued", "running"))
    image = job["images"][0]
    assert job["status"] == "done" and (image["frames"], image["frames_done"]) == (2, 2), job
    assert job["settings"]["video_init_path"] is None  # the video's bytes are the job's, not its settings'


def test_cancel_keeps_the_frames_made(served_http):
    slow = {**TINY, "steps": 60, "skip_steps": 0, "display_rate": 1, "n_batches": 2, "seed": 5}
    _, job = call("POST", f"{served_http}/jobs", slow)
    wait_for_job(served_http, job["id"], lambda j: (j["images"][0]["step"] or 0) >= 2)
    status, cancelled = call("DELETE", f"{served_http}/jobs/{job['id']}")
    assert status == 200 and cancelled["images"][1]["status"] == "cancelled"  # never sent
    job = wait_for_job(served_http, job["id"], lambda j: j["status"] not in ("queued", "running"))
    first = job["images"][0]
    assert job["status"] == "cancelled" and first["status"] == "cancelled" and 2 <= first["step"] < 60
    assert first["png"] is None and first["gif"] and first["latest_frame"]
    status, refusal = call("GET", f"{served_http}/jobs/{job['id']}/images/0/final.png")
    assert status == 409 and refusal["code"] == "image_not_finished"
    assert "ended as cancelled at step" in refusal["detail"]
    assert Image.open(io.BytesIO(call("GET", served_http + first["gif"])[1])).n_frames == first["step"]
    assert call("DELETE", f"{served_http}/jobs/no-such-job")[0] == 404


def test_a_grpc_caller_whose_connection_dropped_fetches_its_result_by_document_id(served_flow, served_http, tmp_path):
    doc_id = uuid.uuid4().hex
    caller = tmp_path / "caller.py"
    caller.write_text(
        "import sys\nfrom docarray import Document, DocumentArray\nfrom jina import Client\n"
        f"tags = { ({**TINY, 'steps': 12, 'skip_steps': 0, 'seed': 77, 'n_batches': 1})!r}\n"
        f"Client(host={served_flow!r}).post('/generate', DocumentArray([Document(id={doc_id!r}, tags=tags)]))\n"
    )
    process = subprocess.Popen([sys.executable, str(caller)], stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 120
        while (state := call("GET", f"{served_http}/results/{doc_id}")[1]).get("step") is None:
            assert time.time() < deadline and process.poll() is None, (state, process.poll() and process.stderr.read())
            time.sleep(0.2)
    finally:
        process.kill()  # the caller's connection drops mid-image
        process.wait()
    # asking for the result keeps the image from being abandoned; it ends in the store
    deadline = time.time() + 120
    while (record := call("GET", f"{served_http}/results/{doc_id}")[1]).get("status") in ("running", None):
        assert time.time() < deadline, record
        time.sleep(0.5)
    assert record["status"] == "done" and record["steps_done"] == 12 and record["seed"] == 77
    status, final = call("GET", served_http + record["files"]["final"])
    assert status == 200 and json.loads(Image.open(io.BytesIO(final)).text["disco-diffusion"])["seed"] == 77
    steps = [int(re.search(r"step(\d{4})\.png$", url)[1]) for url in record["files"]["frames"]]
    assert steps == [1, 3, 5, 7, 9, 11, 12]  # every display_rate (2) steps, and the last
    assert call("GET", served_http + record["files"]["gif"])[0] == 200
    assert call("GET", f"{served_http}/results/{uuid.uuid4().hex}")[0] == 404


def test_paddlehub_serving_route_answers_as_hub_serving_does(served_http):
    from docarray import DocumentArray

    body = {**TINY, "text_prompts": ["a lighthouse:1"], "n_batches": 2, "seed": 31}
    status, answer = call("POST", f"{served_http}/predict/disco_diffusion_clip_rn50", body, timeout=300)
    assert status == 200 and answer["status"] == "000" and answer["msg"] == ""
    da = DocumentArray.from_base64(answer["results"])
    assert [d.tags["seed"] for d in da] == [31, 32] and {d.tags["status"] for d in da} == {"done"}
    assert [c.tags["step"] for c in da[0].chunks] == [1, 3] and da[0].chunks[-1].tags["cur_t"] == -1
    da[0].load_uri_to_image_tensor()
    assert da[0].tensor.shape == (64, 64, 3)
    _, refused = call("POST", f"{served_http}/predict/disco_diffusion_clip_rn50", {"steps": -1})
    assert refused["status"] == "101" and (refused["code"], refused["setting"]) == ("setting_invalid", "steps")
    assert refused["msg"].startswith("steps: must be in [1, 1000]")
    _, other = call("POST", f"{served_http}/predict/some_other_module", {})
    assert other == {
        "msg": "Module some_other_module is not available.", "results": "", "status": "111",
        "code": "module_not_found", "setting": None,
    }  # fmt: skip


def readme_job_example() -> str:
    """The job API's shell example as docs/serving.md shows it (the block after ``<!-- jobs-example -->``)."""
    text = (ROOT / "docs" / "serving.md").read_text()
    return re.search(r"<!-- jobs-example -->\n```bash\n(.*?)```", text, re.S).group(1)


@pytest.mark.skipif(not shutil.which("curl"), reason="curl is not installed")
def test_the_readme_curl_example_works_as_written(served_http, tmp_path):
    command = readme_job_example()
    body = json.loads(re.search(r"-d '(.*?)'", command, re.S).group(1))
    validate_settings(body)  # valid as written
    small = {**body, **TINY}  # as written, but small enough for the CPU and the test weights
    command = command.replace("http://localhost:51001", served_http)
    command = re.sub(r"-d '(.*?)'", lambda _: "-d " + shlex.quote(json.dumps(small)), command, flags=re.S)
    done = subprocess.run(["bash", "-c", command], cwd=tmp_path, env={**os.environ, "DISCO_API_TOKEN": ""},
                          capture_output=True, text=True, timeout=300)  # fmt: skip
    assert done.returncode == 0, done.stderr + done.stdout
    image = Image.open(tmp_path / "lighthouse.png")
    assert image.size == (64, 64)
    assert json.loads(image.text["disco-diffusion"])["seed"] == body["seed"]
    # a refused job: the example's first step says why
    refused = shlex.quote(json.dumps({**small, "steps": 0}))
    submit = command.split("# 2.")[0].replace(shlex.quote(json.dumps(small)), refused)
    done = subprocess.run(["bash", "-c", submit], capture_output=True, text=True, timeout=60)
    assert done.returncode == 1 and "steps: must be in [1, 1000], got 0" in done.stderr, done.stderr


def test_an_animation_s_prompts_may_change_by_frame(served_http):
    by_frame = {"0": ["a turning lighthouse:1"], "1": ["a lighthouse at night:1", "stars:0.5"]}
    body = {**TINY, "animation_mode": "2D", "max_frames": 2, "frames_skip_steps": "50%", "text_prompts": by_frame}
    status, job = call("POST", f"{served_http}/jobs", {**body, "seed": 9})
    assert status == 202 and job["settings"]["text_prompts"] == by_frame, job
    job = wait_for_job(served_http, job["id"], lambda j: j["status"] not in ("queued", "running"))
    assert job["status"] == "done" and job["images"][0]["frames_done"] == 2, job["images"][0]["error"]


def test_a_job_is_followed_to_its_end_by_its_event_stream(served_http):
    """``GET /jobs/events`` on the served gateway: the job's events arrive in order through to done,
    each with the job as ``GET /jobs/ID`` shows it, and heartbeats keep a quiet stream talking."""
    import threading

    events: list[dict] = []
    heartbeats: list[float] = []
    opened = threading.Event()
    wanted: list[str] = []  # the job's id, once submitted

    def ended() -> bool:
        return any(e["job"]["id"] in wanted and e["type"] in ("done", "failed", "cancelled") for e in events)

    def listen() -> None:
        with urllib.request.urlopen(f"{served_http}/jobs/events", timeout=30) as stream:
            opened.set()
            block: list[str] = []
            for raw in stream:
                line = raw.decode().rstrip("\n")
                if line.startswith(": heartbeat"):
                    heartbeats.append(time.time())
                    if ended():
                        return  # the job has ended and a quiet stream has said so: all this test waits for
                elif line:
                    block.append(line)
                elif block:
                    fields = dict(item.split(": ", 1) for item in block if not item.startswith(":"))
                    block = []
                    if "data" in fields:
                        events.append(json.loads(fields["data"]))
                        if ended() and heartbeats:
                            return

    listener = threading.Thread(target=listen, daemon=True)
    listener.start()
    assert opened.wait(30)
    status, job = call("POST", f"{served_http}/jobs", {**TINY, "text_prompts": ["events:1"], "seed": 5, "n_batches": 1})
    assert status == 202, job
    wanted.append(job["id"])
    listener.join(240)
    assert not listener.is_alive(), "the stream did not tell the job's end"
    mine = [e for e in events if e["job"]["id"] == job["id"]]
    kinds = [e["type"] for e in mine]
    assert kinds[0] == "queued" and kinds[-2:] == ["image_ended", "done"], kinds
    assert "started" in kinds and kinds.index("started") < kinds.index("image_ended"), kinds
    assert mine[-1]["job"]["images"][0]["png"] == f"/jobs/{job['id']}/images/0/final.png"
    assert heartbeats  # a comment at least every 5 s while nothing else is said
