"""An animation as the client runs it: one request, its frames written as they finish, an MP4 at the end.

``plan_animation`` decides everything before the job starts: the run's seed and file prefix, the
frame to start at (``resume_run``: after the last finished frame in ``output_dir``, or after
``resume_from_frame``), and the bytes the request carries (``disco_service.wire``): the init
image, the previous frame's PNG of a resumed 2D or 3D run, or the video (the client reads
``video_init_path``; the server never opens a path), with, for a resumed flow-warped Video Input run,
the previous frame's PNG as the request's ``uri`` (a ``data:`` URI). While the job runs, each finished frame the
client fetches is written at once (``AnimationRun.keep_frame``), so a run whose client dies can be
resumed from its files. ``AnimationRun.save`` writes the frames that came back, the MP4 of every
frame in the folder, and returns the Document with every frame as a chunk.
"""

from __future__ import annotations

import base64
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from disco.animation_plan import AnimationPlan, flow_model_needed, plan_run
from disco.prompts import data_uri
from disco.settings import Settings, SettingsError
from disco_service import wire
from disco_service.client.user_files import MAX_VIDEO_BYTES, read_user_file
from disco_service.outputs import (
    data_uri_bytes,
    finished_frames,
    image_settings,
    latest_animation_seed,
    resumable_prefix,
    run_prefix,
    write_frame,
    write_pictures,
)

if TYPE_CHECKING:
    from disco.video import VideoInfo

__all__ = ["AnimationRun", "plan_animation"]


@dataclass
class AnimationRun:
    settings: Settings  # validated, with the run's seed
    output_dir: Path
    prefix: str  # reverse_diffusion-{batch_name}-{seed}[-runN]
    plan: AnimationPlan  # frames, steps and models, as the sampler will plan them too
    blob: bytes | None  # what the request carries (see the module's docstring)
    previous_frame: bytes | None = None  # a resumed flow-warped Video Input run: frame start - 1's PNG
    kept: dict[int, Path] = field(default_factory=dict)  # frames written during this run

    @property
    def start_frame(self) -> int:
        """The first frame this run makes."""
        return self.plan.start_frame

    @property
    def frames(self) -> int:
        """Frames of the whole animation."""
        return self.plan.frames

    @property
    def fps(self) -> float:
        """The MP4's frame rate."""
        return self.plan.fps

    @property
    def complete(self) -> bool:
        """Every frame is already in the folder: nothing to make (a resumed run that had finished)."""
        return self.plan.complete

    @property
    def with_init_loss(self) -> bool:
        """Whether some frame of this run is pulled towards a picture (LPIPS, which needs VGG16)."""
        return self.plan.with_init_loss

    @property
    def steps(self) -> int:
        """Diffusion steps of every frame this run makes."""
        return self.plan.run_steps

    def document(self, client_timeout_s: float | None = None):
        """The run's one request."""
        from docarray import Document

        tags = wire.request_tags_animation(self.settings, self.start_frame, client_timeout_s)
        doc = Document(id=uuid.uuid4().hex, tags=tags)
        if self.blob:
            doc.blob = self.blob
        if self.previous_frame is not None:  # beside the video in blob (wire.resumed_frame)
            doc.uri = data_uri(self.previous_frame)
        return doc

    def keep_frame(self, doc, frame: int, png: bytes) -> None:
        """A finished frame fetched while the job runs: written at once, with its settings."""
        self.output_dir.mkdir(parents=True, exist_ok=True)
        self.kept[frame] = write_frame(self.output_dir, self.prefix, frame, png, image_settings(doc.tags))

    def save(self, result) -> list[Path]:
        """Write ``result``'s frames (this run's), the MP4 of every frame in the folder, and make
        ``result`` the whole animation: every frame as a chunk (``tags['frame']``), ``uri`` the
        last, ``tags['files']`` the frames and the MP4. Earlier frames' files are left as they are."""
        from disco.video import write_mp4

        self.output_dir.mkdir(parents=True, exist_ok=True)
        recipe = image_settings(result.tags)
        for chunk in result.chunks:
            if chunk.uri and chunk.tags.get("frame") is not None:
                write_frame(self.output_dir, self.prefix, int(chunk.tags["frame"]), data_uri_bytes(chunk.uri), recipe)
        pictures = write_pictures(result, self.output_dir, self.prefix, recipe)  # eye views, intermediate saves
        frames = {n: p for n, p in finished_frames(self.output_dir, self.prefix).items() if n < self.frames}
        files = list(frames.values())
        if frames:
            mp4 = self.output_dir / f"{self.prefix}.mp4"
            write_mp4(mp4, (_pixels(p) for p in files), self.fps)
            files.append(mp4)
        made = {int(c.tags["frame"]): c.tags for c in result.chunks if c.tags.get("frame") is not None}
        result.chunks.clear()
        from docarray import Document

        for n, path in frames.items():
            uri = "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode()
            result.chunks.append(Document(uri=uri, tags={**made.get(n, {}), "frame": n}))
        if len(result.chunks):
            result.uri = result.chunks[-1].uri
        result.tags.update(files=[str(f) for f in files + pictures], frames=self.frames, mp4_fps=self.fps)
        return files

    def finished_document(self):
        """The result of a run that had nothing left to make."""
        doc = self.document()
        doc.blob = None
        doc.tags.update(status="done", steps_done=0, frames_done=0)
        return doc


def plan_animation(settings: Settings, init_bytes: bytes | None) -> AnimationRun:
    """Where the animation starts and what its request carries; raises ``SettingsError`` naming the
    setting (``resume_run``, ``resume_from_frame``, ``video_init_path``) when that cannot be had."""
    out = Path(settings.output_dir).expanduser()
    if settings.resume_run:
        if settings.seed is None:
            settings.seed = latest_animation_seed(out, settings.batch_name)
            if settings.seed is None:
                raise SettingsError(
                    "resume_run", f"no animation of batch_name {settings.batch_name!r} to resume in {str(out)!r}"
                )
        prefix = resumable_prefix(out, settings.batch_name, settings.seed)
        if prefix is None:
            raise SettingsError(
                "resume_run",
                f"no frames of batch_name {settings.batch_name!r} and seed {settings.seed} in {str(out)!r}",
            )
        start = _resume_start(settings, finished_frames(out, prefix), prefix)
    else:
        if settings.seed is None:
            settings.seed = wire.new_run_seed()
        prefix, start = run_prefix(out, settings.batch_name, settings.seed, animation=True), 0
    blob, video, previous = init_bytes, None, None
    if settings.animation_mode == "Video Input" and start > 0 and flow_model_needed(settings):
        previous = finished_frames(out, prefix)[start - 1].read_bytes()  # the flow warps it onto frame start
        wire.resumed_frame(settings, start, data_uri(previous))  # refuses a PNG of another size
    if settings.animation_mode == "Video Input":
        blob, video = _video(settings)
    elif start > 0:
        blob = finished_frames(out, prefix)[start - 1].read_bytes()  # a resumed 2D or 3D run starts from it
    plan = plan_run(settings, init_image=init_bytes is not None, start_frame=start, video=video)
    return AnimationRun(settings, out, prefix, plan, blob, previous)


def _resume_start(settings: Settings, frames: dict[int, Path], prefix: str) -> int:
    """The frame after the last one kept: the last of the unbroken run of frames from 0, or
    ``resume_from_frame`` (which must be there, as must every frame before it)."""
    have = 0
    while have in frames:
        have += 1
    if settings.resume_from_frame is None:
        return have
    if settings.resume_from_frame >= have:
        shown = f"frames 0 to {have - 1}" if have else "no frame 0"
        raise SettingsError(
            "resume_from_frame", f"frame {settings.resume_from_frame} of {prefix} is not there ({shown} are)"
        )
    return settings.resume_from_frame + 1


def _video(settings: Settings) -> tuple[bytes, VideoInfo]:
    """The video's bytes and what the plan needs to know of it (its frames and pace)."""
    from disco.video import video_info  # torch, through disco.images: only a video run needs it here

    source = settings.video_init_path
    if source is None:
        raise SettingsError("video_init_path", "Video Input needs a video: give its path")
    if isinstance(source, str):
        source = read_user_file("video_init_path", source, MAX_VIDEO_BYTES)
    return source, video_info(source)


def _pixels(path: Path) -> Any:
    import numpy as np
    from PIL import Image

    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"))
