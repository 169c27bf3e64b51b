"""Disco Diffusion (CLIP RN50) client: ``generate_image`` and the command line.

    from client import generate_image, load_run
    da = generate_image(text_prompts=["A lighthouse in a storm:1", "yellow color scheme:0.5"], steps=250)
    again = load_run("lighthouses", output_dir="out")   # a run of batch_name "lighthouses", kept by name

    python client.py --text_prompts "A lighthouse in a storm" --steps 250 [--host grpc://host:51000]

The PaddleHub module's function (``disco_service/client/api.py``) and command line
(``disco_service/client/cli.py``). Without ``host`` the Flow in ``flow.yml`` is started for the call
(``serve.py`` on free local ports) and stopped afterwards.
"""

import sys

from disco_service.client.api import GenerationFailed, RunNotFound, generate_image, load_run  # noqa: F401 (the API)
from disco_service.client.cli import main

if __name__ == "__main__":
    sys.exit(main())
