"""The engine's guidance and sampler with one CLIP model (RN50), written out as they ran when RN50 was
the only CLIP: the tests run this next to the engine to prove that ``clip_models=["RN50::openai"]``
(the default) gives the same gradient and the same pictures, bit for bit.

Only the building blocks that many CLIP models share (cutouts, losses, diffusion, perlin noise) are
imported; the CLIP part of the step and the sampler's prompt targets are spelt out here.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import open_clip
import torch

from disco.cutouts import CutoutRandomness, make_cutouts
from disco.diffusion import GaussianDiffusion
from disco.guidance import range_loss, saturation_loss, spherical_dist_loss, tv_loss
from disco.perlin import perlin_init
from disco.prompts import normalised_weights
from disco.secondary import alpha_sigma_to_t
from disco.settings import Settings, count_schedule, parse_schedule

CL = torch.channels_last
MEAN = torch.tensor(open_clip.OPENAI_DATASET_MEAN).view(1, 3, 1, 1)
STD = torch.tensor(open_clip.OPENAI_DATASET_STD).view(1, 3, 1, 1)


def normalize(images: torch.Tensor) -> torch.Tensor:
    return (images - MEAN.to(images.device, images.dtype)) / STD.to(images.device, images.dtype)


@dataclass
class SingleClipGuidance:
    settings: Settings
    diffusion: GaussianDiffusion
    clip: torch.nn.Module
    target_embeds: torch.Tensor
    target_weights: torch.Tensor
    rng: CutoutRandomness
    secondary: torch.nn.Module | None = None
    unet: torch.nn.Module | None = None
    max_cutouts_per_pass: int = 64

    def __post_init__(self) -> None:
        s = self.settings
        self.overview, self.innercut = count_schedule("", s.cut_overview), count_schedule("", s.cut_innercut)
        self.ic_pow, self.icgray_p = parse_schedule("", s.cut_ic_pow), parse_schedule("", s.cut_icgray_p)
        self.losses: list[torch.Tensor] = []

    def _denoised(self, x: torch.Tensor, index: int) -> torch.Tensor:
        d = self.diffusion
        fac = float(d.sqrt_one_minus_alphas_cumprod[index])
        if self.secondary is not None:
            alpha, sigma = d.coef(d.sqrt_alphas_cumprod, index, x), d.coef(d.sqrt_one_minus_alphas_cumprod, index, x)
            estimate = self.secondary(x, alpha_sigma_to_t(alpha, sigma).repeat(x.shape[0])).pred.float()
        else:
            t = torch.full((x.shape[0],), d.scaled_timestep(index), device=x.device)
            estimate = d.xstart_from_eps(x, index, self.unet(x, t)[:, : x.shape[1]])
        return estimate * fac + x * (1 - fac)

    def __call__(self, x: torch.Tensor, t_scaled: torch.Tensor, index: int) -> torch.Tensor:
        s, n = self.settings, x.shape[0]
        at = 1000 - (int(np.float32(self.diffusion.scaled_timestep(index))) + 1)
        overview, innercut = self.overview[at], self.innercut[at]
        with torch.enable_grad():
            x = x.detach().requires_grad_()
            x_in = self._denoised(x, index)
            x_in_grad = torch.zeros_like(x_in)
            if s.clip_guidance_scale:
                per_pass = max(1, self.max_cutouts_per_pass // ((overview + innercut) * n))
                for first in range(0, s.cutn_batches, per_pass):
                    batches = min(per_pass, s.cutn_batches - first)
                    cuts = torch.cat(
                        [
                            make_cutouts(
                                x_in.add(1).div(2),
                                overview,
                                innercut,
                                self.ic_pow[at],
                                self.icgray_p[at],
                                self.rng,
                                224,
                                s.skip_augs,
                            )  # fmt: skip
                            for _ in range(batches)
                        ]
                    )
                    image_embeds = self.clip.encode_image(normalize(cuts).contiguous(memory_format=CL)).float()
                    dists = spherical_dist_loss(image_embeds.unsqueeze(1), self.target_embeds.unsqueeze(0))
                    dists = dists.view(batches, overview + innercut, n, -1)
                    clip_losses = dists.mul(self.target_weights).sum(3).mean(1)
                    self.losses.extend(clip_losses.sum(1).detach().unbind())
                    x_in_grad += (
                        torch.autograd.grad(clip_losses.sum() * s.clip_guidance_scale, x_in)[0] / s.cutn_batches
                    )
            loss = (
                tv_loss(x_in).sum() * s.tv_scale
                + range_loss(x_in).sum() * s.range_scale
                + saturation_loss(x_in) * s.sat_scale
            )
            x_in_grad += torch.autograd.grad(loss, x_in)[0]
            grad = -torch.autograd.grad(x_in, x, x_in_grad)[0]
        if s.clamp_grad:
            magnitude = grad.square().mean().sqrt()
            grad = grad * magnitude.clamp(max=s.clamp_max) / magnitude.clamp(min=1e-12)
        nan = torch.isnan(x_in_grad).any() | torch.isnan(grad).any()
        return torch.where(nan, torch.zeros_like(grad), grad)


def single_clip_targets(
    settings: Settings, embeds: torch.Tensor, weights: list[float], g: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    if settings.fuzzy_prompt:
        jitter = torch.randn((25, *embeds.shape), generator=g).to(embeds)
        embeds = (embeds.unsqueeze(0) + jitter * settings.rand_mag).clamp(0, 1).transpose(0, 1).flatten(0, 1)
        weights = [w for w in weights for _ in range(25)]
    return embeds, torch.tensor(normalised_weights(weights), dtype=torch.float32, device=embeds.device)


def sample_single_clip(
    settings: Settings, prompt_embeds: torch.Tensor, prompt_weights: list[float], models, seed: int
) -> Iterator[torch.Tensor]:
    """The frames (3, H, W) of a run on the CPU, every step's."""
    g = torch.Generator().manual_seed(seed)
    diffusion = GaussianDiffusion(settings.steps)
    x_T = torch.randn((1, 3, settings.height, settings.width), generator=g)
    embeds, weights = single_clip_targets(settings, prompt_embeds, prompt_weights, g)
    start = perlin_init(settings.width, settings.height, settings.perlin_mode, g) if settings.perlin_init else None
    guidance = SingleClipGuidance(
        settings, diffusion, models.clip, embeds, weights, CutoutRandomness(g, g),
        secondary=models.secondary if settings.use_secondary_model else None, unet=models.unet,
    )  # fmt: skip
    common = dict(
        skip_steps=settings.skip_steps, init_image=start, cond_fn=guidance, clip_denoised=settings.clip_denoised
    )
    if settings.diffusion_sampling_mode == "ddim":
        loop = diffusion.ddim_loop(models.unet, x_T, eta=settings.eta, generator=g, **common)
    else:
        loop = diffusion.plms_loop(models.unet, x_T, **common)
    for step in loop:
        yield step.pred_xstart[0].add(1).div(2).clamp(0, 1).detach()
