"""A throwaway PostgreSQL cluster for the tests: started once per test process, stopped at its exit.

It uses the server binaries of Debian's ``postgresql`` package (``/usr/lib/postgresql/N/bin``),
runs as the ``postgres`` user when the tests run as root (PostgreSQL refuses to run as root),
listens on 127.0.0.1 only, on a free port, and keeps its data in a temporary folder.
"""

from __future__ import annotations

import atexit
import glob
import itertools
import os
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

__all__ = ["Cluster", "cluster", "INSTALL_HINT"]

INSTALL_HINT = "PostgreSQL's server is not installed: apt-get install postgresql (the tests start their own cluster)"
_started: Cluster | None = None


def _bin_dir() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(Path(p).parent.parent.name))
    return Path(found[-1]).parent if found else None


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Cluster:
    def __init__(self, bin_dir: Path):
        """Make and start a cluster with the binaries in ``bin_dir``; raises ``RuntimeError`` with
        its log if it fails."""
        self.bin = bin_dir
        self.root = Path(tempfile.mkdtemp(prefix="disco-pg-"))
        self.data = self.root / "data"
        self.port = _free_port()
        self.as_postgres = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        if self.as_postgres:
            shutil.chown(self.root, "postgres", "postgres")
        self._names = itertools.count()
        self._run("initdb", "-D", str(self.data), "-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync")
        options = f"-c listen_addresses=127.0.0.1 -p {self.port} -c unix_socket_directories='' -c fsync=off"
        self._run("pg_ctl", "-D", str(self.data), "-o", options, "-l", str(self.root / "log"), "-w", "start")

    def _run(self, tool: str, *args: str) -> None:
        done = subprocess.run([*self.as_postgres, str(self.bin / tool), *args], capture_output=True, text=True)
        if done.returncode != 0:
            log = (self.root / "log").read_text() if (self.root / "log").exists() else ""
            raise RuntimeError(f"{tool} failed ({done.returncode}): {done.stdout}{done.stderr}{log}")

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def new_database(self) -> str:
        """A fresh, empty database; its URL."""
        import psycopg

        name = f"t{os.getpid()}_{next(self._names)}"
        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(f"CREATE DATABASE {name}")
        return self.url(name)

    def stop(self) -> None:
        subprocess.run(
            [*self.as_postgres, str(self.bin / "pg_ctl"), "-D", str(self.data), "stop", "-m", "immediate"],
            capture_output=True,
        )
        shutil.rmtree(self.root, ignore_errors=True)


def cluster() -> Cluster | None:
    """The test process's cluster (started at the first call), or None when PostgreSQL is not installed."""
    global _started
    if _started is None:
        bin_dir = _bin_dir()
        if bin_dir is None:
            return None
        _started = Cluster(bin_dir)
        atexit.register(_started.stop)
    return _started
