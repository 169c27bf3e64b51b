"""Files a run leaves in ``output_dir``, named from ``reverse_diffusion-{batch_name}-{seed}``.

For image ``i`` of a run (the run's ``seed``; image ``i`` itself used ``seed + i``):

    reverse_diffusion-{batch_name}-{seed}_{i}.png             the final image
    reverse_diffusion-{batch_name}-{seed}_{i}-{status}.png    the last picture of an image that did not
                                                              finish (cancelled, abandoned, shutdown, failed)
    reverse_diffusion-{batch_name}-{seed}_{i}-step{NNNN}.png  each kept frame
    reverse_diffusion-{batch_name}-{seed}_{i}.gif             the frames as an animation
    reverse_diffusion-{batch_name}-{seed}_{i}-sprite.png      the frames as a sprite sheet
    partials/reverse_diffusion-{batch_name}-{seed}_{i}-{NN}%.png  with intermediate_saves a count: the
                                                              image at about NN% of its steps
    partials/reverse_diffusion-{batch_name}-{seed}_{i}-{jjj}.png  with intermediate_saves a list: at step jjj

With ``batch_size`` B above 1, batch ``i`` (one sampler call, seed ``seed + i``) makes B images, and
each one's files start ``reverse_diffusion-{batch_name}-{seed}_{i}_{k}`` instead, ``k`` its place in
the batch (0 to B - 1): ``..._{i}_{k}.png``, ``..._{i}_{k}-step{NNNN}.png`` and so on.

An animation (one per run, its frames made with ``seed + n``) writes

    reverse_diffusion-{batch_name}-{seed}-frame{NNNN}.png     each finished frame n
    reverse_diffusion-{batch_name}-{seed}.mp4                 the frames as a video, once the run ends
    reverse_diffusion-{batch_name}-{seed}-frame{NNNN}_l.png   vr_mode: frame n's left eye view (_r: right)
    partials/reverse_diffusion-{batch_name}-{seed}-frame{NNNN}-{NN}%.png  intermediate_saves, per frame

An empty ``batch_name`` drops its part (``reverse_diffusion-{seed}_...``). When files of an
earlier run already use the prefix, ``-run2``, ``-run3``... is appended: nothing is overwritten
(a resumed animation, ``resume_run``, goes on writing under its own prefix).

A run with a ``batch_name`` also leaves its DocumentArray, as ``generate_image`` returned it, in
``runs/{batch_name}.json`` (docarray's JSON; the latest run of that name), which ``load_run(name,
output_dir=...)`` reads back.

Every PNG written carries the settings that remake its image (that image's own ``seed``,
``n_batches`` 1) as JSON in a ``tEXt`` chunk keyed ``disco-diffusion``, in ASCII (other characters,
e.g. of a ``batch_name`` in any script, as ``\\u`` escapes: ``tEXt`` is Latin-1); ``read_png_settings``
reads them back (``client.py --settings IMAGE.png``).
"""

from __future__ import annotations

import base64
import json
import os
import re
import struct
import zlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from disco.partials import PARTIALS_FOLDER
from disco.settings import SETTING_NAMES, Settings, SettingsError, default
from disco_service.wire import BATCH_POSITION_TAG, JobStatus, restore_numbers

__all__ = [
    "base_prefix",
    "check_output_dir",
    "data_uri_bytes",
    "embed_settings",
    "embed_settings_in_uri",
    "finished_frames",
    "frame_path",
    "gif_frame_ms",
    "glob_escape",
    "image_file_name",
    "image_stem",
    "image_settings",
    "keep_run",
    "latest_animation_seed",
    "PNG_KEY",
    "picture_name",
    "picture_tags",
    "png_settings",
    "read_png_settings",
    "resumable_prefix",
    "run_file",
    "run_prefix",
    "save_outputs",
    "write_animations",
    "write_frame",
    "write_pictures",
]

PNG_KEY = "disco-diffusion"
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# not part of a picture's recipe: where the client wrote files, image bytes, and how a run was resumed
_NOT_EMBEDDED = ("output_dir", "init_image", "image_prompts", "resume_run", "resume_from_frame")
_FRAME = re.compile(r"-frame(\d{4,})\.png")


def image_settings(tags: Mapping[str, Any]) -> dict[str, Any]:
    """The settings that remake one image from its Document's tags: its own seed, one image."""
    known = {k: v for k, v in restore_numbers(tags).items() if k in SETTING_NAMES}
    settings = {k: v for k, v in known.items() if k not in _NOT_EMBEDDED}
    if not isinstance(settings.get("video_init_path"), str | None):
        settings["video_init_path"] = None  # a video's bytes are not stored either
    settings["n_batches"] = 1
    if tags.get("seed") is not None:
        settings["seed"] = int(tags["seed"])
    return settings


def _png_chunks(png: bytes) -> list[tuple[bytes, bytes]]:
    if not png.startswith(_PNG_SIGNATURE):
        raise ValueError("not a PNG image")
    chunks, at = [], len(_PNG_SIGNATURE)
    while at + 8 <= len(png):
        length, kind = struct.unpack(">I4s", png[at : at + 8])
        chunks.append((kind, png[at + 8 : at + 8 + length]))
        at += 12 + length
    return chunks


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def embed_settings(png: bytes, settings: Mapping[str, Any]) -> bytes:
    """``png`` with ``settings`` as JSON in its ``disco-diffusion`` text chunk (replacing one already there)."""
    text = PNG_KEY.encode() + b"\0" + json.dumps(dict(settings), ensure_ascii=True).encode()
    out = [_PNG_SIGNATURE]
    for kind, data in _png_chunks(png):
        if kind == b"tEXt" and data.split(b"\0", 1)[0] == PNG_KEY.encode():
            continue
        out.append(_png_chunk(kind, data))
        if kind == b"IHDR":
            out.append(_png_chunk(b"tEXt", text))
    return b"".join(out)


def png_settings(png: bytes) -> dict[str, Any] | None:
    """The settings embedded in a PNG by ``embed_settings``, or None."""
    for kind, data in _png_chunks(png):
        key, _, value = data.partition(b"\0")
        if kind == b"tEXt" and key == PNG_KEY.encode():
            return json.loads(value)
    return None


def read_png_settings(path: str | Path) -> dict[str, Any]:
    """The settings embedded in an image this project wrote (raises SettingsError when there are none)."""
    try:
        found = png_settings(Path(path).read_bytes())
    except (OSError, ValueError) as exc:
        raise SettingsError("settings", f"cannot read settings from {path}: {exc}") from None
    if not isinstance(found, dict):
        raise SettingsError("settings", f"{path} carries no Disco Diffusion settings")
    return found


def embed_settings_in_uri(uri: str, settings: Mapping[str, Any]) -> str:
    """A PNG data URI with ``settings`` embedded."""
    return "data:image/png;base64," + base64.b64encode(embed_settings(data_uri_bytes(uri), settings)).decode()


def gif_frame_ms(settings: Mapping[str, Any]) -> int:
    """How long the GIF shows each frame, in milliseconds, at the settings' ``gif_fps``: 1000 / fps
    rounded to the GIF's hundredths of a second (20 fps: 50 ms)."""
    fps = float(settings.get("gif_fps") or default("gif_fps"))
    return 10 * max(1, round(100 / fps))


def write_animations(chunks: Any, gif: Path, sprite: Path, settings: Mapping[str, Any]) -> None:
    """The frames as a GIF (``gif_fps`` frames a second, ``gif_size_ratio`` of the image's size, as
    discoart writes it) and as a sprite sheet (a PNG, with ``settings`` embedded)."""
    ratio = float(settings.get("gif_size_ratio") or default("gif_size_ratio"))
    chunks.save_gif(str(gif), show_index=True, size_ratio=ratio, duration=gif_frame_ms(settings))
    chunks.plot_image_sprites(str(sprite), skip_empty=True, show_index=True, keep_aspect_ratio=True)
    sprite.write_bytes(embed_settings(sprite.read_bytes(), settings))


def base_prefix(batch_name: str, seed: int) -> str:
    return "-".join(part for part in ("reverse_diffusion", batch_name, str(seed)) if part)


def run_prefix(output_dir: Path, batch_name: str, seed: int, animation: bool = False) -> str:
    """The first of ``reverse_diffusion-{batch_name}-{seed}``, ``...-run2``, ... that no earlier
    run's files use (an animation's frames and MP4, or a still run's images)."""
    base = base_prefix(batch_name, seed)
    prefix, run = base, 1
    while _taken(output_dir, prefix, animation):
        run += 1
        prefix = f"{base}-run{run}"
    return prefix


def _taken(output_dir: Path, prefix: str, animation: bool) -> bool:
    if not animation:
        return any(output_dir.glob(f"{glob_escape(prefix)}_*"))
    return (output_dir / f"{prefix}.mp4").exists() or bool(finished_frames(output_dir, prefix))


def frame_path(output_dir: Path, prefix: str, frame: int) -> Path:
    """Where an animation's finished frame goes: ``{prefix}-frame{NNNN}.png``."""
    return _inside(output_dir, f"{prefix}-frame{frame:04d}.png")


def finished_frames(output_dir: Path, prefix: str) -> dict[int, Path]:
    """An animation's frame files in ``output_dir``, by frame number (in order)."""
    if not output_dir.is_dir():
        return {}
    found = {}
    for path in output_dir.glob(f"{glob_escape(prefix)}-frame*.png"):
        match = _FRAME.fullmatch(path.name[len(prefix) :])
        if match and path.name.startswith(prefix):
            found[int(match.group(1))] = path
    return dict(sorted(found.items()))


def resumable_prefix(output_dir: Path, batch_name: str, seed: int) -> str | None:
    """The prefix of the latest animation run of ``batch_name`` and ``seed`` in ``output_dir``
    (``reverse_diffusion-{batch_name}-{seed}`` or one of its ``-runN``), by its newest frame; None
    when there is none."""
    base = base_prefix(batch_name, seed)
    runs = re.compile(re.escape(base) + r"(-run\d+)?")
    newest: dict[str, float] = {}
    for path in output_dir.glob(f"{glob_escape(base)}*-frame*.png") if output_dir.is_dir() else []:
        prefix, match = path.name[: path.name.rfind("-frame")], _FRAME.search(path.name)
        if runs.fullmatch(prefix) and match and match.end() == len(path.name):
            newest[prefix] = max(newest.get(prefix, 0.0), path.stat().st_mtime)
    return max(newest, key=newest.__getitem__) if newest else None


def latest_animation_seed(output_dir: Path, batch_name: str) -> int | None:
    """The seed of the newest animation of ``batch_name`` in ``output_dir``, read from its frames'
    embedded settings; None when there is none."""
    if not output_dir.is_dir():
        return None
    frames = [p for p in output_dir.glob("reverse_diffusion-*-frame*.png") if _FRAME.search(p.name)]
    for path in sorted(frames, key=lambda p: p.stat().st_mtime, reverse=True):
        try:
            settings = png_settings(path.read_bytes())
        except (OSError, ValueError):
            continue
        if (
            isinstance(settings, dict)
            and settings.get("batch_name", "") == batch_name
            and settings.get("animation_mode", "None") != "None"
            and isinstance(settings.get("seed"), int)
        ):
            return settings["seed"]
    return None


def write_frame(output_dir: Path, prefix: str, frame: int, png: bytes, recipe: Mapping[str, Any]) -> Path:
    """Write an animation's finished frame with its settings embedded; returns its path."""
    path = frame_path(output_dir, prefix, frame)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_bytes(embed_settings(png, recipe))
    os.replace(tmp, path)  # a frame file is whole or absent: a resumed run may rely on it
    return path


def picture_name(stem: str, tags: Mapping[str, Any]) -> str | None:
    """The name, relative to its folder, of a picture that came back beside the frames (``tags`` of
    one of ``doc.matches``), or None when ``tags`` name no such picture (no ``partial`` or ``eye``,
    an eye other than ``l``/``r``, a ``partial`` other than the notebook's ``NN%`` or ``jjj``, a
    ``frame`` that is not a whole number >= 0). ``{name}_l.png`` / ``{name}_r.png`` for a VR frame's
    eye views; ``partials/{name}-{end}.png`` for a step ``intermediate_saves`` kept. ``name`` is
    ``stem`` (``{prefix}_{i}`` of a still image), or ``{stem}-frame{NNNN}`` for a picture of an
    animation's frame; an empty ``stem`` drops its part (the result store's names:
    ``frame0001_l.png``, ``partials/frame0001-50%.png``, ``partials/50%.png``). Output files and
    the result store, the job API's downloads and its zip are all named here."""
    frame = tags.get("frame")
    if frame is not None:
        if isinstance(frame, bool) or not isinstance(frame, int | float) or frame != int(frame) or frame < 0:
            return None
        frame = int(frame)
    base = "-".join(part for part in (stem, None if frame is None else f"frame{frame:04d}") if part)
    if "eye" in tags:
        eye = tags["eye"]
        return f"{base}_{eye}.png" if eye in ("l", "r") and base else None
    if "partial" in tags:
        end = str(tags["partial"])
        if not re.fullmatch(r"\d{2,}%|\d{3,}", end):
            return None
        return f"{PARTIALS_FOLDER}/" + "-".join(part for part in (base, end) if part) + ".png"
    return None


_STORED_PICTURE = re.compile(
    rf"frame(?P<eye_frame>\d{{4,}})_(?P<eye>[lr])\.png"
    rf"|{PARTIALS_FOLDER}/(?:frame(?P<frame>\d{{4,}})-)?(?P<partial>\d{{2,}}%|\d{{3,}})\.png"
)


def picture_tags(name: str) -> dict[str, Any] | None:
    """The tags of a picture from its name as ``picture_name("", tags)`` made it (the result store's
    and the job API's names: ``frame0001_l.png``, ``partials/frame0001-50%.png``, ``partials/020.png``),
    or None for any other name (so a name read from a request can never leave its folder)."""
    found = _STORED_PICTURE.fullmatch(name) if isinstance(name, str) else None
    if found is None:
        return None
    if found["eye"]:
        tags: dict[str, Any] = {"eye": found["eye"], "frame": int(found["eye_frame"])}
    else:
        tags = {"partial": found["partial"]}
        if found["frame"]:
            tags["frame"] = int(found["frame"])
    return tags if picture_name("", tags) == name else None  # one spelling per picture (no frame00001)


def write_pictures(doc: Any, output_dir: Path, stem: str, recipe: Mapping[str, Any]) -> list[Path]:
    """Write the pictures that came back beside the frames (``doc.matches``), with ``recipe``
    embedded, under the names of ``picture_name(stem, tags)`` (``stem``: ``{prefix}_{i}`` of a
    still image, the run's prefix of an animation). Returns the paths written."""
    written = []
    for picture in getattr(doc, "matches", None) or []:
        name = picture_name(stem, picture.tags) if picture.uri else None
        if name is None:
            continue
        path = _inside(output_dir, name)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(embed_settings(data_uri_bytes(picture.uri), recipe))
        written.append(path)
    return written


def glob_escape(text: str) -> str:
    return "".join(f"[{c}]" if c in "[]*?" else c for c in text)


def data_uri_bytes(uri: str) -> bytes:
    """The bytes of a base64 ``data:`` URI (a PNG the Flow sent back). Raises ValueError for any other URI."""
    header, _, payload = uri.partition(",")
    if not header.startswith("data:") or ";base64" not in header:
        raise ValueError("expected a base64 data URI")
    return base64.b64decode(payload)


def _inside(directory: Path, name: str) -> Path:
    path = (directory / name).resolve()
    if directory.resolve() not in path.parents:
        raise ValueError(f"refusing to write outside output_dir: {name!r}")
    return path


def check_output_dir(output_dir: str | Path) -> Path:
    """``output_dir`` checked before any work starts: a directory that can be written, or one
    that can be made (its nearest existing parent is a writable directory); nothing is created
    yet. Raises ``SettingsError`` naming ``output_dir`` otherwise."""
    out = Path(output_dir).expanduser()
    existing = out
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        where = "exists and is not a directory" if existing == out else f"is under {str(existing)!r}, which is a file"
        raise SettingsError("output_dir", f"{str(out)!r} {where}: name a directory")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise SettingsError("output_dir", f"cannot write to {str(existing)!r} (permission denied)")
    return out


def image_stem(prefix: str, i: int, position: int | None = None) -> str:
    """The start of every file name of batch ``i``'s image: ``{prefix}_{i}``, or with ``batch_size``
    above 1 ``{prefix}_{i}_{position}`` (its place in the batch, from 0)."""
    return f"{prefix}_{i}" if position is None else f"{prefix}_{i}_{position}"


def image_file_name(prefix: str, i: int, status: str | None = None, position: int | None = None) -> str:
    """The file name of image ``i``'s last picture: ``{prefix}_{i}.png`` when it finished (``status``
    ``done``, or none given), else ``{prefix}_{i}-{status}.png`` (e.g. ``-cancelled``): a picture
    of an image stopped early, never to be mistaken for a finished one. ``position``: its place in
    its batch, with ``batch_size`` above 1 (``image_stem``)."""
    stem = image_stem(prefix, i, position)
    if status in (None, "", JobStatus.DONE):
        return f"{stem}.png"
    word = status if status in set(JobStatus) else "unfinished"  # a status of a later version: still not final
    return f"{stem}-{word}.png"


RUNS_FOLDER = "runs"  # output_dir/runs/{batch_name}.json: each named run's DocumentArray, the latest of a name


def run_file(output_dir: str | Path, batch_name: str) -> Path:
    """Where the run ``batch_name``'s DocumentArray is kept in ``output_dir``. Raises SettingsError
    (``batch_name``) for an empty name: only named runs are kept."""
    if not batch_name:
        raise SettingsError("batch_name", "'' names no run: runs are kept by their batch_name when they have one")
    return _inside(Path(output_dir).expanduser() / RUNS_FOLDER, f"{batch_name}.json")


def keep_run(docs: Any, settings: Settings) -> Path | None:
    """Keep the run's DocumentArray ``docs`` (as ``generate_image`` returns it) in ``output_dir`` under
    its ``batch_name``, replacing an earlier run of that name (docarray's JSON); None without a name."""
    if not settings.batch_name:
        return None
    path = run_file(settings.output_dir, settings.batch_name)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(docs.to_json())
    os.replace(tmp, path)
    return path


def save_outputs(docs: Any, settings: Settings) -> list[Path]:
    """Write every Document's final image, frames, GIF and sprite sheet; record them in tags['files']."""
    out = Path(settings.output_dir).expanduser()  # as a shell user means it: ~ is the home folder
    out.mkdir(parents=True, exist_ok=True)
    prefix = run_prefix(out, settings.batch_name, int(docs[0].tags.get("run_seed", settings.seed)) if len(docs) else 0)
    written: list[Path] = []
    for doc in docs:
        i = int(doc.tags.get("batch_index", 0))
        position = doc.tags.get(BATCH_POSITION_TAG)
        position = None if position is None else int(position)
        stem = image_stem(prefix, i, position)
        recipe = image_settings(doc.tags)
        files = []
        for chunk in doc.chunks:
            if chunk.uri:
                path = _inside(out, f"{stem}-step{int(chunk.tags.get('step', 0)):04d}.png")
                path.write_bytes(embed_settings(data_uri_bytes(chunk.uri), recipe))
                files.append(path)
        if doc.uri:
            final = _inside(out, image_file_name(prefix, i, doc.tags.get("status"), position))
            final.write_bytes(embed_settings(data_uri_bytes(doc.uri), recipe))
            files.insert(0, final)
        if len(doc.chunks):
            gif, sprite = _inside(out, f"{stem}.gif"), _inside(out, f"{stem}-sprite.png")
            write_animations(doc.chunks, gif, sprite, recipe)
            files += [gif, sprite]
        files += write_pictures(doc, out, stem, recipe)
        doc.tags["files"] = [str(f) for f in files]
        written += files
    return written
