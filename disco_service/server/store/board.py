"""The executors' job board in the state store: each image's progress, latest frame and stop request.

Jina spreads requests over replicas round-robin, so the replica asked for an image's progress is
often not the one making it; every replica therefore reads and writes the board in the store
(``board``: one row per Document id, its state as JSON; ``board_frames``: its latest frame and an
animation's finished frames, as PNG bytes). With PostgreSQL no folder is shared between the
executors' hosts. Frames are kept as small blobs, not files, for that reason: a latest frame is
replaced in place at each shown step and every row of an image goes with it when it is forgotten.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from contextlib import AbstractContextManager
from typing import Any

_LOG = logging.getLogger("disco.service")


def _state(doc_id: str, text: Any) -> dict[str, Any] | None:
    """A board row's state, or None: a row whose state is not a JSON object (any content) is skipped
    with a line in the log naming it, so it never stops a reader (the supervisor at a restart)."""
    if not text:
        return None
    try:
        state = json.loads(text)
    except (ValueError, TypeError, RecursionError) as exc:
        _LOG.warning("skipped the job board's state of %s: %s", doc_id, str(exc)[:200])
        return None
    if not isinstance(state, dict):
        _LOG.warning("skipped the job board's state of %s: not an object", doc_id)
        return None
    return state


__all__ = ["BoardRecords", "LATEST_FRAME"]

LATEST_FRAME = -1  # board_frames.frame of the latest frame; an animation's finished frame n is n >= 0


class BoardRecords:
    """The board's reads and writes, mixed into ``JobStore`` (which provides ``_tx``, ``clock`` and
    the dialect's ``_for_update``). Times are seconds since the epoch from the store's clock."""

    clock: Any
    _for_update = ""

    def _tx(self, write: bool = True) -> AbstractContextManager[Any]:
        raise NotImplementedError

    def _ensure_row(self, tx: Any, doc_id: str, now: float) -> dict[str, Any]:
        """The image's board row, made if missing and locked until the transaction ends."""
        tx.run(
            "INSERT INTO board (doc_id, touched) VALUES (?, ?) ON CONFLICT (doc_id) DO NOTHING",
            (doc_id, now),
        )
        return tx.one("SELECT state, seen, stop_reason FROM board WHERE doc_id = ?" + self._for_update, (doc_id,))

    def board_update(self, doc_id: str, state: dict[str, Any], frame_png: bytes | None = None) -> dict[str, Any]:
        """Merge ``state`` (JSON-able) into the image's state, replacing its latest frame with
        ``frame_png`` when given, in one transaction; the merged state."""
        now = self.clock()
        with self._tx() as tx:
            if frame_png is not None:
                self._put_frame(tx, doc_id, LATEST_FRAME, frame_png, now)
            row = self._ensure_row(tx, doc_id, now)
            merged = {**(_state(doc_id, row["state"]) or {}), **state}
            tx.run(
                "UPDATE board SET state = ?, status = ?, touched = ? WHERE doc_id = ?",
                (json.dumps(merged), merged.get("status"), now, doc_id),
            )
        return merged

    def board_read(self, doc_id: str) -> dict[str, Any] | None:
        """The image's state, or None when nothing was written (a stop request or a poll alone is no state)."""
        with self._tx(write=False) as tx:
            text = tx.value("SELECT state FROM board WHERE doc_id = ?", (doc_id,))
        return _state(doc_id, text)

    def _put_frame(self, tx: Any, doc_id: str, frame: int, png: bytes, now: float) -> None:
        tx.run(
            "INSERT INTO board_frames (doc_id, frame, png, touched) VALUES (?, ?, ?, ?) "
            "ON CONFLICT (doc_id, frame) DO UPDATE SET png = excluded.png, touched = excluded.touched",
            (doc_id, frame, png, now),
        )

    def board_put_frame(self, doc_id: str, frame: int, png: bytes) -> None:
        """Keep ``png`` as the image's frame ``frame`` (``LATEST_FRAME``, or an animation's finished frame)."""
        with self._tx() as tx:
            self._put_frame(tx, doc_id, frame, png, self.clock())

    def board_frame(self, doc_id: str, frame: int) -> bytes | None:
        """The PNG bytes of the image's frame ``frame``, or None."""
        with self._tx(write=False) as tx:
            png = tx.value("SELECT png FROM board_frames WHERE doc_id = ? AND frame = ?", (doc_id, frame))
        return bytes(png) if png is not None else None

    def board_seen(self, doc_id: str) -> None:
        """The image's client asked about it just now."""
        now = self.clock()
        with self._tx() as tx:
            tx.run(
                "INSERT INTO board (doc_id, seen, touched) VALUES (?, ?, ?) "
                "ON CONFLICT (doc_id) DO UPDATE SET seen = excluded.seen, touched = excluded.touched",
                (doc_id, now, now),
            )

    def board_last_seen(self, doc_id: str) -> float | None:
        """When the image's client last asked about it, or None."""
        with self._tx(write=False) as tx:
            return tx.value("SELECT seen FROM board WHERE doc_id = ?", (doc_id,))

    def board_cancel(self, doc_id: str, reason: str) -> str:
        """Ask the image to stop for ``reason``; the first reason asked stays. The reason that stays."""
        now = self.clock()
        with self._tx() as tx:
            tx.run(
                "INSERT INTO board (doc_id, stop_reason, touched) VALUES (?, ?, ?) ON CONFLICT (doc_id) "
                "DO UPDATE SET stop_reason = COALESCE(board.stop_reason, excluded.stop_reason), touched = ?",
                (doc_id, reason, now, now),
            )
            return tx.value("SELECT stop_reason FROM board WHERE doc_id = ?", (doc_id,))

    def board_stop_reason(self, doc_id: str) -> str | None:
        """Why the image was asked to stop, or None."""
        with self._tx(write=False) as tx:
            return tx.value("SELECT stop_reason FROM board WHERE doc_id = ?", (doc_id,))

    def board_with_status(self, status: str) -> Iterator[tuple[str, dict[str, Any]]]:
        """(Document id, state) of every image whose state's status is ``status``."""
        with self._tx(write=False) as tx:
            rows = tx.rows("SELECT doc_id, state FROM board WHERE status = ? ORDER BY doc_id", (status,))
        found = ((row["doc_id"], _state(row["doc_id"], row["state"])) for row in rows)
        return ((doc_id, state) for doc_id, state in found if state is not None)

    def board_forget(self, doc_id: str, older_than_s: float = 0) -> bool:
        """Remove the image's rows when untouched for ``older_than_s`` seconds; whether they went."""
        cutoff = self.clock() - older_than_s
        with self._tx() as tx:
            gone = tx.run("DELETE FROM board WHERE doc_id = ? AND touched <= ?", (doc_id, cutoff))
            if gone or not tx.value("SELECT COUNT(*) FROM board WHERE doc_id = ?", (doc_id,)):
                tx.run("DELETE FROM board_frames WHERE doc_id = ?", (doc_id,))
        return gone > 0

    def board_sweep(self, older_than_s: float) -> int:
        """Remove the rows of images untouched for ``older_than_s`` seconds (their clients never
        collected them), and frames older than that whose image has no row; how many images went."""
        cutoff = self.clock() - older_than_s
        with self._tx() as tx:
            gone = tx.run("DELETE FROM board WHERE touched <= ?", (cutoff,))
            tx.run(
                "DELETE FROM board_frames WHERE touched <= ? AND NOT EXISTS "
                "(SELECT 1 FROM board b WHERE b.doc_id = board_frames.doc_id)",
                (cutoff,),
            )
        return gone

    def board_count(self) -> int:
        """How many images the board holds rows for."""
        with self._tx(write=False) as tx:
            return tx.value("SELECT COUNT(*) FROM board")
