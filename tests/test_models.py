"""The diffusion models of the registry, and checkpoints of your own.

Every registry model: its published options build a UNet whose layout is its manifest's, its file
has a sha256 and https URLs, and a missing file is named when it cannot be had. A checkpoint path
of any known layout loads (recognised from its keys and shapes) where the rule allows reading it;
a file that fits no layout is refused naming what does not fit. Full-size UNets are built on the
meta device, and full-size checkpoint files are written with one stored number per tensor (an
expanded zero), so none of this needs gigabytes.
"""

import dataclasses
import json
import re
import socket
from pathlib import Path

import numpy as np
import pytest
import torch
from make_test_weights import DEFAULT_RUN, layout_owner, make, manifest_of, manifest_rows
from recipe import read_manifest, recipe_tensor

from disco import models, weights
from disco.loading import ModelCache, checkpoint_path
from disco.settings import (
    DIFFUSION_MODELS,
    SettingsError,
    choice_meanings,
    describe,
    settings_schema,
    validate_settings,
)
from disco.unet import MODEL_CONFIGS, UNetConfig, UNetModel, build_unet, known_layouts, layout_shapes
from disco_service.client.api import local_checkpoint

NAMES = list(models.DIFFUSION_MODELS)
KALIYUGA = "pixel_art_diffusion_hard_256"


def meta_state(manifest: Path) -> dict[str, torch.Tensor]:
    return {key: torch.empty(shape, device="meta") for key, shape, _ in read_manifest(manifest)}


def light_state(config: UNetConfig) -> dict[str, torch.Tensor]:
    """A full state dict of ``config``'s layout that stores one number per tensor."""
    return {key: torch.zeros(()).expand(shape) for key, shape in layout_shapes(config).items()}


# ----- the registry -----


@pytest.mark.parametrize("name", NAMES)
def test_each_model_builds_from_its_options_and_its_manifest_loads_strictly(name):
    config = UNetConfig.from_guided_diffusion(models.DIFFUSION_MODELS[name].config)
    assert config == MODEL_CONFIGS[name]
    with torch.device("meta"):
        unet = UNetModel(config)
    unet.load_state_dict(meta_state(manifest_of(name)), strict=True, assign=True)
    layout = [(k, list(v.shape), str(v.dtype).removeprefix("torch.")) for k, v in unet.state_dict().items()]
    assert layout == read_manifest(manifest_of(name))


@pytest.mark.parametrize("name", NAMES)
def test_each_model_file_has_sha256_https_urls_and_its_size(name):
    model = models.DIFFUSION_MODELS[name]
    file = weights.REGISTRY[f"{name}.pt"]
    assert file.sha256 == model.sha256 and re.fullmatch(r"[0-9a-f]{64}", file.sha256)
    assert file.urls and all(u.startswith("https://") for u in file.urls) and len(set(file.urls)) == len(file.urls)
    parameters = sum(int(np.prod(shape)) for _, shape, _ in read_manifest(manifest_of(name)))
    assert abs(file.shown_size - 4 * parameters) < 0.01 * 4 * parameters  # fp32 files
    assert model.description and "\n" not in model.description and file.description == model.description
    assert model.image_size == MODEL_CONFIGS[name].image_size in (256, 512)


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("name", NAMES)
def test_a_model_that_cannot_be_had_offline_is_named_with_where_it_comes_from(name, tmp_path, monkeypatch):
    monkeypatch.setattr(weights, "BACKOFF_S", 0.0)
    mirror = f"http://127.0.0.1:{closed_port()}"
    with pytest.raises(weights.WeightsUnavailable) as refused:
        weights.ensure(f"{name}.pt", tmp_path / "models", progress=False, mirrors=[mirror])
    message = str(refused.value)
    assert f"cannot get model file {name}.pt" in message
    assert f"{mirror}/{name}.pt" in message and f"save it as {tmp_path / 'models' / name}.pt" in message


def test_the_layouts_that_share_a_manifest_are_the_same_layout():
    assert set(known_layouts()) == {
        "512x512_diffusion_uncond_finetune_008100",
        "256x256_diffusion_uncond",
        KALIYUGA,
        "portrait_generator_v001",
        "Ukiyo-e_Diffusion_All_V1.by_thegenerativegeneration",
    }
    assert layout_owner("FeiArt_Handpainted_CG_Diffusion") == "512x512_diffusion_uncond_finetune_008100"
    assert layout_owner("PulpSciFiDiffusion") == KALIYUGA
    # the heads are not part of a layout: portrait_generator has 4 heads, its layout one manifest
    assert MODEL_CONFIGS["portrait_generator_v001"].heads(256) == 4
    assert MODEL_CONFIGS["512x512_diffusion_uncond_finetune_008100"].heads(256) == 4  # 64 channels a head
    assert MODEL_CONFIGS[KALIYUGA].heads(512) == 1
    for owner in known_layouts():  # each committed manifest is what the options build
        assert json.loads(manifest_of(owner).read_text()) == manifest_rows(owner)


def test_the_setting_offers_every_model_with_what_it_is_for():
    assert DIFFUSION_MODELS == tuple(NAMES) and DIFFUSION_MODELS[0] == "512x512_diffusion_uncond_finetune_008100"
    meanings = choice_meanings("diffusion_model")
    assert meanings == {n: m.description for n, m in models.DIFFUSION_MODELS.items()}
    _, allowed, default = describe("diffusion_model")
    assert default == DIFFUSION_MODELS[0]
    assert f"{KALIYUGA} ({meanings[KALIYUGA]})" in allowed and "checkpoint (.pt)" in allowed
    row = next(r for r in settings_schema() if r["name"] == "diffusion_model")
    assert row["choices"] == list(NAMES) and row["choice_meanings"] == meanings


# ----- the model a run uses: names, paths, what validation refuses -----


def test_a_model_name_in_any_case_is_the_registry_name():
    s = validate_settings(diffusion_model="pulpscifidiffusion", tokens=False)
    assert s.diffusion_model == "PulpSciFiDiffusion"


@pytest.mark.parametrize(
    "value, fragment",
    [
        ("https://example.com/mine.pt", "a URL is not read"),
        ("pixel_art_diffusion_hard", "did you mean 'pixel_art_diffusion_hard_256'"),
        ("mine.ckpt", "a checkpoint path ending in .pt or .pth"),
        ("", "must be one of"),
        (7, "got 7"),
    ],
)
def test_what_is_neither_a_model_nor_a_checkpoint_path_is_refused(value, fragment):
    with pytest.raises(SettingsError) as refused:
        validate_settings(diffusion_model=value, tokens=False)
    assert refused.value.parameter == "diffusion_model" and fragment in str(refused.value)


def test_a_checkpoint_path_is_taken_and_needs_no_download():
    s = validate_settings(diffusion_model="fine-tunes/mine.pt", tokens=False)
    assert s.diffusion_model == "fine-tunes/mine.pt"
    assert weights.files_needed(s.diffusion_model, True, False) == [weights.CLIP_FILE, weights.SECONDARY_FILE]
    assert weights.files_needed(KALIYUGA, False, False) == [f"{KALIYUGA}.pt", weights.CLIP_FILE]


def test_a_combination_a_model_cannot_work_with_is_refused_naming_the_setting(monkeypatch):
    need = models.Need("use_secondary_model", (False,), "it was trained on another noise schedule")
    monkeypatch.setitem(
        models.DIFFUSION_MODELS, KALIYUGA, dataclasses.replace(models.DIFFUSION_MODELS[KALIYUGA], needs=(need,))
    )
    assert validate_settings(diffusion_model=KALIYUGA, use_secondary_model=False, tokens=False)
    with pytest.raises(SettingsError) as refused:
        validate_settings(diffusion_model=KALIYUGA, use_secondary_model=True, tokens=False)
    assert refused.value.parameter == "use_secondary_model"
    assert str(refused.value) == (
        f"use_secondary_model: diffusion_model {KALIYUGA} needs use_secondary_model False "
        "(it was trained on another noise schedule), got True"
    )
    assert all(not m.needs for m in models.DIFFUSION_MODELS.values() if m.name != KALIYUGA)  # none published


# ----- your own checkpoint -----


@pytest.fixture
def cache(tmp_path):
    return ModelCache(tmp_path / "models", torch.device("cpu"), mode="exact")


@pytest.mark.parametrize("owner", list(known_layouts()))
def test_a_checkpoint_of_each_layout_loads_from_a_path(owner, cache):
    cache.model_dir.mkdir()
    torch.save(light_state(MODEL_CONFIGS[owner]), cache.model_dir / "mine.pt")
    unet = cache.unet("mine.pt")
    assert unet.config == MODEL_CONFIGS[owner]  # the layout, and the heads that layout's model has
    assert not any(p.is_meta for p in unet.parameters())
    assert cache.unet(str(cache.model_dir / "mine.pt")) is unet  # one file, loaded once


def test_a_half_precision_checkpoint_is_read_as_fp32(cache):
    cache.model_dir.mkdir()
    half = {k: torch.zeros((), dtype=torch.half).expand(s) for k, s in layout_shapes(MODEL_CONFIGS[KALIYUGA]).items()}
    torch.save(half, cache.model_dir / "half.pt")
    assert {p.dtype for p in cache.unet("half.pt").parameters()} == {torch.float32}


def refused_checkpoint(cache: ModelCache, state: dict) -> str:
    cache.model_dir.mkdir(exist_ok=True)
    torch.save(state, cache.model_dir / "wrong.pt")
    with pytest.raises(SettingsError) as refused:
        cache.unet("wrong.pt")
    assert refused.value.parameter == "diffusion_model"
    return str(refused.value)


def test_a_checkpoint_with_a_key_missing_is_refused_naming_it(cache):
    state = light_state(MODEL_CONFIGS[KALIYUGA])
    del state["middle_block.1.qkv.weight"]
    message = refused_checkpoint(cache, state)
    assert message.startswith("diffusion_model: wrong.pt is not an ADM UNet of a known layout. Closest: ")
    assert f"the layout of {KALIYUGA} (image_size 256, num_channels 128" in message
    assert "1 missing keys (middle_block.1.qkv.weight)" in message
    assert "unexpected" not in message and str(cache.model_dir) not in message


def test_a_checkpoint_with_one_shape_changed_is_refused_naming_it(cache):
    state = light_state(MODEL_CONFIGS["512x512_diffusion_uncond_finetune_008100"])
    state["out.2.weight"] = torch.zeros(()).expand(3, 128, 3, 3)  # learn_sigma=False: 3 output channels
    message = refused_checkpoint(cache, state)
    assert "Closest: the layout of 512x512_diffusion_uncond_finetune_008100" in message
    assert "1 keys of another shape, first out.2.weight: [3, 128, 3, 3] in the file, [6, 128, 3, 3] here" in message


def test_a_checkpoint_with_a_key_too_many_is_refused_naming_it(cache):
    state = {**light_state(MODEL_CONFIGS["256x256_diffusion_uncond"]), "label_emb.weight": torch.zeros(1000, 1024)}
    message = refused_checkpoint(cache, state)
    assert "Closest: the layout of 256x256_diffusion_uncond" in message
    assert "1 unexpected keys (label_emb.weight)" in message


def test_a_file_that_is_no_state_dict_is_refused(cache):
    cache.model_dir.mkdir()
    (cache.model_dir / "notes.pt").write_text("not a checkpoint")
    with pytest.raises(SettingsError, match=r"^diffusion_model: 'notes.pt' is not a state_dict to read \("):
        cache.unet("notes.pt")


def test_a_served_flow_reads_checkpoints_only_inside_its_model_directory(tmp_path):
    models_dir, elsewhere = tmp_path / "models", tmp_path / "elsewhere"
    (models_dir / "mine").mkdir(parents=True)
    elsewhere.mkdir()
    state = light_state(MODEL_CONFIGS[KALIYUGA])
    torch.save(state, elsewhere / "theirs.pt")
    torch.save(state, models_dir / "mine" / "ft.pt")
    (models_dir / "link.pt").symlink_to(elsewhere / "theirs.pt")

    assert checkpoint_path("mine/ft.pt", models_dir) == (models_dir / "mine" / "ft.pt").resolve()
    assert checkpoint_path(str(models_dir / "mine" / "ft.pt"), models_dir) == (models_dir / "mine" / "ft.pt").resolve()
    for outside in (str(elsewhere / "theirs.pt"), "../elsewhere/theirs.pt", "link.pt"):
        with pytest.raises(SettingsError) as refused:
            checkpoint_path(outside, models_dir)
        assert refused.value.parameter == "diffusion_model"
        assert f"{outside!r} is outside this server's model directory (DISCO_MODEL_DIR)" in str(refused.value)
        assert str(models_dir) not in str(refused.value).replace(outside, "")  # its own folders stay unsaid
    with pytest.raises(SettingsError, match=r"^diffusion_model: no checkpoint file 'gone.pt' in the model directory"):
        checkpoint_path("gone.pt", models_dir)
    # the Flow a client starts on its own machine reads any path
    anywhere = ModelCache(models_dir, torch.device("cpu"), mode="exact", checkpoints_anywhere=True)
    assert anywhere.unet(str(elsewhere / "theirs.pt")).config == MODEL_CONFIGS[KALIYUGA]


def test_the_client_gives_its_own_flow_an_absolute_path_and_checks_it(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    torch.save({"x": torch.zeros(1)}, tmp_path / "mine.pt")
    assert local_checkpoint("mine.pt") == str(tmp_path / "mine.pt")
    assert local_checkpoint(KALIYUGA) == KALIYUGA
    with pytest.raises(SettingsError, match=r"^diffusion_model: no checkpoint file '.*/gone\.pt'"):
        local_checkpoint("gone.pt")


def test_the_clients_own_flow_is_sent_the_absolute_path(tmp_path, monkeypatch):
    import contextlib

    from conftest import TINY

    from disco_service.client import api

    class Started(Exception):
        pass

    asked = []

    @contextlib.contextmanager
    def flow_address(host, use_gpu, diffusion_model, quiet):
        asked.append(diffusion_model)
        raise Started  # what the Flow is asked for is all this test needs
        yield

    sent = []
    make_documents = api.make_documents
    monkeypatch.setattr(api, "make_documents", lambda *a, **k: sent.append(make_documents(*a, **k)) or sent[-1])
    monkeypatch.setattr(api, "download_models", lambda *a, **k: [])
    monkeypatch.setattr(api, "gpu_available", lambda: False)
    monkeypatch.setattr(api, "flow_address", flow_address)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "fine-tunes").mkdir()
    torch.save({"x": torch.zeros(1)}, tmp_path / "fine-tunes" / "mine.pt")
    with pytest.raises(Started):
        api.generate({**TINY, "diffusion_model": "fine-tunes/mine.pt", "output_dir": str(tmp_path)}, progress=False)
    mine = str(tmp_path / "fine-tunes" / "mine.pt")
    assert asked == [mine] and [d.tags["diffusion_model"] for d in sent[0]] == [mine] * TINY.get("n_batches", 4)


def test_the_cache_keeps_the_unets_used_last_and_reloads_a_changed_file(tmp_path):
    cache = ModelCache(tmp_path, torch.device("cpu"), mode="exact", max_unets=1)
    torch.save(light_state(MODEL_CONFIGS[KALIYUGA]), tmp_path / "a.pt")
    torch.save(light_state(MODEL_CONFIGS["portrait_generator_v001"]), tmp_path / "b.pt")
    a = cache.unet("a.pt")
    assert cache.unet("a.pt") is a
    cache.unet("b.pt")
    assert len(cache._unets) == 1 and cache.unet("a.pt") is not a  # a was let go, then loaded again
    a = cache.unet("a.pt")
    torch.save(light_state(MODEL_CONFIGS["Ukiyo-e_Diffusion_All_V1.by_thegenerativegeneration"]), tmp_path / "a.pt")
    assert cache.unet("a.pt").config == MODEL_CONFIGS["Ukiyo-e_Diffusion_All_V1.by_thegenerativegeneration"]


# ----- the arithmetic of the community layouts, against the reference -----


@pytest.mark.parametrize("case", ["film_free", "four_heads"])
def test_the_unet_matches_guided_diffusion_on_the_community_layouts(reference_dir, case):
    """``film_free``: the timestep added before the norm, strided and upsampling convolutions, one head
    (KaliYuga's models); ``four_heads``: 4 heads whatever the width (portrait_generator, Ukiyo-e)."""
    meta = json.loads((reference_dir / "layouts.json").read_text())
    expected = np.load(reference_dir / "layouts.npz")
    config = UNetConfig.from_guided_diffusion(meta["configs"][case])
    state = {k: recipe_tensor(k, list(shape), meta["seed"]) for k, shape in layout_shapes(config).items()}
    unet = build_unet(config, state)
    with torch.no_grad():
        out = unet(torch.from_numpy(expected[f"{case}_x"]), torch.from_numpy(expected[f"{case}_t"])).numpy()
    want = expected[f"{case}_out"]
    assert np.abs(out - want).max() <= 1e-3 * want.std()


# ----- test weights for any model -----


def test_test_weights_default_to_the_default_run_and_keep_what_is_there(tmp_path):
    assert DEFAULT_RUN == weights.files_needed(DIFFUSION_MODELS[0], True, False)
    mine = tmp_path / f"{KALIYUGA}.pt"
    mine.write_bytes(b"the real one")
    (tmp_path / "checksums.json").write_text(json.dumps({"other.pt": "0" * 64}))
    assert make(tmp_path, [f"{KALIYUGA}.pt"]) == {"other.pt": "0" * 64}
    assert mine.read_bytes() == b"the real one"
    with pytest.raises(ValueError, match="unknown model files \\['nope.pt'\\]"):
        make(tmp_path, ["nope.pt"])


def test_download_without_names_gets_the_default_run_and_vgg16_not_every_model():
    from disco_service.client.download import DEFAULT_FILES

    assert DEFAULT_FILES == [*DEFAULT_RUN, weights.VGG16_FILE]
    assert (
        sum(weights.REGISTRY[n].shown_size for n in DEFAULT_FILES)
        < 3.3e9
        < sum(f.shown_size for f in weights.REGISTRY.values())
    )
