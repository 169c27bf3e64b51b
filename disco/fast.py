"""Engine modes: ``exact`` (plain fp32, what the conformance fixtures check) and ``fast``.

Fast mode does the same arithmetic in cheaper forms; each step differs from exact mode by
rounding only (about 1e-5 relative on the CPU), so a picture stays close to the exact one:

- CPU: 3x3 convolutions over large feature maps use NNPACK's Winograd transform, which ships
  inside PyTorch. It needs several times fewer multiplications than a direct convolution
  (2x faster measured on large maps), and the UNet spends over 80% of its time in them.
- CLIP: each BatchNorm (a fixed affine map in eval mode) is folded into the convolution
  before it, which saves the norm's forward and backward in every guidance step.
- GPU: bf16 autocast (fp16 on GPUs without bf16; tensor cores; GroupNorm, softmax and losses
  stay fp32, as autocast keeps them), the UNet's convolution weights stored in that precision,
  and cuDNN's autotuner.
"""

from __future__ import annotations

from functools import cache

import torch
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

MODES = ("fast", "exact")
# Below about 48x48 pixels NNPACK is slower than oneDNN's direct convolution (measured on
# 2 cores: 64x64 2.0x faster, 32x32 equal, 16x16 2.3x slower).
WINOGRAD_MIN_PIXELS = 2048


def check_mode(mode: str, parameter: str = "mode") -> str:
    """``mode`` when it is one of ``MODES``; else a ValueError naming ``parameter``."""
    if mode not in MODES:
        raise ValueError(f"{parameter}: {mode!r} is not a mode; allowed: {', '.join(MODES)}")
    return mode


@cache
def winograd_available() -> bool:
    # _nnpack_available() also initialises NNPACK; without it every NNPACK call fails.
    return bool(torch._nnpack_available())


class WinogradConv2d(nn.Conv2d):
    """A Conv2d (same parameters, same state-dict keys) that takes NNPACK's Winograd path for
    3x3 stride-1 fp32 convolutions on large CPU feature maps, and the usual path otherwise.

    Forward passes without gradient only (the UNet when the secondary model guides): with a
    backward it is no faster, and CLIP's input gradient moved by up to 3% (max-abs, relative).
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if (
            not (torch.is_grad_enabled() and (x.requires_grad or self.weight.requires_grad))
            and x.device.type == "cpu"
            and x.dtype == torch.float32
            and x.dim() == 4
            and x.shape[-1] * x.shape[-2] >= WINOGRAD_MIN_PIXELS
        ):
            return torch._nnpack_spatial_convolution(x.contiguous(), self.weight, self.bias, [1, 1])
        return super().forward(x)


def _winograd_eligible(conv: nn.Module) -> bool:
    return (
        type(conv) is nn.Conv2d
        and conv.kernel_size == (3, 3)
        and conv.stride == (1, 1)
        and conv.dilation == (1, 1)
        and conv.groups == 1
        and conv.padding_mode == "zeros"
        and conv.padding == (1, 1)
    )


def use_winograd(model: nn.Module) -> int:
    """Switch the model's eligible convolutions to ``WinogradConv2d`` in place; returns how many.
    A no-op (0) where this PyTorch build has no NNPACK."""
    if not winograd_available():
        return 0
    convs = [m for m in model.modules() if _winograd_eligible(m)]
    for conv in convs:
        conv.__class__ = WinogradConv2d
    return len(convs)


def use_exact(model: nn.Module) -> None:
    """Undo ``use_winograd``: every convolution back to the direct path."""
    for m in model.modules():
        if type(m) is WinogradConv2d:
            m.__class__ = nn.Conv2d


def fold_batchnorms(model: nn.Module) -> int:
    """Fold every eval-mode BatchNorm2d that directly follows a Conv2d into that convolution,
    in place; returns how many. Pairs are found by name (``convN``/``bnN``, as in CLIP's
    ResNet) or by order inside an ``nn.Sequential``."""
    folded = 0
    for parent in model.modules():
        children = list(parent.named_children())
        for i, (name, conv) in enumerate(children):
            if not isinstance(conv, nn.Conv2d):
                continue
            if isinstance(parent, nn.Sequential):
                bn_name = children[i + 1][0] if i + 1 < len(children) else None
            else:
                bn_name = "bn" + name.removeprefix("conv") if name.startswith("conv") else None
            bn = getattr(parent, bn_name, None) if bn_name else None
            if isinstance(bn, nn.BatchNorm2d) and not bn.training:
                setattr(parent, name, fuse_conv_bn_eval(conv, bn).requires_grad_(False))
                setattr(parent, bn_name, nn.Identity())
                folded += 1
    return folded


def prepare_clip(clip: nn.Module, mode: str) -> nn.Module:
    """The loaded CLIP made ready for ``mode`` (BatchNorms folded in fast mode)."""
    if mode == "fast":
        fold_batchnorms(clip)
        clip.to(memory_format=torch.channels_last)  # the folded convolutions are new modules
    return clip


def autocast_dtype(device: torch.device, mode: str) -> torch.dtype | None:
    """The reduced precision fast mode runs in on this device (None: fp32): bf16 where the GPU
    has it (fp32's range, so the guidance's large gradients cannot overflow), else fp16 (the
    guidance then retries a step in fp32 when its gradient overflows)."""
    if mode != "fast" or device.type != "cuda":
        return None
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


def half_weights(model: nn.Module, dtype: torch.dtype) -> int:
    """Store the weights of every convolution and linear layer in ``dtype``, in place; returns
    how many layers. Under autocast to the same dtype those layers compute exactly as before
    (autocast would cast the weights on every call), and the weights take half the memory.
    Norms keep fp32 weights, as autocast computes them in fp32."""
    layers = [m for m in model.modules() if isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Linear))]
    for layer in layers:
        layer.to(dtype)
    return len(layers)


class Autocast(nn.Module):
    """Runs the wrapped model under autocast and hands back fp32, so callers never see fp16."""

    def __init__(self, model: nn.Module, dtype: torch.dtype):
        super().__init__()
        self.model, self.dtype = model, dtype

    def forward(self, *args: torch.Tensor) -> torch.Tensor:
        with torch.autocast(args[0].device.type, dtype=self.dtype):
            return self.model(*args).float()


def prepare_unet(unet: nn.Module, device: torch.device, mode: str) -> nn.Module:
    """The loaded UNet made ready for ``mode`` on ``device``."""
    if mode == "fast" and device.type == "cpu":
        use_winograd(unet)
    if mode == "exact" and device.type == "cuda":
        # PyTorch lets cuDNN use TF32 (10-bit mantissa) by default: exact means fp32
        torch.backends.cudnn.allow_tf32 = False
        torch.backends.cuda.matmul.allow_tf32 = False
    dtype = autocast_dtype(device, mode)
    if dtype is not None:
        torch.backends.cudnn.benchmark = True
        half_weights(unet, dtype)  # 1.1 GB less for the 512 model: the default image fits 8 GB
        return Autocast(unet, dtype)
    return unet
