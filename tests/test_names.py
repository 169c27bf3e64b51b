"""batch_name in any script, end to end: validated, written into file names and PNG settings, listed by the page."""

import base64
import io
import json

import pytest
from conftest import TINY
from docarray import Document, DocumentArray
from PIL import Image

from disco.settings import BATCH_NAME_ALLOWED, SettingsError, validate_settings
from disco_service.outputs import png_settings, save_outputs
from disco_service.wire import settings_to_tags
from gateway.page_gateway import saved_images

NAMES = ["灯塔", "маяк", "phare été", "दीपस्तंभ", "Leuchtturm (2) v1.5_b-c", "console", "COM10", "con-test"]


@pytest.mark.parametrize("name", NAMES)
def test_letters_and_digits_of_any_script_are_accepted_as_they_are(name):
    assert validate_settings(batch_name=name).batch_name == name


@pytest.mark.parametrize(
    "name, problem",
    [
        ("a/b", "'/' is not allowed"),
        ("a\\b", "'\\\\' is not allowed"),
        ("../up", "'/' is not allowed"),
        ("a\x00b", "'\\x00' is not allowed"),
        ("line\nbreak", "'\\n' is not allowed"),
        ("a:b", "':' is not allowed"),
        ("wild*", "'*' is not allowed"),
        ("emoji 🗼", "'🗼' is not allowed"),
        ("ideographic\u3000space", "'\\u3000' is not allowed"),
        (".hidden", "starts with '.'"),
        ("CON", "is a Windows device name"),
        ("nul", "is a Windows device name"),
        ("Aux.txt", "is a Windows device name"),
        ("com1", "is a Windows device name"),
        ("LPT9.tar.gz", "is a Windows device name"),
        ("prn .png", "is a Windows device name"),
        ("x" * 101, "is 101 characters, 101 bytes of UTF-8 long"),
        ("灯" * 67, "is 67 characters, 201 bytes of UTF-8 long"),
        (5, "is not text but int"),
    ],
)
def test_anything_else_is_refused_saying_what_is_wrong_and_what_is_allowed(name, problem):
    with pytest.raises(SettingsError) as refused:
        validate_settings(batch_name=name)
    assert refused.value.parameter == "batch_name"
    assert str(refused.value).startswith(f"batch_name: {problem}; allowed: {BATCH_NAME_ALLOWED}; got ")


def png_uri(colour: tuple[int, int, int]) -> str:
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8), colour).save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def finished_docs(settings, n: int = 1) -> DocumentArray:
    """What the Flow sends back for a run: each image with its kept frames as chunks."""
    docs = DocumentArray()
    for i in range(n):
        tags = {**settings_to_tags(settings), "seed": settings.seed + i, "batch_index": i, "run_seed": settings.seed}
        doc = Document(uri=png_uri((200, 10 * i, 0)), tags=tags)
        doc.chunks = DocumentArray(Document(uri=png_uri((step * 50, 0, 0)), tags={"step": step}) for step in (1, 3))
        docs.append(doc)
    return docs


@pytest.mark.parametrize("name", ["灯塔", "маяк", "phare été"])
def test_a_name_in_any_script_reaches_the_files_their_settings_and_the_gallery(name, tmp_path):
    s = validate_settings(**TINY, batch_name=name, seed=42, n_batches=2, output_dir=str(tmp_path))
    docs = finished_docs(s, 2)
    written = save_outputs(docs, s)

    stem = f"reverse_diffusion-{name}-42"
    expected = {f"{stem}_{i}{end}" for i in (0, 1) for end in (".png", "-step0001.png", "-step0003.png", ".gif")}
    expected |= {f"{stem}_{i}-sprite.png" for i in (0, 1)}
    assert {p.name for p in written} == expected == {p.name for p in tmp_path.iterdir()}
    final = tmp_path / f"{stem}_1.png"
    assert png_settings(final.read_bytes())["batch_name"] == name
    assert png_settings(final.read_bytes())["seed"] == 43
    assert json.loads(Image.open(final).text["disco-diffusion"])["batch_name"] == name  # as other PNG readers see it

    listed = sorted(saved_images(tmp_path), key=lambda entry: entry["name"])
    assert [(e["name"], e["gif"], e["sprite"]) for e in listed] == [
        (f"{stem}_{i}.png", f"{stem}_{i}.gif", f"{stem}_{i}-sprite.png") for i in (0, 1)
    ]
    assert [e["settings"]["batch_name"] for e in listed] == [name, name]
    assert validate_settings(listed[0]["settings"]).batch_name == name  # the listed recipe remakes the image


def test_the_longest_name_fits_a_file_name_with_the_largest_seed_and_a_second_run(tmp_path):
    s = validate_settings(**TINY, batch_name="灯" * 66, seed=2**32 - 1, n_batches=1, output_dir=str(tmp_path))
    save_outputs(finished_docs(s), s)
    again = save_outputs(finished_docs(s), s)  # the name is taken: -run2
    longest = max((p.name for p in again), key=lambda n: len(n.encode()))
    assert longest == f"reverse_diffusion-{'灯' * 66}-4294967295-run2_0-step0001.png"
    assert len(longest.encode()) <= 255 and (tmp_path / longest).is_file()


@pytest.mark.parametrize("status", ["cancelled", "abandoned", "shutdown", "failed"])
def test_an_image_stopped_early_is_not_named_as_a_finished_one(status, tmp_path):
    s = validate_settings(**TINY, seed=42, n_batches=2, output_dir=str(tmp_path))
    docs = finished_docs(s, 2)
    docs[0].tags.update(status=status, steps_done=3)  # its last picture is of step 3 of 3
    docs[1].tags["status"] = "done"
    names = {p.name for p in save_outputs(docs, s)}
    assert f"reverse_diffusion-42_0-{status}.png" in names and "reverse_diffusion-42_0.png" not in names
    assert {"reverse_diffusion-42_0-step0003.png", "reverse_diffusion-42_1.png"} <= names  # the names as documented
    assert [e["name"] for e in saved_images(tmp_path)] == ["reverse_diffusion-42_1.png"]  # the gallery's finals


def test_the_longest_name_of_an_image_stopped_early_fits_a_file_name(tmp_path):
    s = validate_settings(**TINY, batch_name="灯" * 66, seed=2**32 - 1, n_batches=1, output_dir=str(tmp_path))
    save_outputs(finished_docs(s), s)
    docs = finished_docs(s)
    docs[0].tags["status"] = "abandoned"
    again = save_outputs(docs, s)  # -run2
    longest = max((p.name for p in again), key=lambda n: len(n.encode()))
    assert len(longest.encode()) <= 255 and (tmp_path / longest).is_file()
    assert (tmp_path / f"reverse_diffusion-{'灯' * 66}-4294967295-run2_0-abandoned.png").is_file()
