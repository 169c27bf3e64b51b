"""Settings as a YAML file: written from a settings mapping, read back as a mapping to validate."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from ..errors import SettingsError

# libyaml's parser where PyYAML was built with it: the pure-Python one takes seconds on a few KB of
# deep nesting ("{" * 5000: 5.9 s, against 2 ms)
SAFE_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def write_yaml(data: dict[str, Any], path: str | Path | None = None) -> str:
    """``data`` (a ``Settings.to_dict()``) as YAML text, also written to ``path`` when given.
    Image bytes do not belong in a settings file: ``init_image`` bytes are written as null, and
    ``image_prompts`` given as bytes are left out (their paths stay)."""
    if isinstance(data.get("init_image"), bytes):
        data = {**data, "init_image": None}
    if any(isinstance(p, bytes) for p in data.get("image_prompts") or ()):
        data = {**data, "image_prompts": [p for p in data["image_prompts"] if not isinstance(p, bytes)]}
    text = yaml.safe_dump(data, sort_keys=False, allow_unicode=True)
    if path is not None:
        Path(path).write_text(text)
    return text


def read_yaml(text_or_path: str | Path) -> dict[str, Any]:
    """The mapping of setting names to values in YAML text, or in the ``.yml``/``.yaml`` file it
    names (a ``Path`` is always read as a file). Not validated; raises ``SettingsError`` naming
    ``settings`` when the YAML is not a mapping."""
    path = Path(text_or_path)
    text = path.read_text() if isinstance(text_or_path, Path) or _looks_like_file(text_or_path) else text_or_path
    data = yaml.load(text, Loader=SAFE_LOADER) or {}
    if not isinstance(data, dict):
        raise SettingsError("settings", f"a YAML mapping of setting names to values is required, got {data!r}")
    return data


def _looks_like_file(text: str | Path) -> bool:
    return "\n" not in str(text) and str(text).endswith((".yml", ".yaml")) and Path(text).is_file()
