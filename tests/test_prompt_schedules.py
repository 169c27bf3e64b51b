"""Prompt weight schedules, per-prompt CLIP models, clip_models_schedules, scheduled
use_secondary_model and clamp_grad, truncate_overlength_prompt, and image prompts."""

import io

import numpy as np
import open_clip
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from disco.clip_catalog import DEFAULT_CLIP_MODEL, clip_spec
from disco.clip_model import clip_normalize, encode_texts, input_size
from disco.cutouts import CutoutRandomness
from disco.diffusion import GaussianDiffusion
from disco.guidance import ClipGuide, Guidance
from disco.image_prompts import IMAGE_PROMPT_CUTS, encode_image_prompt
from disco.prompts import Prompt, data_uri, parse_image_prompt, parse_prompt, prompt_weight_of, step_weights
from disco.sampler import Models, _clip_guides, sample_image
from disco.settings import SETTING_NAMES, SettingsError, validate_settings

VIT = "ViT-B-32::openai"
SMALL = dict(width_height=[64, 64], cut_overview="[1]*1000", cut_innercut="[1]*1000", cutn_batches=1)
TEXTS = ["a red apple", "blue sky", "a green field"]
HALF = "[0]*500+[1]*500"  # off for the first half of the virtual steps, on after


def clip_only(**values):
    """Settings whose gradient is CLIP's alone (no other loss, no clamp)."""
    return validate_settings(
        **{**SMALL, "range_scale": 0, "clamp_grad": False, "clip_guidance_scale": 1000, **values}, tokens=False
    )


def gradient(models, s, embeds, weights, index, diffusion=None):
    """The guidance gradient at diffusion index ``index`` (of 10 steps) with guides built as the sampler builds them."""
    diffusion = diffusion or GaussianDiffusion(10)
    guides = _clip_guides(s, embeds, weights, models, torch.Generator().manual_seed(0))
    g = torch.Generator().manual_seed(0)
    guidance = Guidance(s, diffusion, guides, CutoutRandomness(g, g), secondary=models.secondary, unet=models.unet)
    x = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(3))
    return guidance(x, torch.tensor([diffusion.scaled_timestep(index)]), index)


def virtual_step(index, steps=10):
    return 1000 - (int(np.float32(GaussianDiffusion(steps).scaled_timestep(index))) + 1)


FIRST_HALF, SECOND_HALF = 8, 2  # diffusion indices of 10 steps whose virtual steps are below / above 500


def test_the_indices_fall_in_the_halves():
    assert virtual_step(FIRST_HALF) < 500 <= virtual_step(SECOND_HALF)


# ----- prompt weight schedules -----


def test_a_prompt_off_for_the_first_half_gives_the_gradient_of_the_run_without_it_then_differs(tiny_models):
    s = clip_only()
    embeds = encode_texts(tiny_models.clip, TEXTS)
    without = [1.0, 0.5]
    scheduled = [1.0, 0.5, parse_prompt(f"a green field:{HALF}")]
    want = gradient(tiny_models, s, embeds[:2], without, FIRST_HALF)
    got = gradient(tiny_models, s, embeds, scheduled, FIRST_HALF)
    assert want.abs().sum() > 0 and torch.equal(got, want)
    want = gradient(tiny_models, s, embeds[:2], without, SECOND_HALF)
    got = gradient(tiny_models, s, embeds, scheduled, SECOND_HALF)
    assert not torch.allclose(got, want, rtol=1e-3, atol=1e-6)
    # after the switch it is the run in which the prompt always had weight 1
    always = gradient(tiny_models, s, embeds, [1.0, 0.5, 1.0], SECOND_HALF)
    torch.testing.assert_close(got, always, rtol=0, atol=0)


def test_a_constant_schedule_gives_the_pictures_of_the_plain_weight_bit_for_bit(tiny_models):
    s = validate_settings(**SMALL, steps=3, skip_steps=1, display_rate=1, tokens=False)
    embeds = encode_texts(tiny_models.clip, TEXTS[:2])
    plain = [r.image for r in sample_image(s, embeds, [1.0, 0.5], tiny_models, seed=4)]
    same = [parse_prompt("a red apple:[1]*1000"), parse_prompt("blue sky:[0.5]*1000")]
    scheduled = [r.image for r in sample_image(s, embeds, same, tiny_models, seed=4)]
    assert all(torch.equal(a, b) for a, b in zip(plain, scheduled, strict=True))


def test_a_prompt_given_to_one_model_is_left_out_of_the_others(tiny_models):
    s = clip_only()
    embeds = encode_texts(tiny_models.clip, TEXTS)
    elsewhere = [1.0, 0.5, Prompt("a green field", 1.0, clip_models=(VIT,))]
    want = gradient(tiny_models, s, embeds[:2], [1.0, 0.5], FIRST_HALF)
    assert torch.equal(gradient(tiny_models, s, embeds, elsewhere, FIRST_HALF), want)


def test_step_weights_are_normalised_over_the_prompts_that_apply():
    prompts = [Prompt("a", 2.0), parse_prompt(f"b:{HALF}"), Prompt("c", 1.0, clip_models=(VIT,))]
    weights, active = step_weights(prompts, DEFAULT_CLIP_MODEL)
    assert weights.shape == (1000, 3) and active.all()
    assert weights[0].tolist() == [1.0, 0.0, 0.0] and weights[999].tolist() == pytest.approx([2 / 3, 1 / 3, 0.0])
    weights, active = step_weights(prompts, VIT, [True] * 300 + [False] * 700)
    assert active.sum() == 300 and weights[0].tolist() == pytest.approx([2 / 3, 0, 1 / 3])


# the schedule text forms: every accepted one reads as 1000 values; every refused one names the prompt
runs = st.lists(st.tuples(st.integers(-3, 3), st.integers(1, 400)), min_size=1, max_size=5)


@settings(max_examples=60, deadline=None)
@given(runs=runs, text=st.text(st.characters(codec="ascii", exclude_characters=":[]"), min_size=1).filter(str.strip))
def test_schedule_texts_parse_to_1000_values_or_are_refused_naming_the_prompt(runs, text):
    schedule = "+".join(f"[{v}]*{n}" for v, n in runs)
    want = [float(v) for v, n in runs for _ in range(n)]
    for form in (f"{text}:{schedule}", {"text": text, "weight": schedule}):
        if len(want) == 1000:
            prompt = parse_prompt(form)
            assert prompt.text == text.strip() and list(prompt.schedule) == want and len(prompt.weights()) == 1000
            again = prompt_weight_of(prompt.text, prompt.wire_weight())  # as the sampler reads it back
            assert again.schedule == prompt.schedule
        else:
            with pytest.raises(SettingsError, match=r"^text_prompts: prompt .*covers"):
                parse_prompt(form)


@pytest.mark.parametrize(
    "prompts,fragment",
    [
        (["sea:[1]*500+[nan]*500"], "prompt 'sea': its weight schedule"),
        (["sea:[1]*500+[x]*500"], "prompt 'sea': its weight schedule"),
        (["sea:[1]*1001"], "prompt 'sea': its weight schedule"),
        ([{"text": "sea", "weight": "[1]*10"}], "prompt 'sea': its weight schedule: must cover exactly 1000"),
        ([{"text": "sea", "colour": 1}], "unknown key 'colour'"),
        ([{"text": "sea:2", "weight": 1}], "prompt 'sea:2': the weight is given twice"),
        ([{"text": "sea", "clip_models": [VIT]}], "prompt 'sea' names CLIP model 'ViT-B-32::openai'"),
        ([{"text": "sea", "clip_models": ["ViT-Q"]}], "prompt 'sea': its clip_models: unknown CLIP model"),
        (["sea:[1]*500+[-1]*500", "sky:[0]*500+[1]*500"], "at virtual step 500"),
    ],
)
def test_bad_prompt_schedules_are_refused_before_any_model_loads(prompts, fragment):
    with pytest.raises(SettingsError, match="^text_prompts: ") as caught:
        validate_settings(text_prompts=prompts, tokens=False)
    assert fragment in str(caught.value)


def test_the_structured_form_and_the_text_form_agree():
    s = validate_settings(
        text_prompts=[{"text": "sea", "weight": HALF, "clip_models": ["rn50::OPENAI"]}, "sky"], tokens=False
    )
    assert s.text_prompts[0] == {"text": "sea", "weight": HALF, "clip_models": [DEFAULT_CLIP_MODEL]}
    assert parse_prompt(s.text_prompts[0]).schedule == parse_prompt(f"sea:{HALF}").schedule
    assert parse_prompt("a view:[draft]").text == "a view:[draft]"  # not a schedule: part of the text
    with pytest.raises(SettingsError, match="prompt 'a view': its weight schedule: must cover exactly 1000 steps"):
        parse_prompt("a view:[1]")  # numbers in brackets: a schedule, and too short


# ----- clip_models_schedules, use_secondary_model and clamp_grad by step -----


@pytest.fixture(scope="module")
def vit():
    """CLIP ViT-B/32 with seeded random weights, built for 64 px inputs (cheap)."""
    torch.manual_seed(1)
    model = open_clip.create_model(clip_spec(VIT).architecture, pretrained=None, force_image_size=64)
    return model.eval().requires_grad_(False)


def test_a_model_scheduled_off_equals_the_run_without_it_at_those_steps(tiny_models, vit):
    models = Models(
        unet=tiny_models.unet, secondary=tiny_models.secondary, clips={DEFAULT_CLIP_MODEL: tiny_models.clip, VIT: vit}
    )
    embeds = {DEFAULT_CLIP_MODEL: encode_texts(tiny_models.clip, TEXTS[:2]), VIT: encode_texts(vit, TEXTS[:2], VIT)}
    both = clip_only(clip_models=[DEFAULT_CLIP_MODEL, VIT], clip_models_schedules={VIT: "[False]*500+[True]*500"})
    alone = clip_only()
    rn50 = {DEFAULT_CLIP_MODEL: embeds[DEFAULT_CLIP_MODEL]}
    want = gradient(models, alone, rn50, [1.0, 0.5], FIRST_HALF)
    assert torch.equal(gradient(models, both, embeds, [1.0, 0.5], FIRST_HALF), want)
    later = gradient(models, both, embeds, [1.0, 0.5], SECOND_HALF)
    assert not torch.allclose(later, gradient(models, alone, rn50, [1.0, 0.5], SECOND_HALF), rtol=1e-3, atol=1e-6)


def test_clip_models_schedules_are_read_and_refused_by_name():
    text = "vit-b-32::openai=[True]*400+[False]*600"  # as a form's text field sends it
    s = validate_settings(clip_models=[DEFAULT_CLIP_MODEL, VIT], clip_models_schedules=text, tokens=False)
    assert s.clip_models_schedules == {VIT: "[True]*400+[False]*600"}
    with pytest.raises(SettingsError, match="^clip_models_schedules: 'ViT-B-32::openai' is not one of clip_models"):
        validate_settings(clip_models_schedules={VIT: "[True]*1000"}, tokens=False)
    with pytest.raises(SettingsError, match=r"^clip_models_schedules: RN50::openai: .*true/false"):
        validate_settings(clip_models_schedules={DEFAULT_CLIP_MODEL: "[2]*1000"}, tokens=False)


def test_use_secondary_model_by_step_picks_the_estimate_of_each_step(tiny_models):
    embeds = encode_texts(tiny_models.clip, TEXTS[:2])
    scheduled = clip_only(use_secondary_model="[False]*500+[True]*500")
    secondary, unet = clip_only(use_secondary_model=True), clip_only(use_secondary_model=False)
    unet_only = Models(unet=tiny_models.unet, clip=tiny_models.clip)  # no secondary model: the UNet's estimate
    wants = []
    for index, model_s, models in ((FIRST_HALF, unet, unet_only), (SECOND_HALF, secondary, tiny_models)):
        wants.append(gradient(models, model_s, embeds, [1.0, 0.5], index))
        assert torch.equal(gradient(tiny_models, scheduled, embeds, [1.0, 0.5], index), wants[-1])
    # the two estimates differ, so the schedule above chose each
    assert not torch.allclose(gradient(tiny_models, secondary, embeds, [1.0, 0.5], FIRST_HALF), wants[0])


def test_clamp_grad_by_step_clamps_only_where_it_is_on(tiny_models):
    embeds = encode_texts(tiny_models.clip, TEXTS[:2])
    scheduled = clip_only(clamp_grad="[True]*500+[False]*500", clamp_max=1e-6)
    off = clip_only(clamp_grad=False, clamp_max=1e-6)
    first = gradient(tiny_models, scheduled, embeds, [1.0, 0.5], FIRST_HALF)
    assert first.square().mean().sqrt().item() == pytest.approx(1e-6, rel=1e-3)  # clamped
    second = gradient(tiny_models, scheduled, embeds, [1.0, 0.5], SECOND_HALF)
    assert torch.equal(second, gradient(tiny_models, off, embeds, [1.0, 0.5], SECOND_HALF))
    assert second.square().mean().sqrt().item() > 2e-4  # not clamped
    with pytest.raises(SettingsError, match="^use_secondary_model: "):
        validate_settings(use_secondary_model="[True]*500+[2]*500", tokens=False)
    with pytest.raises(SettingsError, match="^clamp_max: must be > 0 at every step when clamp_grad is on"):
        validate_settings(clamp_grad="[False]*500+[True]*500", clamp_max="[1]*500+[0]*500", tokens=False)
    assert validate_settings(clamp_grad="[True]*500+[False]*500", clamp_max="[1]*500+[0]*500", tokens=False)


# ----- truncate_overlength_prompt -----


def test_an_overlength_prompt_is_refused_unless_truncation_is_asked_for(tiny_models):
    long = " ".join(["lighthouse"] * 90)
    with pytest.raises(SettingsError, match="^text_prompts: prompt is 92 CLIP tokens, the limit is 77"):
        validate_settings(text_prompts=[long])
    s = validate_settings(text_prompts=[long], truncate_overlength_prompt=True)
    assert s.text_prompts == [long]
    with pytest.raises(SettingsError, match="the limit is 77"):
        encode_texts(tiny_models.clip, [long])
    cut = encode_texts(tiny_models.clip, [long], truncate=True)  # the 75 words that fit, between start and end
    assert torch.equal(cut, encode_texts(tiny_models.clip, [" ".join(["lighthouse"] * 75)]))


# ----- image prompts -----


def png(colour, size=(80, 48)):
    buffer = io.BytesIO()
    image = Image.new("RGB", size, colour)
    image.paste((255, 255, 255), (10, 10, 30, 30))
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def test_image_prompts_read_paths_bytes_and_data_uris_with_weights(tmp_path):
    from disco_service.client.api import read_image_prompts
    from disco_service.wire import settings_from_request

    path = tmp_path / "red.png"
    path.write_bytes(png((200, 0, 0)))
    sent = read_image_prompts([f"{path}:2", png((0, 0, 200)), data_uri(png((0, 200, 0)))])
    assert [parse_image_prompt(p).weight for p in sent] == [2.0, 1.0, 1.0]
    assert all(isinstance(p, str) and p.startswith("data:") for p in sent)
    assert settings_from_request({"image_prompts": sent}).image_prompts == sent
    with pytest.raises(SettingsError, match="^image_prompts: the server does not open paths"):
        settings_from_request({"image_prompts": [str(path)]})
    with pytest.raises(SettingsError, match="^image_prompts: no such file"):
        read_image_prompts([str(tmp_path / "missing.png")])
    with pytest.raises(SettingsError, match="^image_prompts: cannot read the image"):
        read_image_prompts([b"not an image"])


def test_an_image_prompt_moves_the_picture_towards_its_clip_embedding(tiny_models):
    target = encode_image_prompt(tiny_models.clip, png((220, 30, 30)), DEFAULT_CLIP_MODEL, 64, 64, skip_augs=True)
    assert target.shape == (IMAGE_PROMPT_CUTS, 1024)
    s = clip_only(skip_augs=True)
    diffusion = GaussianDiffusion(10)
    weights = torch.full((IMAGE_PROMPT_CUTS,), 1 / IMAGE_PROMPT_CUTS)
    g = torch.Generator().manual_seed(0)
    guidance = Guidance(s, diffusion, [ClipGuide(tiny_models.clip, target, weights)], CutoutRandomness(g, g),
                        secondary=tiny_models.secondary)  # fmt: skip
    x = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    grad = guidance(x, torch.tensor([diffusion.scaled_timestep(5)]), 5)

    def cosine(x):
        with torch.no_grad():
            image = guidance._denoised(x, 5)[1].add(1).div(2)
            size = input_size(tiny_models.clip)
            e = tiny_models.clip.encode_image(clip_normalize(torch.nn.functional.interpolate(image, size=size)))
            return torch.nn.functional.cosine_similarity(e.float(), target.mean(0, keepdim=True)).item()

    assert cosine(x + 0.05 * grad / grad.abs().max()) > cosine(x)


def test_an_image_prompt_changes_the_run_and_its_weight_joins_the_prompts(tiny_models):
    s = validate_settings(**SMALL, steps=3, skip_steps=1, display_rate=1, tokens=False)
    text = encode_texts(tiny_models.clip, TEXTS[:1])
    image = encode_image_prompt(tiny_models.clip, png((0, 0, 220)), DEFAULT_CLIP_MODEL, 64, 64)
    plain = [r.image for r in sample_image(s, text, [1.0], tiny_models, seed=2)]
    both = torch.cat([text, image])
    weights = [1.0] + [1.0 / IMAGE_PROMPT_CUTS] * IMAGE_PROMPT_CUTS
    with_image = [r.image for r in sample_image(s, both, weights, tiny_models, seed=2)]
    assert not torch.allclose(plain[-1], with_image[-1])
    with pytest.raises(SettingsError, match="must not sum to 0"):
        validate_settings(text_prompts=["sea"], image_prompts=[data_uri(png((0, 0, 1))) + ":-1"], tokens=False)


@pytest.mark.slow  # real-size weights: an RN50 file written and loaded
def test_the_encoder_hands_schedules_and_image_prompts_to_the_sampler(tmp_path):
    from docarray import Document, DocumentArray
    from make_test_weights import make

    from disco_service import wire
    from executors.diffusion_sampler import _prompts_at
    from executors.prompt_encoder import PromptEncoder

    make(tmp_path, ["open_clip_rn50_openai.safetensors"])
    encoder = PromptEncoder(model_dir=str(tmp_path), use_gpu="0")
    image = data_uri(png((0, 120, 0))) + ":2"
    settings = validate_settings(text_prompts=[f"sea:{HALF}", "sky"], image_prompts=[image], seed=1)
    doc = Document(tags=wire.request_tags(settings, 0))
    encoder.encode(DocumentArray([doc]))
    rows = 2 + IMAGE_PROMPT_CUTS
    assert doc.embedding.shape == (rows, 1024) and doc.tags["prompt_sets"] == [[0, rows]]
    weights = doc.tags[wire.PROMPT_WEIGHTS_TAG]
    assert weights[:2] == [{"weight": HALF, "clip_models": None}, 1.0]
    assert weights[2:] == pytest.approx([2 / IMAGE_PROMPT_CUTS] * IMAGE_PROMPT_CUTS)
    sent = Document.from_protobuf(doc.to_protobuf())  # as the sampler gets it: the tags through a Struct
    embeds, prompts = _prompts_at(sent, settings.clip_models)(0)
    assert embeds[DEFAULT_CLIP_MODEL].shape == (rows, 1024)
    assert prompts[0].schedule == parse_prompt(f"sea:{HALF}").schedule and prompts[1] == 1.0


def test_the_command_line_takes_the_schedules_and_image_prompts(tmp_path):
    from disco_service.client import cli

    got = {}
    args = [
        *("--text_prompts", f"sea:{HALF}", "sky"),
        *("--clip_models", DEFAULT_CLIP_MODEL, VIT),
        *("--clip_models_schedules", f"{VIT}=[False]*500+[True]*500"),
        *("--use_secondary_model", "[True]*500+[False]*500", "--clamp_grad", "false"),
        *("--image_prompts", "a.png:2", "b.png", "--truncate_overlength_prompt", "true"),
    ]
    assert cli.main(args, generate=lambda **kw: got.update(kw) or []) == 0
    s = validate_settings({k: v for k, v in got.items() if k in SETTING_NAMES}, tokens=False)
    assert s.clip_models_schedules == {VIT: "[False]*500+[True]*500"} and s.clamp_grad is False
    assert s.use_secondary_model == "[True]*500+[False]*500" and s.truncate_overlength_prompt is True
    assert s.image_prompts == ["a.png:2", "b.png"] and s.text_prompts == [f"sea:{HALF}", "sky"]
