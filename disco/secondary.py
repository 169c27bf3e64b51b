"""Disco Diffusion's secondary model (``secondary_model_imagenet_2.pth``).

A small v-objective UNet that predicts the denoised image cheaply, so CLIP guidance does not
need gradients through the big ADM UNet. Its time is continuous in [0, 1] with
``alpha = cos(pi t / 2)``, ``sigma = sin(pi t / 2)``. The nesting of ``net`` (``SkipBlock``s
with a ``main`` stack) is fixed by the checkpoint's key names.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import NamedTuple

import torch
from torch import nn

from .checkpoint import load_state_dict_file


class SecondaryOutput(NamedTuple):
    v: torch.Tensor
    pred: torch.Tensor  # denoised image estimate
    eps: torch.Tensor


def alpha_sigma_to_t(alpha: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """Continuous time of a noise level, the secondary model's time input."""
    return torch.atan2(sigma, alpha) * 2 / math.pi


def t_to_alpha_sigma(t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.cos(t * math.pi / 2), torch.sin(t * math.pi / 2)


def _conv(c_in: int, c_out: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(c_in, c_out, 3, padding=1), nn.ReLU(inplace=True))


class SkipBlock(nn.Module):
    """Concatenates a sub-network's output with its input along channels."""

    def __init__(self, *main: nn.Module):
        super().__init__()
        self.main = nn.Sequential(*main)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.main(x), x], dim=1)


class FourierFeatures(nn.Module):
    def __init__(self, in_features: int, out_features: int):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_features // 2, in_features))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f = 2 * math.pi * x @ self.weight.T
        return torch.cat([f.cos(), f.sin()], dim=-1)


class SecondaryDiffusionImageNet2(nn.Module):
    def __init__(self):
        super().__init__()
        c = [64, 128, 128, 256, 256, 512]
        self.timestep_embed = FourierFeatures(1, 16)
        down = nn.AvgPool2d(2)
        up = nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False)

        # Built inside out: the innermost level first, each wrapped by the one above it.
        inner: list[nn.Module] = [down, _conv(c[4], c[5]), _conv(c[5], c[5]), _conv(c[5], c[5]), _conv(c[5], c[4]), up]
        for lvl in (4, 3, 2, 1):
            inner = [
                down,
                _conv(c[lvl - 1], c[lvl]),
                _conv(c[lvl], c[lvl]),
                SkipBlock(*inner),
                _conv(c[lvl] * 2, c[lvl]),
                _conv(c[lvl], c[lvl - 1]),
                up,
            ]
        self.net = nn.Sequential(
            _conv(3 + 16, c[0]),
            _conv(c[0], c[0]),
            SkipBlock(*inner),
            _conv(c[0] * 2, c[0]),
            nn.Conv2d(c[0], 3, 3, padding=1),
        )

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> SecondaryOutput:
        emb = self.timestep_embed(t[:, None])[..., None, None].expand(-1, -1, *x.shape[2:])
        v = self.net(torch.cat([x, emb.to(x.dtype)], dim=1))
        alpha, sigma = (a[:, None, None, None] for a in t_to_alpha_sigma(t))
        return SecondaryOutput(v, x * alpha - v * sigma, x * sigma + v * alpha)


def build_secondary(state_dict: dict[str, torch.Tensor] | None = None) -> SecondaryDiffusionImageNet2:
    if state_dict is None:
        return SecondaryDiffusionImageNet2()
    with torch.device("meta"):
        model = SecondaryDiffusionImageNet2()
    model.load_state_dict(state_dict, strict=True, assign=True)
    return model.eval().requires_grad_(False)


def load_secondary(path: str | Path) -> SecondaryDiffusionImageNet2:
    """Load ``secondary_model_imagenet_2.pth`` strictly, tensors only."""
    return build_secondary(load_state_dict_file(path))
