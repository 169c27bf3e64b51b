"""How the suite shares out among pytest-xdist's workers (``-n``): by group, one group per worker.

A test's group (``worker_group``) is its file's, so module fixtures (a browser page, a built CLIP,
a served Flow of one file) are built once, except that every test of a session-wide program (each
of the two served Flows, the PostgreSQL cluster) joins that program's group, so each starts once.

The groups depend on the fixtures a test asks for, which only the workers know (they collect; the
controller that shares out does not), so each worker writes its collection's groups to a folder
the controller named (``GROUPS_DIR``), and the controller's scheduler (``GroupScheduling``) reads
them. xdist's own ``--dist loadgroup`` cannot be used: it renames ``item._nodeid``, which pytest 9
no longer reads.
"""

from __future__ import annotations

import atexit
import json
import os
import shutil
import tempfile
from pathlib import Path

import pytest
from xdist.scheduler import LoadScopeScheduling

__all__ = ["GROUPS_DIR", "SHARED_PROGRAMS", "GroupScheduling", "name_groups_folder", "worker_group", "write_groups"]

GROUPS_DIR = "DISCO_TEST_GROUPS_DIR"  # the environment variable naming the folder, inherited by the workers
# fixtures of a session-wide program, and the group of the tests that ask for one
SHARED_PROGRAMS = {"served_flow": "served", "served_http": "served", "token_flow": "token_flow", "postgres": "postgres"}


def worker_group(item: pytest.Item) -> str:
    """``item``'s group: its program's (``SHARED_PROGRAMS``), else its file's path."""
    names = set(getattr(item, "fixturenames", ()))
    for name, group in SHARED_PROGRAMS.items():
        if name in names:
            return group
    return item.nodeid.split("::")[0]


def name_groups_folder() -> None:
    """In the controller, before the workers start: a fresh folder for their groups, removed when
    the run ends."""
    folder = tempfile.mkdtemp(prefix="disco-test-groups-")
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    os.environ[GROUPS_DIR] = folder


def write_groups(items: list[pytest.Item]) -> None:
    """In a worker: ``{nodeid: group}`` of its collection, written whole (the controller may read it
    as soon as the collection is reported)."""
    folder, worker = os.environ.get(GROUPS_DIR), os.environ.get("PYTEST_XDIST_WORKER")
    if not folder or not worker:
        return
    path = Path(folder) / f"{worker}.json"
    path.with_suffix(".tmp").write_text(json.dumps({item.nodeid: worker_group(item) for item in items}))
    path.with_suffix(".tmp").replace(path)


class GroupScheduling(LoadScopeScheduling):
    """xdist's scheduling by scope, with the workers' groups as the scopes."""

    def _split_scope(self, nodeid: str) -> str:
        if not hasattr(self, "_groups"):
            self._groups: dict[str, str] = {}
            for path in Path(os.environ.get(GROUPS_DIR, "/nonexistent")).glob("*.json"):
                self._groups.update(json.loads(path.read_text()))
        return self._groups.get(nodeid) or nodeid.split("::")[0]
