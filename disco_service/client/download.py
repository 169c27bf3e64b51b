"""Download and verify model files ahead of time: ``python -m disco_service.client.download [NAME ...] [--all]``.

Without names: the files a run with the default settings loads, and VGG16 for init images
(``DEFAULT_FILES``); ``--all``: every file of the registry, every diffusion model and every CLIP
model of ``clip_models`` included (about 20 GB, and 8 GB more of CLIP models). The directory is
``--dir``, else ``DISCO_MODEL_DIR`` (``~/.cache/disco-diffusion`` unless set); the mirrors are
``--mirror``, else ``DISCO_WEIGHTS_MIRROR``, else each file's public ones. ``client.py --download
--clip_models ...`` gets the files those settings need.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from disco.models import DEFAULT_MODEL
from disco.weights import REGISTRY, WeightsUnavailable, ensure, files_needed
from disco_service import config

__all__ = ["DEFAULT_FILES", "main"]

DEFAULT_FILES = files_needed(DEFAULT_MODEL, use_secondary_model=True, with_init_loss=True)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m disco_service.client.download",
        description="Download and verify the model files, then print where they are.",
    )
    known, default = " ".join(REGISTRY), " ".join(DEFAULT_FILES)
    parser.add_argument("names", nargs="*", metavar="NAME", help=f"files to get (default: {default}): {known}")
    parser.add_argument(
        "--all", action="store_true", help="every file above, every diffusion model and CLIP model included"
    )
    parser.add_argument(
        "--dir", type=Path, help="model directory (default: $DISCO_MODEL_DIR or ~/.cache/disco-diffusion)"
    )
    parser.add_argument(
        "--mirror",
        action="append",
        metavar="URL",
        help="a base URL serving the files under their names, used instead of the public mirrors (repeatable; "
        "default: $DISCO_WEIGHTS_MIRROR, comma-separated)",
    )
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    args = parser.parse_args(argv)
    for name in args.names:
        if name not in REGISTRY:
            parser.error(f"unknown model file {name!r}; known: {', '.join(REGISTRY)}")
    try:
        cfg = config.load()
    except config.ConfigError as exc:
        parser.error(str(exc))
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    mirrors = args.mirror or cfg.weights_mirrors
    try:
        for name in list(REGISTRY) if args.all else args.names or DEFAULT_FILES:
            print(ensure(name, args.dir or cfg.model_dir, progress=not args.quiet, mirrors=mirrors), flush=True)
    except WeightsUnavailable as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
