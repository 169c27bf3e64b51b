"""The ADM ("guided diffusion") UNet, laid out key for key like the published checkpoints.

Module names and nesting are fixed by the checkpoint files (``input_blocks.N.M...``,
``middle_block``, ``output_blocks``, ``out``); only the arithmetic inside is ours.
Attention uses ``scaled_dot_product_attention``, in the legacy head order the checkpoints
were trained with (heads split before q/k/v).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from .checkpoint import load_state_dict_file


@dataclass(frozen=True)
class UNetConfig:
    """The architecture facts that decide a checkpoint's layout."""

    image_size: int = 512
    num_channels: int = 256
    num_res_blocks: int = 2
    num_head_channels: int = 64
    attention_resolutions: tuple[int, ...] = (32, 16, 8)
    learn_sigma: bool = True
    in_channels: int = 3

    @property
    def channel_mult(self) -> tuple[float, ...]:
        # The ADM defaults: the multipliers follow from the image size.
        by_size = {
            512: (0.5, 1, 1, 2, 2, 4, 4),
            256: (1, 1, 2, 2, 4, 4),
            128: (1, 1, 2, 3, 4),
            64: (1, 2, 3, 4),
        }
        if self.image_size not in by_size:
            raise ValueError(f"image_size: no ADM layout for {self.image_size}; allowed: {sorted(by_size)}")
        return by_size[self.image_size]

    @property
    def out_channels(self) -> int:
        return self.in_channels * (2 if self.learn_sigma else 1)

    @property
    def attention_downsample_factors(self) -> set[int]:
        return {self.image_size // r for r in self.attention_resolutions}

    @classmethod
    def from_guided_diffusion(cls, options: dict) -> UNetConfig:
        """Build from a guided-diffusion ``model_config`` dict (as in Disco Diffusion)."""
        if options.get("class_cond"):
            raise ValueError("class_cond: only unconditional models are supported")
        if not options.get("use_scale_shift_norm", True) or not options.get("resblock_updown", True):
            raise ValueError("only use_scale_shift_norm=True, resblock_updown=True layouts are supported")
        res = options.get("attention_resolutions", "32,16,8")
        if isinstance(res, str):
            res = tuple(int(r) for r in res.split(","))
        return cls(
            image_size=int(options["image_size"]),
            num_channels=int(options["num_channels"]),
            num_res_blocks=int(options["num_res_blocks"]),
            num_head_channels=int(options["num_head_channels"]),
            attention_resolutions=tuple(res),
            learn_sigma=bool(options.get("learn_sigma", True)),
        )


# The two published unconditional ImageNet checkpoints Disco Diffusion uses.
MODEL_CONFIGS: dict[str, UNetConfig] = {
    "512x512_diffusion_uncond_finetune_008100": UNetConfig(image_size=512),
    "256x256_diffusion_uncond": UNetConfig(image_size=256),
}


class GroupNorm32(nn.GroupNorm):
    """32-group norm computed in fp32 whatever the input dtype (as the checkpoints expect)."""

    def __init__(self, channels: int):
        super().__init__(32, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x.float()).type(x.dtype)


def timestep_embedding(t: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """Sinusoidal embedding [cos | sin] of (possibly fractional) timesteps."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
    args = t[:, None].float() * freqs[None]
    return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)


class ResBlock(nn.Module):
    """Residual block with FiLM (scale-shift) timestep conditioning; optionally resamples by 2."""

    def __init__(self, channels: int, emb_channels: int, out_channels: int, resample: str | None = None):
        super().__init__()
        self.resample = resample
        self.in_layers = nn.Sequential(
            GroupNorm32(channels), nn.SiLU(), nn.Conv2d(channels, out_channels, 3, padding=1)
        )
        self.emb_layers = nn.Sequential(nn.SiLU(), nn.Linear(emb_channels, 2 * out_channels))
        self.out_layers = nn.Sequential(
            GroupNorm32(out_channels), nn.SiLU(), nn.Dropout(0.0), nn.Conv2d(out_channels, out_channels, 3, padding=1)
        )
        self.skip_connection = nn.Identity() if out_channels == channels else nn.Conv2d(channels, out_channels, 1)

    def _resample(self, x: torch.Tensor) -> torch.Tensor:
        if self.resample == "up":
            return F.interpolate(x, scale_factor=2, mode="nearest")
        if self.resample == "down":
            return F.avg_pool2d(x, kernel_size=2, stride=2)
        return x

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        # In-place activations and FiLM on fresh tensors: the same arithmetic with fewer large
        # allocations, which matter on a CPU.
        norm, _, conv = self.in_layers
        h = conv(self._resample(F.silu(norm(x), inplace=True)))
        x = self._resample(x)
        scale, shift = self.emb_layers(emb).type(h.dtype)[..., None, None].chunk(2, dim=1)
        out_norm, _, dropout, out_conv = self.out_layers
        h = out_norm(h).mul_(1 + scale).add_(shift)
        h = out_conv(dropout(F.silu(h, inplace=True)))
        return h.add_(self.skip_connection(x))


class AttentionBlock(nn.Module):
    """Spatial self-attention over all positions, heads of ``head_channels`` each."""

    def __init__(self, channels: int, head_channels: int):
        super().__init__()
        self.num_heads = channels // head_channels
        self.norm = GroupNorm32(channels)
        self.qkv = nn.Conv1d(channels, 3 * channels, 1)
        self.proj_out = nn.Conv1d(channels, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, *spatial = x.shape
        flat = x.reshape(b, c, -1)
        qkv = self.qkv(self.norm(flat))
        length = qkv.shape[-1]
        # Legacy order: the checkpoint's qkv channels are grouped per head, then q|k|v.
        q, k, v = qkv.reshape(b * self.num_heads, 3 * (c // self.num_heads), length).transpose(1, 2).chunk(3, dim=-1)
        h = F.scaled_dot_product_attention(q, k, v)
        h = h.transpose(1, 2).reshape(b, c, length)
        return (flat + self.proj_out(h)).reshape(b, c, *spatial)


class TimestepSequential(nn.Sequential):
    """A stack whose ResBlocks receive the timestep embedding."""

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        for layer in self:
            x = layer(x, emb) if isinstance(layer, ResBlock) else layer(x)
        return x


class UNetModel(nn.Module):
    """ADM UNet: eps (and variance interpolation when ``learn_sigma``) from a noisy image."""

    def __init__(self, config: UNetConfig):
        super().__init__()
        self.config = config
        mc = config.num_channels
        emb_ch = 4 * mc
        attn_at = config.attention_downsample_factors
        hc = config.num_head_channels
        self.time_embed = nn.Sequential(nn.Linear(mc, emb_ch), nn.SiLU(), nn.Linear(emb_ch, emb_ch))

        ch = int(config.channel_mult[0] * mc)
        self.input_blocks = nn.ModuleList([TimestepSequential(nn.Conv2d(config.in_channels, ch, 3, padding=1))])
        skip_chans = [ch]
        ds = 1
        for level, mult in enumerate(config.channel_mult):
            for _ in range(config.num_res_blocks):
                out_ch = int(mult * mc)
                layers: list[nn.Module] = [ResBlock(ch, emb_ch, out_ch)]
                ch = out_ch
                if ds in attn_at:
                    layers.append(AttentionBlock(ch, hc))
                self.input_blocks.append(TimestepSequential(*layers))
                skip_chans.append(ch)
            if level != len(config.channel_mult) - 1:
                self.input_blocks.append(TimestepSequential(ResBlock(ch, emb_ch, ch, resample="down")))
                skip_chans.append(ch)
                ds *= 2

        self.middle_block = TimestepSequential(
            ResBlock(ch, emb_ch, ch), AttentionBlock(ch, hc), ResBlock(ch, emb_ch, ch)
        )

        self.output_blocks = nn.ModuleList()
        for level, mult in reversed(list(enumerate(config.channel_mult))):
            for i in range(config.num_res_blocks + 1):
                out_ch = int(mult * mc)
                layers = [ResBlock(ch + skip_chans.pop(), emb_ch, out_ch)]
                ch = out_ch
                if ds in attn_at:
                    layers.append(AttentionBlock(ch, hc))
                if level and i == config.num_res_blocks:
                    layers.append(ResBlock(ch, emb_ch, ch, resample="up"))
                    ds //= 2
                self.output_blocks.append(TimestepSequential(*layers))

        self.out = nn.Sequential(GroupNorm32(ch), nn.SiLU(), nn.Conv2d(ch, config.out_channels, 3, padding=1))

    def forward(self, x: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
        """``timesteps`` are the network's own (0..1000 range, may be fractional)."""
        emb = self.time_embed(timestep_embedding(timesteps, self.config.num_channels))
        h = x
        skips = []
        for block in self.input_blocks:
            h = block(h, emb)
            skips.append(h)
        h = self.middle_block(h, emb)
        for block in self.output_blocks:
            h = block(torch.cat([h, skips.pop()], dim=1), emb)
        return self.out(h.type(x.dtype))


def build_unet(config: UNetConfig, state_dict: dict[str, torch.Tensor] | None = None) -> UNetModel:
    """Build the UNet; with a state dict, load it strictly without a wasted random init."""
    if state_dict is None:
        return UNetModel(config)
    with torch.device("meta"):
        model = UNetModel(config)
    model.load_state_dict(state_dict, strict=True, assign=True)
    return model.eval().requires_grad_(False)


def load_unet(path: str | Path, config: UNetConfig) -> UNetModel:
    """Load a published checkpoint file (``torch.load(weights_only=True)``, ``strict=True``)."""
    return build_unet(config, load_state_dict_file(path))
