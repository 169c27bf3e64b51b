"""Programs some tests need beyond the Python packages: each is found here, and a test without it
is skipped with the command that installs it (Debian and Ubuntu package names).

In a test or a fixture call ``need_chromium()`` (its path, or a skip); for a whole module use the
marks, e.g. ``pytestmark = needs.chromium_mark``.
"""

from __future__ import annotations

import glob
import os
import shutil
from pathlib import Path

import pytest

__all__ = [
    "HOW_TO_GET",
    "chromium_mark",
    "find_chromium",
    "find_nginx",
    "find_postgres",
    "need_chromium",
    "need_nginx",
    "need_postgres",
    "nginx_mark",
    "postgres_mark",
]

HOW_TO_GET = {
    "chromium": "chromium is not installed: sudo apt-get install chromium (Playwright drives that browser)",
    "nginx": "nginx is not installed: sudo apt-get install nginx-light",
    "postgres": "PostgreSQL is not installed: sudo apt-get install postgresql (the tests start their own server "
    "with its initdb and pg_ctl)",
}


def _first_file(candidates: list[str | None]) -> str | None:
    return next((path for path in candidates if path and os.path.isfile(path)), None)


def find_chromium() -> str | None:
    """The chromium executable (on ``PATH`` or Debian's ``/usr/bin/chromium``), or None."""
    return _first_file([shutil.which("chromium"), "/usr/bin/chromium"])


def find_nginx() -> str | None:
    """The nginx executable (on ``PATH`` or ``/usr/sbin/nginx``, which is not on a user's ``PATH``), or None."""
    return _first_file([shutil.which("nginx"), "/usr/sbin/nginx"])


def find_postgres() -> Path | None:
    """The folder of PostgreSQL's ``initdb`` and ``pg_ctl`` (on ``PATH``, or Debian's
    ``/usr/lib/postgresql/VERSION/bin``, the newest version), or None."""
    initdb = shutil.which("initdb")
    if initdb and shutil.which("pg_ctl"):
        return Path(initdb).resolve().parent
    versions = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/initdb"),
        key=lambda p: [int(n) for n in Path(p).parts[-3].split(".") if n.isdigit()],
    )
    folders = [Path(p).parent for p in versions if (Path(p).parent / "pg_ctl").is_file()]
    return folders[-1] if folders else None


def _need(found, what: str):
    if found is None:
        pytest.skip(HOW_TO_GET[what])
    return found


def need_chromium() -> str:
    """chromium's path; skips the test (saying how to install it) when it is not installed."""
    return _need(find_chromium(), "chromium")


def need_nginx() -> str:
    """nginx's path; skips the test (saying how to install it) when it is not installed."""
    return _need(find_nginx(), "nginx")


def need_postgres() -> Path:
    """The folder of PostgreSQL's programs; skips the test (saying how to install it) without them."""
    return _need(find_postgres(), "postgres")


# the same, for a whole module (pytestmark) or a test class
chromium_mark = pytest.mark.skipif(find_chromium() is None, reason=HOW_TO_GET["chromium"])
nginx_mark = pytest.mark.skipif(find_nginx() is None, reason=HOW_TO_GET["nginx"])
postgres_mark = pytest.mark.skipif(find_postgres() is None, reason=HOW_TO_GET["postgres"])
