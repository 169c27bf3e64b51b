"""The web page in a real browser: Debian's chromium, headless, driven by Playwright."""

import base64
import io
import json
import os
import re
import shutil
import urllib.request
from pathlib import Path
from urllib.parse import urlparse

import needs
import numpy as np
import pytest
from conftest import TOKENS
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
# small, quick images on the test weights; enough steps that frames show before the end
FAST = {
    "skip_steps": "1",
    "display_rate": "2",
    "cutn_batches": "1",
    "cut_overview": "[1]*1000",
    "cut_innercut": "[1]*1000",
}

# settings the page leaves out of its form (the client's folder, the server's choice, files to resume from)
LEFT_OUT = {"output_dir", "use_gpu", "resume_run", "resume_from_frame"}
UPLOADS = {"image": "image/*", "video": "video/*", "images": "image/*"}  # a file setting's kind -> its picker's types
MAIN = ["text_prompts", "width_height", "steps", "seed", "n_batches", "clip_guidance_scale"]
# every field of the form: its setting, where it sits, its inputs' values, its hint and title
FORM = """() => Array.from(document.querySelectorAll("[data-setting]"), (node) => {
  const inputs = Array.from(node.querySelectorAll("input, select, textarea"));
  return {
    name: node.dataset.setting, part: node.closest(".fields").id,
    values: inputs.map((i) => (i.type === "checkbox" ? i.checked : i.value)),
    types: inputs.map((i) => i.type), min: inputs[0].min, max: inputs[0].max, accept: inputs[0].accept,
    hint: node.querySelector(".hint").textContent, title: inputs[0].title,
  };
})"""
# a <video> that plays: not paused, and its time moves on
PLAYING = "(v) => !v.paused && v.readyState >= 2 && v.currentTime > 0 && v.videoWidth === 64"

pytestmark = needs.chromium_mark


@pytest.fixture(scope="module")
def page():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=needs.need_chromium(), headless=True)
        page = browser.new_page(viewport={"width": 1280, "height": 900}, accept_downloads=True)
        yield page
        browser.close()


@pytest.fixture(scope="module")
def schema(served_http) -> dict:
    with urllib.request.urlopen(f"{served_http}/ui/settings.json", timeout=30) as response:
        return json.load(response)


def is_job_post(response_or_request) -> bool:
    request = getattr(response_or_request, "request", response_or_request)
    return request.method == "POST" and urlparse(request.url).path == "/jobs"


def events_opened(request) -> bool:
    """The page's event stream, GET /jobs/events, asked for."""
    return request.method == "GET" and urlparse(request.url).path == "/jobs/events"


def jobs_read(response) -> bool:
    """The page's read of its jobs, GET /jobs, answered."""
    return response.request.method == "GET" and urlparse(response.url).path == "/jobs" and response.status == 200


def job_requests(page) -> tuple[list[dict], object]:
    """The bodies of the page's POST /jobs from now on, and the listener (to remove)."""
    sent: list[dict] = []

    def listen(request):
        if is_job_post(request):
            sent.append(request.post_data_json)

    page.on("request", listen)
    return sent, listen


def paint(page) -> dict:
    """Press Paint; the job API's answer (202: the job's view)."""
    with page.expect_response(is_job_post) as answer:
        page.click("#paint")
    assert answer.value.status == 202, answer.value.text()
    return answer.value.json()


def fill(page, settings: dict) -> None:
    """Type settings into the form (the Advanced and Motion parts opened where needed)."""
    for name, value in settings.items():
        part = page.locator(f"#{name}").locator("xpath=ancestor::details")
        if part.count() and not part.first.evaluate("(d) => d.open"):
            part.first.locator("summary").click()
        page.fill(f"#{name}", str(value))


def download(page, link) -> tuple[str, bytes]:
    """Click a download link of the page; the file's name and bytes."""
    with page.expect_download() as saved:
        link.click()
    return saved.value.suggested_filename, Path(saved.value.path()).read_bytes()


def assert_shows(row: dict, field: dict) -> None:
    """The field shows the setting's default, as the form writes it."""
    default, values = row["default"], field["values"]
    if row["kind"] in UPLOADS:  # a file picker starts empty
        assert values == [""], row["name"]
    elif row["kind"] == "bool_or_schedule" and isinstance(default, bool):  # true/false or a schedule, as text
        assert values == [str(default).lower()], row["name"]
    elif row["kind"] == "size":
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


def tiny_png(path: Path, colour=(200, 40, 40)) -> bytes:
    Image.new("RGB", (64, 64), colour).save(path)
    return path.read_bytes()


def test_the_form_is_built_from_the_servers_settings(page, served_http, schema):
    from playwright.sync_api import expect

    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.goto(f"{served_http}/ui/")
    expect(page.locator("#paint")).to_be_enabled()
    form = page.evaluate(FORM)
    rows = {row["name"]: row for row in schema["settings"]}
    assert {field["name"] for field in form} == set(rows) - LEFT_OUT
    assert [field["name"] for field in form if field["part"] == "main-fields"] == MAIN
    # the animation settings under "Motion", every other one under "Advanced", in the server's order
    motion = [name for name, row in rows.items() if row["group"] == "motion" and name not in LEFT_OUT]
    assert [field["name"] for field in form if field["part"] == "motion-fields"] == motion
    assert motion[0] == "animation_mode" and "video_init_path" in motion and "fps" in motion
    advanced = [field["name"] for field in form if field["part"] == "advanced-fields"]
    assert advanced == [name for name in rows if name not in LEFT_OUT and name not in MAIN and name not in motion]
    for field in form:
        row = rows[field["name"]]
        assert_shows(row, field)
        assert field["hint"] == row["meaning"] and row["allowed"] in field["title"], row["name"]
        kind = row["kind"]
        expected = (
            ["file"] if kind in UPLOADS
            else ["select-multiple"] if row["choices"] and kind == "texts" else ["select-one"] if row["choices"]
            else ["checkbox"] if kind == "bool"
            else ["number"] if kind in ("int", "float") else ["number", "number"] if kind == "size"
            else ["textarea"] if kind in ("texts", "model_schedules") else ["text"]
        )  # fmt: skip
        assert field["types"] == expected, row["name"]
        if kind in UPLOADS:
            assert field["accept"] == UPLOADS[kind], row["name"]
        if kind in ("int", "float"):
            bounds = [None if text == "" else float(text) for text in (field["min"], field["max"])]
            assert bounds == [row["low"], row["high"]], row["name"]
    uploads = {name for name, row in rows.items() if row["kind"] in UPLOADS}
    assert uploads == {"init_image", "video_init_path", "image_prompts"}
    assert page.input_value("#n_batches") == "1" and page.input_value("#seed") == ""  # no GPU here: small defaults
    assert page.get_attribute("#seed", "placeholder") == rows["seed"]["shown"]
    expect(page.locator('[data-setting="eta"] .hint')).to_have_text("DDIM's noise: 0 is deterministic, 1 adds the most")
    expect(page.locator("#motion-fields")).to_be_hidden()  # folded until opened
    page.click("#motion summary")
    expect(page.locator("#animation_mode")).to_be_visible()

    # the model picker: every model, each with what it is for, the chosen one's under the picker
    models = rows["diffusion_model"]["choice_meanings"]
    assert [o.get_attribute("title") for o in page.locator("#diffusion_model option").all()] == list(models.values())
    note = page.locator('[data-meaning="diffusion_model"]')
    expect(note).to_have_text(models[rows["diffusion_model"]["default"]])
    page.click("#advanced summary")
    page.select_option("#diffusion_model", "PulpSciFiDiffusion")
    expect(note).to_have_text(models["PulpSciFiDiffusion"])
    page.select_option("#diffusion_model", rows["diffusion_model"]["default"])

    # a seed whose last image would pass the largest seed: the job API refuses it (400) naming the seed
    page.fill("#seed", str(schema["max_seed"]))
    page.fill("#n_batches", "4")
    page.fill("#steps", "1000")
    asked = []  # 4 images of 1000 steps take hours on this CPU server: the page asks first (accepted here)
    page.once("dialog", lambda dialog: (asked.append(dialog.message), dialog.accept()))
    with page.expect_response(is_job_post) as answer:
        page.click("#paint")
    assert asked and asked[0].endswith("Queue it anyway?"), asked
    assert answer.value.status == 400 and answer.value.json()["setting"] == "seed"
    expect(page.locator('[data-error="seed"]')).to_have_text(
        f"seed: seed + n_batches - 1 must stay below 2**32, got seed {2**32 - 1} with n_batches 4"
    )
    assert "invalid" in page.get_attribute("#seed", "class")
    assert not errors, errors


def test_uploads_and_several_clip_models_are_sent_and_a_refusal_shows_under_its_field(
    page, served_http, schema, tmp_path
):
    from playwright.sync_api import expect

    from disco.video import write_mp4

    png = tiny_png(tmp_path / "start.png")
    write_mp4(tmp_path / "clip.mp4", [np.full((64, 64, 3), level, np.uint8) for level in (40, 200)], 12)
    row = next(r for r in schema["settings"] if r["name"] == "clip_models")
    page.goto(f"{served_http}/ui/")
    expect(page.locator("#paint")).to_be_enabled()
    options = page.locator("#clip_models option").all()
    assert [o.get_attribute("value") for o in options] == row["choices"] and "ViT-B-32::openai" in row["choices"]
    assert [o.get_attribute("title") for o in options] == [row["choice_meanings"][c] for c in row["choices"]]
    chosen = "s => [...s.selectedOptions].map((o) => o.value)"
    assert page.eval_on_selector("#clip_models", chosen) == row["default"] == ["RN50::openai"]
    page.click("#advanced summary")
    page.select_option("#clip_models", ["RN50::openai", "ViT-B-32::openai"])
    page.set_input_files("#init_image", str(tmp_path / "start.png"))
    page.click("#motion summary")
    page.set_input_files("#video_init_path", str(tmp_path / "clip.mp4"))
    sent, listen = job_requests(page)
    page.fill("#steps", "0")  # refused by the server: nothing runs, and what was sent can be read
    with page.expect_response(is_job_post) as answer:
        page.click("#paint")
    page.remove_listener("request", listen)
    assert answer.value.status == 400
    assert answer.value.json() == {
        "code": "setting_invalid", "detail": "steps: must be in [1, 1000], got 0", "setting": "steps"
    }  # fmt: skip
    expect(page.locator('[data-error="steps"]')).to_have_text("steps: must be in [1, 1000], got 0")
    expect(page.locator('[data-error="other"]')).to_have_text("")
    (body,) = sent
    assert body["clip_models"] == ["RN50::openai", "ViT-B-32::openai"] and body["steps"] == 0
    # the files' bytes as data: URIs
    assert body["init_image"] == "data:image/png;base64," + base64.b64encode(png).decode()
    video = (tmp_path / "clip.mp4").read_bytes()
    assert body["video_init_path"] == "data:video/mp4;base64," + base64.b64encode(video).decode()
    assert "seed" not in body and not set(body) & LEFT_OUT  # an empty field: the server's default


def test_schedules_are_plotted_as_typed_and_image_prompts_are_sent_with_their_weights(page, served_http, tmp_path):
    """A schedule's plot (the server's reading, POST /schedules/preview) under its field, redrawn as it
    is typed, an error line naming the setting for one it cannot read; a weight beside each image prompt."""
    from playwright.sync_api import expect

    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.goto(f"{served_http}/ui/")
    expect(page.locator("#paint")).to_be_enabled()
    page.click("#advanced summary")
    # the default cut schedule, plotted at once: x the virtual step (300 px for 1000), y 12 at the top, 4 at the bottom
    overview = page.locator('[data-preview="cut_overview"] figure.schedule-plot')
    expect(overview.locator("polyline")).to_have_attribute("points", "0,2 120,2 120,58 300,58")
    expect(overview.locator(".plot-values")).to_have_text("124")

    prompts = page.locator('[data-preview="text_prompts"] figure.schedule-plot')
    problem = page.locator('[data-preview-error="text_prompts"]')
    expect(prompts).to_have_count(0)  # the defaults have one weight each: nothing to plot
    page.fill("#text_prompts", "a lighthouse:[1]*500+[0]*500\nyellow color scheme:0.5")
    expect(prompts.locator("polyline")).to_have_attribute("points", "0,2 150,2 150,58 300,58")
    expect(prompts.locator("svg")).to_have_attribute(
        "aria-label", "a lighthouse over the 1000 virtual steps: 1 at steps 0 to 499, 0 at steps 500 to 999"
    )
    page.locator("#text_prompts").press("Control+End")
    page.locator("#text_prompts").type("\nstars:[0]*250+[2]*750")  # typed on: a second plot
    expect(prompts).to_have_count(2)
    expect(prompts.nth(1).locator("polyline")).to_have_attribute("points", "0,58 75,58 75,2 300,2")
    page.fill("#text_prompts", "a lighthouse:[1]*500+[0]*400")
    expect(problem).to_have_text(
        "text_prompts: prompt 'a lighthouse': its weight schedule: must cover exactly 1000 steps, "
        "'[1]*500+[0]*400' covers 900"
    )
    expect(prompts).to_have_count(0)
    page.fill("#use_secondary_model", "[True]*200+[Maybe]*800")
    expect(page.locator('[data-preview-error="use_secondary_model"]')).to_contain_text("use_secondary_model: ")
    page.fill("#use_secondary_model", "[True]*200+[False]*800")
    expect(page.locator('[data-preview-error="use_secondary_model"]')).to_have_text("")
    expect(page.locator('[data-preview="use_secondary_model"] svg')).to_have_attribute(
        "aria-label", "use_secondary_model over the 1000 virtual steps: on at steps 0 to 199, off at steps 200 to 999"
    )
    # a structured prompt on its line: its weight plotted, the CLIP models it applies to in the label
    page.fill(
        "#text_prompts", 'a lighthouse:2\n{"text": "fog", "weight": "[0]*250+[1]*750", "clip_models": ["rn50::openai"]}'
    )
    expect(prompts).to_have_count(1)
    expect(prompts.locator(".plot-label")).to_have_text("fog (RN50::openai only)")
    expect(prompts.locator("polyline")).to_have_attribute("points", "0,58 75,58 75,2 300,2")
    # prompts by frame: each frame key with the frames it holds for, and its prompts' weights
    page.fill(
        "#text_prompts", '{"0": ["a lighthouse:2", "fog:[1]*500+[0]*500"], "40": [{"text": "storm", "weight": 3}]}'
    )
    keys = page.locator('[data-preview="text_prompts"] .frame-key')
    expect(keys.locator(".frame-span")).to_have_text(["frame 0: frames 0 to 39", "frame 40: frames 40 on"])
    expect(keys.nth(0).locator(".prompt-weight")).to_have_text("a lighthouse: weight 2")
    expect(keys.nth(0).locator("polyline")).to_have_attribute("points", "0,2 150,2 150,58 300,58")
    expect(keys.nth(1).locator(".prompt-weight")).to_have_text("storm: weight 3")
    page.fill("#text_prompts", '{"0": ["sea"], "9": [{"text": "fog", "weight": "[1]*9"}]}')
    expect(problem).to_contain_text("text_prompts: frame 9: prompt 'fog': its weight schedule: must cover exactly")
    expect(keys).to_have_count(0)
    page.fill("#text_prompts", 'a lighthouse:[1]*500+[0]*500\n{"text": "fog", "weight": 0.5}')
    expect(problem).to_have_text("")
    expect(page.locator('[data-preview="text_prompts"] .prompt-weight')).to_have_text("fog: weight 0.5")

    # image prompts: a weight beside each file (1 unless changed), sent after its data URI
    red, blue = tiny_png(tmp_path / "red.png"), tiny_png(tmp_path / "blue.png", (20, 40, 200))
    page.set_input_files("#image_prompts", [str(tmp_path / "red.png"), str(tmp_path / "blue.png")])
    expect(page.get_by_label("weight of red.png")).to_have_value("1")
    page.get_by_label("weight of blue.png").fill("-0.5")
    sent, listen = job_requests(page)
    page.fill("#steps", "0")  # refused by the server: nothing runs, and what was sent can be read
    with page.expect_response(is_job_post) as answer:
        page.click("#paint")
    page.remove_listener("request", listen)
    assert answer.value.status == 400 and answer.value.json()["setting"] == "steps"
    (body,) = sent
    uri = "data:image/png;base64,"
    assert body["image_prompts"] == [
        f"{uri}{base64.b64encode(red).decode()}:1",
        f"{uri}{base64.b64encode(blue).decode()}:-0.5",
    ]
    assert body["text_prompts"] == ["a lighthouse:[1]*500+[0]*500", {"text": "fog", "weight": 0.5}]
    assert not errors, errors


def test_a_setting_new_to_the_page_shows_in_the_form_and_is_sent(page, served_http):
    from playwright.sync_api import expect

    knob = {
        "name": "new_knob", "kind": "float", "default": 0.25, "shown": "0.25", "meaning": "a setting added later",
        "allowed": "0 to 1", "low": 0, "high": 1, "choices": None, "seed_api": False, "group": None,
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
        sent, listen = job_requests(page)
        page.click("#advanced summary")
        page.fill("#new_knob", "0.5")
        with page.expect_response(is_job_post):
            page.click("#paint")
        # this server has no such setting: its refusal shows next to the field
        expect(field.locator('[data-error="new_knob"]')).to_contain_text("new_knob: unknown setting")
        page.remove_listener("request", listen)
        assert [body["new_knob"] for body in sent] == [0.5]
    finally:
        page.unroute("**/ui/settings.json")


def test_paint_watch_reload_cancel_and_reuse_in_the_page(page, served_http, served_output_dir, tmp_path):
    from playwright.sync_api import expect

    from disco_service.outputs import embed_settings

    # an image already in the server's output folder shows after the jobs, fetched as a blob
    saved = {"text_prompts": ["an image from before:1"], "seed": 4242, "width_height": [64, 64], "n_batches": 1}
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8), (30, 90, 160)).save(buffer, format="PNG")
    (served_output_dir / "reverse_diffusion-4242_0.png").write_bytes(embed_settings(buffer.getvalue(), saved))

    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.goto(f"{served_http}/ui/")
    expect(page.locator("h1")).to_have_text("Disco Diffusion")
    old = page.locator('#saved figure.picture[data-seed="4242"]')
    expect(old).to_contain_text("an image from before:1")
    expect(old.locator("img")).to_have_attribute("data-src", "outputs/reverse_diffusion-4242_0.png")
    expect(old.locator("img")).to_have_attribute("src", re.compile(r"^blob:"))

    # job A: long enough to be watched and cancelled; job B: queued behind it, then painted
    fill(page, {"text_prompts": "a lighthouse:1", "width": 64, "height": 64, "steps": 60, "seed": "", "n_batches": 1})
    fill(page, FAST)
    sent, listen = job_requests(page)
    a = paint(page)
    assert a["status"] == "queued" and len(a["images"]) == 1
    job_a, row_a = page.locator(f'.job[data-job="{a["id"]}"]'), page.locator(f'.job[data-job="{a["id"]}"] .image')
    expect(row_a).to_have_attribute("data-status", "running", timeout=120_000)
    preview = row_a.locator("img.preview")
    expect(preview).to_have_attribute("src", re.compile(r"^blob:"), timeout=60_000)  # a live frame
    assert preview.get_attribute("data-src") == f"/jobs/{a['id']}/images/0/latest.png"
    expect(row_a.locator(".steps")).to_contain_text(re.compile(r"step \d+ of 59"))
    assert float(row_a.locator("progress").get_attribute("max")) == 59

    fill(page, {"text_prompts": "a second lighthouse:1", "steps": 16})
    b = paint(page)
    page.remove_listener("request", listen)
    # no seed: none sent, the server picks the run's seed and reports it with the job
    assert [body.get("seed") for body in sent] == [None, None] and all(body["n_batches"] == 1 for body in sent)
    assert re.fullmatch(r"\d+", str(b["settings"]["seed"])) and b["images"][0]["seed"] == b["settings"]["seed"]
    job_b = page.locator(f'.job[data-job="{b["id"]}"]')
    expect(job_b.locator(".job-head .status")).to_have_text("queued")
    expect(job_b.locator(".position")).to_have_text("place 1 in line")

    # a reload shows the same queue: the jobs live on the server
    page.reload()
    expect(job_a.locator(".image")).to_have_attribute("data-status", "running")
    expect(job_a.locator("img.preview")).to_have_attribute("src", re.compile(r"^blob:"))
    expect(job_b.locator(".position")).to_have_text("place 1 in line")
    assert page.locator(".job").evaluate_all("(nodes) => nodes.map((n) => n.dataset.job)")[-2:] == [a["id"], b["id"]]

    # cancel A while it runs: it leaves the queue, its frames so far go to the gallery, marked cancelled
    job_a.locator("button.cancel").click()
    expect(job_a).to_have_count(0, timeout=60_000)
    card_a = page.locator(f'#gallery figure[data-job="{a["id"]}"]')
    expect(card_a).to_have_attribute("data-status", "cancelled")
    expect(card_a).to_contain_text(re.compile(r"cancelled at step \d+ of 59"))
    expect(card_a.locator("img")).to_have_attribute("data-src", f"/jobs/{a['id']}/images/0/latest.png")
    expect(card_a.locator("img")).to_have_attribute("src", re.compile(r"^blob:"))
    assert card_a.locator("a", has_text="PNG").count() == 0  # no final image
    expect(card_a.locator("a", has_text="GIF")).to_have_count(1)

    # B runs, then is done: its picture, with its downloads
    expect(job_b.locator(".image")).to_have_attribute("data-status", "running", timeout=120_000)
    card_b = page.locator(f'#gallery figure[data-job="{b["id"]}"]')
    expect(card_b).to_have_attribute("data-status", "done", timeout=180_000)
    expect(job_b).to_have_count(0)
    expect(card_b.locator("img")).to_have_attribute("data-src", f"/jobs/{b['id']}/images/0/final.png")
    expect(card_b.locator("img")).to_have_attribute("src", re.compile(r"^blob:"))
    seed = card_b.get_attribute("data-seed")
    assert seed == str(b["settings"]["seed"])
    name, data = download(page, card_b.locator("a", has_text="PNG"))
    assert name == f"reverse_diffusion-{seed}_0.png" and Image.open(io.BytesIO(data)).size == (64, 64)
    name, data = download(page, card_b.locator("a", has_text="GIF"))
    assert name == f"reverse_diffusion-{seed}_0.gif" and data.startswith(b"GIF8")
    expect(card_b.locator("a", has_text="sprite sheet")).to_have_count(1)

    # a reload shows the same gallery, newest first, after it the saved folder's images
    page.reload()
    expect(card_b.locator("img")).to_have_attribute("src", re.compile(r"^blob:"))
    ours = page.locator("#gallery figure").evaluate_all("(nodes) => nodes.map((n) => n.dataset.job)")
    assert ours.index(b["id"]) < ours.index(a["id"])
    expect(card_a).to_have_attribute("data-status", "cancelled")
    expect(page.locator(f'.job[data-job="{a["id"]}"], .job[data-job="{b["id"]}"]')).to_have_count(0)
    expect(old).to_be_visible()
    page.screenshot(path=str(tmp_path / "ui.png"), full_page=True)
    if os.environ.get("DISCO_UI_SCREENSHOT"):
        shutil.copy(tmp_path / "ui.png", os.environ["DISCO_UI_SCREENSHOT"])

    # "Reuse these settings": the job's settings with that image's seed, one image
    page.fill("#seed", "")
    page.fill("#steps", "99")
    card_b.locator("button.reuse").click()
    assert page.input_value("#seed") == seed and page.input_value("#text_prompts") == "a second lighthouse:1"
    assert page.input_value("#steps") == "16" and page.input_value("#n_batches") == "1"
    assert page.input_value("#cut_overview") == "[1]*1000"
    # an image whose PNG carries only some settings: the others are the defaults again
    old.locator("button.reuse").click()
    assert page.input_value("#text_prompts") == "an image from before:1" and page.input_value("#seed") == "4242"
    assert page.input_value("#steps") == "50" and page.input_value("#cut_overview") == "[12]*400+[4]*600"  # no GPU

    # GoBig on B's card: B's settings and picture, the form's GoBig settings, an overlap 64 px allow
    fill(page, {"gobig_skip_ratio": "0.95"})  # each tile samples 1 of B's 16 steps
    with page.expect_response(is_job_post) as answer:
        card_b.locator("button.gobig").click()
    body, big = answer.value.request.post_data_json, answer.value.json()
    assert answer.value.status == 202, big
    assert body["gobig"] is True and body["gobig_from_init"] is True and body["gobig_overlap"] == 31
    assert body["gobig_skip_ratio"] == 0.95 and body["seed"] == int(seed) and body["steps"] == 16
    assert body["init_image"].startswith("data:image/png;base64,")
    card_big = page.locator(f'#gallery figure[data-job="{big["id"]}"]')
    expect(card_big).to_have_attribute("data-status", "done", timeout=180_000)
    name, data = download(page, card_big.locator("a", has_text="PNG"))
    assert Image.open(io.BytesIO(data)).size == (128, 128)  # 2x, from 3 x 3 tiles of 64 x 64
    expect(card_big.locator("button.gobig")).to_have_count(0)  # an enlarged image is not offered again
    assert not errors, errors


def test_an_animation_shows_its_frame_while_running_and_plays_when_done(page, served_http):
    from playwright.sync_api import expect

    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.goto(f"{served_http}/ui/")
    expect(page.locator("#paint")).to_be_enabled()
    by_frame = {"0": ["a turning lighthouse:1"], "1": ["a lighthouse at night:1", "stars:0.5"]}  # the notebook's form
    fill(page, {"text_prompts": json.dumps(by_frame), "width": 64, "height": 64, "steps": 8, "n_batches": 1})
    fill(page, FAST)
    page.click("#motion summary")
    page.select_option("#animation_mode", "2D")
    fill(page, {"max_frames": 2, "frames_skip_steps": "50%", "zoom": "0: (1.1)", "fps": 4})
    job = paint(page)
    assert job["settings"]["animation_mode"] == "2D" and len(job["images"]) == 1
    assert job["settings"]["text_prompts"] == by_frame  # sent as prompts by frame, not as lines of text
    row = page.locator(f'.job[data-job="{job["id"]}"] .image')
    expect(row.locator(".frames")).to_have_text(re.compile(r"^frame [12] of 2 · [01] frames done$"), timeout=120_000)
    expect(page.locator(f'.job[data-job="{job["id"]}"] .what')).to_have_text("2D animation")

    card = page.locator(f'#gallery figure[data-job="{job["id"]}"]')
    expect(card).to_have_attribute("data-status", "done", timeout=180_000)
    expect(card).to_contain_text("2D animation")
    video = card.locator("video")
    expect(video).to_have_attribute("data-src", f"/jobs/{job['id']}/images/0/video.mp4")
    assert video.evaluate("(v) => v.loop && v.controls") is True
    video.scroll_into_view_if_needed()  # chromium pauses a muted autoplaying video while it is out of view
    page.wait_for_function(PLAYING, arg=video.element_handle(), timeout=30_000)
    seed = job["settings"]["seed"]
    name, data = download(page, card.locator("a", has_text="MP4"))
    assert name == f"reverse_diffusion-{seed}.mp4" and data[4:8] == b"ftyp"
    expect(card.locator("details.frames summary")).to_have_text("2 frames")
    card.locator("details.frames summary").click()
    name, data = download(page, card.locator("details.frames a").last)
    assert name == f"reverse_diffusion-{seed}-frame0001.png" and Image.open(io.BytesIO(data)).size == (64, 64)
    card.locator("button.reuse").click()
    assert page.input_value("#animation_mode") == "2D" and page.input_value("#max_frames") == "2"
    assert page.input_value("#zoom") == "0: (1.1)" and page.input_value("#seed") == str(seed)
    assert json.loads(page.input_value("#text_prompts")) == by_frame
    assert not errors, errors


def test_the_page_paints_through_a_proxy_with_a_read_timeout_shorter_than_the_image(page, served_http, tmp_path):
    """nginx with a proxy_read_timeout of 9 s in front: the page's requests are all short but its event
    stream, which heartbeats keep open, so an image that takes longer than that is followed to its
    end with no GET /jobs polling, and shown."""
    import time

    from playwright.sync_api import expect
    from test_proxy import READ_TIMEOUT_S, running_proxy

    needs.need_nginx()
    with running_proxy(served_http, tmp_path) as proxy:
        slowest: dict[str, float] = {}  # URL -> its slowest answer, in ms

        def timed(request) -> None:
            slowest[request.url] = max(slowest.get(request.url, 0), request.timing["responseEnd"])

        page.on("requestfinished", timed)
        streams, polls = [], []

        def counted(request) -> None:
            path = urlparse(request.url).path
            if request.method == "GET" and path == "/jobs/events":
                streams.append(request.url)
            elif request.method == "GET" and path == "/jobs":
                polls.append(request.url)

        page.goto(f"{proxy}/ui/")
        expect(page.locator("#paint")).to_be_enabled()
        page.on("request", counted)
        fill(page, {"text_prompts": "a lighthouse behind a proxy:1", "width": 64, "height": 64, "steps": 12})
        fill(page, {**FAST, "seed": 31, "n_batches": 1, "display_rate": "4"})
        started = time.time()
        job = paint(page)
        card = page.locator(f'#gallery figure[data-job="{job["id"]}"]')
        expect(card).to_have_attribute("data-status", "done", timeout=300_000)
        took = time.time() - started
        expect(card.locator("img")).to_have_attribute("src", re.compile(r"^blob:"))
        page.remove_listener("requestfinished", timed)
        page.remove_listener("request", counted)
        events = page.locator("#connection").text_content()
    print(f"an image of {took:.0f} s through the proxy, the page's slowest request {max(slowest.values()):.0f} ms")
    print(f"GET /jobs during it: {len(polls)}; event streams opened: {len(streams)}")
    assert polls == [] and events == "", (polls, events)  # followed by its events alone, through the proxy
    short = {url: ms for url, ms in slowest.items() if urlparse(url).path != "/jobs/events"}
    assert took > READ_TIMEOUT_S and max(short.values()) < 5000
    assert not any(urlparse(url).path == "/post" for url in slowest)


def test_the_page_asks_for_the_token_keeps_it_and_sends_it(page, token_flow, tmp_path):
    """A service with tokens: the page asks (a dialog), keeps the token, sends it with every request,
    shows pictures and downloads fetched with it; a second browser with the same token sees the same job."""
    from playwright.sync_api import expect

    _, http = token_flow
    png = tiny_png(tmp_path / "start.png", (20, 120, 200))
    browser = page.context.browser
    first = browser.new_context(accept_downloads=True).new_page()
    errors: list[str] = []
    first.on("pageerror", lambda exc: errors.append(str(exc)))
    authorizations: list[str | None] = []
    first.on("request", lambda r: authorizations.append(r.headers.get("authorization")) if "/jobs" in r.url else None)
    first.goto(f"{http}/ui/")
    dialog = first.locator("#token-dialog")
    expect(dialog).to_be_visible()
    expect(first.locator("#token-message")).to_have_text(
        "This server needs a token (this service needs a token: send the header 'Authorization: Bearer TOKEN')."
    )
    first.fill("#token", "not-a-token-of-this-service")
    first.click("#token-save")
    expect(first.locator("#token-message")).to_have_text(
        "The server refused this token (this token is not accepted by the service). Enter another one."
    )
    first.fill("#token", TOKENS["alice"])
    with first.expect_response(jobs_read):
        first.click("#token-save")
    expect(dialog).to_be_hidden()
    assert first.evaluate("localStorage.getItem('disco_token')") == TOKENS["alice"]

    # a tiny job from an uploaded init image; a second one at once is over this token's cap (429)
    fill(first, {"text_prompts": "a harbour:1", "width": 64, "height": 64, "steps": 4, "n_batches": 1})
    fill(first, {**FAST, "init_scale": 0})
    first.set_input_files("#init_image", str(tmp_path / "start.png"))
    with first.expect_request(is_job_post) as request:
        job = paint(first)
    assert json.loads(request.value.post_data)["init_image"].endswith(base64.b64encode(png).decode())
    assert job["init_image"] is True
    with first.expect_response(is_job_post) as answer:
        first.click("#paint")
    assert answer.value.status == 429
    expect(first.locator('[data-error="other"]')).to_contain_text("this caller already has 1 jobs queued or running")

    card = first.locator(f'#gallery figure[data-job="{job["id"]}"]')
    expect(card).to_have_attribute("data-status", "done", timeout=180_000)
    expect(card.locator("img")).to_have_attribute("src", re.compile(r"^blob:"))
    name, data = download(first, card.locator("a", has_text="PNG"))
    assert name.endswith("_0.png") and Image.open(io.BytesIO(data)).size == (64, 64)
    assert authorizations and set(authorizations[2:]) == {f"Bearer {TOKENS['alice']}"}  # after the two refused
    card.locator("button.reuse").click()  # the init image is not sent back: the page asks for the file again
    expect(first.locator('[data-note="init_image"]')).to_contain_text("choose it again")

    # a reload asks nothing (the token is kept) and shows the same job; so does a second browser given the token
    first.reload()
    expect(card.locator("img")).to_have_attribute("src", re.compile(r"^blob:"))
    expect(dialog).to_be_hidden()
    second = browser.new_context().new_page()
    second.goto(f"{http}/ui/")
    second.fill("#token", TOKENS["alice"])
    second.click("#token-save")
    expect(second.locator(f'#gallery figure[data-job="{job["id"]}"] img')).to_have_attribute(
        "src", re.compile(r"^blob:")
    )
    # another token's browser does not see it
    third = browser.new_context().new_page()
    third.goto(f"{http}/ui/")
    third.fill("#token", TOKENS["bob"])
    with third.expect_response(jobs_read), third.expect_request(events_opened):
        third.click("#token-save")  # the page reads its jobs, draws them, then follows their events
    assert third.locator(f'figure[data-job="{job["id"]}"]').count() == 0
    for other in (first, second, third):
        other.context.close()
    assert not errors, errors


def test_an_images_intermediate_saves_show_under_its_card(page, served_http):
    from playwright.sync_api import expect

    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.goto(f"{served_http}/ui/")
    expect(page.locator("#paint")).to_be_enabled()
    fill(page, {"text_prompts": "a lighthouse", "width": 64, "height": 64, "steps": 6, "n_batches": 1})
    fill(page, {**FAST, "intermediate_saves": 1})
    job = paint(page)
    assert job["settings"]["intermediate_saves"] == 1
    card = page.locator(f'#gallery figure[data-job="{job["id"]}"]')
    expect(card).to_have_attribute("data-status", "done", timeout=180_000)
    # 5 steps run: one save keeps j 2 and 4 of 0..4, named 50% and 100% (the notebook's ceil(j / 4 * 100))
    expect(card.locator("details.partials summary")).to_have_text("2 intermediate saves")
    card.locator("details.partials summary").click()
    links = card.locator("details.partials a")
    assert links.all_inner_texts() == ["50%", "100%"]
    seed = job["settings"]["seed"]
    name, data = download(page, links.first)
    assert name == f"reverse_diffusion-{seed}_0-50%.png" and Image.open(io.BytesIO(data)).size == (64, 64)
    assert card.locator("details.eye-views").count() == 0  # a still image has no eye views

    # a VR frame's eye views (as GET /jobs lists them; here two of the image's real PNGs stand in for
    # them, since a served VR run needs the depth models) show as a pair when opened
    with urllib.request.urlopen(f"{served_http}/jobs/{job['id']}", timeout=30) as answer:
        saves = [p["url"] for p in json.loads(answer.read())["images"][0]["partials"]]

    def with_eyes(route):
        answer = route.fetch()
        body = answer.json()
        for listed in body["jobs"]:
            if listed["id"] == job["id"]:
                listed["images"][0]["eye_views"] = [{"frame": 0, "l": saves[0], "r": saves[1]}]
        route.fulfill(response=answer, json=body)

    page.route("**/jobs/events*", lambda route: route.abort())  # the page falls back to GET /jobs
    page.route(re.compile(r".*/jobs(\?.*)?$"), with_eyes)
    try:
        page.reload()
        card = page.locator(f'#gallery figure[data-job="{job["id"]}"]')
        expect(card.locator("details.eye-views summary")).to_have_text("VR eye views (1 frame)", timeout=30_000)
        card.locator("details.eye-views summary").click()
        pair = card.locator(".eye-pair img")
        expect(pair.first).to_have_attribute("data-src", saves[0])
        expect(pair.last).to_have_attribute("data-src", saves[1])
        assert card.locator(".eye-links a").all_inner_texts() == ["left", "right"]
    finally:
        page.unroute_all()
    assert not errors, errors
