"""Disco Diffusion's CLIP guidance: the gradient that steers each diffusion step.

From the noisy ``x`` we estimate the clean image (cheaply with the secondary model, or with
the UNet), blend it with ``x`` by the noise level, and score it: spherical distance between
CLIP embeddings of its cutouts and the weighted prompts, plus total-variation, range,
saturation and (with an init image) LPIPS losses. The gradient of the score with respect to
``x`` is returned, NaN made zero, its RMS clamped to ``clamp_max``. The scales, ``cutn_batches``
and ``clamp_max`` may follow schedules over 1000 virtual steps, read as the cutout schedules are.

With several CLIP models (``clip_models``) each one judges cutouts of its own, made at its input
size, against the prompts embedded by itself, ``cutn_batches`` batches each, one model after the
other; their CLIP losses add up (as the Disco Diffusion notebook loops over its ``model_stats``).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from .clip_catalog import DEFAULT_CLIP_MODEL, OPENAI_MEAN, OPENAI_STD
from .clip_model import clip_normalize, input_size
from .cut_presets import cut_schedules
from .cutouts import CutoutRandomness, make_cutouts
from .diffusion import GaussianDiffusion
from .memory import cutouts_per_pass
from .secondary import alpha_sigma_to_t
from .settings import Settings, bool_schedule, count_schedule, parse_schedule

CL = torch.channels_last  # CLIP's convolutions run faster on NHWC (about 10% on CPU)


def spherical_dist_loss(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Squared great-circle distance between (normalised) embeddings."""
    x, y = F.normalize(x, dim=-1), F.normalize(y, dim=-1)
    return (x - y).norm(dim=-1).div(2).arcsin().pow(2).mul(2)


def tv_loss(image: torch.Tensor) -> torch.Tensor:
    """L2 total variation per image."""
    image = F.pad(image, (0, 1, 0, 1), "replicate")
    dx = image[..., :-1, 1:] - image[..., :-1, :-1]
    dy = image[..., 1:, :-1] - image[..., :-1, :-1]
    return (dx**2 + dy**2).mean([1, 2, 3])


def range_loss(image: torch.Tensor) -> torch.Tensor:
    """How far pixels stray outside [-1, 1], per image."""
    return (image - image.clamp(-1, 1)).pow(2).mean([1, 2, 3])


def saturation_loss(image: torch.Tensor) -> torch.Tensor:
    return (image - image.clamp(-1, 1)).abs().mean()


@dataclass
class Schedules:
    """Per-virtual-step cutout settings and scales, read at index ``1000 - (int(t) + 1)`` (a
    setting given as a number has that number at every index)."""

    overview: list[int]
    innercut: list[int]
    ic_pow: list[float]
    icgray_p: list[float]
    clip_guidance_scale: list[float]
    cutn_batches: list[int]
    tv_scale: list[float]
    range_scale: list[float]
    sat_scale: list[float]
    init_scale: list[float]
    clamp_max: list[float]
    clamp_grad: list[bool]
    use_secondary_model: list[bool]

    @classmethod
    def from_settings(cls, s: Settings) -> Schedules:
        cuts = cut_schedules(vars(s))  # settings not validated may still leave them to the model's group
        return cls(
            count_schedule("cut_overview", cuts["cut_overview"]),
            count_schedule("cut_innercut", cuts["cut_innercut"]),
            parse_schedule("cut_ic_pow", cuts["cut_ic_pow"]),
            parse_schedule("cut_icgray_p", cuts["cut_icgray_p"]),
            s.schedule("clip_guidance_scale"),
            count_schedule("cutn_batches", s.cutn_batches),
            *(s.schedule(name) for name in ("tv_scale", "range_scale", "sat_scale", "init_scale", "clamp_max")),
            bool_schedule("clamp_grad", s.clamp_grad),
            bool_schedule("use_secondary_model", s.use_secondary_model),
        )


@dataclass
class ClipGuide:
    """One CLIP model's part of the guidance: the model, the prompts embedded by it and their weights."""

    model: torch.nn.Module
    target_embeds: torch.Tensor  # (m, d), one row per (possibly fuzzed) prompt; d: this model's width
    target_weights: torch.Tensor  # (m,), divided by their absolute sum
    name: str = DEFAULT_CLIP_MODEL  # its clip_models name: which memory figures size its passes
    mean: tuple[float, float, float] = OPENAI_MEAN  # the image statistics it was trained with
    std: tuple[float, float, float] = OPENAI_STD
    cutouts_per_pass: int | None = None  # most cutouts per CLIP pass; by default what free memory holds
    # With prompt schedules, per-prompt CLIP models or clip_models_schedules: the weight of each row of
    # target_embeds at each virtual step, (1000, m) float64 (disco.prompts.step_weights: 0 where a
    # row does not apply), and whether this model judges at each step, (1000,) bool. None: the
    # constant target_weights at every step.
    step_weights: np.ndarray | None = None
    active: np.ndarray | None = None
    _at_step: dict = field(default_factory=dict, repr=False)  # rows in use -> (their index, weights by step)

    def targets_at(self, at: int) -> tuple[torch.Tensor, torch.Tensor] | None:
        """The embeddings and weights this model judges against at virtual step ``at``, or None
        when it is off there. Rows that do not apply are left out (not weighted 0), so a step gives
        exactly the gradient of a run without them."""
        if self.step_weights is None:
            return self.target_embeds, self.target_weights
        if not self.active[at]:
            return None
        row = self.step_weights[at]
        rows = tuple(np.flatnonzero(row).tolist())
        if rows not in self._at_step:  # a few patterns per run: their index and weights go to the device once
            device = self.target_embeds.device
            index = torch.tensor(rows, device=device)
            by_step = torch.tensor(self.step_weights[:, rows], dtype=torch.float32).to(device)
            self._at_step[rows] = (index, by_step)
        index, by_step = self._at_step[rows]
        embeds = self.target_embeds if len(rows) == len(row) else self.target_embeds.index_select(0, index)
        return embeds, by_step[at]

    @property
    def size(self) -> int:
        """Its input size: the side of its cutouts, pixels."""
        return input_size(self.model)


@dataclass
class Guidance:
    settings: Settings
    diffusion: GaussianDiffusion
    clips: list[ClipGuide]  # the clip_models, in order; their losses add up
    rng: CutoutRandomness
    secondary: torch.nn.Module | None = None
    unet: torch.nn.Module | None = None  # used when there is no secondary model
    init: torch.Tensor | None = None  # (1, 3, H, W) in [-1, 1], for the init loss
    init_loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None
    autocast: torch.dtype | None = None  # reduced precision for CLIP and the secondary model
    # most cutouts per CLIP pass (one backward each) for every model, overriding each ClipGuide's
    max_cutouts_per_pass: int | None = None
    # steps whose fp16 gradient was not finite and were computed again in fp32
    fp32_retries: int = 0
    # CLIP loss of each cutout batch, for display; kept on the device so the loop never waits
    losses: list[torch.Tensor] = field(default_factory=list)
    schedules: Schedules = field(init=False)

    def __post_init__(self) -> None:
        self.schedules = Schedules.from_settings(self.settings)
        if self.secondary is None and self.unet is None:
            raise ValueError("guidance needs the secondary model or the UNet to estimate the clean image")
        if not self.clips:
            raise ValueError("guidance needs at least one CLIP model")
        pixels = self.settings.width * self.settings.height * self.settings.batch_size
        for clip in self.clips:  # one model's passes end before the next model's begin: each has the memory
            if clip.cutouts_per_pass is None:
                device, half = clip.target_embeds.device, self.autocast is not None
                clip.cutouts_per_pass = cutouts_per_pass(device, half, pixels, clip.name)

    def _denoised(self, x: torch.Tensor, index: int, at: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
        """The clean-image estimate, and the blend with ``x`` that the losses see (the secondary
        model makes the estimate where ``use_secondary_model`` is on at virtual step ``at``)."""
        d = self.diffusion
        fac = float(d.sqrt_one_minus_alphas_cumprod[index])
        if self.secondary is not None and (self.unet is None or self.schedules.use_secondary_model[at]):
            alpha, sigma = d.coef(d.sqrt_alphas_cumprod, index, x), d.coef(d.sqrt_one_minus_alphas_cumprod, index, x)
            cosine_t = alpha_sigma_to_t(alpha, sigma).repeat(x.shape[0])
            estimate = self.secondary(x, cosine_t).pred.float()
        else:
            t = torch.full((x.shape[0],), d.scaled_timestep(index), device=x.device)
            estimate = d.xstart_from_eps(x, index, self.unet(x, t)[:, : x.shape[1]])
        return estimate, estimate * fac + x * (1 - fac)

    def _cutouts(self, x_in: torch.Tensor, at: int, overview: int, innercut: int, size: int = 224) -> torch.Tensor:
        sch = self.schedules
        return make_cutouts(
            x_in.add(1).div(2), overview, innercut, sch.ic_pow[at], sch.icgray_p[at], self.rng, size,
            self.settings.skip_augs,
        )  # fmt: skip

    def __call__(self, x: torch.Tensor, t_scaled: torch.Tensor, index: int) -> torch.Tensor:
        if self.autocast != torch.float16:
            return self._gradient(x, index, self.autocast)
        # fp16 has no range to spare: a gradient that overflowed is computed again in fp32 with
        # the same cutouts (the generators rewound), counted, never silently zeroed. This reads
        # one value back per step, which bf16 (fp32's range) does not need.
        generators = [g for g in (self.rng.params, self.rng.noise) if g is not None]
        states, losses = [g.get_state() for g in generators], len(self.losses)
        grad, finite = self._gradient(x, index, torch.float16, check=True)
        if bool(finite):
            return grad
        self.fp32_retries += 1
        for g, state in zip(generators, states, strict=True):
            g.set_state(state)
        del self.losses[losses:]
        return self._gradient(x, index, None)

    def _gradient(self, x: torch.Tensor, index: int, dtype: torch.dtype | None, check: bool = False):
        """The guidance gradient at ``x``; with ``check``, also whether it came out finite (on the device)."""
        sch = self.schedules
        n = x.shape[0]
        # the schedule's virtual step, from Disco's int(t) + 1; read on the host (the float32 that
        # t_scaled holds), so the loop does not wait for the device here
        at = 1000 - (int(np.float32(self.diffusion.scaled_timestep(index))) + 1)
        overview, innercut = sch.overview[at], sch.innercut[at]
        clip_guidance_scale, cutn_batches = sch.clip_guidance_scale[at], sch.cutn_batches[at]
        precision = torch.autocast(x.device.type, dtype) if dtype else contextlib.nullcontext()
        with torch.enable_grad(), precision:
            x = x.detach().requires_grad_()
            _, x_in = self._denoised(x, index, at)
            x_in_grad = torch.zeros_like(x_in)
            for clip in self.clips if clip_guidance_scale else ():
                targets = clip.targets_at(at)
                if targets is None:  # off at this step (clip_models_schedules, or no prompt of its applies)
                    continue
                target_embeds, target_weights = targets
                # Disco runs CLIP once per cutout batch; the batches go through together here, in
                # passes of up to cutouts_per_pass cutouts (same cutouts, same RNG order, one
                # backward each), so the pass size changes the speed and the memory, not the result.
                limit = self.max_cutouts_per_pass or clip.cutouts_per_pass
                per_pass = max(1, limit // ((overview + innercut) * n))
                for first in range(0, cutn_batches, per_pass):
                    batches = min(per_pass, cutn_batches - first)
                    cuts = torch.cat([self._cutouts(x_in, at, overview, innercut, clip.size) for _ in range(batches)])
                    cuts = clip_normalize(cuts, clip.mean, clip.std).contiguous(memory_format=CL)
                    image_embeds = clip.model.encode_image(cuts).float()
                    dists = spherical_dist_loss(image_embeds.unsqueeze(1), target_embeds.unsqueeze(0))
                    dists = dists.view(batches, overview + innercut, n, -1)
                    clip_losses = dists.mul(target_weights).sum(3).mean(1)  # (batches, n)
                    self.losses.extend(clip_losses.sum(1).detach().unbind())
                    x_in_grad += torch.autograd.grad(clip_losses.sum() * clip_guidance_scale, x_in)[0] / cutn_batches
            # Every loss sees the blend x_in (the range loss too, as the PaddleHub module computes
            # it); their gradient with respect to x_in joins CLIP's and goes back to x through the blend.
            loss = (
                tv_loss(x_in).sum() * sch.tv_scale[at]
                + range_loss(x_in).sum() * sch.range_scale[at]
                + saturation_loss(x_in) * sch.sat_scale[at]
            )
            if self.init is not None and self.init_loss is not None and sch.init_scale[at]:
                loss = loss + self.init_loss(x_in, self.init).sum() * sch.init_scale[at]
            x_in_grad += torch.autograd.grad(loss, x_in)[0]
            grad = -torch.autograd.grad(x_in, x, x_in_grad)[0]
        finite = torch.isfinite(x_in_grad).all() & torch.isfinite(grad).all() if check else None
        if sch.clamp_grad[at]:
            magnitude = grad.square().mean().sqrt()
            grad = grad * magnitude.clamp(max=sch.clamp_max[at]) / magnitude.clamp(min=1e-12)
        # A step whose gradient has a NaN is taken unguided (as Disco does), decided on the
        # device: an `if` here would make the host wait for the GPU every step.
        nan = torch.isnan(x_in_grad).any() | torch.isnan(grad).any()
        grad = torch.where(nan, torch.zeros_like(grad), grad)
        return (grad, finite) if check else grad
