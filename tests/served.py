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


def wait_ready(address: str, process: subprocess.Popen, log: Path, timeout: float = 300) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the Flow process exited with {process.returncode}:\n{log.read_text()[-3000:]}")
        if Client(host=address).is_flow_ready(timeout=2):
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
            env={**os.environ, **env},
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
