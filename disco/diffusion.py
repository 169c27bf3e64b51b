"""Gaussian diffusion as Disco Diffusion runs it: linear betas, ``ddim{steps}`` respacing,
rescaled timesteps, DDIM (with ``eta``) and PLMS loops guided through the score rule.

Schedule arithmetic is done in float64 and each coefficient is cast to float32 when used,
as the reference does. Loops are generators: they yield every step's ``sample`` and the
model's own ``pred_xstart`` so callers can show progress, keep frames and stop early.
Randomness comes only from the noise function (by default a ``torch.Generator``).
A ``transformation_fn`` (Disco Diffusion's symmetry) may change the sample at given fractions
of the run (``transformation_indices``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import NamedTuple

import numpy as np
import torch

# model(x, t_scaled) -> output whose first 3 channels are eps (the rest, variance, unused here)
ModelFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
# cond_fn(x, t_scaled, index) -> gradient of the log-density guidance at x
CondFn = Callable[[torch.Tensor, torch.Tensor, int], torch.Tensor]
# noise_fn(like) -> standard normal noise of like's shape
NoiseFn = Callable[[torch.Tensor], torch.Tensor]
# transformation_fn(x) -> x changed (e.g. mirrored), same shape
TransformationFn = Callable[[torch.Tensor], torch.Tensor]


class Step(NamedTuple):
    index: int  # respaced timestep index, counting down to 0
    sample: torch.Tensor
    pred_xstart: torch.Tensor  # the model's estimate before guidance


def linear_betas(num_timesteps: int) -> np.ndarray:
    scale = 1000 / num_timesteps
    return np.linspace(scale * 0.0001, scale * 0.02, num_timesteps, dtype=np.float64)


def ddim_timesteps(num_timesteps: int, count: int) -> list[int]:
    """``ddim{count}`` respacing: the smallest stride giving exactly ``count`` timesteps.

    The reference stops its search one stride short, so ``count=1`` has no respacing there;
    here a stride of ``num_timesteps`` gives the single timestep 0.
    """
    for stride in range(1, num_timesteps + 1):
        if len(range(0, num_timesteps, stride)) == count:
            return list(range(0, num_timesteps, stride))
    raise ValueError(f"steps: cannot take exactly {count} timesteps from {num_timesteps} with an integer stride")


def transformation_indices(sampled: int, transformation_percent: Sequence[float]) -> set[int]:
    """The respaced timestep indices at whose start a transformation changes the sample.

    As in Disco Diffusion's guided-diffusion fork (``ddim_sample_loop_progressive``): over the
    ``sampled`` steps (``steps - skip_steps``), whose indices count down from ``sampled - 1`` to 0,
    fraction ``p`` of the run is the step of index ``int(sampled * (1 - p))``; the transformation
    is applied to the sample that step starts from, before the model sees it. So with 240 sampled
    steps and ``p = 0.09`` it is index 218, after 21 steps. A fraction whose index falls outside
    the run (``p`` very close to 0) changes nothing.
    """
    return {int(sampled * (1 - p)) for p in transformation_percent} & set(range(sampled))


def generator_noise(generator: torch.Generator | None) -> NoiseFn:
    def draw(like: torch.Tensor) -> torch.Tensor:
        return torch.randn(like.shape, generator=generator, device=like.device, dtype=like.dtype)

    return draw


class GaussianDiffusion:
    """A respaced diffusion of ``steps`` steps over ``(1000 // steps) * steps`` base timesteps."""

    def __init__(self, steps: int, diffusion_steps: int | None = None, rescale_timesteps: bool = True):
        if not isinstance(steps, int) or not 1 <= steps <= 1000:
            raise ValueError(f"steps: must be an integer in [1, 1000], got {steps!r}")
        self.steps = steps
        self.diffusion_steps = diffusion_steps or (1000 // steps) * steps
        self.rescale_timesteps = rescale_timesteps
        base_abar = np.cumprod(1.0 - linear_betas(self.diffusion_steps))
        self.timestep_map = ddim_timesteps(self.diffusion_steps, steps)
        abar = base_abar[self.timestep_map]
        self.alphas_cumprod = abar
        self.alphas_cumprod_prev = np.append(1.0, abar[:-1])
        self.betas = 1.0 - abar / self.alphas_cumprod_prev
        self.sqrt_alphas_cumprod = np.sqrt(abar)
        self.sqrt_one_minus_alphas_cumprod = np.sqrt(1.0 - abar)
        self.sqrt_recip_alphas_cumprod = np.sqrt(1.0 / abar)
        self.sqrt_recipm1_alphas_cumprod = np.sqrt(1.0 / abar - 1)

    @property
    def num_timesteps(self) -> int:
        return len(self.timestep_map)

    def scaled_timestep(self, index: int) -> float:
        """The timestep the network receives for a respaced index (0..1000 range)."""
        t = float(self.timestep_map[index])
        return t * (1000.0 / self.diffusion_steps) if self.rescale_timesteps else t

    @staticmethod
    def coef(arr: np.ndarray, index: int, like: torch.Tensor) -> torch.Tensor:
        """``arr[index]`` as a float32 scalar tensor on ``like``'s device."""
        # a fill, not a copy from the host: a copy to the GPU would wait for its queued work
        return torch.full((), float(arr[index]), dtype=torch.float32, device=like.device)

    def q_sample(self, x_start: torch.Tensor, index: int, noise: torch.Tensor) -> torch.Tensor:
        """Noise ``x_start`` to the level of respaced step ``index``."""
        c = self.coef
        return (
            c(self.sqrt_alphas_cumprod, index, x_start) * x_start
            + c(self.sqrt_one_minus_alphas_cumprod, index, x_start) * noise
        )

    def xstart_from_eps(self, x: torch.Tensor, index: int, eps: torch.Tensor) -> torch.Tensor:
        c = self.coef
        return c(self.sqrt_recip_alphas_cumprod, index, x) * x - c(self.sqrt_recipm1_alphas_cumprod, index, x) * eps

    def eps_from_xstart(self, x: torch.Tensor, index: int, pred_xstart: torch.Tensor) -> torch.Tensor:
        c = self.coef
        return (c(self.sqrt_recip_alphas_cumprod, index, x) * x - pred_xstart) / c(
            self.sqrt_recipm1_alphas_cumprod, index, x
        )

    def _eps(
        self, model: ModelFn, x: torch.Tensor, index: int, cond_fn: CondFn | None, clip_denoised: bool
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Model eps, guided eps and the unguided ``pred_xstart`` at one step."""
        t = torch.full((x.shape[0],), self.scaled_timestep(index), device=x.device)
        with torch.no_grad():
            eps = model(x, t)[:, : x.shape[1]]
        pred_xstart = self.xstart_from_eps(x, index, eps)
        if clip_denoised:
            pred_xstart = pred_xstart.clamp(-1, 1)
            eps = self.eps_from_xstart(x, index, pred_xstart)
        guided = eps
        if cond_fn is not None:
            # Score rule (Song et al.): eps' = eps - sqrt(1 - abar) * grad log p(y | x).
            abar = self.coef(self.alphas_cumprod, index, x)
            guided = eps - (1 - abar).sqrt() * cond_fn(x, t, index)
        return eps, guided, pred_xstart

    def _initial(self, x_T: torch.Tensor, skip_steps: int, init_image: torch.Tensor | None) -> tuple[torch.Tensor, int]:
        if not 0 <= skip_steps < self.num_timesteps:
            raise ValueError(f"skip_steps: must be in [0, steps), got {skip_steps} with steps={self.num_timesteps}")
        first = self.num_timesteps - skip_steps - 1
        if init_image is None and skip_steps:
            init_image = torch.zeros_like(x_T)  # start from noise at the skipped-to level
        if init_image is not None:
            return self.q_sample(init_image, first, x_T), first
        return x_T, first

    def ddim_loop(
        self,
        model: ModelFn,
        x_T: torch.Tensor,
        *,
        eta: float = 0.0,
        skip_steps: int = 0,
        init_image: torch.Tensor | None = None,
        cond_fn: CondFn | None = None,
        clip_denoised: bool = False,
        noise_fn: NoiseFn | None = None,
        generator: torch.Generator | None = None,
        transformation_fn: TransformationFn | None = None,
        transformation_percent: Sequence[float] = (),
    ) -> Iterator[Step]:
        """DDIM (Song et al., eq. 12) with ``eta``; ``transformation_fn`` changes the sample at the
        start of the steps ``transformation_indices`` names."""
        noise_fn = noise_fn or generator_noise(generator)
        x, first = self._initial(x_T, skip_steps, init_image)
        transform_at = transformation_indices(first + 1, transformation_percent) if transformation_fn else set()
        for index in range(first, -1, -1):
            if index in transform_at:
                x = transformation_fn(x)
            _, eps, pred_xstart_model = self._eps(model, x, index, cond_fn, clip_denoised)
            pred_xstart = self.xstart_from_eps(x, index, eps)
            abar = self.coef(self.alphas_cumprod, index, x)
            abar_prev = self.coef(self.alphas_cumprod_prev, index, x)
            sigma = eta * torch.sqrt((1 - abar_prev) / (1 - abar)) * torch.sqrt(1 - abar / abar_prev)
            noise = noise_fn(x)  # drawn at every step, the last included, like the reference
            x = pred_xstart * torch.sqrt(abar_prev) + torch.sqrt(1 - abar_prev - sigma**2) * eps
            if index > 0:
                x = x + sigma * noise
            yield Step(index, x, pred_xstart_model)

    def plms_loop(
        self,
        model: ModelFn,
        x_T: torch.Tensor,
        *,
        order: int = 2,
        skip_steps: int = 0,
        init_image: torch.Tensor | None = None,
        cond_fn: CondFn | None = None,
        clip_denoised: bool = False,
        transformation_fn: TransformationFn | None = None,
        transformation_percent: Sequence[float] = (),
    ) -> Iterator[Step]:
        """Pseudo linear multistep: one improved-Euler start, then Adams-Bashforth on eps.

        ``transformation_fn`` changes the sample at the start of the steps ``transformation_indices``
        names, as in the DDIM loop (Disco Diffusion applies it in DDIM only); the eps history of
        the earlier steps is kept as it was."""
        if order not in (1, 2, 3, 4):
            raise ValueError(f"order: must be 1, 2, 3 or 4, got {order!r}")
        bashforth = {
            1: (1.0,),
            2: (3 / 2, -1 / 2),
            3: (23 / 12, -16 / 12, 5 / 12),
            4: (55 / 24, -59 / 24, 37 / 24, -9 / 24),
        }
        x, first = self._initial(x_T, skip_steps, init_image)
        transform_at = transformation_indices(first + 1, transformation_percent) if transformation_fn else set()
        old_eps: list[torch.Tensor] = []
        for index in range(first, -1, -1):
            if index in transform_at:
                x = transformation_fn(x)
            abar_prev = self.coef(self.alphas_cumprod_prev, index, x)
            _, eps, pred_xstart_model = self._eps(model, x, index, cond_fn, clip_denoised)
            if order > 1 and index == first:
                guided_xstart = self.xstart_from_eps(x, index, eps)
                x_mid = guided_xstart * torch.sqrt(abar_prev) + torch.sqrt(1 - abar_prev) * eps
                # The reference evaluates at t - 1 here; at t = 0 there is no t - 1, so stay at 0.
                _, eps_2, _ = self._eps(model, x_mid, max(index - 1, 0), cond_fn, clip_denoised)
                old_eps = [eps]
                eps_prime = (eps + eps_2) / 2
            else:
                old_eps.append(eps)
                coefs = bashforth[min(order, len(old_eps))]
                eps_prime = sum(c * e for c, e in zip(coefs, reversed(old_eps), strict=True))
            if len(old_eps) >= order:
                old_eps.pop(0)
            if index > 0:
                pred_prime = self.xstart_from_eps(x, index, eps_prime)
                x = pred_prime * torch.sqrt(abar_prev) + torch.sqrt(1 - abar_prev) * eps_prime
            else:
                x = self.xstart_from_eps(x, index, eps)
            yield Step(index, x, pred_xstart_model)
