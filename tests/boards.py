"""What the executors' job boards hold, read by tests from the outside as a person would with sqlite3.

Each server keeps its board in its own SQLite store, ``DISCO_STATE_DIR/<port>/jobs.sqlite3``; a
test that does not know which port a server got reads them all.
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

__all__ = ["board_states"]


def board_states(state_dir: str | Path) -> dict[str, dict]:
    """The state of every image on the boards of the stores under ``state_dir``, by Document id
    (stores not made yet, or not yet migrated, hold none)."""
    found: dict[str, dict] = {}
    for path in sorted(Path(state_dir).glob("*/jobs.sqlite3")):
        try:
            with sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10) as conn:
                rows = conn.execute("SELECT doc_id, state FROM board WHERE state IS NOT NULL").fetchall()
        except sqlite3.OperationalError:  # no board table yet
            continue
        found.update((doc_id, json.loads(state)) for doc_id, state in rows)
    return found
