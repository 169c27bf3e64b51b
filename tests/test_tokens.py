"""Tokens: who may use a shared service, over HTTP and gRPC, and whose jobs each caller sees."""

import json
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
from conftest import TINY, TOKENS
from docarray import Document, DocumentArray
from jina import Client
from test_jobs import call, wait_for_job

from disco.settings import validate_settings
from disco_service import config
from disco_service.server.tokens import OPEN, SERVICE, Tokens, Unauthorized, fingerprint
from disco_service.transport import classify
from disco_service.wire import request_tags, settings_to_tags

ROOT = Path(__file__).resolve().parent.parent


def bearer(name: str) -> dict:
    return {"Authorization": f"Bearer {TOKENS[name]}"}


# ----- without a Flow -----


def test_tokens_are_read_from_the_variable_or_a_file(tmp_path):
    assert config.load({}).api_tokens == ()
    listed = config.load({"DISCO_API_TOKENS": " alice-token-0123456789 , bob-token-0123456789ab,"})
    assert listed.api_tokens == ("alice-token-0123456789", "bob-token-0123456789ab")
    (tmp_path / "tokens").write_text("# callers\nalice-token-0123456789\n\nbob-token-0123456789ab\n")
    assert config.load({"DISCO_API_TOKENS": f"@{tmp_path / 'tokens'}"}).api_tokens == listed.api_tokens
    with pytest.raises(config.ConfigError, match=r"DISCO_API_TOKENS: the file .* cannot be read"):
        config.load({"DISCO_API_TOKENS": f"@{tmp_path / 'missing'}"})
    with pytest.raises(config.ConfigError, match=r"DISCO_API_TOKENS: a token of 6 .* too short; allowed: tokens of 16"):
        config.load({"DISCO_API_TOKENS": "secret"})
    assert config.load({"DISCO_API_TOKEN": "alice-token-0123456789"}).api_token == "alice-token-0123456789"
    assert config.load({"DISCO_MAX_JOBS_PER_TOKEN": "3"}).max_jobs_per_token == 3


def test_a_caller_is_known_by_its_token_s_fingerprint():
    tokens = Tokens(TOKENS.values())
    alice = tokens.owner(f"Bearer {TOKENS['alice']}")
    assert alice == fingerprint(TOKENS["alice"]) and TOKENS["alice"] not in alice and len(alice) == 16
    assert tokens.owner(f"bearer  {TOKENS['bob']} ") == fingerprint(TOKENS["bob"]) != alice
    assert tokens.owner(f"Bearer {tokens.service_token}") == SERVICE
    for header, code, message in (
        (None, "token_required", "this service needs a token: send the header 'Authorization: Bearer TOKEN'"),
        (f"Basic {TOKENS['alice']}", "token_malformed", "the Authorization header must be 'Bearer TOKEN'"),
        ("Bearer alice-token-0123456780", "token_rejected", "this token is not accepted by the service"),
    ):
        with pytest.raises(Unauthorized) as refused:
            tokens.owner(header)
        assert refused.value.code == code and str(refused.value) == message
    assert Tokens().owner(None) == Tokens().owner("Bearer anything") == OPEN  # an open service


# ----- a served Flow with tokens -----


def test_every_http_route_but_the_health_check_and_the_page_needs_a_token(token_flow):
    _, http = token_flow
    assert call("GET", f"{http}/")[0] == 200
    assert call("GET", f"{http}/ui/")[0] == 200  # the page's own files: HTML, CSS, JavaScript
    for method, path, body in (
        ("GET", "/jobs", None),
        ("POST", "/jobs", {**TINY}),
        ("GET", "/results/0123abcd", None),
        ("GET", "/ui/outputs", None),
        ("POST", "/post", {"execEndpoint": "/generate", "data": [{"tags": {**TINY}}]}),
        ("POST", "/predict/disco_diffusion_clip_rn50", {**TINY}),
        ("GET", "/status", None),
    ):
        status, answer = call(method, http + path, body)
        assert status == 401 and answer["code"] == "token_required", (path, answer)
        assert answer["detail"].startswith("this service needs a token"), (path, answer)
    status, answer = call("GET", f"{http}/jobs", headers={"Authorization": "Bearer not-a-known-token-at-all"})
    assert status == 401 and answer == {
        "code": "token_rejected", "setting": None, "detail": "this token is not accepted by the service"
    }  # fmt: skip
    status, answer = call("GET", f"{http}/jobs", headers={"Authorization": "Bearer t\u00f6k\u00e9n-of-other-letters"})
    assert status == 401 and answer["code"] == "token_rejected"  # not a 500


def test_post_errors_over_http_carry_no_traceback_and_every_answer_has_the_security_headers(token_flow):
    import urllib.request

    _, http = token_flow
    body = {"execEndpoint": "/no-such-endpoint", "data": [{"tags": {**TINY}}]}
    status, answer = call("POST", f"{http}/post", body, headers=bearer("alice"))
    exception = answer["header"]["status"]["exception"]
    assert status == 400 and exception["name"] == "UnknownEndpoint", answer
    assert "stacks" not in exception and "Traceback" not in json.dumps(answer), answer
    with urllib.request.urlopen(f"{http}/ui/", timeout=10) as page:
        assert "frame-ancestors 'none'" in page.headers["Content-Security-Policy"]
        assert page.headers["X-Content-Type-Options"] == "nosniff" and page.headers["X-Frame-Options"] == "DENY"


def test_a_job_belongs_to_its_token_and_each_token_has_its_cap(token_flow):
    _, http = token_flow
    slow = {**TINY, "steps": 200, "skip_steps": 0, "seed": 1, "n_batches": 1}
    status, job = call("POST", f"{http}/jobs", slow, headers=bearer("alice"))
    assert status == 202
    status, refused = call("POST", f"{http}/jobs", {**TINY}, headers=bearer("alice"))  # DISCO_MAX_JOBS_PER_TOKEN=1
    assert status == 429 and refused["code"] == "quota_exceeded"
    assert "already has 1 jobs queued or running" in refused["detail"]
    assert call("GET", f"{http}/jobs/{job['id']}", headers=bearer("bob")) == (
        404, {"code": "job_not_found", "setting": None, "detail": f"no job {job['id']!r} for this caller"}
    )  # fmt: skip
    assert call("DELETE", f"{http}/jobs/{job['id']}", headers=bearer("bob"))[0] == 404
    assert call("GET", f"{http}/jobs", headers=bearer("bob"))[1] == {"jobs": [], "next_before": None}
    assert [j["id"] for j in call("GET", f"{http}/jobs", headers=bearer("alice"))[1]["jobs"]] == [job["id"]]
    status, mine = call("POST", f"{http}/jobs", {**TINY, "seed": 2, "n_batches": 1}, headers=bearer("bob"))
    assert status == 202  # bob's own cap
    # alice's job holds the one sampler; bob's single image waits its turn
    running = wait_for_job(http, job["id"], lambda j: j["status"] == "running", headers=bearer("alice"))
    _, waiting = call("GET", f"{http}/jobs/{mine['id']}", headers=bearer("bob"))
    assert waiting["status"] == "queued" and waiting["position"] == 1
    call("DELETE", f"{http}/jobs/{running['id']}", headers=bearer("alice"))
    done = wait_for_job(http, mine["id"], lambda j: j["status"] not in ("queued", "running"), headers=bearer("bob"))
    assert done["status"] == "done"
    image = done["images"][0]
    assert call("GET", http + image["png"], headers=bearer("alice"))[0] == 404  # bob's picture, not alice's
    assert call("GET", http + image["png"], headers=bearer("bob"))[0] == 200


def test_grpc_needs_the_token_in_its_metadata(token_flow, tmp_path):
    grpc, _ = token_flow
    assert Client(host=grpc).is_flow_ready(timeout=60)  # the health check is open (it passes every executor)
    tags = settings_to_tags(validate_settings(**TINY, n_batches=1, seed=4))
    with pytest.raises(Exception, match="UNAUTHENTICATED") as refused:
        Client(host=grpc).post("/generate", DocumentArray([Document(tags=tags)]))
    assert classify(refused.value).code == "token_required"
    with pytest.raises(Exception, match="this token is not accepted") as refused:
        Client(host=grpc).post("/progress", DocumentArray([Document()]), metadata=(("authorization", "Bearer nope"),))
    assert classify(refused.value).code == "token_rejected"
    metadata = (("authorization", f"Bearer {TOKENS['alice']}"),)
    assert (
        Client(host=grpc).post("/generate", DocumentArray([Document(tags=tags)]), metadata=metadata)[0].tags["status"]
        == "done"
    )

    def cli(*extra: str, env: dict | None = None):
        command = [sys.executable, str(ROOT / "client.py"), "--text_prompts", "x", "--width_height", "64", "64",
                   "--steps", "3", "--skip_steps", "0", "--n_batches", "1", "--seed", "6", "--cut_overview", "[1]*1000",
                   "--cut_innercut", "[1]*1000", "--cutn_batches", "1", "--output_dir", str(tmp_path), "--host", grpc,
                   "--no_progress", *extra]  # fmt: skip
        return subprocess.run(command, capture_output=True, text=True, timeout=300, env=env)

    refused = cli()
    assert refused.returncode == 1
    assert refused.stderr.strip().splitlines()[-1] == (
        "error: the server needs a token: give --token (or set DISCO_API_TOKEN, or token= in Python)"
    )
    started = time.time()
    done = cli("--token", TOKENS["bob"])
    assert done.returncode == 0, done.stderr[-2000:]
    assert json.loads(done.stdout)[0]["status"] == "done" and (tmp_path / "reverse_diffusion-6_0.png").exists()
    print(f"client.py with a token: {time.time() - started:.1f} s")


def test_an_image_made_over_grpc_with_a_token_is_in_that_token_s_jobs_and_gallery(token_flow):
    grpc, http = token_flow
    tags = request_tags(validate_settings(**TINY, text_prompts=["a grpc fox"], n_batches=1, seed=12), 0)
    doc = Document(tags=tags)
    bob = (("authorization", f"Bearer {TOKENS['bob']}"),)
    assert Client(host=grpc).post("/generate", DocumentArray([doc]), metadata=bob)[0].tags["status"] == "done"
    listed = call("GET", f"{http}/jobs", headers=bearer("bob"))[1]["jobs"]
    job = next(j for j in listed if j["settings"].get("text_prompts") == ["a grpc fox"])
    assert job["status"] == "done" and job["settings"]["seed"] == 12
    [image] = job["images"]
    assert (image["status"], image["seed"], image["error"]) == ("done", 12, None)
    status, png = call("GET", http + image["png"], headers=bearer("bob"))
    assert status == 200 and png == call("GET", f"{http}/results/{doc.id}/final.png", headers=bearer("bob"))[1]
    assert call("GET", http + image["png"], headers=bearer("alice"))[0] == 404
    assert job["id"] not in [j["id"] for j in call("GET", f"{http}/jobs", headers=bearer("alice"))[1]["jobs"]]
    status, refused = call("DELETE", f"{http}/jobs/{job['id']}", headers=bearer("alice"))
    assert status == 404, refused
    assert call("DELETE", f"{http}/jobs/{job['id']}", headers=bearer("bob"))[0] in (200, 204)  # a finished job goes
    assert job["id"] not in [j["id"] for j in call("GET", f"{http}/jobs", headers=bearer("bob"))[1]["jobs"]]


# ----- the perimeter: executors, Jina's own routes, results -----


def flow_processes(grpc: str) -> tuple[psutil.Process, list[psutil.Process]]:
    """The served Flow's gateway process (the one listening on ``grpc``'s port) and the executors
    (the other processes its parent, the Flow, started)."""
    port = int(grpc.rsplit(":", 1)[1])
    gateway = next(
        p for p in psutil.process_iter()
        if any(c.status == psutil.CONN_LISTEN and c.laddr.port == port for c in _listening(p))
    )  # fmt: skip
    return gateway, [p for p in gateway.parent().children() if p.pid != gateway.pid]


def _listening(process: psutil.Process) -> list:
    try:
        return [c for c in process.net_connections(kind="inet") if c.status == psutil.CONN_LISTEN]
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return []


def test_the_executors_listen_on_loopback_and_answer_their_gateway_only(token_flow):
    grpc, _ = token_flow
    gateway, executors = flow_processes(grpc)
    ports = {c.laddr.port: c.laddr.ip for p in executors for c in _listening(p)}
    assert len(executors) == 3 and len(ports) >= 3, ports  # encoder, sampler, renderer
    assert all(ip in ("127.0.0.1", "::ffff:127.0.0.1", "::1") for ip in ports.values()), ports
    alice = (("authorization", f"Bearer {TOKENS['alice']}"),)
    for port in ports:
        direct = Client(host=f"grpc://127.0.0.1:{port}")
        for metadata in ((), alice):  # not even with a token of the service
            with pytest.raises(Exception, match="UNAUTHENTICATED.*answers its own Flow's gateway only"):
                direct.post("/cancel", DocumentArray([Document(id="someone-elses-image")]), metadata=metadata)
    answer = Client(host=grpc).post("/progress", DocumentArray([Document(id="never-sent")]), metadata=alice)
    assert answer[0].id == "never-sent"  # through the gateway, the same call is answered


def test_jina_s_own_routes_keep_the_token_s_cap_and_results_answer_their_owner(token_flow):
    grpc, http = token_flow
    alice, bob = ((("authorization", f"Bearer {TOKENS[n]}"),) for n in ("alice", "bob"))
    slow = {**TINY, "steps": 200, "skip_steps": 0, "seed": 1, "n_batches": 1}
    status, job = call("POST", f"{http}/jobs", slow, headers=bearer("alice"))  # alice's one job (her cap: 1)
    assert status == 202
    try:
        tags = settings_to_tags(validate_settings(**TINY, n_batches=1, seed=8))
        status, refused = call(
            "POST", f"{http}/post", {"execEndpoint": "/generate", "data": [{"tags": tags}]}, headers=bearer("alice")
        )
        assert status == 429 and "DISCO_MAX_JOBS_PER_TOKEN=1" in json.dumps(refused), refused
        with pytest.raises(Exception, match="TooManyJobs: this caller already has 1 jobs queued or running"):
            Client(host=grpc).post("/generate", DocumentArray([Document(tags=tags)]), metadata=alice)
    finally:
        call("DELETE", f"{http}/jobs/{job['id']}", headers=bearer("alice"))
    wait_for_job(http, job["id"], lambda j: j["status"] not in ("queued", "running"), headers=bearer("alice"))

    doc = Document(tags=tags)  # bob's image, its id chosen by bob (and known to alice)
    assert Client(host=grpc).post("/generate", DocumentArray([doc]), metadata=bob)[0].tags["status"] == "done"
    status, record = call("GET", f"{http}/results/{doc.id}", headers=bearer("bob"))
    assert status == 200 and record["owner"] == fingerprint(TOKENS["bob"]) and record["status"] == "done"
    assert call("GET", f"{http}/results/{doc.id}/final.png", headers=bearer("bob"))[0] == 200
    for path in (f"/results/{doc.id}", f"/results/{doc.id}/final.png", f"/results/{doc.id}/step0001.png"):
        status, body = call("GET", http + path, headers=bearer("alice"))
        assert (status, body["code"], body["setting"]) == (404, "result_not_found", None), path
    for endpoint in ("/progress", "/cancel", "/generate"):  # nor may alice watch, stop or reuse it
        with pytest.raises(Exception, match=f"NotYourImage.*no image .*{doc.id}.* for this caller"):
            Client(host=grpc).post(endpoint, DocumentArray([Document(id=doc.id, tags=tags)]), metadata=alice)
    status, refused = call(
        "POST", f"{http}/post", {"execEndpoint": "/cancel", "data": [{"id": doc.id}]}, headers=bearer("alice")
    )
    assert status == 404, refused


def test_every_built_in_route_is_for_callers_for_health_or_off(token_flow):
    from gateway.page_gateway import BUILT_IN_ROUTES

    _, http = token_flow
    assert call("GET", f"{http}/") == (200, {})  # the health check: open, and it says nothing more
    for path, decision in BUILT_IN_ROUTES.items():
        if decision == "off":
            for method in ("GET", "POST"):
                assert call(method, http + path, headers=bearer("alice"))[0] == 404, (method, path)
    status, description = call("GET", f"{http}/openapi.json", headers=bearer("alice"))
    assert status == 200 and description["info"]["title"] == "Disco Diffusion"
    assert "jina" not in json.dumps(description["info"]).lower()
    ours = ("/jobs", "/results/", "/runs/", "/predict/", "/admin/", "/metrics", "/schedules/")  # the service's own
    for path in description["paths"]:
        assert path.startswith(ours) or BUILT_IN_ROUTES.get(path) in ("callers", "health"), path
    assert call("GET", f"{http}/openapi.json")[0] == 401  # behind the token, as every route but / and the page


def test_the_grpc_gateway_does_not_tell_its_version_and_environment(token_flow):
    import grpc
    from google.protobuf import empty_pb2
    from jina.proto import jina_pb2_grpc

    address, _ = token_flow
    with grpc.insecure_channel(address.removeprefix("grpc://")) as channel:
        with pytest.raises(grpc.RpcError) as refused:
            jina_pb2_grpc.JinaInfoRPCStub(channel)._status(
                empty_pb2.Empty(), metadata=(("authorization", f"Bearer {TOKENS['alice']}"),), timeout=30
            )
    assert refused.value.code() == grpc.StatusCode.UNIMPLEMENTED


def test_a_token_added_and_revoked_on_the_command_line_counts_with_no_restart(token_flow, tmp_path_factory):
    """``python -m disco_service.server.tokens`` on the served gateway's state store, while it runs."""
    import os

    grpc, http = token_flow
    port = grpc.rsplit(":", 1)[1]  # the served Flow's own store: state/<its gRPC port>/
    [state] = {p.resolve() for p in tmp_path_factory.getbasetemp().glob(f"token_flow*/state/{port}/jobs.sqlite3")}
    env = {**os.environ, "DISCO_DATABASE_URL": f"sqlite:///{state}"}

    def tokens(*args: str) -> str:
        command = [sys.executable, "-m", "disco_service.server.tokens", *args]
        return subprocess.run(command, env=env, cwd=ROOT, capture_output=True, text=True, check=True).stdout

    carol = {"Authorization": "Bearer carol-token-0123456789"}
    assert call("GET", f"{http}/jobs", headers=carol)[0] == 401
    assert tokens("add", "carol-token-0123456789", "--label", "carol").startswith("added ")
    assert call("GET", f"{http}/jobs", headers=carol)[0] == 200
    tokens("revoke", "carol-token-0123456789")
    status, refused = call("GET", f"{http}/jobs", headers=carol)
    assert status == 401 and refused["code"] == "token_rejected" and "revoked" in refused["detail"]
    assert call("GET", f"{http}/jobs", headers=bearer("alice"))[0] == 200  # the others are untouched
