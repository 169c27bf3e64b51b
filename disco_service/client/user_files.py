"""Paths a user types and the files they name, as a shell user means them.

Every path a user gives (``output_dir``, ``init_image``, ``video_init_path``, ``--settings``, a
checkpoint's path) means what it means in a shell: ``~`` is the home folder, a relative path is
taken from the current folder; quoted or after ``=`` (``--output_dir=~/out``) the shell leaves
``~`` alone, so the client expands it here. A file the client reads is refused with a
``SettingsError`` naming its setting when it is missing, a folder, unreadable or larger than the
client takes, never with a traceback.
"""

from __future__ import annotations

from pathlib import Path

from disco.settings import Settings, SettingsError

__all__ = ["expand_user_paths", "is_url", "MAX_IMAGE_BYTES", "MAX_VIDEO_BYTES", "read_user_file", "user_path"]

MAX_IMAGE_BYTES = 256 * 2**20  # an init image: far beyond any photo
MAX_VIDEO_BYTES = 2 * 2**30  # a video to animate from: it is read whole into memory and sent


def is_url(text: str) -> bool:
    return text.startswith(("http://", "https://"))


def user_path(text: str | Path) -> Path:
    """A path as a shell user means it: ``~`` (and ``~user``) is that home folder."""
    return Path(text).expanduser()


def expand_user_paths(settings: Settings) -> Settings:
    """``settings`` with every path the user typed that starts with ``~`` expanded (``user_path``);
    other paths and URLs stay as they were written."""
    for name in ("output_dir", "init_image", "video_init_path"):
        value = getattr(settings, name)
        if isinstance(value, str) and value.startswith("~"):
            setattr(settings, name, str(user_path(value)))
    return settings


def read_user_file(setting: str, path: str | Path, limit: int) -> bytes:
    """The bytes of a file the user named in ``setting``. Raises ``SettingsError`` naming ``setting``
    when it is missing, not a file, unreadable, or over ``limit`` bytes."""
    found = user_path(path)
    try:
        if not found.is_file():
            why = "it is a folder" if found.is_dir() else "no such file"
            raise SettingsError(setting, f"{why}: {str(found)!r}")
        if (size := found.stat().st_size) > limit:
            raise SettingsError(
                setting,
                f"{str(found)!r} is {size / 2**20:.0f} MB, more than the {limit / 2**20:.0f} MB the client takes",
            )
        with found.open("rb") as file:
            return file.read(limit + 1)[:limit]
    except OSError as exc:
        raise SettingsError(setting, f"cannot read {str(found)!r} ({exc.strerror or exc})") from None
