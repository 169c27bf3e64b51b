"""The embedded backend: one SQLite file on local disk (the standard library's ``sqlite3``).

WAL mode lets readers go on while one writer writes; every write transaction starts with
``BEGIN IMMEDIATE``, so it holds the write lock from its first statement and two writers queue
(for up to ``busy_timeout_s``) instead of failing half-way. The file must be on a local disk:
SQLite's locks do not hold over network filesystems (use PostgreSQL to share a queue).
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from disco_service.server.store.base import JobStore

__all__ = ["BUSY_TIMEOUT_S", "SqliteStore"]

BUSY_TIMEOUT_S = 30.0


class SqliteStore(JobStore):
    dialect = "sqlite"

    def __init__(
        self, path: str | Path, clock: Callable[[], float] = time.time, busy_timeout_s: float = BUSY_TIMEOUT_S
    ):
        """Open (and make, with its folder, private to this user) the database file ``path``."""
        super().__init__(clock)
        self.path = Path(path).expanduser()
        self.url = f"sqlite:///{self.path}"
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        new = not self.path.exists()
        # isolation_level=None: transactions are begun and ended here, explicitly
        self.conn = sqlite3.connect(self.path, timeout=busy_timeout_s, isolation_level=None, check_same_thread=False)
        if new:
            self.path.chmod(0o600)
        self.conn.execute(f"PRAGMA busy_timeout = {int(busy_timeout_s * 1000)}")
        self.conn.execute("PRAGMA journal_mode = WAL")
        self.conn.execute("PRAGMA synchronous = NORMAL")  # with WAL: durable at each checkpoint, never corrupt
        self.conn.execute("PRAGMA foreign_keys = ON")

    @contextmanager
    def _begin(self, write: bool) -> Iterator[sqlite3.Cursor]:
        cursor = self.conn.cursor()
        cursor.execute("BEGIN IMMEDIATE" if write else "BEGIN")
        try:
            yield cursor
        except BaseException:
            cursor.execute("ROLLBACK")
            raise
        else:
            cursor.execute("COMMIT")
        finally:
            cursor.close()

    def close(self) -> None:
        """Close the connection (the file stays)."""
        with self._lock:
            self.conn.close()
