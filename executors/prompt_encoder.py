"""Jina executor: prompts to CLIP RN50 text embeddings (``doc.embedding``, ``tags['prompt_weights']``)."""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from disco.clip_model import encode_texts  # noqa: E402
from disco.loading import ModelCache, device_from_env  # noqa: E402
from disco.prompts import build_prompts, normalised_weights  # noqa: E402
from disco.settings import settings_from_tags  # noqa: E402
from docarray import DocumentArray  # noqa: E402
from jina import Executor, requests  # noqa: E402


class PromptEncoder(Executor):
    def __init__(self, model_dir: str | None = None, use_gpu: bool | None = None, **kwargs):
        super().__init__(**kwargs)
        self.cache = ModelCache(model_dir, device_from_env(use_gpu))
        self.clip = self.cache.clip()  # loaded once, at start

    @requests(on="/generate")
    def encode(self, docs: DocumentArray, **kwargs) -> None:
        for doc in docs:
            s = settings_from_tags(doc.tags)
            prompts = build_prompts(s.text_prompts, s.style, s.artist)
            weights = normalised_weights([p.weight for p in prompts])  # refuses a zero sum early
            doc.embedding = encode_texts(self.clip, [p.text for p in prompts]).cpu().numpy()
            doc.tags["prompt_texts"] = [p.text for p in prompts]
            doc.tags["prompt_weights"] = [p.weight for p in prompts]
            doc.tags["prompt_weights_normalised"] = weights
