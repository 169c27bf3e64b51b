"""The run's plan (disco/animation_plan.py): the client and the sampler plan every run alike.

The client plans a run to know which model files to fetch and how many steps it takes; the
sampler plans the same request to know which models to load and what to report. Here both read
the same settings, files and request, over every ``animation_mode`` and the edge cases
(``frames_scale`` 0, one frame, an init image or none, a resumed run), and must agree.
"""

import io
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest
from conftest import TINY
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from disco.animation_plan import flow_model_needed, frame_settings, plan_run
from disco.images import png_bytes
from disco.settings import SettingsError, validate_settings
from disco.video import video_info, write_mp4
from disco_service import wire
from disco_service.client.animations import plan_animation
from disco_service.client.api import make_documents
from disco_service.outputs import base_prefix, write_frame
from executors import diffusion_sampler
from executors.diffusion_sampler import DiffusionSampler, _animation_job

PICTURE = png_bytes(np.full((64, 64, 3), (200, 120, 40), dtype=np.uint8))  # an init image or a kept frame


def mp4(frames: int) -> bytes:
    buffer = io.BytesIO()
    write_mp4(buffer, [np.full((64, 64, 3), (40 * i % 255, 90, 160), dtype=np.uint8) for i in range(frames)], 10)
    return buffer.getvalue()


VIDEOS = {n: mp4(n) for n in (1, 2, 5)}


def tiny(out: Path, **values):
    values = {**TINY, "text_prompts": ["a lighthouse"], "seed": 7, "output_dir": str(out), **values}
    return validate_settings(values, tokens=False)


def sampler_side(doc):
    """What the sampler plans for the client's request, as the encoder hands it on."""
    doc.tags.update(wire.restore_numbers(doc.tags))
    return _animation_job(doc, wire.settings_from_tags(doc.tags))[0]


RUNS = st.fixed_dictionaries(
    {
        "animation_mode": st.sampled_from(["2D", "3D", "Video Input"]),
        "max_frames": st.integers(1, 4),
        "steps": st.integers(4, 12),
        "skip_steps": st.integers(0, 3),
        "frames_skip_steps": st.sampled_from(["0%", "50%", "60%", "99%"]),
        "frames_scale": st.sampled_from([0, 1500]),
        "init_scale": st.sampled_from([0, 1000, "[0]*500+[1000]*500"]),
        "extract_nth_frame": st.integers(1, 3),
        "fps": st.sampled_from([12, 24]),
        "turbo": st.sampled_from([None, (2, 0), (2, 1), (3, 1)]),  # 3D only: (turbo_steps, turbo_preroll)
        "video_init_flow_warp": st.booleans(),
        "video_init_blend_mode": st.sampled_from(["None", "linear", "optical flow"]),
    }
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    values=RUNS,
    init=st.booleans(),
    video_frames=st.sampled_from(sorted(VIDEOS)),
    kept=st.integers(0, 4),  # frames already in the folder: a resumed run when > 0
)
def test_the_client_and_the_sampler_plan_every_animation_alike(values, init, video_frames, kept):
    with tempfile.TemporaryDirectory() as folder:
        out = Path(folder)
        if values["animation_mode"] == "Video Input":
            (out / "clip.mp4").write_bytes(VIDEOS[video_frames])
            values["video_init_path"] = str(out / "clip.mp4")
        for n in range(kept):
            write_frame(out, base_prefix("", 7), n, PICTURE, {})
        turbo = values.pop("turbo")
        if turbo and values["animation_mode"] == "3D":
            values.update(turbo_mode=True, turbo_steps=turbo[0], turbo_preroll=turbo[1])
        s = tiny(out, **values, resume_run=kept > 0)
        client = plan_animation(s, PICTURE if init else None)
        if client.complete:  # every frame is there: the client sends nothing, the sampler would refuse it
            with pytest.raises(SettingsError, match="resume_from_frame"):
                sampler_side(client.document())
            return
        sampler = sampler_side(client.document())

    assert sampler == client.plan
    assert client.with_init_loss == client.plan.with_init_loss and client.steps == client.plan.run_steps
    plan = client.plan
    if values["animation_mode"] == "Video Input":  # every video frame starts from its picture
        assert plan.with_init_loss is (values["frames_scale"] > 0)
        assert plan.frames == min(values["max_frames"], -(-video_frames // values["extract_nth_frame"]))
    assert plan.flow_model is (flow_model_needed(s) and plan.frames > 1)
    assert plan.start_frame == min(kept, plan.frames) and len(plan.made) == plan.frames - plan.start_frame
    diffused = [not s.turbo_mode or n <= s.turbo_preroll or n % s.turbo_steps == 0 for n in plan.made]
    assert [plan.diffused(n) for n in plan.made] == diffused  # turbo's frames between take no step
    sampled = [frame_settings(s, n).steps - frame_settings(s, n).skip_steps for n in plan.made]
    steps = [count if d else 0 for count, d in zip(sampled, diffused, strict=True)]
    assert plan.run_steps == sum(steps) and [plan.steps_of(n) for n in plan.made] == steps


def test_a_video_with_frames_scale_0_needs_no_lpips_even_with_an_init_image(tmp_path):
    (tmp_path / "clip.mp4").write_bytes(VIDEOS[2])
    video = {"animation_mode": "Video Input", "video_init_path": str(tmp_path / "clip.mp4"), "init_scale": 1000}
    client = plan_animation(tiny(tmp_path, **video, frames_scale=0), PICTURE)  # no video frame uses init_scale
    assert client.with_init_loss is False
    assert sampler_side(client.document()).with_init_loss is False
    assert plan_animation(tiny(tmp_path, **video, frames_scale=1500), None).with_init_loss is True


@pytest.mark.parametrize("init", [True, False])
@pytest.mark.parametrize("init_scale", [0, 1000, "[0]*999+[1]"])
def test_a_still_image_is_a_run_of_one_frame_planned_alike(tmp_path, monkeypatch, init, init_scale):
    s = tiny(tmp_path, init_scale=init_scale, n_batches=1)
    client = plan_run(s, init_image=init)  # what the client fetches models for
    assert (client.frames, client.start_frame, client.run_steps) == (1, 0, s.steps - s.skip_steps)
    assert client.with_init_loss is (init and init_scale != 0)

    loaded = []  # the sampler's own code, up to the models it asks for

    class Stop(Exception):
        pass

    class RecordingCache:
        def models(self, name, secondary, with_init_loss, clip_models):
            loaded.append(with_init_loss)
            raise Stop

    executor = DiffusionSampler.__new__(DiffusionSampler)
    executor.cache = RecordingCache()
    monkeypatch.setattr(diffusion_sampler, "_prompts_at", lambda doc, models: None)
    (doc,) = make_documents(s, PICTURE if init else None)
    doc.tags.update(wire.restore_numbers(doc.tags))
    doc.embedding = np.zeros((1, 1024), dtype=np.float32)
    with pytest.raises(Stop):
        executor._generate(doc)
    assert loaded == [client.with_init_loss]


def test_the_plan_and_the_client_need_no_torch():
    import subprocess

    code = (
        "import sys; import disco.animation_plan, disco_service.client.animations; "
        "print('TORCH' if 'torch' in sys.modules else 'NO-TORCH')"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.stdout.split() == ["NO-TORCH"], done.stderr


def test_a_video_bounds_the_frames_and_sets_the_pace():
    info = video_info(VIDEOS[5])
    s = validate_settings(**TINY, animation_mode="Video Input", max_frames=10, extract_nth_frame=2, tokens=False)
    plan = plan_run(s, video=info)
    assert (plan.frames, plan.fps) == (3, 5.0)  # frames 0, 2, 4 of a 10 fps video
    with pytest.raises(ValueError, match="needs its video"):
        plan_run(s)
