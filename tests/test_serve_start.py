"""What serve.py and client.py say when they start: a bad DISCO_* value as one line (exit 2), the
addresses the Flow listens on and no other, and one warning when there is no GPU."""

import subprocess
import sys
import threading
from pathlib import Path
from types import SimpleNamespace

import pytest

import serve
from disco_service import config
from disco_service.client import cli

ROOT = Path(__file__).resolve().parent.parent

BAD = [
    ("DISCO_API_TOKENS", "short", "is too short"),
    ("DISCO_API_TOKENS", "@/nonexistent/tokens", "cannot be read"),
    ("DISCO_API_TOKEN", "has a space in it, see", "holds a space"),
    ("DISCO_USE_GPU", "yes", "'yes' is not one of the choices"),
    ("DISCO_MODE", "fp8", "'fp8' is not one of the choices"),
    ("DISCO_MAX_PIXELS", "big", "'big' is not a whole number"),
    ("DISCO_MAX_PIXEL_STEPS", "0", "'0' is too small"),
    ("DISCO_CLIENT_TIMEOUT_S", "soon", "'soon' is not a number"),
    ("DISCO_STOP_TIMEOUT_S", "-1", "'-1' is too small"),
    ("DISCO_SAMPLER_REPLICAS", "two", "'two' is not a whole number"),
    ("DISCO_RESULT_TTL_S", "1", "'1' is too small"),
    ("DISCO_MAX_JOBS_PER_TOKEN", "1.5", "'1.5' is not a whole number"),
    ("DISCO_WEIGHTS_MIRROR", "mirror.example.org/files", "'mirror.example.org/files' is not a URL"),
]


@pytest.mark.parametrize(("name", "value", "problem"), BAD)
def test_a_bad_variable_is_named_with_what_is_wrong_and_what_is_allowed(name, value, problem):
    with pytest.raises(config.ConfigError) as raised:
        config.load({name: value})
    assert raised.value.name == name
    assert str(raised.value).startswith(f"{name}: ") and problem in str(raised.value)
    assert "; allowed: " in str(raised.value)


@pytest.mark.parametrize(("name", "value", "problem"), BAD)
def test_serve_py_and_the_client_refuse_it_in_one_line_with_exit_2(name, value, problem, monkeypatch, capsys):
    monkeypatch.setenv(name, value)
    monkeypatch.setattr(serve, "run_flow", lambda args: pytest.fail("the Flow started"))
    assert serve.main(["--flow-only"]) == 2
    assert cli.main(["--text_prompts", "a lighthouse"]) == 2
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 2 and lines[0] == lines[1] and lines[0].startswith(f"error: {name}: "), lines
    assert problem in lines[0]


@pytest.mark.slow  # it runs serve.py itself (which stops at once), so the fast lane's guard refuses it
def test_serve_py_with_bad_tokens_prints_no_traceback():
    env = {"PATH": "/usr/bin:/bin", "DISCO_API_TOKENS": "short"}
    done = subprocess.run(
        [sys.executable, str(ROOT / "serve.py")], env=env, cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr
    assert done.stderr.strip().splitlines()[-1].startswith("error: DISCO_API_TOKENS: a token of 5 characters")


def test_the_banner_shows_only_the_addresses_the_flow_listens_on():
    own = serve.banner("127.0.0.1", 51000, 51001, private="10.1.2.3")
    assert own.startswith("Flow is ready to serve!")  # jina's words, which scripts and tests wait for
    assert "grpc://127.0.0.1:51000" in own and "http://127.0.0.1:51001/ui/" in own and "10.1.2.3" not in own
    everywhere = serve.banner(None, 51000, 51001, private="10.1.2.3")
    assert "grpc://10.1.2.3:51000" in everywhere and "grpc://127.0.0.1:51000" in everywhere
    assert serve.banner("0.0.0.0", 1, 2, private="10.1.2.3") == everywhere.replace("51000", "1").replace("51001", "2")
    assert "grpc://192.168.1.5:51000" in serve.banner("192.168.1.5", 51000, 51001, private="10.1.2.3")


class FakeFlow:
    port = [51000, 51001]

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def block(self, stop_event: threading.Event) -> None:
        stop_event.set()


def test_the_flow_process_prints_its_own_banner_instead_of_jinas(monkeypatch, tmp_path, capsys):
    import jina.orchestrate.flow.base as flow_base

    monkeypatch.setattr(flow_base, "print", flow_base.print)  # put back afterwards
    monkeypatch.setattr(serve, "load_flow", lambda *args, **kwargs: FakeFlow())
    monkeypatch.setattr(serve.signal, "signal", lambda *args: None)
    monkeypatch.setattr(serve, "private_address", lambda: "10.1.2.3")
    args = SimpleNamespace(
        quiet=False, replicas=None, port=None, http_port=None, use_gpu=None, preload=None,
        checkpoints_anywhere=False, host="127.0.0.1", ready_file=tmp_path / "ready", state_store=None,
    )  # fmt: skip
    serve.run_flow(args)
    out = capsys.readouterr().out
    assert "grpc://127.0.0.1:51000" in out and "10.1.2.3" not in out
    flow_base.print("jina's banner")  # what the Flow prints with it once it serves: nothing
    assert capsys.readouterr().out == ""


@pytest.mark.parametrize(("gpus", "usable", "want"), [(0, False, "0"), (0, True, None), (1, True, None)])
def test_the_no_gpu_warning_is_printed_once_for_the_whole_flow(monkeypatch, capsys, gpus, usable, want):
    started = []
    monkeypatch.delenv("DISCO_USE_GPU", raising=False)  # auto
    monkeypatch.setattr(serve, "gpu_count", lambda: gpus)
    monkeypatch.setattr(serve, "cuda_usable", lambda: usable)
    monkeypatch.setattr(
        "disco_service.server.supervisor.Supervisor",
        lambda flow_args, *args, **kwargs: SimpleNamespace(run=lambda: started.append(flow_args) or 0),
    )
    assert serve.main([]) == 0
    warnings = [line for line in capsys.readouterr().err.splitlines() if "no CUDA GPU" in line]
    [flow_args] = started
    assert [arg for arg in flow_args if arg.startswith("--state-store=")]  # the board every restart shares
    device = [arg for arg in flow_args if not arg.startswith("--state-store=")]
    if want == "0":  # the executors run on the CPU as told: none of them warns again
        assert device == ["--use-gpu=0"] and len(warnings) == 1
    else:
        assert device == [] and warnings == []
