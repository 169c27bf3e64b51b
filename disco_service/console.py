"""What a run prints on the console: our own lines only, unless asked to be verbose.

Our lines on stderr are the progress bars (``image N (seed S)``, and a model file's name while it
downloads), notices that start with ``disco:``, the Flow supervisor's ``[serve]`` lines and the
outcome lines ``error:``, ``interrupted:`` and ``stopping:``. ``OUR_LINE`` matches exactly these.

Third-party libraries warn about their own internals (deprecations inside jina's dependencies);
those warnings are ignored by category, module and message start, in this process and, through
``quiet_env``, in the Flow the client starts for itself. Nothing else is silenced.
"""

from __future__ import annotations

import os
import re
import sys
import warnings

__all__ = ["ignore_third_party_warnings", "MODEL_FILE", "OUR_LINE", "quiet_env", "say", "THIRD_PARTY_WARNINGS"]

# (category, start of the message, module that raises it)
THIRD_PARTY_WARNINGS: tuple[tuple[type[Warning], str, str], ...] = (
    (UserWarning, "pkg_resources is deprecated as an API", "hubble.executor.requirements"),
    (UserWarning, "Valid config keys have changed in V2", "pydantic._internal._config"),
)

MODEL_FILE = r"[\w.-]+\.(?:pt|pth|safetensors)"
OUR_LINE = re.compile(
    rf"(?:image \d+ \(seed \d+\)|{MODEL_FILE}):"  # progress bars
    r"|(?:disco|error|interrupted|stopping): "  # our messages
    r"|\[serve\] "  # the supervisor of the Flow
)


def ignore_third_party_warnings() -> None:
    """Ignore the known third-party warnings in this process (and in processes forked from it)."""
    for category, message, module in THIRD_PARTY_WARNINGS:
        warnings.filterwarnings("ignore", message=re.escape(message), category=category, module=re.escape(module))


def quiet_env() -> dict[str, str]:
    """Environment for a quiet Flow process: the same warning filters, jina's warnings and errors only,
    no start-up banner, and no gRPC core log (its connection notices, such as ``too_many_pings``).
    Settings the user made in the environment are kept."""
    pythonwarnings = ",".join(f"ignore:{m}:{c.__name__}:{mod}" for c, m, mod in THIRD_PARTY_WARNINGS)
    env = {
        "JINA_LOG_LEVEL": os.environ.get("JINA_LOG_LEVEL", "WARNING"),
        "GRPC_VERBOSITY": os.environ.get("GRPC_VERBOSITY", "NONE"),
    }
    env["PYTHONWARNINGS"] = ",".join(p for p in (os.environ.get("PYTHONWARNINGS"), pythonwarnings) if p)
    return env


def say(message: str) -> None:
    """A notice for the user, on stderr, between progress bars: ``disco: message``."""
    from tqdm import tqdm

    tqdm.write(f"disco: {message}", file=sys.stderr)
