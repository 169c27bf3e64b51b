"""Every file the command line reads, of any content, and every path a user types.

``client.py`` is run in-process (``cli.main``). A ``--settings`` file, an init image or a video of
any content (binary, empty, huge, another kind) ends in a clean refusal (``error: ...``, exit 2,
no traceback) or is taken; ``~`` in any path is the home folder, as in a shell.
"""

import io
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from disco_service.client import api, cli
from disco_service.client.user_files import MAX_IMAGE_BYTES

QUICK = dict(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
SMALL = ["--text_prompts", "a lighthouse", "--width_height", "64", "64", "--steps", "3", "--skip_steps", "0"]
YAML_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=10), inner, max_size=3),
    max_leaves=10,
)
CONTENT = st.one_of(
    st.binary(max_size=300),
    st.text(max_size=200).map(str.encode),
    YAML_VALUES.map(lambda v: yaml.safe_dump(v).encode()),
    st.sampled_from([b"", b"\n\n", b"null", b"[]", b"a: &x [1]\nb: *x\n", b"steps: 2020-13-45\n", b"{" * 5000]),
)


class Reached(Exception):
    """The run went past reading its files: they were taken."""


def picture(kind: str = "JPEG") -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (16, 16), (200, 120, 10)).save(buffer, format=kind)
    return buffer.getvalue()


def run(argv: list[str], capsys) -> tuple[int | None, dict, str]:
    """``cli.main(argv)`` with a generate that keeps what it got: (exit code, values, stderr)."""
    got: dict = {}

    def generate(**values):
        got.update(values)
        return []

    code = cli.main(argv, generate=generate)
    return code, got, capsys.readouterr().err


def assert_clean_refusal(err: str, start: str) -> None:
    assert err.startswith(start), err
    assert "Traceback" not in err and len(err.splitlines()) == 1, err


@given(content=CONTENT, suffix=st.sampled_from([".yml", ".json", ".png", ".jpg", ""]))
@settings(**QUICK)
def test_a_settings_file_of_any_content_is_taken_or_refused_cleanly(tmp_path_factory, capsys, content, suffix):
    path = tmp_path_factory.mktemp("settings") / f"file{suffix}"
    path.write_bytes(content)
    code, got, err = run(["--settings", str(path), "--no_progress"], capsys)
    if code == 0:
        assert all(isinstance(name, str) for name in got)  # setting names and values, for the run to judge
    else:
        assert code == 2
        assert_clean_refusal(err, f"error: --settings {path}: ")


def test_a_photo_given_as_settings_is_refused_naming_what_it_is(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    Path("photo.jpg").write_bytes(picture())
    code, _, err = run(["--settings", "photo.jpg"], capsys)
    assert code == 2
    assert_clean_refusal(err, "error: --settings photo.jpg: not a YAML/JSON settings file (it is a JPEG picture")
    Path("empty.yml").write_bytes(b"")
    assert run(["--settings", "empty.yml"], capsys)[2].startswith("error: --settings empty.yml: not a YAML/JSON")
    Path("huge.yml").write_bytes(b"steps: 3\n" + b"#" * cli.MAX_SETTINGS_TEXT_BYTES)
    assert "(over 1024 KB)" in run(["--settings", "huge.yml"], capsys)[2]
    Path("folder").mkdir()
    assert run(["--settings", "folder"], capsys)[2].startswith("error: --settings folder: cannot read it")
    Path("fake.png").write_bytes(picture("PNG"))
    assert "not a PNG this project wrote" in run(["--settings", "fake.png"], capsys)[2]


@pytest.fixture
def stop_before_the_flow(monkeypatch):
    """The run stops with ``Reached`` where it would call the Flow: everything before it is real."""

    def reached(*args, **kwargs):
        raise Reached

    monkeypatch.setattr(api, "run_coroutine", reached)
    monkeypatch.setattr(api, "download_models", reached)
    monkeypatch.setattr(api, "local_flow", reached)


@given(content=st.one_of(st.binary(max_size=200), st.just(b""), st.just(picture()), st.just(picture("GIF"))))
@settings(**QUICK)
def test_an_init_image_of_any_content_is_taken_or_refused_cleanly(
    tmp_path_factory, capsys, stop_before_the_flow, content
):
    folder = tmp_path_factory.mktemp("init")
    path = folder / "start.jpg"
    path.write_bytes(content)
    argv = [*SMALL, "--init_image", str(path), "--host", "grpc://127.0.0.1:9", "--output_dir", str(folder / "out")]
    try:
        code = cli.main([*argv, "--no_progress"])
    except Reached:
        return  # a picture: taken
    assert code == 2
    assert_clean_refusal(capsys.readouterr().err, "error: init_image: ")


@given(content=st.one_of(st.binary(max_size=200), st.just(b""), st.just(picture())))
@settings(**dict(QUICK, max_examples=25))
def test_a_video_of_any_content_is_taken_or_refused_cleanly(tmp_path_factory, capsys, stop_before_the_flow, content):
    folder = tmp_path_factory.mktemp("video")
    path = folder / "clip.mp4"
    path.write_bytes(content)
    argv = [*SMALL, "--animation_mode", "Video Input", "--video_init_path", str(path), "--max_frames", "2"]
    try:
        code = cli.main([*argv, "--host", "grpc://127.0.0.1:9", "--output_dir", str(folder / "out"), "--no_progress"])
    except Reached:
        return
    assert code == 2
    assert_clean_refusal(capsys.readouterr().err, "error: video_init_path: ")


def test_files_that_cannot_be_read_whole_are_refused_cleanly(tmp_path, capsys, stop_before_the_flow):
    out = ["--host", "grpc://127.0.0.1:9", "--output_dir", str(tmp_path / "out"), "--no_progress"]
    (tmp_path / "folder.jpg").mkdir()
    assert cli.main([*SMALL, "--init_image", str(tmp_path / "folder.jpg"), *out]) == 2
    assert_clean_refusal(capsys.readouterr().err, "error: init_image: it is a folder")
    huge = tmp_path / "huge.jpg"
    with huge.open("wb") as file:  # sparse: no disk used
        file.truncate(MAX_IMAGE_BYTES + 1)
    assert cli.main([*SMALL, "--init_image", str(huge), *out]) == 2
    assert_clean_refusal(capsys.readouterr().err, f"error: init_image: '{huge}' is 256 MB, more than the 256 MB")


def test_every_path_a_user_types_takes_tilde_as_the_home_folder(tmp_path, capsys, monkeypatch, stop_before_the_flow):
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.chdir(tmp_path)
    (home / "start.jpg").write_bytes(picture())
    (home / "run.yml").write_text("steps: 3\nskip_steps: 0\n")
    seen = {}

    def documents(settings, init_bytes, client_timeout_s=None):
        seen.update(settings=settings, init_bytes=init_bytes)
        raise Reached  # the run's request, as it would go to the Flow

    monkeypatch.setattr(api, "make_documents", documents)
    argv = [*SMALL, "--settings", "~/run.yml", "--init_image", "~/start.jpg", "--output_dir=~/out"]
    with pytest.raises(Reached):
        cli.main([*argv, "--host", "grpc://127.0.0.1:9", "--no_progress"])
    assert seen["settings"].output_dir == str(home / "out")  # not a folder named ~ in the working folder
    assert seen["settings"].init_image == str(home / "start.jpg") and seen["init_bytes"] == picture()

    made = {}

    def generate(**values):
        made.update(values)
        return []

    assert cli.main(["--settings", "~/run.yml", "--no_progress"], generate=generate) == 0
    assert made["steps"] == 3


def test_results_are_saved_under_the_home_folder_for_output_dir_tilde(tmp_path, monkeypatch):
    from disco.settings import validate_settings
    from disco_service.client.user_files import expand_user_paths

    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    s = expand_user_paths(validate_settings(output_dir="~/out", init_image="~/a.png", tokens=False))
    assert s.output_dir == str(tmp_path / "home" / "out") and s.init_image == str(tmp_path / "home" / "a.png")
    kept = expand_user_paths(validate_settings(output_dir="rel/out", init_image="https://x/~a.png", tokens=False))
    assert kept.output_dir == "rel/out" and kept.init_image == "https://x/~a.png"


@pytest.mark.parametrize("text", ["{" * 5000, "[" * 5000, "a: " + "[" * 2000 + "]" * 2000])
def test_a_deeply_nested_settings_file_is_refused_by_libyaml_s_parser(tmp_path, capsys, text):
    """Deep nesting is refused by libyaml's depth limit; PyYAML's own parser took seconds for 5 KB of it."""
    path = tmp_path / "deep.yml"
    path.write_text(text)
    code, _, err = run(["--settings", str(path)], capsys)
    assert code == 2
    assert_clean_refusal(err, f"error: --settings {path}: not a YAML/JSON settings file (")
