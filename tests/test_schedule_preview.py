"""A setting's value over the 1000 virtual steps (``disco.settings.preview``) and the page's route to
it, ``POST /schedules/preview``, in-process; and the page's form of weighted image prompts
(``data:...;base64,...:WEIGHT``) accepted by the job API and read with its weights by the Flow."""

from __future__ import annotations

import asyncio
import json

import httpx
import pytest
from fake_flow import FakeFlow, png
from fastapi import FastAPI
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from disco.clip_catalog import CLIP_MODELS
from disco.settings import DEFAULT_LIMITS, SettingsError, validate_settings
from disco.settings.preview import (
    MAX_PREVIEW_CHARS,
    PREVIEWED_SETTINGS,
    FramePrompts,
    PromptPreview,
    preview_prompts,
    preview_schedule,
    runs,
)
from disco.settings.prompt_text import data_uri, data_uri_bytes, parse_image_prompt, parse_prompt
from disco_service import wire
from disco_service.server import http_api, job_queue, schedule_preview
from disco_service.server.job_queue import JobQueue
from disco_service.server.results import ResultStore
from disco_service.server.tokens import Tokens

TOKEN = "alice-token-0123456789"
QUICK = dict(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))


def app_of(tmp_path, tokens=()) -> tuple[FastAPI, JobQueue]:
    """The job API and the preview route as the gateway mounts them, over a fake Flow."""
    store = ResultStore(tmp_path / "results", ttl_s=3600)
    queue = JobQueue(store, FakeFlow(store), max_jobs_per_owner=5)
    app = FastAPI()
    http_api.mount(app, queue, Tokens(tokens), DEFAULT_LIMITS)
    schedule_preview.mount(app, DEFAULT_LIMITS)
    return app, queue


def call(app, method: str, url: str, **kwargs) -> httpx.Response:
    async def send():
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://gateway") as client:
            return await client.request(method, url, **kwargs)

    return asyncio.run(send())


# ----- the engine's reading -----


@pytest.mark.parametrize(
    "setting,value,schedule,expected",
    [
        ("text_prompts", "a lighthouse:[1]*500+[0]*500", True, [[1, 500], [0, 500]]),
        ("text_prompts", "a lighthouse:[2, 0.5]*250+[-1]*500", True, [[2, 1], [0.5, 1]] * 250 + [[-1, 500]]),
        ("text_prompts", "a lighthouse:3", False, [[3, 1000]]),
        ("text_prompts", "a view:[draft]", False, [[1, 1000]]),  # text, not a schedule: weight 1
        ("cut_overview", "[12]*400+[4]*600", True, [[12, 400], [4, 600]]),
        ("cut_icgray_p", "[0.2]*400+[0]*600", True, [[0.2, 400], [0, 600]]),
        ("clip_guidance_scale", "[5000]*300+[2000]*700", True, [[5000, 300], [2000, 700]]),
        ("clip_guidance_scale", 5000, False, [[5000, 1000]]),
        ("cutn_batches", "[4]*100+[1]*900", True, [[4, 100], [1, 900]]),
        ("use_secondary_model", "[True]*250+[False]*750", True, [[1, 250], [0, 750]]),
        ("clamp_grad", "false", False, [[0, 1000]]),
        ("clip_models_schedules", "RN50::openai=[False]*100+[True]*900", True, [[0, 100], [1, 900]]),
        ("video_init_clip_guidance_scale", "[100]*1000", True, [[100, 1000]]),
    ],
)
def test_a_value_is_read_over_the_1000_steps_as_a_job_reads_it(setting, value, schedule, expected):
    found = preview_schedule(setting, value)
    assert found.setting == setting and found.schedule is schedule and len(found.values) == 1000
    assert runs(found.values) == expected


@pytest.mark.parametrize(
    "setting,value,fragment",
    [
        ("text_prompts", "a lighthouse:[1]*500+[0]*400", "covers 900"),
        ("text_prompts", "a lighthouse:[1]*500+[x]*500", "a lighthouse"),
        ("cut_overview", "[12]*400+[4]*600+", "cannot parse"),
        ("cut_overview", "[1.5]*1000", "whole numbers"),
        ("cut_icgray_p", "[2]*1000", "probabilities must be in [0, 1]"),
        ("cutn_batches", "[0]*1000", "every value of the schedule"),
        ("use_secondary_model", "[2]*1000", "true/false"),
        ("clip_models_schedules", "RN51::openai=[True]*1000", "unknown CLIP model 'RN51::openai'"),
        ("clip_models_schedules", "RN50::openai=[1]*1000;ViT-B-32::openai=[1]*1000", "one MODEL=SCHEDULE entry"),
        ("clamp_max", "[-1]*1000", "must be in [0.0, inf], got -1.0"),
        ("cut_overview", "   ", "no value to preview"),
        ("video_init_cutn_batches", None, "no value to preview"),
        ("cut_overview", "[1]*1000" + " " * MAX_PREVIEW_CHARS, f"a preview takes {MAX_PREVIEW_CHARS}"),
    ],
)
def test_a_value_the_setting_refuses_is_a_settings_error_naming_it(setting, value, fragment):
    with pytest.raises(SettingsError) as refused:
        preview_schedule(setting, value)
    assert refused.value.parameter == setting and fragment in str(refused.value), str(refused.value)
    if value is not None and value.strip() and len(value) <= MAX_PREVIEW_CHARS and setting != "clip_models_schedules":
        with pytest.raises(SettingsError, match=f"^{setting}: "):  # a job with it is refused too
            validate_settings(**{setting: [value] if setting == "text_prompts" else value}, tokens=False)


def test_a_setting_that_holds_no_schedule_is_a_value_error_listing_those_that_do():
    for name in ("steps", "width_height", "angle", "no_such_setting"):
        with pytest.raises(ValueError, match="not a setting whose value may be a schedule") as refused:
            preview_schedule(name, "[1]*1000")
        assert not isinstance(refused.value, SettingsError)
        assert "cut_overview, cut_innercut" in str(refused.value)
    assert {"text_prompts", "cut_overview", "use_secondary_model", "clamp_grad", "clip_models_schedules"} <= set(
        PREVIEWED_SETTINGS
    )


# a schedule written as terms [a, b]*n + ...: each term's values and repeats
_values = st.lists(st.floats(-1e4, 1e4, allow_nan=False).map(lambda v: round(v, 3)), min_size=1, max_size=3)


@st.composite
def schedules(draw, values=_values) -> tuple[str, list[float]]:
    """Schedule text over exactly 1000 steps and the values it means, step by step."""
    terms, expanded = [], []
    while len(expanded) < 1000:
        items = draw(values)
        room = (1000 - len(expanded)) // len(items)
        if room == 0:
            items, room = items[:1], 1000 - len(expanded)
        repeat = draw(st.integers(1, min(room, 400)))
        terms.append(f"[{', '.join(repr(v) for v in items)}]*{repeat}")
        expanded += items * repeat
    return "+".join(terms), expanded


@given(written=schedules())
@settings(**QUICK)
def test_any_schedule_is_previewed_as_the_engine_reads_it_for_a_job(written):
    text, expanded = written
    found = preview_schedule("clip_guidance_scale", text)
    assert list(found.values) == expanded and found.schedule
    assert list(found.values) == validate_settings(clip_guidance_scale=text, tokens=False).schedule(
        "clip_guidance_scale"
    )
    weights = preview_schedule("text_prompts", f"a lighthouse:{text}").values
    assert list(weights) == list(parse_prompt(f"a lighthouse:{text}").weights()) == expanded
    encoded = runs(found.values)
    assert sum(n for _, n in encoded) == 1000 and all(a[0] != b[0] for a, b in zip(encoded, encoded[1:], strict=False))
    assert [v for v, n in encoded for _ in range(n)] == expanded


@given(setting=st.sampled_from(PREVIEWED_SETTINGS), value=st.text(max_size=60) | st.floats() | st.booleans())
@settings(**QUICK)
def test_any_value_is_a_preview_or_a_settings_error_naming_the_setting(setting, value):
    try:
        found = preview_schedule(setting, value)
    except SettingsError as exc:
        assert exc.parameter == setting and str(exc).startswith(f"{setting}: ")
        return
    assert len(found.values) == 1000 and all(isinstance(v, float) for v in found.values)


# ----- text_prompts' structured prompt and prompts by frame -----


def test_a_structured_prompt_is_read_with_its_weight_and_the_clip_models_it_applies_to():
    found = preview_prompts({"text": "a lighthouse", "weight": "[2]*300+[-1]*700", "clip_models": ["rn50::openai"]})
    assert found.text == "a lighthouse" and found.clip_models == ("RN50::openai",) and found.schedule
    assert runs(found.values) == [[2.0, 300], [-1.0, 700]]
    assert preview_prompts({"text": "fog", "weight": 0.5}) == PromptPreview("fog", None, (0.5,) * 1000, False)
    assert preview_prompts({"text": "fog:[1]*999+[0]"}).values == (1.0,) * 999 + (0.0,)  # the weight after the colon
    line = preview_prompts("fog:[1]*500+[3]*500")
    assert line.text == "fog" and line.clip_models is None and runs(line.values) == [[1.0, 500], [3.0, 500]]


def test_prompts_by_frame_are_read_per_frame_key_in_frame_order_with_the_frames_they_hold_for():
    found = preview_prompts(
        {"100": [{"text": "storm", "weight": "[1]*500+[4]*500", "clip_models": ["ViT-B-32::openai"]}],
         "0": ["a lighthouse:2", "fog"], "250": ["calm sea:[0.5]*1000"]}
    )  # fmt: skip
    assert [(f.frame, f.until) for f in found] == [(0, 99), (100, 249), (250, None)]
    assert [[(p.text, p.clip_models, p.schedule) for p in f.prompts] for f in found] == [
        [("a lighthouse", None, False), ("fog", None, False)],
        [("storm", ("ViT-B-32::openai",), True)],
        [("calm sea", None, True)],
    ]
    assert found[0].prompts[0].values == (2.0,) * 1000 and runs(found[1].prompts[0].values) == [[1, 500], [4, 500]]
    assert isinstance(found[0], FramePrompts)


@pytest.mark.parametrize(
    "value,fragment",
    [
        ({"text": "sea", "weight": "[1]*500"}, "prompt 'sea': its weight schedule: must cover exactly 1000 steps"),
        ({"text": "sea", "weight": "loud"}, "prompt 'sea': its weight must be a number or a schedule, got 'loud'"),
        ({"text": "sea:2", "weight": 3}, "prompt 'sea:2': the weight is given twice"),
        ({"text": "sea", "clip_models": ["RN51::openai"]}, "prompt 'sea': its clip_models: unknown CLIP model"),
        ({"text": "sea", "clip_models": []}, "prompt 'sea': its clip_models: must be a non-empty list"),
        ({"text": "  ", "weight": 2}, "'text' must be non-empty text"),
        ({"text": "sea", "colour": "blue"}, "unknown key 'colour'; allowed: text, weight, clip_models"),
        ({"0": ["sea:[1]*500+[2]*400"]}, "frame 0: prompt 'sea': its weight schedule: must cover exactly 1000 steps"),
        ({"0": ["sea"], "12": [{"text": "fog", "weight": float("inf")}]}, "frame 12: the prompt weight inf in 'fog'"),
        ({"0": ["sea"], "dusk": ["fog"]}, "keys must be frame numbers (whole numbers >= 0), got 'dusk'"),
        ({"0": "sea", "5": {"text": "fog"}}, "each frame's prompts must be a list of texts"),
        ({"0": []}, "must be a non-empty list of prompts"),
        ({}, "a mapping of frame numbers to prompts must not be empty"),
        ({"0": ["sea"] * 101}, "at most 100 prompts are allowed per frame of a schedule, got 101 at frame 0"),
        ({"0": ["x" * MAX_PREVIEW_CHARS]}, f"over {MAX_PREVIEW_CHARS} characters long as JSON"),
        (["sea", "fog"], "preview one prompt as text"),
    ],
)
def test_a_prompt_structure_a_job_could_not_hold_is_a_settings_error_naming_the_prompt(value, fragment):
    with pytest.raises(SettingsError) as refused:
        preview_prompts(value)
    assert refused.value.parameter == "text_prompts" and fragment in str(refused.value), str(refused.value)
    if isinstance(value, dict) and len(str(value)) < MAX_PREVIEW_CHARS:
        job_value = value if value and not {"text", "colour"} & set(value) else [value]
        with pytest.raises(SettingsError, match="^text_prompts: "):  # a job with it is refused too
            validate_settings(text_prompts=job_value, clip_models=list(CLIP_MODELS[:6]), tokens=False)


_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=30),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=8), inner, max_size=5),
    max_leaves=40,
)


@given(value=_json, limit=st.integers(0, 400))
@settings(**QUICK)
def test_a_structure_s_length_as_json_is_measured_as_json_writes_it(value, limit):
    from disco.settings.preview import _over_json_chars

    written = json.dumps(value, separators=(",", ":"))
    assert _over_json_chars(value, limit) == (len(written) > limit), written


# ----- the route -----


def test_the_route_answers_the_values_as_runs_or_a_refusal_naming_the_setting(tmp_path):
    app, _ = app_of(tmp_path)
    ok = call(app, "POST", "/schedules/preview", json={"setting": "text_prompts", "value": "sea:[1]*500+[0.25]*500"})
    assert ok.status_code == 200, ok.text
    assert ok.json() == {
        "setting": "text_prompts", "text": "sea", "clip_models": None, "schedule": True, "length": 1000,
        "runs": [[1.0, 500], [0.25, 500]], "low": 0.25, "high": 1.0,
    }  # fmt: skip
    flat = call(app, "POST", "/schedules/preview", json={"setting": "clamp_grad", "value": True}).json()
    assert flat["schedule"] is False and flat["runs"] == [[1.0, 1000]]

    bad = call(app, "POST", "/schedules/preview", json={"setting": "cut_overview", "value": "[12]*400+[4]*500"})
    assert bad.status_code == 400
    assert bad.json() == {
        "code": "setting_invalid", "setting": "cut_overview",
        "detail": "cut_overview: must cover exactly 1000 steps, '[12]*400+[4]*500' covers 900",
    }  # fmt: skip
    for body, fragment in [
        ({"setting": "steps", "value": "[1]*1000"}, "not a setting whose value may be a schedule"),
        ({"setting": "cut_overview"}, '{"setting": NAME, "value": VALUE}'),
        ({"setting": ["cut_overview"], "value": "[1]*1000"}, "'setting' must be a setting's name"),
        ([1, 2], '{"setting": NAME, "value": VALUE}'),
    ]:
        refused = call(app, "POST", "/schedules/preview", json=body)
        assert refused.status_code == 400 and refused.json()["code"] == "request_invalid", refused.text
        assert fragment in refused.json()["detail"] and refused.json()["setting"] is None
    for content in (b"{not json", b""):
        refused = call(app, "POST", "/schedules/preview", content=content)
        assert refused.status_code == 400 and refused.json()["code"] in ("setting_invalid", "request_invalid")
    long = call(app, "POST", "/schedules/preview", json={"setting": "cut_overview", "value": "[1]*1000" * 5000})
    assert long.status_code == 400 and long.json()["setting"] == "cut_overview"
    assert f"a preview takes {MAX_PREVIEW_CHARS}" in long.json()["detail"]


def test_the_route_needs_a_token_where_the_service_has_tokens(tmp_path):
    app, _ = app_of(tmp_path, tokens=[TOKEN])
    body = {"setting": "cut_overview", "value": "[12]*400+[4]*600"}
    assert call(app, "POST", "/schedules/preview", json=body).status_code == 401
    answer = call(app, "POST", "/schedules/preview", json=body, headers={"Authorization": f"Bearer {TOKEN}"})
    assert answer.status_code == 200 and answer.json()["runs"] == [[12.0, 400], [4.0, 600]]


# ----- weighted image prompts, as the page sends them -----


def test_the_page_s_weighted_image_prompts_are_accepted_and_reach_the_flow_with_their_weights(tmp_path, monkeypatch):
    monkeypatch.setattr(job_queue, "POLL_S", 0.01)
    app, queue = app_of(tmp_path)
    red, blue = data_uri(png((200, 0, 0))), data_uri(png((0, 0, 200)))
    sent = [f"{red}:0.5", f"{blue}:-2", red]  # as the page builds them: the data URI, ':', the weight as typed
    body = {
        "text_prompts": ["a lighthouse"],
        "width_height": [64, 64],
        "steps": 3,
        "skip_steps": 0,
        "seed": 3,
        "n_batches": 1,
    }
    answer = call(app, "POST", "/jobs", json={**body, "image_prompts": sent})
    assert answer.status_code == 202, answer.text
    job = queue.jobs[answer.json()["id"]]

    async def run_one():
        runner = asyncio.create_task(queue.run())
        try:
            await asyncio.wait_for(queue.wait(job.id), 30)
        finally:
            runner.cancel()

    asyncio.run(run_one())
    (doc,) = queue.flow.sent
    received = [parse_image_prompt(p) for p in wire.restore_numbers(doc.tags)["image_prompts"]]
    assert [p.weight for p in received] == [0.5, -2.0, 1.0]  # as the Flow's encoder reads them
    assert [data_uri_bytes(p.source) for p in received] == [png((200, 0, 0)), png((0, 0, 200)), png((200, 0, 0))]
    # a path is refused at once, as the Flow would refuse it: the server never opens one
    path = call(app, "POST", "/jobs", json={**body, "image_prompts": ["/etc/hostname:2"]})
    assert path.status_code == 400 and path.json()["setting"] == "image_prompts", path.text
    assert "does not open paths or URLs" in path.json()["detail"] and len(queue.jobs) == 1
    # weights summing to 0 with the text prompts' are refused, naming the prompts
    refused = call(app, "POST", "/jobs", json={**body, "image_prompts": [f"{red}:-1"]})
    assert refused.status_code == 400 and refused.json()["setting"] == "text_prompts", refused.text


def test_the_route_answers_a_structured_prompt_and_prompts_by_frame_or_a_refusal_naming_the_prompt(tmp_path):
    app, _ = app_of(tmp_path)
    structured = {"text": "sea", "weight": "[1]*500+[0.25]*500", "clip_models": ["vit-b-32::openai"]}
    ok = call(app, "POST", "/schedules/preview", json={"setting": "text_prompts", "value": structured})
    assert ok.status_code == 200, ok.text
    assert ok.json() == {
        "setting": "text_prompts", "text": "sea", "clip_models": ["ViT-B-32::openai"], "schedule": True,
        "length": 1000, "runs": [[1.0, 500], [0.25, 500]], "low": 0.25, "high": 1.0,
    }  # fmt: skip
    by_frame = {"0": ["a lighthouse:2", {"text": "fog", "weight": "[0]*100+[1]*900"}], "40": ["storm"]}
    ok = call(app, "POST", "/schedules/preview", json={"setting": "text_prompts", "value": by_frame})
    assert ok.status_code == 200, ok.text
    assert ok.json() == {"setting": "text_prompts", "frames": [
        {"frame": 0, "until": 39, "prompts": [
            {"text": "a lighthouse", "clip_models": None, "schedule": False, "length": 1000, "runs": [[2.0, 1000]],
             "low": 2.0, "high": 2.0},
            {"text": "fog", "clip_models": None, "schedule": True, "length": 1000, "runs": [[0.0, 100], [1.0, 900]],
             "low": 0.0, "high": 1.0},
        ]},
        {"frame": 40, "until": None, "prompts": [
            {"text": "storm", "clip_models": None, "schedule": False, "length": 1000, "runs": [[1.0, 1000]],
             "low": 1.0, "high": 1.0},
        ]},
    ]}  # fmt: skip
    for value, detail in [
        ({"0": ["sea"], "9": [{"text": "fog", "weight": "[1]*9"}]}, "frame 9: prompt 'fog': its weight schedule"),
        ({"text": "sea", "clip_models": ["RN51::openai"]}, "prompt 'sea': its clip_models: unknown CLIP model"),
        ({"0": ["sea"], "0.5": ["fog"]}, "keys must be frame numbers"),
        (["sea"], "for text_prompts also a structured prompt or prompts by frame, got list"),
    ]:
        refused = call(app, "POST", "/schedules/preview", json={"setting": "text_prompts", "value": value})
        assert refused.status_code == 400, refused.text
        assert refused.json()["code"] == "setting_invalid" and refused.json()["setting"] == "text_prompts"
        assert refused.json()["detail"].startswith("text_prompts: ") and detail in refused.json()["detail"]
    other = call(app, "POST", "/schedules/preview", json={"setting": "cut_overview", "value": {"0": ["[1]*1000"]}})
    assert other.status_code == 400 and other.json()["setting"] == "cut_overview"  # only text_prompts takes objects


# prompt structures as a caller writes them, and what each prompt's weight is at every step
_texts = st.text(st.characters(codec="utf-8", exclude_characters=":[]"), min_size=1, max_size=12).filter(str.strip)


@st.composite
def written_prompts(draw) -> tuple[str | dict, str, tuple[str, ...] | None, list[float]]:
    """A prompt line or a structured prompt; its text, CLIP models and weight at each step."""
    text = draw(_texts)
    weight = draw(st.none() | st.floats(-50, 50).map(lambda v: round(v, 2)) | schedules())
    written, expanded = (weight, weight) if not isinstance(weight, tuple) else weight
    steps = [1.0] * 1000 if weight is None else expanded if isinstance(expanded, list) else [float(expanded)] * 1000
    models = draw(st.none() | st.lists(st.sampled_from(CLIP_MODELS), min_size=1, max_size=3, unique=True))
    if models is None and draw(st.booleans()):  # the line form
        return (text if weight is None else f"{text}:{written}"), text.strip(), None, steps
    prompt = {"text": text} | ({} if weight is None else {"weight": written})
    if models is not None:
        prompt["clip_models"] = [m.lower() if draw(st.booleans()) else m for m in models]  # case is forgiven
    return prompt, text.strip(), None if models is None else tuple(models), steps


@given(
    by_frame=st.dictionaries(st.integers(0, 10**6), st.lists(written_prompts(), min_size=1, max_size=3), max_size=3),
    one=written_prompts(),
)
@settings(**(QUICK | {"max_examples": 25}))
def test_any_prompt_structure_is_previewed_prompt_by_prompt_and_frame_by_frame_as_written(
    tmp_path_factory, by_frame, one
):
    app, _ = app_of(tmp_path_factory.mktemp("prompts"))
    written, text, models, steps = one
    answer = call(app, "POST", "/schedules/preview", json={"setting": "text_prompts", "value": written}).json()
    assert (answer["text"], answer["clip_models"]) == (text, None if models is None else list(models))
    assert [v for v, n in answer["runs"] for _ in range(n)] == steps
    value = {str(frame): [p[0] for p in prompts] for frame, prompts in by_frame.items()}
    response = call(app, "POST", "/schedules/preview", json={"setting": "text_prompts", "value": value})
    if not by_frame:
        assert response.status_code == 400 and "must not be empty" in response.json()["detail"]
        return
    assert response.status_code == 200, response.text
    frames = response.json()["frames"]
    keys = sorted(by_frame)
    assert [(f["frame"], f["until"]) for f in frames] == list(
        zip(keys, [k - 1 for k in keys[1:]] + [None], strict=True)
    )
    for frame in frames:
        expected = by_frame[frame["frame"]]
        assert [(p["text"], p["clip_models"]) for p in frame["prompts"]] == [
            (t, None if m is None else list(m)) for _, t, m, _ in expected
        ]
        assert [[v for v, n in p["runs"] for _ in range(n)] for p in frame["prompts"]] == [s for *_, s in expected]
