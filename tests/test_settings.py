"""Settings: the seed API's defaults, validation that names the parameter, YAML, schedules."""

import base64
import dataclasses
import inspect
import math

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from disco.cut_presets import CUT_SCHEDULE_GROUPS, CUT_SETTINGS
from disco.settings import (
    DEFAULT_LIMITS,
    LIGHTHOUSE,
    SETTING_NAMES,
    Limits,
    Settings,
    SettingsError,
    default,
    kind,
    parse_schedule,
    read_setting,
    settings_from_yaml,
    validate_settings,
)
from disco.settings.coercion import KIND_READERS, READERS
from disco.settings.prompt_text import parse_image_prompt
from disco_service import wire

# a 1x1 PNG as a data URI: an image prompt as the client sends it
PIXEL_URI = (
    "data:image/png;base64,"
    + base64.b64encode(
        bytes.fromhex(
            "89504e470d0a1a0a0000000d4948445200000001000000010802000000907753de0000000c4944415478da6360f8cf000001"
            "0101005d1bdc740000000049454e44ae426082"
        )
    ).decode()
)

SEED_DEFAULTS = {
    "text_prompts": [LIGHTHOUSE, "yellow color scheme"],
    "init_image": None,
    "width_height": [1280, 768],
    "skip_steps": 10,
    "steps": 250,
    "init_scale": 1000,
    "clip_guidance_scale": 5000,
    "tv_scale": 0,
    "range_scale": 150,
    "sat_scale": 0,
    "perlin_init": False,
    "perlin_mode": "mixed",
    "seed": None,
    "display_rate": 10,
    "n_batches": 4,
    "batch_name": "",
    "use_gpu": True,
    "output_dir": "disco_diffusion_clip_rn50_out",
}


def test_seed_parameters_and_defaults_in_order():
    names = [f for f in inspect.signature(Settings).parameters]
    assert names[: len(SEED_DEFAULTS)] == list(SEED_DEFAULTS)
    s = validate_settings()
    for name, value in SEED_DEFAULTS.items():
        assert getattr(s, name) == value, name


def test_disco_extras_defaults():
    s = Settings()
    assert (s.cutn_batches, s.diffusion_sampling_mode, s.eta, s.clamp_grad, s.clamp_max) == (4, "ddim", 0.8, True, 0.05)
    # PaddleHub's module's defaults; cut_schedules_group "auto" swaps in a KaliYuga model's own at validation
    assert (s.cut_overview, s.cut_innercut, s.cut_icgray_p, s.cut_ic_pow, s.cut_schedules_group) == (
        "[12]*400+[4]*600", "[4]*400+[12]*600", "[0.2]*400+[0]*600", 1, "auto",
    )  # fmt: skip
    v = validate_settings(tokens=False)
    assert (v.cut_overview, v.cut_innercut, v.cut_icgray_p, v.cut_ic_pow) == (
        "[12]*400+[4]*600",
        "[4]*400+[12]*600",
        "[0.2]*400+[0]*600",
        1,
    )
    assert s.diffusion_model == "512x512_diffusion_uncond_finetune_008100" and s.use_secondary_model


@pytest.mark.parametrize(
    "name,value,fragment",
    [
        ("width_height", [100, 64], "multiples of 64"),
        ("width_height", [64], "[width, height]"),
        ("width_height", [64 * 64, 64 * 64], "DISCO_MAX_PIXELS"),
        ("steps", 0, "[1, 1000]"),
        ("steps", 2.5, "integer"),
        ("steps", True, "integer"),
        ("skip_steps", 250, "smaller than steps"),
        ("skip_steps", -1, "skip_steps"),
        ("display_rate", 0, "display_rate"),
        ("clip_guidance_scale", math.inf, "finite"),
        ("tv_scale", "high", "number"),
        ("perlin_mode", "plaid", "['mixed', 'colored', 'gray']"),
        ("diffusion_sampling_mode", "euler", "['ddim', 'plms']"),
        ("eta", 1.5, "eta"),
        ("n_batches", 0, "n_batches"),
        ("seed", -1, "seed"),
        ("text_prompts", [], "non-empty"),
        ("text_prompts", ["ok", "  "], "non-empty"),
        ("batch_name", "../../etc", "batch_name"),
        ("batch_name", "a/b", "batch_name"),
        ("cut_overview", "[12]*400+[4]*500", "exactly 1000"),
        ("cut_overview", "__import__('os')", "cannot parse"),
        ("cut_innercut", "[-1]*1000", "whole numbers"),
        ("cut_icgray_p", "[2]*1000", "[0, 1]"),
        ("cut_ic_pow", 0, "> 0"),
        ("diffusion_model", "sd-v1", "diffusion_model"),
        ("batch_size", 9, "batch_size"),
        ("use_gpu", "yes", "true or false"),
    ],
)
def test_bad_values_are_refused_naming_the_parameter(name, value, fragment):
    with pytest.raises(SettingsError) as err:
        validate_settings(**{name: value})
    assert err.value.parameter == name
    assert str(err.value).startswith(f"{name}:")
    assert fragment in str(err.value)


def test_unknown_setting_suggests_the_close_name():
    with pytest.raises(SettingsError, match="did you mean 'clip_guidance_scale'"):
        validate_settings(clip_guidance_scal=1)


def test_grpc_floats_are_read_back_as_their_types():
    s = validate_settings(steps=250.0, width_height=[1280.0, 768.0], seed=42.0, perlin_init=0.0, use_gpu=1)
    assert (s.steps, s.width_height, s.seed, s.perlin_init, s.use_gpu) == (250, [1280, 768], 42, False, True)
    assert isinstance(s.steps, int) and isinstance(s.seed, int)


def test_perlin_mode_aliases():
    assert validate_settings(perlin_mode="color").perlin_mode == "colored"
    assert validate_settings(perlin_mode="mix").perlin_mode == "mixed"


def test_yaml_round_trip(tmp_path):
    s = validate_settings(text_prompts=["a cat:2", "dog:-1"], steps=50, seed=7, cut_ic_pow="[1]*500+[2]*500")
    path = tmp_path / "settings.yml"
    s.to_yaml(path)
    assert settings_from_yaml(path) == s
    assert settings_from_yaml(s.to_yaml()) == s


def test_yaml_with_a_bad_value_names_it():
    with pytest.raises(SettingsError, match="^steps:"):
        settings_from_yaml("steps: -4\n")


def test_schedules():
    assert parse_schedule("x", "[12]*400+[4]*600")[399:401] == [12, 4]
    assert parse_schedule("x", "[1,2]*500")[:4] == [1, 2, 1, 2]
    assert parse_schedule("x", 3) == [3.0] * 1000
    assert parse_schedule("x", [0.5] * 1000)[-1] == 0.5
    for bad in ("[1]*999", "[1]*1001", "[a]*1000", "1000*[1]", "[1]*400+", "eval('1')"):
        with pytest.raises(SettingsError, match="^x:"):
            parse_schedule("x", bad)


# ----- property test: any input validates or raises SettingsError, never anything else -----


_ANY = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=30)
    | st.binary(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=8,
)
# plausible values too, so that inputs also get past the first checks and into the later ones
_PLAUSIBLE = {
    "text_prompts": st.lists(st.sampled_from(["a cat", "sea:0.5", "x:-1", "http://a.b/c:2", ":", "a:b:c"]), max_size=3),
    "width_height": st.lists(st.sampled_from([0, 64, 100, 128, 4096, -64]), min_size=0, max_size=3),
    "steps": st.integers(-2, 1200),
    "skip_steps": st.integers(-2, 1200),
    "display_rate": st.integers(-1, 20),
    "n_batches": st.integers(-1, 20),
    "perlin_mode": st.sampled_from(["mixed", "colored", "gray", "grey", "MIXED", "nope"]),
    "cut_overview": st.sampled_from(
        ["[12]*400+[4]*600", "[1]*1000", "[0]*1000", "[1]*999", "__import__('os')", "[a]*3"]
    ),
    "cut_icgray_p": st.sampled_from(["[0.2]*400+[0]*600", "[2]*1000", "[-0.1]*1000", "1e999"]),
    "cut_ic_pow": st.one_of(st.floats(), st.sampled_from(["[1]*1000", "[0]*1000", "x"])),
    "batch_name": st.sampled_from(["", "ok name", "../up", "a/b", ".hidden", "x" * 101, "é"]),
    "diffusion_model": st.sampled_from(["512x512_diffusion_uncond_finetune_008100", "256x256_diffusion_uncond", "x"]),
    "seed": st.one_of(st.none(), st.integers(-1, 2**33)),
    "clip_guidance_scale": st.sampled_from([5000, "[5000]*500+[2000]*500", "[1]*999", "[nan]*1000", "5000", "[x]"]),
    "cutn_batches": st.sampled_from([4, 4.0, "[4]*500+[2]*500", "[0]*1000", "[65]*1000", "[2.5]*1000"]),
    "clamp_max": st.sampled_from([0.05, 0, "[0.05]*1000", "[0]*1000", "[-1]*1000"]),
    "transformation_percent": st.lists(st.floats(-0.5, 1.5), max_size=3),
}
_VALUES = st.one_of(
    st.dictionaries(st.sampled_from(SETTING_NAMES), _ANY, max_size=6),
    st.fixed_dictionaries({}, optional={k: v | _ANY for k, v in _PLAUSIBLE.items()}),
    st.dictionaries(st.text(max_size=12), _ANY, max_size=3),
)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_VALUES)
@example({"clip_models_schedules": []})  # was {} here and None after the wire: one form for "none"
@example({"init_image": "0", "image_prompts": ["0:2"]})  # paths: the client sends their bytes instead
def test_any_input_validates_or_raises_settings_error(values):
    try:
        s = validate_settings(values)
    except SettingsError as exc:
        assert exc.parameter and str(exc).startswith(f"{exc.parameter}: ")
        return
    # what validates is usable: as the client sends it (files as bytes: the init image beside the
    # tags, image prompts as data URIs) it survives the trip to the server (as image 0 of the run)
    # and validates there again
    weights = [parse_image_prompt(p).weight for p in s.image_prompts]
    sent = validate_settings(
        dataclasses.replace(s, init_image=None, image_prompts=[f"{PIXEL_URI}:{w}" for w in weights]).to_dict()
    )
    assert wire.settings_from_request({**wire.settings_to_tags(sent), "batch_index": 0}) == sent
    assert wire.settings_from_tags(wire.settings_to_tags(sent)) == sent


@settings(max_examples=100, deadline=None)
@given(_ANY)
def test_anything_that_is_not_a_mapping_is_refused_cleanly(value):
    if isinstance(value, dict) or value is None:  # None means "all defaults"
        return
    with pytest.raises(SettingsError):
        validate_settings(value)


def test_prompts_are_capped_per_request_and_per_frame_of_a_schedule():
    tiny = dict(width_height=[64, 64], steps=2, skip_steps=0, tokens=False)
    assert len(validate_settings(text_prompts=[f"p{i}" for i in range(100)], **tiny).text_prompts) == 100
    with pytest.raises(SettingsError, match=r"^text_prompts: at most 100 prompts are allowed per request, got 101"):
        validate_settings(text_prompts=[f"p{i}" for i in range(101)], **tiny)
    per_frame = "^text_prompts: at most 100 prompts are allowed per frame of a schedule, got 10000 at frame 7$"
    with pytest.raises(SettingsError, match=per_frame):
        validate_settings(text_prompts={"0": ["a"], "7": ["b"] * 10_000}, **tiny)
    many_frames = {str(frame): [f"p{frame}"] for frame in range(101)}
    with pytest.raises(SettingsError, match="^text_prompts: .* per request, got 101 over the 101 frames of the sch"):
        validate_settings(text_prompts=many_frames, **tiny)
    few = Limits(max_prompts=2)
    with pytest.raises(SettingsError, match="at most 2 prompts"):
        validate_settings(text_prompts=["a", "b", "c"], limits=few, **tiny)
    assert validate_settings(text_prompts=["a", "b"], limits=few, **tiny).text_prompts == ["a", "b"]


def test_every_setting_is_read_by_the_reader_of_its_kind_or_its_own():
    defaults = validate_settings(tokens=False).to_dict()
    for name in SETTING_NAMES:
        assert READERS.get(name) or kind(name) in KIND_READERS, f"{name} has no reader"
        read = read_setting(name, default(name), DEFAULT_LIMITS)
        assert read == defaults[name], name
        if name in CUT_SETTINGS:  # PaddleHub's module's defaults: the "default" group of cut_schedules_group
            assert read == CUT_SCHEDULE_GROUPS["default"][name], name
    assert read_setting("steps", 12.0, DEFAULT_LIMITS) == 12  # a whole float, as gRPC's Struct sends it
    with pytest.raises(SettingsError, match=r"^steps: must be in \[1, 1000\], got 1001$"):
        read_setting("steps", 1001, DEFAULT_LIMITS)  # the bounds come from the field table
