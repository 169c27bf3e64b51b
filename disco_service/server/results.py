"""The result store: every image the Flow made, kept in a folder for a while, by its Document id.

The sampler writes each kept frame as it makes it and, when the image ends (done, cancelled,
abandoned, shutdown or failed), its record; the Renderer adds the GIF and the sprite sheet. So a
result outlives its caller, a page reload and a gateway restart: a gRPC caller whose connection
dropped fetches it by the id of the Document it sent (``GET /results/{id}`` on the HTTP port), and
the job API serves its images from here. On Kubernetes the folder is a shared volume.

    DISCO_RESULTS_DIR/images/<document id>/
        result.json         the record: status, seed, settings, steps_done, total, error, frames, times
        step0001.png ...    each kept frame (PNG, carrying the settings that remake the image)
        final.png           the final image, only when the image is done (an animation's: its last frame)
        frames.gif          the frames as an animation
        sprite.png          the frames as a sprite sheet
        frame0000.png ...   an animation's finished frames (animation_mode 2D or Video Input)
        video.mp4           an animation's finished frames as an MP4, once it ended
        frame0000_l.png ... vr_mode: each finished frame's left and right eye views (_l, _r)
        partials/50%.png    intermediate_saves: each step kept (the notebook's ``NN%`` or step ``jjj``;
                            an animation's ``partials/frame0000-50%.png`` ...), as made
        document.json       the Document as the Renderer returned it (final image, frames as chunks,
                            tags), in docarray's JSON, for an image of a run with a ``batch_name``
        run.json            that run: its batch_name, run_seed, the image's batch_index, when written

    DISCO_RESULTS_DIR/owners/<document id>   who sent the image: its token's fingerprint
                                             (tokens.py), claimed by the gateway before the
                                             image is made; the record repeats it as ``owner``

An image answers its owner only (http_api.py): another caller is told there is no such image.
A run's DocumentArray is found by its ``batch_name`` among the images its owner made
(``run_documents``; ``GET /runs/{batch_name}``), the latest run of that name.
Entries untouched for ``DISCO_RESULT_TTL_S`` (default 7 days) are removed by ``sweep``.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from disco.partials import PARTIALS_FOLDER
from disco_service.outputs import embed_settings, picture_name, picture_tags, write_animations
from disco_service.server.jobs import check_job_id
from disco_service.server.public_errors import LOG
from disco_service.wire import JobStatus

__all__ = ["animation_frame_name", "frame_name", "ResultStore"]

FINAL, GIF, SPRITE, RECORD, MP4 = "final.png", "frames.gif", "sprite.png", "result.json", "video.mp4"
DOCUMENT, RUN = "document.json", "run.json"

_FRAME = re.compile(r"step(\d{4,})\.png")
_ANIMATION_FRAME = re.compile(r"frame(\d{4,})\.png")


def frame_name(step: int) -> str:
    return f"step{step:04d}.png"


def animation_frame_name(frame: int) -> str:
    return f"frame{frame:04d}.png"


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def _is_record(record: Any) -> bool:
    """Whether a record read from a file has the kinds its readers rely on."""
    if not isinstance(record, dict) or not isinstance(status := record.get("status"), str):
        return False
    if status not in JobStatus._value2member_map_:
        return False
    kinds = {"frames": list, "settings": dict, "animation": dict}
    return all(isinstance(record.get(name, kind()), kind) for name, kind in kinds.items())


class ResultStore:
    def __init__(self, directory: str | Path, ttl_s: float = 7 * 24 * 3600):
        """``directory``: the store's folder (``DISCO_RESULTS_DIR``), made if missing; ``ttl_s``: how
        long an entry is kept after its last change."""
        self.dir = Path(directory)
        self.images = self.dir / "images"
        self.images.mkdir(parents=True, exist_ok=True)
        self.owners = self.dir / "owners"
        self.owners.mkdir(parents=True, exist_ok=True)
        self.ttl_s = ttl_s

    def claim(self, doc_id: str, owner: str) -> bool:
        """Record ``owner`` as the owner of the image ``doc_id``, unless another owner has it: True
        when it is ``owner``'s (now or already). Raises ValueError for an id that is not a file name."""
        path = self.owners / check_job_id(doc_id)
        tmp = self.owners / f".{path.name}.{os.getpid()}.tmp"
        tmp.write_text(owner)
        try:
            os.link(tmp, path)  # the first claim wins, whole
        except FileExistsError:
            pass
        finally:
            tmp.unlink(missing_ok=True)
        return self.owner(doc_id) == owner

    def owner(self, doc_id: str) -> str | None:
        """Who sent the image (its token's fingerprint), or None when nobody claimed it."""
        try:
            return (self.owners / check_job_id(doc_id)).read_text() or None
        except (FileNotFoundError, NotADirectoryError, ValueError):
            return None

    def entry(self, doc_id: str) -> Path:
        """The folder of one image (not made here). Raises ValueError for an id that is not a file name."""
        return self.images / check_job_id(doc_id)

    def used(self, doc_id: str) -> bool:
        """Whether anything of an image with this id is kept."""
        return self.entry(doc_id).exists()

    def add_frame(self, doc_id: str, step: int, png: bytes, settings: Mapping[str, Any]) -> None:
        """Keep one frame (PNG bytes), with ``settings`` embedded."""
        entry = self.entry(doc_id)
        entry.mkdir(parents=True, exist_ok=True)
        _write_atomic(entry / frame_name(step), embed_settings(png, settings))

    def add_animation_frame(self, doc_id: str, frame: int, png: bytes, settings: Mapping[str, Any]) -> None:
        """Keep one finished frame of an animation (PNG bytes, frame number from 0), with ``settings``."""
        entry = self.entry(doc_id)
        entry.mkdir(parents=True, exist_ok=True)
        _write_atomic(entry / animation_frame_name(frame), embed_settings(png, settings))

    def add_picture(self, doc_id: str, tags: Mapping[str, Any], png: bytes, settings: Mapping[str, Any]) -> str:
        """Keep a picture made beside the frames (a VR frame's eye view, a step ``intermediate_saves``
        keeps: ``tags`` as the sampler sends it back, ``eye`` or ``partial``, and ``frame``) under
        ``picture_name("", tags)``, with ``settings`` embedded; returns that name. Raises ValueError
        for tags that name no such picture."""
        name = picture_name("", tags)
        if name is None:
            raise ValueError(f"not an eye view or an intermediate save: {dict(tags)!r}")
        path = self.entry(doc_id) / name
        path.parent.mkdir(parents=True, exist_ok=True)
        _write_atomic(path, embed_settings(png, settings))
        return name

    def pictures(self, doc_id: str) -> list[tuple[str, dict[str, Any]]]:
        """The eye views and intermediate saves kept of an image as (name, tags), ordered by frame
        (a still image's first), then eye views before saves, then name."""
        entry = self.entry(doc_id)
        names = []
        for folder, prefix in ((entry, ""), (entry / PARTIALS_FOLDER, f"{PARTIALS_FOLDER}/")):
            try:
                names += [prefix + n for n in os.listdir(folder)]
            except (FileNotFoundError, NotADirectoryError):
                pass
        found = [(name, tags) for name in names if (tags := picture_tags(name)) is not None]

        def order(item: tuple[str, dict[str, Any]]):
            name, tags = item
            return (tags.get("frame", -1), "partial" in tags, len(name), name)

        return sorted(found, key=order)

    def add_final(self, doc_id: str, png: bytes, settings: Mapping[str, Any]) -> None:
        """Keep an image's final picture when it is not its last frame (GoBig's enlarged image), with
        ``settings``; ``finish`` then leaves it as it is."""
        entry = self.entry(doc_id)
        entry.mkdir(parents=True, exist_ok=True)
        _write_atomic(entry / FINAL, embed_settings(png, settings))

    def finish(self, doc_id: str, record: Mapping[str, Any]) -> dict[str, Any]:
        """Write the image's record (its ``status`` decides whether the last frame is its final image)
        and, when it is done, ``final.png``. ``record['frames']`` lists the kept frames as
        ``{"step", "cur_t"}`` (by default the frame files found). An animation's record has
        ``animation``: ``{"frames", "fps", ...}``; its finished frames become ``video.mp4`` here,
        however it ended. Returns the record as written."""
        entry = self.entry(doc_id)
        entry.mkdir(parents=True, exist_ok=True)
        frames = self.frames(doc_id)
        written = {"frames": [{"step": step} for step, _ in frames], **record, "id": doc_id, "written": time.time()}
        written["owner"] = self.owner(doc_id)
        finished = self.animation_frames(doc_id)
        if "animation" in record:
            written["animation"] = {**record["animation"], "frames_done": [n for n, _ in finished]}
            if finished:
                self.write_mp4(doc_id, float(record["animation"].get("fps") or 12))
        last = frames or finished
        if record.get("status") == "done" and last and not record.get("gobig_size"):
            _write_atomic(entry / FINAL, last[-1][1].read_bytes())
        _write_atomic(entry / RECORD, json.dumps(written).encode())
        return written

    def animation_frames(self, doc_id: str) -> list[tuple[int, Path]]:
        """An animation's finished frames as (frame, path), in frame order."""
        return self._files(doc_id, _ANIMATION_FRAME)

    def write_mp4(self, doc_id: str, fps: float) -> Path | None:
        """``video.mp4`` of the animation's finished frames at ``fps`` (disco.video.write_mp4); None
        without frames."""
        import numpy as np
        from PIL import Image

        from disco.video import write_mp4

        frames = self.animation_frames(doc_id)
        if not frames:
            return None

        def pixels():
            for _, path in frames:
                with Image.open(path) as picture:
                    yield np.asarray(picture.convert("RGB"))

        target = self.entry(doc_id) / MP4
        write_mp4(target, pixels(), fps)
        return target

    def read(self, doc_id: str) -> dict[str, Any] | None:
        """The image's record, or None while it is being made (or when there is no such image). A
        record file that is not one (any content: empty, cut short, not an object) is None too,
        with a line in the log naming it."""
        path = self.entry(doc_id) / RECORD
        try:
            record = json.loads(path.read_bytes())
        except (FileNotFoundError, NotADirectoryError):
            return None
        except (OSError, ValueError, RecursionError) as exc:
            LOG.warning("skipped the result record %s: %s", path, str(exc)[:200])
            return None
        if not _is_record(record):
            LOG.warning("skipped the result record %s: not an object with a status, frames and settings", path)
            return None
        return record

    def frames(self, doc_id: str) -> list[tuple[int, Path]]:
        """The kept frames as (step, path), in step order."""
        return self._files(doc_id, _FRAME)

    def _files(self, doc_id: str, pattern: re.Pattern) -> list[tuple[int, Path]]:
        try:
            names = os.listdir(self.entry(doc_id))
        except (FileNotFoundError, NotADirectoryError):
            return []
        return sorted((int(m[1]), self.entry(doc_id) / n) for n in names if (m := pattern.fullmatch(n)))

    def file(self, doc_id: str, name: str) -> Path | None:
        """One of the image's files by its name in the store (``final.png``, ``frames.gif``,
        ``sprite.png``, ``step0001.png``..., an animation's ``video.mp4``, ``frame0000.png``..., the
        eye views and intermediate saves of ``pictures``: ``frame0000_l.png``, ``partials/50%.png``...), or
        None. The GIF and the sprite sheet are made from the frames here when the Renderer never got
        the image (its caller was gone)."""
        numbered = _FRAME.fullmatch(name) or _ANIMATION_FRAME.fullmatch(name) or picture_tags(name) is not None
        if name not in (FINAL, GIF, SPRITE, MP4) and not numbered:
            return None
        path = self.entry(doc_id) / name
        if name in (GIF, SPRITE) and not path.exists() and self.read(doc_id) is not None:
            self.write_animations(doc_id)
        return path if path.is_file() else None

    def latest_frame(self, doc_id: str) -> Path | None:
        frames = self.frames(doc_id) or self.animation_frames(doc_id)
        return frames[-1][1] if frames else None

    def write_animations(self, doc_id: str, chunks: Any = None, settings: Mapping[str, Any] | None = None) -> None:
        """The GIF and the sprite sheet of the image's frames: from ``chunks`` (Documents with PNG URIs,
        as the Renderer has them) or else from the kept frame files (an animation's: its finished frames)."""
        entry = self.entry(doc_id)
        if chunks is None:
            from docarray import Document, DocumentArray

            frames = self.frames(doc_id) or self.animation_frames(doc_id)
            if not frames:
                return
            chunks = DocumentArray([Document(uri=str(path), tags={"step": step}) for step, path in frames])
            settings = (self.read(doc_id) or {}).get("settings", {})
        if not len(chunks):
            return
        entry.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=entry) as tmp:
            gif, sprite = Path(tmp) / GIF, Path(tmp) / SPRITE
            write_animations(chunks, gif, sprite, settings or {})
            os.replace(gif, entry / GIF)
            os.replace(sprite, entry / SPRITE)

    def keep_document(self, doc_id: str, document: Any) -> bool:
        """Keep ``document`` (a docarray Document as the Renderer returns it) when its run has a
        ``batch_name``, with the run's name, seed and the image's index; False when it has none."""
        tags = document.tags
        name = str(tags.get("batch_name") or "")
        if not name:
            return False
        entry = self.entry(doc_id)
        entry.mkdir(parents=True, exist_ok=True)
        _write_atomic(entry / DOCUMENT, document.to_json().encode())
        run = {
            "batch_name": name,
            "run_seed": int(tags.get("run_seed", tags.get("seed", 0))),
            "batch_index": int(tags.get("batch_index", 0)),
            "batch_position": int(tags.get("batch_position", 0)),  # its place in its batch (batch_size > 1)
            "written": time.time(),
        }
        _write_atomic(entry / RUN, json.dumps(run).encode())
        return True

    def run_documents(self, batch_name: str, may_see: Callable[[str], bool]) -> list[str]:
        """The Document ids of the latest run named ``batch_name`` among the images ``may_see`` (a
        Document id to bool: whether the caller owns it) admits, in ``batch_index`` order (then by
        place in the batch); [] when there is none. The latest run is the run seed of the newest image
        of that name; of images of that seed with the same index and place in its batch (the same run
        made again), the newest counts."""
        found = []
        for entry in self.images.iterdir():
            try:
                run = json.loads((entry / RUN).read_bytes())
                if run["batch_name"] != batch_name or not (entry / DOCUMENT).is_file():
                    continue
                index = (int(run["batch_index"]), int(run.get("batch_position", 0)))
                key = (float(run["written"]), int(run["run_seed"]), index)
            except (OSError, ValueError, TypeError, KeyError):
                continue
            if may_see(entry.name):
                found.append((key, entry.name))
        if not found:
            return []
        found.sort()
        latest = found[-1][0][1]
        by_index = {index: doc_id for (_, seed, index), doc_id in found if seed == latest}
        return [by_index[i] for i in sorted(by_index)]

    def document(self, doc_id: str) -> str | None:
        """The kept Document of an image (docarray's JSON of one Document), or None."""
        try:
            return (self.entry(doc_id) / DOCUMENT).read_text()
        except (FileNotFoundError, NotADirectoryError, ValueError):
            return None

    def last_change(self, doc_id: str) -> float:
        """When the entry last changed (its newest file), in seconds since the epoch."""
        entry = self.entry(doc_id)
        times = [entry.stat().st_mtime]
        for name in os.listdir(entry):
            try:
                times.append((entry / name).stat().st_mtime)
            except FileNotFoundError:
                pass
        return max(times)

    def sweep(self, now: float | None = None) -> list[str]:
        """Remove the entries untouched for ``ttl_s``, and their owners; returns their ids."""
        now = time.time() if now is None else now
        removed = []
        for entry in self.images.iterdir():
            try:
                if now - self.last_change(entry.name) > self.ttl_s:
                    shutil.rmtree(entry, ignore_errors=True)
                    removed.append(entry.name)
            except (FileNotFoundError, ValueError):
                pass
        for claim in self.owners.iterdir():  # the owners of removed entries, or of images never made
            try:
                if not (self.images / claim.name).exists() and now - claim.stat().st_mtime > self.ttl_s:
                    claim.unlink()
            except FileNotFoundError:
                pass
        return removed
