"""A CLIP model of ``clip_models`` through open_clip: loading its weights, its tokenizer's limit,
text embeddings, its input size and the image preprocessing the guidance uses.

Weights come in two layouts: open_clip's (safetensors or a plain state dict, loaded by open_clip with
``weights_only``), and OpenAI's TorchScript checkpoints (``RN101.pt``, ``ViT-B-32.pt``, ...), whose
tensors are read with ``torch.jit.load`` after the file's sha256 was checked against the one in
OpenAI's URL (``disco.weights``). Either way every tensor must fit the architecture (strict loading),
so a wrong file fails here with a message naming it.
"""

from __future__ import annotations

import warnings
import zipfile
from functools import cache, lru_cache
from pathlib import Path

import open_clip
import torch
import torch.nn.functional as F

from .clip_catalog import DEFAULT_CLIP_MODEL, OPENAI_MEAN, OPENAI_STD, clip_spec
from .errors import SettingsError

CLIP_ARCH = clip_spec(DEFAULT_CLIP_MODEL).architecture  # "RN50-quickgelu"
CLIP_INPUT_SIZE = 224  # RN50's
# Entries of OpenAI's checkpoints that are settings, not weights (open_clip drops them too)
_OPENAI_EXTRAS = ("input_resolution", "context_length", "vocab_size")


def load_clip(path: str | Path | None = None, model: str = DEFAULT_CLIP_MODEL) -> torch.nn.Module:
    """The CLIP model ``model`` (a ``clip_models`` name) with the weights in ``path`` (either layout),
    or with random weights when ``path`` is None (from torch's global generator, for tests), in eval
    mode, frozen, channels-last. Raises ValueError naming the file when its tensors do not fit."""
    spec = clip_spec(model)
    if path is not None and _is_torchscript(Path(path)):
        clip = open_clip.create_model(spec.architecture, pretrained=None)
        _load_openai_checkpoint(clip, Path(path), model)
    else:
        try:
            clip = open_clip.create_model(spec.architecture, pretrained=str(path) if path else None)
        except RuntimeError as exc:  # load_state_dict's missing / unexpected / mismatched tensors
            raise ValueError(f"clip_models: {path} is not a {model} checkpoint: {str(exc)[:500]}") from None
    return clip.eval().requires_grad_(False).to(memory_format=torch.channels_last)  # see guidance.CL


def _is_torchscript(path: Path) -> bool:
    """Whether ``path`` is a TorchScript archive (a zip with ``constants.pkl``), as OpenAI's checkpoints are."""
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as archive:
        return any(name.endswith("/constants.pkl") for name in archive.namelist())


def _load_openai_checkpoint(clip: torch.nn.Module, path: Path, model: str) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch.jit.load is deprecated; it is how these are read
        state = torch.jit.load(str(path), map_location="cpu").state_dict()
    state = {k: v for k, v in state.items() if k not in _OPENAI_EXTRAS}
    try:
        clip.load_state_dict(state, strict=True)  # fp16 tensors are copied into the fp32 weights
    except RuntimeError as exc:
        raise ValueError(f"clip_models: {path} is not a {model} checkpoint: {str(exc)[:500]}") from None


@cache
def tokenizer(model: str = DEFAULT_CLIP_MODEL):
    """open_clip's tokenizer for ``model`` (its context length included)."""
    return open_clip.get_tokenizer(clip_spec(model).architecture)


def check_prompt_length(text: str, model: str = DEFAULT_CLIP_MODEL) -> None:
    """Refuse (``SettingsError`` naming ``text_prompts``) a prompt longer than ``model``'s tokenizer takes."""
    tok = tokenizer(model)
    n = len(tok.encode(text)) + 2  # start and end tokens
    if n > tok.context_length:
        for_model = "" if model == DEFAULT_CLIP_MODEL else f" for {model}"
        raise SettingsError(
            "text_prompts",
            f"prompt is {n} CLIP tokens{for_model}, the limit is {tok.context_length}: shorten {text[:60]!r}...",
        )


@torch.no_grad()
def encode_texts(
    clip: torch.nn.Module, texts: list[str], model: str = DEFAULT_CLIP_MODEL, truncate: bool = False
) -> torch.Tensor:
    """Normalised text embeddings ``(len(texts), d)`` by ``clip``, the loaded ``model`` (d: its
    embedding width, 1024 for RN50); over-long prompts are refused, or with ``truncate``
    (``truncate_overlength_prompt``) cut to the tokenizer's context length (77 tokens: the
    tokens that fit, the last one made the end token, as open_clip's tokenizer cuts them)."""
    for text in texts if not truncate else ():
        check_prompt_length(text, model)
    device = next(clip.parameters()).device
    return F.normalize(clip.encode_text(tokenizer(model)(texts).to(device)).float(), dim=-1)


def input_size(clip: torch.nn.Module) -> int:
    """The side of the square images ``clip`` takes (its ``visual.image_size``), pixels."""
    size = clip.visual.image_size
    if isinstance(size, tuple | list):
        if size[0] != size[1]:
            raise ValueError(f"CLIP input {size[0]}x{size[1]} is not square; Disco's cutouts are square")
        size = size[0]
    return int(size)


@lru_cache(maxsize=32)
def _statistics(
    mean: tuple[float, ...], std: tuple[float, ...], device: torch.device, dtype: torch.dtype
) -> tuple[torch.Tensor, torch.Tensor]:
    # copied to the device once: a copy per guidance step would make the host wait for the GPU
    return (
        torch.tensor(mean).view(1, 3, 1, 1).to(device, dtype),
        torch.tensor(std).view(1, 3, 1, 1).to(device, dtype),
    )


def clip_normalize(
    images: torch.Tensor, mean: tuple[float, ...] = OPENAI_MEAN, std: tuple[float, ...] = OPENAI_STD
) -> torch.Tensor:
    """Images in [0, 1] to a CLIP model's input statistics (OpenAI's unless given)."""
    m, s = _statistics(tuple(mean), tuple(std), images.device, images.dtype)
    return (images - m) / s
