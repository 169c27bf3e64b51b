"""The shared backend: PostgreSQL through psycopg 3, for several gateways (``DISCO_DATABASE_URL``).

Each store holds one connection; transactions are explicit. Claims lock the queue's one row
(``FOR UPDATE``) so that claimers count the images in flight one at a time, and pick their image
with ``FOR UPDATE SKIP LOCKED`` so that rows another transaction holds are passed over, not waited for.
Each change of a job is also sent with ``NOTIFY`` (the channel ``CHANNEL``, the job's id as payload),
which PostgreSQL delivers to every listening connection once the transaction commits.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from disco_service.server.store.base import CHANNEL, JobStore, _Tx

__all__ = ["PostgresStore"]

_MIGRATION_LOCK = 0x6469_7363_6F  # any fixed number: the advisory lock migrations take


class PostgresStore(JobStore):
    dialect = "postgresql"
    _for_update = " FOR UPDATE"
    _skip_locked = " FOR UPDATE OF i SKIP LOCKED"

    def __init__(self, url: str, clock: Callable[[], float] = time.time, connect_timeout_s: float = 10):
        """Connect to ``url`` (``postgresql://user:password@host:port/database``). Raises
        ``psycopg.OperationalError`` when the server cannot be reached."""
        import psycopg

        super().__init__(clock)
        self.url = url
        self._connect_timeout = max(1, int(connect_timeout_s))
        self.conn = psycopg.connect(url, autocommit=True, connect_timeout=self._connect_timeout)

    def _translate(self, sql: str) -> str:
        return sql.replace("?", "%s")  # the statements hold no other question marks (nor percent signs)

    def _publish(self, tx: _Tx, job_id: str) -> None:
        tx.run("SELECT pg_notify(?, ?)", (CHANNEL, job_id))  # delivered when the transaction commits

    def _lock_migrations(self, tx: _Tx) -> None:
        tx.run("SELECT pg_advisory_xact_lock(?)", (_MIGRATION_LOCK,))

    @contextmanager
    def _begin(self, write: bool) -> Iterator[Any]:
        if self.conn.closed or self.conn.broken:  # the server restarted or the network dropped: connect again
            import psycopg

            self.conn = psycopg.connect(self.url, autocommit=True, connect_timeout=self._connect_timeout)
        with self.conn.transaction(), self.conn.cursor() as cursor:
            yield cursor

    def close(self) -> None:
        """Close the connection."""
        with self._lock:
            self.conn.close()
