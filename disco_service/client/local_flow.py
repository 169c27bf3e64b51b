"""The Flow a client starts for itself when it is given no host: ``serve.py`` on free local ports.

It runs in a session of its own, so a terminal's Ctrl-C (sent to the whole foreground
process group) reaches the client alone: the client cancels its jobs and collects their
frames while the Flow is still there, then stops it. ``serve.py`` stops by itself if the client
dies, and restarts an executor process that dies.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from disco_service.console import quiet_env

__all__ = ["FlowFailed", "free_port", "local_flow", "ROOT"]

ROOT = Path(__file__).resolve().parents[2]  # the repository: serve.py, flow.yml


class FlowFailed(RuntimeError):
    """The local Flow could not be started."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def local_flow(use_gpu: bool = True, diffusion_model: str | None = None, quiet: bool = False) -> Iterator[str]:
    """Start ``serve.py`` for this process, yield its gRPC address once it serves, stop it afterwards.
    Its HTTP port (REST, the page) is another free port.

    ``quiet``: its processes print only their warnings and errors (see console.py), no banner."""
    port, http_port = free_port(), free_port()
    env = {**os.environ, **(quiet_env() if quiet else {})}
    with tempfile.TemporaryDirectory() as tmp:
        ready = Path(tmp) / "ready"
        command = [sys.executable, str(ROOT / "serve.py"), f"--port={port}", f"--http-port={http_port}"]
        command.append("--host=127.0.0.1")  # this process's own Flow: not reachable from other machines
        command.append(f"--ready-file={ready}")
        # this run's device (auto: the GPU if there is one, else a warning and the CPU), and its UNet loaded up front
        command.append(f"--use-gpu={'auto' if use_gpu else '0'}")
        if diffusion_model:
            command.append(f"--preload={diffusion_model}")
        command.append("--checkpoints-anywhere")  # this machine's user names their own files
        if quiet:
            command.append("--quiet")
        # its log goes to stderr (file descriptor 2, also under Jupyter): stdout is the caller's
        process = subprocess.Popen([*command, "--stop-with-parent"], env=env, start_new_session=True, stdout=2)
        try:
            while not ready.exists():
                if process.poll() is not None:
                    raise FlowFailed(f"the local Flow exited with code {process.returncode} while starting")
                time.sleep(0.2)
            yield f"grpc://127.0.0.1:{port}"
        finally:
            _stop(process)


def _stop(process: subprocess.Popen) -> None:
    """SIGTERM: serve.py stops its running jobs (if any are left), then the Flow."""
    with contextlib.suppress(ProcessLookupError):
        process.send_signal(signal.SIGTERM)
    try:
        process.wait(120)
    except subprocess.TimeoutExpired:
        process.kill()  # its Flow notices that serve.py is gone and stops too
        process.wait()
