"""The service's state store: jobs, images, claims, progress, cancel requests and tokens in one database.

``open_store(target)`` opens SQLite (a file path, or ``sqlite:///PATH``; the default, nothing to
install) or PostgreSQL (``postgresql://...``, for several gateways) and brings its schema up to date.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from disco_service.server.store.base import JobStore, StoreError, token_hash
from disco_service.server.store.records import AlreadySent, StoredImage, StoredJob, TooManyUnfinished
from disco_service.server.store.schema import SCHEMA_VERSION

__all__ = [
    "AlreadySent",
    "JobStore",
    "open_store",
    "SCHEMA_VERSION",
    "StoredImage",
    "StoredJob",
    "StoreError",
    "token_hash",
    "TooManyUnfinished",
]


def open_store(target: str | Path, clock: Callable[[], float] = time.time) -> JobStore:
    """The store at ``target``: ``postgresql://...`` (or ``postgres://``) for PostgreSQL, else a
    SQLite file (a path, or ``sqlite:///PATH``), with its schema migrated to ``SCHEMA_VERSION``.
    Raises ``StoreError`` for a schema newer than this code, ``psycopg.OperationalError`` when a
    PostgreSQL server cannot be reached."""
    text = str(target)
    if text.startswith(("postgresql://", "postgres://")):
        from disco_service.server.store.postgres import PostgresStore

        store: JobStore = PostgresStore(text, clock)
    else:
        from disco_service.server.store.sqlite import SqliteStore

        store = SqliteStore(text.removeprefix("sqlite:///") if text.startswith("sqlite:///") else text, clock)
    try:
        store.migrate()
    except BaseException:
        store.close()
        raise
    return store
