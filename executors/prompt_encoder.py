"""Jina executor: prompts to CLIP RN50 text embeddings (``doc.embedding``, ``tags['prompt_weights']``).

As the Flow's first executor it also checks each request as any client may have sent it: an
unknown tag (a misspelt setting) is refused with the nearest valid name, and a missing or
null ``seed`` becomes a random one, reported back in ``tags['seed']``. A number setting that
arrived as true/false (a 1 or 0 sent over HTTP) is passed on as the number.
"""

import random

from docarray import DocumentArray
from jina import Executor, requests

from disco.clip_model import encode_texts
from disco.loading import ModelCache, device_from_env
from disco.prompts import build_prompts, normalised_weights
from disco.settings import numbers_from_booleans, settings_from_request


class PromptEncoder(Executor):
    def __init__(self, model_dir: str | None = None, use_gpu: bool | None = None, **kwargs):
        super().__init__(**kwargs)
        self.cache = ModelCache(model_dir, device_from_env(use_gpu))
        self.clip = self.cache.clip()  # loaded once, at start

    @requests(on="/generate")
    def encode(self, docs: DocumentArray, **kwargs) -> None:
        for doc in docs:
            doc.tags.update(numbers_from_booleans(doc.tags))  # the executors after this one read numbers
            s = settings_from_request(doc.tags)
            if s.seed is None:
                doc.tags["seed"] = random.randint(0, 2**32 - 1)
            prompts = build_prompts(s.text_prompts, s.style, s.artist)
            weights = normalised_weights([p.weight for p in prompts])  # refuses a zero sum early
            doc.embedding = encode_texts(self.clip, [p.text for p in prompts]).cpu().numpy()
            doc.tags["prompt_texts"] = [p.text for p in prompts]
            doc.tags["prompt_weights"] = [p.weight for p in prompts]
            doc.tags["prompt_weights_normalised"] = weights
