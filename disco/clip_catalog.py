"""The CLIP models a run may be guided by (the ``clip_models`` setting), without torch.

Each is named as discoart names it, open_clip's model name and its pretrained tag joined by
``::`` (``"ViT-B-32::openai"``), and comes with what the engine needs to know about it: the open_clip
architecture that fits its weights, its weights file (``disco.weights.REGISTRY``), its input size
and embedding width, and the image statistics it was trained with.

QuickGELU: OpenAI trained every CLIP with QuickGELU (``x * sigmoid(1.702 x)``), and open_clip's plain
model names now use ``nn.GELU``; their weights are loaded into the ``-quickgelu`` variants (``RN50``
is ``RN50-quickgelu``), as open_clip's pretrained table says. The LAION-2B models offered here were
trained with plain GELU and use the plain names. The Disco notebook's thirteen OpenCLIP switches
(LAION-400M, LAION-2B, YFCC-15M and CC-12M weights) are offered under the names the notebook hands
to open_clip, each built as open_clip builds that name: the plain names (``RN50::yfcc15m``,
``ViT-B-32::laion400m_e31``) put weights trained with QuickGELU into plain GELU layers, as the
notebook did, and the ``-quickgelu`` names (``RN50-quickgelu::yfcc15m``) are the matched ones; both
read the same file. ``tests/test_clip_models.py`` checks this table against open_clip's own.
"""

from __future__ import annotations

from dataclasses import dataclass

# open_clip.OPENAI_DATASET_MEAN / STD (and INCEPTION_MEAN / STD), written out to keep torch out of here
OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)
INCEPTION_MEAN = (0.5, 0.5, 0.5)
INCEPTION_STD = (0.5, 0.5, 0.5)


@dataclass(frozen=True)
class ClipSpec:
    """One offered CLIP model."""

    name: str  # "ViT-B-32::openai"
    architecture: str  # open_clip's model config for these weights
    file: str  # its weights file, a name in disco.weights.REGISTRY
    input_size: int  # the side of the square images it sees (its cutouts), pixels
    embed_dim: int  # the width of its image and text embeddings
    about: str  # what it is, in a few words, with its work per cutout (FLOP) relative to RN50 (--help, the docs)
    mean: tuple[float, float, float] = OPENAI_MEAN
    std: tuple[float, float, float] = OPENAI_STD

    @property
    def pretrained(self) -> str:
        """open_clip's pretrained tag (``openai``, ``laion2b_s34b_b79k``, ...)."""
        return self.name.split("::")[1]


def _openai(model: str, file: str, input_size: int, embed_dim: int, about: str) -> ClipSpec:
    return ClipSpec(f"{model}::openai", f"{model}-quickgelu", file, input_size, embed_dim, about)


def _openclip(model: str, pretrained: str, file: str, input_size: int, embed_dim: int, about: str) -> ClipSpec:
    """open_clip's ``model`` with its ``pretrained`` weights, built as ``open_clip.create_model(model, pretrained)``
    builds it (the architecture of the same name: plain GELU unless the name says ``-quickgelu``)."""
    return ClipSpec(f"{model}::{pretrained}", model, file, input_size, embed_dim, about)


CLIP_SPECS: dict[str, ClipSpec] = {
    spec.name: spec
    for spec in (
        _openai(
            "RN50",
            "open_clip_rn50_openai.safetensors",
            224,
            1024,
            "OpenAI ResNet-50: the default, the module's pictures",
        ),
        _openai("RN101", "RN101.pt", 224, 512, "OpenAI ResNet-101: 1.6x RN50's work per cutout"),
        _openai("RN50x4", "RN50x4.pt", 288, 640, "OpenAI ResNet-50x4, 288 px cutouts: 3.5x RN50's work"),
        _openai(
            "RN50x16", "RN50x16.pt", 384, 768, "OpenAI ResNet-50x16, 384 px cutouts: 12x RN50's work, heavy on memory"
        ),
        _openai(
            "RN50x64", "RN50x64.pt", 448, 1024, "OpenAI ResNet-50x64, 448 px cutouts: 43x RN50's work; large GPUs only"
        ),
        _openai(
            "ViT-B-32",
            "ViT-B-32.pt",
            224,
            512,
            "OpenAI ViT-B/32: the quickest (0.7x RN50's work); with ViT-B-16 and RN50 the notebook's default trio",
        ),
        _openai("ViT-B-16", "ViT-B-16.pt", 224, 512, "OpenAI ViT-B/16: finer patches than ViT-B/32, 2.8x RN50's work"),
        _openai("ViT-L-14", "ViT-L-14.pt", 224, 768, "OpenAI ViT-L/14: 13x RN50's work, heavy on memory"),
        _openai(
            "ViT-L-14-336",
            "ViT-L-14-336px.pt",
            336,
            768,
            "OpenAI ViT-L/14 at 336 px: 29x RN50's work; large GPUs only",
        ),
        ClipSpec(
            "ViT-B-32::laion2b_s34b_b79k",
            "ViT-B-32",
            "open_clip_vit_b_32_laion2b_s34b_b79k.safetensors",
            224,
            512,
            "ViT-B/32 trained on LAION-2B instead of OpenAI's data: another taste, as quick",
        ),
        ClipSpec(
            "ViT-B-16::laion2b_s34b_b88k",
            "ViT-B-16",
            "open_clip_vit_b_16_laion2b_s34b_b88k.bin",
            224,
            512,
            "ViT-B/16 trained on LAION-2B: 2.8x RN50's work",
        ),
        ClipSpec(
            "ViT-L-14::laion2b_s32b_b82k",
            "ViT-L-14",
            "open_clip_vit_l_14_laion2b_s32b_b82k.bin",
            224,
            768,
            "ViT-L/14 trained on LAION-2B: 13x RN50's work, heavy on memory",
            mean=INCEPTION_MEAN,
            std=INCEPTION_STD,
        ),
        # the notebook's OpenCLIP switches (v5.5 on), each built as the notebook builds it
        _openclip(
            "ViT-B-32",
            "laion2b_e16",
            "vit_b_32-laion2b_e16-af8dbd0c.pth",
            224,
            512,
            "ViT-B/32 trained on LAION-2B for 16 epochs (the notebook's ViTB32_laion2b_e16): as quick as ViT-B/32",
        ),
        *(
            _openclip(
                "ViT-B-32",
                f"laion400m_e{epoch}",
                file,
                224,
                512,
                f"ViT-B/32 trained on LAION-400M, epoch {epoch}, with plain GELU on weights trained with QuickGELU, "
                f"as the notebook's {switch} loads it; ViT-B-32-quickgelu::laion400m_e{epoch} is the matched one",
            )
            for epoch, file, switch in (
                (31, "vit_b_32-quickgelu-laion400m_e31-d867053b.pt", "ViTB32_laion400m_e31"),
                (32, "vit_b_32-quickgelu-laion400m_e32-46683a32.pt", "ViTB32_laion400m_32"),
            )
        ),
        *(
            _openclip(
                "ViT-B-32-quickgelu",
                f"laion400m_e{epoch}",
                file,
                224,
                512,
                f"ViT-B/32 trained on LAION-400M, epoch {epoch}, with the QuickGELU it was trained with: as quick",
            )
            for epoch, file in (
                (31, "vit_b_32-quickgelu-laion400m_e31-d867053b.pt"),
                (32, "vit_b_32-quickgelu-laion400m_e32-46683a32.pt"),
            )
        ),
        *(
            _openclip(
                "ViT-B-16",
                f"laion400m_e{epoch}",
                file,
                224,
                512,
                f"ViT-B/16 trained on LAION-400M, epoch {epoch}: 2.8x RN50's work",
            )
            for epoch, file in ((31, "vit_b_16-laion400m_e31-00efa78f.pt"), (32, "vit_b_16-laion400m_e32-55e67d44.pt"))
        ),
        *(
            _openclip(
                model,
                data,
                file,
                224,
                embed_dim,
                f"{what} trained on {words}"
                + (
                    " with the QuickGELU it was trained with"
                    if model.endswith("-quickgelu")
                    else f", its text side with plain GELU on weights trained with QuickGELU (as the notebook loads "
                    f"it; {model}-quickgelu::{data} is the matched one)"
                )
                + f": {work}",
            )
            for model, data, file, embed_dim, what, words, work in (
                ("RN50", "yfcc15m", "rn50-quickgelu-yfcc15m-455df137.pt", 1024, "ResNet-50", "YFCC-15M", "RN50's work"),
                ("RN50", "cc12m", "rn50-quickgelu-cc12m-f000538c.pt", 1024, "ResNet-50", "CC-12M", "RN50's work"),
                (
                    "RN50-quickgelu",
                    "yfcc15m",
                    "rn50-quickgelu-yfcc15m-455df137.pt",
                    1024,
                    "ResNet-50",
                    "YFCC-15M",
                    "RN50's work",
                ),
                (
                    "RN50-quickgelu",
                    "cc12m",
                    "rn50-quickgelu-cc12m-f000538c.pt",
                    1024,
                    "ResNet-50",
                    "CC-12M",
                    "RN50's work",
                ),
                (
                    "RN101",
                    "yfcc15m",
                    "rn101-quickgelu-yfcc15m-3e04b30e.pt",
                    512,
                    "ResNet-101",
                    "YFCC-15M",
                    "1.6x RN50's work",
                ),
                (
                    "RN101-quickgelu",
                    "yfcc15m",
                    "rn101-quickgelu-yfcc15m-3e04b30e.pt",
                    512,
                    "ResNet-101",
                    "YFCC-15M",
                    "1.6x RN50's work",
                ),
            )
        ),
    )  # fmt: skip
}
CLIP_MODELS = tuple(CLIP_SPECS)
DEFAULT_CLIP_MODEL = "RN50::openai"
# Each model's weights file, by model name.
CLIP_FILES = {name: spec.file for name, spec in CLIP_SPECS.items()}


def clip_spec(name: str) -> ClipSpec:
    """The offered model ``name``; a KeyError naming the offered ones otherwise."""
    try:
        return CLIP_SPECS[name]
    except KeyError:
        raise KeyError(f"unknown CLIP model {name!r}; offered: {', '.join(CLIP_MODELS)}") from None
