"""MiDaS DPT-Large and AdaBins: published layouts, strict loading, depth maps of the frame's size, the blend."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from make_test_weights import make
from torch import nn

from disco.depth import (
    AdaBinsNYU,
    DepthModel,
    MidasDPTLarge,
    adabins_input_size,
    build_adabins,
    build_midas,
    load_adabins,
    load_midas,
    midas_input_size,
)
from disco.weights import ADABINS_FILE, MIDAS_FILE

# Names and shapes from the published networks' code (MiDaS's DPT and its ViT-L/16 backbone;
# AdaBins's UnetAdaptiveBins with gen-efficientnet's tf_efficientnet_b5_ap)
MIDAS_KEYS = {
    "pretrained.model.cls_token": (1, 1, 1024),
    "pretrained.model.pos_embed": (1, 577, 1024),
    "pretrained.model.patch_embed.proj.weight": (1024, 3, 16, 16),
    "pretrained.model.blocks.23.mlp.fc2.weight": (1024, 4096),
    "pretrained.model.head.weight": (1000, 1024),
    "pretrained.act_postprocess1.0.project.0.weight": (1024, 2048),
    "pretrained.act_postprocess1.3.weight": (256, 1024, 1, 1),
    "pretrained.act_postprocess1.4.weight": (256, 256, 4, 4),
    "pretrained.act_postprocess2.4.weight": (512, 512, 2, 2),
    "pretrained.act_postprocess3.3.weight": (1024, 1024, 1, 1),
    "pretrained.act_postprocess4.4.weight": (1024, 1024, 3, 3),
    "scratch.layer1_rn.weight": (256, 256, 3, 3),
    "scratch.layer4_rn.weight": (256, 1024, 3, 3),
    "scratch.refinenet4.resConfUnit1.conv1.weight": (256, 256, 3, 3),
    "scratch.refinenet1.out_conv.weight": (256, 256, 1, 1),
    "scratch.output_conv.0.weight": (128, 256, 3, 3),
    "scratch.output_conv.2.weight": (32, 128, 3, 3),
    "scratch.output_conv.4.weight": (1, 32, 1, 1),
}
ADABINS_KEYS = {
    "encoder.original_model.conv_stem.weight": (48, 3, 3, 3),
    "encoder.original_model.blocks.0.0.conv_dw.weight": (48, 1, 3, 3),
    "encoder.original_model.blocks.6.2.conv_pwl.weight": (512, 3072, 1, 1),
    "encoder.original_model.conv_head.weight": (2048, 512, 1, 1),
    "encoder.original_model.bn2.running_var": (2048,),
    "decoder.conv2.weight": (2048, 2048, 1, 1),
    "decoder.up1._net.0.weight": (1024, 2224, 3, 3),
    "decoder.up4._net.4.running_mean": (128,),
    "decoder.conv3.weight": (128, 128, 3, 3),
    "adaptive_bins_layer.patch_transformer.positional_encodings": (500, 128),
    "adaptive_bins_layer.patch_transformer.embedding_convPxP.weight": (128, 128, 16, 16),
    "adaptive_bins_layer.patch_transformer.transformer_encoder.layers.3.self_attn.in_proj_weight": (384, 128),
    "adaptive_bins_layer.patch_transformer.transformer_encoder.layers.0.linear1.weight": (1024, 128),
    "adaptive_bins_layer.conv3x3.weight": (128, 128, 3, 3),
    "adaptive_bins_layer.regressor.4.weight": (256, 256),
    "conv_out.0.weight": (256, 128, 1, 1),
}


def test_midas_has_the_published_names_and_shapes() -> None:
    state = build_midas("meta").state_dict()
    for key, shape in MIDAS_KEYS.items():
        assert tuple(state[key].shape) == shape, key
    assert not any(k.startswith("scratch.output_conv.") and k[20] not in "024" for k in state)
    assert sum(v.numel() for v in state.values()) == pytest.approx(344e6, rel=0.01)  # DPT-Large's 344M


def test_adabins_has_the_published_names_and_shapes() -> None:
    state = build_adabins("meta").state_dict()
    for key, shape in ADABINS_KEYS.items():
        assert tuple(state[key].shape) == shape, key
    assert not any("classifier" in k or k.startswith("encoder.original_model.global_pool") for k in state)
    assert all(k.startswith(("encoder.", "decoder.", "adaptive_bins_layer.", "conv_out.")) for k in state)


def test_input_sizes_follow_midas_and_the_notebook() -> None:
    assert midas_input_size(768, 1280) == (384, 640)  # scaled by 0.5, the factor nearer 1
    assert midas_input_size(512, 512) == (384, 384)
    assert midas_input_size(100, 300, size=64) == (64, 192)
    h, w = adabins_input_size(1080, 1920)  # over 500,000 pixels: scaled down
    assert h % 32 == 0 and w % 32 == 0 and 480_000 <= h * w <= 500 * 32 * 32
    h, w = adabins_input_size(64, 64)  # under 448 x 448: scaled up
    assert (h, w) == (448, 448)
    assert adabins_input_size(40, 72, 100, 100) == (288, 480)  # never under 129 patches: 9 x 15, the shape kept


class ConstantMidas(nn.Module):
    """Stands in for MiDaS: inverse depth 12 everywhere, i.e. (50 - 12) / 19 = 2 in the notebook's units."""

    def __init__(self) -> None:
        super().__init__()
        self.calls = 0
        self.scale = nn.Parameter(torch.ones(()))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        assert x.shape[-2] % 32 == 0 and x.shape[-1] % 32 == 0
        return torch.full((x.shape[0], *x.shape[-2:]), 12.0) * self.scale


class ConstantAdaBins(nn.Module):
    """Stands in for AdaBins: 4 metres everywhere, at half the input's size."""

    def __init__(self) -> None:
        super().__init__()
        self.calls = 0
        self.scale = nn.Parameter(torch.ones(()))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        return torch.full((x.shape[0], x.shape[-2] // 2, x.shape[-1] // 2), 4.0) * self.scale


def test_midas_weight_blends_and_1_and_0_pick_one_model() -> None:
    midas, adabins = ConstantMidas(), ConstantAdaBins()
    model = DepthModel(midas, adabins, midas_size=64)
    image = torch.rand(1, 3, 40, 72) * 2 - 1
    blended = model.depth(image, midas_weight=0.3)
    assert blended.shape == (40, 72)
    assert torch.allclose(blended, torch.full((40, 72), 0.3 * 2.0 + 0.7 * 4.0), atol=1e-4)
    assert (midas.calls, adabins.calls) == (1, 2)  # AdaBins also sees the mirrored frame
    assert torch.allclose(model.depth(image, midas_weight=1.0), torch.full((40, 72), 2.0), atol=1e-4)
    assert (midas.calls, adabins.calls) == (2, 2)
    assert torch.allclose(model.depth(image, midas_weight=0.0), torch.full((40, 72), 4.0), atol=1e-4)
    assert (midas.calls, adabins.calls) == (2, 4)
    # one network is enough when the weight never needs the other
    assert DepthModel(midas, None, midas_size=64).depth(image, 1.0).shape == (40, 72)
    with pytest.raises(ValueError, match="AdaBins"):
        DepthModel(midas, None).depth(image, 0.5)
    with pytest.raises(ValueError, match="midas_weight"):
        model.depth(image, 1.5)


@pytest.fixture(scope="module")
def depth_files(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The two depth files in their published layouts, with random (seeded) weights (1.6 GB: removed
    when the module's tests end)."""
    directory = tmp_path_factory.mktemp("depth_weights")
    make(directory, [MIDAS_FILE, ADABINS_FILE])
    yield directory
    shutil.rmtree(directory, ignore_errors=True)


@pytest.mark.slow
def test_midas_loads_strictly_and_gives_a_depth_map_of_the_frames_size(depth_files: Path) -> None:
    midas = load_midas(depth_files / MIDAS_FILE)
    assert isinstance(midas, MidasDPTLarge) and not midas.training
    image = torch.rand(1, 3, 40, 72) * 2 - 1
    depth = DepthModel(midas, None, midas_size=64).depth(image, midas_weight=1.0)
    assert depth.shape == (40, 72) and depth.dtype == torch.float32 and torch.isfinite(depth).all()
    assert depth.std() > 0  # random weights still give a picture-dependent map
    with pytest.raises(ValueError, match="expected weights"):  # the other file is refused, by name
        load_midas(depth_files / ADABINS_FILE)


@pytest.mark.slow
def test_adabins_loads_strictly_and_gives_a_depth_map_in_metres(depth_files: Path) -> None:
    adabins = load_adabins(depth_files / ADABINS_FILE)
    assert isinstance(adabins, AdaBinsNYU) and not adabins.training
    image = torch.rand(1, 3, 40, 72) * 2 - 1
    # the smallest input AdaBins takes (129 patches at half size), to keep the CPU time down
    depth = DepthModel(None, adabins, adabins_area=(100, 100)).depth(image, midas_weight=0.0)
    assert depth.shape == (40, 72) and torch.isfinite(depth).all()
    assert depth.min() >= 1e-3 and depth.max() <= 10.0
    with pytest.raises(ValueError, match="expected weights"):
        load_adabins(depth_files / MIDAS_FILE)
