"""The ADM ("guided diffusion") UNet, laid out key for key like the published checkpoints.

Module names and nesting are fixed by the checkpoint files (``input_blocks.N.M...``,
``middle_block``, ``output_blocks``, ``out``); only the arithmetic inside is ours.
Attention uses ``scaled_dot_product_attention``, in the legacy head order the checkpoints
were trained with (heads split before q/k/v).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, replace
from functools import cache
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .checkpoint import load_state_dict_file
from .models import DIFFUSION_MODELS


@dataclass(frozen=True)
class UNetConfig:
    """The architecture facts of an ADM UNet, with guided-diffusion's names.

    ``num_head_channels`` channels per attention head, or ``-1``: ``num_heads`` heads in every
    attention block. The heads change the arithmetic, not the checkpoint's layout (``layout``).
    ``use_scale_shift_norm``: the timestep conditions each ResBlock by scale and shift after its
    norm (FiLM), else it is added before the norm. ``resblock_updown``: the resolution changes in
    ResBlocks, else in strided (down) and nearest-neighbour-then-conv (up) layers of their own.
    """

    image_size: int = 512
    num_channels: int = 256
    num_res_blocks: int = 2
    num_head_channels: int = 64
    attention_resolutions: tuple[int, ...] = (32, 16, 8)
    learn_sigma: bool = True
    in_channels: int = 3
    num_heads: int = 1
    use_scale_shift_norm: bool = True
    resblock_updown: bool = True

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

    @property
    def layout(self) -> UNetConfig:
        """This config with the attention heads set aside: configs with the same layout have
        checkpoints of the same keys and shapes."""
        return replace(self, num_heads=1, num_head_channels=-1)

    def heads(self, channels: int) -> int:
        """Attention heads of a block with ``channels`` channels."""
        if self.num_head_channels == -1:
            heads = self.num_heads
        else:
            heads = channels // self.num_head_channels
        if heads < 1 or channels % heads:
            raise ValueError(f"{channels} attention channels cannot be split into heads as {self} asks")
        return heads

    @classmethod
    def from_guided_diffusion(cls, options: Mapping[str, Any]) -> UNetConfig:
        """Build from a guided-diffusion ``model_config`` dict (as Disco Diffusion and discoart
        write them). A missing option takes guided-diffusion's default
        (``model_and_diffusion_defaults``); options this UNet does not have raise ValueError
        naming the option."""
        o = {**GUIDED_DIFFUSION_DEFAULTS, **options}
        if o["class_cond"]:
            raise ValueError("class_cond: only unconditional models are supported")
        if o["use_new_attention_order"]:
            raise ValueError("use_new_attention_order: only the legacy attention order is supported")
        if str(o["channel_mult"]).strip():
            raise ValueError("channel_mult: only the multipliers that follow from image_size are supported")
        if int(o["num_heads_upsample"]) not in (-1, int(o["num_heads"])):
            raise ValueError("num_heads_upsample: only -1 (the same as num_heads) is supported")
        res = o["attention_resolutions"]
        if isinstance(res, str):
            res = tuple(int(r) for r in res.split(","))
        config = cls(
            image_size=int(o["image_size"]),
            num_channels=int(o["num_channels"]),
            num_res_blocks=int(o["num_res_blocks"]),
            num_head_channels=int(o["num_head_channels"]),
            attention_resolutions=tuple(res),
            learn_sigma=bool(o["learn_sigma"]),
            num_heads=int(o["num_heads"]),
            use_scale_shift_norm=bool(o["use_scale_shift_norm"]),
            resblock_updown=bool(o["resblock_updown"]),
        )
        config.channel_mult  # noqa: B018 (an image size without a layout raises here)
        return config


# guided-diffusion's ``model_and_diffusion_defaults()`` for the options that shape the UNet
GUIDED_DIFFUSION_DEFAULTS: dict[str, Any] = {
    "image_size": 64,
    "num_channels": 128,
    "num_res_blocks": 2,
    "num_heads": 4,
    "num_heads_upsample": -1,
    "num_head_channels": -1,
    "attention_resolutions": "16,8",
    "channel_mult": "",
    "class_cond": False,
    "use_scale_shift_norm": True,
    "resblock_updown": False,
    "use_new_attention_order": False,
    "learn_sigma": False,
}

# Every diffusion model of the registry (disco/models.py), built from its published options.
MODEL_CONFIGS: dict[str, UNetConfig] = {
    name: UNetConfig.from_guided_diffusion(model.config) for name, model in DIFFUSION_MODELS.items()
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
    """Residual block conditioned on the timestep embedding; optionally resamples by 2.

    ``scale_shift``: the embedding scales and shifts the second norm's output (FiLM), else it is
    added to the features before that norm.
    """

    def __init__(
        self, channels: int, emb_channels: int, out_channels: int, resample: str | None = None, scale_shift: bool = True
    ):
        super().__init__()
        self.resample = resample
        self.scale_shift = scale_shift
        self.in_layers = nn.Sequential(
            GroupNorm32(channels), nn.SiLU(), nn.Conv2d(channels, out_channels, 3, padding=1)
        )
        self.emb_layers = nn.Sequential(nn.SiLU(), nn.Linear(emb_channels, (2 if scale_shift else 1) * out_channels))
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
        emb_out = self.emb_layers(emb).type(h.dtype)[..., None, None]
        out_norm, _, dropout, out_conv = self.out_layers
        if self.scale_shift:
            scale, shift = emb_out.chunk(2, dim=1)
            h = out_norm(h).mul_(1 + scale).add_(shift)
        else:
            h = out_norm(h.add_(emb_out))
        h = out_conv(dropout(F.silu(h, inplace=True)))
        return h.add_(self.skip_connection(x))


class Downsample(nn.Module):
    """Halves the resolution with a 3x3 convolution of stride 2 (layouts without ``resblock_updown``)."""

    def __init__(self, channels: int):
        super().__init__()
        self.op = nn.Conv2d(channels, channels, 3, stride=2, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.op(x)


class Upsample(nn.Module):
    """Doubles the resolution (nearest neighbour), then a 3x3 convolution (layouts without ``resblock_updown``)."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=2, mode="nearest"))


class AttentionBlock(nn.Module):
    """Spatial self-attention over all positions, in ``num_heads`` heads."""

    def __init__(self, channels: int, num_heads: int):
        super().__init__()
        self.num_heads = num_heads
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
        film = config.use_scale_shift_norm

        def res(channels: int, out: int, resample: str | None = None) -> ResBlock:
            return ResBlock(channels, emb_ch, out, resample, scale_shift=film)

        def attention(channels: int) -> AttentionBlock:
            return AttentionBlock(channels, config.heads(channels))

        self.time_embed = nn.Sequential(nn.Linear(mc, emb_ch), nn.SiLU(), nn.Linear(emb_ch, emb_ch))

        ch = int(config.channel_mult[0] * mc)
        self.input_blocks = nn.ModuleList([TimestepSequential(nn.Conv2d(config.in_channels, ch, 3, padding=1))])
        skip_chans = [ch]
        ds = 1
        for level, mult in enumerate(config.channel_mult):
            for _ in range(config.num_res_blocks):
                out_ch = int(mult * mc)
                layers: list[nn.Module] = [res(ch, out_ch)]
                ch = out_ch
                if ds in attn_at:
                    layers.append(attention(ch))
                self.input_blocks.append(TimestepSequential(*layers))
                skip_chans.append(ch)
            if level != len(config.channel_mult) - 1:
                down = res(ch, ch, "down") if config.resblock_updown else Downsample(ch)
                self.input_blocks.append(TimestepSequential(down))
                skip_chans.append(ch)
                ds *= 2

        self.middle_block = TimestepSequential(res(ch, ch), attention(ch), res(ch, ch))

        self.output_blocks = nn.ModuleList()
        for level, mult in reversed(list(enumerate(config.channel_mult))):
            for i in range(config.num_res_blocks + 1):
                out_ch = int(mult * mc)
                layers = [res(ch + skip_chans.pop(), out_ch)]
                ch = out_ch
                if ds in attn_at:
                    layers.append(attention(ch))
                if level and i == config.num_res_blocks:
                    layers.append(res(ch, ch, "up") if config.resblock_updown else Upsample(ch))
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


@cache
def layout_shapes(config: UNetConfig) -> dict[str, tuple[int, ...]]:
    """Every state-dict key of ``config``'s UNet with its shape (built on the meta device: no memory)."""
    with torch.device("meta"):
        model = UNetModel(config.layout)
    return {key: tuple(value.shape) for key, value in model.state_dict().items()}


def known_layouts() -> dict[str, UNetConfig]:
    """One config per distinct layout of the registry, under the first model that has it."""
    layouts: dict[str, UNetConfig] = {}
    for name, config in MODEL_CONFIGS.items():
        if all(config.layout != other.layout for other in layouts.values()):
            layouts[name] = config
    return layouts


def layout_mismatch(state: Mapping[str, torch.Tensor], config: UNetConfig) -> tuple[int, str]:
    """How far ``state`` is from ``config``'s layout: (differences, what does not fit in words);
    (0, "") when every key is there with its shape and there is no other key."""
    expected = layout_shapes(config)
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    wrong = [(k, tuple(state[k].shape), shape) for k, shape in expected.items() if k in state]
    wrong = [w for w in wrong if w[1] != w[2]]
    problems = []
    if missing:
        problems.append(f"{len(missing)} missing keys ({_first(missing)})")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected keys ({_first(unexpected)})")
    if wrong:
        key, got, want = wrong[0]
        problems.append(f"{len(wrong)} keys of another shape, first {key}: {list(got)} in the file, {list(want)} here")
    return len(missing) + len(unexpected) + len(wrong), "; ".join(problems)


def _first(keys: list[str], n: int = 3) -> str:
    return ", ".join(keys[:n]) + (", ..." if len(keys) > n else "")


def _describe(config: UNetConfig) -> str:
    return (
        f"image_size {config.image_size}, num_channels {config.num_channels}, attention at "
        f"{','.join(map(str, config.attention_resolutions))}, use_scale_shift_norm {config.use_scale_shift_norm}, "
        f"resblock_updown {config.resblock_updown}"
    )


class LayoutMismatch(ValueError):
    """A checkpoint fits no known layout; the message names the closest and what does not fit it."""


def recognise_layout(state: Mapping[str, torch.Tensor], source: str = "the checkpoint") -> tuple[str, UNetConfig]:
    """The registry layout whose keys and shapes ``state`` has exactly: (the first model with it, its
    config, whose attention heads a checkpoint of that layout then runs with). Raises
    ``LayoutMismatch`` naming the closest layout and what does not fit it (missing and unexpected
    keys, the first shape that differs)."""
    scored = []
    for name, config in known_layouts().items():
        distance, problems = layout_mismatch(state, config)
        if distance == 0:
            return name, config
        scored.append((distance, name, config, problems))
    _, name, config, problems = min(scored, key=lambda item: item[0])
    raise LayoutMismatch(
        f"{source} is not an ADM UNet of a known layout. Closest: the layout of {name} "
        f"({_describe(config)}), which it does not fit: {problems}. Known layouts: {', '.join(known_layouts())}"
    )


def load_checkpoint(path: str | Path) -> tuple[UNetModel, str]:
    """Load a checkpoint of any registry layout from ``path`` (your own fine-tune, say): the layout is
    recognised from its keys and shapes (``recognise_layout``), then loaded strictly; floating
    tensors are read as fp32. Returns the UNet and the registry model whose layout and heads it has."""
    state = load_state_dict_file(path)
    name, config = recognise_layout(state, Path(path).name)
    state = {k: v.float() if v.is_floating_point() else v for k, v in state.items()}
    return build_unet(config, state), name
