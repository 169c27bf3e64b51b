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
from disco_service.server.quotas import Quota
from disco_service.server.tokens import fingerprint

__all__ = [
    "Config",
    "ConfigError",
    "DATABASE_SCHEMES",
    "DEVICE_CHOICES",
    "hand_down_flow_secret",
    "FLOW_GRPC_PORT",
    "load",
    "MIRRORS_ALLOWED",
    "MODES",
    "TOKENS_ALLOWED",
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
    Variable(
        "DISCO_MAX_BODY_MB", "`64`", "the largest HTTP body the gateway takes (a photo or a short video as a data URI)"
    ),
    Variable("DISCO_MAX_JOBS_PER_TOKEN", "`10`", "jobs one token may have queued or running in the job API at once"),
    Variable("DISCO_ADMIN_TOKENS", "unset", "operators' tokens (as `DISCO_API_TOKENS`): every job, pause, drain"),
    Variable("DISCO_MAX_IMAGES_PER_DAY", "`200`", "images one token may ask for per UTC day (`0`: no limit)"),
    Variable(
        "DISCO_MAX_PIXEL_STEPS_PER_DAY",
        "`1e10`",
        "width x height x steps one token may ask for per UTC day, all images together (`0`: no limit)",
    ),
    Variable("DISCO_MAX_QUEUED_IMAGES", "`500`", "images the queue holds at most, all tokens together (`0`: no cap)"),
    Variable(
        "DISCO_CONFIRM_OVER_S",
        "`900` (15 min)",
        "on a server without GPU, a job estimated to take longer needs `POST /jobs?confirm=1` (`0`: never asks)",
    ),
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
    Variable(
        "DISCO_FLOW_SECRET", "made at start", "what the Flow's executors require of its gateway (`serve.py` makes one)"
    ),
)


TOKENS_ALLOWED = (
    "tokens of 16 to 256 printable characters without spaces or commas, comma-separated, "
    "or @FILE naming a file with one a line"
)
MIRRORS_ALLOWED = "comma-separated base URLs starting http://, https:// or file://"


def hand_down_flow_secret(secret: str) -> None:
    """Give the processes this one starts (the Flow and its restarts) ``secret`` as
    ``DISCO_FLOW_SECRET``: through the environment, not a flag, because other users on this
    machine can read a process's arguments, not its environment."""
    os.environ["DISCO_FLOW_SECRET"] = secret


class ConfigError(ValueError):
    """An environment variable holds a value that is not allowed. ``name`` is the variable; the
    message reads ``NAME: what is wrong; allowed: what is``, as ``error: ...`` shows it."""

    def __init__(self, name: str, problem: str, allowed: str):
        super().__init__(f"{name}: {problem}; allowed: {allowed}")
        self.name = name


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
    max_body_bytes: int  # the largest HTTP request body the gateway takes
    admin_tokens: tuple[str, ...]  # operators' tokens
    max_images_per_day: int  # 0: no limit
    max_pixel_steps_per_day: float  # 0: no limit
    max_queued_images: int  # 0: no cap
    confirm_over_s: float  # a CPU server's job estimated longer than this needs confirm=1; 0: never asks
    api_token: str | None  # the client's own token
    database_url: str | None  # None: the SQLite file under state_dir
    state_dir: Path

    def quota(self) -> Quota:
        """The volume quotas of the job API; the operators' tokens are exempt."""
        return Quota(
            max_images_per_day=self.max_images_per_day,
            max_pixel_steps_per_day=self.max_pixel_steps_per_day,
            max_queued_images=self.max_queued_images,
            exempt=frozenset(fingerprint(token) for token in self.admin_tokens),
        )

    def store_target(self, port: int) -> str:
        """Where the state store of the server whose (first) port is ``port`` lives: the database
        URL when set, else its own SQLite file, ``state_dir/<port>/jobs.sqlite3`` (two servers on
        one machine never share a queue by default)."""
        return self.database_url or str(self.state_dir / str(int(port)) / "jobs.sqlite3")

    flow_secret: str | None  # what the Flow's executors require of its gateway (server/flow_secret.py)


def _number(environ: Mapping[str, str], name: str, default: float, kind: type, low: float) -> float:
    text = environ.get(name, "").strip()
    if not text:
        return kind(default)
    allowed = f"{'a whole number' if kind is int else 'a number'} of at least {low:g}"
    try:
        value = kind(text)
    except ValueError:
        raise ConfigError(name, f"{text!r} is not {'a whole number' if kind is int else 'a number'}", allowed) from None
    if value < low:
        raise ConfigError(name, f"{text!r} is too small", allowed)
    return value


def _choice(environ: Mapping[str, str], name: str, default: str, allowed: tuple[str, ...], aliases=None) -> str:
    text = environ.get(name, "").strip().lower() or default
    text = (aliases or {}).get(text, text)
    if text not in allowed:
        raise ConfigError(
            name, f"{environ.get(name)!r} is not one of the choices", f"{', '.join(allowed[:-1])} or {allowed[-1]}"
        )
    return text


def _token_problem(token: str) -> str | None:
    """What is wrong with ``token`` (without showing it whole: it is a secret), or None."""
    shown = f"a token of {len(token)} characters starting {token[:4]!r}"
    if not 16 <= len(token) <= 256:
        return f"{shown} is {'too short' if len(token) < 16 else 'too long'}"
    if not token.isprintable() or " " in token or "," in token:
        return f"{shown} holds a space or an unprintable character"
    return None


def _tokens(environ: Mapping[str, str], name: str) -> tuple[str, ...]:
    """Comma-separated tokens, or ``@FILE`` naming a file with one token per line (``#`` comments);
    a token is 16 to 256 printable characters without spaces or commas."""
    text = environ.get(name, "").strip()
    if text.startswith("@"):
        try:
            lines = Path(text[1:]).expanduser().read_text().splitlines()
            text = ",".join(line.strip() for line in lines if not line.strip().startswith("#"))
        except (OSError, UnicodeDecodeError) as exc:
            why = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            raise ConfigError(name, f"the file {text[1:]!r} cannot be read ({why})", TOKENS_ALLOWED) from None
    tokens = tuple(dict.fromkeys(t.strip() for t in text.split(",") if t.strip()))
    for token in tokens:
        if problem := _token_problem(token):
            raise ConfigError(name, problem, TOKENS_ALLOWED)
    return tokens


def _database_url(environ: Mapping[str, str]) -> str | None:
    url = environ.get("DISCO_DATABASE_URL", "").strip()
    if url and not url.startswith(DATABASE_SCHEMES):
        allowed = "a URL starting with " + ", ".join(DATABASE_SCHEMES)
        raise ConfigError("DISCO_DATABASE_URL", f"{url[:20]!r}... is not a database URL", allowed)
    return url or None


def _state_dir(environ: Mapping[str, str]) -> Path:
    """``DISCO_STATE_DIR``, else ``disco-diffusion`` in the user's state folder (XDG_STATE_HOME,
    which must be an absolute path to count, else ``~/.local/state``)."""
    if text := environ.get("DISCO_STATE_DIR", "").strip():
        return Path(text).expanduser()
    xdg = environ.get("XDG_STATE_HOME", "").strip()
    base = Path(xdg) if xdg and Path(xdg).is_absolute() else Path.home() / ".local" / "state"
    return base / "disco-diffusion"


def _mirrors(environ: Mapping[str, str], name: str) -> tuple[str, ...] | None:
    bases = tuple(b.strip().rstrip("/") for b in environ.get(name, "").split(",") if b.strip())
    for base in bases:
        if not base.lower().startswith(("http://", "https://", "file://")):
            raise ConfigError(name, f"{base!r} is not a URL", MIRRORS_ALLOWED)
    return bases or None


def _client_token(environ: Mapping[str, str], name: str) -> str | None:
    token = environ.get(name, "").strip()
    if token and (problem := _token_problem(token)):
        raise ConfigError(name, problem, "one token of 16 to 256 printable characters without spaces or commas")
    return token or None


def load(environ: Mapping[str, str] | None = None) -> Config:
    """The configuration from ``environ`` (default ``os.environ``); raises ``ConfigError`` naming a bad variable."""
    env = os.environ if environ is None else environ
    pixel_steps = env.get("DISCO_MAX_PIXEL_STEPS", "").strip()
    output_dir = env.get("DISCO_OUTPUT_DIR", "").strip()
    return Config(
        model_dir=Path(env.get("DISCO_MODEL_DIR") or Path.home() / ".cache" / "disco-diffusion").expanduser(),
        weights_mirrors=_mirrors(env, "DISCO_WEIGHTS_MIRROR"),
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
        max_body_bytes=int(_number(env, "DISCO_MAX_BODY_MB", 64, float, 0.001) * 2**20),
        admin_tokens=_tokens(env, "DISCO_ADMIN_TOKENS"),
        max_images_per_day=int(_number(env, "DISCO_MAX_IMAGES_PER_DAY", 200, int, 0)),
        max_pixel_steps_per_day=_number(env, "DISCO_MAX_PIXEL_STEPS_PER_DAY", 1e10, float, 0),
        max_queued_images=int(_number(env, "DISCO_MAX_QUEUED_IMAGES", 500, int, 0)),
        confirm_over_s=_number(env, "DISCO_CONFIRM_OVER_S", 900, float, 0),
        api_token=_client_token(env, "DISCO_API_TOKEN"),
        database_url=_database_url(env),
        state_dir=_state_dir(env),
        flow_secret=env.get("DISCO_FLOW_SECRET", "").strip() or None,
    )
