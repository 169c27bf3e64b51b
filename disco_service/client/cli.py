"""The command line: ``python client.py --text_prompts "..." [--width_height 1280 768] ...``.

It mirrors ``hub run disco_diffusion_clip_rn50``: one option per setting, its type read from the
``Settings`` field (``disco.settings.kind``), its help from the settings table. Exit codes: 0 done,
1 failed (what was made is saved), 2 bad input (nothing started), 130 interrupted.
"""

from __future__ import annotations

import argparse
import io
import json
import math
import os
import struct
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from disco.packages import MissingPackage
from disco.settings import SETTING_NAMES, SettingsError, describe, kind, validate_settings
from disco.settings.notebook_names import unknown_settings_error
from disco.settings.yaml_io import SAFE_LOADER
from disco.weights import WeightsUnavailable
from disco_service import config
from disco_service.client.api import GenerationFailed, download_models, generate_image
from disco_service.client.cpu_estimate import SMALL_RUN
from disco_service.client.local_flow import FlowFailed
from disco_service.wire import JobStatus

__all__ = [
    "ARGUMENTS",
    "build_parser",
    "main",
    "MAX_SETTINGS_PNG_BYTES",
    "MAX_SETTINGS_TEXT_BYTES",
    "prompt_schedule_argument",
    "read_settings_file",
    "SettingsFileError",
]


def _bool(text: str) -> bool:
    lowered = text.lower()
    if lowered in ("true", "1", "yes", "on"):
        return True
    if lowered in ("false", "0", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


def _whole(text: str) -> int | float:
    """A whole number, also written as 1e3 or 250.0 (inf, NaN and overflowing numbers such as
    1e400 are passed on as floats: the validator refuses them by name as not finite numbers)."""
    try:
        return int(text)
    except ValueError:
        value = _number(text)
        if not math.isfinite(value):
            return value
        if not value.is_integer():
            raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
        return int(value)


def _number(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None


def _number_or_schedule(text: str) -> float | str:
    try:
        return float(text)
    except ValueError:
        return text  # a schedule such as [1]*400+[2]*600; the validator judges it


def _whole_or_schedule(text: str) -> int | str:
    """A whole number (also written as 1e3 or 4.0), or a schedule text the validator judges."""
    try:
        float(text)
    except ValueError:
        return text
    return _whole(text)  # 2.5 is refused here as --steps refuses it


def _bool_or_schedule(text: str) -> bool | str:
    """true or false, or a schedule of them such as [True]*500+[False]*500 (the validator judges it)."""
    word = text.strip().lower()
    if word in ("true", "false", "1", "0", "yes", "no", "on", "off"):
        return _bool(text)
    return text


# How each kind of setting is read from the command line (kinds: disco.settings.KINDS).
ARGUMENTS: dict[str, dict[str, Any]] = {
    "bool": {"type": _bool, "metavar": "{true,false}"},
    "int": {"type": _whole},
    "float": {"type": _number},
    "number_or_schedule": {"type": _number_or_schedule},
    "int_or_schedule": {"type": _whole_or_schedule},
    "text": {"type": str},
    "optional_text": {"type": str},
    "texts": {"nargs": "+"},
    "numbers": {"nargs": "+", "type": _number, "metavar": "NUMBER"},
    "size": {"nargs": 2, "type": _whole, "metavar": ("WIDTH", "HEIGHT")},
    "image": {"type": str, "metavar": "PATH_OR_URL"},
    "video": {"type": str, "metavar": "PATH"},
    "bool_or_schedule": {"type": _bool_or_schedule, "metavar": "{true,false,SCHEDULE}"},
    "model_schedules": {"nargs": "+", "metavar": "MODEL=SCHEDULE"},
    "images": {"nargs": "+", "metavar": "PATH[:WEIGHT]"},
    "steps": {"type": str, "metavar": "COUNT_OR_STEPS"},  # 2, or [5, 9, 34]: the validator reads it
}


class _HelpFormatter(argparse.HelpFormatter):
    """argparse's, but never splitting a word at a hyphen (model names such as Ukiyo-e_... stay whole)."""

    def _split_lines(self, text: str, width: int) -> list[str]:
        return textwrap.wrap(" ".join(text.split()), width, break_on_hyphens=False, break_long_words=False)


def build_parser() -> argparse.ArgumentParser:
    """Every setting with its meaning, what is allowed and its default (disco/settings/fields.py)."""
    parser = argparse.ArgumentParser(
        prog="client.py",
        formatter_class=_HelpFormatter,
        description="Disco Diffusion (CLIP RN50) text-to-image, served as a Jina Flow.",
        epilog=f"A first try on a CPU: {SMALL_RUN}",
    )
    parser.add_argument(
        "--host",
        default=None,
        help="a running Flow, e.g. grpc://localhost:51000 (default: start one for this run, on free local ports)",
    )
    parser.add_argument(
        "--token",
        default=None,
        help="the token of a Flow that needs one (sent as 'authorization: Bearer TOKEN'; default: $DISCO_API_TOKEN)",
    )
    parser.add_argument(
        "--settings",
        help="a YAML file of settings, or a PNG this project wrote (remakes that image); flags given here override it",
    )
    parser.add_argument("--no_progress", action="store_true", help="no progress bars")
    parser.add_argument(
        "--verbose", action="store_true", help="also show the Flow's own log and the libraries' warnings"
    )
    parser.add_argument(
        "--download",
        action="store_true",
        help="only download the model files these settings need into $DISCO_MODEL_DIR "
        "(~/.cache/disco-diffusion unless set), print their paths and exit",
    )
    for name in SETTING_NAMES:
        meaning, allowed, shown = describe(name)
        help_text = f"{meaning}; {allowed} (default: {shown})".replace("%", "%%")  # argparse formats help with %
        parser.add_argument(f"--{name}", default=argparse.SUPPRESS, help=help_text, **ARGUMENTS[kind(name)])
    return parser


MAX_SETTINGS_TEXT_BYTES = 2**20  # a settings file is a page of text
MAX_SETTINGS_PNG_BYTES = 256 * 2**20  # a picture this project wrote, at the largest size a server allows
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


class SettingsFileError(SettingsError):
    """A ``--settings`` file that cannot be used: ``error: --settings PATH: why``."""

    def __init__(self, path: str | Path, reason: str):
        super().__init__("settings", f"{path}: {reason}")
        self.args = (f"--settings {path}: {reason}",)


def read_settings_file(path: str | Path) -> dict[str, Any]:
    """The settings in a YAML (or JSON) file, or those embedded in a PNG this project wrote, not yet
    validated (the run validates them once, with the flags). ``~`` is the home folder. A file of
    any other content (missing, unreadable, empty, binary, too large, not a mapping of setting
    names) raises ``SettingsFileError`` (a ``SettingsError`` naming ``settings``) saying why."""
    typed = str(path)
    found = Path(path).expanduser()
    try:
        with found.open("rb") as file:
            data = file.read(MAX_SETTINGS_PNG_BYTES + 1)
    except OSError as exc:
        raise SettingsFileError(typed, f"cannot read it ({exc.strerror or exc})") from None
    if data.startswith(PNG_SIGNATURE) or found.suffix.lower() == ".png":
        return _png_file_settings(typed, data)
    if len(data) > MAX_SETTINGS_TEXT_BYTES:
        raise SettingsFileError(typed, f"not a YAML/JSON settings file (over {MAX_SETTINGS_TEXT_BYTES // 1024} KB)")
    try:
        text = data.decode("utf-8")
        if "\0" in text:
            raise UnicodeDecodeError("utf-8", data, 0, 1, "a NUL character")
    except UnicodeDecodeError:
        raise SettingsFileError(typed, f"not a YAML/JSON settings file ({_binary_kind(data)})") from None
    if not text.strip():
        raise SettingsFileError(typed, "not a YAML/JSON settings file (it is empty)")
    try:
        if any(isinstance(token, yaml.AliasToken) for token in yaml.scan(text, Loader=SAFE_LOADER)):
            raise SettingsFileError(typed, "not a YAML/JSON settings file (YAML aliases are not taken)")
        # JSON's kinds of values only: YAML's dates, sets and bytes become text the settings judge
        values = json.loads(json.dumps(yaml.load(text, Loader=SAFE_LOADER), default=str))
    except yaml.YAMLError as exc:
        reason = " ".join(str(exc).split())[:300]
        raise SettingsFileError(typed, f"not a YAML/JSON settings file ({reason})") from None
    except (ValueError, TypeError, OverflowError, RecursionError) as exc:
        raise SettingsFileError(typed, f"not a YAML/JSON settings file ({type(exc).__name__}: {exc})"[:300]) from None
    return _mapping(typed, values)


def _png_file_settings(typed: str, data: bytes) -> dict[str, Any]:
    """The settings a PNG this project wrote carries (outputs.embed_settings)."""
    from disco_service.outputs import png_settings

    if len(data) > MAX_SETTINGS_PNG_BYTES:
        raise SettingsFileError(
            typed, f"too large for a picture this project wrote (over {MAX_SETTINGS_PNG_BYTES // 2**20} MB)"
        )
    try:
        values = png_settings(data) if data.startswith(PNG_SIGNATURE) else None
    except (ValueError, RecursionError, IndexError, struct.error) as exc:  # a damaged chunk or settings text
        raise SettingsFileError(typed, f"its settings cannot be read ({type(exc).__name__})") from None
    if values is None:
        raise SettingsFileError(typed, "not a PNG this project wrote: it carries no Disco Diffusion settings")
    return _mapping(typed, values)


def _mapping(typed: str, values: Any) -> dict[str, Any]:
    if not isinstance(values, dict):
        kind = "nothing" if values is None else f"a {type(values).__name__}"
        raise SettingsFileError(typed, f"not a YAML/JSON settings file (it holds {kind}, not setting names and values)")
    return values


def _binary_kind(data: bytes) -> str:
    """What a binary file seems to be, for the refusal of a settings file."""
    from PIL import Image

    try:
        with Image.open(io.BytesIO(data)) as picture:
            return f"it is a {picture.format} picture, not text"
    except Exception:  # any content: Pillow tells what it knows or fails
        return "it is binary, not UTF-8 text"


def prompt_schedule_argument(texts: list[str]) -> list[str] | dict:
    """``--text_prompts '{"0": ["a lighthouse"], "10": ["a storm"]}'``: one JSON object of frame
    numbers to prompts (an animation's prompt schedule); anything else is a list of prompts."""
    if len(texts) == 1 and texts[0].lstrip().startswith("{"):
        try:
            return json.loads(texts[0])
        except json.JSONDecodeError as exc:
            raise SettingsError("text_prompts", f"cannot read {texts[0]!r} as a JSON object: {exc}") from None
    return texts


def main(argv: list[str] | None = None, generate: Callable[..., Any] | None = None) -> int:
    """Run the command line; returns the exit code. ``generate`` replaces ``generate_image`` (tests)."""
    generate = generate or generate_image
    parser = build_parser()
    parsed, extra = parser.parse_known_args(argv)
    if extra:  # one line naming each unknown option and what to use, not argparse's page of usage
        print(f"error: {unknown_options_message(extra)}", file=sys.stderr)
        return 2
    args = vars(parsed)
    host, settings_file, no_progress = args.pop("host"), args.pop("settings"), args.pop("no_progress")
    download_only, verbose, token = args.pop("download"), args.pop("verbose"), args.pop("token")
    if not verbose:  # gRPC's core logs connection notices (too_many_pings) on its own; read when it starts
        os.environ.setdefault("GRPC_VERBOSITY", "NONE")
    try:
        values = read_settings_file(settings_file) if settings_file else {}
        values.update(args)
        if "text_prompts" in args:
            values["text_prompts"] = prompt_schedule_argument(args["text_prompts"])
        if download_only:  # lists file names: no torch, no CLIP tokenizer
            settings = validate_settings(values, limits=config.load().limits, tokens=False)
            for path in download_models(settings, settings.init_image is not None, progress=not no_progress):
                print(path)
            return 0
        da = generate(**values, host=host, progress=not no_progress, verbose=verbose, token=token)
    except SettingsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except config.ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except GenerationFailed as exc:
        if exc.results:
            _print_summary(exc.results)  # what was made is saved: say where
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except (WeightsUnavailable, FlowFailed, MissingPackage) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:  # before any image started (loading, starting the Flow)
        print("interrupted: nothing was made", file=sys.stderr)
        return 130
    _print_summary(da)
    if any(d.tags.get("status") == JobStatus.CANCELLED for d in da):
        where = Path(da[0].tags.get("output_dir", ".")) if len(da) else Path(".")
        print(f"interrupted: stopped at the next step; the frames made so far are saved in {where}", file=sys.stderr)
        return 130
    return 0


def unknown_options_message(extra: list[str]) -> str:
    """The refusal of the command line's unknown words ``extra`` (as ``parse_known_args`` leaves
    them): each ``--name`` with what to use instead (the notebook's names get their own advice,
    ``disco.settings.notebook_names``), or the words that are no option at all."""
    options: dict[str, Any] = {}
    stray: list[str] = []
    name = None
    for word in extra:
        if word.startswith("--") and len(word) > 2:
            name, _, value = word[2:].partition("=")
            options[name] = value or True
        elif name is not None and options[name] is True:
            options[name] = word  # the unknown option's value
        else:
            stray.append(word)
    if not options:
        return f"unexpected arguments {' '.join(stray)!r}: every setting is given as --name value"
    return str(unknown_settings_error(list(options), options, prefix="--", known="(client.py --help lists them)"))


def _print_summary(docs) -> None:
    summary = [
        {"seed": d.tags.get("seed"), "status": d.tags.get("status"), "files": d.tags.get("files", [])} for d in docs
    ]
    print(json.dumps(summary, indent=1))
