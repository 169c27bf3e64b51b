"""HTTP: REST calls over real HTTP, the settings every PNG carries, and the page's gallery of the output folder."""

import base64
import io
import json
import re
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from conftest import TINY
from PIL import Image

import client as disco_client
from disco.settings import SettingsError
from disco_service.outputs import embed_settings, png_settings, read_png_settings

ROOT = Path(__file__).resolve().parent.parent


def post(address: str, body: dict) -> dict:
    request = urllib.request.Request(f"{address}/post", json.dumps(body).encode(), {"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=120) as response:
            return json.load(response)
    except urllib.error.HTTPError as error:  # a refused request: 400, with the error in header.status
        assert error.code == 400
        return json.load(error)


def test_rest_refuses_bad_settings_by_name_and_reads_ones_and_zeros_as_numbers(served_http):
    bad = post(served_http, {"execEndpoint": "/generate", "data": [{"tags": {**TINY, "steps": 0}}]})
    assert "steps: must be in [1, 1000], got 0" in bad["header"]["status"]["description"]
    assert (bad["code"], bad["setting"]) == ("setting_invalid", "steps")
    # a 1 or 0 in JSON tags reaches the executors as true/false: taken as the number
    ok = post(
        served_http,
        {"execEndpoint": "/generate", "data": [{"tags": {**TINY, "n_batches": 1, "seed": 0, "sat_scale": 0}}]},
    )
    doc = ok["data"][0]
    assert doc["tags"]["status"] == "done" and doc["tags"]["seed"] == 0
    assert png_settings(base64.b64decode(doc["uri"].split(",")[1]))["n_batches"] == 1


def test_png_settings_round_trip_and_refusals(tmp_path):
    png = tmp_path / "plain.png"
    Image.new("RGB", (8, 8)).save(png)
    with pytest.raises(SettingsError, match="carries no Disco Diffusion settings"):
        read_png_settings(png)
    tagged = embed_settings(embed_settings(png.read_bytes(), {"seed": 1}), {"seed": 2, "text_prompts": ["é"]})
    (tmp_path / "tagged.png").write_bytes(tagged)
    assert read_png_settings(tmp_path / "tagged.png") == {"seed": 2, "text_prompts": ["é"]}
    assert Image.open(tmp_path / "tagged.png").size == (8, 8)  # still a valid PNG
    with pytest.raises(SettingsError, match="cannot read settings"):
        read_png_settings(tmp_path / "missing.png")


def test_every_png_written_remakes_its_image_with_client_settings(served_flow, tmp_path):
    out, again = tmp_path / "out", tmp_path / "again"
    da = disco_client.generate_image(
        text_prompts=["a lighthouse:1", "sea:-0.5"], seed=7, n_batches=2, output_dir=str(out), host=served_flow,
        progress=False, **TINY,
    )  # fmt: skip
    pngs = sorted(out.glob("*.png"))
    assert pngs and all(read_png_settings(p)["text_prompts"] == ["a lighthouse:1", "sea:-0.5"] for p in pngs)
    second = Path(da[1].tags["files"][0])
    assert read_png_settings(second)["seed"] == 8 and read_png_settings(second)["n_batches"] == 1
    code = disco_client.main(
        ["--settings", str(second), "--output_dir", str(again), "--host", served_flow, "--no_progress"]
    )
    assert code == 0
    remade = next(p for p in again.glob("*.png") if re.fullmatch(r"reverse_diffusion-8_0\.png", p.name))
    assert np.array_equal(np.asarray(Image.open(remade)), np.asarray(Image.open(second)))


def saved_png(directory: Path, name: str, settings: dict | None) -> bytes:
    """A small PNG written into ``directory``, carrying ``settings`` when given."""
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8), (200, 120, 40)).save(buffer, format="PNG")
    data = embed_settings(buffer.getvalue(), settings) if settings else buffer.getvalue()
    (directory / name).write_bytes(data)
    return data


def test_the_page_lists_and_serves_only_the_images_in_the_output_folder(served_http, served_output_dir):
    settings = {"text_prompts": ["a saved lighthouse:1"], "seed": 41, "width_height": [64, 64], "n_batches": 1}
    final = saved_png(served_output_dir, "reverse_diffusion-41_0.png", settings)
    saved_png(served_output_dir, "reverse_diffusion-41_0-sprite.png", settings)
    saved_png(served_output_dir, "reverse_diffusion-41_0-step0002.png", settings)  # a frame: not listed
    (served_output_dir / "reverse_diffusion-41_0.gif").write_bytes(b"GIF89a")
    saved_png(served_output_dir, "reverse_diffusion-99_0.png", None)  # no settings: not one of ours
    (served_output_dir / "notes.txt").write_text("private")

    with urllib.request.urlopen(f"{served_http}/ui/outputs", timeout=30) as response:
        listing = json.load(response)
    ours = [image for image in listing["images"] if image["name"].startswith("reverse_diffusion-41_0")]
    assert listing["folder"] is True and ours == [
        {"name": "reverse_diffusion-41_0.png", "settings": settings, "gif": "reverse_diffusion-41_0.gif",
         "sprite": "reverse_diffusion-41_0-sprite.png"}
    ]  # fmt: skip
    assert "reverse_diffusion-99_0.png" not in [image["name"] for image in listing["images"]]
    with urllib.request.urlopen(f"{served_http}/ui/outputs/reverse_diffusion-41_0.png", timeout=30) as response:
        assert response.read() == final
    for name in ("notes.txt", "..%2Fflow.yml", "%2E%2E%2F%2E%2E%2Fetc%2Fpasswd", "reverse_diffusion-missing.png"):
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(f"{served_http}/ui/outputs/{name}", timeout=30)
        assert refused.value.code == 404, name
        if "%" not in name:  # the names the route itself refuses (others match no route)
            assert json.load(refused.value)["code"] == "file_not_found", name


def test_the_page_settings_route_lists_every_setting_with_its_default_kind_and_the_wire_names(served_http):
    from dataclasses import asdict

    from disco.settings import SETTING_NAMES, Settings, kind
    from disco_service import wire

    with urllib.request.urlopen(f"{served_http}/ui/settings.json", timeout=30) as response:
        assert response.headers["content-type"] == "application/json"
        page = json.load(response)
    rows = page["settings"]
    assert [row["name"] for row in rows] == list(SETTING_NAMES)
    from disco_service.server.estimates import CPU_DEFAULTS

    assert page["device"] == "cpu"  # no GPU here: the form starts from small settings
    defaults = {**asdict(Settings()), **CPU_DEFAULTS}
    for row in rows:
        assert row["default"] == defaults[row["name"]], row["name"]
        assert row["kind"] == kind(row["name"]), row["name"]
        assert row["meaning"], row["name"]
    by_name = {row["name"]: row for row in rows}
    assert by_name["n_batches"]["default"] == CPU_DEFAULTS["n_batches"] and by_name["seed"]["default"] is None
    assert (by_name["steps"]["low"], by_name["steps"]["high"]) == (1, 1000)
    assert by_name["perlin_mode"]["choices"] == ["mixed", "colored", "gray"]
    assert "4194304 pixels" in by_name["width_height"]["allowed"]  # this server's cap (the default)
    assert page["job_state_executor"] == wire.JOB_STATE_EXECUTOR == "renderer"
    assert page["request_tags"] == ["batch_index", "run_seed", "client_timeout_s", "start_frame"]
    assert page["max_seed"] == 2**32 - 1
    assert page["job_statuses"] == [
        "queued",
        "waiting",
        "running",
        "done",
        "cancelled",
        "abandoned",
        "shutdown",
        "failed",
    ]


def test_the_page_settings_word_this_servers_limits(monkeypatch):
    from gateway.page_gateway import page_settings

    monkeypatch.setenv("DISCO_MAX_PIXELS", str(512 * 512))
    monkeypatch.setenv("DISCO_MAX_PIXEL_STEPS", str(512 * 512 * 100))
    by_name = {row["name"]: row for row in page_settings()["settings"]}
    assert by_name["width_height"]["allowed"] == "multiples of 64, at most 262144 pixels (width x height)"
    assert by_name["steps"]["allowed"] == (
        "1 to 1000, and width x height x (steps - skip_steps) at most 26214400 pixel-steps"
    )
    monkeypatch.delenv("DISCO_MAX_PIXEL_STEPS")
    assert {row["name"]: row for row in page_settings()["settings"]}["steps"]["allowed"] == "1 to 1000"


def test_the_page_settings_offer_every_model_with_what_it_is_for():
    from disco.models import DIFFUSION_MODELS
    from gateway.page_gateway import page_settings

    row = {row["name"]: row for row in page_settings()["settings"]}["diffusion_model"]
    assert row["choices"] == list(DIFFUSION_MODELS)
    assert row["choice_meanings"] == {name: model.description for name, model in DIFFUSION_MODELS.items()}
