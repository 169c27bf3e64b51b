"""The models build state_dicts with exactly the keys, shapes and dtypes of the real files."""

import json

import pytest
import torch
from make_test_weights import manifest_of
from recipe import read_manifest, recipe_state_dict

from disco.checkpoint import load_state_dict_file
from disco.secondary import SecondaryDiffusionImageNet2, load_secondary
from disco.unet import MODEL_CONFIGS, UNetConfig, UNetModel, load_unet


def layout(model: torch.nn.Module) -> list[tuple[str, list[int], str]]:
    return [(k, list(v.shape), str(v.dtype).removeprefix("torch.")) for k, v in model.state_dict().items()]


def manifest(reference_dir, name):
    return [(k, list(s), d) for k, s, d in json.loads((reference_dir / f"manifest_{name}.json").read_text())]


@pytest.mark.parametrize("name", sorted(MODEL_CONFIGS))
def test_unet_layout_equals_checkpoint_manifest(name):
    with torch.device("meta"):  # layout only: no 2.2 GB allocation
        model = UNetModel(MODEL_CONFIGS[name])
    assert layout(model) == read_manifest(manifest_of(name))  # models of one layout share a manifest


def test_tiny_unet_layout(reference_dir):
    meta = json.loads((reference_dir / "meta.json").read_text())
    with torch.device("meta"):
        model = UNetModel(UNetConfig.from_guided_diffusion(meta["tiny_unet_config"]))
    assert layout(model) == manifest(reference_dir, "tiny_unet")


def test_secondary_layout_equals_checkpoint_manifest(reference_dir):
    with torch.device("meta"):
        model = SecondaryDiffusionImageNet2()
    assert layout(model) == manifest(reference_dir, "secondary_model_imagenet_2")


@pytest.fixture
def tiny_file(reference_dir, tmp_path):
    meta = json.loads((reference_dir / "meta.json").read_text())
    state = recipe_state_dict(reference_dir / "manifest_tiny_unet.json", meta["seeds"]["tiny_weights"])
    path = tmp_path / "tiny.pt"
    torch.save(state, path)
    return path, state, UNetConfig.from_guided_diffusion(meta["tiny_unet_config"])


def test_load_unet_from_file_is_strict_and_exact(tiny_file):
    path, state, config = tiny_file
    model = load_unet(path, config)
    for key, value in model.state_dict().items():
        assert torch.equal(value, state[key])


def test_missing_or_extra_key_is_refused(tiny_file, tmp_path):
    path, state, config = tiny_file
    extra = dict(state, **{"unexpected.weight": torch.zeros(1)})
    torch.save(extra, tmp_path / "extra.pt")
    with pytest.raises(RuntimeError, match="unexpected.weight"):
        load_unet(tmp_path / "extra.pt", config)
    missing = dict(state)
    del missing["out.2.bias"]
    torch.save(missing, tmp_path / "missing.pt")
    with pytest.raises(RuntimeError, match="out.2.bias"):
        load_unet(tmp_path / "missing.pt", config)


def test_wrong_layout_is_refused(tiny_file):
    path, _, config = tiny_file
    with pytest.raises(RuntimeError, match="size mismatch|Missing key"):
        load_unet(path, UNetConfig(image_size=512, num_channels=128, num_res_blocks=1, num_head_channels=32))


class Payload:
    def __reduce__(self):
        return (print, ("code ran",))


def test_pickled_code_is_never_executed(tmp_path):
    torch.save({"x": Payload()}, tmp_path / "evil.pt")
    with pytest.raises(Exception, match="Weights only load failed|Unsupported global"):
        load_state_dict_file(tmp_path / "evil.pt")


def test_secondary_loads_from_file(reference_dir, tmp_path):
    meta = json.loads((reference_dir / "meta.json").read_text())
    state = recipe_state_dict(
        reference_dir / "manifest_secondary_model_imagenet_2.json", meta["seeds"]["secondary_weights"]
    )
    torch.save(state, tmp_path / "secondary_model_imagenet_2.pth")
    model = load_secondary(tmp_path / "secondary_model_imagenet_2.pth")
    assert torch.equal(model.state_dict()["net.4.bias"], state["net.4.bias"])


def test_missing_file_names_the_path(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere.pt"):
        load_state_dict_file(tmp_path / "nowhere.pt")
