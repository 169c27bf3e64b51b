"""Video Input with optical flow (disco.video_flow): a frame's start from the previous frame carried
along the video's flow, the consistency mask's effect, the blending of the frames written, a whole
flow-warped run through the sampler executor's own code (RAFT's test weights), the notebook's
``video_init_*`` overrides as the sampler receives them, and the new settings' refusals."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import TINY
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from make_test_weights import make
from test_animation import ANIMATED, NO_FLOW, cancel_after, request, sampler, video
from test_settings_properties import values as any_values

from disco.animation import animate
from disco.animation_plan import flow_model_needed, frame_settings, plan_run
from disco.clip_model import encode_texts
from disco.images import array_to_init, resized_frame
from disco.optical_flow import FlowModel, load_raft, warp_with_flow
from disco.settings import VIDEO_INIT_OVERRIDES, SettingsError, validate_settings, with_video_init_overrides
from disco.video import video_frames, video_info
from disco.video_flow import VideoFlow, blend, flow_start, written_frame
from disco.weights import RAFT_FILE, files_needed
from disco_service.client import api
from disco_service.client.animations import plan_animation
from disco_service.server.results import ResultStore

FLOW_SETTINGS = (
    "video_init_flow_warp",
    "video_init_flow_blend",
    "video_init_check_consistency",
    "video_init_blend_mode",
)


def textured(seed: int = 0, size: tuple[int, int] = (40, 48)) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (*size, 3), dtype=np.uint8)


def square_motion():
    """Forward (frame a to b) and backward flows of a 10 x 10 square moving 4 pixels right."""
    forward = np.zeros((2, 40, 48), np.float32)
    backward = np.zeros((2, 40, 48), np.float32)
    forward[0, 10:20, 20:30] = 4.0
    backward[0, 10:20, 24:34] = -4.0
    return forward, backward


class HandMadeFlow:
    """A flow model that knows the square's motion: (previous, current) -> forward, else backward."""

    def __init__(self, previous: np.ndarray):
        self.previous = previous
        self.forward, self.backward = square_motion()
        self.calls: list[str] = []

    def flow(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        self.calls.append("forward" if a is self.previous else "backward")
        return self.forward if a is self.previous else self.backward


# ----- the steps, on hand-made flows -----


def test_a_frame_starts_from_the_previous_one_carried_along_and_blended_with_its_video_frame():
    previous_video, current_video, made = textured(1), textured(2), textured(3)
    flows = HandMadeFlow(previous_video)
    motion = VideoFlow.between(previous_video, current_video, flows.flow, check_consistency=False)
    assert flows.calls == ["backward"] and motion.reliable is None  # one RAFT flow without the check
    carried = warp_with_flow(made, square_motion()[1])
    start = flow_start(current_video, made, motion, 0.75)
    want = np.rint(current_video * 0.25 + carried.astype(float) * 0.75)
    np.testing.assert_array_equal(start, want.astype(np.uint8))
    # the square's new place (columns 24..33) comes from where it was in the frame made (20..29)
    np.testing.assert_array_equal(carried[10:20, 24:34], made[10:20, 20:30])
    assert np.array_equal(flow_start(current_video, made, motion, 0.0), current_video)
    assert np.array_equal(flow_start(current_video, made, motion, 1.0), carried)


def test_the_consistency_check_starts_uncovered_pixels_from_the_video_frame_alone():
    previous_video, current_video, made = textured(1), textured(2), textured(3)
    flows = HandMadeFlow(previous_video)
    motion = VideoFlow.between(previous_video, current_video, flows.flow, check_consistency=True)
    assert flows.calls == ["backward", "forward"]  # the check needs the flow back too
    uncovered = np.zeros((40, 48), bool)
    uncovered[10:20, 20:24] = True  # behind the square in the previous frame: nothing to carry over
    assert np.array_equal(motion.reliable == 0, uncovered)
    start = flow_start(current_video, made, motion, 1.0)
    np.testing.assert_array_equal(start[uncovered], current_video[uncovered])
    np.testing.assert_array_equal(start[~uncovered], motion.carried(made)[~uncovered])


def test_the_frames_written_are_blended_half_and_half_as_the_blend_mode_says():
    made, before = textured(4), textured(5)
    motion = VideoFlow(square_motion()[1], None)
    assert written_frame(made, before, motion, "None") is made
    assert written_frame(made, None, motion, "optical flow") is made  # frame 0
    np.testing.assert_array_equal(written_frame(made, before, None, "linear"), blend(made, before, 0.5))
    np.testing.assert_array_equal(
        written_frame(made, before, motion, "optical flow"), blend(made, motion.carried(before), 0.5)
    )
    with pytest.raises(ValueError, match="needs the video's motion"):
        written_frame(made, before, None, "optical flow")


# ----- RAFT as an animation asks for it -----


class ConstantFlow(torch.nn.Module):
    """RAFT's interface, answering a flow of (3, -2) pixels everywhere at the size it is given."""

    def __init__(self):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(1))
        self.sizes: list[tuple[int, int]] = []

    def forward(self, a, b, num_flow_updates):
        self.sizes.append(tuple(a.shape[-2:]))
        flow = torch.zeros(1, 2, *a.shape[-2:])
        flow[:, 0], flow[:, 1] = 3.0, -2.0
        return [flow]


def test_small_frames_are_enlarged_for_raft_and_the_flow_shrunk_back():
    model = ConstantFlow()
    flow = FlowModel(model).flow(textured(0, (64, 48)), textured(1, (64, 48)))
    assert model.sizes == [(192, 144)]  # x3: both sides at least 128
    assert flow.shape == (2, 64, 48)
    np.testing.assert_allclose(flow[0], 1.0, atol=1e-6)
    np.testing.assert_allclose(flow[1], -2 / 3, atol=1e-6)
    model.sizes.clear()
    FlowModel(model).flow(textured(0, (128, 136)), textured(1, (128, 136)))
    assert model.sizes == [(128, 136)]  # large enough: as it is


# ----- a whole flow-warped run -----


@pytest.fixture(scope="module")
def raft(tmp_path_factory) -> FlowModel:
    directory = tmp_path_factory.mktemp("raft")
    make(directory, [RAFT_FILE])
    return FlowModel(load_raft(directory / RAFT_FILE), iterations=2)  # random weights: quick, deterministic


@pytest.fixture
def starts(monkeypatch):
    import disco.animation as animation

    seen = []
    real = animation.sample_image

    def recording(settings, embeds, weights, models, seed, init_image=None):
        seen.append({"settings": settings, "init": init_image})
        return real(settings, embeds, weights, models, seed=seed, init_image=init_image)

    monkeypatch.setattr(animation, "sample_image", recording)
    return seen


class RecordedFlow:
    """A flow model that keeps every flow it was asked for: (frame a, frame b, flow)."""

    def __init__(self, model: FlowModel):
        self.model, self.calls = model, []

    def flow(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        self.calls.append((a, b, self.model.flow(a, b)))
        return self.calls[-1][2]


def moving_video(directory: Path, frames: int = 3) -> str:
    """A textured picture sliding 4 pixels right per frame (64 x 64)."""
    from test_animation import mp4_bytes

    base = np.kron(textured(7, (16, 32)), np.ones((4, 4, 1), np.uint8))  # 4 x 4 blocks survive compression
    path = directory / "moving.mp4"
    path.write_bytes(mp4_bytes([base[:, 4 * n : 4 * n + 64] for n in range(frames)], fps=10))
    return str(path)


def test_a_flow_warped_video_run_writes_its_frames_and_differs_from_one_without(tiny_models, raft, tmp_path, starts):
    recorded = RecordedFlow(raft)
    models = dataclasses.replace(tiny_models, flow=recorded)
    flow = {"video_init_flow_warp": True, "video_init_flow_blend": 0.6, "video_init_blend_mode": "None"}
    runs = {}
    for name, chosen in (("flow", flow), ("plain", NO_FLOW)):
        out = tmp_path / name
        out.mkdir()
        plan, doc = request(
            models, out, animation_mode="Video Input", video_init_path=moving_video(out), extract_nth_frame=1,
            **chosen,
        )  # fmt: skip
        assert plan.plan.flow_model is (name == "flow") and plan.frames == 3
        sampler(models, out)._generate(doc)
        assert doc.tags["status"] == "done"
        runs[name] = {int(c.tags["frame"]): c.tensor for c in doc.chunks}
        store = ResultStore(out / "results")
        assert [n for n, _ in store.animation_frames(doc.id)] == [0, 1, 2]
        assert video_info(store.file(doc.id, "video.mp4").read_bytes()).frames == 3
    assert sorted(runs["flow"]) == [0, 1, 2]
    flow_starts, plain_starts = starts[:3], starts[3:]
    # frame 0 of a flow-warped run skips skip_steps (0 here) and starts from its video frame, as the plain run's
    assert flow_starts[0]["settings"].skip_steps == 0 and plain_starts[0]["settings"].skip_steps == 1
    assert all(s["settings"].skip_steps == 1 for s in flow_starts[1:] + plain_starts[1:])
    assert torch.equal(flow_starts[0]["init"], plain_starts[0]["init"])
    # frame n > 0 starts from frame n - 1 as made, carried along RAFT's flow, 0.6 of it
    pictures = [resized_frame(p, 64, 64) for p in video_frames(Path(tmp_path / "flow" / "moving.mp4").read_bytes(), 1)]
    assert len(recorded.calls) == 2  # one flow per later frame of the flow-warped run, none for the plain one
    for n, (current, previous, backward) in zip((1, 2), recorded.calls, strict=True):
        assert np.array_equal(current, pictures[n]) and np.array_equal(previous, pictures[n - 1])
        want = flow_start(pictures[n], runs["flow"][n - 1], VideoFlow(backward, None), 0.6)
        assert torch.equal(flow_starts[n]["init"], array_to_init(want, 64, 64))
        assert not torch.equal(flow_starts[n]["init"], plain_starts[n]["init"])
    assert any(not np.array_equal(runs["flow"][n], runs["plain"][n]) for n in (1, 2))


def test_the_frames_written_are_blended_and_the_next_frame_starts_from_the_frame_as_made(
    tiny_models, raft, tmp_path, starts
):
    models = dataclasses.replace(tiny_models, flow=RecordedFlow(raft))
    plan, doc = request(
        models, tmp_path, animation_mode="Video Input", video_init_path=video(tmp_path, 2), extract_nth_frame=1,
        video_init_flow_warp=False, video_init_blend_mode="linear",
    )  # fmt: skip
    assert plan.plan.flow_model is False  # a linear blend needs no flow
    import disco.animation as animation

    made, real = [], animation.to_uint8_hwc
    with pytest.MonkeyPatch.context() as patch:  # every frame as made, before it is written
        patch.setattr(animation, "to_uint8_hwc", lambda image: made.append(real(image)) or made[-1])
        sampler(models, tmp_path)._generate(doc)
    written = {int(c.tags["frame"]): c.tensor for c in doc.chunks}
    assert np.array_equal(written[0], made[0])
    assert np.array_equal(written[1], blend(made[1], made[0], 0.5)) and not np.array_equal(written[1], made[1])
    assert models.flow.calls == []  # a linear blend asks for no flow


# ----- the notebook's video_init_* overrides -----

OVERRIDES = {
    "video_init_steps": 6,
    "video_init_clip_guidance_scale": 321,
    "video_init_tv_scale": "[7]*1000",
    "video_init_range_scale": 11,
    "video_init_sat_scale": 13,
    "video_init_cutn_batches": 2,
    "video_init_skip_steps": 3,
    "video_init_frames_scale": 17,
    "video_init_frames_skip_steps": "20%",
}


# each override's effect with steps 8, skip_steps 1, frames_skip_steps 50%, frames_scale 1500 (flow warp on):
# {(frame, attribute): value} for frame 0 (it skips skip_steps) and a later frame (frames_skip_steps)
EFFECTS = {
    "video_init_steps": {(0, "steps"): 6, (1, "steps"): 6, (1, "skip_steps"): 3},  # 50% of 6
    "video_init_clip_guidance_scale": {(0, "clip_guidance_scale"): 321, (1, "clip_guidance_scale"): 321},
    "video_init_tv_scale": {(0, "tv_scale"): "[7]*1000", (1, "tv_scale"): "[7]*1000"},
    "video_init_range_scale": {(0, "range_scale"): 11, (1, "range_scale"): 11},
    "video_init_sat_scale": {(0, "sat_scale"): 13, (1, "sat_scale"): 13},
    "video_init_cutn_batches": {(0, "cutn_batches"): 2, (1, "cutn_batches"): 2},
    "video_init_skip_steps": {(0, "skip_steps"): 3},  # later frames skip frames_skip_steps
    "video_init_frames_scale": {(0, "init_scale"): 17, (1, "init_scale"): 17},
    "video_init_frames_skip_steps": {(1, "skip_steps"): 1},  # floor(8 * 20%); frame 0 skips skip_steps
}
MAIN = {**TINY, "steps": 8, "skip_steps": 1, "frames_skip_steps": "50%", "frames_scale": 1500, "tokens": False}


@pytest.mark.parametrize("override", list(VIDEO_INIT_OVERRIDES))
def test_each_override_replaces_its_setting_in_video_input_only(override):
    replaced, value = VIDEO_INIT_OVERRIDES[override], OVERRIDES[override]
    plain = validate_settings(**MAIN, animation_mode="Video Input")
    s = validate_settings(**MAIN, animation_mode="Video Input", **{override: value})
    assert getattr(plain, override) is None and getattr(s, replaced) == getattr(plain, replaced)  # kept as given
    for (frame, attribute), want in EFFECTS[override].items():
        assert getattr(frame_settings(s, frame), attribute) == want, (frame, attribute)
        assert getattr(frame_settings(plain, frame), attribute) != want, (frame, attribute)  # the override did it
    plan = plan_run(s, video=video_info(TINY_VIDEO))
    first, later = frame_settings(s, 0), frame_settings(s, 1)
    assert (plan.first_steps, plan.later_steps) == (first.steps - first.skip_steps, later.steps - later.skip_steps)
    # any other mode keeps its own settings
    other = validate_settings(**MAIN, animation_mode="2D", **{override: value})
    assert with_video_init_overrides(other) is other and frame_settings(other, 0) is other


def tiny_video() -> bytes:
    from test_animation import coloured_frames, mp4_bytes

    return mp4_bytes(coloured_frames(3), fps=10)


TINY_VIDEO = tiny_video()


def test_the_sampler_receives_every_override_in_place(tiny_models, tmp_path, starts):
    values = {**OVERRIDES, "video_init_steps": 3, "video_init_skip_steps": 1, "video_init_frames_skip_steps": "67%"}
    plan, doc = request(
        tiny_models, tmp_path, animation_mode="Video Input", video_init_path=video(tmp_path, 2), extract_nth_frame=1,
        **NO_FLOW, **values,
    )  # fmt: skip
    sampler(tiny_models, tmp_path)._generate(doc)
    assert doc.tags["status"] == "done" and len(starts) == 2
    for start in starts:
        got = start["settings"]
        assert (got.steps, got.skip_steps, got.init_scale) == (3, 2, 17)  # no flow warp: 67% of 3 for every frame
        assert (got.clip_guidance_scale, got.tv_scale, got.range_scale, got.sat_scale) == (321, "[7]*1000", 11, 13)
        assert got.cutn_batches == 2
    assert plan.steps == 1 + 1


# ----- the settings: defaults, refusals, the model files -----


def test_the_notebook_defaults_and_what_a_run_needs():
    s = validate_settings(**TINY, animation_mode="Video Input", tokens=False)
    assert (s.video_init_flow_warp, s.video_init_flow_blend, s.video_init_check_consistency) == (True, 0.999, False)
    assert s.video_init_blend_mode == "optical flow" and all(getattr(s, o) is None for o in VIDEO_INIT_OVERRIDES)
    assert flow_model_needed(s)
    assert not flow_model_needed(dataclasses.replace(s, **NO_FLOW))
    assert not flow_model_needed(dataclasses.replace(s, animation_mode="2D"))
    assert validate_settings(**TINY, video_init_blend_mode="OPTICAL FLOW", tokens=False).video_init_blend_mode == (
        "optical flow"
    )
    assert validate_settings(**TINY, video_init_blend_mode="none", tokens=False).video_init_blend_mode == "None"
    assert RAFT_FILE in files_needed(s.diffusion_model, True, False, s.clip_models, (), True)
    assert RAFT_FILE not in files_needed(s.diffusion_model, True, False, s.clip_models)


def test_raft_is_downloaded_only_for_a_run_that_uses_the_flow(monkeypatch):
    asked = []
    monkeypatch.setattr("disco.weights.ensure_all", lambda names, *a, **k: asked.append(names) or [])
    for values in (
        {"animation_mode": "Video Input", "max_frames": 3},
        {"animation_mode": "Video Input", "max_frames": 3, **NO_FLOW},
        {"animation_mode": "Video Input", "max_frames": 1},
        {"animation_mode": "2D", "max_frames": 3},
    ):
        api.download_models(validate_settings(**TINY, **values, tokens=False), with_init_loss=False, progress=False)
    assert [RAFT_FILE in names for names in asked] == [True, False, False, False]


@pytest.mark.parametrize(
    ("values", "named", "words"),
    [
        ({"video_init_flow_blend": 1.5}, "video_init_flow_blend", r"\[0.0, 1.0\]"),
        ({"video_init_flow_warp": "maybe"}, "video_init_flow_warp", "true or false"),
        ({"video_init_blend_mode": "cubic"}, "video_init_blend_mode", "'None', 'linear', 'optical flow'"),
        ({"video_init_steps": 0}, "video_init_steps", r"\[1, 1000\]"),
        ({"video_init_cutn_batches": 65}, "video_init_cutn_batches", "64"),
        ({"video_init_frames_skip_steps": "70"}, "video_init_frames_skip_steps", "percentage"),
        ({"video_init_frames_scale": -1}, "video_init_frames_scale", "0.0"),
        ({"video_init_skip_steps": 4}, "video_init_skip_steps", "skips video_init_skip_steps 4 of steps 4"),
        ({"video_init_steps": 2, "skip_steps": 3}, "video_init_steps", "skips skip_steps 3 of video_init_steps 2"),
    ],
)
def test_bad_values_are_refused_naming_the_setting(values, named, words):
    base = {**TINY, "steps": 4, "skip_steps": 0, "tokens": False, "animation_mode": "Video Input"}
    with pytest.raises(SettingsError, match=words) as refused:
        validate_settings(**{**base, **values})
    assert refused.value.parameter == named


def test_a_flow_warped_video_cancelled_after_frame_0_resumes_as_if_never_stopped(
    tiny_models, raft, tmp_path, monkeypatch
):
    from disco_service import wire

    models = dataclasses.replace(tiny_models, flow=RecordedFlow(raft))
    clip = moving_video(tmp_path)
    out = tmp_path / "out"
    chosen = dict(
        animation_mode="Video Input", video_init_path=clip, extract_nth_frame=1, video_init_flow_warp=True,
        video_init_flow_blend=0.6, video_init_blend_mode="None", batch_name="river", output_dir=str(out),
    )  # fmt: skip
    whole_dir = tmp_path / "whole"
    _, whole = request(models, whole_dir, **{**chosen, "output_dir": str(whole_dir)})
    sampler(models, whole_dir)._generate(whole)
    uninterrupted = {int(c.tags["frame"]): c.tensor for c in whole.chunks}
    assert sorted(uninterrupted) == [0, 1, 2]

    plan, doc = request(models, tmp_path, **chosen)
    executor = sampler(models, tmp_path)
    cancel_after(executor, plan, doc, 0, monkeypatch)
    executor._generate(doc)
    assert doc.tags["status"] == "cancelled" and [int(c.tags["frame"]) for c in doc.chunks] == [0]

    models.flow.calls.clear()
    resumed, again = request(models, tmp_path, **chosen, resume_run=True)
    assert resumed.start_frame == 1 and resumed.prefix == "reverse_diffusion-river-5"
    s = wire.settings_from_tags(again.tags)
    assert np.array_equal(wire.resumed_frame(s, 1, again.uri), uninterrupted[0])  # frame 0 as read back from its PNG
    assert wire.check_request_media(s, again.blob, again.tags["start_frame"], again.uri) == 1  # as the encoder
    sampler(models, tmp_path)._generate(again)
    assert again.tags["status"] == "done" and not again.uri  # the frame sent is not sent back
    made = {int(c.tags["frame"]): c.tensor for c in again.chunks}
    assert sorted(made) == [1, 2]
    for n in (1, 2):
        assert np.array_equal(made[n], uninterrupted[n]), n  # bit for bit, as if it had never stopped
    pictures = [resized_frame(p, 64, 64) for p in video_frames(Path(clip).read_bytes(), 1)]
    assert len(models.flow.calls) == 2  # frame 1's flow is between video frames 1 and 0, as unresumed
    assert np.array_equal(models.flow.calls[0][0], pictures[1]) and np.array_equal(models.flow.calls[0][1], pictures[0])


def test_a_video_written_blended_resumes_from_its_frame_as_written_and_the_server_checks_the_frame_sent(tmp_path):
    from disco.images import png_bytes
    from disco.prompts import data_uri
    from disco_service import wire
    from disco_service.outputs import base_prefix, write_frame

    clip = tmp_path / "clip.mp4"
    clip.write_bytes(TINY_VIDEO)
    write_frame(tmp_path, base_prefix("", 7), 0, png_bytes(np.full((64, 64, 3), 9, np.uint8)), {})
    s = validate_settings(
        **ANIMATED, animation_mode="Video Input", video_init_path=str(clip), output_dir=str(tmp_path), seed=7,
        resume_run=True, tokens=False,
    )  # fmt: skip
    assert s.video_init_blend_mode == "optical flow"  # the notebook's default
    for mode in ("optical flow", "linear", "None"):  # written blended or not: frame 0's PNG as written goes along
        run = plan_animation(dataclasses.replace(s, video_init_blend_mode=mode), None)
        doc = run.document()
        assert run.start_frame == 1 and doc.blob == TINY_VIDEO  # the video in blob, frame 0's PNG in uri
        assert np.array_equal(wire.resumed_frame(run.settings, 1, doc.uri), np.full((64, 64, 3), 9, np.uint8))
        assert wire.check_request_media(run.settings, TINY_VIDEO, 1, doc.uri) == 1  # as the encoder
    assert not plan_animation(dataclasses.replace(s, **NO_FLOW), None).document().uri  # no flow: the video alone
    # the encoder's check: frame 0's PNG must be there, of the run's size
    wrong_size = data_uri(png_bytes(np.zeros((48, 64, 3), np.uint8)))
    for sent in (None, "", "/etc/passwd", "data:image/png;base64,%%%", data_uri(b"not a picture"), wrong_size):
        with pytest.raises(SettingsError, match="^resume_from_frame: .*needs frame 0"):
            wire.check_request_media(s, TINY_VIDEO, 1, sent)
    assert wire.check_request_media(dataclasses.replace(s, **NO_FLOW), TINY_VIDEO, 1) == 1


def test_a_run_written_blended_resumed_at_frame_2_starts_from_frame_1_as_written(tiny_models, raft, monkeypatch):
    """As the notebook resumes: the frame in the file (the blend) is carried along the flow, since the
    frame as made is in no file."""
    import disco.animation as animation

    models = dataclasses.replace(tiny_models, flow=raft)
    s = validate_settings(
        **ANIMATED, animation_mode="Video Input", video_init_path="clip.mp4", extract_nth_frame=1, max_frames=3,
        video_init_flow_warp=True, video_init_blend_mode="optical flow", tokens=False,
    )  # fmt: skip
    warped, real = [], animation.flow_start
    monkeypatch.setattr(animation, "flow_start", lambda *a: warped.append(a[1]) or real(*a))
    written = np.kron(textured(3, (16, 16)), np.ones((4, 4, 1), np.uint8))  # frame 1 as its PNG holds it
    videos = [np.roll(written, 4 * n, axis=1) for n in range(3)]
    steps = animate(
        s, lambda n: (encode_texts(models.clip, ["a river"]), [1.0]), models, 5, start_frame=2,
        previous_frame=written, video_frames=videos[2:], frames=3, previous_video_frame=videos[1],
    )  # fmt: skip
    first = next(steps)
    assert first.frame == 2 and len(warped) == 1 and np.array_equal(warped[0], written)


NEW_SETTINGS = [*FLOW_SETTINGS, *VIDEO_INIT_OVERRIDES]


@pytest.mark.parametrize("name", NEW_SETTINGS)
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(value=any_values)
def test_any_value_of_a_video_setting_is_valid_or_refused_by_name(name, value):
    base = {**TINY, "steps": 4, "skip_steps": 0, "tokens": False, "animation_mode": "Video Input"}
    try:
        s = validate_settings(**base, **{name: value})
    except SettingsError as exc:
        assert exc.parameter == name, f"{name}={value!r} was refused naming {exc.parameter}: {exc}"
        return
    assert validate_settings(s, tokens=False) == s  # what was accepted stays accepted, unchanged
    run = with_video_init_overrides(s)
    assert run.skip_steps < run.steps or not s.video_init_flow_warp
    assert frame_settings(s, 1).steps - frame_settings(s, 1).skip_steps >= 1


@pytest.mark.parametrize("name", NEW_SETTINGS)
@given(data=st.data())
@settings(max_examples=10, deadline=None)
def test_values_of_the_wrong_kind_are_refused_naming_the_setting(name, data):
    if name in ("video_init_flow_warp", "video_init_check_consistency"):
        wrong = data.draw(st.sampled_from(["yes please", 2, -1, [True]]))
    elif name == "video_init_blend_mode":
        wrong = data.draw(st.integers() | st.sampled_from(["optical", "flow", ""]))
    else:
        wrong = data.draw(st.sampled_from([[1, 2], {"a": 1}, object(), "not a number"]))
    with pytest.raises(SettingsError) as refused:
        validate_settings(**TINY, tokens=False, animation_mode="Video Input", **{name: wrong})
    assert refused.value.parameter == name
