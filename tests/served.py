"""A Flow served by a subprocess in its own process group: start, wait until ready, stop all of it."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

from jina import Client

READY_LINE = "Flow is ready to serve!"  # Jina prints it once every replica of every executor is up


def wait_ready(address: str, process: subprocess.Popen, log: Path, timeout: float = 300) -> None:
    """Wait until the whole Flow is up.

    The gateway answers (``is_flow_ready``) as soon as one replica per executor does; a
    request sent then to a replica still loading is retried on another, which would pair
    work on one replica. So the log's ready line is awaited as well.
    """
    deadline = time.time() + timeout
    while time.time() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the Flow process exited with {process.returncode}:\n{log.read_text()[-3000:]}")
        if READY_LINE in log.read_text(errors="replace") and Client(host=address).is_flow_ready(timeout=2):
            return
        time.sleep(1)
    raise TimeoutError(f"the Flow at {address} was not ready in {timeout} s:\n{log.read_text()[-3000:]}")


@contextlib.contextmanager
def served(command: list[str], port: int, env: dict, log: Path, cwd: Path) -> Iterator[str]:
    """Run ``command`` (a Flow on ``port``), yield its gRPC address once ready, then stop it."""
    with open(log, "w") as out:
        process = subprocess.Popen(
            command,
            cwd=cwd,
            env={**os.environ, **env, "PYTHONUNBUFFERED": "1"},  # the ready line reaches the log at once
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group, so stopping it stops the executors too
        )
        address = f"grpc://127.0.0.1:{port}"
        try:
            wait_ready(address, process, log)
            yield address
        finally:
            # Executors may outlive a SIGTERM to the Flow, so the group gets a SIGKILL after the grace period.
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(30)
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
