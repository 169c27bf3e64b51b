"""Loading the models a run needs, once per process, from the model directory.

Files come from ``weights.ensure`` (the model directory the caller names; download on first use).
The CLIP models (``clip_models``) are fetched by the same downloader (fast offline errors, resume,
checksum) and loaded through open_clip (``disco.clip_model``); each one loaded stays for later runs.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Sequence
from pathlib import Path

import torch

from . import fast, weights
from .clip_catalog import CLIP_FILES, DEFAULT_CLIP_MODEL
from .clip_model import load_clip
from .lpips_loss import load_lpips
from .sampler import Models
from .secondary import load_secondary
from .unet import MODEL_CONFIGS, load_unet
from .weights import CLIP_FILE, SECONDARY_FILE, VGG16_FILE, files_needed  # noqa: F401 (files_needed: re-exported)

log = logging.getLogger(__name__)


def pick_device(use_gpu: bool = True) -> torch.device:
    """The GPU when present and allowed, else the CPU (with a warning if a GPU was wanted)."""
    if use_gpu and torch.cuda.is_available():
        return torch.device("cuda")
    if use_gpu:
        warnings.warn("use_gpu=True but no CUDA GPU is available: running on the CPU (much slower)", stacklevel=2)
    return torch.device("cpu")


def select_device(use_gpu: bool | str, name: str = "use_gpu") -> torch.device:
    """The device for ``use_gpu``: ``True``/``"auto"``: the GPU if there is one, else the CPU with a
    warning; ``False``/``"0"``: the CPU; ``"1"``: a GPU is required, and without a usable one this
    raises (so a served sampler fails to start instead of running on the CPU). ``name`` is how
    the caller's users know the setting (e.g. ``DISCO_USE_GPU``), for the messages."""
    value = str(use_gpu).strip().lower() if not isinstance(use_gpu, bool) else ("auto" if use_gpu else "0")
    if value in ("0", "false"):
        return torch.device("cpu")
    if value in ("", "auto"):
        return pick_device(True)
    if value not in ("1", "true"):
        raise ValueError(f"{name} must be 1, 0 or auto, got {use_gpu!r}")
    if not torch.cuda.is_available():
        raise RuntimeError(
            f"{name}={use_gpu} but no CUDA GPU is usable: this torch "
            f"({torch.__version__}) needs an NVIDIA driver for CUDA {torch.version.cuda} and a GPU visible to "
            f"the process (docker --gpus, nvidia.com/gpu). Set {name}=0 to run on the CPU instead."
        )
    return torch.device("cuda")


class ModelCache:
    """Models by name, loaded on first use and kept: a process serves many requests."""

    def __init__(
        self,
        model_dir: str | Path | None = None,
        device: torch.device | None = None,
        mode: str = "fast",
        mirrors: tuple[str, ...] | None = None,
    ):
        self.mode = fast.check_mode(mode)
        self.model_dir = Path(model_dir) if model_dir else weights.default_model_dir()
        self.mirrors = mirrors
        self.device = device or pick_device(True)
        self._unets: dict[str, torch.nn.Module] = {}
        self._clips: dict[str, torch.nn.Module] = {}
        self._secondary: torch.nn.Module | None = None
        self._lpips: torch.nn.Module | None = None

    def _file(self, name: str) -> Path:
        return weights.ensure(name, self.model_dir, mirrors=self.mirrors)

    def unet(self, name: str) -> torch.nn.Module:
        if name not in self._unets:
            if name not in MODEL_CONFIGS:
                raise ValueError(f"diffusion_model: unknown model {name!r}; allowed: {sorted(MODEL_CONFIGS)}")
            log.info("loading %s", name)
            unet = load_unet(self._file(f"{name}.pt"), MODEL_CONFIGS[name]).to(self.device)
            self._unets[name] = fast.prepare_unet(unet, self.device, self.mode)
        return self._unets[name]

    def clip(self, name: str = DEFAULT_CLIP_MODEL) -> torch.nn.Module:
        """The CLIP model ``name`` (a ``clip_models`` name), loaded on first use."""
        if name not in self._clips:
            if name not in CLIP_FILES:
                raise ValueError(f"clip_models: unknown model {name!r}; offered: {', '.join(CLIP_FILES)}")
            log.info("loading CLIP %s", name)
            clip = load_clip(self._file(CLIP_FILES[name]), name).to(self.device)
            self._clips[name] = fast.prepare_clip(clip, self.mode)
        return self._clips[name]

    def secondary(self) -> torch.nn.Module:
        if self._secondary is None:
            self._secondary = load_secondary(self._file(SECONDARY_FILE)).to(self.device)
        return self._secondary

    def lpips(self) -> torch.nn.Module:
        if self._lpips is None:
            self._lpips = load_lpips(self._file(VGG16_FILE)).to(self.device)
        return self._lpips

    def models(
        self,
        diffusion_model: str,
        use_secondary_model: bool,
        with_init_loss: bool,
        clip_models: Sequence[str] = (DEFAULT_CLIP_MODEL,),
    ) -> Models:
        """What a run with these settings uses, loading what is not loaded yet."""
        return Models(
            unet=self.unet(diffusion_model),
            clips={name: self.clip(name) for name in clip_models},
            secondary=self.secondary() if use_secondary_model else None,
            init_loss=self.lpips() if with_init_loss else None,
            device=self.device,
            autocast=fast.autocast_dtype(self.device, self.mode),
        )
