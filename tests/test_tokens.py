"""Tokens: who may use a shared service, over HTTP and gRPC, and whose jobs each caller sees."""

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import TINY, TOKENS
from docarray import Document, DocumentArray
from jina import Client
from test_jobs import call, wait_for_job

from disco.settings import validate_settings
from disco_service import config
from disco_service.server.tokens import OPEN, SERVICE, Tokens, Unauthorized, fingerprint
from disco_service.wire import settings_to_tags

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
    for header, message in (
        (None, "this service needs a token: send the header 'Authorization: Bearer TOKEN'"),
        (f"Basic {TOKENS['alice']}", "the Authorization header must be 'Bearer TOKEN'"),
        ("Bearer alice-token-0123456780", "this token is not accepted by the service"),
    ):
        with pytest.raises(Unauthorized) as refused:
            tokens.owner(header)
        assert str(refused.value) == message
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
        assert status == 401 and answer["detail"].startswith("this service needs a token"), (path, answer)
    status, answer = call("GET", f"{http}/jobs", headers={"Authorization": "Bearer not-a-known-token-at-all"})
    assert status == 401 and answer == {"detail": "this token is not accepted by the service"}


def test_a_job_belongs_to_its_token_and_each_token_has_its_cap(token_flow):
    _, http = token_flow
    slow = {**TINY, "steps": 200, "skip_steps": 0, "seed": 1, "n_batches": 1}
    status, job = call("POST", f"{http}/jobs", slow, headers=bearer("alice"))
    assert status == 202
    status, refused = call("POST", f"{http}/jobs", {**TINY}, headers=bearer("alice"))  # DISCO_MAX_JOBS_PER_TOKEN=1
    assert status == 429 and "already has 1 jobs queued or running" in refused["detail"]
    assert call("GET", f"{http}/jobs/{job['id']}", headers=bearer("bob")) == (
        404, {"detail": f"no job {job['id']!r} for this caller"}
    )  # fmt: skip
    assert call("DELETE", f"{http}/jobs/{job['id']}", headers=bearer("bob"))[0] == 404
    assert call("GET", f"{http}/jobs", headers=bearer("bob"))[1] == {"jobs": []}
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
    with pytest.raises(Exception, match="UNAUTHENTICATED"):
        Client(host=grpc).post("/generate", DocumentArray([Document(tags=tags)]))
    with pytest.raises(Exception, match="this token is not accepted"):
        Client(host=grpc).post("/progress", DocumentArray([Document()]), metadata=(("authorization", "Bearer nope"),))
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
