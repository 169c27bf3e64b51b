"""The web page in a real browser: Debian's chromium, headless, driven by Playwright."""

import io
import json
import os
import re
import shutil
import urllib.request
from pathlib import Path

import pytest
from PIL import Image

from disco.settings import SETTING_NAMES
from disco_service.wire import REQUEST_TAGS

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ROOT = Path(__file__).resolve().parent.parent
# small, quick images on the test weights; enough steps that frames show before the end
FAST = {
    "skip_steps": "1",
    "display_rate": "2",
    "cutn_batches": "1",
    "cut_overview": "[1]*1000",
    "cut_innercut": "[1]*1000",
}

# settings the page leaves out of its form (a path on the caller's machine, the client's folder, the server's choice)
LEFT_OUT = {"init_image", "video_init_path", "output_dir", "use_gpu", "resume_run", "resume_from_frame"}
MAIN = ["text_prompts", "width_height", "steps", "seed", "n_batches", "clip_guidance_scale"]
# every field of the form: its setting, where it sits, its inputs' values, its hint and title
FORM = """() => Array.from(document.querySelectorAll("[data-setting]"), (node) => {
  const inputs = Array.from(node.querySelectorAll("input, select, textarea"));
  return {
    name: node.dataset.setting, main: Boolean(node.closest("#main-fields")),
    values: inputs.map((i) => (i.type === "checkbox" ? i.checked : i.value)),
    types: inputs.map((i) => i.type), min: inputs[0].min, max: inputs[0].max,
    hint: node.querySelector(".hint").textContent, title: inputs[0].title,
  };
})"""

pytestmark = pytest.mark.skipif(not os.path.exists(CHROMIUM), reason="Debian's chromium is not installed")


@pytest.fixture(scope="module")
def page():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True)
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        yield page
        browser.close()


@pytest.fixture(scope="module")
def schema(served_http) -> dict:
    with urllib.request.urlopen(f"{served_http}/ui/settings.json", timeout=30) as response:
        return json.load(response)


def generate_requests(page) -> tuple[list[dict], object]:
    """The bodies of the page's /generate requests from now on, and the listener (to remove)."""
    sent: list[dict] = []

    def listen(request):
        if request.method == "POST" and request.url.endswith("/post"):
            body = request.post_data_json
            if body.get("execEndpoint") == "/generate":
                sent.append(body)

    page.on("request", listen)
    return sent, listen


def assert_shows(row: dict, field: dict) -> None:
    """The field shows the setting's default, as the form writes it."""
    default, values = row["default"], field["values"]
    if row["kind"] == "size":
        assert [int(v) for v in values] == default, row["name"]
    elif row["kind"] == "texts":
        assert values == ["\n".join(default)], row["name"]
    elif row["kind"] == "numbers":
        assert len(values) == 1 and [float(v) for v in values[0].split()] == default, row["name"]
    elif default is None:
        assert values == [""], row["name"]
    elif isinstance(default, bool) or isinstance(default, str):
        assert values == [default], row["name"]
    else:
        assert len(values) == 1 and float(values[0]) == default, row["name"]


def test_the_form_is_built_from_the_servers_settings(page, served_http, schema):
    from playwright.sync_api import expect

    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.goto(f"{served_http}/ui/")
    expect(page.locator("#paint")).to_be_enabled()
    form = page.evaluate(FORM)
    rows = {row["name"]: row for row in schema["settings"]}
    assert {field["name"] for field in form} == set(rows) - LEFT_OUT
    assert [field["name"] for field in form if field["main"]] == MAIN
    advanced = [field["name"] for field in form if not field["main"]]
    assert advanced == [name for name in rows if name not in LEFT_OUT and name not in MAIN]  # the server's order
    for field in form:
        row = rows[field["name"]]
        assert_shows(row, field)
        assert field["hint"] == row["meaning"] and row["allowed"] in field["title"], row["name"]
        kind = row["kind"]
        expected = (
            ["select-one"] if row["choices"] else ["checkbox"] if kind == "bool"
            else ["number"] if kind in ("int", "float") else ["number", "number"] if kind == "size"
            else ["textarea"] if kind == "texts" else ["text"]
        )  # fmt: skip
        assert field["types"] == expected, row["name"]
        if kind in ("int", "float"):
            bounds = [None if text == "" else float(text) for text in (field["min"], field["max"])]
            assert bounds == [row["low"], row["high"]], row["name"]
    assert page.input_value("#n_batches") == "4" and page.input_value("#seed") == ""
    assert page.get_attribute("#seed", "placeholder") == rows["seed"]["shown"]
    expect(page.locator('[data-setting="eta"] .hint')).to_have_text("DDIM's noise: 0 is deterministic, 1 adds the most")

    # the model picker: every model, each with what it is for, the chosen one's under the picker
    models = rows["diffusion_model"]["choice_meanings"]
    assert [o.get_attribute("title") for o in page.locator("#diffusion_model option").all()] == list(models.values())
    note = page.locator('[data-meaning="diffusion_model"]')
    expect(note).to_have_text(models[rows["diffusion_model"]["default"]])
    page.click("#advanced summary")
    page.select_option("#diffusion_model", "PulpSciFiDiffusion")
    expect(note).to_have_text(models["PulpSciFiDiffusion"])
    page.select_option("#diffusion_model", rows["diffusion_model"]["default"])
    page.click("#advanced summary")

    # a seed whose last image would pass the largest seed: refused here, nothing is sent
    sent, listen = generate_requests(page)
    page.fill("#seed", str(schema["max_seed"]))
    page.click("#paint")
    expect(page.locator('[data-error="seed"]')).to_have_text(
        f"seed: seed + n_batches - 1 must be at most {2**32 - 1}, got seed {2**32 - 1} with n_batches 4"
    )
    assert page.locator(".job").count() == 0 and sent == []
    page.remove_listener("request", listen)
    assert not errors, errors


def test_a_setting_new_to_the_page_shows_in_the_form_and_is_sent(page, served_http):
    from playwright.sync_api import expect

    knob = {
        "name": "new_knob", "kind": "float", "default": 0.25, "shown": "0.25", "meaning": "a setting added later",
        "allowed": "0 to 1", "low": 0, "high": 1, "choices": None, "seed_api": False,
    }  # fmt: skip

    def with_knob(route):
        response = route.fetch()
        body = response.json()
        body["settings"].append(knob)
        route.fulfill(response=response, json=body)

    page.route("**/ui/settings.json", with_knob)
    try:
        page.goto(f"{served_http}/ui/")
        expect(page.locator("#paint")).to_be_enabled()
        field = page.locator('#advanced-fields [data-setting="new_knob"]')
        expect(field.locator(".hint")).to_have_text("a setting added later")
        assert page.input_value("#new_knob") == "0.25"
        assert (page.get_attribute("#new_knob", "min"), page.get_attribute("#new_knob", "max")) == ("0", "1")
        sent, listen = generate_requests(page)
        page.click("#advanced summary")
        page.fill("#new_knob", "0.5")
        page.click("#paint")
        # this server has no such setting: its refusal shows next to the field
        expect(field.locator('[data-error="new_knob"]')).to_contain_text("new_knob: unknown setting")
        page.remove_listener("request", listen)
        assert [body["data"][0]["tags"]["new_knob"] for body in sent] == [0.5, 0.5]  # two in flight at most
    finally:
        page.unroute("**/ui/settings.json")


def test_paint_watch_cancel_and_reuse_in_the_page(page, served_http, served_output_dir, tmp_path):
    from playwright.sync_api import expect

    from disco_service.outputs import embed_settings

    # an image already in the server's output folder shows in the gallery
    saved = {"text_prompts": ["an image from before:1"], "seed": 4242, "width_height": [64, 64], "n_batches": 1}
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8), (30, 90, 160)).save(buffer, format="PNG")
    (served_output_dir / "reverse_diffusion-4242_0.png").write_bytes(embed_settings(buffer.getvalue(), saved))

    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.goto(f"{served_http}/ui/")
    expect(page.locator("h1")).to_have_text("Disco Diffusion")
    card = page.locator('figure.picture[data-seed="4242"]')
    expect(card).to_contain_text("an image from before:1")
    expect(card.locator("img")).to_have_attribute("src", "outputs/reverse_diffusion-4242_0.png")

    # a setting the server refuses: its message, next to the field; a given seed: seed + i per image
    sent, listen = generate_requests(page)
    page.fill("#steps", "0")
    page.fill("#seed", "7")
    page.click("#paint")
    expect(page.locator('[data-error="steps"]')).to_contain_text("steps: must be in [1, 1000], got 0")
    expect(page.locator(".job .status")).to_have_text(["failed"] * 4)  # n_batches: the server's default, 4
    tags = [body["data"][0]["tags"] for body in sent]
    assert [(t["seed"], t["run_seed"], t["batch_index"], t["n_batches"]) for t in tags] == [(7, 7, 0, 4), (8, 7, 1, 4)]
    assert set(tags[0]) <= (set(SETTING_NAMES) - LEFT_OUT) | set(REQUEST_TAGS)
    sent.clear()

    page.fill("#text_prompts", "a lighthouse:1\nyellow color scheme:0.5")
    page.fill("#width", "64")
    page.fill("#height", "64")
    page.fill("#steps", "16")
    page.fill("#seed", "")
    page.fill("#n_batches", "2")
    page.click("#advanced summary")
    for name, value in FAST.items():
        page.fill(f"#{name}", value)
    page.click("#paint")

    # one image runs with its live frame and steps; the other is cancelled: the one still waiting for
    # the sampler, or the running one when the sampler took the other first and has finished it
    ours = page.locator(".job").filter(has_text="a lighthouse:1")
    running = ours.filter(has=page.locator(".status", has_text="running"))
    painting = running.filter(has=page.locator("img.preview[src^='data:image/png']"))
    expect(painting).to_have_count(1, timeout=120_000)  # a live frame
    expect(painting.locator(".steps")).to_contain_text("of 15")
    # no seed: each image goes with seed null, and the server picks it (reported with the image, below)
    assert [(body["data"][0]["tags"]["seed"], body["data"][0]["tags"]["batch_index"]) for body in sent] == [
        (None, 0), (None, 1)
    ]  # fmt: skip
    assert not any("run_seed" in body["data"][0]["tags"] for body in sent)
    page.remove_listener("request", listen)
    ids = [ours.nth(0).get_attribute("data-job"), ours.nth(1).get_attribute("data-job")]
    waiting = ours.filter(has=page.locator(".status", has_text="waiting"))
    stopped = (waiting if waiting.count() else painting).get_attribute("data-job")
    (kept,) = set(ids) - {stopped}
    page.locator(f'.job[data-job="{stopped}"] button.cancel').click()
    expect(page.locator(f'.job[data-job="{stopped}"] .status')).to_have_text("cancelled", timeout=60_000)
    expect(page.locator(f'.job[data-job="{kept}"] .status')).to_have_text("done", timeout=120_000)
    done = page.locator(f'.job[data-job="{kept}"]')

    card = page.locator(".picture").filter(has_text="done").first
    expect(card.locator("img")).to_have_attribute("src", re.compile(r"^data:image/png;base64,"))
    seed = card.get_attribute("data-seed")
    assert re.fullmatch(r"\d+", seed) and int(seed) <= 2**32 - 1
    expect(done).to_contain_text(f"seed {seed}")
    assert card.locator("a", has_text="GIF").get_attribute("href").startswith("data:image/gif")
    assert card.locator("a", has_text="sprite sheet").get_attribute("href").startswith("data:image/png")
    page.screenshot(path=str(tmp_path / "ui.png"), full_page=True)
    if os.environ.get("DISCO_UI_SCREENSHOT"):
        shutil.copy(tmp_path / "ui.png", os.environ["DISCO_UI_SCREENSHOT"])

    page.fill("#seed", "")
    page.fill("#steps", "99")
    card.locator("button.reuse").click()
    assert page.input_value("#seed") == seed
    assert page.input_value("#steps") == "16" and page.input_value("#n_batches") == "1"
    assert page.input_value("#cut_overview") == "[1]*1000"
    # an image whose PNG carries only some settings: the others are the defaults again
    page.locator('figure.picture[data-seed="4242"] button.reuse').click()
    assert page.input_value("#text_prompts") == "an image from before:1" and page.input_value("#seed") == "4242"
    assert page.input_value("#steps") == "250" and page.input_value("#cut_overview") == "[12]*400+[4]*600"
    assert not errors, errors
