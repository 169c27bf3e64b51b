"""Loading the models a run needs, once per process, from the model directory.

Files come from ``weights.ensure`` (the model directory the caller names; download on first use).
The CLIP models (``clip_models``) are fetched by the same downloader (fast offline errors, resume,
checksum) and loaded through open_clip (``disco.clip_model``); each one loaded stays for later runs.

A ``diffusion_model`` that is a checkpoint path (``disco.models.is_checkpoint_path``) is read by
``checkpoint_path``'s rule: inside the model directory, or anywhere when the cache is made with
``checkpoints_anywhere`` (a Flow the client started on its own machine). URLs are never fetched.
"""

from __future__ import annotations

import logging
import pickle
import warnings
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path

import torch

from . import fast, weights
from .clip_catalog import CLIP_FILES, DEFAULT_CLIP_MODEL
from .clip_model import load_clip
from .depth import DepthModel, load_adabins, load_midas
from .errors import SettingsError
from .lpips_loss import load_lpips
from .models import is_checkpoint_path
from .optical_flow import FlowModel, load_raft
from .sampler import Models
from .secondary import load_secondary
from .unet import MODEL_CONFIGS, LayoutMismatch, load_checkpoint, load_unet
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


def checkpoint_path(value: str, model_dir: str | Path, anywhere: bool = False) -> Path:
    """The file a checkpoint ``value`` of ``diffusion_model`` names; a relative path is taken inside
    ``model_dir``. Unless ``anywhere``, the file must lie in ``model_dir`` once links are followed:
    a served Flow reads no other path a request names. Raises ``SettingsError`` naming
    ``diffusion_model`` and the value as given (not the server's directories)."""
    path = Path(value).expanduser()
    if not path.is_absolute():
        path = Path(model_dir).expanduser() / path
    resolved = path.resolve()
    if not anywhere and not resolved.is_relative_to(Path(model_dir).expanduser().resolve()):
        raise SettingsError(
            "diffusion_model",
            f"{value!r} is outside this server's model directory (DISCO_MODEL_DIR), the only place a served Flow "
            "reads checkpoints from: put the file there and give its path inside it",
        )
    if not resolved.is_file():
        where = "" if Path(value).expanduser().is_absolute() else " in the model directory"
        raise SettingsError("diffusion_model", f"no checkpoint file {value!r}{where}")
    return resolved


def _load_checkpoint(name: str, path: Path) -> torch.nn.Module:
    """``load_checkpoint`` with its faults as ``SettingsError`` naming ``diffusion_model``."""
    try:
        unet, layout = load_checkpoint(path)
    except LayoutMismatch as exc:
        raise SettingsError("diffusion_model", str(exc)) from None
    except (ValueError, RuntimeError, EOFError, pickle.UnpicklingError) as exc:
        problem = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
        raise SettingsError("diffusion_model", f"{name!r} is not a state_dict to read ({problem})") from None
    log.info("%s has the layout of %s", name, layout)
    return unet


class ModelCache:
    """Models by name, loaded on first use and kept: a process serves many requests.

    The ``max_unets`` diffusion models used last stay loaded (each takes up to 2.2 GB); another
    one replaces the one unused longest. A checkpoint path is loaded again when its file changes.
    """

    def __init__(
        self,
        model_dir: str | Path | None = None,
        device: torch.device | None = None,
        mode: str = "fast",
        mirrors: tuple[str, ...] | None = None,
        checkpoints_anywhere: bool = False,
        max_unets: int = 2,
    ):
        self.mode = fast.check_mode(mode)
        self.model_dir = Path(model_dir) if model_dir else weights.default_model_dir()
        self.mirrors = mirrors
        self.device = device or pick_device(True)
        self.checkpoints_anywhere = checkpoints_anywhere
        self.max_unets = max(1, max_unets)
        self._unets: OrderedDict[tuple, torch.nn.Module] = OrderedDict()
        self._clips: dict[str, torch.nn.Module] = {}
        self._secondary: torch.nn.Module | None = None
        self._lpips: torch.nn.Module | None = None
        self._depth: dict[str, torch.nn.Module] = {}  # "midas", "adabins": loaded once, kept
        self._flow: FlowModel | None = None  # RAFT, loaded once, kept

    def _file(self, name: str) -> Path:
        return weights.ensure(name, self.model_dir, mirrors=self.mirrors)

    def unet(self, name: str) -> torch.nn.Module:
        """The UNet of registry model ``name``, or of the checkpoint file it names."""
        if name in MODEL_CONFIGS:
            key: tuple = (name,)
        elif is_checkpoint_path(name):
            path = checkpoint_path(name, self.model_dir, self.checkpoints_anywhere)
            stat = path.stat()
            key = (str(path), stat.st_size, stat.st_mtime_ns)
        else:
            raise SettingsError("diffusion_model", f"unknown model {name!r}; allowed: {list(MODEL_CONFIGS)}")
        if key not in self._unets:
            for old in [k for k in self._unets if k[0] == key[0]]:  # a checkpoint file that changed
                del self._unets[old]
            while len(self._unets) >= self.max_unets:
                self._unets.popitem(last=False)
            log.info("loading %s", name)
            if len(key) == 1:
                unet = load_unet(self._file(f"{name}.pt"), MODEL_CONFIGS[name])
            else:
                unet = _load_checkpoint(name, Path(key[0]))
            self._unets[key] = fast.prepare_unet(unet.to(self.device), self.device, self.mode)
        self._unets.move_to_end(key)
        return self._unets[key]

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

    def depth(self, names: Sequence[str]) -> DepthModel:
        """A 3D run's depth estimator with the networks ``names`` (``"midas"``, ``"adabins"``), each
        loaded on first use and kept for later runs."""
        loaders = {"midas": (load_midas, weights.MIDAS_FILE), "adabins": (load_adabins, weights.ADABINS_FILE)}
        for name in names:
            if name not in self._depth:
                load, file = loaders[name]
                log.info("loading depth model %s", file)
                self._depth[name] = load(self._file(file), self.device)
        midas, adabins = (self._depth[name] if name in names else None for name in ("midas", "adabins"))
        return DepthModel(midas, adabins)

    def flow(self) -> FlowModel:
        """Video Input's optical flow (RAFT-Large), loaded on first use and kept for later runs."""
        if self._flow is None:
            log.info("loading optical flow model %s", weights.RAFT_FILE)
            self._flow = FlowModel(load_raft(self._file(weights.RAFT_FILE), self.device))
        return self._flow

    def models(
        self,
        diffusion_model: str,
        use_secondary_model: bool,
        with_init_loss: bool,
        clip_models: Sequence[str] = (DEFAULT_CLIP_MODEL,),
        depth_models: Sequence[str] = (),
        flow_model: bool = False,
    ) -> Models:
        """What a run with these settings uses, loading what is not loaded yet (``depth_models``: a
        3D run's depth networks, ``disco.animation_plan.depth_models``; ``flow_model``: whether a
        Video Input run needs RAFT, ``disco.animation_plan.flow_model_needed``)."""
        return Models(
            depth=self.depth(depth_models) if depth_models else None,
            flow=self.flow() if flow_model else None,
            unet=self.unet(diffusion_model),
            clips={name: self.clip(name) for name in clip_models},
            secondary=self.secondary() if use_secondary_model else None,
            init_loss=self.lpips() if with_init_loss else None,
            device=self.device,
            autocast=fast.autocast_dtype(self.device, self.mode),
        )
