"""``clip_models``: the offered CLIP models, their weight files, loading, several models in the
guidance and the sampler, the encoder-to-sampler format, and the default's pictures kept bit for bit."""

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import open_clip
import pytest
import torch
from single_clip import SingleClipGuidance, sample_single_clip

from disco import memory, weights
from disco.clip_catalog import CLIP_MODELS, CLIP_SPECS, DEFAULT_CLIP_MODEL, clip_spec
from disco.clip_model import encode_texts, input_size, load_clip
from disco.cutouts import CutoutRandomness
from disco.diffusion import GaussianDiffusion
from disco.guidance import ClipGuide, Guidance
from disco.sampler import Models, sample_image
from disco.settings import SettingsError, validate_settings
from disco_service import wire

ROOT = Path(__file__).resolve().parent.parent
VIT = "ViT-B-32::openai"
SMALL = dict(width_height=[64, 64], cut_overview="[1]*1000", cut_innercut="[1]*1000", cutn_batches=1)
PROMPTS = ["a red apple", "blue sky:0.5"]


@pytest.fixture(scope="module")
def vit():
    """CLIP ViT-B/32 with seeded random weights and 512-wide embeddings, built for 64 px inputs (4
    patches: a cheap second model beside the small RN50 stand-in)."""
    torch.manual_seed(1)
    model = open_clip.create_model(clip_spec(VIT).architecture, pretrained=None, force_image_size=64)
    return model.eval().requires_grad_(False)


@pytest.fixture(scope="module")
def small_vit():
    """ViT-B/32 built for 96 px inputs: a CLIP whose input size differs from RN50's 224."""
    torch.manual_seed(2)
    model = open_clip.create_model(clip_spec(VIT).architecture, pretrained=None, force_image_size=96)
    return model.eval().requires_grad_(False)


def rng(seed=0):
    g = torch.Generator().manual_seed(seed)
    return CutoutRandomness(g, g)


def guide(model, name, prompts=PROMPTS, weights_=(1.0, 0.5)):
    spec = clip_spec(name)
    w = torch.tensor(weights_) / sum(abs(v) for v in weights_)
    return ClipGuide(model, encode_texts(model, prompts, name), w, name, spec.mean, spec.std)


def clip_only(**settings):
    """Settings whose gradient is CLIP's alone (no other loss, no clamp)."""
    return validate_settings(
        **{**SMALL, "range_scale": 0, "clamp_grad": False, "clip_guidance_scale": 1000, **settings}
    )


def at_step(diffusion, index=5, seed=0):
    x = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(seed))
    return x, torch.tensor([diffusion.scaled_timestep(index)]), index


# ----- the table of offered models -----


def test_every_offered_model_matches_open_clips_table_and_has_a_registered_file():
    assert CLIP_MODELS[0] == DEFAULT_CLIP_MODEL == "RN50::openai"
    assert {"RN101::openai", "RN50x4::openai", "RN50x16::openai", "ViT-B-16::openai", "ViT-L-14::openai"} < set(
        CLIP_MODELS
    )
    urls_by_file = {}
    for name, spec in CLIP_SPECS.items():
        model, tag = name.split("::")
        pretrained = open_clip.get_pretrained_cfg(model, tag)
        assert pretrained, name
        # OpenAI's weights go into the QuickGELU variant (as open_clip loads them); the others into the
        # architecture the name says, as open_clip.create_model(model, pretrained=tag) builds it
        assert spec.architecture == (f"{model}-quickgelu" if tag == "openai" else model), name
        if pretrained.get("quick_gelu") and "quickgelu" not in spec.architecture:  # the notebook's mismatch, said
            assert f"{model}-quickgelu::{tag} is the matched one" in spec.about, name
            assert CLIP_SPECS[f"{model}-quickgelu::{tag}"].file == spec.file
        assert spec.mean == tuple(pretrained["mean"]) and spec.std == tuple(pretrained["std"]), name
        config = open_clip.get_model_config(spec.architecture)
        assert config["vision_cfg"]["image_size"] == spec.input_size and config["embed_dim"] == spec.embed_dim
        file = weights.REGISTRY[spec.file]
        assert urls_by_file.setdefault(spec.file, pretrained["url"]) == pretrained["url"], name  # one file, one weights
        if pretrained["url"].startswith("https://openaipublic"):  # OpenAI's own file: its sha256 is in the URL
            assert spec.file == "open_clip_rn50_openai.safetensors" or (
                file.urls[0] == pretrained["url"] and file.sha256 == pretrained["url"].split("/")[-2]
            ), name
        elif "/open_clip/releases/" in pretrained["url"]:  # open_clip's release: the name carries the sha256's start
            assert file.urls == (pretrained["url"],) and spec.file == pretrained["url"].rsplit("/", 1)[1], name
            assert re.fullmatch(r"[0-9a-f]{64}", file.sha256) and file.sha256[:8] == spec.file.split("-")[-1][:8]
        else:
            assert all(pretrained["hf_hub"].rstrip("/") in url for url in file.urls), name
    assert weights.files_needed("256x256_diffusion_uncond", False, False, ["RN50::openai", VIT, "RN50x4::openai"]) == [
        "256x256_diffusion_uncond.pt",
        "open_clip_rn50_openai.safetensors",
        "ViT-B-32.pt",
        "RN50x4.pt",
    ]
    both = ["RN50::yfcc15m", "RN50-quickgelu::yfcc15m"]  # one file for two names: fetched once
    assert weights.files_needed("256x256_diffusion_uncond", False, False, both) == [
        "256x256_diffusion_uncond.pt",
        "rn50-quickgelu-yfcc15m-455df137.pt",
    ]


# the Disco notebook's OpenCLIP switches (v5.7) and the open_clip call its model cell makes for each
NOTEBOOK_OPENCLIP = {
    "ViTB32_laion2b_e16": ("ViT-B-32", "laion2b_e16"),
    "ViTB32_laion400m_e31": ("ViT-B-32", "laion400m_e31"),
    "ViTB32_laion400m_32": ("ViT-B-32", "laion400m_e32"),
    "ViTB32quickgelu_laion400m_e31": ("ViT-B-32-quickgelu", "laion400m_e31"),
    "ViTB32quickgelu_laion400m_e32": ("ViT-B-32-quickgelu", "laion400m_e32"),
    "ViTB16_laion400m_e31": ("ViT-B-16", "laion400m_e31"),
    "ViTB16_laion400m_e32": ("ViT-B-16", "laion400m_e32"),
    "RN50_yffcc15m": ("RN50", "yfcc15m"),
    "RN50_cc12m": ("RN50", "cc12m"),
    "RN50_quickgelu_yfcc15m": ("RN50-quickgelu", "yfcc15m"),
    "RN50_quickgelu_cc12m": ("RN50-quickgelu", "cc12m"),
    "RN101_yfcc15m": ("RN101", "yfcc15m"),
    "RN101_quickgelu_yfcc15m": ("RN101-quickgelu", "yfcc15m"),
}


@pytest.mark.parametrize("switch", NOTEBOOK_OPENCLIP)
def test_each_notebook_openclip_model_is_offered_and_builds_as_open_clip_builds_it(switch):
    from disco.settings.notebook_names import CLIP_SWITCHES

    model, tag = NOTEBOOK_OPENCLIP[switch]
    name = f"{model}::{tag}"
    spec = clip_spec(name)
    assert CLIP_SWITCHES[switch] == name and validate_settings(clip_models=[name]).clip_models == [name]
    file = weights.REGISTRY[spec.file]
    assert file.sha256 and file.approx_size and not file.size  # pinned by sha256; the size is not published
    # the layout without weights (no forward pass): every tensor of open_clip's own model for the name
    with torch.device("meta"):  # built without initialising any weights
        ours, theirs = (open_clip.create_model(a, device="meta") for a in (spec.architecture, model))
    assert {k: v.shape for k, v in ours.state_dict().items()} == {k: v.shape for k, v in theirs.state_dict().items()}
    assert [type(m).__name__ for m in ours.modules()] == [type(m).__name__ for m in theirs.modules()]  # its GELU
    assert ours.visual.image_size in (spec.input_size, (spec.input_size,) * 2)
    assert ours.text_projection.shape[1] == spec.embed_dim
    # what the weights would weigh in fp32 is the approximate size given for the download
    params = sum(v.numel() for v in ours.state_dict().values())
    assert abs(4 * params - file.approx_size) < 0.01 * file.approx_size
    assert memory.CLIP_CUTOUT_BYTES[name]["half"] < memory.CLIP_CUTOUT_BYTES[name]["fp32"]


@pytest.fixture(scope="module")
def rn50_yfcc15m(tmp_path_factory):
    """The test file of open_clip's ``rn50-quickgelu-yfcc15m-455df137.pt`` (a plain state dict; 400 MB,
    removed when the module's tests end)."""
    from make_test_weights import make

    directory = tmp_path_factory.mktemp("openclip")
    make(directory, ["rn50-quickgelu-yfcc15m-455df137.pt"])
    yield directory / "rn50-quickgelu-yfcc15m-455df137.pt"
    shutil.rmtree(directory, ignore_errors=True)


@pytest.mark.slow  # real-size weights: an RN50 file written and loaded
def test_an_openclip_release_file_loads_strictly_into_both_of_its_names(rn50_yfcc15m, tmp_path):
    stored = torch.load(rn50_yfcc15m, weights_only=True)
    plain, quick = load_clip(rn50_yfcc15m, "RN50::yfcc15m"), load_clip(rn50_yfcc15m, "RN50-quickgelu::yfcc15m")
    for model in (plain, quick):
        state = model.state_dict()
        assert state.keys() == stored.keys() and all(torch.equal(state[k], v) for k, v in stored.items())
    # the image side has no GELU (both names see a cutout alike, and cost the same); the text side differs
    kinds = [[type(m).__name__ for m in model.visual.modules()] for model in (plain, quick)]
    assert kinds[0] == kinds[1] and not any("GELU" in kind for kind in kinds[0])
    tokens = open_clip.get_tokenizer("RN50")(["a lighthouse"])
    assert not torch.allclose(plain.encode_text(tokens), quick.encode_text(tokens))


@pytest.mark.slow  # real-size weights: an RN50 file written and loaded
def test_an_openclip_training_checkpoint_loads_and_a_short_file_is_refused(rn50_yfcc15m, tmp_path):
    stored = torch.load(rn50_yfcc15m, weights_only=True)
    # open_clip's training checkpoints (DataParallel's "module." names under "state_dict") load the same
    wrapped = tmp_path / "checkpoint.pt"
    torch.save({"epoch": 32, "name": "rn50", "state_dict": {f"module.{k}": v for k, v in stored.items()}}, wrapped)
    state = load_clip(wrapped, "RN50::yfcc15m").state_dict()
    assert all(torch.equal(state[k], v) for k, v in stored.items())
    # strict: a file that lacks some of the model's tensors is refused naming it, the model and what is missing
    missing = tmp_path / "missing.pt"
    torch.save({k: v for k, v in stored.items() if not k.startswith("visual.attnpool")}, missing)
    with pytest.raises(ValueError, match=f"(?s)^clip_models: {missing} is not a RN50::yfcc15m checkpoint.*Missing key"):
        load_clip(missing, "RN50::yfcc15m")


# ----- the setting -----


@pytest.mark.parametrize(
    "value,fragment",
    [
        (["ViT-B-99::openai"], "unknown CLIP model 'ViT-B-99::openai'"),
        (["ViT-B-32"], "did you mean 'ViT-B-32::openai'?"),
        ([], "non-empty list"),
        (["RN50::openai", "rn50::openai"], "named twice"),
        ([3], "unknown CLIP model 3"),
    ],
)
def test_unknown_models_are_refused_naming_the_setting_and_the_offered_ones(value, fragment):
    with pytest.raises(SettingsError) as err:
        validate_settings(clip_models=value)
    assert err.value.parameter == "clip_models" and str(err.value).startswith("clip_models: ")
    assert fragment in str(err.value)
    if fragment != "named twice":
        assert "offered: RN50::openai, RN101::openai" in str(err.value) and "ViT-L-14::laion2b_s32b_b82k" in str(
            err.value
        )


def test_names_in_a_list_or_one_text_keep_their_order():
    assert validate_settings().clip_models == ["RN50::openai"]
    assert validate_settings(clip_models=[VIT, "RN50::openai"]).clip_models == [VIT, "RN50::openai"]
    assert validate_settings(clip_models="vit-b-32::openai, RN50::openai").clip_models == [VIT, "RN50::openai"]


def test_prompt_length_is_checked_with_each_models_tokenizer(monkeypatch):
    from disco import clip_model

    asked = []
    monkeypatch.setattr(clip_model, "check_prompt_length", lambda text, model: asked.append((text, model)))
    validate_settings(text_prompts=["a", "b:2"], clip_models=["RN50::openai", VIT])
    assert asked == [("a", "RN50::openai"), ("b", "RN50::openai"), ("a", VIT), ("b", VIT)]
    monkeypatch.undo()
    with pytest.raises(SettingsError, match=f"^text_prompts: prompt is 82 CLIP tokens for {VIT}, the limit is 77"):
        validate_settings(text_prompts=["word " * 80], clip_models=[VIT])


def test_command_line_takes_a_list_and_help_offers_the_models():
    from disco_service.client import cli

    got = {}
    code = cli.main(["--clip_models", "RN50::openai", VIT], generate=lambda **kw: got.update(kw) or [])
    assert code == 0 and got["clip_models"] == ["RN50::openai", VIT]
    done = subprocess.run(
        [sys.executable, str(ROOT / "client.py"), "--clip_models", "ViT-B-99::openai"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2, done.stderr[-2000:]
    assert done.stderr.startswith("error: clip_models: unknown CLIP model 'ViT-B-99::openai'")
    help_text = " ".join(cli.build_parser().format_help().split())
    assert "--clip_models CLIP_MODELS [CLIP_MODELS ...]" in help_text
    for name in CLIP_MODELS:
        assert name in help_text


# ----- weight files: the layouts as published, loaded strictly -----


@pytest.mark.slow  # real-size weights: a ViT-B/32 file written and loaded
def test_openai_checkpoint_layout_loads_into_the_quickgelu_architecture(tmp_path):
    from make_test_weights import make

    make(tmp_path, ["ViT-B-32.pt"])
    path = tmp_path / "ViT-B-32.pt"
    loaded = load_clip(path, VIT)
    torch.manual_seed(0)  # make_test_weights' seed
    want = open_clip.create_model("ViT-B-32-quickgelu").state_dict()
    got = loaded.state_dict()
    assert got.keys() == want.keys() and all(v.dtype == torch.float32 for v in got.values())
    proj = "visual.transformer.resblocks.0.attn.in_proj_weight"
    assert torch.equal(got[proj], want[proj].half().float())  # stored in fp16, as OpenAI's files are
    assert input_size(loaded) == 224 and type(loaded.visual.transformer.resblocks[0].mlp.gelu).__name__ == "QuickGELU"
    with pytest.raises(ValueError, match=re.escape(f"clip_models: {path} is not a RN101::openai checkpoint")):
        load_clip(path, "RN101::openai")


def test_a_file_without_a_published_sha256_is_accepted_as_a_complete_transfer(tmp_path, caplog):
    from test_weights import Server, random_bytes

    server = Server()
    try:
        data = random_bytes(7)
        server.state.files["w.bin"] = data
        file = weights.ModelFile("w.bin", None, None, (server.url("w.bin"),), "test file")
        path = weights.ensure(file, tmp_path, progress=False)
        assert path.read_bytes() == data and "has no published sha256" in caplog.text
        assert weights.ensure(file, tmp_path, progress=False) == path and len(server.state.requests) == 1
        message = weights._explain(file, tmp_path / "w.bin", [])
        assert "no published sha256: any complete copy is accepted" in message
    finally:
        server.close()
    pinned = [f.name for f in weights.REGISTRY.values() if f.sha256 is None]
    assert pinned == ["open_clip_vit_b_16_laion2b_s34b_b88k.bin"]  # the one no public source pins


# ----- the default, RN50 alone, as before -----


@pytest.mark.parametrize("extra", [{}, {"cutn_batches": 3, "cut_overview": "[2]*1000", "skip_augs": True}])
def test_rn50_alone_gives_the_gradient_of_before_bit_for_bit(rn50_models, extra):
    diffusion = GaussianDiffusion(10)
    x = 1.5 * torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(3))
    t = torch.tensor([diffusion.scaled_timestep(7)])
    s = validate_settings(**{**SMALL, "tv_scale": 20, "sat_scale": 10, **extra})
    embeds = encode_texts(rn50_models.clip, PROMPTS)
    w = torch.tensor([1.0, 0.5]) / 1.5
    ours = Guidance(s, diffusion, [ClipGuide(rn50_models.clip, embeds, w)], rng(4), secondary=rn50_models.secondary)
    before = SingleClipGuidance(s, diffusion, rn50_models.clip, embeds, w, rng(4), secondary=rn50_models.secondary)
    got, want = ours(x, t, 7), before(x, t, 7)
    assert want.abs().sum() > 0 and torch.equal(got, want)
    assert [float(v) for v in ours.losses] == [float(v) for v in before.losses]


@pytest.mark.parametrize("extra", [{"fuzzy_prompt": True}, {"diffusion_sampling_mode": "plms", "cutn_batches": 2}])
def test_rn50_alone_gives_the_pictures_of_before_bit_for_bit(rn50_models, extra):
    s = validate_settings(**{**SMALL, "steps": 3, "skip_steps": 1, "display_rate": 1, **extra})
    embeds = encode_texts(rn50_models.clip, PROMPTS)
    got = [r.image for r in sample_image(s, embeds, [1.0, 0.5], rn50_models, seed=5)]
    want = list(sample_single_clip(s, embeds, [1.0, 0.5], rn50_models, seed=5))
    assert len(got) == len(want) == 2
    assert all(torch.equal(a, b) for a, b in zip(got, want, strict=True))


# ----- several models -----


def test_two_models_give_the_sum_of_each_models_gradient(tiny_models, vit):
    diffusion = GaussianDiffusion(10)
    x, t, index = at_step(diffusion)
    s = clip_only()
    rn50, vit_guide = guide(tiny_models.clip, DEFAULT_CLIP_MODEL), guide(vit, VIT)
    both = Guidance(s, diffusion, [rn50, vit_guide], rng(), secondary=tiny_models.secondary)
    grad_both = both(x, t, index)
    shared = rng()  # each model alone, the second from where the first left the generator: the same cutouts
    alone = [Guidance(s, diffusion, [g], shared, secondary=tiny_models.secondary) for g in (rn50, vit_guide)]
    grads = [g(x, t, index) for g in alone]
    assert all(g.abs().sum() > 0 for g in grads) and not torch.allclose(grads[0], grads[1])
    torch.testing.assert_close(grad_both, grads[0] + grads[1], rtol=1e-5, atol=1e-6 * grad_both.abs().max().item())
    assert [float(v) for v in both.losses] == pytest.approx([float(v) for g in alone for v in g.losses], rel=1e-6)


class Recording(torch.nn.Module):
    """A CLIP that records the shape of every image batch it sees."""

    def __init__(self, clip, seen):
        super().__init__()
        self.clip, self.visual, self.seen = clip, clip.visual, seen

    def encode_image(self, images):
        self.seen.append(tuple(images.shape))
        return self.clip.encode_image(images)


def test_each_model_gets_its_own_cutouts_at_its_input_size_per_cutout_batch(tiny_models, small_vit):
    seen = {"rn50": [], "vit": []}
    diffusion = GaussianDiffusion(10)
    x, t, index = at_step(diffusion)
    s = clip_only(cutn_batches=2, cut_overview="[2]*1000", cut_innercut="[1]*1000")
    guides = [guide(tiny_models.clip, DEFAULT_CLIP_MODEL), guide(small_vit, VIT)]
    guides[0].model, guides[1].model = Recording(tiny_models.clip, seen["rn50"]), Recording(small_vit, seen["vit"])
    g = Guidance(s, diffusion, guides, rng(), secondary=tiny_models.secondary, max_cutouts_per_pass=3)
    g(x, t, index)
    assert input_size(small_vit) == 96 and input_size(tiny_models.clip) == 64
    assert seen == {"rn50": [(3, 3, 64, 64)] * 2, "vit": [(3, 3, 96, 96)] * 2}  # cutn_batches passes each
    assert len(g.losses) == 4


def test_sampler_guides_with_every_chosen_model(tiny_models, vit):
    s = validate_settings(**SMALL, steps=3, skip_steps=1, display_rate=1, clip_models=["RN50::openai", VIT])
    clips = {DEFAULT_CLIP_MODEL: tiny_models.clip, VIT: vit}
    models = Models(unet=tiny_models.unet, secondary=tiny_models.secondary, clips=clips)
    embeds = {DEFAULT_CLIP_MODEL: encode_texts(tiny_models.clip, PROMPTS), VIT: encode_texts(vit, PROMPTS, VIT)}
    both = [r.image for r in sample_image(s, embeds, [1.0, 0.5], models, seed=5)]
    rn50_alone = validate_settings(s, clip_models=["RN50::openai"])
    alone = [r.image for r in sample_image(rn50_alone, embeds, [1.0, 0.5], models, seed=5)]
    assert models.clip is tiny_models.clip and len(both) == 2
    assert not torch.allclose(both[-1], alone[-1])
    # what the encoder sends the sampler: both models' embeddings side by side in one array
    array, widths = wire.pack_embeddings({name: e.numpy() for name, e in embeds.items()})
    assert array.shape == (2, 1024 + 512) and widths == [1024, 512]
    tags = json.loads(json.dumps({wire.EMBEDDING_WIDTHS_TAG: [float(w) for w in widths]}))  # gRPC: floats
    unpacked = {k: torch.from_numpy(v) for k, v in wire.unpack_embeddings(array, tags, s.clip_models).items()}
    assert all(torch.equal(unpacked[k], embeds[k]) for k in embeds)
    again = [r.image for r in sample_image(s, unpacked, [1.0, 0.5], models, seed=5)]
    assert all(torch.equal(a, b) for a, b in zip(again, both, strict=True))
    with pytest.raises(ValueError, match=f"clip_models: {VIT} has no loaded model"):
        next(sample_image(s, embeds, [1.0, 0.5], tiny_models, seed=5))


def test_the_rn50_only_format_is_read_as_before_and_a_mismatch_is_refused():
    rn50 = np.random.default_rng(0).standard_normal((2, 1024)).astype(np.float32)
    assert wire.pack_embeddings({DEFAULT_CLIP_MODEL: rn50})[0].shape == (2, 1024)
    old = wire.unpack_embeddings(rn50.tolist(), {}, ["RN50::openai"])  # no widths tag: RN50 alone
    assert np.array_equal(old[DEFAULT_CLIP_MODEL], rn50)
    with pytest.raises(ValueError, match="one prompt embedding for 2 clip_models"):
        wire.unpack_embeddings(rn50, {}, ["RN50::openai", VIT])
    with pytest.raises(ValueError, match=r"\(2, 1024\) with clip_embedding_widths \[1024, 512\] does not fit"):
        wire.unpack_embeddings(rn50, {wire.EMBEDDING_WIDTHS_TAG: [1024, 512]}, ["RN50::openai", VIT])


def test_models_without_clips_stand_for_rn50(tiny_models):
    models = Models(unet=tiny_models.unet, clip=tiny_models.clip)
    assert models.clips == {DEFAULT_CLIP_MODEL: tiny_models.clip}
    with pytest.raises(ValueError, match="needs a CLIP model"):
        Models(unet=tiny_models.unet)


def test_the_settings_schema_offers_the_models_for_a_form():
    from disco.settings import settings_schema

    row = next(r for r in settings_schema() if r["name"] == "clip_models")
    assert row["kind"] == "texts" and row["default"] == ["RN50::openai"] and row["choices"] == list(CLIP_MODELS)
    assert row["choice_meanings"] == {name: spec.about for name, spec in CLIP_SPECS.items()}
    assert "ViT-B-32::openai (OpenAI ViT-B/32: the quickest" in row["allowed"] and not row["seed_api"]


@pytest.mark.slow  # real-size weights: RN50 and ViT-B/32 files written and loaded
def test_the_encoder_embeds_the_prompts_with_every_chosen_model(tmp_path):
    from docarray import Document, DocumentArray
    from make_test_weights import make

    from executors.prompt_encoder import PromptEncoder

    make(tmp_path, ["open_clip_rn50_openai.safetensors", "ViT-B-32.pt"])
    encoder = PromptEncoder(model_dir=str(tmp_path), use_gpu="0")
    settings = validate_settings(text_prompts=PROMPTS, clip_models=[VIT, "RN50::openai"], seed=1)
    docs = DocumentArray([Document(tags=wire.request_tags(settings, 0)), Document(tags=wire.request_tags(settings, 1))])
    docs[1].tags.pop("clip_models")  # a request as clients sent it before the setting: RN50 alone
    encoder.encode(docs)
    both, rn50 = docs
    assert both.embedding.shape == (2, 512 + 1024) and both.tags[wire.EMBEDDING_WIDTHS_TAG] == [512, 1024]
    assert both.tags[wire.PROMPT_WEIGHTS_TAG] == [1.0, 0.5]
    assert rn50.embedding.shape == (2, 1024) and rn50.tags[wire.EMBEDDING_WIDTHS_TAG] == [1024]
    split = wire.unpack_embeddings(both.embedding, both.tags, [VIT, "RN50::openai"])
    assert np.allclose(split["RN50::openai"], rn50.embedding, atol=1e-6)  # the same RN50 embeddings either way
    assert np.allclose(np.linalg.norm(split[VIT], axis=1), 1, atol=1e-5)


def test_a_served_flow_guides_with_two_models(served_flow):
    from conftest import TINY
    from docarray import Document
    from jina import Client

    from disco_service.client.api import make_documents

    def paint(**settings):
        docs = make_documents(validate_settings(**{**TINY, "seed": 3, "n_batches": 1, **settings}), None)
        doc = Client(host=served_flow).post("/generate", docs)[0]
        assert doc.tags["status"] == "done", doc.tags.get("error")
        image = Document(uri=doc.uri)
        image.load_uri_to_image_tensor()
        return doc, image.tensor

    both, both_image = paint(clip_models=["RN50::openai", VIT])
    assert both.tags["clip_models"] == ["RN50::openai", VIT] and both.embedding is None
    _, rn50_image = paint()
    assert both_image.shape == rn50_image.shape == (64, 64, 3)
    assert not np.array_equal(both_image, rn50_image)  # ViT-B/32 took part
