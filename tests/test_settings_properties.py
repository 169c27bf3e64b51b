"""Properties of ``validate_settings`` over generated values: any value of a numeric setting, or
any prompt weight, gives valid settings or a ``SettingsError`` naming that setting (numbers that
are inf, NaN or overflow a float: "not a finite number"), never another exception; validation
changes nothing it is given and validating its result again gives the same settings."""

from __future__ import annotations

import copy
import json
import math

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from disco.settings import SETTING_NAMES, Settings, SettingsError, kind, validate_settings

NUMERIC_KINDS = {"int", "float", "number_or_schedule", "int_or_schedule", "numbers", "size"}
NUMERIC = [name for name in SETTING_NAMES if kind(name) in NUMERIC_KINDS]
KEYFRAME = ["angle", "zoom", "translation_x", "translation_y"]
# quick, valid, and loose enough that a value of one setting breaks no rule of another
BASE = dict(
    text_prompts=["a lighthouse"],
    width_height=[64, 64],
    steps=4,
    skip_steps=0,
    n_batches=1,
    cut_overview="[1]*1000",
    cut_innercut="[1]*1000",
    cutn_batches=1,
    max_frames=10,
)
NOT_FINITE = [math.inf, -math.inf, math.nan, 10**400, -(10**400)]
NOT_FINITE_BY_NAME = {
    "inf": math.inf,
    "-inf": -math.inf,
    "nan": math.nan,
    "json 1e400": json.loads("1e400"),
    "json -1e400": json.loads("-1e400"),
    "10**400": 10**400,
}
NUMBER_TEXTS = [
    "1e400",
    "-1e400",
    "nan",
    "inf",
    "-Infinity",
    "1e308",
    "[1e400]*1000",
    "[nan]*1000",
    "[inf]*500+[1]*500",
    "[1]*99999999999999999999",
    "[1]*" + "9" * 5000,
    "0: (1e400)",
    "0: (10**400)",
    "0: (exp(1000))",
    "0: (1), 5: (nan)",
    "1e400%",
]
scalars = st.one_of(
    st.integers(min_value=-(10**6), max_value=10**6),
    st.integers(min_value=0, max_value=1000).map(lambda k: 10**k),
    st.floats(allow_nan=True, allow_infinity=True),
    st.floats(min_value=-1e6, max_value=1e6),
    st.sampled_from(NOT_FINITE),
    st.sampled_from(NUMBER_TEXTS),
    st.from_regex(r"\[-?\d{1,400}(\.\d*)?(e[-+]?\d{1,4})?\]\*1000", fullmatch=True),
    st.text(max_size=20),
    st.booleans(),
    st.none(),
)
values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=3), inner, max_size=3),
    max_leaves=8,
)
PROPERTY = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def validated_or_refused(name: str, value: object) -> Settings | None:
    """Validate BASE with ``name`` set to ``value``; a refusal must name ``name``."""
    try:
        return validate_settings(BASE, tokens=False, **{name: value})
    except SettingsError as exc:
        assert exc.parameter == name, f"{name}={value!r} was refused naming {exc.parameter}: {exc}"
        return None


@pytest.mark.parametrize("name", NUMERIC + KEYFRAME)
@PROPERTY
@given(value=values)
def test_any_value_of_a_numeric_setting_is_valid_or_refused_by_name(name, value):
    validated_or_refused(name, value)


@pytest.mark.parametrize("name", NUMERIC + KEYFRAME)
@pytest.mark.parametrize("value", list(NOT_FINITE_BY_NAME))
def test_numbers_that_are_not_finite_are_refused_as_such_by_name(name, value):
    number = NOT_FINITE_BY_NAME[value]
    if isinstance(number, int) and kind(name) in ("int", "int_or_schedule", "size"):
        pytest.skip("a whole number is exact at any size: a whole-number setting refuses it by its range")
    with pytest.raises(SettingsError, match="not a finite number") as refused:
        validate_settings(BASE, tokens=False, **{name: [number, number] if kind(name) == "size" else number})
    assert refused.value.parameter == name


@pytest.mark.parametrize("name", ["init_scale", "cutn_batches", "clamp_max", "cut_ic_pow", "cut_icgray_p"])
@pytest.mark.parametrize("schedule", ["[1e400]*1000", "[nan]*1000", "[1]*500+[-inf]*500"])
def test_schedules_with_numbers_that_are_not_finite_are_refused_as_such(name, schedule):
    with pytest.raises(SettingsError, match=f"^{name}: .*not a finite number"):
        validate_settings(BASE, tokens=False, **{name: schedule})


@pytest.mark.parametrize("name", KEYFRAME)
@pytest.mark.parametrize(
    "text", ["1e400", "0: (1), 5: (-1e400)", "0: (10**400)", "0: (exp(t*1000))", "nan", "0: (1), 3: (-inf)"]
)
def test_key_frames_that_are_not_finite_are_refused_as_such(name, text):
    with pytest.raises(SettingsError, match=f"^{name}: .*not a finite number"):
        validate_settings(BASE, tokens=False, animation_mode="2D", **{name: text})


weights = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.sampled_from(["1e400", "-1e400", "nan", "inf", "-inf", "1e308", "9" * 400, "0", "-0.0", "1e-400"]),
    st.from_regex(r"-?\d{1,5}(\.\d{0,5})?(e[-+]?\d{1,4})?", fullmatch=True),
)


@PROPERTY
@given(first=weights, second=st.none() | weights)
def test_any_prompt_weight_gives_valid_prompts_or_names_text_prompts(first, second):
    prompts = [f"a lighthouse:{first}"] + ([f"the sea:{second}"] if second is not None else [])
    validated_or_refused("text_prompts", prompts)


@pytest.mark.parametrize("weight", ["1e400", "-1e400", "nan", "inf", "Infinity"])
def test_a_prompt_weight_that_is_not_finite_is_refused_as_such(weight):
    with pytest.raises(SettingsError, match="^text_prompts: the prompt weight .* is not a finite number"):
        validate_settings(BASE, tokens=False, text_prompts=[f"a lighthouse:{weight}"])
    with pytest.raises(SettingsError, match="^text_prompts: .*not a finite number"):
        validate_settings(BASE, tokens=False, text_prompts={"0": ["a"], "4": [f"b:{weight}"]})


def test_prompt_weights_whose_sum_overflows_are_not_a_finite_number():
    with pytest.raises(SettingsError, match="^text_prompts: .*not a finite number"):
        validate_settings(BASE, tokens=False, text_prompts=["a:1e308", "b:1e308"])


def test_frame_numbers_of_a_prompt_schedule_that_are_not_finite_are_refused_as_such():
    for key in (math.inf, math.nan):
        with pytest.raises(SettingsError, match="^text_prompts: .*not a finite number"):
            validate_settings(BASE, tokens=False, text_prompts={key: ["a"]})


WEIGHTS = {"a lighthouse": 1, "the sea:2": 2, "dawn:-0.5": -0.5}
valid_inputs = st.fixed_dictionaries(
    {
        "text_prompts": st.one_of(
            st.lists(st.sampled_from(["a lighthouse", "the sea:2", "dawn:-0.5"]), min_size=1, max_size=3).filter(
                lambda p: sum(WEIGHTS[x] for x in p) > 0  # valid: their weights' sum is positive
            ),
            st.dictionaries(st.sampled_from(["0", "3", 5, 7.0]), st.just(["a lighthouse"]), min_size=1),
        ),
        "width_height": st.sampled_from([[64, 64], (128, 64), [64.0, 192]]),
        "steps": st.integers(min_value=2, max_value=20),
        "init_scale": st.sampled_from([0, 1000, 2.5, "[5]*500+[0]*500"]),
        "cutn_batches": st.sampled_from([1, 2.0, "[1]*1000"]),
        "cut_ic_pow": st.sampled_from([1, 0.5, "[1]*1000"]),
        "transformation_percent": st.sampled_from([0.5, [0.1, 0.9], (0.2,)]),
        "perlin_mode": st.sampled_from(["Mixed", "grey", "color"]),
        "animation_mode": st.sampled_from(["none", "2d", "None"]),
        "angle": st.sampled_from([0, 1.5, "0: (0), 4: (t/2)"]),
        "n_batches": st.integers(min_value=1, max_value=3),
        "seed": st.none() | st.integers(min_value=0, max_value=2**32 - 1) | st.just(7.0),
        "batch_name": st.sampled_from(["", None, "Leuchtturm 灯台"]),
        "clip_models": st.sampled_from(["rn50::openai", ["RN50::openai"]]),
        "use_gpu": st.sampled_from([True, 0, 1.0]),
        "init_image": st.sampled_from([None, "", b"bytes"]),
    }
).map(lambda d: {**BASE, **d, "skip_steps": 1, "max_frames": 10})


@PROPERTY
@given(data=valid_inputs)
def test_validation_changes_nothing_it_is_given_and_is_idempotent(data):
    given_copy = copy.deepcopy(data)
    once = validate_settings(data, tokens=False)
    assert data == given_copy  # the mapping and the lists inside it are as they were
    as_settings = copy.deepcopy(once)
    twice = validate_settings(once, tokens=False)
    assert once == as_settings  # Settings given are not changed either
    assert twice == once and twice is not once
    assert twice.text_prompts is not once.text_prompts and twice.width_height is not once.width_height
