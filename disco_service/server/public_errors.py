"""What a caller of a shared server is told when something failed inside it.

A message from the Flow may carry the server's internals: a Python traceback, the folders it keeps
files in, how an operator would fill them. A caller gets the failure without those
(``public_message``); the full text goes to the server's log (``LOG``) only. The local client
(``client.py`` with a Flow of its own) still shows the full text: there the caller is the operator.
"""

from __future__ import annotations

import logging
import re

__all__ = ["LOG", "public_message", "SERVER_PATH"]

LOG = logging.getLogger("disco.service")
SERVER_PATH = "<server path>"
# an absolute path: a slash that does not follow a letter, a dot, a colon or a slash (so not a URL's)
_PATH = re.compile(r"(?<![\w.:/~-])/(?:[\w.@+~-]+/)*[\w.@+~-]+/?")
_MODEL_FILE = re.compile(r"cannot get model file (\S+)")
_TRACEBACK = "Traceback (most recent call last)"


def public_message(text: str | None, log: bool = False) -> str | None:
    """``text`` as a caller may see it: a missing model file named without the server's folders or
    how to fill them, a traceback as its last line, every absolute path as ``SERVER_PATH``. None
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
    shown = _PATH.sub(SERVER_PATH, shown)
    if log and shown != text:
        LOG.warning("a failure shown to its caller without the server's internals; in full: %s", text)
    return shown
