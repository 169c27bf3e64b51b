"""CLIP RN50 (OpenAI weights, QuickGELU) through open_clip: the model, the tokenizer limit,
text embeddings and the image preprocessing the guidance uses."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import open_clip
import torch
import torch.nn.functional as F

from .settings import SettingsError

CLIP_ARCH = "RN50-quickgelu"
CLIP_INPUT_SIZE = 224
CLIP_MEAN = torch.tensor(open_clip.OPENAI_DATASET_MEAN).view(1, 3, 1, 1)
CLIP_STD = torch.tensor(open_clip.OPENAI_DATASET_STD).view(1, 3, 1, 1)
_TOKENIZER = open_clip.get_tokenizer(CLIP_ARCH)


def load_clip(pretrained: str | Path | None = "openai", cache_dir: str | Path | None = None) -> torch.nn.Module:
    """CLIP RN50: ``"openai"`` (open_clip's own download/cache), a local file path, or None (random)."""
    model = open_clip.create_model(
        CLIP_ARCH, pretrained=str(pretrained) if pretrained else None, cache_dir=str(cache_dir) if cache_dir else None
    )
    return model.eval().requires_grad_(False).to(memory_format=torch.channels_last)  # see guidance.CL


def check_prompt_length(text: str) -> None:
    n = len(_TOKENIZER.encode(text)) + 2  # start and end tokens
    if n > _TOKENIZER.context_length:
        raise SettingsError(
            "text_prompts",
            f"prompt is {n} CLIP tokens, the limit is {_TOKENIZER.context_length}: shorten {text[:60]!r}...",
        )


@torch.no_grad()
def encode_texts(model: torch.nn.Module, texts: list[str]) -> torch.Tensor:
    """Normalised text embeddings ``(len(texts), 1024)``; over-long prompts are refused."""
    for text in texts:
        check_prompt_length(text)
    device = next(model.parameters()).device
    return F.normalize(model.encode_text(_TOKENIZER(texts).to(device)).float(), dim=-1)


@lru_cache(maxsize=8)
def _statistics(device: torch.device, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    # copied to the device once: a copy per guidance step would make the host wait for the GPU
    return CLIP_MEAN.to(device, dtype), CLIP_STD.to(device, dtype)


def clip_normalize(images: torch.Tensor) -> torch.Tensor:
    """Images in [0, 1] to CLIP's input statistics."""
    mean, std = _statistics(images.device, images.dtype)
    return (images - mean) / std
