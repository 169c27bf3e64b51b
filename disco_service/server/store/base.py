"""The state store's interface and its one implementation in SQL, shared by both backends.

Jobs, their images, claims, progress, cancel requests and tokens live in one database: SQLite (one
file, the default) or PostgreSQL (several gateways). Backends (sqlite.py, postgres.py) only open the
connection, run transactions and translate the few words their dialects spell differently.

Claims: a gateway takes the next image with ``claim_next`` (fair order between owners, computed in
SQL, and only while the images in flight are fewer than the sampler slots), records its sending
with ``mark_sent`` (a Document id is sent at most once, whoever sends it), keeps its claims alive
with ``renew`` and takes over the images of a gateway that stopped renewing with ``expire``.
Times are seconds since the epoch from the store's ``clock`` (the hosts of several gateways must
keep their clocks in step, as NTP does, to well under a lease).

Changes: each transaction that changes a job names it, once committed, to the store's
``listeners`` (in this process); PostgreSQL also sends it with ``NOTIFY`` on ``CHANNEL``, so
that the gateways sharing the database hear of each other's changes (SQLite has no such thing:
its changes are heard in the process that made them only).

Admission: ``submit`` refuses a job (``QuotaExceeded``) while the queue drains and, with a
``quota`` set, beyond the images and pixel-steps an owner may ask for per day or the images the
whole queue may hold; checked in the transaction that adds the job, so gateways cannot both let
the last one in.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from typing import Any

from disco_service.server.quotas import Quota, QuotaExceeded, job_pixel_steps, utc_day
from disco_service.server.store.board import BoardRecords
from disco_service.server.store.records import (
    IMAGE_COLUMNS,
    AlreadySent,
    StoredImage,
    StoredJob,
    TooManyUnfinished,
)
from disco_service.server.store.schema import MIGRATIONS, SCHEMA_VERSION
from disco_service.server.store.stats import StatsRecords
from disco_service.server.tokens import fingerprint
from disco_service.wire import JobStatus

__all__ = ["CHANNEL", "JobStore", "StoreError", "token_hash"]

log = logging.getLogger(__name__)

CHANNEL = "disco_jobs"  # PostgreSQL's NOTIFY channel of job changes; the payload is the job's id

_UNFINISHED = "('queued', 'waiting', 'running')"
_SENT = "('waiting', 'running')"
_COLUMNS = ", ".join(IMAGE_COLUMNS)
_I_COLUMNS = ", ".join(f"i.{name}" for name in IMAGE_COLUMNS)
# An image waiting for a claimer: queued, and nobody holds it (or its claimer let the lease run out).
_CLAIMABLE = "i.status = 'queued' AND (i.claimer IS NULL OR i.lease_until <= ?)"
# In flight: sent and not finished (whether or not its claimer still lives: a sampler may run it),
# or claimed with a live lease and about to be sent.
_IN_FLIGHT = (
    f"SELECT COUNT(*) FROM images WHERE status IN {_SENT} "
    "OR (status = 'queued' AND claimer IS NOT NULL AND lease_until > ?)"
)
# The queued images in the order they will be claimed: round-robin between owners. Each owner's
# images are ranked oldest first (k); round k takes every owner's k-th image, owners in the order
# of their last turn (the one served longest ago first; a new owner's turn is 0), then of their
# oldest image.
_QUEUE = f"""
    SELECT {_I_COLUMNS}, o.last_turn AS turn_, j.owner AS owner_,
        ROW_NUMBER() OVER (PARTITION BY j.owner ORDER BY i.created, i.job_id, i.idx) AS rank_,
        MIN(i.created) OVER (PARTITION BY j.owner) AS oldest_
    FROM images i JOIN jobs j ON j.id = i.job_id JOIN owners o ON o.owner = j.owner
    WHERE {_CLAIMABLE}"""
_QUEUE_ORDER = "rank_, turn_, oldest_, owner_"
_PROGRESS_FIELDS = (
    "status",
    "step",
    "total",
    "started",
    "error",
    "error_code",
    "frame_step",
    "frame",
    "frames",
    "frames_done",
    "run_step",
    "run_total",
)


class StoreError(RuntimeError):
    """The store cannot be used as it is (e.g. its schema is newer than this code knows)."""


def token_hash(token: str) -> str:
    """How a token is kept in the store: its SHA-256, as 64 hex digits."""
    return hashlib.sha256(token.encode()).hexdigest()


class _Tx:
    """One transaction's cursor, with the dialect's placeholders."""

    def __init__(self, cursor: Any, translate: Callable[[str], str]):
        self.cursor, self.translate = cursor, translate
        self.changed: list[str] = []  # the jobs this transaction changed, told once it commits

    def run(self, sql: str, params: Sequence[Any] = ()) -> int:
        self.cursor.execute(self.translate(sql), tuple(params))
        return self.cursor.rowcount

    def rows(self, sql: str, params: Sequence[Any] = ()) -> list[dict[str, Any]]:
        self.cursor.execute(self.translate(sql), tuple(params))
        names = [d[0] for d in self.cursor.description]
        return [dict(zip(names, row, strict=True)) for row in self.cursor.fetchall()]

    def one(self, sql: str, params: Sequence[Any] = ()) -> dict[str, Any] | None:
        rows = self.rows(sql, params)
        return rows[0] if rows else None

    def value(self, sql: str, params: Sequence[Any] = ()) -> Any:
        self.cursor.execute(self.translate(sql), tuple(params))
        row = self.cursor.fetchone()
        return row[0] if row else None


def _image(row: dict[str, Any]) -> StoredImage:
    return StoredImage(**{name: row[name] for name in IMAGE_COLUMNS})


def _job(row: dict[str, Any]) -> StoredJob:
    return StoredJob(
        id=row["id"],
        owner=row["owner"],
        created=row["created"],
        changed=row["changed"],
        settings=json.loads(row["settings"]),
        has_init_image=bool(row["has_init_image"]),
        has_video=bool(row["has_video"]),
        cancelled=bool(row["cancelled"]),
    )


class JobStore(BoardRecords, StatsRecords):
    """The state of jobs, images, claims, tokens and the executors' job board (board.py) in one
    database (see the module's text), with the counts metrics are made of (stats.py).

    Subclasses provide ``_begin`` (a transaction's cursor: writes take the database's write lock
    at once) and the dialect's words. One store object may be used from several threads (calls
    take turns on its one connection); separate processes each open their own."""

    dialect = ""
    url = ""
    _for_update = ""  # locks the rows read, until the transaction ends (PostgreSQL)
    _skip_locked = ""  # ... skipping the rows another transaction holds

    def __init__(self, clock: Callable[[], float] = time.time):
        self.clock = clock
        self._lock = threading.RLock()
        # called with a job's id after each committed change of it, from the thread that made it
        self.listeners: list[Callable[[str], None]] = []
        self.quota: Quota | None = None  # the volume each owner and the queue may take (None: unbounded)

    # ----- what backends provide -----

    def _begin(self, write: bool) -> AbstractContextManager[Any]:
        raise NotImplementedError

    def _translate(self, sql: str) -> str:
        return sql

    def _lock_migrations(self, tx: _Tx) -> None:
        """Keep two processes from migrating at once (SQLite's write lock already does)."""

    def close(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> JobStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _publish(self, tx: _Tx, job_id: str) -> None:
        """Tell other processes, within the transaction, that ``job_id`` changed (PostgreSQL's NOTIFY)."""

    @contextmanager
    def _tx(self, write: bool = True) -> Iterator[_Tx]:
        with self._lock:
            with self._begin(write) as cursor:
                tx = _Tx(cursor, self._translate)
                yield tx
            changed = list(dict.fromkeys(tx.changed))
        for job_id in changed:
            for listener in list(self.listeners):
                try:
                    listener(job_id)
                except Exception:  # a listener's fault must not undo nor hide a committed change
                    log.exception("state store: a listener of job changes failed")

    def _changed(self, tx: _Tx, job_id: str | None) -> None:
        if job_id is not None and job_id not in tx.changed:
            tx.changed.append(job_id)
            self._publish(tx, job_id)

    def _changed_doc(self, tx: _Tx, doc_id: str) -> None:
        self._changed(tx, tx.value("SELECT job_id FROM images WHERE doc_id = ?", (doc_id,)))

    # ----- schema -----

    def migrate(self) -> int:
        """Bring the schema up to date (the steps not applied yet, in one transaction); the version
        reached. Raises ``StoreError`` for a database made by a newer version of the service."""
        with self._tx() as tx:
            self._lock_migrations(tx)
            tx.run(
                "CREATE TABLE IF NOT EXISTS schema_version "
                "(version INTEGER PRIMARY KEY, applied DOUBLE PRECISION NOT NULL)"
            )
            current = tx.value("SELECT COALESCE(MAX(version), 0) FROM schema_version")
            if current > SCHEMA_VERSION:
                raise StoreError(
                    f"the state store {self.url} has schema version {current}, newer than this service's "
                    f"{SCHEMA_VERSION}: run the newer service, or point it at another store"
                )
            for version in range(current + 1, SCHEMA_VERSION + 1):
                for statement in MIGRATIONS[version - 1]:
                    tx.run(statement)
                tx.run("INSERT INTO schema_version (version, applied) VALUES (?, ?)", (version, self.clock()))
        return SCHEMA_VERSION

    def schema_version(self) -> int:
        """The schema version the database is at (0: empty)."""
        with self._tx(write=False) as tx:
            return tx.value("SELECT COALESCE(MAX(version), 0) FROM schema_version")

    # ----- jobs -----

    def submit(
        self,
        job_id: str,
        owner: str,
        settings: dict[str, Any],
        seeds: Sequence[int],
        *,
        doc_ids: Sequence[str] | None = None,
        has_init_image: bool = False,
        has_video: bool = False,
        max_unfinished: int | None = None,
        sent_by: str | None = None,
        lease_s: float = 0.0,
    ) -> StoredJob:
        """Add a job of ``len(seeds)`` queued images (image ``i``: seed ``seeds[i]``, Document id
        ``doc_ids[i]``, a new random one by default). ``settings``: JSON-able. Raises
        ``TooManyUnfinished`` when ``owner`` already has ``max_unfinished`` unfinished jobs (checked
        under a lock on the owner, so two gateways cannot both let an extra one in), and
        ``QuotaExceeded`` while the queue drains or beyond ``quota`` (see the module's text).

        ``sent_by``: the images are being sent already, by that claimer (a caller's own request
        to the Flow, recorded as a job of its owner): they start ``waiting``, claimed by it for
        ``lease_s`` seconds, their Document ids recorded as sent, so no claimer sends them again.
        Raises ``AlreadySent`` when one of those ids was sent before."""
        now = self.clock()
        doc_ids = list(doc_ids) if doc_ids is not None else [uuid.uuid4().hex for _ in seeds]
        if len(doc_ids) != len(seeds):
            raise ValueError(f"{len(seeds)} seeds but {len(doc_ids)} Document ids")
        if sent_by is not None and len(set(doc_ids)) != len(doc_ids):
            raise AlreadySent("a request names one Document id twice")
        with self._tx() as tx:
            tx.run("INSERT INTO owners (owner) VALUES (?) ON CONFLICT (owner) DO NOTHING", (owner,))
            tx.value("SELECT owner FROM owners WHERE owner = ?" + self._for_update, (owner,))
            if max_unfinished is not None:
                count = self._unfinished(tx, owner)
                if count >= max_unfinished:
                    raise TooManyUnfinished(count, max_unfinished)
            self._admit(tx, owner, settings, len(seeds), now)
            tx.run(
                "INSERT INTO jobs (id, owner, created, changed, settings, has_init_image, has_video) "
                "VALUES (?, ?, ?, ?, ?, ?, ?)",
                (job_id, owner, now, now, json.dumps(settings), int(has_init_image), int(has_video)),
            )
            for idx, (seed, doc_id) in enumerate(zip(seeds, doc_ids, strict=True)):
                tx.run(
                    "INSERT INTO images (job_id, idx, seed, doc_id, created, updated) VALUES (?, ?, ?, ?, ?, ?)",
                    (job_id, idx, int(seed), doc_id, now, now),
                )
            if sent_by is not None:
                self._record_sent(tx, job_id, doc_ids, sent_by, now, now + lease_s)
            self._changed(tx, job_id)
        return StoredJob(job_id, owner, now, now, settings, has_init_image, has_video)

    @staticmethod
    def _record_sent(tx: _Tx, job_id: str, doc_ids: Sequence[str], claimer: str, now: float, until: float) -> None:
        """The new job's images are sent by ``claimer`` now (see ``submit``'s ``sent_by``)."""
        marks = ", ".join("?" for _ in doc_ids)
        if tx.value(f"SELECT COUNT(*) FROM sent_docs WHERE doc_id IN ({marks})", list(doc_ids)):
            raise AlreadySent("a Document id of this request was sent before: send the image under a new id")
        for idx, doc_id in enumerate(doc_ids):
            tx.run(
                "INSERT INTO sent_docs (doc_id, job_id, idx, claimer, sent) VALUES (?, ?, ?, ?, ?)",
                (doc_id, job_id, idx, claimer, now),
            )
        tx.run(
            "UPDATE images SET status = 'waiting', claimer = ?, lease_until = ?, claimed = ?, sent = ?, "
            "first_sent = ?, sent_doc_id = doc_id, attempt = 1 WHERE job_id = ?",
            (claimer, until, now, now, now, job_id),
        )

    def _admit(self, tx: _Tx, owner: str, settings: dict[str, Any], images: int, now: float) -> None:
        """Refuse the job (``QuotaExceeded``) while draining or beyond the quota; else count it in the day's usage."""
        if tx.value("SELECT draining FROM queue_state WHERE id = 1"):
            raise QuotaExceeded.draining()
        quota = self.quota
        if quota is None:
            return
        if quota.max_queued_images:
            queued = tx.value("SELECT COUNT(*) FROM images WHERE status = 'queued'")
            if queued + images > quota.max_queued_images:
                raise QuotaExceeded.queue_full(queued, images, quota.max_queued_images)
        pixel_steps = job_pixel_steps(settings, images)
        images *= int(settings.get("batch_size") or 1)  # the day's images: every image of each batch
        day = utc_day(now)
        row = tx.one("SELECT images, pixel_steps FROM usage WHERE owner = ? AND day = ?", (owner, day))
        used_images, used_pixel_steps = (row["images"], row["pixel_steps"]) if row else (0, 0.0)
        if owner not in quota.exempt:
            quota.check_day(now, used_images, images, used_pixel_steps, pixel_steps)
        tx.run(
            "INSERT INTO usage (owner, day, images, pixel_steps) VALUES (?, ?, ?, ?) ON CONFLICT (owner, day) "
            "DO UPDATE SET images = usage.images + excluded.images, "
            "pixel_steps = usage.pixel_steps + excluded.pixel_steps",
            (owner, day, images, pixel_steps),
        )

    def usage(self, owner: str, day: str | None = None) -> dict[str, Any]:
        """What ``owner`` asked for on ``day`` (UTC ``YYYY-MM-DD``, default today): ``images``, ``pixel_steps``."""
        day = day or utc_day(self.clock())
        with self._tx(write=False) as tx:
            row = tx.one("SELECT images, pixel_steps FROM usage WHERE owner = ? AND day = ?", (owner, day))
        return {"day": day, "images": row["images"] if row else 0, "pixel_steps": row["pixel_steps"] if row else 0.0}

    # ----- the operator's switches -----

    def switches(self) -> dict[str, bool]:
        """``paused`` (no image is claimed) and ``draining`` (no job is accepted either)."""
        with self._tx(write=False) as tx:
            row = tx.one("SELECT paused, draining FROM queue_state WHERE id = 1")
        return {"paused": bool(row and row["paused"]), "draining": bool(row and row["draining"])}

    def set_switches(self, paused: bool | None = None, draining: bool | None = None) -> dict[str, bool]:
        """Set ``paused`` and/or ``draining`` for every gateway of the store; the switches as they are now."""
        with self._tx() as tx:
            if paused is not None:
                tx.run("UPDATE queue_state SET paused = ? WHERE id = 1", (int(paused),))
            if draining is not None:
                tx.run("UPDATE queue_state SET draining = ? WHERE id = 1", (int(draining),))
        return self.switches()

    @staticmethod
    def _unfinished(tx: _Tx, owner: str) -> int:
        return tx.value(
            "SELECT COUNT(DISTINCT j.id) FROM jobs j JOIN images i ON i.job_id = j.id "
            f"WHERE j.owner = ? AND i.status IN {_UNFINISHED}",
            (owner,),
        )

    def unfinished_jobs(self, owner: str) -> int:
        """How many of ``owner``'s jobs have an image queued, waiting or running."""
        with self._tx(write=False) as tx:
            return self._unfinished(tx, owner)

    def get_job(self, job_id: str) -> StoredJob | None:
        """The job, or None."""
        with self._tx(write=False) as tx:
            row = tx.one("SELECT * FROM jobs WHERE id = ?", (job_id,))
        return _job(row) if row else None

    def jobs(self, owner: str | None = None, before: float | None = None, limit: int | None = None) -> list[StoredJob]:
        """Jobs newest first: ``owner``'s (everyone's when None), created before ``before``, at most ``limit``."""
        sql, params = "SELECT * FROM jobs WHERE 1 = 1", []
        if owner is not None:
            sql, params = sql + " AND owner = ?", [*params, owner]
        if before is not None:
            sql, params = sql + " AND created < ?", [*params, before]
        sql += " ORDER BY created DESC, id DESC"
        if limit is not None:
            sql, params = sql + " LIMIT ?", [*params, int(limit)]
        with self._tx(write=False) as tx:
            return [_job(row) for row in tx.rows(sql, params)]

    def images(self, job_id: str) -> list[StoredImage]:
        """The job's images, in order (empty for an unknown job)."""
        with self._tx(write=False) as tx:
            return [
                _image(r) for r in tx.rows(f"SELECT {_COLUMNS} FROM images WHERE job_id = ? ORDER BY idx", (job_id,))
            ]

    def images_of(self, job_ids: Sequence[str]) -> dict[str, list[StoredImage]]:
        """The images of several jobs at once, by job id, each list in order."""
        found: dict[str, list[StoredImage]] = {job_id: [] for job_id in job_ids}
        ids = list(found)
        with self._tx(write=False) as tx:
            for start in range(0, len(ids), 500):  # a bounded number of parameters per statement
                chunk = ids[start : start + 500]
                marks = ", ".join("?" for _ in chunk)
                for row in tx.rows(
                    f"SELECT {_COLUMNS} FROM images WHERE job_id IN ({marks}) ORDER BY job_id, idx", chunk
                ):
                    found[row["job_id"]].append(_image(row))
        return found

    def set_image(self, job_id: str, idx: int, **values: Any) -> bool:
        """Overwrite columns of one image as given (``StoredImage``'s fields but its key): for repairs
        and tests. Claims, sending and ends go through the methods above, which keep their rules."""
        names = [name for name in IMAGE_COLUMNS if name in values and name not in ("job_id", "idx")]
        if set(values) - set(names):
            raise ValueError(f"not image fields: {sorted(set(values) - set(names))}")
        if not names:
            return False
        sets = ", ".join(f"{name} = ?" for name in names)
        with self._tx() as tx:
            changed = tx.run(
                f"UPDATE images SET {sets} WHERE job_id = ? AND idx = ?", (*(values[n] for n in names), job_id, idx)
            )
            tx.run("UPDATE jobs SET changed = ? WHERE id = ?", (self.clock(), job_id))
            self._changed(tx, job_id)
        return changed > 0

    def image(self, doc_id: str) -> StoredImage | None:
        """The image whose current Document id is ``doc_id``, or None."""
        with self._tx(write=False) as tx:
            row = tx.one(f"SELECT {_COLUMNS} FROM images WHERE doc_id = ?", (doc_id,))
        return _image(row) if row else None

    def owner_of(self, doc_id: str) -> str | None:
        """The owner of the job whose image has, or was sent under, Document id ``doc_id``; else None."""
        with self._tx(write=False) as tx:
            return tx.value(
                "SELECT j.owner FROM jobs j WHERE j.id IN (SELECT job_id FROM images WHERE doc_id = ? "
                "UNION SELECT job_id FROM sent_docs WHERE doc_id = ?)",
                (doc_id, doc_id),
            )

    def delete_job(self, job_id: str) -> bool:
        """Remove the job and everything kept about it; False when there was none."""
        with self._tx() as tx:
            tx.run("DELETE FROM sent_docs WHERE job_id = ?", (job_id,))
            tx.run("DELETE FROM images WHERE job_id = ?", (job_id,))
            gone = tx.run("DELETE FROM jobs WHERE id = ?", (job_id,)) > 0
            if gone:
                self._changed(tx, job_id)
        return gone

    def doc_ids_of(self, job_id: str) -> list[str]:
        """Every Document id the job's images have, or were sent under (where their files are kept)."""
        with self._tx(write=False) as tx:
            rows = tx.rows(
                "SELECT doc_id FROM images WHERE job_id = ? UNION SELECT doc_id FROM sent_docs WHERE job_id = ?",
                (job_id, job_id),
            )
        return sorted(row["doc_id"] for row in rows)

    def prune(self, ttl_s: float) -> list[str]:
        """Remove finished jobs unchanged for ``ttl_s`` seconds; their ids."""
        cutoff = self.clock() - ttl_s
        with self._tx() as tx:
            gone = [
                row["id"]
                for row in tx.rows(
                    "SELECT id FROM jobs WHERE changed <= ? AND NOT EXISTS "
                    f"(SELECT 1 FROM images i WHERE i.job_id = jobs.id AND i.status IN {_UNFINISHED})",
                    (cutoff,),
                )
            ]
            for job_id in gone:
                tx.run("DELETE FROM jobs WHERE id = ?", (job_id,))
                self._changed(tx, job_id)
        return gone

    # ----- the queue -----

    def queue(self, limit: int | None = None) -> list[StoredImage]:
        """The images waiting for a claimer, in the order they will be claimed (if nothing else arrives)."""
        sql = f"SELECT * FROM ({_QUEUE}) q ORDER BY {_QUEUE_ORDER}"
        params: list[Any] = [self.clock()]
        if limit is not None:
            sql, params = sql + " LIMIT ?", [*params, int(limit)]
        with self._tx(write=False) as tx:
            return [_image(r) for r in tx.rows(sql, params)]

    def position(self, job_id: str) -> int | None:
        """For a job none of whose images has been claimed or sent: the place of its first image in the queue
        (1: the next to be claimed). None otherwise."""
        with self._tx(write=False) as tx:
            now = self.clock()
            taken = "status <> 'queued' OR (claimer IS NOT NULL AND lease_until > ?)"  # sent, or about to be
            if tx.value(f"SELECT COUNT(*) FROM images WHERE job_id = ? AND ({taken})", (job_id, now)):
                return None
            return tx.value(
                f"SELECT MIN(place) FROM (SELECT job_id, ROW_NUMBER() OVER (ORDER BY {_QUEUE_ORDER}) AS place "
                f"FROM ({_QUEUE}) q) r WHERE job_id = ?",
                (now, job_id),
            )

    def in_flight(self) -> int:
        """Images sent and not finished, plus images claimed with a live lease and not sent yet."""
        with self._tx(write=False) as tx:
            return tx.value(_IN_FLIGHT, (self.clock(),))

    def claim_next(self, claimer: str, lease_s: float, slots: int) -> StoredImage | None:
        """Claim the next image in the queue's order for ``claimer`` for ``lease_s`` seconds, if the
        images in flight are fewer than ``slots``; the image, or None (no free slot, nothing queued).
        Claims take turns (a lock on the queue's one row), so two claimers never both take the last slot.
        None while the queue is paused."""
        now = self.clock()
        with self._tx() as tx:
            state = tx.one("SELECT turn, paused FROM queue_state WHERE id = 1" + self._for_update)
            turn = state["turn"]
            if state["paused"] or tx.value(_IN_FLIGHT, (now,)) >= slots:
                return None
            row = tx.one(
                f"SELECT {_I_COLUMNS}, j.owner AS owner_ FROM images i JOIN jobs j ON j.id = i.job_id "
                f"JOIN owners o ON o.owner = j.owner WHERE {_CLAIMABLE} "
                f"ORDER BY o.last_turn, i.created, j.owner, i.job_id, i.idx LIMIT 1{self._skip_locked}",
                (now,),
            )
            if row is None:
                return None
            tx.run("UPDATE queue_state SET turn = ? WHERE id = 1", (turn + 1,))
            tx.run(
                "UPDATE owners SET last_turn = ?, started = started + 1, last_start = ? WHERE owner = ?",
                (turn + 1, now, row["owner_"]),
            )
            tx.run(
                "UPDATE images SET claimer = ?, lease_until = ?, claimed = ?, updated = ? WHERE job_id = ? AND idx = ?",
                (claimer, now + lease_s, now, now, row["job_id"], row["idx"]),
            )
        image = _image(row)
        image.claimer, image.lease_until, image.claimed, image.updated = claimer, now + lease_s, now, now
        return image

    def mark_sent(self, doc_id: str, claimer: str) -> StoredImage | None:
        """Record that ``claimer`` sends its claimed image under ``doc_id`` now (status waiting,
        ``attempt`` + 1); the image, or None when it is no longer ``claimer``'s to send (cancelled,
        taken over). Raises ``AlreadySent`` when ``doc_id`` was ever sent before."""
        now = self.clock()
        with self._tx() as tx:
            row = tx.one(f"SELECT {_COLUMNS} FROM images WHERE doc_id = ?" + self._for_update, (doc_id,))
            if row is None or row["status"] != JobStatus.QUEUED or row["claimer"] != claimer:
                return None
            if tx.value("SELECT COUNT(*) FROM sent_docs WHERE doc_id = ?", (doc_id,)):
                raise AlreadySent(f"Document {doc_id} was already sent: an image goes again under a new id")
            tx.run(
                "INSERT INTO sent_docs (doc_id, job_id, idx, claimer, sent) VALUES (?, ?, ?, ?, ?)",
                (doc_id, row["job_id"], row["idx"], claimer, now),
            )
            tx.run(
                "UPDATE images SET status = 'waiting', sent = ?, first_sent = COALESCE(first_sent, ?), "
                "sent_doc_id = doc_id, attempt = attempt + 1, updated = ? WHERE doc_id = ?",
                (now, now, now, doc_id),
            )
            self._changed(tx, row["job_id"])
        image = _image(row)
        image.status, image.sent, image.first_sent = JobStatus.WAITING.value, now, image.first_sent or now
        image.sent_doc_id, image.attempt, image.updated = doc_id, image.attempt + 1, now
        return image

    def renew(self, claimer: str, lease_s: float) -> int:
        """Extend every unfinished claim of ``claimer`` to ``lease_s`` seconds from now; how many."""
        now = self.clock()
        with self._tx() as tx:
            return tx.run(
                f"UPDATE images SET lease_until = ? WHERE claimer = ? AND status IN {_UNFINISHED}",
                (now + lease_s, claimer),
            )

    def claimed_by(self, claimer: str) -> list[StoredImage]:
        """The unfinished images ``claimer`` holds."""
        with self._tx(write=False) as tx:
            rows = tx.rows(
                f"SELECT {_COLUMNS} FROM images WHERE claimer = ? AND status IN {_UNFINISHED} ORDER BY job_id, idx",
                (claimer,),
            )
        return [_image(r) for r in rows]

    def expire(self, claimer: str, lease_s: float) -> list[StoredImage]:
        """Settle the claims whose lease ran out (their claimer died or hung): images not sent yet go
        back to the queue; images already sent (also any that nobody holds) pass to ``claimer``
        (lease ``lease_s``) and are returned, for it to decide: watch them (a sampler may still be
        making them) or ``requeue`` them under a new Document id. Each is handed to one caller only."""
        now = self.clock()
        with self._tx() as tx:
            rows = tx.rows(
                f"SELECT {_COLUMNS} FROM images WHERE (claimer IS NULL OR lease_until <= ?) "
                f"AND status IN {_SENT} ORDER BY job_id, idx" + self._for_update,
                (now,),
            )
            for row in rows:
                tx.run(
                    "UPDATE images SET claimer = ?, lease_until = ?, updated = ? WHERE job_id = ? AND idx = ?",
                    (claimer, now + lease_s, now, row["job_id"], row["idx"]),
                )
            tx.run(
                "UPDATE images SET claimer = NULL, lease_until = NULL, claimed = NULL, updated = ? "
                "WHERE status = 'queued' AND claimer IS NOT NULL AND lease_until <= ?",
                (now, now),
            )
        images = [_image(r) for r in rows]
        for image in images:
            image.claimer, image.lease_until = claimer, now + lease_s
        return images

    def requeue(self, doc_id: str, new_doc_id: str | None = None, interrupted: bool = False) -> str | None:
        """Put an unfinished image back in the queue under a new Document id (``new_doc_id``, or a
        random one), its place kept; the new id, or None when no unfinished image has ``doc_id``.
        ``interrupted``: a process of the Flow died under it (its ``interrupted`` count goes up by one)."""
        new_doc_id = new_doc_id or uuid.uuid4().hex
        now = self.clock()
        with self._tx() as tx:
            changed = tx.run(
                "UPDATE images SET doc_id = ?, status = 'queued', claimer = NULL, lease_until = NULL, claimed = NULL, "
                f"sent = NULL, interrupted = interrupted + ?, updated = ? WHERE doc_id = ? AND status IN {_UNFINISHED}",
                (new_doc_id, int(interrupted), now, doc_id),
            )
            if changed:
                self._touch(tx, doc_id=new_doc_id)
                self._changed_doc(tx, new_doc_id)
        return new_doc_id if changed else None

    # ----- progress, the end, cancel -----

    def update_progress(self, doc_id: str, **state: Any) -> bool:
        """Record an unfinished image's progress: any of ``status`` (waiting or running), ``step``,
        ``total``, ``started``, ``error``, ``error_code``, ``frame_step``, ``frame``, ``frames``, ``frames_done``,
        ``run_step``, ``run_total``. False when no unfinished image has ``doc_id``."""
        unknown = set(state) - set(_PROGRESS_FIELDS)
        if unknown:
            raise ValueError(f"not progress fields: {sorted(unknown)}")
        if "status" in state and JobStatus(state["status"]).finished:
            raise ValueError("a finished image is recorded with finish(), not update_progress()")
        names = [name for name in _PROGRESS_FIELDS if name in state]
        values = [JobStatus(v).value if n == "status" else v for n, v in ((n, state[n]) for n in names)]
        sets = "".join(f"{name} = ?, " for name in names)
        with self._tx() as tx:
            changed = tx.run(
                f"UPDATE images SET {sets}updated = ? WHERE doc_id = ? AND status IN {_UNFINISHED}",
                (*values, self.clock(), doc_id),
            )
            if changed:
                self._changed_doc(tx, doc_id)
        return changed > 0

    def finish(
        self,
        doc_id: str,
        status: str,
        step: int | None = None,
        total: int | None = None,
        error_code: str | None = None,
        error: str | None = None,
        error_setting: str | None = None,
    ) -> bool:
        """End an unfinished image as ``status`` (done, failed, cancelled, ...) and release its claim;
        ``step``/``total`` replace the last known when given. False when it had already ended (the
        first end stays) or no image has ``doc_id``."""
        if not JobStatus(status).finished:
            raise ValueError(f"{status!r} is not a finished status")
        now = self.clock()
        with self._tx() as tx:
            ended = tx.run(
                "UPDATE images SET status = ?, step = COALESCE(?, step), total = COALESCE(?, total), error_code = ?, "
                "error = ?, error_setting = ?, finished = ?, updated = ?, claimer = NULL, lease_until = NULL "
                f"WHERE doc_id = ? AND status IN {_UNFINISHED}",
                (JobStatus(status).value, step, total, error_code, error, error_setting, now, now, doc_id),
            )
            if ended:
                self._touch(tx, doc_id=doc_id)
                self._changed_doc(tx, doc_id)
        return ended > 0

    def _touch(self, tx: _Tx, doc_id: str) -> None:
        tx.run(
            "UPDATE jobs SET changed = ? WHERE id = (SELECT job_id FROM images WHERE doc_id = ?)",
            (self.clock(), doc_id),
        )

    def request_cancel(self, job_id: str, reason: str = JobStatus.CANCELLED.value) -> list[str]:
        """Cancel a job: its queued (and claimed, unsent) images end as cancelled at once; its sent
        ones are asked to stop (``reason``: cancelled, shutdown or abandoned; the first reason asked
        stays). The Document ids of those sent ones, for the caller to tell the Flow."""
        reason = JobStatus(reason).value
        now = self.clock()
        with self._tx() as tx:
            tx.run("UPDATE jobs SET cancelled = 1, changed = ? WHERE id = ?", (now, job_id))
            tx.run(
                "UPDATE images SET status = 'cancelled', finished = ?, updated = ?, claimer = NULL, lease_until = NULL "
                "WHERE job_id = ? AND status = 'queued'",
                (now, now, job_id),
            )
            tx.run(
                "UPDATE images SET cancel_reason = COALESCE(cancel_reason, ?), updated = ? "
                f"WHERE job_id = ? AND status IN {_SENT}",
                (reason, now, job_id),
            )
            rows = tx.rows(f"SELECT doc_id FROM images WHERE job_id = ? AND status IN {_SENT} ORDER BY idx", (job_id,))
            self._changed(tx, job_id)
        return [row["doc_id"] for row in rows]

    def cancel_reason(self, doc_id: str) -> str | None:
        """Why the image was asked to stop (cancelled, shutdown, abandoned), or None."""
        with self._tx(write=False) as tx:
            return tx.value("SELECT cancel_reason FROM images WHERE doc_id = ?", (doc_id,))

    # ----- tokens -----

    def add_token(self, token: str, label: str | None = None) -> str:
        """Accept ``token`` (again, if it was revoked); kept as its SHA-256 only. Its owner name
        (``tokens.fingerprint``). Raises ``ValueError`` for a token shorter than 16 characters."""
        if len(token) < 16 or not token.isprintable() or " " in token:
            raise ValueError("a token is at least 16 printable characters without spaces")
        owner = fingerprint(token)
        with self._tx() as tx:
            tx.run(
                "INSERT INTO tokens (hash, owner, label, created) VALUES (?, ?, ?, ?) ON CONFLICT (hash) "
                "DO UPDATE SET revoked = NULL, label = COALESCE(excluded.label, tokens.label)",
                (token_hash(token), owner, label, self.clock()),
            )
        return owner

    def revoke_token(self, token_or_owner: str) -> int:
        """Stop accepting a token, named by itself or by its owner name; how many were revoked."""
        with self._tx() as tx:
            return tx.run(
                "UPDATE tokens SET revoked = ? WHERE (hash = ? OR owner = ?) AND revoked IS NULL",
                (self.clock(), token_hash(token_or_owner), token_or_owner),
            )

    def check_token(self, token: str) -> str | None:
        """The owner name of an accepted token, None for one unknown or revoked. The token is looked
        up by its hash, so its text is never compared (nor kept)."""
        with self._tx(write=False) as tx:
            return tx.value("SELECT owner FROM tokens WHERE hash = ? AND revoked IS NULL", (token_hash(token),))

    def token_status(self, token: str) -> dict[str, Any] | None:
        """What the store knows of ``token``: its ``owner`` and ``revoked`` (None while accepted), or None."""
        with self._tx(write=False) as tx:
            return tx.one("SELECT owner, revoked FROM tokens WHERE hash = ?", (token_hash(token),))

    def has_tokens(self) -> bool:
        """Whether the store accepts any token."""
        with self._tx(write=False) as tx:
            return tx.value("SELECT COUNT(*) FROM tokens WHERE revoked IS NULL") > 0

    def tokens(self) -> list[dict[str, Any]]:
        """Every token the store knows, oldest first: owner, label, created, revoked (None if accepted)."""
        with self._tx(write=False) as tx:
            return tx.rows("SELECT owner, label, created, revoked FROM tokens ORDER BY created, owner")
