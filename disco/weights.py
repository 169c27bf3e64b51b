"""Model files: where they come from, where they are cached, and a careful download.

Files live in the model directory the caller names (the service's ``DISCO_MODEL_DIR``, default
``~/.cache/disco-diffusion``). A missing file is downloaded on first use, or ahead of time with::

    python -m disco_service.client.download [--dir DIR] [--mirror URL] [NAME ...]
    python client.py --download [settings]      # the files those settings need

The download goes to ``<name>.part``, is resumed with an HTTP ``Range`` request after an
interruption, tries every mirror in turn, and is checked against its sha256 before an atomic
rename to ``<name>``: a file under its final name is always complete and verified. A lock on
``<name>.lock`` makes concurrent starts wait for one download instead of racing it. The
verified hash is remembered in ``<name>.sha256ok`` (size and mtime), so a 2.2 GB file is not
re-hashed on every start. A ``checksums.json`` in the model directory may give other sha256
values for locally made or converted files (the tests' recipe weights use it).

A file whose sha256 no public source gives (``ModelFile.sha256`` is None: one of the CLIP models,
see ``CLIP_WEIGHTS``) is checked for what can be checked: a complete transfer (the server's length),
its size where it is known, and, when it is loaded, every tensor's name and shape against its
architecture (open_clip loads it strictly). A ``checksums.json`` entry pins it like any other.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import fcntl
import hashlib
import http.client
import json
import logging
import os
import re
import shutil
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from .clip_catalog import CLIP_FILES, DEFAULT_CLIP_MODEL
from .models import DIFFUSION_MODELS, is_checkpoint_path

log = logging.getLogger(__name__)

# The files a run may load besides its diffusion model ("<diffusion_model>.pt", see disco/models.py).
SECONDARY_FILE = "secondary_model_imagenet_2.pth"
CLIP_FILE = CLIP_FILES[DEFAULT_CLIP_MODEL]  # CLIP RN50, the default clip_models
VGG16_FILE = "vgg16-397923af.pth"  # LPIPS' VGG16, for the init image's loss


def files_needed(
    diffusion_model: str,
    use_secondary_model: bool,
    with_init_loss: bool,
    clip_models: Sequence[str] = (DEFAULT_CLIP_MODEL,),
    depth_models: Sequence[str] = (),
    flow_model: bool = False,
) -> list[str]:
    """The model files a run with these settings loads (registry names; no torch needed to ask).
    A checkpoint path as ``diffusion_model`` is the user's own file: nothing to download for it.
    ``clip_models``: the setting's names (``"ViT-B-32::openai"``), one file each; ``depth_models``:
    a 3D run's depth networks (``"midas"``, ``"adabins"``: ``disco.animation_plan.depth_models``);
    ``flow_model``: a Video Input run uses RAFT (``disco.animation_plan.flow_model_needed``)."""
    names = [] if is_checkpoint_path(diffusion_model) else [f"{diffusion_model}.pt"]
    names.extend(CLIP_FILES[name] for name in clip_models)
    if use_secondary_model:
        names.append(SECONDARY_FILE)
    if with_init_loss:
        names.append(VGG16_FILE)
    names.extend(DEPTH_FILES[name] for name in depth_models)
    if flow_model:
        names.append(RAFT_FILE)
    return names


CHUNK = 1 << 20
CONNECT_TIMEOUT_S = 5.0  # offline fails in seconds
READ_TIMEOUT_S = 60.0  # a stalled transfer is abandoned (and later resumed)
ATTEMPTS_PER_URL = 2  # failed attempts in a row; an attempt that got bytes does not count
BACKOFF_S = 1.0  # pause before retrying a URL, times the attempt number
USER_AGENT = "disco-diffusion-jina (python urllib)"
DISK_ERRORS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM}


@dataclass(frozen=True)
class ModelFile:
    name: str
    sha256: str | None  # None: no public source gives it (see the module's notes)
    size: int | None  # bytes, when known (then checked); None: not checked
    urls: tuple[str, ...]
    description: str = ""
    approx_size: int | None = None  # bytes, roughly, for messages when ``size`` is not pinned

    @property
    def shown_size(self) -> int:
        return self.size or self.approx_size or 0


REGISTRY: dict[str, ModelFile] = {
    f.name: f
    for f in (
        # the diffusion models (disco/models.py), each as <name>.pt
        *(ModelFile(m.file, m.sha256, None, m.urls, m.description, m.approx_size) for m in DIFFUSION_MODELS.values()),
        ModelFile(
            "secondary_model_imagenet_2.pth",
            "983e3de6f95c88c81b2ca7ebb2c217933be1973b1ff058776b970f901584613a",
            None,
            (
                "https://v-diffusion.s3.us-west-2.amazonaws.com/secondary_model_imagenet_2.pth",
                "https://ipfs.io/ipfs/QmX1VDNBAsAbupaLLkL2AxTQsxbFFYac8rqM9croNm3H9U?filename=secondary_model_imagenet_2.pth",
                "https://ipfs.pollinations.ai/ipfs/bafybeibaawhhk7fhyhvmm7x24zwwkeuocuizbqbcg5nqx64jq42j75rdiy/"
                "secondary_model_imagenet_2.pth",
                "https://the-eye.eu/public/AI/models/v-diffusion/secondary_model_imagenet_2.pth",
            ),
            "Disco Diffusion's secondary model",
            55_000_000,
        ),
        ModelFile(
            "open_clip_rn50_openai.safetensors",
            "da0baa37fb2211eee5729ab69ed587eb10d48f5b7076ceeed01552fc3d4cb4ee",
            408291932,
            (
                # open_clip's own published RN50 'openai' weights (its hf_hub entry), at a pinned revision
                "https://huggingface.co/timm/resnet50_clip.openai/resolve/ec3d92cf63a5f9d591f0d611b736895966c73076/"
                "open_clip_model.safetensors",
            ),
            "OpenAI CLIP RN50 in open_clip's format",
        ),
        ModelFile(
            "vgg16-397923af.pth",
            "397923af8e79cdbb6a7127f12361acd7a2f83e06b05044ddf496e83de57a5bf0",
            553433881,
            ("https://download.pytorch.org/models/vgg16-397923af.pth",),
            "torchvision VGG16 for the LPIPS loss (init_image with init_scale > 0, animations with frames_scale > 0)",
        ),
    )
}


def _openai_clip(file: str, sha256: str, approx_size: int, model: str) -> ModelFile:
    """An OpenAI CLIP checkpoint (a TorchScript archive) as OpenAI publishes it: the sha256 is part of its URL."""
    return ModelFile(
        file,
        sha256,
        None,
        tuple(f"https://{host}/clip/models/{sha256}/{file}" for host in OPENAI_CLIP_HOSTS),
        f"OpenAI CLIP {model} (OpenAI's TorchScript checkpoint)",
        approx_size,
    )


# OpenAI's CDN for CLIP (openai/CLIP, open_clip's pretrained table), and the storage account behind it
OPENAI_CLIP_HOSTS = ("openaipublic.azureedge.net", "openaipublic.blob.core.windows.net")
LAION = "https://huggingface.co/laion"
# The CLIP models of clip_models besides RN50 (which is above): one file each (disco.clip_catalog).
# OpenAI's sha256 are in their URLs. For the LAION files, the sha256 are the Hugging Face LFS object ids:
# ViT-B-32's from its LFS pointer at the pinned revision (with its size), ViT-L-14's from a Hugging Face
# cache listing (blobs are named by their sha256). No public source gives ViT-B-16's: it is the one file
# checked by its complete transfer and its strict load only (see the module's notes).
CLIP_WEIGHTS = (
    _openai_clip("RN101.pt", "8fa8567bab74a42d41c5915025a8e4538c3bdbe8804a470a72f30b0d94fab599", 278_000_000, "RN101"),
    _openai_clip(
        "RN50x4.pt", "7e526bd135e493cef0776de27d5f42653e6b4c8bf9e0f653bb11773263205fdd", 402_000_000, "RN50x4"
    ),
    _openai_clip(
        "RN50x16.pt", "52378b407f34354e150460fe41077663dd5b39c54cd0bfd2b27167a4a06ec9aa", 630_000_000, "RN50x16"
    ),
    _openai_clip(
        "RN50x64.pt", "be1cfb55d75a9666199fb2206c106743da0f6468c9d327f3e0d0a543a9919d9c", 1_260_000_000, "RN50x64"
    ),
    _openai_clip(
        "ViT-B-32.pt", "40d365715913c9da98579312b702a82c18be219cc2a73407c4526f58eba950af", 338_000_000, "ViT-B/32"
    ),
    _openai_clip(
        "ViT-B-16.pt", "5806e77cd80f8b59890b7e101eabd078d9fb84e6937f9e85e4ecb61988df416f", 335_000_000, "ViT-B/16"
    ),
    _openai_clip(
        "ViT-L-14.pt", "b8cca3fd41ae0c99ba7e8951adf17d267cdb84cd88be6f7c2e0eca1737a03836", 890_000_000, "ViT-L/14"
    ),
    _openai_clip(
        "ViT-L-14-336px.pt",
        "3035c92b350959924f9f00213499208652fc7ea050643e8b385c2dac08641f02",
        891_000_000,
        "ViT-L/14 at 336 px",
    ),
    ModelFile(
        "open_clip_vit_b_32_laion2b_s34b_b79k.safetensors",
        "ac4f8c4b88af6d963118cbf40ad93176d092abbedfcb752601ae1866352656e6",
        605_143_316,
        (
            f"{LAION}/CLIP-ViT-B-32-laion2B-s34B-b79K/resolve/1a25a446712ba5ee05982a381eed697ef9b435cf/"
            "open_clip_model.safetensors",
            f"{LAION}/CLIP-ViT-B-32-laion2B-s34B-b79K/resolve/main/open_clip_model.safetensors",
        ),
        "LAION-2B CLIP ViT-B/32 (laion2b_s34b_b79k) in open_clip's format",
    ),
    ModelFile(
        "open_clip_vit_b_16_laion2b_s34b_b88k.bin",
        None,
        None,
        (f"{LAION}/CLIP-ViT-B-16-laion2B-s34B-b88K/resolve/main/open_clip_pytorch_model.bin",),
        "LAION-2B CLIP ViT-B/16 (laion2b_s34b_b88k) in open_clip's format",
        599_000_000,
    ),
    ModelFile(
        "open_clip_vit_l_14_laion2b_s32b_b82k.bin",
        "5ddb47339f44e4fd9cace3d3960d38af1b51a25857440cfae90afc44706d7e2b",
        None,
        (f"{LAION}/CLIP-ViT-L-14-laion2B-s32B-b82K/resolve/main/open_clip_pytorch_model.bin",),
        "LAION-2B CLIP ViT-L/14 (laion2b_s32b_b82k) in open_clip's format",
        1_710_000_000,
    ),
)
REGISTRY.update({f.name: f for f in CLIP_WEIGHTS})

# The 3D animation mode's depth models (disco.depth) and the optical-flow model of video inits
# (disco.optical_flow). The file names of MiDaS and RAFT carry the first 8 hex digits of their
# sha256 (torch.hub's convention); the full values, and the sizes of AdaBins and RAFT, are those
# that download scripts of other Disco/Deforum and flow tools pin.
MIDAS_FILE = "dpt_large-midas-2f21e586.pt"
ADABINS_FILE = "AdaBins_nyu.pt"
RAFT_FILE = "raft_large_C_T_SKHT_V2-ff5fadd5.pth"
MOTION_WEIGHTS = (
    ModelFile(
        MIDAS_FILE,
        "2f21e586477d90cb9624c7eef5df7891edca49a1c4795ee2cb631fd4daa6ca69",
        None,
        (
            "https://github.com/intel-isl/DPT/releases/download/1_0/dpt_large-midas-2f21e586.pt",
            "https://github.com/isl-org/MiDaS/releases/download/v3/dpt_large_384.pt",
        ),
        "MiDaS v3 DPT-Large depth (animation_mode 3D)",
        1_370_000_000,
    ),
    ModelFile(
        ADABINS_FILE,
        "3c917d1b86d058918d4055e70b2cdb9696ec4967bb2d8f05c0051263c1ac9641",
        940_558_786,
        (
            "https://cloudflare-ipfs.com/ipfs/Qmd2mMnDLWePKmgfS8m6ntAg4nhV5VkUyAydYBp8cWWeB7/AdaBins_nyu.pt",
            "https://ipfs.io/ipfs/Qmd2mMnDLWePKmgfS8m6ntAg4nhV5VkUyAydYBp8cWWeB7/AdaBins_nyu.pt",
            "https://github.com/hithereai/deforum-for-automatic1111-webui/releases/download/AdaBins/AdaBins_nyu.pt",
        ),
        "AdaBins (NYU) depth (animation_mode 3D with midas_weight < 1)",
    ),
    ModelFile(
        RAFT_FILE,
        "ff5fadd56d26b40647388883af1547351ea17868b765c05b27231e72dd16a322",
        21_106_607,
        ("https://download.pytorch.org/models/raft_large_C_T_SKHT_V2-ff5fadd5.pth",),
        "torchvision RAFT-Large optical flow (video inits with flow warping)",
    ),
)
REGISTRY.update({f.name: f for f in MOTION_WEIGHTS})
DEPTH_FILES = {"midas": MIDAS_FILE, "adabins": ADABINS_FILE}  # a 3D run's depth networks by name


class WeightsUnavailable(Exception):
    """A model file is missing and could not be downloaded; the message says what to do."""


class _CannotWrite(Exception):
    """The model directory cannot be written (to hold the lock file)."""


class _WrongFile(Exception):
    """This mirror serves something else (wrong size or checksum): do not retry it."""


def default_model_dir() -> Path:
    """Where model files are kept unless the caller names a directory: ``~/.cache/disco-diffusion``."""
    return Path.home() / ".cache" / "disco-diffusion"


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _expected(file: ModelFile, directory: Path) -> ModelFile:
    """``file`` with the sha256 that ``directory/checksums.json`` names for it, if any (size then unknown)."""
    with contextlib.suppress(OSError, ValueError, AttributeError):
        local = json.loads((directory / "checksums.json").read_text()).get(file.name)
        if local and local != file.sha256:
            return dataclasses.replace(file, sha256=local, size=None)
    return file


def _stamp(path: Path) -> Path:
    return path.with_name(path.name + ".sha256ok")


def _is_verified(path: Path, file: ModelFile) -> bool:
    """True if ``path`` has the right sha256, remembered per size and mtime in ``<name>.sha256ok``."""
    try:
        st = path.stat()
    except OSError:
        return False
    if file.size is not None and st.st_size != file.size:
        return False
    if file.sha256 is None:
        return True  # nothing published to compare with: its load checks it (see the module's notes)
    key = f"{st.st_size} {st.st_mtime_ns} {file.sha256}\n"
    with contextlib.suppress(OSError):
        if _stamp(path).read_text() == key:
            return True
    if sha256_of(path) != file.sha256:
        return False
    with contextlib.suppress(OSError):  # a read-only model directory still works, it just re-hashes
        _stamp(path).write_text(key)
    return True


@contextlib.contextmanager
def _exclusive(path: Path) -> Iterator[None]:
    """An exclusive ``flock`` on the lock file ``path``: a second process waits here, then finds the file done.

    The lock file is removed when the holder is done, so the model directory keeps only model files.
    A waiter that then holds the lock on a removed file opens the new one and locks again.
    """
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise _CannotWrite(exc) from None
    while True:
        try:
            handle = open(path, "a")
        except OSError as exc:
            raise _CannotWrite(exc) from None
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            log.info("waiting for another process to finish %s", path.name.removesuffix(".lock"))
            fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            if os.path.samestat(os.fstat(handle.fileno()), os.stat(path)):
                break  # the lock file in the directory is the one locked
        except FileNotFoundError:
            pass
        handle.close()
    try:
        yield
    finally:
        path.unlink(missing_ok=True)  # before unlocking: a waiter then sees its file was removed
        handle.close()


class _ReadTimeout:
    """Connect with the short timeout, then wait longer for data (a big transfer may pause)."""

    def connect(self) -> None:
        super().connect()  # type: ignore[misc]
        self.sock.settimeout(READ_TIMEOUT_S)  # type: ignore[attr-defined]


class _HTTPConnection(_ReadTimeout, http.client.HTTPConnection):
    pass


class _HTTPSConnection(_ReadTimeout, http.client.HTTPSConnection):
    pass


class _HTTPHandler(urllib.request.HTTPHandler):
    def http_open(self, req: urllib.request.Request) -> http.client.HTTPResponse:
        return self.do_open(_HTTPConnection, req)


class _HTTPSHandler(urllib.request.HTTPSHandler):
    def https_open(self, req: urllib.request.Request) -> http.client.HTTPResponse:
        return self.do_open(_HTTPSConnection, req, context=self._context)


_opener = urllib.request.build_opener(_HTTPHandler, _HTTPSHandler)


def _fetch(url: str, part: Path, file: ModelFile, progress: bool) -> None:
    """Download ``url`` into ``part``, continuing a partial file when the server allows it."""
    have = part.stat().st_size if part.exists() else 0
    if file.size is not None and have > file.size:
        have = 0
    request = urllib.request.Request(url, headers={"User-Agent": USER_AGENT})
    if have:
        request.add_header("Range", f"bytes={have}-")
    try:
        response = _opener.open(request, timeout=CONNECT_TIMEOUT_S)
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and have and (file.size is None or have == file.size):
            return  # "range not satisfiable": the partial file may be whole already; the checksum decides
        raise
    with response:
        content_range = response.headers.get("Content-Range", "")
        if have and response.status == 206 and not content_range.startswith(f"bytes {have}-"):
            part.unlink()
            raise OSError(f"asked for bytes {have}- but got {content_range!r}: starting over")
        if have and response.status != 206:
            have = 0  # the server ignored the Range: start over
        length = response.headers.get("Content-Length", "")
        total = have + int(length) if length.isdigit() else None
        if match := re.fullmatch(r"bytes \d+-\d+/(\d+)", content_range):
            total = int(match[1])
        if file.size is not None and total is not None and total != file.size:
            raise _WrongFile(f"the server offers {total} bytes, expected {file.size}")
        if total is not None and shutil.disk_usage(part.parent).free < total - have:
            raise OSError(errno.ENOSPC, f"not enough free space in {part.parent} for {total - have} more bytes")
        from tqdm import tqdm

        bar = tqdm(
            total=total,
            initial=have,
            unit="B",
            unit_scale=True,
            unit_divisor=1024,
            desc=file.name,
            disable=not (progress and sys.stderr.isatty()),
        )
        with open(part, "ab" if have else "wb") as out, bar:
            while chunk := response.read(CHUNK):
                out.write(chunk)
                bar.update(len(chunk))
                if file.size is not None and out.tell() > file.size:
                    raise _WrongFile(f"the server sent more than the expected {file.size} bytes")
            out.flush()
            os.fsync(out.fileno())
            got = out.tell()
        if total is not None and got < total:
            raise OSError(f"connection closed at {got} of {total} bytes")


def _download(file: ModelFile, target: Path, progress: bool) -> None:
    """Try every URL in turn until ``target`` is in place and verified; else raise ``WeightsUnavailable``."""
    part = target.with_name(target.name + ".part")
    tried: list[str] = []
    for url in file.urls:
        failures = 0
        while failures < ATTEMPTS_PER_URL:
            before = part.stat().st_size if part.exists() else 0
            try:
                log.info("downloading %s from %s", file.name, url)
                _fetch(url, part, file, progress)
            except _WrongFile as exc:
                part.unlink(missing_ok=True)
                tried.append(f"{url}: wrong file ({exc})")
                break
            except urllib.error.HTTPError as exc:
                tried.append(f"{url}: HTTP {exc.code} {exc.reason}")
                if 400 <= exc.code < 500 and exc.code not in (408, 429):
                    break  # this mirror does not have it; asking again will not help
                failures += 1
            except (OSError, http.client.HTTPException) as exc:
                if isinstance(exc, OSError) and exc.errno in DISK_ERRORS:
                    tried.append(f"{url}: cannot write {part}: {exc.strerror or exc}")
                    raise WeightsUnavailable(_explain(file, target, tried)) from None  # no mirror can fix this
                reason = exc.reason if isinstance(exc, urllib.error.URLError) else exc
                tried.append(f"{url}: {reason or type(exc).__name__}")
                grew = part.exists() and part.stat().st_size > before
                failures = 0 if grew else failures + 1  # bytes came in: keep resuming
            else:
                if file.sha256 is None:
                    log.warning(
                        "%s has no published sha256: accepted as a complete transfer (to pin it, name its sha256 "
                        "in %s)",
                        file.name,
                        target.parent / "checksums.json",
                    )
                if file.sha256 is None or sha256_of(part) == file.sha256:
                    os.replace(part, target)
                    _is_verified(target, file)  # records the stamp
                    log.info("%s is ready at %s", file.name, target)
                    return
                part.unlink()  # a wrong file is never kept, not even as a partial one
                tried.append(f"{url}: checksum mismatch (the download's sha256 is not {file.sha256})")
                break
            if failures < ATTEMPTS_PER_URL:
                time.sleep(BACKOFF_S * max(failures, 1))
    raise WeightsUnavailable(_explain(file, target, tried))


def _resolve(
    name: str | ModelFile, directory: Path, urls: Sequence[str] | None = None, mirrors: Sequence[str] | None = None
) -> ModelFile:
    """The file as this call sees it: its URLs (``urls``, else ``mirrors`` as base URLs) and expected sha256."""
    file = name if isinstance(name, ModelFile) else REGISTRY.get(name)
    if file is None:
        raise WeightsUnavailable(f"unknown model file {name!r}; known: {', '.join(REGISTRY)}")
    if urls is None and mirrors:
        urls = [f"{base.strip().rstrip('/')}/{file.name}" for base in mirrors]
    if urls is not None:
        file = dataclasses.replace(file, urls=tuple(urls))
    return _expected(file, directory)


def ensure_all(
    names: Sequence[str],
    directory: str | Path | None = None,
    progress: bool = True,
    mirrors: Sequence[str] | None = None,
) -> list[Path]:
    """``ensure`` each file in turn. When one cannot be had, the error names every file still
    missing with its size and the total, then why the first failed and where the others come from."""
    directory = Path(directory).expanduser() if directory else default_model_dir()
    paths = []
    for i, name in enumerate(names):
        try:
            paths.append(ensure(name, directory, progress=progress, mirrors=mirrors))
        except WeightsUnavailable as exc:
            files = [_resolve(n, directory, mirrors=mirrors) for n in names[i:]]
            missing = [files[0]] + [f for f in files[1:] if not _is_verified(directory / f.name, f)]
            if len(missing) == 1:
                raise
            total = sum(f.shown_size for f in missing)
            lines = [
                f"{len(missing)} model files are missing from {directory}, {human_size(total)} in all:",
                *(f"  {f.name}  {human_size(f.shown_size)}" for f in missing),
                str(exc),
                "the other files come from these URLs, each saved under its name in the same directory:",
                *(f"  {f.name}: {' or '.join(f.urls)}" for f in missing[1:]),
            ]
            raise WeightsUnavailable("\n".join(lines)) from None
    return paths


def ensure(
    name: str | ModelFile,
    directory: str | Path | None = None,
    urls: Sequence[str] | None = None,
    progress: bool = True,
    mirrors: Sequence[str] | None = None,
) -> Path:
    """The path of the verified model file ``name``, downloading it first if needed.

    ``name`` is a registry name or a ``ModelFile`` (for a file outside the registry); ``urls``
    replaces its mirrors, as do ``mirrors`` (base URLs serving the files under their names, e.g. a
    mirror inside a private network); ``directory`` defaults to ``default_model_dir()``. Raises
    ``WeightsUnavailable``, whose message says what was tried and how to place the file by hand,
    when it cannot be had.
    """
    directory = Path(directory).expanduser() if directory else default_model_dir()
    file = _resolve(name, directory, urls, mirrors)
    target = directory / file.name
    if _is_verified(target, file):
        return target  # the usual case: no lock, no writes (the directory may be read-only)
    created = not directory.exists()
    try:
        with _exclusive(directory / f"{file.name}.lock"):
            if target.exists():  # another process may have just finished it
                if _is_verified(target, file):
                    return target
                log.warning("%s is not the expected file (sha256 or size): deleting it, downloading again", target)
                target.unlink()
                _stamp(target).unlink(missing_ok=True)
            _download(file, target, progress)
    except _CannotWrite as exc:
        raise WeightsUnavailable(_explain(file, target, [f"cannot write to {directory}: {exc}"])) from None
    finally:
        if created:
            with contextlib.suppress(OSError):
                directory.rmdir()  # a directory this call made and nothing came of: removed again
    return target


def human_size(n: int) -> str:
    return f"{n / 1e9:.1f} GB" if n >= 1e9 else f"{n / 1e6:.0f} MB"


def _explain(file: ModelFile, target: Path, tried: Sequence[str]) -> str:
    part = target.with_name(target.name + ".part")
    lines = [
        f"cannot get model file {file.name} ({human_size(file.shown_size)})"
        + (f": {file.description}" if file.description else ""),
        f"looked in: {target.parent} "
        "(set DISCO_MODEL_DIR, or --dir of python -m disco_service.client.download, to use another)",
        "tried:" if tried else "no URL to try",
        *(f"  - {t}" + (f" ({n} times)" if n > 1 else "") for t, n in _runs(tried)),
        "to place it by hand: download it from one of these URLs",
        *(f"    {url}" for url in file.urls),
        f"  and save it as {target} ("
        + (f"sha256 {file.sha256})" if file.sha256 else "no published sha256: any complete copy is accepted)"),
    ]
    if part.exists():
        lines.append(f"the partial download {part} is kept and will be resumed")
    return "\n".join(lines)


def _runs(items: Sequence[str]) -> list[tuple[str, int]]:
    """Consecutive repeats collapsed: [(item, count), ...]."""
    out: list[tuple[str, int]] = []
    for item in items:
        if out and out[-1][0] == item:
            out[-1] = (item, out[-1][1] + 1)
        else:
            out.append((item, 1))
    return out
