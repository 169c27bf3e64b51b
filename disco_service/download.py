"""Download and verify model files ahead of time: ``python -m disco_service.download [NAME ...]``.

Without names it gets every file but the CLIP models other than the default RN50 (``CLIP_WEIGHTS``,
about 7 GB together): name those, or let ``client.py --download --clip_models ...`` pick them.

The directory is ``--dir``, else ``DISCO_MODEL_DIR`` (``~/.cache/disco-diffusion`` unless set);
the mirrors are ``--mirror``, else ``DISCO_WEIGHTS_MIRROR``, else each file's public ones.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from disco.weights import CLIP_WEIGHTS, REGISTRY, WeightsUnavailable, ensure

from . import config


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m disco_service.download",
        description="Download and verify the model files, then print where they are.",
    )
    parser.add_argument(
        "names",
        nargs="*",
        metavar="NAME",
        help=f"files to get (default: all but the optional CLIP models): {', '.join(REGISTRY)}",
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
        optional = {f.name for f in CLIP_WEIGHTS}
        for name in args.names or [n for n in REGISTRY if n not in optional]:
            print(ensure(name, args.dir or cfg.model_dir, progress=not args.quiet, mirrors=mirrors), flush=True)
    except WeightsUnavailable as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
