"""Depth maps for the 3D animation step: MiDaS v3 DPT-Large and AdaBins (NYU), blended as in the notebook.

Both networks are built here in plain PyTorch around ``timm`` backbones, with state dicts that
match the published files name for name, so those load strictly (``weights_only=True``):

- ``dpt_large-midas-2f21e586.pt`` (MiDaS v3 DPT-Large): a ViT-L/16 at 384 px
  (``timm``'s ``vit_large_patch16_384``) under ``pretrained.model``, the four "reassemble" stages
  ``pretrained.act_postprocess1..4`` (the readout token projected into every patch token), and the
  fusion decoder and head under ``scratch``. It predicts relative inverse depth (larger is nearer).
- ``AdaBins_nyu.pt`` (AdaBins trained on NYU Depth v2): an EfficientNet-B5 encoder
  (``tf_efficientnet_b5_ap``) under ``encoder.original_model``, a U-Net decoder, and the mini-ViT
  that predicts 256 adaptive depth bins between 0.001 and 10 metres. Its file holds
  ``{"model": state_dict}`` with DataParallel's ``module.`` prefixes, which are dropped.

Given the same state dict, MiDaS's and AdaBins's own modules (AdaBins's with gen-efficientnet's
B5, whose names and shapes are ``timm``'s) load it strictly and compute the same outputs as these.

The notebook's blend (``transform_image_3d``), followed here: MiDaS's output is resized to the
frame (bicubic) and turned into the notebook's depth units by ``(50 - midas) / 19``; AdaBins runs on
a copy of the frame resized to between 448 x 448 and 500,000 pixels, its prediction (averaged with
that of the mirrored frame, as AdaBins's own inference does) resized back (bicubic); then
``depth = midas_weight * midas + (1 - midas_weight) * adabins``. ``midas_weight`` 1 runs MiDaS
alone and 0 AdaBins alone.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

# MiDaS DPT-Large
VIT_NAME = "vit_large_patch16_384"
VIT_WIDTH = 1024
VIT_HOOKS = (5, 11, 17, 23)  # the transformer blocks whose outputs feed the decoder
STAGE_CHANNELS = (256, 512, 1024, 1024)
FEATURES = 256
PATCH = 16
MIDAS_SIZE = 384  # the network's native input size; frames are resized to at least this, by 32s

# AdaBins (NYU)
EFFICIENTNET_NAME = "tf_efficientnet_b5_ap"
SKIP_BLOCKS = (0, 1, 2, 4)  # EfficientNet stages whose outputs are the decoder's skips (24, 40, 64, 176 ch)
N_BINS = 256
MIN_DEPTH, MAX_DEPTH = 1e-3, 10.0  # metres, NYU's range
ADABINS_MIN_AREA, ADABINS_MAX_AREA = 448 * 448, 500_000  # pixels; the notebook's limits
ADABINS_MIN_PATCHES, ADABINS_MAX_PATCHES = 129, 500  # 32 x 32 patches of the input (16 x 16 at half size)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


# ---------------------------------------------------------------- MiDaS DPT-Large


class ReadoutProject(nn.Module):
    """Joins the class token to every patch token and projects back to the ViT width."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.project = nn.Sequential(nn.Linear(2 * width, width), nn.GELU())

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        patches = tokens[:, 1:]
        readout = tokens[:, :1].expand_as(patches)
        return self.project(torch.cat((patches, readout), dim=-1))


def reassemble_stage(width: int, channels: int, resample: nn.Module | None) -> nn.Sequential:
    """One reassemble stage: readout projection, then (after reshaping to a grid) a 1x1 conv
    to ``channels`` and ``resample``. Indices 1 and 2 are the parameter-free reshape steps, kept as
    placeholders so that the state dict's indices are the published ones (0, 3, 4)."""
    layers = [ReadoutProject(width), nn.Identity(), nn.Identity(), nn.Conv2d(width, channels, 1)]
    if resample is not None:
        layers.append(resample)
    return nn.Sequential(*layers)


class ResidualConvUnit(nn.Module):
    """relu, conv3x3, relu, conv3x3, plus the input."""

    def __init__(self, features: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(features, features, 3, padding=1)
        self.conv2 = nn.Conv2d(features, features, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv2(F.relu(self.conv1(F.relu(x))))


class FusionBlock(nn.Module):
    """Adds a refined skip to the coarser path, refines, doubles the resolution, projects (1x1)."""

    def __init__(self, features: int) -> None:
        super().__init__()
        self.resConfUnit1 = ResidualConvUnit(features)  # noqa: N815 (the published name)
        self.resConfUnit2 = ResidualConvUnit(features)  # noqa: N815
        self.out_conv = nn.Conv2d(features, features, 1)

    def forward(self, path: torch.Tensor, skip: torch.Tensor | None = None) -> torch.Tensor:
        if skip is not None:
            path = path + self.resConfUnit1(skip)
        path = self.resConfUnit2(path)
        path = F.interpolate(path, scale_factor=2, mode="bilinear", align_corners=True)
        return self.out_conv(path)


def depth_head(features: int) -> nn.Sequential:
    """conv3x3 to half the features, x2 upsampling, conv3x3 to 32, relu, conv1x1 to 1, relu
    (MiDaS's inverse depth is never negative)."""
    return nn.Sequential(
        nn.Conv2d(features, features // 2, 3, padding=1),
        nn.Upsample(scale_factor=2, mode="bilinear", align_corners=True),
        nn.Conv2d(features // 2, 32, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(32, 1, 1),
        nn.ReLU(),
    )


class Scratch(nn.Module):
    """The decoder: 3x3 convs of the four stages to 256 channels, four fusion blocks, the head."""

    def __init__(self) -> None:
        super().__init__()
        for i, channels in enumerate(STAGE_CHANNELS, start=1):
            self.add_module(f"layer{i}_rn", nn.Conv2d(channels, FEATURES, 3, padding=1, bias=False))
        for i in range(1, 5):
            self.add_module(f"refinenet{i}", FusionBlock(FEATURES))
        self.output_conv = depth_head(FEATURES)

    def forward(self, stages: list[torch.Tensor]) -> torch.Tensor:
        rn = [getattr(self, f"layer{i}_rn")(x) for i, x in enumerate(stages, start=1)]
        path = self.refinenet4(rn[3])
        path = self.refinenet3(path, rn[2])
        path = self.refinenet2(path, rn[1])
        path = self.refinenet1(path, rn[0])
        return self.output_conv(path)


class Backbone(nn.Module):
    """The ViT and its four reassemble stages (the published ``pretrained``)."""

    def __init__(self) -> None:
        super().__init__()
        import timm

        self.model = timm.create_model(VIT_NAME, pretrained=False)
        c = STAGE_CHANNELS
        self.act_postprocess1 = reassemble_stage(VIT_WIDTH, c[0], nn.ConvTranspose2d(c[0], c[0], 4, stride=4))
        self.act_postprocess2 = reassemble_stage(VIT_WIDTH, c[1], nn.ConvTranspose2d(c[1], c[1], 2, stride=2))
        self.act_postprocess3 = reassemble_stage(VIT_WIDTH, c[2], None)
        self.act_postprocess4 = reassemble_stage(VIT_WIDTH, c[3], nn.Conv2d(c[3], c[3], 3, stride=2, padding=1))

    def position_embedding(self, rows: int, cols: int) -> torch.Tensor:
        """The 24 x 24 learnt position grid resized (bilinear) to ``rows`` x ``cols`` patches."""
        embed = self.model.pos_embed
        token, grid = embed[:, :1], embed[0, 1:]
        side = int(math.sqrt(grid.shape[0]))
        grid = grid.reshape(1, side, side, -1).permute(0, 3, 1, 2)
        grid = F.interpolate(grid, size=(rows, cols), mode="bilinear", align_corners=False)
        return torch.cat((token, grid.permute(0, 2, 3, 1).reshape(1, rows * cols, -1)), dim=1)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        rows, cols = x.shape[-2] // PATCH, x.shape[-1] // PATCH
        vit = self.model
        tokens = vit.patch_embed.proj(x).flatten(2).transpose(1, 2)  # any size that is a multiple of 16
        tokens = torch.cat((vit.cls_token.expand(x.shape[0], -1, -1), tokens), dim=1)
        tokens = tokens + self.position_embedding(rows, cols)
        stages = []
        for i, block in enumerate(vit.blocks):
            tokens = block(tokens)
            if i in VIT_HOOKS:
                stages.append(tokens)
            if i == VIT_HOOKS[-1]:
                break
        out = []
        for i, stage_tokens in enumerate(stages, start=1):
            post = getattr(self, f"act_postprocess{i}")
            grid = post[0](stage_tokens).transpose(1, 2).unflatten(2, (rows, cols))
            for layer in post[3:]:
                grid = layer(grid)
            out.append(grid)
        return out


class MidasDPTLarge(nn.Module):
    """MiDaS v3 DPT-Large. Input (N, 3, H, W) in [-1, 1] (MiDaS's own normalisation), H and W
    multiples of 32; output (N, H, W) relative inverse depth (larger is nearer)."""

    def __init__(self) -> None:
        super().__init__()
        self.pretrained = Backbone()
        self.scratch = Scratch()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-2] % 32 or x.shape[-1] % 32:
            raise ValueError(f"MiDaS needs a height and width that are multiples of 32; got {tuple(x.shape[-2:])}")
        return self.scratch(self.pretrained(x)).squeeze(1)


def midas_input_size(height: int, width: int, size: int = MIDAS_SIZE) -> tuple[int, int]:
    """MiDaS's "minimal" resize: keep the aspect ratio, scale by whichever of ``size / height`` and
    ``size / width`` is nearer 1, then round each side to a multiple of 32, at least ``size``."""
    scale_h, scale_w = size / height, size / width
    scale = scale_w if abs(1 - scale_w) < abs(1 - scale_h) else scale_h

    def multiple_of_32(x: float) -> int:
        rounded = int(round(x / 32) * 32)
        return rounded if rounded >= size else int(math.ceil(x / 32) * 32)

    return multiple_of_32(scale * height), multiple_of_32(scale * width)


# ---------------------------------------------------------------- AdaBins


class UpSampleBN(nn.Module):
    """Upsample to the skip's size, concatenate, two (conv3x3, batch norm, leaky relu)."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self._net = nn.Sequential(
            nn.Conv2d(in_channels, out_channels, 3, padding=1),
            nn.BatchNorm2d(out_channels),
            nn.LeakyReLU(),
            nn.Conv2d(out_channels, out_channels, 3, padding=1),
            nn.BatchNorm2d(out_channels),
            nn.LeakyReLU(),
        )

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        x = F.interpolate(x, size=skip.shape[-2:], mode="bilinear", align_corners=True)
        return self._net(torch.cat((x, skip), dim=1))


class AdaBinsDecoder(nn.Module):
    """From the encoder's 2048 channels (1/32) back to 128 channels at 1/2 of the input."""

    def __init__(self, features: int = 2048, out_channels: int = 128) -> None:
        super().__init__()
        # kernel 1 with padding 1, as published: the bottleneck grows by one pixel on each side
        self.conv2 = nn.Conv2d(2048, features, 1, padding=1)
        self.up1 = UpSampleBN(features + 176, features // 2)
        self.up2 = UpSampleBN(features // 2 + 64, features // 4)
        self.up3 = UpSampleBN(features // 4 + 40, features // 8)
        self.up4 = UpSampleBN(features // 8 + 24, features // 16)
        self.conv3 = nn.Conv2d(features // 16, out_channels, 3, padding=1)

    def forward(self, skips: list[torch.Tensor], bottleneck: torch.Tensor) -> torch.Tensor:
        x = self.conv2(bottleneck)
        x = self.up1(x, skips[3])
        x = self.up2(x, skips[2])
        x = self.up3(x, skips[1])
        x = self.up4(x, skips[0])
        return self.conv3(x)


class PatchTransformer(nn.Module):
    """16x16 patches embedded to 128, plus learnt positions, through 4 transformer layers."""

    def __init__(self, in_channels: int = 128, patch_size: int = 16, width: int = 128, heads: int = 4) -> None:
        super().__init__()
        layer = nn.TransformerEncoderLayer(width, heads, dim_feedforward=1024)
        self.transformer_encoder = nn.TransformerEncoder(layer, num_layers=4, enable_nested_tensor=False)
        self.embedding_convPxP = nn.Conv2d(in_channels, width, patch_size, stride=patch_size)  # noqa: N815
        self.positional_encodings = nn.Parameter(torch.rand(500, width))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        embeddings = self.embedding_convPxP(x).flatten(2)  # (N, E, S)
        embeddings = embeddings + self.positional_encodings[: embeddings.shape[2]].T[None]
        return self.transformer_encoder(embeddings.permute(2, 0, 1))  # (S, N, E)


class MiniViT(nn.Module):
    """Predicts the bin widths (from the first token) and 128 range-attention maps (the next
    128 tokens as queries against the per-pixel embeddings)."""

    def __init__(self, channels: int = 128, queries: int = 128, n_bins: int = N_BINS) -> None:
        super().__init__()
        self.queries = queries
        self.patch_transformer = PatchTransformer(channels)
        self.conv3x3 = nn.Conv2d(channels, channels, 3, padding=1)
        self.regressor = nn.Sequential(
            nn.Linear(channels, 256), nn.LeakyReLU(), nn.Linear(256, 256), nn.LeakyReLU(), nn.Linear(256, n_bins)
        )

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        tokens = self.patch_transformer(x.clone())
        if tokens.shape[0] < self.queries + 1:  # the first token and one per query
            raise ValueError(
                f"AdaBins needs at least {self.queries + 1} patches of 16 x 16 at half its input's size; "
                f"got {tokens.shape[0]} (input area at least {(self.queries + 1) * 1024} pixels)"
            )
        x = self.conv3x3(x)
        head, queries = tokens[0], tokens[1 : self.queries + 1].permute(1, 0, 2)  # (N, E), (N, Q, E)
        maps = torch.einsum("nchw,nqc->nqhw", x, queries)
        widths = F.relu(self.regressor(head)) + 0.1  # "linear" normalisation, as published
        return widths / widths.sum(dim=1, keepdim=True), maps


class Encoder(nn.Module):
    """EfficientNet-B5 (``timm``'s, the same layout as gen-efficientnet's) without its classifier."""

    def __init__(self) -> None:
        super().__init__()
        import timm

        model = timm.create_model(EFFICIENTNET_NAME, pretrained=False)
        model.global_pool = nn.Identity()
        model.classifier = nn.Identity()
        self.original_model = model

    def forward(self, x: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
        m = self.original_model
        x = m.bn1(m.conv_stem(x))  # timm's bn1 includes the activation
        skips = []
        for i, block in enumerate(m.blocks):
            x = block(x)
            if i in SKIP_BLOCKS:
                skips.append(x)
        return skips, m.conv_head(x)  # the decoder reads conv_head's output before its batch norm


class AdaBinsNYU(nn.Module):
    """AdaBins for NYU. Input (N, 3, H, W) normalised with ImageNet's mean and std, H and W
    multiples of 32; output (N, H/2, W/2) depth in metres, in [0.001, 10]."""

    def __init__(self) -> None:
        super().__init__()
        self.encoder = Encoder()
        self.decoder = AdaBinsDecoder()
        self.adaptive_bins_layer = MiniViT()
        self.conv_out = nn.Sequential(nn.Conv2d(128, N_BINS, 1), nn.Softmax(dim=1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips, bottleneck = self.encoder(x)
        widths, maps = self.adaptive_bins_layer(self.decoder(skips, bottleneck))
        probabilities = self.conv_out(maps)
        edges = torch.cumsum(F.pad((MAX_DEPTH - MIN_DEPTH) * widths, (1, 0), value=MIN_DEPTH), dim=1)
        centres = 0.5 * (edges[:, :-1] + edges[:, 1:])
        return (probabilities * centres[:, :, None, None]).sum(dim=1)


def adabins_input_size(
    height: int, width: int, min_area: int = ADABINS_MIN_AREA, max_area: int = ADABINS_MAX_AREA
) -> tuple[int, int]:
    """The notebook's AdaBins input size: the frame scaled (aspect kept) into [min_area, max_area]
    pixels; then (our addition, as the network needs it) each side rounded to a multiple of 32
    with between 129 and 500 patches of 32 x 32 (the first token and 128 queries; 500 learnt
    positions)."""
    area = height * width
    scale = 1.0
    if area > max_area:
        scale = math.sqrt(max_area / area)
    elif area < min_area:
        scale = math.sqrt(min_area / area)
    rows, cols = max(1, round(height * scale / 32)), max(1, round(width * scale / 32))
    aspect = height / width  # shrink or grow the side that keeps the frame's shape best
    while rows * cols > ADABINS_MAX_PATCHES:
        rows, cols = (rows - 1, cols) if rows / cols > aspect else (rows, cols - 1)
    while rows * cols < ADABINS_MIN_PATCHES:
        rows, cols = (rows + 1, cols) if rows / cols < aspect else (rows, cols + 1)
    return rows * 32, cols * 32


# ---------------------------------------------------------------- loading and the blend


def _strict_load(model: nn.Module, state: dict[str, torch.Tensor], path: Path) -> nn.Module:
    try:
        model.load_state_dict(state, strict=True, assign=True)
    except RuntimeError as exc:
        raise ValueError(f"{path} does not hold the expected weights: {exc}") from exc
    return model


def build_midas(device: torch.device | str = "meta") -> MidasDPTLarge:
    """An untrained MiDaS DPT-Large on ``device`` ("meta": names and shapes only, no memory)."""
    with torch.device(device):
        return MidasDPTLarge()


def build_adabins(device: torch.device | str = "meta") -> AdaBinsNYU:
    """An untrained AdaBins (NYU) on ``device`` ("meta": names and shapes only, no memory)."""
    with torch.device(device):
        return AdaBinsNYU()


def load_midas(path: str | Path, device: torch.device | str = "cpu") -> MidasDPTLarge:
    """MiDaS DPT-Large from ``dpt_large-midas-2f21e586.pt``, loaded strictly (every name and shape),
    in eval mode on ``device``. Raises ValueError if the file holds other weights."""
    path = Path(path)
    state = torch.load(path, map_location=device, weights_only=True)
    if isinstance(state, dict) and "model" in state and "optimizer" in state:  # a training checkpoint
        state = state["model"]
    return _strict_load(build_midas(), state, path).to(device).eval()


def load_adabins(path: str | Path, device: torch.device | str = "cpu") -> AdaBinsNYU:
    """AdaBins (NYU) from ``AdaBins_nyu.pt`` (``{"model": state_dict}``, ``module.`` prefixes dropped),
    loaded strictly, in eval mode on ``device``. Raises ValueError if the file holds other weights."""
    path = Path(path)
    checkpoint = torch.load(path, map_location=device, weights_only=True)
    state = checkpoint.get("model", checkpoint) if isinstance(checkpoint, dict) else checkpoint
    state = {k.removeprefix("module."): v for k, v in state.items()}
    return _strict_load(build_adabins(), state, path).to(device).eval()


class DepthModel:
    """Depth maps of frames for the 3D step, in the notebook's units (see the module's notes).

    ``midas``/``adabins``: loaded networks, either may be None when ``midas_weight`` never needs it
    (1: MiDaS alone, 0: AdaBins alone). ``midas_size``: MiDaS's input size (384 is native; smaller
    is faster and coarser). ``adabins_area``: (min, max) pixels for AdaBins's input."""

    def __init__(
        self,
        midas: MidasDPTLarge | None,
        adabins: AdaBinsNYU | None,
        midas_size: int = MIDAS_SIZE,
        adabins_area: tuple[int, int] = (ADABINS_MIN_AREA, ADABINS_MAX_AREA),
    ) -> None:
        self.midas = midas
        self.adabins = adabins
        self.midas_size = midas_size
        self.adabins_area = adabins_area

    @torch.no_grad()
    def midas_depth(self, image: torch.Tensor) -> torch.Tensor:
        """MiDaS's depth of ``image`` ((1, 3, H, W) in [-1, 1]) as (H, W) in the notebook's units."""
        if self.midas is None:
            raise ValueError("midas_weight > 0 needs MiDaS (dpt_large-midas-2f21e586.pt)")
        param = next(self.midas.parameters())
        height, width = image.shape[-2:]
        size = midas_input_size(height, width, self.midas_size)
        x = F.interpolate(image.to(param), size=size, mode="bicubic", align_corners=False)
        inverse = self.midas(x)[:, None].float()
        inverse = F.interpolate(inverse, size=(height, width), mode="bicubic", align_corners=False)[0, 0]
        return (50.0 - inverse) / 19.0  # the notebook's flip from inverse depth towards AdaBins's metres

    @torch.no_grad()
    def adabins_depth(self, image: torch.Tensor) -> torch.Tensor:
        """AdaBins's depth of ``image`` ((1, 3, H, W) in [-1, 1]) as (H, W) metres in [0.001, 10]."""
        if self.adabins is None:
            raise ValueError("midas_weight < 1 needs AdaBins (AdaBins_nyu.pt)")
        param = next(self.adabins.parameters())
        height, width = image.shape[-2:]
        size = adabins_input_size(height, width, *self.adabins_area)
        x = F.interpolate((image.float() + 1) / 2, size=size, mode="bicubic", align_corners=False).clamp(0, 1)
        mean = torch.tensor(IMAGENET_MEAN, device=x.device)[:, None, None]
        std = torch.tensor(IMAGENET_STD, device=x.device)[:, None, None]
        x = ((x - mean) / std).to(param)
        # AdaBins's own inference averages the prediction with that of the mirrored picture
        pred = 0.5 * (self.adabins(x) + self.adabins(x.flip(-1)).flip(-1))
        pred = F.interpolate(pred[:, None].float(), size=size, mode="bilinear", align_corners=True)
        pred = F.interpolate(pred, size=(height, width), mode="bicubic", align_corners=False)[0, 0]
        return pred.nan_to_num(nan=MIN_DEPTH, posinf=MAX_DEPTH).clamp(MIN_DEPTH, MAX_DEPTH)

    def depth(self, image: torch.Tensor, midas_weight: float = 0.3) -> torch.Tensor:
        """The blended depth map of ``image`` ((1, 3, H, W) in [-1, 1]): (H, W) float32 on its device.

        Raises ValueError if ``midas_weight`` is outside [0, 1] or needs a network that is None."""
        if not 0.0 <= midas_weight <= 1.0:
            raise ValueError(f"midas_weight must be in [0, 1]; got {midas_weight}")
        if midas_weight == 1.0:
            return self.midas_depth(image).to(image.device)
        if midas_weight == 0.0:
            return self.adabins_depth(image).to(image.device)
        midas = self.midas_depth(image).to(image.device)
        return midas_weight * midas + (1.0 - midas_weight) * self.adabins_depth(image).to(image.device)
