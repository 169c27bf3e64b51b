"""The diffusion models a run may use: what each is for, its file, and its published UNet options.

Each entry is the registry's one record of a model: the ``diffusion_model`` setting's choices,
their descriptions (``--help``, the page's picker), the file the weights module downloads and
checks (``<name>.pt`` in the model directory), and the guided-diffusion options its UNet is built
from (``disco.unet.MODEL_CONFIGS``). Plain data, no torch: the client reads it too.

Sources: the Disco Diffusion notebook's ``diff_model_map`` and model configs (v5.6/v5.7) and
discoart's ``resources/models.yml`` for the names, URLs, sha256 values and options; options a
source leaves out are guided-diffusion's defaults, as those notebooks build them. Sizes are
``approx_size``: 4 bytes per parameter of the built UNet (the files hold fp32 tensors), not a
published figure, so downloads do not pin them.

``diffusion_model`` may also be the path of a checkpoint of one of these layouts (your own
fine-tune, ``checkpoint_path``); it is read from the model directory, or from anywhere on the
machine when the caller allows it (a client's own Flow).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

# The options both ImageNet models were trained with (the notebook's configs for them).
IMAGENET_512 = {
    "attention_resolutions": "32, 16, 8",
    "class_cond": False,
    "image_size": 512,
    "learn_sigma": True,
    "num_channels": 256,
    "num_head_channels": 64,
    "num_res_blocks": 2,
    "resblock_updown": True,
    "use_scale_shift_norm": True,
}
IMAGENET_256 = {**IMAGENET_512, "image_size": 256}
# The notebook's options for KaliYuga's fine-tunes ("E.g. A model finetuned by KaliYuga"), which
# Visions of Chaos and ProgRock Diffusion also give for the comics faces model: 128 channels, one
# attention head at 1/16 resolution, the timestep added before the norm, resampling by strided
# and upsampling convolutions (guided-diffusion's default resblock_updown=False).
KALIYUGA_256 = {
    "attention_resolutions": "16",
    "class_cond": False,
    "image_size": 256,
    "learn_sigma": True,
    "num_channels": 128,
    "num_heads": 1,
    "num_res_blocks": 2,
    "resblock_updown": False,
    "use_scale_shift_norm": False,
}
# The notebook's (and discoart's) options for portrait_generator: the 512 layout at half width, 4 heads.
PORTRAIT_512 = {**IMAGENET_512, "num_channels": 128, "num_head_channels": -1, "num_heads": 4}
# discoart's options for the Ukiyo-e model: the 256 layout at half width, 4 heads.
UKIYOE_256 = {**PORTRAIT_512, "image_size": 256}

KALIYUGA_SIZE = (512, 448)  # discoart's recommended_size (the notebook's width_height_for_256x256_models)
DISCOART_MIRROR = "https://clip-as-service.s3.us-east-2.amazonaws.com/discoart"


@dataclass(frozen=True)
class Need:
    """A setting a model needs: ``setting`` must be one of ``allowed``, because ``why``."""

    setting: str
    allowed: tuple[Any, ...]
    why: str


@dataclass(frozen=True)
class DiffusionModel:
    """One diffusion model: ``name`` (the setting's value; the file is ``<name>.pt``), what it is
    for, where its file comes from (``urls``, checked against ``sha256``), its guided-diffusion
    ``config``, about how large the file is (bytes), the ``width_height`` its makers suggest, and
    the settings it needs (``needs``, which validation enforces)."""

    name: str
    description: str
    sha256: str
    urls: tuple[str, ...]
    config: Mapping[str, Any]
    approx_size: int
    recommended_size: tuple[int, int] | None = None
    needs: tuple[Need, ...] = field(default=())

    @property
    def file(self) -> str:
        return f"{self.name}.pt"

    @property
    def image_size(self) -> int:
        """The size (pixels, square) it was trained at."""
        return int(self.config["image_size"])


def _hf(repo: str, path: str) -> str:
    return f"https://huggingface.co/{repo}/resolve/main/{path}"


_MODELS = (
    DiffusionModel(
        "512x512_diffusion_uncond_finetune_008100",
        "general scenes and paintings: ImageNet at 512x512, Katherine Crowson's fine-tune of OpenAI's ADM",
        "9c111ab89e214862b76e1fa6a1b3f1d329b1a88281885943d2cdbe357ad57648",
        (
            "https://v-diffusion.s3.us-west-2.amazonaws.com/512x512_diffusion_uncond_finetune_008100.pt",
            _hf("lowlevelware/512x512_diffusion_unconditional_ImageNet", "512x512_diffusion_uncond_finetune_008100.pt"),
            "https://ipfs.io/ipfs/QmYNhbgnjPRuprob6WiELb3egd8rZa2xTEYGzAfkLuaKJw?filename="
            "512x512_diffusion_uncond_finetune_008100.pt",
            "https://the-eye.eu/public/AI/models/512x512_diffusion_unconditional_ImageNet/"
            "512x512_diffusion_uncond_finetune_008100.pt",
        ),
        IMAGENET_512,
        2_232_000_000,
    ),
    DiffusionModel(
        "256x256_diffusion_uncond",
        "general scenes, coarser detail: ImageNet at 256x256, OpenAI's ADM",
        "a37c32fffd316cd494cf3f35b339936debdc1576dad13fe57c42399a5dbc78b1",
        (
            "https://openaipublic.blob.core.windows.net/diffusion/jul-2021/256x256_diffusion_uncond.pt",
            "https://www.dropbox.com/s/9tqnqo930mpnpcn/256x256_diffusion_uncond.pt?dl=1",
            "https://ipfs.io/ipfs/QmRkZ4JBLHwpZqeAuULYeGzo3TZqfgnrg6bFvUXFneotP9?filename=256x256_diffusion_uncond.pt",
        ),
        IMAGENET_256,
        2_211_000_000,
        KALIYUGA_SIZE,
    ),
    DiffusionModel(
        "pixel_art_diffusion_hard_256",
        "pixel art with hard, crisp pixel edges: KaliYuga, 256x256",
        "be4a9de943ec06eef32c65a1008c60ad017723a4d35dc13169c66bb322234161",
        (
            _hf("KaliYuga/pixel_art_diffusion_hard_256", "pixel_art_diffusion_hard_256.pt"),
            f"{DISCOART_MIRROR}/pixel_art_diffusion_hard_256.pt",
        ),
        KALIYUGA_256,
        455_000_000,
        KALIYUGA_SIZE,
    ),
    DiffusionModel(
        "pixel_art_diffusion_soft_256",
        "pixel art with softer, blended pixel edges: KaliYuga, 256x256",
        "d321590e46b679bf6def1f1914b47c89e762c76f19ab3e3392c8ca07c791039c",
        (
            _hf("KaliYuga/pixel_art_diffusion_soft_256", "pixel_art_diffusion_soft_256.pt"),
            f"{DISCOART_MIRROR}/pixel_art_diffusion_soft_256.pt",
        ),
        KALIYUGA_256,
        455_000_000,
        KALIYUGA_SIZE,
    ),
    DiffusionModel(
        "pixelartdiffusion4k",
        "pixel art, another of KaliYuga's pixel-art fine-tunes: KaliYuga, 256x256",
        "a1ba4f13f6dabb72b1064f15d8ae504d98d6192ad343572cc416deda7cccac30",
        (_hf("KaliYuga/pixelartdiffusion4k", "pixelartdiffusion4k.pt"), f"{DISCOART_MIRROR}/pixelartdiffusion4k.pt"),
        KALIYUGA_256,
        455_000_000,
        KALIYUGA_SIZE,
    ),
    DiffusionModel(
        "pixelartdiffusion_expanded",
        "pixel art, the expanded version of KaliYuga's pixel art model (PADexpanded): KaliYuga, 256x256",
        "a73b40556634034bf43b5a716b531b46fb1ab890634d854f5bcbbef56838739a",
        (_hf("KaliYuga/PADexpanded", "PADexpanded.pt"), f"{DISCOART_MIRROR}/PADexpanded.pt"),
        KALIYUGA_256,
        455_000_000,
        KALIYUGA_SIZE,
    ),
    DiffusionModel(
        "watercolordiffusion",
        "watercolour paintings: KaliYuga, 256x256",
        "a3e6522f0c8f278f90788298d66383b11ac763dd5e0d62f8252c962c23950bd6",
        (_hf("KaliYuga/watercolordiffusion", "watercolordiffusion.pt"), f"{DISCOART_MIRROR}/watercolordiffusion.pt"),
        KALIYUGA_256,
        455_000_000,
        KALIYUGA_SIZE,
    ),
    DiffusionModel(
        "watercolordiffusion_2",
        "watercolour paintings, second version: KaliYuga, 256x256",
        "49c281b6092c61c49b0f1f8da93af9b94be7e0c20c71e662e2aa26fee0e4b1a9",
        (
            _hf("KaliYuga/watercolordiffusion_2", "watercolordiffusion_2.pt"),
            f"{DISCOART_MIRROR}/watercolordiffusion_2.pt",
        ),
        KALIYUGA_256,
        455_000_000,
        KALIYUGA_SIZE,
    ),
    DiffusionModel(
        "PulpSciFiDiffusion",
        "pulp science-fiction magazine illustration: KaliYuga, 256x256",
        "b79e62613b9f50b8a3173e5f61f0320c7dbb16efad42a92ec94d014f6e17337f",
        (_hf("KaliYuga/PulpSciFiDiffusion", "PulpSciFiDiffusion.pt"), f"{DISCOART_MIRROR}/PulpSciFiDiffusion.pt"),
        KALIYUGA_256,
        455_000_000,
        KALIYUGA_SIZE,
    ),
    DiffusionModel(
        "256x256_openai_comics_faces_v2.by_alex_spirin_114k",
        "comic-book faces: Alex Spirin, 256x256",
        # discoart's models.yml gives f587fd6d...6388 here, the sha256 that other public lists give for
        # the earlier 084000 checkpoint (a different file); ProgRock Diffusion's list gives this one.
        "7bac93342ed8efb04160dbed754bce69581ec228ec302a60681156b9d64856e6",
        (
            "https://github.com/Sxela/DiscoDiffusion-Warp/releases/download/v0.1.1/"
            "256x256_openai_comics_faces_v2.by_alex_spirin_114k.pt",
            f"{DISCOART_MIRROR}/256x256_openai_comics_faces_v2.by_alex_spirin_114k.pt",
        ),
        KALIYUGA_256,
        455_000_000,
        KALIYUGA_SIZE,
    ),
    DiffusionModel(
        "portrait_generator_v001",
        "painted portraits: Felipe3DArtist, 512x512",
        "b7e8c747af880d4480b6707006f1ace000b058dd0eac5bb13558ba3752d9b5b9",
        (
            _hf("felipe3dartist/portrait_generator_v001", "portrait_generator_v001_ema_0.9999_1MM.pt"),
            f"{DISCOART_MIRROR}/portrait_generator_v001_ema_0.9999_1MM.pt",
        ),
        PORTRAIT_512,
        558_000_000,
    ),
    DiffusionModel(
        "portrait_generator_v1.5",
        "painted portraits, a later version: Felipe3DArtist, 512x512",
        "3bc39e28fd9690dafbbee83cc08d089a3640eca8ed4d14280c4a9d342c56fd7f",
        (_hf("felipe3dartist/portrait_generator_v1.5", "ema_0.9999_165000.pt"),),
        PORTRAIT_512,
        558_000_000,
    ),
    DiffusionModel(
        "Ukiyo-e_Diffusion_All_V1.by_thegenerativegeneration",
        "Japanese ukiyo-e woodblock prints: thegenerativegeneration, 256x256",
        "5f9af55461783619f25dcbf8953f028c0768108801860afe8c947428dee7a991",
        (_hf("thegenerativegeneration/ukiyoe-diffusion-256", "models/ukiyoe-all/v1/ema_0.9999_056000.pt"),),
        UKIYOE_256,
        553_000_000,
    ),
    DiffusionModel(
        "IsometricDiffusionRevrart512px",
        "isometric illustrations: Revrart, 512x512",
        "649bb7d10ea5170b71bc24adfb17f0305955fde38d2bb1bc5428c6d5baf9811c",
        (_hf("Revrart/IsometricDiffusionRevrart512px", "IsometricDiffusionRevrart512px.pt"),),
        IMAGENET_512,
        2_232_000_000,
    ),
    DiffusionModel(
        "FeiArt_Handpainted_CG_Diffusion",
        "hand-painted game-art (CG) scenes: FeiArt, 512x512",
        "85f95f0618f288476ffcec9f48160542ba626f655b3df963543388dcd059f86a",
        (_hf("Feiart/FeiArt-Handpainted-CG-Diffusion", "FeiArt-Handpainted-CG-Diffusion.pt"),),
        IMAGENET_512,
        2_232_000_000,
    ),
)

DIFFUSION_MODELS: dict[str, DiffusionModel] = {m.name: m for m in _MODELS}
DEFAULT_MODEL = _MODELS[0].name
CHECKPOINT_SUFFIXES = (".pt", ".pth")


def is_checkpoint_path(value: str) -> bool:
    """Whether a ``diffusion_model`` value names a checkpoint file rather than a registry model."""
    return value not in DIFFUSION_MODELS and value.lower().endswith(CHECKPOINT_SUFFIXES)
