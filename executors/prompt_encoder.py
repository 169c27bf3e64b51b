"""Jina executor: prompts to text embeddings by each of ``clip_models`` (``doc.embedding``, side by side,
``tags['clip_embedding_widths']``, ``tags['prompt_weights']``: see ``disco_service.wire``).

A prompt schedule (``{frame: [prompts]}``) is encoded whole: ``doc.embedding`` stacks every
frame's prompts in frame order and ``tags['prompt_sets']`` says where each starts
(``[[frame, count], ...]``; a plain list is ``[[0, n]]``). The ``image_prompts`` (data URIs) follow
each frame's prompts: ``IMAGE_PROMPT_CUTS`` rows of cutout embeddings per image
(``disco.image_prompts``). A prompt with a weight schedule or CLIP models of its own has
``{"weight": ..., "clip_models": ...}`` in ``tags['prompt_weights']`` instead of a number
(``disco.prompts.Prompt.wire_weight``).

As the Flow's first executor it is the server's trust boundary: it validates each request as
any client may have sent it (``wire.settings_from_request``, with this server's limits): an
unknown tag (a misspelt setting) is refused with the nearest valid name, and a missing or null
``seed`` becomes a random one, reported back in ``tags['seed']``. The executors after it read
the tags with their numbers' types restored and do not validate again. A refused Document gets
the refusal in its tags (``error``, ``error_code``, ``error_setting``) before the request fails.

A Document id names one image for as long as anything of it is kept (its job-board rows, its
result in the store): a request that uses it again is refused, so an old cancel or result never
answers for a new image. An accepted image is put on the job board as ``waiting``; an id that never
got further (its request could not reach a sampler) may be sent again.
"""

import time

import numpy as np
from docarray import DocumentArray
from jina import Executor, requests

from disco.clip_model import encode_texts
from disco.image_prompts import IMAGE_PROMPT_CUTS, encode_image_prompt
from disco.loading import ModelCache, select_device
from disco.prompts import build_prompts, data_uri_bytes, parse_image_prompt, prompt_sets
from disco.settings import Limits, Settings
from disco_service import config, wire
from disco_service.server.flow_secret import guard_executor, resolve
from disco_service.server.jobs import JobBoard
from disco_service.server.results import ResultStore
from disco_service.wire import ErrorCode, JobStatus


class DocumentIdInUse(ValueError):
    """A request reuses the id of an image the service still knows."""

    code = ErrorCode.DOCUMENT_ID_IN_USE


def validated(doc, limits: Limits) -> Settings:
    """The settings of one request's Document, checked at the server's trust boundary
    (``wire.settings_from_request`` with this server's ``limits``, and the bytes the request must
    carry). Raises ``SettingsError`` naming the setting, after writing the refusal into the
    Document's tags (``wire.ERROR_TAGS``)."""
    try:
        settings = wire.settings_from_request(doc.tags, limits)
        start_frame = wire.restore_numbers(doc.tags).get("start_frame", 0)
        wire.check_request_media(settings, doc.blob, start_frame, doc.uri)
    except ValueError as exc:
        doc.tags.update(wire.failure_of(exc).tags())
        raise
    return settings


class PromptEncoder(Executor):
    def __init__(
        self,
        model_dir: str | None = None,
        use_gpu: str | None = None,
        max_pixels: int | None = None,
        max_pixel_steps: int | None = None,
        state_store: str | None = None,
        results_dir: str | None = None,
        flow_secret: str | None = None,
        **kwargs,
    ):
        """Arguments (``uses_with``) override the service's configuration (``disco_service.config``);
        ``state_store``: the state store holding the job board (serve.py passes its server's);
        ``flow_secret``: what the gateway's calls must carry (server/flow_secret.py)."""
        super().__init__(**kwargs)
        cfg = config.load()
        guard_executor(self, resolve(flow_secret))
        self.limits = Limits(
            max_pixels=int(max_pixels or cfg.limits.max_pixels),
            max_pixel_steps=int(max_pixel_steps) if max_pixel_steps else cfg.limits.max_pixel_steps,
        )
        device = select_device(use_gpu if use_gpu is not None else cfg.use_gpu, "DISCO_USE_GPU")
        self.cache = ModelCache(model_dir or cfg.model_dir, device, mirrors=cfg.weights_mirrors)
        self.cache.clip()  # the default CLIP RN50, loaded at start; others on first use, then kept
        self.board = JobBoard(state_store or cfg.store_target(config.FLOW_GRPC_PORT))
        self.store = ResultStore(results_dir or cfg.results_dir, cfg.result_ttl_s)

    @requests(on="/generate")
    def encode(self, docs: DocumentArray, **kwargs) -> None:
        for doc in docs:
            try:
                self._encode(doc)
            except ValueError as exc:  # a refusal (a setting, a prompt too long, the id): said in its tags too
                doc.tags.update(wire.failure_of(exc).tags())
                raise
        for doc in docs:
            self.board.update(doc.id, status=JobStatus.WAITING, accepted=time.time())

    def _encode(self, doc) -> None:
        """One Document: validated, its id checked, its prompts embedded (see the module's docstring)."""
        s = validated(doc, self.limits)
        self.check_new(doc.id)
        doc.tags.update(wire.restore_numbers(doc.tags))  # the executors after this one read numbers
        doc.tags["n_batches"] = s.n_batches  # 1 when not given: a Document is one image
        if s.seed is None:
            doc.tags["seed"] = wire.new_run_seed()
        sets = [
            (frame, build_prompts(texts, s.style, s.artist)) for frame, texts in prompt_sets(s.text_prompts).items()
        ]
        texts = [p.text for _, prompts in sets for p in prompts]
        truncate = s.truncate_overlength_prompt
        embeddings = {m: encode_texts(self.cache.clip(m), texts, m, truncate).cpu().numpy() for m in s.clip_models}
        weights = [[p.wire_weight() for p in prompts] for _, prompts in sets]
        images = [parse_image_prompt(p) for p in s.image_prompts]
        if images:  # each image's cutouts, weighed beside every frame's prompts
            for m in s.clip_models:
                rows = [encode_image_prompt(self.cache.clip(m), data_uri_bytes(i.source), m, s.width, s.height,
                                            s.skip_augs).cpu().numpy() for i in images]  # fmt: skip
                blocks = np.split(embeddings[m], np.cumsum([len(p) for _, p in sets])[:-1])
                embeddings[m] = np.concatenate([part for block in blocks for part in (block, *rows)])
            image_weights = [i.weight / IMAGE_PROMPT_CUTS for i in images for _ in range(IMAGE_PROMPT_CUTS)]
            weights = [w + image_weights for w in weights]
        doc.embedding, doc.tags[wire.EMBEDDING_WIDTHS_TAG] = wire.pack_embeddings(embeddings)
        doc.tags[wire.PROMPT_WEIGHTS_TAG] = [w for frame_weights in weights for w in frame_weights]
        doc.tags["prompt_sets"] = [[frame, len(w)] for (frame, _), w in zip(sets, weights, strict=True)]

    def check_new(self, doc_id: str) -> None:
        """Refuse an id that is not a file name, or one the service still keeps an image under."""
        try:
            state = self.board.read(doc_id)
            if state is not None and state.get("status") == JobStatus.WAITING and not self.store.used(doc_id):
                return  # sent again: the first request never reached a sampler
            known = state or self.store.read(doc_id) or self.store.used(doc_id)
        except ValueError as exc:
            raise DocumentIdInUse(f"Document id: {exc}") from None
        if known:
            was = known.get("status", "made") if isinstance(known, dict) else "made"
            raise DocumentIdInUse(
                f"Document id {doc_id!r} was already used for an image ({was}); send each image with a new id"
            )
