"""3D animation: frames moved through a depth map (disco.warp3d), and turbo's frames made by the warp alone.

The frame loop runs on the test models (64x64, a few steps) through the sampler executor's own
code, with a depth function injected in place of MiDaS and AdaBins (their loading and output are
tests/test_depth.py's); one test runs a 3D animation through ``generate_image`` with the Flow's
executors called in-process.
"""

import dataclasses

import numpy as np
import pytest
import torch
from docarray import DocumentArray
from PIL import Image
from test_animation import ANIMATED, rendered, request, sampler

import disco.animation as animation
from disco.animation import camera_series, turbo_blend, warp_3d_frame
from disco.animation_plan import plan_run
from disco.clip_model import encode_texts
from disco.images import array_to_init
from disco.prompts import prompt_sets
from disco.settings import SettingsError, settings_schema, validate_settings
from disco.video import video_info
from disco.weights import ADABINS_FILE, MIDAS_FILE, files_needed
from disco_service import wire
from disco_service.client import api
from disco_service.server.jobs import JobBoard
from disco_service.server.results import ResultStore

MOVE = {"translation_z": "0: (40)", "rotation_3d_z": "0: (3)", "translation_x": "0: (t)", "fov": 50}


class SlopedDepth:
    """A depth estimator that records the pictures it is asked about: a plane sloping away to the
    right (depth 1 to 3 units), whatever the picture."""

    def __init__(self) -> None:
        self.seen: list[torch.Tensor] = []
        self.weights: list[float] = []

    def depth(self, image: torch.Tensor, midas_weight: float) -> torch.Tensor:
        self.seen.append(image.clone())
        self.weights.append(midas_weight)
        width = image.shape[-1]
        return torch.linspace(1.0, 3.0, width).expand(image.shape[-2], width).clone()


@pytest.fixture
def depth_models(tiny_models):
    """The test models with the sloped depth as their depth estimator."""
    return dataclasses.replace(tiny_models, depth=SlopedDepth())


@pytest.fixture
def starts(monkeypatch):
    """Each sampled frame's settings, seed and start image, as the sampler gets them."""
    seen = []
    real = animation.sample_image

    def recording(settings, embeds, weights, models, seed, init_image=None):
        seen.append({"settings": settings, "seed": seed, "init": init_image})
        return real(settings, embeds, weights, models, seed=seed, init_image=init_image)

    monkeypatch.setattr(animation, "sample_image", recording)
    return seen


# ----- settings -----


def test_3d_settings_have_the_notebooks_defaults_and_are_checked_by_name():
    s = validate_settings(animation_mode="3d")
    assert s.animation_mode == "3D"
    notebook = {
        "translation_z": "0: (10.0)", "rotation_3d_x": "0: (0)", "rotation_3d_y": "0: (0)", "rotation_3d_z": "0: (0)",
        "midas_depth_model": "dpt_large", "midas_weight": 0.3, "near_plane": 200, "far_plane": 10000, "fov": 40,
        "padding_mode": "border", "sampling_mode": "bicubic", "turbo_mode": False, "turbo_steps": 3,
        "turbo_preroll": 10,
    }  # fmt: skip
    assert {name: getattr(s, name) for name in notebook} == notebook
    assert validate_settings(animation_mode="3D", turbo_mode=True, turbo_steps="4").turbo_steps == 4  # the form's text
    refused = [
        ({"rotation_3d_y": "0: (nope)"}, "rotation_3d_y"),
        ({"translation_z": "0: ((1)"}, "translation_z"),
        ({"midas_weight": 1.5}, "midas_weight"),
        ({"midas_depth_model": "dpt_hybrid"}, "midas_depth_model"),
        ({"padding_mode": "wrap"}, "padding_mode"),
        ({"sampling_mode": "area"}, "sampling_mode"),
        ({"fov": 0}, "fov"),
        ({"near_plane": 500, "far_plane": 100}, "far_plane"),
        ({"turbo_mode": True, "turbo_steps": 1}, "turbo_steps"),
    ]
    for values, name in refused:
        with pytest.raises(SettingsError, match=f"^{name}: "):
            validate_settings(animation_mode="3D", **values)
    with pytest.raises(SettingsError, match="^turbo_mode: works with animation_mode '3D' only"):
        validate_settings(animation_mode="2D", turbo_mode=True)


def test_the_3d_settings_are_in_the_forms_motion_group():
    groups = {row["name"]: row["group"] for row in settings_schema()}
    names = ["translation_z", "rotation_3d_x", "rotation_3d_y", "rotation_3d_z", "midas_depth_model",
             "midas_weight", "near_plane", "far_plane", "fov", "padding_mode", "sampling_mode", "turbo_mode",
             "turbo_steps", "turbo_preroll"]  # fmt: skip
    assert all(groups[name] == "motion" for name in names)
    assert "3D" in next(row for row in settings_schema() if row["name"] == "animation_mode")["choices"]


def test_only_a_3d_run_needs_the_depth_models_and_midas_weight_picks_them():
    def needed(**values):
        s = validate_settings(**{**ANIMATED, "max_frames": 3, **values})
        plan = plan_run(s)
        return plan.depth_models, files_needed(s.diffusion_model, True, False, s.clip_models, plan.depth_models)

    assert needed(animation_mode="2D")[0] == ()
    models, files = needed(animation_mode="3D")
    assert models == ("midas", "adabins") and files[-2:] == [MIDAS_FILE, ADABINS_FILE]
    assert needed(animation_mode="3D", midas_weight=1)[0] == ("midas",)
    assert needed(animation_mode="3D", midas_weight=0)[0] == ("adabins",)
    assert needed(animation_mode="3D", max_frames=1)[0] == ()  # one frame is never warped


# ----- the frame loop -----


def test_a_3d_frame_starts_from_the_previous_frame_moved_through_its_depth(depth_models, tmp_path, starts):
    plan, doc = request(depth_models, tmp_path, animation_mode="3D", max_frames=3, midas_weight=0.6, **MOVE)
    sampler(depth_models, tmp_path)._generate(doc)
    assert doc.tags["status"] == "done" and doc.tags["frames_done"] == 3
    frames = {int(c.tags["frame"]): c.tensor for c in doc.chunks}
    assert sorted(frames) == [0, 1, 2]
    s = validate_settings(**{**ANIMATED, "animation_mode": "3D", "max_frames": 3, **MOVE})
    moves = camera_series(s)
    assert moves[2] == (2.0, 0.0, 40.0, 0.0, 0.0, 3.0)  # translation_x is t
    depth = depth_models.depth
    assert depth.weights == [0.6, 0.6]  # the depth of frames 0 and 1, blended as midas_weight says
    for n in (1, 2):
        picture = torch.from_numpy(frames[n - 1]).permute(2, 0, 1)[None].float() / 127.5 - 1
        assert torch.equal(depth.seen[n - 1], picture)  # the depth of the previous frame as made
        moved = warp_3d_frame(frames[n - 1], s, moves[n], SlopedDepth().depth, torch.device("cpu"))
        assert not np.array_equal(moved, frames[n - 1])  # the camera moved
        assert torch.equal(starts[n]["init"], array_to_init(moved, 64, 64))
        assert starts[n]["settings"].skip_steps == 1  # later frames skip frames_skip_steps, as in 2D
    store = ResultStore(tmp_path / "results")
    info = video_info(store.file(doc.id, "video.mp4").read_bytes())
    assert (info.frames, info.width, info.height) == (3, 64, 64)


def test_turbo_samples_every_third_frame_after_the_preroll_and_blends_the_rest(depth_models, tmp_path, starts):
    settings = dict(animation_mode="3D", max_frames=8, turbo_mode=True, turbo_steps=3, turbo_preroll=1, **MOVE)
    plan, doc = request(depth_models, tmp_path, **settings)
    sampler(depth_models, tmp_path)._generate(doc)
    assert doc.tags["status"] == "done" and doc.tags["frames_done"] == 8
    assert [s["seed"] - 5 for s in starts] == [0, 1, 3, 6]  # the sampler ran on these frames only
    assert plan.steps == 2 + 3 * 1  # frame 0: 2 steps, frames 1, 3 and 6: 1 step each
    state = JobBoard(tmp_path / "jobs.sqlite3").read(doc.id)
    assert (state["run_total"], state["run_step"], state["frame"]) == (5, 5, 7)
    frames = {int(c.tags["frame"]): c.tensor for c in doc.chunks}
    assert sorted(frames) == list(range(8))
    s = validate_settings(**{**ANIMATED, **settings})
    moves, cpu, depth = camera_series(s), torch.device("cpu"), SlopedDepth().depth

    def warp(picture, n):
        return warp_3d_frame(picture, s, moves[n], depth, cpu)

    # frame 2 ends turbo's first cycle: the warp of frame 1 alone ((2 % 3 + 1) / 3 = 1)
    assert np.array_equal(frames[2], warp(frames[1], 2))
    # frame 4: the warp of frame 3 blended 2/3 with the warp, carried along, of frame 3's start
    newer, older = warp(frames[3], 4), warp(warp(frames[2], 3), 4)
    assert np.array_equal(frames[4], turbo_blend(newer, older, 4, 3))
    assert not np.array_equal(frames[4], newer)
    # frame 5 continues from the unblended warp of frame 4's start, not from the blended frame 4
    assert np.array_equal(frames[5], warp(newer, 5)) and not np.array_equal(frames[5], warp(frames[4], 5))
    assert torch.equal(starts[3]["init"], array_to_init(warp(frames[5], 6), 64, 64))  # frame 6 is sampled


def test_turbo_blend_weighs_the_newer_warp_by_the_frames_place_in_the_cycle():
    newer, older = np.full((2, 2, 3), 200, np.uint8), np.full((2, 2, 3), 50, np.uint8)
    assert turbo_blend(newer, older, 4, 3)[0, 0, 0] == 150  # (4 % 3 + 1) / 3 = 2/3 of the newer
    assert turbo_blend(newer, older, 5, 3)[0, 0, 0] == 200  # the cycle's last: the newer alone
    assert turbo_blend(newer, older, 4, 4)[0, 0, 0] == 88  # 1/4: 50 + 150 / 4 = 87.5, rounded to even


# ----- the client's call, with the Flow's executors in-process -----


def in_process_flow(models, executor):
    """A stand-in for ``api.run_jobs``: what the Flow does with the requests, in this process (the
    encoder's embeddings with ``models.clip``, ``executor``'s sampling, the renderer)."""

    async def in_process(address, docs, progress=True, keep=None, token=None):
        for doc in docs:
            doc.tags.update(wire.restore_numbers(doc.tags))
            sets = prompt_sets(wire.settings_from_tags(doc.tags).text_prompts)
            texts = [t for prompts in sets.values() for t in prompts]
            doc.embedding = encode_texts(models.clip, texts).numpy()
            doc.tags["prompt_weights"] = [1.0] * len(texts)
            doc.tags["prompt_sets"] = [[frame, len(prompts)] for frame, prompts in sets.items()]
            executor._generate(doc)
            rendered(doc)
        return DocumentArray(docs), []

    return in_process


def test_generate_image_makes_a_3d_animations_frames_and_mp4(depth_models, tmp_path, monkeypatch):
    monkeypatch.setattr(api, "run_jobs", in_process_flow(depth_models, sampler(depth_models, tmp_path)))
    out = tmp_path / "out"
    values = {**ANIMATED, **MOVE, "animation_mode": "3D", "max_frames": 3, "seed": 7, "output_dir": str(out)}
    results = api.generate_image(**values, host="grpc://127.0.0.1:9", progress=False)
    assert len(results) == 1 and len(results[0].chunks) == 3
    pngs = sorted(out.glob("*.png"))
    assert len(pngs) == 3 and all(Image.open(p).size == (64, 64) for p in pngs)
    (mp4,) = out.glob("*.mp4")
    assert video_info(mp4.read_bytes()).frames == 3


def test_the_model_cache_loads_each_depth_model_once(monkeypatch, tmp_path):
    from disco import loading

    loaded = []

    def loader(kind):
        def load(path, device):
            loaded.append((kind, path.name))
            return torch.nn.Linear(1, 1)

        return load

    monkeypatch.setattr(loading, "load_midas", loader("midas"))
    monkeypatch.setattr(loading, "load_adabins", loader("adabins"))
    cache = loading.ModelCache(tmp_path, torch.device("cpu"))
    monkeypatch.setattr(cache, "_file", lambda name: tmp_path / name)
    both = cache.depth(("midas", "adabins"))
    again = cache.depth(("midas", "adabins"))
    assert loaded == [("midas", MIDAS_FILE), ("adabins", ADABINS_FILE)]  # loaded once, kept for the next run
    assert again.midas is both.midas and again.adabins is both.adabins
    midas_only = cache.depth(("midas",))
    assert midas_only.midas is both.midas and midas_only.adabins is None and len(loaded) == 2
