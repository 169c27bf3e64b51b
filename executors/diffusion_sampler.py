"""Jina executor: guided reverse diffusion, one Document per image, with progress and cancel.

``/generate`` runs one job at a time per replica (Jina serialises synchronous endpoints).
A job whose caller has not polled ``/progress`` for ``client_timeout_s`` seconds
(``DISCO_CLIENT_TIMEOUT_S``, default 60, counted from its start until the first poll; a
client's ``client_timeout_s`` tag may shorten it) stops at its next step as ``abandoned``:
Jina's gateway does not pass on that a caller hung up, so silence is the sign. A job asked to
stop ends with the reason as its status (``cancelled``, ``shutdown``, ``abandoned``) and its frames so far.
Bad input fails the request before sampling starts; a fault during sampling (NaN, an
exception) ends the job with ``tags['status'] == 'failed'``, ``tags['error']`` and its code
``tags['error_code']`` (``sampling_failed``; ``setting_invalid`` with ``tags['error_setting']`` for a
setting found wrong only then), and the frames made so far still go back.
An animation (``animation_mode`` 2D, 3D or Video Input) is one Document and one job: its state also says
``frame`` of ``frames`` and the steps of the whole run (``run_step`` of ``run_total``); its display
frames are shown as the latest frame but not kept; each finished frame becomes a chunk and is put
on the job board for the client to fetch while the job runs. A stop ends it at the next step with
every finished frame. The steps ``intermediate_saves`` keeps and a VR animation's eye views go back
as ``doc.matches`` (PNG data URIs tagged ``partial`` and ``step``, or ``eye``, and ``frame``),
for the client to write beside the frames, and into the result store as they are made.
Jobs publish their state on the shared job board; ``/progress`` and ``/cancel`` are answered
from it by the Renderer, to which the client addresses them, so this executor's replicas
receive ``/generate`` requests only and Jina's round-robin hands consecutive images to
different replicas. Each kept frame of an image and, at the end, its record go to the result
store (``DISCO_RESULTS_DIR``, disco_service/results.py) as they are made, so a result is kept even
when its caller (or the gateway) is gone before the image comes back; of an animation, the store
keeps the record.
"""

import base64
import os
import socket
from collections.abc import Iterator, Mapping

import numpy as np
import torch
from docarray import Document, DocumentArray
from jina import Executor, requests

from disco.animation import AnimationPlan, animate, plan_run
from disco.gobig import gobig
from disco.images import decode_init_image, png_bytes, to_uint8_hwc
from disco.loading import ModelCache, select_device
from disco.prompts import prompt_key_at, prompt_weight_of
from disco.sampler import sample_image
from disco.settings import DIFFUSION_MODELS, SettingsError, uses_secondary_model
from disco.video import video_frames, video_info
from disco.warp3d import EYES
from disco_service import config, wire
from disco_service.outputs import image_settings
from disco_service.server.flow_secret import guard_executor, resolve
from disco_service.server.jobs import JobBoard
from disco_service.server.results import ResultStore
from disco_service.server.sampling_run import SamplingRun


class SamplingFailed(RuntimeError):
    """A fault while sampling (the image became NaN)."""

    code = wire.ErrorCode.SAMPLING_FAILED


class DocumentIdInUse(ValueError):
    """The id a batch's further image would take is used already (``wire.batch_image_id``)."""

    code = wire.ErrorCode.DOCUMENT_ID_IN_USE


class DiffusionSampler(Executor):
    def __init__(
        self,
        model_dir: str | None = None,
        use_gpu: bool | None = None,
        preload: str | None = DIFFUSION_MODELS[0],
        state_store: str | None = None,
        mode: str | None = None,
        client_timeout_s: float | None = None,
        checkpoints_anywhere: bool = False,
        results_dir: str | None = None,
        flow_secret: str | None = None,
        **kwargs,
    ):
        """Arguments (``uses_with``, or ``serve.py``'s flags) override the service's configuration
        (``disco_service.config``). ``state_store``: the state store that holds the job board (a
        SQLite file or a ``postgresql://`` URL; serve.py passes its server's). ``preload``: the
        diffusion model loaded at start (``none``: on the first request); ``mode``: ``fast`` or
        ``exact`` (disco/fast.py); ``checkpoints_anywhere``: a ``diffusion_model`` checkpoint path
        may name any file on this machine (the Flow a client starts for itself), else only files in
        the model directory; ``flow_secret``: what the gateway's calls must carry
        (server/flow_secret.py)."""
        super().__init__(**kwargs)
        cfg = config.load()
        guard_executor(self, resolve(flow_secret))
        device = select_device(use_gpu if use_gpu is not None else cfg.use_gpu, "DISCO_USE_GPU")
        self.cache = ModelCache(
            model_dir or cfg.model_dir, device, mode or cfg.mode, cfg.weights_mirrors, bool(checkpoints_anywhere)
        )
        if preload and preload != "none":  # load the models at start, not on the first request
            self.cache.models(preload, use_secondary_model=True, with_init_loss=False)
        self.board = JobBoard(state_store or cfg.store_target(config.FLOW_GRPC_PORT))
        self.board.sweep()
        self.store = ResultStore(results_dir or cfg.results_dir, cfg.result_ttl_s)
        self.replica = f"{socket.gethostname()}:{os.getpid()}"
        self.client_timeout_s = float(client_timeout_s or cfg.client_timeout_s)

    @requests(on="/generate")
    def generate(self, docs: DocumentArray, **kwargs) -> DocumentArray:
        """Each Document's image, or with ``batch_size`` B above 1 its batch: the Document is image 0 and
        B - 1 Documents follow it (``wire.batch_documents``), each with its own frames and final image."""
        answer = DocumentArray()
        for doc in docs:
            answer.extend(self._generate(doc))
        return answer

    def _generate(self, doc: Document) -> list[Document]:
        s = wire.settings_from_tags(doc.tags)  # validated by the encoder, the Flow's first executor
        if doc.embedding is None:
            raise ValueError("the Document has no prompt embedding: send it through the PromptEncoder first")
        prompts_at = _prompts_at(doc, s.clip_models)
        kept: list[dict] = []  # an image's frames in the result store: step and diffusion timestep
        batch = wire.batch_documents(doc, s.batch_size)
        self._claim_batch(batch)
        if s.animation_mode == "None":
            init = decode_init_image(doc.blob, s.width, s.height) if doc.blob else None
            plan = plan_run(s, init_image=init is not None)
            models = self.cache.models(s.diffusion_model, uses_secondary_model(s), plan.with_init_loss, s.clip_models)
            first = () if s.gobig_from_init else sample_image(s, *prompts_at(0), models, seed=s.seed, init_image=init)
            steps = self._image(batch, first, kept, plan.run_steps)
            if s.gobig:  # the image (or, gobig_from_init, the init image) enlarged and diffused again by tiles
                steps = self._gobig(doc, s, steps, prompts_at(0), models, init, plan)
        else:  # its finished frames: on the job board, in the result store, with its client
            plan, arguments = _animation_job(doc, s)
            models = self.cache.models(
                s.diffusion_model, uses_secondary_model(s), plan.with_init_loss, s.clip_models, plan.depth_models,
                plan.flow_model,
            )  # fmt: skip
            steps = self._animation(doc, plan, animate(s, prompts_at, models, s.seed, **arguments))
        asked = float(doc.tags.get("client_timeout_s") or 0)
        timeout = min(self.client_timeout_s, asked) if asked else self.client_timeout_s
        run = SamplingRun(doc.id, plan, self.board, self.replica, timeout)
        run.drive(steps)
        record = run.record(s.seed, image_settings(doc.tags), kept)
        if "gobig_size" in doc.tags:  # its final.png is the enlarged image, kept already
            record["gobig_size"] = doc.tags["gobig_size"]
        ended = run.end(self.store, record)
        doc.tags.update(ended)
        for other in batch[1:]:  # the batch's other images: their own records, the same run
            self.store.finish(other.id, {**record, "settings": image_settings(other.tags)})
            other.tags.update(ended)
        return batch

    def _claim_batch(self, batch: list[Document]) -> None:
        """A batch's further images belong to whoever sent its Document (``ResultStore.claim``), so
        their results answer that caller alone; an id another caller holds, or one used before, fails
        the request before sampling (``DocumentIdInUse``). A batch of one has nothing to claim."""
        if len(batch) == 1:
            return
        owner = self.store.owner(batch[0].id)
        for other in batch[1:]:
            taken = self.store.used(other.id) or (owner is not None and not self.store.claim(other.id, owner))
            if taken or (owner is None and self.store.owner(other.id) is not None):
                raise DocumentIdInUse(
                    f"Document id {other.id!r} (image {other.tags[wire.BATCH_POSITION_TAG]} of the batch of "
                    f"{batch[0].id!r}) was already used for an image; send the batch with a new id"
                )

    def _image(self, batch: list[Document], reports, kept: list[dict], total: int) -> Iterator[int]:
        """Run one image, or one batch (``batch``: its Documents, image 0's first, as
        ``wire.batch_documents`` makes them): every display frame of each image becomes a chunk of its
        Document and a frame in the result store under its id (``kept`` lists them: the same steps for
        every image); the job board, under image 0's id, shows image 0's latest frame and counts the
        batch's steps once. Yields the steps done (of ``total``, GoBig's tiles included)."""
        doc = batch[0]
        recipes = [image_settings(d.tags) for d in batch]
        for report in reports:
            png = None
            images = report.images if report.images is not None else [report.image]
            if report.partial is not None:  # intermediate_saves: kept beside the display frames
                for d, recipe, image in zip(batch, recipes, images, strict=False):
                    picture = _checked_picture(image, report.step)
                    self._picture(d, recipe, picture, partial=report.partial, step=report.step)
            if report.image is not None and _displayed(report, doc):
                for d, recipe, image in zip(batch, recipes, images, strict=False):
                    frame = _checked_picture(image, report.step)
                    d.chunks.append(Document(tensor=frame, tags={"step": report.step, "cur_t": report.cur_t}))
                    shown_png = png_bytes(frame)
                    self.store.add_frame(d.id, report.step, shown_png, recipe)
                    png = png or shown_png  # image 0's, for the job board
                kept.append({"step": report.step, "cur_t": report.cur_t})
            shown = {"loss": report.loss} if report.loss is not None else {}
            if png is not None:
                shown.update(frame_step=report.step, frame_cur_t=report.cur_t)  # pollers fetch new frames
            self.board.update(doc.id, png, step=report.step, total=total, cur_t=report.cur_t, **shown)
            yield report.step

    def _picture(self, doc: Document, recipe: Mapping, picture: np.ndarray, **tags) -> None:
        """A picture made beside the frames: a step ``intermediate_saves`` keeps (``partial``: its file
        name's end, ``step``) or an eye view of a VR frame (``eye``: ``l`` or ``r``), with the
        ``frame`` of an animation. It goes back as one of ``doc.matches`` (a PNG data URI with
        ``tags``), which the client writes to ``output_dir``, and into the result store at once, under
        the same name (``disco_service.outputs.picture_name``), for the job API."""
        png = png_bytes(picture)
        self.store.add_picture(doc.id, tags, png, recipe)
        doc.matches.append(Document(uri="data:image/png;base64," + base64.b64encode(png).decode(), tags=tags))

    def _gobig(self, doc: Document, s, first: Iterator[int], prompts, models, init, plan) -> Iterator[int]:
        """After the image's own steps (``first``), GoBig (disco/gobig.py): each tile's steps are counted
        on after them, its display frames shown as the latest frame (not kept: they are parts of
        another picture), and the blended enlarged image becomes the Document's ``tensor`` (the
        Renderer makes it the final image) and the result store's ``final.png``."""
        done = 0
        for done in first:
            yield done
        if s.gobig_from_init:
            image = init[0].add(1).div(2)
        elif doc.chunks:
            image = torch.from_numpy(doc.chunks[-1].tensor).permute(2, 0, 1).float().div(255)
        else:
            return
        recipe = image_settings(doc.tags)
        for item in gobig(s, *prompts, models, s.seed, image):
            report = item.report
            done += 1
            png = png_bytes(_checked_frame(report)) if report.image is not None else None
            shown = {"loss": report.loss} if report.loss is not None else {}
            self.board.update(
                doc.id, png, step=done, total=plan.run_steps, cur_t=report.cur_t, tile=item.tile + 1, tiles=item.tiles,
                **shown,
            )  # fmt: skip
            if item.image is not None:
                if not torch.isfinite(item.image).all():
                    raise SamplingFailed(f"the enlarged image became NaN at tile {item.tile + 1} of {item.tiles}")
                doc.tensor = to_uint8_hwc(item.image)
                self.store.add_final(doc.id, png_bytes(doc.tensor), recipe)
                doc.tags["gobig_size"] = [doc.tensor.shape[1], doc.tensor.shape[0]]
            yield done

    def _animation(self, doc: Document, plan: AnimationPlan, frame_steps) -> Iterator[int]:
        """Run an animation: display frames are the latest frame only, finished frames become
        chunks and go on the job board; yields the steps done over the whole run."""
        done, finished = 0, 0
        recipe = image_settings(doc.tags)
        doc.tags.update(frames=plan.frames, mp4_fps=plan.fps, frames_done=0)
        for item in frame_steps:
            report = item.report
            done += 1 if report.total else 0  # a turbo frame, made by the warp alone, takes no step
            png = png_bytes(_checked_frame(report)) if report.image is not None else None
            shown = {"loss": report.loss} if report.loss is not None else {}
            if report.partial is not None:  # intermediate_saves: kept beside the frames
                picture = _checked_frame(report)
                self._picture(doc, recipe, picture, partial=report.partial, step=report.step, frame=item.frame)
            for eye, view in zip(EYES, item.eyes or (), strict=False):  # vr_mode: the frame's eye views
                self._picture(doc, recipe, view, eye=eye, frame=item.frame)
            if item.finished is not None:
                finished += 1
                tags = {"frame": item.frame, "seed": item.seed, "step": report.step, "cur_t": report.cur_t}
                doc.chunks.append(Document(tensor=item.finished, tags=tags))
                finished_png = png_bytes(item.finished)
                self.board.add_finished_frame(doc.id, item.frame, finished_png)
                self.store.add_animation_frame(doc.id, item.frame, finished_png, recipe)
                shown.update(frames_done=finished, last_finished=item.frame)
                doc.tags["frames_done"] = finished
            self.board.update(
                doc.id, png, frame=item.frame, frames=item.frames, step=report.step, total=report.total,
                cur_t=report.cur_t, run_step=done, run_total=plan.run_steps, **shown,
            )  # fmt: skip
            yield done


def _displayed(report, doc: Document) -> bool:
    """Whether a step's image is a display frame (every ``display_rate``-th step and the last),
    not only a step ``intermediate_saves`` keeps."""
    if report.partial is None:
        return True
    rate = int(doc.tags.get("display_rate") or 1)
    return (report.step - 1) % rate == 0 or report.cur_t == -1


def _checked_frame(report) -> np.ndarray:
    return _checked_picture(report.image, report.step)


def _checked_picture(image: torch.Tensor, step: int) -> np.ndarray:
    """``image`` (3, H, W) in [0, 1] as (H, W, 3) uint8; raises ``SamplingFailed`` when it became NaN."""
    if not torch.isfinite(image).all():
        raise SamplingFailed(f"the image became NaN at step {step}")
    return to_uint8_hwc(image)


def _prompts_at(doc: Document, clip_models: list[str]):
    """The embeddings (by CLIP model: ``wire.unpack_embeddings``) and weights of the prompts that apply
    at a frame (``tags['prompt_sets']``)."""
    embeds = {
        name: torch.from_numpy(e) for name, e in wire.unpack_embeddings(doc.embedding, doc.tags, clip_models).items()
    }
    weights = [w if isinstance(w, Mapping) else float(w) for w in doc.tags[wire.PROMPT_WEIGHTS_TAG]]
    sets, at = {}, 0
    for frame, count in doc.tags.get("prompt_sets") or [[0, len(weights)]]:
        sets[int(frame)] = (at, at + int(count))
        at += int(count)

    def prompts_at(frame: int):
        start, end = sets[prompt_key_at(sets, frame)]
        # a scheduled prompt's weight: its schedule and CLIP models (Prompt.wire_weight), as a Prompt
        own = [prompt_weight_of(f"prompt {i}", w) if isinstance(w, Mapping) else w for i, w in enumerate(weights)]
        return {name: e[start:end] for name, e in embeds.items()}, own[start:end]

    return prompts_at


def _animation_job(doc: Document, s) -> tuple[AnimationPlan, dict]:
    """What an animation request asks for: its plan (``disco.animation_plan``, as its client planned
    it) and the arguments of ``disco.animation.animate`` (where it starts, from which picture or video;
    a flow-warped Video Input run resumed at frame n also from frame n - 1, sent as ``doc.uri``,
    and the video's frame n - 1)."""
    start = int(doc.tags.get("start_frame") or 0)
    video = video_info(doc.blob) if s.animation_mode == "Video Input" else None
    plan = plan_run(s, init_image=bool(doc.blob), start_frame=start, video=video)
    if plan.complete:
        raise SettingsError(
            "resume_from_frame", f"the animation has {plan.frames} frames; nothing is left after {start}"
        )
    arguments: dict = {"start_frame": start}
    if video is not None and start > 0 and s.video_init_flow_warp:  # resumed: warps frame start - 1 as made
        frames = video_frames(doc.blob, s.extract_nth_frame, start - 1)
        previous_video = next(frames, None)
        previous_made, doc.uri = wire.resumed_frame(s, start, doc.uri), None  # not sent back as the result
        arguments.update(video_frames=frames, frames=plan.frames, previous_video_frame=previous_video)
        arguments["previous_frame"] = previous_made
    elif video is not None:
        arguments.update(video_frames=video_frames(doc.blob, s.extract_nth_frame, start), frames=plan.frames)
    else:
        picture = decode_init_image(doc.blob, s.width, s.height) if doc.blob else None
        if start == 0:
            arguments["init_image"] = picture
        else:  # resumed: the blob is the previous frame
            arguments["previous_frame"] = to_uint8_hwc(picture[0].add(1).div(2))
    return plan, arguments
