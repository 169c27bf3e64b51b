"""One image from settings and prompt embeddings: the guided reverse diffusion, step by step.

``sample_image`` is a generator of ``StepReport``s, one per diffusion step; every
``display_rate``-th step and the last carry the current image (the model's denoised estimate,
as Disco Diffusion shows it), and so do the steps ``intermediate_saves`` keeps (``disco.partials``;
their reports say so in ``partial``). Stop iterating to stop the run. Everything random comes from
``seed``, so on the CPU the same seed gives identical frames.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import TYPE_CHECKING

import numpy as np
import torch

from .clip_catalog import DEFAULT_CLIP_MODEL, clip_spec
from .cutouts import CutoutRandomness
from .diffusion import GaussianDiffusion
from .guidance import ClipGuide, Guidance
from .partials import intermediate_steps, partial_suffix
from .perlin import perlin_init
from .prompts import Prompt, normalised_weights, step_weights
from .settings import Settings, bool_schedule, uses_secondary_model

if TYPE_CHECKING:
    from .depth import DepthModel
    from .optical_flow import FlowModel
from .symmetry import mirror_halves

log = logging.getLogger(__name__)
FUZZY_COPIES = 25  # Disco Diffusion's fuzzy_prompt: 25 jittered copies of each prompt


@dataclass
class Models:
    """Everything loaded once per process and shared by runs."""

    unet: torch.nn.Module
    clip: torch.nn.Module | None = None  # CLIP RN50 (the default clip_models) or the first of ``clips``
    secondary: torch.nn.Module | None = None
    init_loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None  # LPIPS, when loaded
    device: torch.device = torch.device("cpu")
    autocast: torch.dtype | None = None  # the guidance's reduced precision (fast mode on a GPU)
    # the CLIP models by clip_models name; when not given, ``clip`` is RN50::openai
    clips: dict[str, torch.nn.Module] = field(default_factory=dict)
    depth: DepthModel | None = None  # a 3D animation's depth estimator, when loaded
    flow: FlowModel | None = None  # Video Input's optical flow (RAFT), when loaded

    def __post_init__(self) -> None:
        if not self.clips:
            if self.clip is None:
                raise ValueError("Models needs a CLIP model: clip or clips")
            self.clips = {DEFAULT_CLIP_MODEL: self.clip}
        elif self.clip is None:
            self.clip = next(iter(self.clips.values()))


@dataclass
class StepReport:
    step: int  # steps done in this run, 1..total
    total: int
    cur_t: int  # Disco's cur_t after the step: the next timestep index, -1 after the last step
    image: torch.Tensor | None  # (3, H, W) in [0, 1] on the CPU, on display steps and the last: image 0 of the batch
    loss: float | None  # the latest CLIP loss, for display (on display steps): the batch's images' summed
    fp32_retries: int = 0  # steps so far whose fp16 guidance overflowed and was computed again in fp32
    partial: str | None = None  # intermediate_saves keeps this step: its file name's end (disco.partials)
    # every image of the batch (batch_size, 3, H, W) in [0, 1] on the CPU, when ``image`` is given
    images: torch.Tensor | None = None


def as_prompts(prompt_weights: Sequence[float | Prompt]) -> list[Prompt]:
    """Prompt weights as ``Prompt``s: a number is a prompt weighed so at every step by every model."""
    return [w if isinstance(w, Prompt) else Prompt(f"prompt {i}", float(w)) for i, w in enumerate(prompt_weights)]


def _targets(
    settings: Settings, embeds: torch.Tensor, prompts: list[Prompt], name: str, g: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor, np.ndarray | None, np.ndarray | None]:
    """One model's targets: embeddings (fuzzed copies with ``fuzzy_prompt``), their constant weights,
    and, when prompts or the model are scheduled, the weights and whether the model judges at
    each virtual step (``disco.prompts.step_weights``; else None, None)."""
    copies = FUZZY_COPIES if settings.fuzzy_prompt else 1
    if settings.fuzzy_prompt:
        jitter = torch.randn((FUZZY_COPIES, *embeds.shape), generator=g).to(embeds)
        embeds = (embeds.unsqueeze(0) + jitter * settings.rand_mag).clamp(0, 1).transpose(0, 1).flatten(0, 1)
    given = (settings.clip_models_schedules or {}).get(name)
    on = bool_schedule("clip_models_schedules", given) if given is not None else None
    if all(p.plain for p in prompts) and on is None:
        weights = [p.weight for p in prompts for _ in range(copies)]
        w = torch.tensor(normalised_weights(weights), dtype=torch.float32, device=embeds.device)
        return embeds, w, None, None
    table, active = step_weights(prompts, name, on, copies)
    first = int(np.argmax(active)) if active.any() else 0
    w = torch.tensor(table[first], dtype=torch.float32, device=embeds.device)
    return embeds, w, table, active


def _clip_guides(
    settings: Settings,
    prompt_embeds: torch.Tensor | Mapping[str, torch.Tensor],
    prompt_weights: Sequence[float | Prompt],
    models: Models,
    g: torch.Generator,
) -> list[ClipGuide]:
    """Each of ``settings.clip_models`` with its model and its prompt targets, in order (a fuzzy
    prompt's jitter is drawn model by model, as the notebook does)."""
    prompts = as_prompts(prompt_weights)
    if isinstance(prompt_embeds, torch.Tensor):
        if len(settings.clip_models) != 1:
            raise ValueError(f"one prompt embedding for {len(settings.clip_models)} clip_models: give one per model")
        prompt_embeds = {settings.clip_models[0]: prompt_embeds}
    guides = []
    for name in settings.clip_models:
        if name not in models.clips or name not in prompt_embeds:
            missing = "model" if name not in models.clips else "prompt embedding"
            raise ValueError(f"clip_models: {name} has no loaded {missing} (loaded: {', '.join(models.clips)})")
        embeds, weights, table, active = _targets(settings, prompt_embeds[name].to(models.device), prompts, name, g)
        spec = clip_spec(name)
        guides.append(
            ClipGuide(models.clips[name], embeds, weights, name, spec.mean, spec.std, step_weights=table, active=active)
        )
    return guides


def sample_image(
    settings: Settings,
    prompt_embeds: torch.Tensor | Mapping[str, torch.Tensor],
    prompt_weights: Sequence[float | Prompt],
    models: Models,
    seed: int,
    init_image: torch.Tensor | None = None,
) -> Iterator[StepReport]:
    """Run one batch of ``settings.batch_size`` images (discoart's ``batch_size``: painted together,
    x_T drawn as (batch_size, 3, H, W) from ``seed``; each report's ``images`` holds them all and
    ``image`` the first, so batch_size 1 is the single image). What the batch shares is the
    notebook's: one set of cutout positions and augmentations per cutout batch, applied to every
    image, the gradient's RMS clamp and the saturation loss taken over the whole batch, and a step
    whose gradient has a NaN anywhere taken unguided for every image (``disco.guidance``); each
    image's CLIP, TV, range and init losses are its own.

    ``prompt_embeds``: per model of ``settings.clip_models`` (by name), its normalised embeddings of
    the prompts (m, d), or one tensor when there is one model (image prompts' cutout embeddings are
    rows like any prompt's); ``prompt_weights``: each row's weight, a number, or a ``Prompt`` whose
    weight schedule and CLIP models apply by step; ``init_image`` (1, 3, H, W) in [-1, 1], the start
    of every image of the batch (as is a perlin start)."""
    device = models.device
    g_cpu = torch.Generator().manual_seed(seed)
    g_dev = g_cpu if device.type == "cpu" else torch.Generator(device).manual_seed(seed)
    h, w = settings.height, settings.width
    diffusion = GaussianDiffusion(settings.steps)
    x_T = torch.randn((settings.batch_size, 3, h, w), generator=g_dev, device=device)

    clips = _clip_guides(settings, prompt_embeds, prompt_weights, models, g_cpu)
    start = None
    if init_image is not None:
        start = init_image.to(device)
    if settings.perlin_init:
        start = perlin_init(w, h, settings.perlin_mode, g_cpu).to(device)
    guidance = Guidance(
        settings,
        diffusion,
        clips,
        CutoutRandomness(g_cpu, g_dev),
        secondary=models.secondary if uses_secondary_model(settings) else None,
        unet=models.unet,
        # The init loss compares with the user's image (not with perlin noise).
        init=init_image.to(device) if init_image is not None else None,
        init_loss=models.init_loss,
        autocast=models.autocast,
    )
    common = dict(
        skip_steps=settings.skip_steps, init_image=start, cond_fn=guidance, clip_denoised=settings.clip_denoised
    )
    if settings.use_horizontal_symmetry or settings.use_vertical_symmetry:
        common.update(
            transformation_fn=partial(
                mirror_halves, horizontal=settings.use_horizontal_symmetry, vertical=settings.use_vertical_symmetry
            ),
            transformation_percent=settings.transformation_percent,
        )
    if settings.diffusion_sampling_mode == "ddim":
        loop = diffusion.ddim_loop(models.unet, x_T, eta=settings.eta, generator=g_dev, **common)
    else:
        loop = diffusion.plms_loop(models.unet, x_T, **common)

    total = diffusion.num_timesteps - settings.skip_steps
    saves = intermediate_steps(settings.intermediate_saves, settings.steps, settings.skip_steps)
    for j, step in enumerate(loop):
        last = step.index == 0
        saved = None  # the end of the file name of a step intermediate_saves keeps
        if j in saves:
            saved = partial_suffix(settings.intermediate_saves, j, settings.steps, settings.skip_steps)
        show = j % settings.display_rate == 0 or last or saved is not None
        images = step.pred_xstart.add(1).div(2).clamp(0, 1).detach().cpu() if show else None
        # read on display steps only: reading a device value makes the host wait for the GPU
        loss = float(guidance.losses[-1]) if show and guidance.losses else None
        image = images[0] if images is not None else None
        yield StepReport(j + 1, total, step.index - 1, image, loss, guidance.fp32_retries, saved, images)
    if guidance.fp32_retries:
        log.warning("%d of %d steps overflowed in fp16 and were computed in fp32", guidance.fp32_retries, total)
