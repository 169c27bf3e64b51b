"""The gateway's HTTP API against hostile and careless callers, built in-process (no Flow).

The app is the job API, the results, PaddleHub's route and the schedules' preview (http_api.mount,
hub_serving.mount, schedule_preview.mount) over
a job queue whose Flow is a fake. What is checked: generated requests from the API's own
description (schemathesis) and generated header values, bodies and names (hypothesis) get a 2xx
or a 4xx that says what was wrong, never a 5xx, a traceback or a server path; bodies are bounded;
heavy input is checked off the event loop; every answer carries the security headers; a download
of a name in any script is named by RFC 6266; a cancelled job's inputs leave the store at once;
/post's errors come without tracebacks.
"""

import asyncio
import base64
import io
import json
import time

import httpx
import pytest
import schemathesis
from fake_flow import FakeFlow
from fastapi import FastAPI
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from PIL import Image as PILImage

from disco.settings import DEFAULT_LIMITS
from disco.settings.preview import PREVIEWED_SETTINGS
from disco_service.server import http_api, http_guard, hub_serving, schedule_preview
from disco_service.server.job_queue import JobQueue
from disco_service.server.results import ResultStore
from disco_service.server.tokens import Tokens

TOKEN = "alice-token-0123456789"
SMALL = {"text_prompts": ["a lighthouse"], "width_height": [64, 64], "steps": 3, "skip_steps": 0}
QUICK = dict(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))


class InstantQueue(JobQueue):
    """A job queue whose ``wait`` makes the job's images on the fake Flow at once (no loop running)."""

    async def wait(self, job_id: str):
        job = self.jobs[job_id]
        for image in job.images:
            if image.status == "queued":
                await self._generate(job, image)
        return job


def build_app(tmp_path, tokens=(), max_body_bytes: int = http_guard.DEFAULT_MAX_BODY_BYTES):
    """The gateway's own routes over a fake Flow, with the health check Jina's app answers at ``/``."""
    store = ResultStore(tmp_path / "results", ttl_s=3600)
    queue = InstantQueue(store, FakeFlow(store), max_jobs_per_owner=3)
    app = FastAPI()
    app.add_api_route("/", lambda: {}, include_in_schema=False)
    http_api.mount(app, queue, Tokens(tokens), DEFAULT_LIMITS, max_body_bytes)
    hub_serving.mount(app, queue, DEFAULT_LIMITS)
    schedule_preview.mount(app, DEFAULT_LIMITS)
    return app, queue


class InProcessClient:
    """Requests to an ASGI app in this process, one event loop per request (httpx's ASGI transport;
    Starlette's own test client does not fit this httpx)."""

    def __init__(self, app):
        self.app = app

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def request(self, method: str, url: str, **kwargs) -> httpx.Response:
        async def send():
            transport = httpx.ASGITransport(app=self.app)
            async with httpx.AsyncClient(transport=transport, base_url="http://gateway") as client:
                return await client.request(method, url, **kwargs)

        return asyncio.run(send())

    def get(self, url: str, **kwargs) -> httpx.Response:
        return self.request("GET", url, **kwargs)

    def post(self, url: str, **kwargs) -> httpx.Response:
        return self.request("POST", url, **kwargs)

    def delete(self, url: str, **kwargs) -> httpx.Response:
        return self.request("DELETE", url, **kwargs)


def png_uri(size: int = 8) -> str:
    buffer = io.BytesIO()
    PILImage.new("RGB", (size, size), (10, 200, 30)).save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def header(response, name: str) -> str:
    """A header of a response of httpx or of schemathesis (whose values are lists)."""
    found = {k.lower(): v for k, v in response.headers.items()}.get(name, "")
    return found[0] if isinstance(found, list) else found


def assert_answer_without_internals(response) -> None:
    """A 2xx, or a 4xx whose body says what was wrong; never a 5xx, a traceback or a server path."""
    assert response.status_code < 500, (response.status_code, response.text[:300])
    text = response.text
    assert "Traceback (most recent call last)" not in text and 'File "/' not in text, text[:300]
    assert "site-packages/" not in text, text[:300]
    if 400 <= response.status_code < 500 and header(response, "content-type").startswith("application/json"):
        body = response.json()
        said = body.get("detail") or body.get("msg") if isinstance(body, dict) else None
        assert said, f"a {response.status_code} that does not say what was wrong: {text[:300]}"


def assert_security_headers(response) -> None:
    assert "frame-ancestors 'none'" in header(response, "content-security-policy")
    assert "script-src 'self'" in header(response, "content-security-policy")
    assert header(response, "x-content-type-options") == "nosniff"
    assert header(response, "x-frame-options") == "DENY"


# ----- generated from the API's description -----

_app, _ = build_app(__import__("pathlib").Path(__import__("tempfile").mkdtemp(prefix="disco-http-props-")))
schema = schemathesis.openapi.from_asgi("/openapi.json", _app)


@schema.parametrize()
@settings(**QUICK)
def test_every_route_answers_generated_requests_with_a_2xx_or_a_4xx_that_says_why(case):
    started = time.time()
    response = case.call()
    assert time.time() - started < 10, "a request hung"
    assert_answer_without_internals(response)
    assert_security_headers(response)


# ----- hand-aimed kinds, generated -----


@given(token=st.text(min_size=1, max_size=40).filter(lambda t: t.strip() and "\n" not in t and "\r" not in t))
@settings(**QUICK)
def test_a_bearer_token_of_any_characters_is_a_401_never_a_500(tmp_path_factory, token):
    app, _ = build_app(tmp_path_factory.mktemp("tokens"), tokens=[TOKEN])
    raw = f"Bearer {token}".encode()  # a header may carry any byte but CR and LF
    with InProcessClient(app) as client:
        response = client.get("/jobs", headers=[(b"authorization", raw)])
    assert response.status_code == 401, response.text
    assert response.json()["detail"] and response.headers["www-authenticate"] == "Bearer"
    assert_security_headers(response)


@pytest.mark.parametrize("route", ["/jobs", f"/predict/{hub_serving.MODULE}", "/schedules/preview"])
def test_json_nested_100_000_deep_is_a_4xx_on_every_body_route(tmp_path, route):
    app, _ = build_app(tmp_path)
    with InProcessClient(app) as client:
        for body in (b"[" * 100_000 + b"]" * 100_000, b'{"a":' * 100_000 + b"1" + b"}" * 100_000):
            response = client.post(route, content=body, headers={"content-type": "application/json"})
            assert_answer_without_internals(response)
            if route in ("/jobs", "/schedules/preview"):
                assert response.status_code == 400 and response.json()["setting"] == "settings"
                assert "nests" in response.json()["detail"]
            else:
                assert response.json()["status"] == "112"


@given(body=st.one_of(st.binary(max_size=200), st.builds(lambda v: json.dumps(v).encode(), st.recursive(
    st.none() | st.booleans() | st.floats(allow_nan=False) | st.integers() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=15), inner, max_size=4),
    max_leaves=20,
))))  # fmt: skip
@settings(**QUICK)
def test_any_body_to_the_job_api_is_a_2xx_or_a_4xx_naming_what_was_wrong(tmp_path_factory, body):
    app, _ = build_app(tmp_path_factory.mktemp("bodies"))
    with InProcessClient(app) as client:
        response = client.post("/jobs", content=body, headers={"content-type": "application/json"})
    assert_answer_without_internals(response)
    if response.status_code == 400:
        assert response.json()["setting"]  # names the setting, or "settings" for the body as a whole


_TERM = st.from_regex(r"\[[-\d., eTrueFals]{0,12}\](\*\d{1,4})?", fullmatch=True)  # a schedule's term, or near one
_WEIGHT = st.builds("+".join, st.lists(_TERM, max_size=4)) | st.floats() | st.booleans() | st.text(max_size=8)
_MODELS = st.none() | st.text(max_size=20) | st.lists(st.text(max_size=20) | st.integers(), max_size=2)
_STRUCTURED = st.fixed_dictionaries(
    {},
    optional={
        "text": st.text(max_size=12) | st.none() | st.integers(),
        "weight": _WEIGHT | st.none(),
        "clip_models": _MODELS,
    },
)
_PROMPT = st.text(max_size=20) | _STRUCTURED | st.dictionaries(st.text(max_size=8), st.text(max_size=8), max_size=2)
_FRAME_KEY = st.integers(-2, 10**9 + 2).map(str) | st.text(max_size=6) | st.floats().map(str)
_PREVIEW_VALUES = st.one_of(
    st.text(max_size=40), st.builds("+".join, st.lists(_TERM, max_size=4)),
    st.floats(), st.booleans(), st.none(), st.lists(st.integers(), max_size=3),
    _PROMPT,  # text_prompts' structured prompt, and its prompts by frame (values that are not lists among them)
    st.dictionaries(_FRAME_KEY, st.lists(_PROMPT, max_size=3) | _PROMPT | st.integers(), max_size=3),
)  # fmt: skip


@pytest.fixture(scope="module")
def previews_app(tmp_path_factory):
    return build_app(tmp_path_factory.mktemp("previews"))[0]


@given(
    setting=st.sampled_from(PREVIEWED_SETTINGS) | st.text(max_size=20),
    value=_PREVIEW_VALUES,
    text_before=st.text(max_size=10),
)
@example(setting="clip_guidance_scale", value=float("nan"), text_before="")  # NaN in the body's JSON
@example(
    setting="text_prompts", value={"0": ["a:2", {"text": "b", "weight": "[1]*999+[0]"}], "9": ["c"]}, text_before=""
)
@example(
    setting="text_prompts", value={"text": "b", "weight": float("nan"), "clip_models": ["RN50::openai"]}, text_before=""
)
@settings(**QUICK)
def test_any_preview_request_is_the_values_or_a_4xx_naming_the_setting(previews_app, setting, value, text_before):
    app = previews_app  # a preview keeps nothing: one app answers every example
    if setting == "text_prompts" and isinstance(value, str):
        value = f"{text_before}:{value}"  # a prompt line with its weight
    with InProcessClient(app) as client:
        # encoded here: httpx refuses NaN and infinities, which a hostile caller may still send
        body = json.dumps({"setting": setting, "value": value}).encode()
        response = client.post("/schedules/preview", content=body, headers={"content-type": "application/json"})
    assert_answer_without_internals(response)
    body = response.json()
    if response.status_code == 200:
        frames = body.get("frames") or [{"prompts": [body]}]  # text_prompts by frame: a preview per prompt
        assert "frames" not in body or (setting == "text_prompts" and isinstance(value, dict))
        for answer in (prompt for frame in frames for prompt in frame["prompts"]):
            assert sum(count for _, count in answer["runs"]) == answer["length"] == 1000
            assert answer["low"] == min(v for v, _ in answer["runs"])
            assert answer["high"] == max(v for v, _ in answer["runs"])
            assert setting != "text_prompts" or (answer["text"].strip() and "clip_models" in answer)
    else:
        assert response.status_code == 400
        if setting in PREVIEWED_SETTINGS and body["code"] == "setting_invalid":
            assert body["setting"] == setting and body["detail"].startswith(f"{setting}: ")
        else:
            assert body["code"] == "request_invalid" and body["setting"] is None


@given(name=st.text(min_size=1, max_size=30).filter(lambda t: t.strip()))
@settings(**QUICK)
def test_the_files_of_a_job_named_in_any_script_download_under_their_name(tmp_path_factory, name):
    app, queue = build_app(tmp_path_factory.mktemp("names"))
    with InProcessClient(app) as client:
        submitted = client.post("/jobs", json={**SMALL, "batch_name": name, "seed": 5})
        if submitted.status_code != 202:  # a name the settings refuse: said so
            assert submitted.status_code == 400 and submitted.json()["setting"] == "batch_name"
            return
        job_id = submitted.json()["id"]
        asyncio.run(queue.wait(job_id))
        for file in ("final.png", "frames.gif", "latest.png"):
            response = client.get(f"/jobs/{job_id}/images/0/{file}")
            assert response.status_code == 200, response.text
            disposition = response.headers["content-disposition"]
            disposition.encode("ascii")  # HTTP headers carry ASCII names only
            expected = http_api._file_name(queue.jobs[job_id], queue.jobs[job_id].images[0], file)
            assert http_guard.content_disposition(expected) == disposition


def test_a_name_in_another_script_gets_an_ascii_fallback_and_the_exact_utf8_name():
    value = http_guard.content_disposition('reverse_diffusion-灯台 Leuchtturm "x"-5_0.png')
    assert value == (
        'inline; filename="reverse_diffusion-__ Leuchtturm _x_-5_0.png"; '
        "filename*=UTF-8''reverse_diffusion-%E7%81%AF%E5%8F%B0%20Leuchtturm%20%22x%22-5_0.png"
    )
    assert http_guard.content_disposition("plain-1_0.png") == 'inline; filename="plain-1_0.png"'


# ----- bounded requests -----


def test_a_body_over_the_limit_is_a_413_naming_it_whether_stated_or_streamed(tmp_path):
    app, queue = build_app(tmp_path, max_body_bytes=2**20)
    big = json.dumps({"text_prompts": ["x"], "init_image": "data:image/png;base64," + "A" * 2**20}).encode()
    with InProcessClient(app) as client:
        stated = client.post("/jobs", content=big, headers={"content-type": "application/json"})

        async def chunks():
            for start in range(0, len(big), 65536):
                yield big[start : start + 65536]

        streamed = client.post("/jobs", content=chunks(), headers={"content-type": "application/json"})
        bad_length = client.post("/jobs", content=b"{}", headers={"content-length": "lots"})
        small = client.post("/jobs", json=SMALL)
    for response in (stated, streamed):
        assert response.status_code == 413, response.text
        assert "1 MB" in response.json()["detail"] and "DISCO_MAX_BODY_MB" in response.json()["detail"]
        assert_security_headers(response)
    assert bad_length.status_code == 400 and "Content-Length" in bad_length.json()["detail"]
    assert small.status_code == 202 and len(queue.jobs) == 1


def test_the_body_limit_is_configured_in_megabytes():
    from disco_service import config

    assert config.load({}).max_body_bytes == 64 * 2**20
    assert config.load({"DISCO_MAX_BODY_MB": "0.5"}).max_body_bytes == 2**19
    with pytest.raises(config.ConfigError, match="DISCO_MAX_BODY_MB"):
        config.load({"DISCO_MAX_BODY_MB": "lots"})


def test_the_health_check_answers_within_a_second_while_a_heavy_request_is_checked(tmp_path, monkeypatch):
    app, _ = build_app(tmp_path)
    real = http_api.settings_from_json

    def slow_check(body, limits):
        time.sleep(3)  # as probing a large video takes: CPU work in a worker, not on the event loop
        return real(body, limits)

    monkeypatch.setattr(http_api, "settings_from_json", slow_check)

    async def scenario():
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://gateway") as client:
            heavy = asyncio.create_task(client.post("/jobs", json=SMALL))
            await asyncio.sleep(0.2)
            started = time.time()
            health = await client.get("/")
            waited = time.time() - started
            return health, waited, await heavy

    health, waited, heavy = asyncio.run(scenario())
    assert health.status_code == 200 and waited < 1.0, waited
    assert heavy.status_code == 202


def test_checking_that_takes_too_long_is_refused_with_a_413(tmp_path, monkeypatch):
    app, _ = build_app(tmp_path)
    monkeypatch.setattr(http_api, "settings_from_json", lambda body, limits: time.sleep(1))
    monkeypatch.setattr(http_api, "off_loop", _quick_off_loop)
    with InProcessClient(app) as client:
        response = client.post("/jobs", json={"text_prompts": ["x"]})
    assert response.status_code == 413 and "took longer than 0.2 s" in response.json()["detail"]


async def _quick_off_loop(function, *args):
    return await http_guard.off_loop(function, *args, limit_s=0.2)


def test_a_cancelled_or_finished_job_s_inputs_leave_the_store_at_once(tmp_path):
    app, queue = build_app(tmp_path)
    with InProcessClient(app) as client:
        submitted = client.post("/jobs", json={**SMALL, "init_image": png_uri()})
        assert submitted.status_code == 202, submitted.text
        job_id = submitted.json()["id"]
        assert (queue.dir / f"{job_id}.init").exists()
        cancelled = client.delete(f"/jobs/{job_id}")
    assert cancelled.json()["status"] == "cancelled"
    assert not (queue.dir / f"{job_id}.init").exists()
    assert not [p.name for p in queue.dir.iterdir() if p.suffix in (".init", ".video")]  # no input is kept
    with InProcessClient(app) as client:
        done = client.post("/jobs", json={**SMALL, "init_image": png_uri()}).json()["id"]
    assert (queue.dir / f"{done}.init").exists()
    asyncio.run(queue.wait(done))
    assert queue.jobs[done].status == "done" and not (queue.dir / f"{done}.init").exists()  # a finished job's too


# ----- answers without internals -----


def test_a_job_failing_for_a_missing_model_file_does_not_tell_the_server_s_folder(tmp_path, monkeypatch):
    app, queue = build_app(tmp_path)
    folder = "/srv/disco/models"
    message = (
        "WeightsUnavailable: cannot get model file 256x256_diffusion_uncond.pt (2.1 GB)\n"
        f"looked in: {folder} (set DISCO_MODEL_DIR ...)\n  and save it as {folder}/256x256_diffusion_uncond.pt"
    )
    with InProcessClient(app) as client:
        job_id = client.post("/jobs", json=SMALL).json()["id"]
        job = queue.jobs[job_id]
        queue.flow.outcomes[job.images[0].doc_id] = RuntimeError("the sampler failed")
        queue.flow.states[job.images[0].doc_id] = {"status": "failed", "error": message}
        asyncio.run(queue.wait(job_id))
        shown = client.get(f"/jobs/{job_id}").json()["images"][0]["error"]
    assert "256x256_diffusion_uncond.pt is not available on this server" in shown
    assert folder not in shown and "DISCO_MODEL_DIR" not in shown
    assert job.images[0].error == message  # the full text stays with the server


def test_post_errors_carry_no_tracebacks_or_server_paths(monkeypatch):
    from disco_service.server import public_errors

    monkeypatch.setenv("DISCO_MODEL_DIR", "/srv/disco/models")  # the server's model folder
    public_errors._server_paths.cache_clear()
    monkeypatch.setattr(public_errors, "_server_paths", public_errors._server_paths.__wrapped__)
    answer = {
        "header": {"status": {"code": 1, "exception": {
            "name": "RuntimeError", "args": ["cannot open /srv/disco/models/x.pt"],
            "stacks": ["Traceback (most recent call last):\n", '  File "/usr/lib/python3/site-packages/jina/x.py"\n'],
        }}},
        "data": [],
    }  # fmt: skip
    shown = json.loads(http_api.without_internals(json.dumps(answer).encode()))
    exception = shown["header"]["status"]["exception"]
    assert "stacks" not in exception and exception["args"] == ["cannot open <server path>"]
    endpoint = json.dumps({"header": {"status": {"exception": {"name": "E", "args": ["unknown endpoint '/create'"]}}}})
    assert "'/create'" in http_api.without_internals(endpoint.encode()).decode()  # a route is no server path
    assert http_api.without_internals(b'{"data": []}') == b'{"data": []}'  # a success passes as it is


def test_the_page_satisfies_its_content_security_policy():
    """No inline script, style or event handler in the page, no eval or HTML strings in its script:
    all of it comes from the server's own files, which the policy allows."""
    import re
    from pathlib import Path

    ui = Path(__file__).resolve().parent.parent / "ui"
    page = (ui / "index.html").read_text()
    assert re.findall(r"<script(?![^>]*\bsrc=)[^>]*>", page) == []  # every script is a file
    assert "<style" not in page and not re.search(r"\sstyle=", page)
    assert not re.search(r"\son[a-z]+=", page)  # no inline event handlers
    script = (ui / "app.js").read_text()
    for unsafe in ("eval(", "new Function", "innerHTML", "outerHTML", "insertAdjacentHTML", 'setAttribute("style"'):
        assert unsafe not in script, unsafe
    assert "default-src 'self'" in http_guard.CONTENT_SECURITY_POLICY
