"""The notebook's settings this project does not take: each refused with what to use instead, from
the Python API, a settings file (every unknown key at once) and the command line (one line)."""

import json

import pytest

from disco.settings import SETTING_NAMES, SettingsError, validate_settings
from disco.settings.notebook_names import CLIP_SWITCHES, NOTEBOOK_NAMES, advice
from disco_service.client import api, cli


def test_every_notebook_name_has_advice_of_its_own_and_none_is_a_setting():
    for name in [*NOTEBOOK_NAMES, *CLIP_SWITCHES, "width", "height"]:
        assert name not in SETTING_NAMES
        assert not advice(name).startswith("unknown setting"), name
    assert advice("set_seed").startswith("use seed")
    assert advice("width_height_for_512x512_models").startswith("use width_height")
    assert "video_init_steps" in SETTING_NAMES and "video_init_flow_warp" in SETTING_NAMES  # taken, not refused
    assert advice("ViTB32", {"ViTB32": True, "RN50": "true", "RN101": False}).endswith(
        "use clip_models ['ViT-B-32::openai', 'RN50::openai']"
    )
    assert advice("RN50_cc12m", {"RN50_cc12m": True, "ViTB32quickgelu_laion400m_e31": "true"}).endswith(
        "use clip_models ['ViT-B-32-quickgelu::laion400m_e31', 'RN50::cc12m']"
    )
    assert advice("width", {"width": 512, "height": 448}) == "use width_height [512, 448]"
    assert advice("clip_guidance_scal") == "unknown setting; did you mean 'clip_guidance_scale'?"


def test_the_api_refuses_a_notebook_name_with_what_to_use_before_anything_starts(monkeypatch):
    monkeypatch.setattr(api, "run_jobs", pytest.fail)  # refused before any request
    with pytest.raises(SettingsError, match=r"^set_seed: use seed \(a whole number"):
        api.generate_image(set_seed=5, host="grpc://127.0.0.1:9", progress=False)
    with pytest.raises(
        SettingsError, match=r"^ViTB32: the notebook's CLIP switches .* clip_models \['ViT-B-32::openai'\]"
    ):
        api.generate_image(ViTB32=True, host="grpc://127.0.0.1:9", progress=False)


def test_several_unknown_names_are_refused_at_once():
    with pytest.raises(SettingsError) as refused:
        validate_settings(intermediates_in_subfolder=True, interp_spline="Linear", width=512, height=448, stepz=3)
    message = str(refused.value)
    assert message.startswith(
        "intermediates_in_subfolder, interp_spline, width, height, stepz: 5 settings this project does not"
    )
    expected = [
        "intermediates_in_subfolder: not needed", "interp_spline: not offered",
        "width, height: use width_height [512, 448]",
        "stepz: unknown setting; did you mean 'steps'?",
    ]  # fmt: skip
    assert all(words in message for words in expected)


def run(argv, capsys):
    seen = []
    code = cli.main(argv, generate=lambda **values: seen.append(values) or [])
    return code, seen, capsys.readouterr().err


def test_a_settings_file_lists_all_its_unknown_keys_at_once(tmp_path, capsys):
    path = tmp_path / "settings.txt"
    path.write_text(json.dumps({"text_prompts": ["a lighthouse"], "set_seed": 3, "useCPU": True, "ViTB16": True}))
    code, seen, err = run(["--settings", str(path), "--download"], capsys)
    assert code == 2 and seen == [] and len(err.strip().splitlines()) == 1
    assert err.startswith("error: set_seed, useCPU, ViTB16: 3 settings this project does not take: set_seed: use seed")
    assert "ViTB16: the notebook's CLIP switches are one setting here: use clip_models ['ViT-B-16::openai']" in err


def test_the_command_line_answers_a_notebook_option_in_one_line(capsys):
    code, seen, err = run(["--set_seed", "5", "--steps", "4"], capsys)
    assert (code, seen) == (2, [])
    assert err == "error: --set_seed: use seed (a whole number; leave it out for a random seed, which is reported)\n"
    code, seen, err = run(["--ViTB32", "true", "--RN50", "true"], capsys)
    assert code == 2 and len(err.splitlines()) == 1 and "usage" not in err
    assert "--ViTB32, --RN50: the notebook's CLIP switches are one setting here: use clip_models" in err
    code, seen, err = run(["--foo", "1"], capsys)
    assert err == "error: --foo: unknown setting; did you mean 'fov'? (client.py --help lists them)\n"


def test_the_3d_settings_are_real_options(capsys):
    code, seen, err = run(["--animation_mode", "3D", "--translation_z", "0: (5)", "--turbo_mode", "true"], capsys)
    assert code == 0, err
    assert seen[0]["translation_z"] == "0: (5)" and seen[0]["turbo_mode"] is True and seen[0]["animation_mode"] == "3D"
