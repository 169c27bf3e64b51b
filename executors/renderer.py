"""Jina executor: frames to PNG image chunks, the final image to ``doc.uri``; raw tensors dropped."""

from __future__ import annotations

from docarray import DocumentArray
from jina import Executor, requests


class Renderer(Executor):
    @requests(on="/generate")
    def render(self, docs: DocumentArray, **kwargs) -> None:
        for doc in docs:
            for chunk in doc.chunks:
                if chunk.tensor is not None:
                    chunk.convert_image_tensor_to_uri()  # PNG data URI
                    chunk.tensor = None
            if len(doc.chunks):
                doc.uri = doc.chunks[-1].uri  # the last frame: the final image, or the latest if stopped early
            doc.embedding = None
            doc.blob = None
