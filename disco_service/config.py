"""The service's configuration: the one reader of the ``DISCO_*`` environment variables.

The engine (``disco``) reads no environment: its limits, device and mode come in as arguments.
Processes of the service read their configuration here once (``load()``) and hand it on as
arguments: executors through ``__init__`` (``uses_with``), ``serve.py`` through its flags.

Their table, with defaults and meanings, is ``VARIABLES`` (docs/reference/environment.md is made from it).

``$XDG_STATE_HOME`` defaults to ``~/.local/state``: the state of one user, never a folder of the
system\'s temp dir that another user\'s server could pick up.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from disco.settings import DEFAULT_LIMITS, Limits

__all__ = [
    "Config",
    "ConfigError",
    "DATABASE_SCHEMES",
    "DEVICE_CHOICES",
    "FLOW_GRPC_PORT",
    "load",
    "MODES",
    "VARIABLES",
    "Variable",
]

DEVICE_CHOICES = ("auto", "1", "0")
MODES = ("fast", "exact")  # disco.fast.MODES, without importing torch to read the configuration
DATABASE_SCHEMES = ("postgresql://", "postgres://", "sqlite:///")
# flow.yml's gRPC port: executors started without a ``state_store`` (``jina flow --uses flow.yml``)
# use the store of the server on this port; serve.py hands every process its server's store.
FLOW_GRPC_PORT = 51000


@dataclass(frozen=True)
class Variable:
    """One environment variable the service reads: its ``name``, its ``default`` in words, its ``meaning``."""

    name: str
    default: str
    meaning: str


VARIABLES: tuple[Variable, ...] = (
    Variable("DISCO_MODEL_DIR", "`~/.cache/disco-diffusion`", "where model files are kept (and downloaded to)"),
    Variable("DISCO_WEIGHTS_MIRROR", "unset", "comma-separated base URLs that replace each file's public mirrors"),
    Variable("DISCO_USE_GPU", "`auto`", "`1`: a GPU is required, `0`: the CPU, `auto`: the GPU if there is one"),
    Variable("DISCO_MODE", "`fast`", "the engine mode, `fast` or `exact` (`disco/fast.py`)"),
    Variable("DISCO_MAX_PIXELS", "`4194304` (2048x2048)", "the largest width x height a request may ask for"),
    Variable("DISCO_MAX_PIXEL_STEPS", "unset (no cap)", "the largest width x height x sampled steps of one image"),
    Variable("DISCO_CLIENT_TIMEOUT_S", "`60`", "a job whose caller stopped polling for this long stops as abandoned"),
    Variable("DISCO_STOP_TIMEOUT_S", "`600`", "how long a stopping Flow waits for its jobs to reach their next step"),
    Variable("DISCO_SAMPLER_REPLICAS", "`1`", "sampler replicas that `serve.py` starts"),
    Variable("DISCO_OUTPUT_DIR", "unset", "a folder whose images the page's gallery shows"),
    Variable("DISCO_RESULTS_DIR", "`$TMPDIR/disco-results`", "the result store: the images the Flow made, the jobs"),
    Variable(
        "DISCO_RESULT_TTL_S", "`604800` (7 days)", "how long the store keeps an image or a job after its last change"
    ),
    Variable("DISCO_API_TOKENS", "unset (open)", "tokens callers must send: comma-separated, or `@FILE` (one a line)"),
    Variable("DISCO_MAX_JOBS_PER_TOKEN", "`10`", "jobs one token may have queued or running in the job API at once"),
    Variable("DISCO_API_TOKEN", "unset", "the client's token (`client.py --token`), sent to a Flow that needs one"),
    Variable(
        "DISCO_DATABASE_URL",
        "unset (SQLite)",
        "the state store: `postgresql://...` to share one queue between gateways",
    ),
    Variable(
        "DISCO_STATE_DIR",
        "`$XDG_STATE_HOME/disco-diffusion`",
        "the SQLite store (jobs and the executors' job board): `<port>/jobs.sqlite3` per server",
    ),
)


class ConfigError(ValueError):
    """An environment variable holds a value that is not allowed; the message names it."""


@dataclass(frozen=True)
class Config:
    model_dir: Path
    weights_mirrors: tuple[str, ...] | None
    use_gpu: str  # one of DEVICE_CHOICES
    mode: str  # one of disco.fast.MODES
    limits: Limits
    client_timeout_s: float
    stop_timeout_s: float
    sampler_replicas: int
    output_dir: Path | None
    results_dir: Path
    result_ttl_s: float
    api_tokens: tuple[str, ...]  # empty: an open service
    max_jobs_per_token: int
    api_token: str | None  # the client's own token
    database_url: str | None  # None: the SQLite file under state_dir
    state_dir: Path

    def store_target(self, port: int) -> str:
        """Where the state store of the server whose (first) port is ``port`` lives: the database
        URL when set, else its own SQLite file, ``state_dir/<port>/jobs.sqlite3`` (two servers on
        one machine never share a queue by default)."""
        return self.database_url or str(self.state_dir / str(int(port)) / "jobs.sqlite3")


def _number(environ: Mapping[str, str], name: str, default: float, kind: type, low: float) -> float:
    text = environ.get(name, "").strip()
    if not text:
        return kind(default)
    try:
        value = kind(text)
    except ValueError:
        raise ConfigError(f"{name} must be a {kind.__name__} >= {low}, got {text!r}") from None
    if value < low:
        raise ConfigError(f"{name} must be a {kind.__name__} >= {low}, got {text!r}")
    return value


def _choice(environ: Mapping[str, str], name: str, default: str, allowed: tuple[str, ...], aliases=None) -> str:
    text = environ.get(name, "").strip().lower() or default
    text = (aliases or {}).get(text, text)
    if text not in allowed:
        raise ConfigError(f"{name} must be {', '.join(allowed[:-1])} or {allowed[-1]}, got {environ.get(name)!r}")
    return text


def _tokens(environ: Mapping[str, str], name: str) -> tuple[str, ...]:
    """Comma-separated tokens, or ``@FILE`` naming a file with one token per line (``#`` comments);
    a token is 16 to 256 printable characters without spaces or commas."""
    text = environ.get(name, "").strip()
    if text.startswith("@"):
        try:
            lines = Path(text[1:]).expanduser().read_text().splitlines()
            text = ",".join(line.strip() for line in lines if not line.strip().startswith("#"))
        except OSError as exc:
            raise ConfigError(f"{name} names a file that cannot be read: {exc}") from None
    tokens = tuple(dict.fromkeys(t.strip() for t in text.split(",") if t.strip()))
    for token in tokens:
        if not 16 <= len(token) <= 256 or not token.isprintable() or " " in token:
            raise ConfigError(
                f"{name}: each token must be 16 to 256 printable characters without spaces, "
                f"got one of {len(token)} characters starting {token[:4]!r}"
            )
    return tokens


def _database_url(environ: Mapping[str, str]) -> str | None:
    url = environ.get("DISCO_DATABASE_URL", "").strip()
    if url and not url.startswith(DATABASE_SCHEMES):
        raise ConfigError(f"DISCO_DATABASE_URL must start with {', '.join(DATABASE_SCHEMES)}, got {url[:20]!r}")
    return url or None


def _state_dir(environ: Mapping[str, str]) -> Path:
    """``DISCO_STATE_DIR``, else ``disco-diffusion`` in the user's state folder (XDG_STATE_HOME,
    which must be an absolute path to count, else ``~/.local/state``)."""
    if text := environ.get("DISCO_STATE_DIR", "").strip():
        return Path(text).expanduser()
    xdg = environ.get("XDG_STATE_HOME", "").strip()
    base = Path(xdg) if xdg and Path(xdg).is_absolute() else Path.home() / ".local" / "state"
    return base / "disco-diffusion"


def load(environ: Mapping[str, str] | None = None) -> Config:
    """The configuration from ``environ`` (default ``os.environ``); raises ``ConfigError`` naming a bad variable."""
    env = os.environ if environ is None else environ
    mirrors = tuple(b.strip().rstrip("/") for b in env.get("DISCO_WEIGHTS_MIRROR", "").split(",") if b.strip())
    pixel_steps = env.get("DISCO_MAX_PIXEL_STEPS", "").strip()
    output_dir = env.get("DISCO_OUTPUT_DIR", "").strip()
    return Config(
        model_dir=Path(env.get("DISCO_MODEL_DIR") or Path.home() / ".cache" / "disco-diffusion").expanduser(),
        weights_mirrors=mirrors or None,
        use_gpu=_choice(env, "DISCO_USE_GPU", "auto", DEVICE_CHOICES, {"true": "1", "false": "0"}),
        mode=_choice(env, "DISCO_MODE", "fast", MODES),
        limits=Limits(
            max_pixels=int(_number(env, "DISCO_MAX_PIXELS", DEFAULT_LIMITS.max_pixels, int, 64 * 64)),
            max_pixel_steps=int(_number(env, "DISCO_MAX_PIXEL_STEPS", 0, int, 1)) if pixel_steps else None,
        ),
        client_timeout_s=_number(env, "DISCO_CLIENT_TIMEOUT_S", 60, float, 1),
        stop_timeout_s=_number(env, "DISCO_STOP_TIMEOUT_S", 600, float, 0),
        sampler_replicas=int(_number(env, "DISCO_SAMPLER_REPLICAS", 1, int, 1)),
        output_dir=Path(output_dir).expanduser() if output_dir else None,
        results_dir=Path(env.get("DISCO_RESULTS_DIR") or Path(tempfile.gettempdir()) / "disco-results").expanduser(),
        result_ttl_s=_number(env, "DISCO_RESULT_TTL_S", 7 * 24 * 3600, float, 60),
        api_tokens=_tokens(env, "DISCO_API_TOKENS"),
        max_jobs_per_token=int(_number(env, "DISCO_MAX_JOBS_PER_TOKEN", 10, int, 1)),
        api_token=env.get("DISCO_API_TOKEN", "").strip() or None,
        database_url=_database_url(env),
        state_dir=_state_dir(env),
    )
