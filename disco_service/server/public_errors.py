"""What a caller of a shared server is told when something failed inside it.

A message from the Flow may carry the server's internals: a Python traceback, the folders it keeps
files in, how an operator would fill them. A caller gets the failure without those
(``public_message``); the full text goes to the server's log (``LOG``) only. The local client
(``client.py`` with a Flow of its own) still shows the full text: there the caller is the operator.
"""

from __future__ import annotations

import logging
import re
import sys
import tempfile
from functools import cache
from pathlib import Path

from disco_service import config

__all__ = ["LOG", "public_message", "SERVER_PATH"]

LOG = logging.getLogger("disco.service")
SERVER_PATH = "<server path>"
# a path inside one of the server's own folders: the code, Python's, the temp folder, the home
# folder and the configured model, result and state folders (a route such as ``/results/ID`` or a
# path the caller sent is not the server's, and stays)
_PATH_TAIL = r"[\w.@+~/-]*"
_MODEL_FILE = re.compile(r"cannot get model file (\S+)")
_TRACEBACK = "Traceback (most recent call last)"


@cache
def _server_paths() -> re.Pattern[str]:
    folders = {Path(__file__).resolve().parents[2], Path(sys.prefix), Path(sys.base_prefix)}
    folders |= {Path(tempfile.gettempdir()), Path.home()}
    try:
        cfg = config.load()
        folders |= {cfg.model_dir, cfg.results_dir, cfg.state_dir}
    except config.ConfigError:  # the process reports that itself; the defaults above still count
        pass
    names = sorted({str(f.expanduser()) for f in folders if str(f) not in ("/", ".")}, key=len, reverse=True)
    return re.compile("|".join(re.escape(name) + _PATH_TAIL for name in names))


def public_message(text: str | None, log: bool = False) -> str | None:
    """``text`` as a caller may see it: a missing model file named without the server's folders or
    how to fill them, a traceback as its last line, every path in the server's own folders as ``SERVER_PATH``. None
    stays None. With ``log``, the full text is logged (``LOG``) when something was left out (once
    per failure: views shown again and again pass ``log=False``)."""
    if not text:
        return text
    shown = str(text)
    if model := _MODEL_FILE.search(shown):
        shown = f"WeightsUnavailable: the model file {model[1]} is not available on this server (ask its operator)"
    elif _TRACEBACK in shown:
        lines = [line.strip() for line in shown.splitlines() if line.strip()]
        shown = lines[-1] if lines else "an error inside the server"
    shown = _server_paths().sub(SERVER_PATH, shown)
    if log and shown != text:
        LOG.warning("a failure shown to its caller without the server's internals; in full: %s", text)
    return shown
