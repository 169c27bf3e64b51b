"""Files a run leaves in ``output_dir``, named from ``reverse_diffusion-{batch_name}-{seed}``.

For image ``i`` of a run (the run's ``seed``; image ``i`` itself used ``seed + i``):

    reverse_diffusion-{batch_name}-{seed}_{i}.png             the final image
    reverse_diffusion-{batch_name}-{seed}_{i}-step{NNNN}.png  each kept frame
    reverse_diffusion-{batch_name}-{seed}_{i}.gif             the frames as an animation
    reverse_diffusion-{batch_name}-{seed}_{i}-sprite.png      the frames as a sprite sheet

An empty ``batch_name`` drops its part (``reverse_diffusion-{seed}_...``). When files of an
earlier run already use the prefix, ``-run2``, ``-run3``... is appended: nothing is overwritten.
"""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

from .settings import Settings


def run_prefix(output_dir: Path, batch_name: str, seed: int) -> str:
    base = "-".join(part for part in ("reverse_diffusion", batch_name, str(seed)) if part)
    prefix, run = base, 1
    while any(output_dir.glob(f"{glob_escape(prefix)}_*")):
        run += 1
        prefix = f"{base}-run{run}"
    return prefix


def glob_escape(text: str) -> str:
    return "".join(f"[{c}]" if c in "[]*?" else c for c in text)


def _data_uri_bytes(uri: str) -> bytes:
    header, _, payload = uri.partition(",")
    if not header.startswith("data:") or ";base64" not in header:
        raise ValueError("expected a base64 data URI")
    return base64.b64decode(payload)


def _inside(directory: Path, name: str) -> Path:
    path = (directory / name).resolve()
    if directory.resolve() not in path.parents:
        raise ValueError(f"refusing to write outside output_dir: {name!r}")
    return path


def save_outputs(docs: Any, settings: Settings) -> list[Path]:
    """Write every Document's final image, frames, GIF and sprite sheet; record them in tags['files']."""
    out = Path(settings.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    prefix = run_prefix(out, settings.batch_name, int(docs[0].tags.get("run_seed", settings.seed)) if len(docs) else 0)
    written: list[Path] = []
    for doc in docs:
        i = int(doc.tags.get("batch_index", 0))
        files = []
        for chunk in doc.chunks:
            if chunk.uri:
                path = _inside(out, f"{prefix}_{i}-step{int(chunk.tags.get('step', 0)):04d}.png")
                path.write_bytes(_data_uri_bytes(chunk.uri))
                files.append(path)
        if doc.uri:
            final = _inside(out, f"{prefix}_{i}.png")
            final.write_bytes(_data_uri_bytes(doc.uri))
            files.insert(0, final)
        if len(doc.chunks):
            gif = _inside(out, f"{prefix}_{i}.gif")
            doc.chunks.save_gif(str(gif), show_index=True, size_ratio=1.0)
            sprite = _inside(out, f"{prefix}_{i}-sprite.png")
            doc.chunks.plot_image_sprites(str(sprite), skip_empty=True, show_index=True, keep_aspect_ratio=True)
            files += [gif, sprite]
        doc.tags["files"] = [str(f) for f in files]
        written += files
    return written
