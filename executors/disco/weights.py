"""Model files: where they come from, where they are cached, and a careful download.

Files live in ``DISCO_MODEL_DIR`` (default ``~/.cache/disco-diffusion``). A missing file is
downloaded on first use (or by ``python -m disco.weights``): into ``<name>.part``, resumed
with an HTTP Range request after an interruption, tried over every mirror, checked against
its sha256 before an atomic rename, under a file lock so concurrent starts do not collide.
A ``checksums.json`` in the model directory may name other sha256 values for locally made or
converted files (the tests' recipe weights use it); they are checked just the same.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import hashlib
import json
import os
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

CHUNK = 1 << 20
CONNECT_TIMEOUT_S = 10.0
ATTEMPTS_PER_URL = 2


@dataclass(frozen=True)
class ModelFile:
    name: str
    sha256: str  # full digest, or a prefix of at least 8 hex digits (torchvision-style names)
    urls: tuple[str, ...]
    description: str = ""


REGISTRY: dict[str, ModelFile] = {
    f.name: f
    for f in (
        ModelFile(
            "512x512_diffusion_uncond_finetune_008100.pt",
            "9c111ab89e214862b76e1fa6a1b3f1d329b1a88281885943d2cdbe357ad57648",
            (
                "https://huggingface.co/lowlevelware/512x512_diffusion_unconditional_ImageNet/resolve/main/"
                "512x512_diffusion_uncond_finetune_008100.pt",
                "https://the-eye.eu/public/AI/models/512x512_diffusion_unconditional_ImageNet/"
                "512x512_diffusion_uncond_finetune_008100.pt",
            ),
            "ADM 512x512 unconditional ImageNet diffusion (2.2 GB)",
        ),
        ModelFile(
            "256x256_diffusion_uncond.pt",
            "a37c32fffd316cd494cf3f35b339936debdc1576dad13fe57c42399a5dbc78b1",
            (
                "https://openaipublic.blob.core.windows.net/diffusion/jul-2021/256x256_diffusion_uncond.pt",
                "https://www.dropbox.com/s/9tqnqo930mpnpcn/256x256_diffusion_uncond.pt",
            ),
            "ADM 256x256 unconditional ImageNet diffusion (2.2 GB)",
        ),
        ModelFile(
            "secondary_model_imagenet_2.pth",
            "983e3de6f95c88c81b2ca7ebb2c217933be1973b1ff058776b970f901584613a",
            (
                "https://huggingface.co/spaces/huggi/secondary_model_imagenet_2.pth/resolve/main/"
                "secondary_model_imagenet_2.pth",
                "https://the-eye.eu/public/AI/models/v-diffusion/secondary_model_imagenet_2.pth",
                "https://ipfs.pollinations.ai/ipfs/bafybeibaawhhk7fhyhvmm7x24zwwkeuocuizbqbcg5nqx64jq42j75rdiy/"
                "secondary_model_imagenet_2.pth",
            ),
            "Disco Diffusion's secondary model (54 MB)",
        ),
        ModelFile(
            "vgg16-397923af.pth",
            "397923af",
            ("https://download.pytorch.org/models/vgg16-397923af.pth",),
            "VGG16 for the LPIPS init-image loss (528 MB; only with an init image)",
        ),
    )
}


class WeightsUnavailable(RuntimeError):
    """A model file is missing and could not be downloaded; the message says what to do."""


def model_dir() -> Path:
    return Path(os.environ.get("DISCO_MODEL_DIR") or Path.home() / ".cache" / "disco-diffusion").expanduser()


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def expected_sha256(file: ModelFile, directory: Path) -> str:
    local = directory / "checksums.json"
    if local.is_file():
        try:
            return json.loads(local.read_text()).get(file.name, file.sha256)
        except json.JSONDecodeError:
            pass
    return file.sha256


def _verified(path: Path, expected: str) -> bool:
    """True if the file's sha256 matches; the result is remembered per size and mtime."""
    stamp = path.with_name(path.name + ".sha256ok")
    st = path.stat()
    key = f"{st.st_size}:{st.st_mtime_ns}:{expected}"
    if stamp.is_file() and stamp.read_text() == key:
        return True
    if sha256_of(path).startswith(expected):
        stamp.write_text(key)
        return True
    return False


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)  # a second process waits here, then finds the file done
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _fetch(url: str, part: Path, progress: bool) -> None:
    """Download ``url`` into ``part``, continuing a partial file when the server allows."""
    have = part.stat().st_size if part.exists() else 0
    request = urllib.request.Request(url, headers={"User-Agent": "disco-diffusion-jina"})
    if have:
        request.add_header("Range", f"bytes={have}-")
    with urllib.request.urlopen(request, timeout=CONNECT_TIMEOUT_S) as response:
        if have and response.status != 206:
            have = 0  # the server ignored Range: start over
        length = response.headers.get("Content-Length")
        total = have + int(length) if length else None
        from tqdm import tqdm

        with (
            open(part, "ab" if have else "wb") as out,
            tqdm(
                total=total,
                initial=have,
                unit="B",
                unit_scale=True,
                desc=part.name.removesuffix(".part"),
                disable=not progress,
            ) as bar,
        ):
            while chunk := response.read(CHUNK):
                out.write(chunk)
                bar.update(len(chunk))
        if total is not None and part.stat().st_size < total:
            raise OSError(f"transfer ended at {part.stat().st_size} of {total} bytes")


def ensure(
    name: str,
    directory: str | Path | None = None,
    *,
    file: ModelFile | None = None,
    progress: bool = True,
) -> Path:
    """The path of a verified model file, downloading it first if needed."""
    file = file or REGISTRY.get(name)
    if file is None:
        raise WeightsUnavailable(f"unknown model file {name!r}; known: {sorted(REGISTRY)}")
    directory = Path(directory) if directory else model_dir()
    directory.mkdir(parents=True, exist_ok=True)
    target = directory / file.name
    expected = expected_sha256(file, directory)
    with _locked(directory / f"{file.name}.lock"):
        if target.is_file():
            if _verified(target, expected):
                return target
            target.unlink()  # a damaged file: fetch it again
        part = directory / f"{file.name}.part"
        tried: list[str] = []
        for url in file.urls:
            for attempt in range(ATTEMPTS_PER_URL):
                try:
                    _fetch(url, part, progress)
                except urllib.error.HTTPError as exc:
                    if exc.code != 416 or not part.exists():  # 416: the partial file is already complete
                        tried.append(f"{url} (HTTP {exc.code} {exc.reason})")
                        if exc.code in (403, 404, 410):
                            break  # this mirror does not have it; retrying will not help
                        time.sleep(min(2.0, 0.5 * (attempt + 1)))
                        continue
                except (OSError, urllib.error.URLError) as exc:
                    tried.append(f"{url} ({getattr(exc, 'reason', exc)})")
                    time.sleep(min(2.0, 0.5 * (attempt + 1)))
                    continue
                if sha256_of(part).startswith(expected):
                    os.replace(part, target)
                    _verified(target, expected)
                    return target
                part.unlink()  # a wrong file is never kept, not even as a partial
                tried.append(f"{url} (checksum mismatch: expected sha256 {expected})")
                break
        raise WeightsUnavailable(_explain(file, target, tried))


def _explain(file: ModelFile, target: Path, tried: Sequence[str]) -> str:
    lines = [
        f"cannot get model file {file.name} ({file.description})",
        f"looked in: {target.parent} (set DISCO_MODEL_DIR to use another directory)",
        "tried:",
        *(f"  - {t}" for t in tried),
        f"to place it by hand, download it from one of the URLs above and save it as {target}",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m disco.weights", description="Download model files.")
    parser.add_argument("names", nargs="*", help=f"files to get (default: all of {sorted(REGISTRY)})")
    parser.add_argument("--dir", type=Path, default=None, help="model directory (default: DISCO_MODEL_DIR)")
    args = parser.parse_args(argv)
    try:
        for name in args.names or [n for n in REGISTRY if not n.startswith("vgg16")]:
            print(ensure(name, args.dir))
    except WeightsUnavailable as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
