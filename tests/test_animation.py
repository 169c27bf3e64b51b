"""Animation: key frames, the 2D warp, video frames, the frame loop, cancel and resume.

The frame loop runs on the test models (64x64, a few steps) through the sampler executor's own
code, without Jina's runtime; one test runs a whole animation through the served Flow.
"""

import math

import cv2
import numpy as np
import pytest
import torch
from conftest import TINY
from docarray import Document, DocumentArray
from PIL import Image

import disco.animation as animation
from disco.animation import Motion, camera_series, motion_series, transform_matrix_2d, warp_2d
from disco.clip_model import encode_texts
from disco.images import array_to_init, to_uint8_hwc
from disco.keyframes import keyframe_series, parse_key_frames
from disco.prompts import prompt_key_at, prompt_sets
from disco.settings import SettingsError, frames_skip_steps, kind, validate_settings
from disco.video import video_frames, video_info, write_mp4
from disco_service import wire
from disco_service.client.animations import plan_animation
from disco_service.outputs import png_settings
from disco_service.server.jobs import JobBoard
from disco_service.server.results import ResultStore
from executors.diffusion_sampler import DiffusionSampler

# frame 0: 2 steps, every later frame 1 (frames_skip_steps skips half of them)
ANIMATED = {**TINY, "steps": 2, "skip_steps": 0, "frames_skip_steps": "50%", "text_prompts": ["a lighthouse"]}
# a video whose every frame starts from its own picture, written as made (tests/test_video_flow.py: with the flow)
NO_FLOW = {"video_init_flow_warp": False, "video_init_blend_mode": "None"}


# ----- key frames -----


def test_key_frames_are_interpolated_linearly_between_keys_and_held_outside():
    assert parse_key_frames("zoom", "0: (1), 10: (1.05)") == {0: "1", 10: "1.05"}
    zoom = keyframe_series("zoom", "0: (1), 10: (1.05)", 12)
    assert zoom[0] == 1 and zoom[10] == 1.05 and zoom[11] == 1.05  # held after the last key
    assert zoom[5] == pytest.approx(1.025) and zoom[2] == pytest.approx(1.01)
    # before the first key: its value; between: a straight line; a bare value: every frame
    assert keyframe_series("angle", "2: (4), 6: (-4)", 8) == pytest.approx([4, 4, 4, 2, 0, -2, -4, -4])
    assert keyframe_series("angle", "3", 3) == [3.0, 3.0, 3.0]
    # a key past the last frame still pulls the line: frame 4 of 0:(0), 10:(10) is 4
    assert keyframe_series("angle", "0: (0), 10: (10)", 5) == pytest.approx([0, 1, 2, 3, 4])


def test_an_expression_of_t_is_evaluated_at_every_frame_up_to_the_next_key():
    zoom = keyframe_series("zoom", "0: (1+0.002*sin(t/10))", 4)
    assert zoom == pytest.approx([1.0, 1 + 0.002 * math.sin(0.1), 1 + 0.002 * math.sin(0.2), 1 + 0.002 * math.sin(0.3)])
    # frames 0-3 interpolate from 0 to the expression's value at frame 4 (2*4); 4-5 follow it; 6 on: 3
    assert keyframe_series("x", "0: (0), 4: (t*2), 6: (3)", 8) == pytest.approx([0, 2, 4, 6, 8, 10, 3, 3])
    assert keyframe_series("x", "0: (t**2 % 5 + pi - pi)", 4) == pytest.approx([0, 1, 4, 4])


def test_with_key_frames_off_every_frame_moves_by_the_frame_0_value():
    motion = {"angle": "0: (2), 4: (10)", "zoom": "1.05", "translation_x": "0: (t)", "translation_y": "0: (1), 2: (3)"}
    on = validate_settings(**ANIMATED, animation_mode="2D", max_frames=4, **motion)
    assert on.key_frames  # the notebook's default
    assert [m.angle for m in motion_series(on)] == [2, 4, 6, 8] and motion_series(on)[3].translation_x == 3
    off = validate_settings(**ANIMATED, animation_mode="2D", max_frames=4, key_frames=False, **motion)
    assert motion_series(off) == [Motion(angle=2, zoom=1.05, translation_x=0, translation_y=1)] * 4
    moves = camera_series(validate_settings(**ANIMATED, animation_mode="3D", max_frames=3, key_frames=False, **motion))
    assert moves == [(0.0, 1.0, 10.0, 0.0, 0.0, 0.0)] * 3  # translation_z's default 0: (10.0); the others as above


@pytest.mark.parametrize(
    "text",
    [
        "0: (__import__('os').system('true'))",
        "0: (t.__class__)",
        "0: (open('/etc/passwd'))",
        "0: ([1]*10)",
        "0: (lambda: 1)",
        "0: ('1')",
        "0: (x + 1)",
        "0: (sin(t, t))",
        "0: (1/(t-t))",
        "0: (9**9**9)",
        "0: (1), 0: (2)",
        "0: (1) 5: (2)",
        "0: (1",
    ],
)
def test_unsafe_or_broken_key_frames_are_refused_naming_the_setting(text):
    for name in ("angle", "zoom", "translation_x", "translation_y"):
        with pytest.raises(SettingsError) as info:
            validate_settings(**ANIMATED, animation_mode="2D", max_frames=3, **{name: text})
        assert info.value.parameter == name


def test_animation_settings_are_checked():
    with pytest.raises(SettingsError, match="animation_mode: must be one of"):
        validate_settings(animation_mode="4D")
    assert validate_settings(animation_mode="video input").animation_mode == "Video Input"
    s = validate_settings(**{**ANIMATED, "steps": 10, "frames_skip_steps": "60%"}, animation_mode="2D")
    assert frames_skip_steps(s) == 6 and s.n_batches == 1  # one animation per run
    with pytest.raises(SettingsError, match="frames_skip_steps"):
        validate_settings(frames_skip_steps="100%")
    with pytest.raises(SettingsError, match="frames_skip_steps"):
        validate_settings(frames_skip_steps="60")
    assert kind("video_init_path") == "video" and kind("text_prompts") == "texts" and kind("max_frames") == "int"


def test_prompts_may_change_over_frames_the_latest_key_applying():
    s = validate_settings(text_prompts={"0": ["a lighthouse"], "10": ["a storm:2", "rain"]})
    assert s.text_prompts == {0: ["a lighthouse"], 10: ["a storm:2", "rain"]}
    sets = prompt_sets(s.text_prompts)
    assert [prompt_key_at(sets, f) for f in (0, 9, 10, 500)] == [0, 0, 10, 10]
    assert prompt_key_at({5: 0, 8: 0}, 2) == 5  # before the first key: the first key's prompts
    # the wire carries frame numbers as text and gives them back as numbers
    assert wire.settings_from_tags(wire.settings_to_tags(s)).text_prompts == s.text_prompts
    with pytest.raises(SettingsError, match="text_prompts: keys must be frame numbers"):
        validate_settings(text_prompts={"soon": ["a"]})
    with pytest.raises(SettingsError, match="text_prompts: prompt weights must not sum to 0"):
        validate_settings(text_prompts={0: ["a"], 5: ["b:1", "c:-1"]})


# ----- the 2D warp -----


def test_the_2d_warp_is_opencvs_perspective_warp_with_wrapped_borders():
    image = np.random.default_rng(0).integers(0, 256, (64, 48, 3), dtype=np.uint8)
    motion = Motion(angle=10, zoom=1.05, translation_x=3, translation_y=-2)
    # the notebook's own construction of the matrix
    rotation = np.vstack([cv2.getRotationMatrix2D((24, 32), 10, 1.05), [0, 0, 1]])
    translation = np.vstack([np.float32([[1, 0, 3], [0, 1, -2]]), [0, 0, 1]])
    matrix = np.matmul(rotation, translation)
    assert np.abs(transform_matrix_2d(48, 64, motion) - matrix).max() < 1e-12
    want = cv2.warpPerspective(image, matrix, (48, 64), borderMode=cv2.BORDER_WRAP)
    assert np.array_equal(warp_2d(image, motion), want)
    # a whole-pixel move wraps around: what leaves on the left comes back on the right
    moved = warp_2d(image, Motion(0, 1, 3, -2))
    assert np.array_equal(moved, np.roll(image, (-2, 3), axis=(0, 1)))


# ----- video in and out -----


def coloured_frames(n: int, size=(64, 64)) -> list[np.ndarray]:
    """Frames of one flat colour each, far apart, so that they survive compression."""
    colours = [(220, 30, 30), (30, 220, 30), (30, 30, 220), (220, 220, 30), (30, 220, 220)]
    return [np.full((*size, 3), colours[i % len(colours)], dtype=np.uint8) for i in range(n)]


def mp4_bytes(frames, fps=8) -> bytes:
    import io

    buffer = io.BytesIO()
    write_mp4(buffer, frames, fps)
    return buffer.getvalue()


def test_video_frames_are_every_nth_and_an_mp4_keeps_its_frames():
    data = mp4_bytes(coloured_frames(4, (48, 64)), fps=8)
    info = video_info(data)
    assert (info.frames, info.width, info.height, info.rate) == (4, 64, 48, 8)
    assert info.extracted(2) == 2 and info.extracted(3) == 2 and info.extracted(1) == 4
    got = list(video_frames(data, 2))
    assert len(got) == 2 and got[0].shape == (48, 64, 3)
    want = coloured_frames(4, (48, 64))
    assert all(np.abs(g.astype(int) - w).mean() < 8 for g, w in zip(got, want[::2], strict=True))  # frames 0 and 2
    assert len(list(video_frames(data, 2, start=1))) == 1
    with pytest.raises(SettingsError, match="video_init_path: cannot read the video"):
        video_info(b"not a video at all" * 10)


# ----- the frame loop -----


def request(models, tmp_path, **settings):
    """A validated animation request as the PromptEncoder hands it on: the client's plan and Document,
    with the prompt embeddings."""
    s = validate_settings(**{**ANIMATED, "output_dir": str(tmp_path), "seed": 5, **settings})
    plan = plan_animation(s, None)
    doc = plan.document()
    doc.tags.update(wire.restore_numbers(doc.tags))
    sets = prompt_sets(s.text_prompts)
    texts = [t for prompts in sets.values() for t in prompts]
    doc.embedding = encode_texts(models.clip, texts).numpy()
    doc.tags["prompt_weights"] = [1.0] * len(texts)
    doc.tags["prompt_sets"] = [[frame, len(prompts)] for frame, prompts in sets.items()]
    return plan, doc


class FixedCache:
    def __init__(self, models):
        self.models_ = models

    def models(self, *args):
        return self.models_


def sampler(models, tmp_path) -> DiffusionSampler:
    """The executor's own code, without Jina's runtime."""
    executor = DiffusionSampler.__new__(DiffusionSampler)
    executor.cache = FixedCache(models)
    executor.board = JobBoard(tmp_path / "jobs.sqlite3")
    executor.store = ResultStore(tmp_path / "results")
    executor.replica, executor.client_timeout_s = "test", 600.0
    return executor


@pytest.fixture
def starts(monkeypatch):
    """Each frame's settings, seed and start image, as the sampler gets them."""
    seen = []
    real = animation.sample_image

    def recording(settings, embeds, weights, models, seed, init_image=None):
        seen.append({"settings": settings, "seed": seed, "init": init_image, "embeds": embeds})
        return real(settings, embeds, weights, models, seed=seed, init_image=init_image)

    monkeypatch.setattr(animation, "sample_image", recording)
    return seen


def cancel_after(executor: DiffusionSampler, plan, doc, last: int, monkeypatch) -> None:
    """As the client does while ``executor`` runs ``doc``: write each finished frame as it is
    published, and cancel the job once frame ``last`` is there (it stops at its next step)."""
    publish = executor.board.add_finished_frame

    def keep_then_cancel(job_id, frame, png):
        publish(job_id, frame, png)
        plan.keep_frame(doc, frame, png)
        if frame == last:
            executor.board.cancel(job_id)

    monkeypatch.setattr(executor.board, "add_finished_frame", keep_then_cancel)


def rendered(doc) -> None:
    """What the Renderer does to the chunks: PNG data URIs."""
    for chunk in doc.chunks:
        chunk.convert_image_tensor_to_uri()
        chunk.tensor = None


def test_a_2d_frame_starts_from_the_previous_frame_warped(tiny_models, tmp_path, starts):
    motion = {"angle": "0: (5)", "zoom": "0: (1.1)", "translation_x": "0: (2)", "translation_y": "0: (t)"}
    plan, doc = request(tiny_models, tmp_path, animation_mode="2D", max_frames=3, frames_scale=700, **motion)
    sampler(tiny_models, tmp_path)._generate(doc)
    assert doc.tags["status"] == "done" and doc.tags["frames_done"] == 3
    frames = {int(c.tags["frame"]): c.tensor for c in doc.chunks}
    assert sorted(frames) == [0, 1, 2] and all(f.shape == (64, 64, 3) for f in frames.values())
    assert [s["seed"] for s in starts] == [5, 6, 7]  # the seed moves on per frame
    assert starts[0]["init"] is None and starts[0]["settings"].skip_steps == 0
    for n in (1, 2):
        warped = warp_2d(frames[n - 1], Motion(5, 1.1, 2, n))
        assert torch.equal(starts[n]["init"], array_to_init(warped, 64, 64))
        assert starts[n]["settings"].skip_steps == 1 and starts[n]["settings"].init_scale == 700
    state = JobBoard(tmp_path / "jobs.sqlite3").read(doc.id)
    assert (state["frame"], state["frames"], state["last_finished"], state["run_total"]) == (2, 3, 2, 2 + 1 + 1)
    # the result store keeps every finished frame, the last as the final image, and the MP4 of them
    store = ResultStore(tmp_path / "results")
    record = store.read(doc.id)
    assert record["animation"] == {"frames": 3, "fps": 12, "start_frame": 0, "frames_done": [0, 1, 2]}
    kept = store.animation_frames(doc.id)
    assert [n for n, _ in kept] == [0, 1, 2]
    for n, path in kept:
        assert np.array_equal(np.asarray(Image.open(path).convert("RGB")), frames[n])
    assert store.file(doc.id, "final.png").read_bytes() == kept[-1][1].read_bytes()
    info = video_info(store.file(doc.id, "video.mp4").read_bytes())
    assert (info.frames, info.width, info.height, info.rate) == (3, 64, 64, 12)


def test_prompts_change_at_their_key_frames(tiny_models, tmp_path, starts):
    schedule = {0: ["a lighthouse"], 1: ["a storm", "rain"]}
    plan, doc = request(tiny_models, tmp_path, animation_mode="Video Input", video_init_path=video(tmp_path, 3),
                        extract_nth_frame=1, text_prompts=schedule, **NO_FLOW)  # fmt: skip
    sampler(tiny_models, tmp_path)._generate(doc)
    rn50 = [s["embeds"]["RN50::openai"] for s in starts]  # the prompts' embeddings by CLIP model
    assert [len(e) for e in rn50] == [1, 2, 2]
    assert torch.allclose(rn50[2], encode_texts(tiny_models.clip, ["a storm", "rain"]))


def video(directory, frames: int) -> str:
    path = directory / "clip.mp4"
    path.write_bytes(mp4_bytes(coloured_frames(frames), fps=10))
    return str(path)


def test_a_video_makes_a_frame_from_every_nth_frame(tiny_models, tmp_path, starts):
    plan, doc = request(
        tiny_models, tmp_path, animation_mode="Video Input", video_init_path=video(tmp_path, 4), extract_nth_frame=2,
        **NO_FLOW,
    )  # fmt: skip
    assert plan.frames == 2 and plan.fps == 5  # the video's pace: 10 frames a second, every second one
    sampler(tiny_models, tmp_path)._generate(doc)
    assert doc.tags["status"] == "done" and [int(c.tags["frame"]) for c in doc.chunks] == [0, 1]
    assert [s["seed"] for s in starts] == [5, 6]
    mp4 = ResultStore(tmp_path / "results").file(doc.id, "video.mp4")
    assert (video_info(mp4.read_bytes()).frames, video_info(mp4.read_bytes()).rate) == (2, 5)  # the video's pace
    for start, colour in zip(starts, coloured_frames(4)[::2], strict=True):  # video frames 0 and 2
        picture = to_uint8_hwc(start["init"][0].add(1).div(2)).astype(int)
        assert np.abs(picture - colour).mean() < 8
        assert start["settings"].skip_steps == 1 and start["settings"].init_scale == 1500


def test_video_seed_continuity_keeps_one_seed(tiny_models, tmp_path, starts):
    plan, doc = request(
        tiny_models, tmp_path, animation_mode="Video Input", video_init_path=video(tmp_path, 2), extract_nth_frame=1,
        video_init_seed_continuity=True, **NO_FLOW,
    )  # fmt: skip
    sampler(tiny_models, tmp_path)._generate(doc)
    assert [s["seed"] for s in starts] == [5, 5]


def test_cancel_after_frame_1_then_resume_makes_only_the_rest(tiny_models, tmp_path, starts, monkeypatch):
    out = tmp_path / "out"
    settings = dict(animation_mode="2D", max_frames=3, output_dir=str(out), zoom="0: (1.2)", batch_name="waves")
    # the whole animation in one go, for comparison
    _, whole = request(tiny_models, tmp_path / "whole", **{**settings, "output_dir": str(tmp_path / "whole")})
    sampler(tiny_models, tmp_path / "whole")._generate(whole)
    uninterrupted = {int(c.tags["frame"]): c.tensor for c in whole.chunks}
    starts.clear()

    plan, doc = request(tiny_models, tmp_path, **settings)
    executor = sampler(tiny_models, tmp_path)
    cancel_after(executor, plan, doc, 1, monkeypatch)
    executor._generate(doc)
    assert doc.tags["status"] == "cancelled" and [int(c.tags["frame"]) for c in doc.chunks] == [0, 1]
    rendered(doc)
    files = plan.save(doc)
    names = sorted(p.name for p in out.iterdir())
    assert names == ["reverse_diffusion-waves-5-frame0000.png", "reverse_diffusion-waves-5-frame0001.png",
                     "reverse_diffusion-waves-5.mp4"]  # fmt: skip
    assert len(files) == 3 and video_info((out / "reverse_diffusion-waves-5.mp4").read_bytes()).frames == 2
    before = {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in out.glob("*.png")}
    starts.clear()
    with pytest.raises(
        SettingsError, match=r"resume_from_frame: frame 2 of reverse_diffusion-waves-5 is not there \(frames 0 to 1"
    ):
        request(tiny_models, tmp_path, **settings, resume_run=True, resume_from_frame=2)

    resumed, again = request(tiny_models, tmp_path, **settings, resume_run=True)
    assert resumed.start_frame == 2 and resumed.prefix == "reverse_diffusion-waves-5"
    sampler(tiny_models, tmp_path)._generate(again)
    assert [s["seed"] for s in starts] == [7]  # only frame 2 was made
    rendered(again)
    resumed.save(again)
    assert {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in out.glob("*-frame000[01].png")} == before
    assert [int(c.tags["frame"]) for c in again.chunks] == [0, 1, 2]  # the result has every frame
    assert again.uri == again.chunks[-1].uri
    frame2 = np.asarray(Image.open(out / "reverse_diffusion-waves-5-frame0002.png").convert("RGB"))
    assert np.array_equal(frame2, uninterrupted[2])  # as if it had never stopped
    mp4 = (out / "reverse_diffusion-waves-5.mp4").read_bytes()
    assert video_info(mp4).frames == 3
    recipe = png_settings((out / "reverse_diffusion-waves-5-frame0002.png").read_bytes())
    assert recipe["animation_mode"] == "2D" and recipe["seed"] == 5 and "resume_run" not in recipe
    assert recipe == png_settings(before["reverse_diffusion-waves-5-frame0000.png"][0])  # one recipe, both runs

    with pytest.raises(SettingsError, match="resume_run: no frames of batch_name 'other'"):
        request(tiny_models, tmp_path, **{**settings, "batch_name": "other"}, resume_run=True)


def test_resume_without_a_seed_finds_the_latest_run_and_a_new_run_takes_a_new_prefix(tiny_models, tmp_path):
    out = tmp_path / "out"
    settings = dict(animation_mode="2D", max_frames=2, output_dir=str(out), batch_name="b")
    plan, doc = request(tiny_models, tmp_path, **settings)
    sampler(tiny_models, tmp_path)._generate(doc)
    rendered(doc)
    plan.save(doc)
    second, _ = request(tiny_models, tmp_path, **settings)
    assert second.prefix == "reverse_diffusion-b-5-run2"  # nothing is overwritten
    s = validate_settings(**{**ANIMATED, **settings, "resume_run": True})  # no seed: the latest run's
    resumed = plan_animation(s, None)
    assert s.seed == 5 and resumed.complete and resumed.prefix == "reverse_diffusion-b-5"


def test_a_stop_between_requests_is_not_rendered(tiny_models, tmp_path, starts):
    plan, doc = request(tiny_models, tmp_path, animation_mode="2D", max_frames=2)
    executor = sampler(tiny_models, tmp_path)
    executor.board.cancel(doc.id)
    executor._generate(doc)
    assert doc.tags["status"] == "cancelled" and len(doc.chunks) == 0 and starts == []


def test_the_renderer_gives_an_animation_its_mp4(tiny_models, tmp_path):
    from executors.renderer import Renderer

    plan, doc = request(tiny_models, tmp_path, animation_mode="2D", max_frames=2, fps=6)
    sampler(tiny_models, tmp_path)._generate(doc)
    renderer = Renderer.__new__(Renderer)
    renderer.board = JobBoard(tmp_path / "jobs.sqlite3")
    renderer.store, renderer.swept = ResultStore(tmp_path / "results"), 0.0
    renderer.render(DocumentArray([doc]), parameters={"animations": True})
    import base64

    mp4 = base64.b64decode(doc.tags["mp4"].partition(",")[2])
    info = video_info(mp4)
    assert (info.frames, info.width, info.rate) == (2, 64, 6)
    assert png_settings(base64.b64decode(doc.uri.partition(",")[2]))["max_frames"] == 2


# ----- the job as a whole, over gRPC -----


def test_a_2d_animation_through_the_served_flow(served_flow, tmp_path):
    import client as disco_client

    da = disco_client.generate_image(
        **{**ANIMATED, "seed": 9, "output_dir": str(tmp_path), "host": served_flow, "progress": False},
        animation_mode="2D",
        max_frames=3,
        zoom="0: (1.1)",
        fps=6,
    )
    assert len(da) == 1
    doc = da[0]
    assert doc.tags["status"] == "done" and [c.tags["frame"] for c in doc.chunks] == [0, 1, 2]
    frames = sorted(tmp_path.glob("reverse_diffusion-9-frame*.png"))
    assert [p.name for p in frames] == [f"reverse_diffusion-9-frame000{n}.png" for n in range(3)]
    assert all(png_settings(p.read_bytes())["zoom"] == "0: (1.1)" for p in frames)
    info = video_info((tmp_path / "reverse_diffusion-9.mp4").read_bytes())
    assert (info.frames, info.width, info.height, info.rate) == (3, 64, 64, 6)
    assert doc.tags["files"][-1].endswith("reverse_diffusion-9.mp4")
    first = Document(uri=doc.chunks[0].uri)
    first.load_uri_to_image_tensor()
    assert np.array_equal(first.tensor, np.asarray(Image.open(frames[0]).convert("RGB")))


def test_the_encoder_refuses_a_video_animation_without_the_video(served_flow):
    from jina import Client

    s = validate_settings(**{**ANIMATED, "seed": 1}, animation_mode="Video Input")
    docs = DocumentArray([Document(tags=wire.request_tags_animation(s, 0))])
    with pytest.raises(Exception, match="video_init_path: Video Input needs the video"):
        Client(host=served_flow).post("/generate", docs)
