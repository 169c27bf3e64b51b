"""The Flow's secret: where each process finds it, and what serve.py hands its executors and gateway."""

import contextlib
import json
import os
import signal
import stat
import subprocess
import sys
from pathlib import Path

import pytest

import serve
from disco_service.server.flow_secret import METADATA_KEY, SECRET_FILE, deployments_metadata, resolve

EXECUTORS = ("encoder", "sampler", "renderer")


def test_the_secret_is_the_given_one_else_the_variable_else_one_shared_in_the_job_directory(tmp_path, monkeypatch):
    monkeypatch.delenv("DISCO_FLOW_SECRET", raising=False)
    assert resolve("given-secret", tmp_path) == "given-secret"
    assert not (tmp_path / SECRET_FILE).exists()
    made = resolve(None, tmp_path)
    assert len(made) >= 40 and resolve(None, tmp_path) == made  # every process of the Flow finds the same one
    assert stat.S_IMODE((tmp_path / SECRET_FILE).stat().st_mode) == 0o600  # other users cannot read it
    assert resolve(None, tmp_path / "other") != made  # another Flow's job directory, another secret
    monkeypatch.setenv("DISCO_FLOW_SECRET", "from-the-environment")
    assert resolve(None, tmp_path) == "from-the-environment"


def test_the_gateway_sends_the_secret_to_every_executor_beside_metadata_already_there():
    current = {"sampler": {"x-other": "1"}}
    added = deployments_metadata(current, list(EXECUTORS), "s3cret")
    assert added == {
        "encoder": {METADATA_KEY: "s3cret"},
        "sampler": {"x-other": "1", METADATA_KEY: "s3cret"},
        "renderer": {METADATA_KEY: "s3cret"},
    }
    assert current == {"sampler": {"x-other": "1"}}


def test_the_gateway_puts_the_secret_in_jina_s_deployments_metadata(tmp_path, monkeypatch):
    from argparse import Namespace

    from gateway.page_gateway import _send_flow_secret

    monkeypatch.delenv("DISCO_FLOW_SECRET", raising=False)
    addresses = json.dumps({name: [f"grpc://127.0.0.1:{port}"] for port, name in enumerate(EXECUTORS, 6000)})
    args = Namespace(deployments_addresses=addresses, deployments_metadata="{}")
    _send_flow_secret(args, "s3cret")
    assert json.loads(args.deployments_metadata) == {name: {METADATA_KEY: "s3cret"} for name in EXECUTORS}
    as_dict = {"deployments_addresses": addresses, "deployments_metadata": None}
    monkeypatch.setenv("DISCO_STATE_DIR", str(tmp_path))
    _send_flow_secret(as_dict, None)  # a plain `jina flow`: the one in the state folder
    shared = (tmp_path / SECRET_FILE).read_text()
    assert json.loads(as_dict["deployments_metadata"]) == {name: {METADATA_KEY: shared} for name in EXECUTORS}


def test_serve_py_binds_the_executors_to_loopback_unless_told_and_hands_everyone_the_secret():
    plain = serve.flow_config(replicas=1)
    assert all(e["host"] == "127.0.0.1" for e in plain["executors"])
    assert "host" not in plain["gateway"]  # the gateway: all interfaces by default
    assert all("flow_secret" not in e.get("uses_with", {}) for e in plain["executors"])

    shared = serve.flow_config(replicas=1, host="0.0.0.0", flow_secret="s3cret")
    assert shared["gateway"]["host"] == "0.0.0.0" and all(e["host"] == "0.0.0.0" for e in shared["executors"])
    assert shared["gateway"]["uses_with"]["flow_secret"] == "s3cret"
    assert all(e["uses_with"]["flow_secret"] == "s3cret" for e in shared["executors"])
    assert {e["name"] for e in shared["executors"]} == set(EXECUTORS)


@pytest.mark.slow  # a Jina Flow: a gateway and an executor, in a program of their own
def test_an_executor_refuses_a_call_without_the_secret_over_grpc():
    """A tiny executor, guarded, behind Jina's own gateway (tests/guarded_echo.py): the gateway's
    calls pass, a direct call without the secret (or with a wrong one) is refused, the health check
    stays open."""
    from docarray import Document, DocumentArray
    from jina import Client
    from jina.serve.runtimes.servers import BaseServer

    from disco_service.client.local_flow import free_port

    gateway, port = free_port(), free_port()
    script = Path(__file__).with_name("guarded_echo.py")
    program = subprocess.Popen(  # a session of its own: its gateway and executor are stopped with it
        [sys.executable, str(script), str(gateway), str(port), "s3cret"],
        stdout=subprocess.PIPE, text=True, start_new_session=True,
    )  # fmt: skip
    try:
        # Jina's log lines, then "ready" (or the end, when the Flow fails to start within its timeout_ready)
        assert any(line.strip() == "ready" for line in program.stdout), "the Flow did not start"
        answer = Client(host=f"grpc://127.0.0.1:{gateway}").post("/", DocumentArray([Document()]))
        assert answer[0].text == "answered"
        direct = Client(host=f"grpc://127.0.0.1:{port}")
        for metadata in ((), ((METADATA_KEY, "wrong"),), (("authorization", "Bearer s3cret"),)):
            with pytest.raises(Exception, match="UNAUTHENTICATED.*answers its own Flow's gateway only"):
                direct.post("/", DocumentArray([Document()]), metadata=metadata)
        assert direct.post("/", DocumentArray([Document()]), metadata=((METADATA_KEY, "s3cret"),))[0].text
        assert BaseServer.is_ready(f"127.0.0.1:{port}")  # the health check (jina ping, Kubernetes' probes) is open
    finally:
        os.killpg(program.pid, signal.SIGTERM)  # the Flow's own process and the gateway and executor it forked
        try:
            program.wait(timeout=30)
        finally:
            with contextlib.suppress(ProcessLookupError):  # whatever of the group outlived the request to stop
                os.killpg(program.pid, signal.SIGKILL)
