"""The state store's schema: numbered migrations, each a list of SQL statements.

The statements are written once for SQLite and PostgreSQL: ``DOUBLE PRECISION`` (times, seconds
since the epoch), ``BIGINT`` and ``TEXT`` mean the same in both, flags are integers 0/1 and settings
are JSON text. A store at version ``n`` runs the steps above ``n`` in one transaction and records
each in ``schema_version``; steps are never edited once released, only new ones appended.
"""

from __future__ import annotations

__all__ = ["MIGRATIONS", "SCHEMA_VERSION"]

_JOBS = [
    """CREATE TABLE jobs (
        id TEXT PRIMARY KEY,
        owner TEXT NOT NULL,
        created DOUBLE PRECISION NOT NULL,
        changed DOUBLE PRECISION NOT NULL,
        settings TEXT NOT NULL,
        has_init_image INTEGER NOT NULL DEFAULT 0,
        has_video INTEGER NOT NULL DEFAULT 0,
        cancelled INTEGER NOT NULL DEFAULT 0
    )""",
    "CREATE INDEX jobs_by_owner ON jobs (owner, created)",
    # One row per image of a job. ``doc_id`` is the Document id of its next (or current) sending;
    # ``claimer``/``lease_until``: the gateway that owns it while in flight; ``sent_doc_id``: the id
    # it was last sent under (ids ever sent are also kept in sent_docs, so none goes twice).
    """CREATE TABLE images (
        job_id TEXT NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
        idx INTEGER NOT NULL,
        seed BIGINT NOT NULL,
        doc_id TEXT NOT NULL UNIQUE,
        status TEXT NOT NULL DEFAULT 'queued',
        step INTEGER,
        total INTEGER,
        error_code TEXT,
        error TEXT,
        error_setting TEXT,
        created DOUBLE PRECISION NOT NULL,
        claimed DOUBLE PRECISION,
        sent DOUBLE PRECISION,
        first_sent DOUBLE PRECISION,
        started DOUBLE PRECISION,
        finished DOUBLE PRECISION,
        updated DOUBLE PRECISION,
        claimer TEXT,
        lease_until DOUBLE PRECISION,
        sent_doc_id TEXT,
        attempt INTEGER NOT NULL DEFAULT 0,
        cancel_reason TEXT,
        frame_step INTEGER,
        frame INTEGER,
        frames INTEGER,
        frames_done INTEGER,
        run_step INTEGER,
        run_total INTEGER,
        PRIMARY KEY (job_id, idx)
    )""",
    "CREATE INDEX images_by_status ON images (status)",
    "CREATE INDEX images_by_claimer ON images (claimer)",
    """CREATE TABLE sent_docs (
        doc_id TEXT PRIMARY KEY,
        job_id TEXT NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
        idx INTEGER NOT NULL,
        claimer TEXT NOT NULL,
        sent DOUBLE PRECISION NOT NULL
    )""",
    # Fairness: each claim gives its owner the next turn number; the owner with the oldest turn goes next.
    """CREATE TABLE owners (
        owner TEXT PRIMARY KEY,
        last_turn BIGINT NOT NULL DEFAULT 0,
        started BIGINT NOT NULL DEFAULT 0,
        last_start DOUBLE PRECISION
    )""",
    # One row: the turn counter; claimers lock it so that they count the images in flight one at a time.
    """CREATE TABLE queue_state (
        id INTEGER PRIMARY KEY CHECK (id = 1),
        turn BIGINT NOT NULL DEFAULT 0
    )""",
    "INSERT INTO queue_state (id, turn) VALUES (1, 0)",
]

_TOKENS = [
    # Tokens are kept as their SHA-256 (hex); ``owner`` is the fingerprint their jobs are kept under.
    """CREATE TABLE tokens (
        hash TEXT PRIMARY KEY,
        owner TEXT NOT NULL,
        label TEXT,
        created DOUBLE PRECISION NOT NULL,
        revoked DOUBLE PRECISION
    )""",
]

_OPERATOR = [
    # The operator's switches, shared by every gateway: paused (no image is claimed; those running
    # finish), draining (no job is accepted either).
    "ALTER TABLE queue_state ADD COLUMN paused INTEGER NOT NULL DEFAULT 0",
    "ALTER TABLE queue_state ADD COLUMN draining INTEGER NOT NULL DEFAULT 0",
    # What each owner asked for per day (UTC, ``YYYY-MM-DD``): images and pixel-steps (width x height
    # x sampled steps, summed over the images), counted when a job is accepted; deleting or
    # cancelling a job gives nothing back.
    """CREATE TABLE usage (
        owner TEXT NOT NULL,
        day TEXT NOT NULL,
        images BIGINT NOT NULL DEFAULT 0,
        pixel_steps DOUBLE PRECISION NOT NULL DEFAULT 0,
        PRIMARY KEY (owner, day)
    )""",
]


_BOARD = [
    # The executors' job board, by Document id: ``state`` is the image's progress as JSON (its
    # ``status`` copied out to find the running ones), ``seen`` when its client last asked about it,
    # ``stop_reason`` why it was asked to stop (the first reason stays), ``touched`` its last change.
    """CREATE TABLE board (
        doc_id TEXT PRIMARY KEY,
        state TEXT,
        status TEXT,
        seen DOUBLE PRECISION,
        stop_reason TEXT,
        touched DOUBLE PRECISION NOT NULL
    )""",
    "CREATE INDEX board_by_status ON board (status)",
    "CREATE INDEX board_by_touched ON board (touched)",
    # PNG bytes: frame -1 is the latest frame, n >= 0 an animation's finished frame n. BYTEA is
    # PostgreSQL's bytes; SQLite keeps bytes as they come whatever the column's declared type.
    """CREATE TABLE board_frames (
        doc_id TEXT NOT NULL,
        frame INTEGER NOT NULL,
        png BYTEA NOT NULL,
        touched DOUBLE PRECISION NOT NULL,
        PRIMARY KEY (doc_id, frame)
    )""",
]


_INTERRUPTIONS = [
    # How many times a process of the Flow died (or the Flow was restarted) while the image was being
    # made: the queue sends it again under a new id up to a limit, then fails it.
    "ALTER TABLE images ADD COLUMN interrupted INTEGER NOT NULL DEFAULT 0",
]

MIGRATIONS: list[list[str]] = [_JOBS, _TOKENS, _OPERATOR, _BOARD, _INTERRUPTIONS]  # step n is MIGRATIONS[n - 1]
SCHEMA_VERSION = len(MIGRATIONS)
