"""Cut schedules per diffusion model: the notebook's pixel-art/pulp and watercolor presets, applied
to the cut settings the user leaves out or at their defaults, and discoart's ``cut_schedules_group``."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from disco.cut_presets import CUT_SCHEDULE_GROUPS, CUT_SETTINGS, PAD_OR_PULP_MODELS, WATERCOLOR_MODELS
from disco.guidance import Schedules
from disco.models import DIFFUSION_MODELS
from disco.settings import SettingsError, count_schedule, parse_schedule, validate_settings

PIXEL_ART = "pixel_art_diffusion_hard_256"
PAD_OR_PULP = CUT_SCHEDULE_GROUPS["pad_or_pulp"]


def cuts(**values):
    s = validate_settings(tokens=False, **values)
    return {name: getattr(s, name) for name in CUT_SETTINGS}


def test_the_kaliyuga_models_get_the_notebooks_schedules():
    assert cuts(diffusion_model=PIXEL_ART) == PAD_OR_PULP
    assert cuts(diffusion_model="PulpSciFiDiffusion") == PAD_OR_PULP
    assert cuts(diffusion_model="watercolordiffusion_2") == CUT_SCHEDULE_GROUPS["watercolor"]
    assert cuts() == cuts(diffusion_model="256x256_diffusion_uncond") == CUT_SCHEDULE_GROUPS["default"]
    # the notebook's own values, e.g. its pad_or_pulp_cut_overview: 15 overview cuts first, none at the end
    overview = count_schedule("cut_overview", PAD_OR_PULP["cut_overview"])
    assert overview[0] == 15 and overview[-1] == 0 and len(overview) == 1000
    icgray = parse_schedule("cut_icgray_p", CUT_SCHEDULE_GROUPS["watercolor"]["cut_icgray_p"])
    assert icgray[0] == 0.7 and icgray[399] == 0.3 and icgray[400] == 0
    # every listed model exists here
    assert set(PAD_OR_PULP_MODELS + WATERCOLOR_MODELS) <= set(DIFFUSION_MODELS)


def test_a_cut_setting_given_wins_and_the_rest_still_come_from_the_preset():
    given_overview = cuts(diffusion_model=PIXEL_ART, cut_overview="[3]*1000")
    assert given_overview == {**PAD_OR_PULP, "cut_overview": "[3]*1000"}
    # generate_image keeps PaddleHub's module's defaults: a cut setting at its default yields to the
    # model's preset, and cut_schedules_group "default" keeps the module's schedules on any model
    default = CUT_SCHEDULE_GROUPS["default"]["cut_overview"]
    assert cuts(diffusion_model=PIXEL_ART, cut_overview=default)["cut_overview"] == PAD_OR_PULP["cut_overview"]
    assert cuts(diffusion_model=PIXEL_ART, cut_overview=default.replace("+", " + "), cut_ic_pow=1.0) == PAD_OR_PULP
    kept = cuts(diffusion_model=PIXEL_ART, cut_schedules_group="default", cut_ic_pow=2)
    assert kept == {**CUT_SCHEDULE_GROUPS["default"], "cut_ic_pow": 2}
    # validating the result again keeps it (the preset's values are then given)
    s = validate_settings(diffusion_model=PIXEL_ART, cut_innercut="[2]*1000", tokens=False)
    assert validate_settings(s, tokens=False) == s


def test_cut_schedules_group_picks_a_preset_by_name():
    assert cuts(cut_schedules_group="watercolor") == CUT_SCHEDULE_GROUPS["watercolor"]
    assert cuts(diffusion_model=PIXEL_ART, cut_schedules_group="default") == CUT_SCHEDULE_GROUPS["default"]
    assert cuts(cut_schedules_group="pad_or_pulp", cut_ic_pow=2)["cut_ic_pow"] == 2
    with pytest.raises(SettingsError) as refused:
        validate_settings(cut_schedules_group="han_fav", tokens=False)
    assert refused.value.parameter == "cut_schedules_group" and "pad_or_pulp" in str(refused.value)


@given(model=st.sampled_from(sorted(DIFFUSION_MODELS)), given_name=st.sampled_from((None, *CUT_SETTINGS)))
def test_the_guidance_reads_the_validated_schedules(model, given_name):
    values = {given_name: "[2]*1000" if given_name != "cut_icgray_p" else "[0.5]*1000"} if given_name else {}
    s = validate_settings(diffusion_model=model, tokens=False, **values)
    schedules = Schedules.from_settings(s)
    assert schedules.overview == count_schedule("cut_overview", s.cut_overview)
    assert schedules.ic_pow == parse_schedule("cut_ic_pow", s.cut_ic_pow)
    if given_name:
        assert getattr(s, given_name) == values[given_name]
