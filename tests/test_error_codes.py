"""Errors cross processes as codes: each refusal and failure arrives with its ``wire.ErrorCode`` and
the setting concerned, wherever it is read. No Flow is started: Jina's and gRPC's own error
objects are built as they raise them, the token refusal goes over a real gRPC server, the HTTP
routes run in-process, and the encoder's check is called directly."""

import asyncio
import itertools
import json
import logging
import socket
import time

import grpc
import httpx
import pytest
from docarray import Document, DocumentArray
from fake_flow import FakeFlow, settings
from fastapi import FastAPI
from grpc.aio import AioRpcError, Metadata
from jina.clients.base.grpc import GRPCBaseClient
from jina.excepts import BadServer, InternalNetworkError
from jina.types.request.data import DataRequest

from disco.settings import DEFAULT_LIMITS, SettingsError
from disco_service import transport, wire
from disco_service.client import runner
from disco_service.server import http_api, hub_serving
from disco_service.server.job_queue import JobQueue, TooManyJobs
from disco_service.server.results import ResultStore
from disco_service.server.tokens import Tokens, interceptor
from disco_service.transport import classify
from disco_service.wire import ERROR_CODE_METADATA, ErrorCode

TOKEN = "alice-token-0123456789"


def reported(exc: Exception) -> BadServer:
    """What a Jina client raises for an answer whose executor raised ``exc``."""
    request = DataRequest()
    request.add_exception(exc)
    return BadServer(request.header)


def raised_by_jina_client(error: AioRpcError) -> Exception:
    """What Jina's gRPC client raises for ``error`` (it re-raises gRPC's errors as its own)."""

    class Client:
        logger = logging.getLogger("test")

    async def call():
        try:
            raise error
        except AioRpcError as caught:
            await GRPCBaseClient._handle_error_and_metadata(Client(), caught)

    with pytest.raises(Exception) as raised:
        asyncio.run(call())
    return raised.value


# ----- the one classifier of Jina's and gRPC's errors -----


def test_an_executor_s_refusal_arrives_with_its_code_and_setting():
    failure = classify(reported(SettingsError("steps", "must be in [1, 1000], got 0")))
    assert (failure.code, failure.setting) == (ErrorCode.SETTING_INVALID, "steps")
    assert failure.message == "SettingsError: steps: must be in [1, 1000], got 0"  # the words are unchanged
    for name, code in (
        ("DocumentIdInUse", ErrorCode.DOCUMENT_ID_IN_USE),
        ("UnknownEndpoint", ErrorCode.ENDPOINT_UNKNOWN),
        ("ImageNotFinished", ErrorCode.IMAGE_NOT_FINISHED),
        ("WeightsUnavailable", ErrorCode.MODEL_UNAVAILABLE),
    ):
        failure = classify(reported(type(name, (RuntimeError,), {})("image x ...")))
        assert (failure.code, failure.setting, failure.message) == (code, None, f"{name}: image x ...")
    assert classify(reported(KeyError("frames"))).code == ErrorCode.INTERNAL


def test_a_flow_that_is_down_or_restarting_is_told_apart_from_a_refusal():
    down = AioRpcError(grpc.StatusCode.UNAVAILABLE, Metadata(), Metadata(), "failed to connect to all addresses")
    failure = classify(raised_by_jina_client(down))
    assert failure.code == ErrorCode.FLOW_UNREACHABLE and failure.code in wire.RESTARTING
    # the gateway answers, its sampler does not: Jina's gateway names the deployment it could not reach
    details = f"{down.details()} |Gateway: Communication error with deployment sampler at address(es) x."
    failure = classify(reported(InternalNetworkError(down, dest_addr={"127.0.0.1:1"}, details=details)))
    assert (failure.code, failure.executor) == (ErrorCode.EXECUTOR_RESTARTING, wire.SAMPLER)
    late = AioRpcError(grpc.StatusCode.DEADLINE_EXCEEDED, Metadata(), Metadata(), "deadline")
    assert classify(raised_by_jina_client(late)).code == ErrorCode.INTERNAL  # not retried: it may have run


def test_the_token_refusal_s_code_travels_in_grpc_trailing_metadata():
    """The token interceptor on a real gRPC server; the caller reads the code, not the words."""

    async def echo(request, context):
        return request

    async def exchange() -> list[Exception]:
        server = grpc.aio.server(interceptors=[interceptor(Tokens([TOKEN]))])
        handler = grpc.unary_unary_rpc_method_handler(echo)
        server.add_generic_rpc_handlers([grpc.method_handlers_generic_handler("test.Echo", {"Call": handler})])
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        errors = []
        try:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
                call = channel.unary_unary("/test.Echo/Call")
                for metadata in ((), (("authorization", "Bearer nope-nope-nope"),), (("authorization", "x"),)):
                    try:
                        await call(b"hi", metadata=metadata)
                    except AioRpcError as exc:
                        errors.append(exc)
                assert await call(b"hi", metadata=(("authorization", f"Bearer {TOKEN}"),)) == b"hi"
        finally:
            await server.stop(None)
        return errors

    errors = asyncio.run(exchange())
    assert [e.code() for e in errors] == [grpc.StatusCode.UNAUTHENTICATED] * 3
    codes = [ErrorCode.TOKEN_REQUIRED, ErrorCode.TOKEN_REJECTED, ErrorCode.TOKEN_MALFORMED]
    assert [{k: v for k, v in e.trailing_metadata()}[ERROR_CODE_METADATA] for e in errors] == codes
    assert [classify(raised_by_jina_client(e)).code for e in errors] == codes  # as the client and the queue see them
    assert "give --token" in classify(raised_by_jina_client(errors[0])).message


def test_an_exception_raised_in_this_process_keeps_its_code():
    failure = classify(SettingsError("text_prompts", "a prompt may be at most 77 CLIP tokens, got 90"))
    assert (failure.code, failure.setting) == (ErrorCode.SETTING_INVALID, "text_prompts")
    assert classify(TooManyJobs("this caller already has 2 jobs")).code == ErrorCode.QUOTA_EXCEEDED


def test_the_setting_is_read_from_a_message_in_one_place():
    assert wire.setting_of("width_height: must be multiples of 64, got [65, 64]") == "width_height"
    assert wire.setting_of("the image became NaN at step 3: try a smaller clip_guidance_scale") is None
    assert wire.failure_of_tags({"status": "done"}) is None
    old = wire.failure_of_tags({"error": "ValueError: x"})  # tags written before codes were: internal
    assert (old.code, old.message) == (ErrorCode.INTERNAL, "ValueError: x")


# ----- Document tags -----


def test_the_encoder_s_check_writes_the_refusal_into_the_document_s_tags():
    from executors.prompt_encoder import validated

    doc = Document(tags={**wire.settings_to_tags(settings()), "steps": 0})
    with pytest.raises(SettingsError):
        validated(doc, DEFAULT_LIMITS)
    assert (doc.tags["error_code"], doc.tags["error_setting"]) == ("setting_invalid", "steps")
    assert doc.tags["error"].startswith("SettingsError: steps: must be in [1, 1000]")
    video = Document(tags={**wire.settings_to_tags(settings()), "animation_mode": "Video Input", "max_frames": 2})
    with pytest.raises(SettingsError):
        validated(video, DEFAULT_LIMITS)  # no video's bytes in the request
    assert (video.tags["error_code"], video.tags["error_setting"]) == ("setting_invalid", "video_init_path")
    fine = Document(tags=wire.settings_to_tags(settings()))
    assert validated(fine, DEFAULT_LIMITS).steps == 3 and "error_code" not in fine.tags


# ----- HTTP bodies -----


class InProcess:
    """Calls to an ASGI app in this process (httpx's ASGI transport), with the token by default."""

    def __init__(self, app):
        self.app = app

    def request(self, method: str, path: str, headers: dict | None = None, **kwargs) -> httpx.Response:
        async def call():
            transport = httpx.ASGITransport(app=self.app)
            async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
                return await client.request(method, path, headers={**self.auth, **(headers or {})}, **kwargs)

        return asyncio.run(call())

    auth = {"Authorization": f"Bearer {TOKEN}"}

    def get(self, path: str, **kwargs) -> httpx.Response:
        return self.request("GET", path, **kwargs)

    def post(self, path: str, **kwargs) -> httpx.Response:
        return self.request("POST", path, **kwargs)


@pytest.fixture
def api(tmp_path):
    store = ResultStore(tmp_path / "results", ttl_s=3600)
    queue = JobQueue(store, FakeFlow(store), max_jobs_per_owner=1)
    app = FastAPI()
    http_api.mount(app, queue, Tokens([TOKEN]), DEFAULT_LIMITS)
    hub_serving.mount(app, queue, DEFAULT_LIMITS)
    return InProcess(app)


def test_every_refusal_of_the_job_api_says_its_code_setting_and_message(api):
    tiny = {"text_prompts": ["a lighthouse"], "width_height": [64, 64], "steps": 3, "skip_steps": 0}
    answer = api.post("/jobs", json={**tiny, "steps": 0})
    assert answer.status_code == 400
    detail = "steps: must be in [1, 1000], got 0"
    assert answer.json() == {"code": "setting_invalid", "setting": "steps", "detail": detail}
    assert api.post("/jobs", content=b"{not json").json()["code"] == "setting_invalid"
    assert api.post("/jobs", json=tiny).status_code == 202
    refused = api.post("/jobs", json=tiny)  # one job per owner here
    assert refused.status_code == 429 and refused.json()["code"] == "quota_exceeded"
    missing = api.get("/jobs/no-such-job")
    assert missing.status_code == 404
    detail = "no job 'no-such-job' for this caller"
    assert missing.json() == {"code": "job_not_found", "setting": None, "detail": detail}
    assert api.get("/results/0123abcd").json()["code"] == "result_not_found"
    unknown = api.get("/jobs", headers={"Authorization": "Bearer not-a-known-token-at-all"})
    assert unknown.status_code == 401 and unknown.json()["code"] == "token_rejected"
    assert api.get("/jobs", headers={"Authorization": ""}).json()["code"] == "token_required"


def test_paddlehub_s_answer_keeps_its_fields_and_adds_the_code(api):
    other = api.post("/predict/some_other_module", json={}).json()
    assert other == {
        "msg": "Module some_other_module is not available.", "results": "", "status": "111",
        "code": "module_not_found", "setting": None,
    }  # fmt: skip
    refused = api.post(f"/predict/{hub_serving.MODULE}", json={"steps": -1}).json()
    assert (refused["status"], refused["code"], refused["setting"]) == ("101", "setting_invalid", "steps")
    assert refused["msg"].startswith("steps: must be in [1, 1000]")


def test_jina_s_post_answers_get_the_http_status_of_their_code():
    def body(exc: Exception | None) -> bytes:
        """Jina's JSON answer: the status of an exception as ``DataRequest.add_exception`` records it."""
        exception = {"name": type(exc).__name__, "args": [str(a) for a in exc.args]} if exc else {}
        return json.dumps({"header": {"status": {"code": 1 if exc else 0, "exception": exception}}}).encode()

    assert http_api.post_status(body(None)) == 200
    assert http_api.post_status(body(SettingsError("steps", "must be in [1, 1000], got 0"))) == 400
    assert http_api.post_status(body(type("ImageNotFinished", (RuntimeError,), {})("image x cancelled"))) == 409
    assert http_api.post_status(body(KeyError("frames"))) == 500
    refused = json.loads(http_api.coded_post_answer(body(SettingsError("steps", "must be in [1, 1000], got 0"))))
    assert (refused["code"], refused["setting"], refused["header"]["status"]["code"]) == ("setting_invalid", "steps", 1)
    assert http_api.coded_post_answer(body(None)) == body(None)  # a success is passed on as it is


# ----- one retry policy -----


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_the_client_and_the_job_queue_retry_under_the_one_policy(monkeypatch, tmp_path):
    """Both stop retrying an unreachable Flow when ``transport.RETRY`` says; the failure keeps its code."""
    monkeypatch.setattr(transport, "RETRY", transport.RetryPolicy(for_s=1.0, pause_s=0.2))
    docs = DocumentArray([Document(tags=wire.request_tags(settings(), 0))])
    started = time.monotonic()
    results, errors = asyncio.run(runner.run_jobs(f"grpc://127.0.0.1:{free_port()}", docs, show_progress=False))
    waited = time.monotonic() - started
    assert len(results) == 0 and [classify(e).code for e in errors] == [ErrorCode.FLOW_UNREACHABLE]
    assert 1.0 <= waited < 30, waited  # it tried again for the policy's time, then gave up

    store = ResultStore(tmp_path / "results", ttl_s=3600)
    down = ConnectionError("gRPC error: StatusCode.UNAVAILABLE failed to connect to all addresses")
    flow = FakeFlow(store, {5: down})
    clock = itertools.count(0, 2)  # every look at the clock is 2 s later: past the policy's second at once
    queue = JobQueue(store, flow, clock=lambda: next(clock))
    job = queue.submit("alice", settings(seed=5))

    async def run():
        task = asyncio.create_task(queue.run())
        while not job.finished:
            await asyncio.sleep(0.01)
        task.cancel()

    asyncio.run(asyncio.wait_for(run(), 10))
    image = job.images[0]
    assert len(flow.sent) == 1 and image.status == "failed" and image.error_code == "flow_unreachable"


def test_the_docs_list_every_code():
    from pathlib import Path

    page = (Path(__file__).resolve().parents[1] / "docs" / "serving.md").read_text()
    listed = page.split("**Error codes.**", 1)[1].split("\n\n", 1)[0]
    assert [code.value for code in ErrorCode if f"`{code.value}`" not in listed] == []


def test_generate_image_fails_with_each_image_s_code(monkeypatch, tmp_path):
    """The client's face: a request that never reached the Flow and an image that failed in it."""
    from disco_service.client import api

    async def answered(address, docs, show_progress, on_finished_frame=None, token=None):
        failed = Document(id=docs[1].id, tags={**docs[1].tags, "status": "failed"})
        failed.tags.update(wire.Failure(ErrorCode.SAMPLER_DIED, "the sampler process died (pid 7)").tags())
        down = ConnectionError("gRPC error: StatusCode.UNAVAILABLE failed to connect to all addresses")
        return DocumentArray([failed]), [down]

    monkeypatch.setattr(api, "run_jobs", answered)
    tiny = {"text_prompts": ["x"], "width_height": [64, 64], "steps": 2, "skip_steps": 0, "seed": 3}
    with pytest.raises(api.GenerationFailed) as failed:
        api.generate_image(**tiny, n_batches=2, output_dir=str(tmp_path), host="grpc://127.0.0.1:1", progress=False)
    assert failed.value.codes == [ErrorCode.FLOW_UNREACHABLE, ErrorCode.SAMPLER_DIED]
    assert failed.value.messages[1] == "image 1: the sampler process died (pid 7)"
