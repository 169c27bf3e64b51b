"""VR (``vr_mode``): a left and a right eye view of every 3D frame, as the notebook's
``generate_eye_views`` makes them (disco.warp3d.eye_view), through the sampler executor and the
client's files. The depth is injected (tests/test_animation_3d.py's ``SlopedDepth``)."""

import dataclasses
import math

import numpy as np
import pytest
import torch
from PIL import Image
from test_animation import ANIMATED, request, sampler
from test_animation_3d import MOVE, SlopedDepth, in_process_flow

from disco.animation import eye_views
from disco.animation_plan import plan_run
from disco.settings import SettingsError, validate_settings
from disco.warp3d import TRANSLATION_SCALE, eye_motion, eye_view, fisheye
from disco_service.client import api

VR = {**MOVE, "animation_mode": "3D", "vr_mode": True}


class ConstantDepth:
    def __init__(self, value: float) -> None:
        self.value = value

    def depth(self, image: torch.Tensor, midas_weight: float) -> torch.Tensor:
        return torch.full(image.shape[-2:], self.value)


def ramp(width: int = 64, height: int = 64) -> torch.Tensor:
    """(1, 3, H, W): a picture whose value rises by 1/40 per pixel to the right (0 between the middle pixels)."""
    x = (torch.arange(width, dtype=torch.float32) - (width - 1) / 2) / 40
    return x.expand(1, 3, height, width).clone()


def test_vr_settings_have_the_notebooks_defaults_and_need_3d():
    s = validate_settings(tokens=False)
    assert (s.vr_mode, s.vr_eye_angle, s.vr_ipd) == (False, 0.5, 5.0)
    assert validate_settings(animation_mode="3D", vr_mode=True, tokens=False).vr_mode
    for mode in ("None", "2D", "Video Input"):
        with pytest.raises(SettingsError) as refused:
            validate_settings(animation_mode=mode, vr_mode=True, tokens=False)
        assert refused.value.parameter == "vr_mode" and "animation_mode '3D'" in str(refused.value)
        assert repr(mode) in str(refused.value)
    with pytest.raises(SettingsError, match="vr_ipd"):
        validate_settings(animation_mode="3D", vr_mode=True, vr_ipd=-1, tokens=False)


def test_each_eye_sits_half_the_ipd_aside_and_turns_towards_the_centre():
    for eye, side in (("l", -1), ("r", 1)):
        translation, rotation = eye_motion(eye, 30, 8)
        # the notebook: ray_origin = cos(angle) * ipd / 2 * side, moved by -ray_origin * TRANSLATION_SCALE
        assert translation == pytest.approx((-side * math.cos(math.radians(30)) * 4 * TRANSLATION_SCALE, 0, 0))
        # a rotation about y by +30 degrees for the left eye, -30 for the right
        turned = -side * 30
        assert rotation[0, 2].item() == pytest.approx(math.sin(math.radians(turned)))
        assert rotation[1].tolist() == pytest.approx([0, 1, 0])
    with pytest.raises(ValueError, match="eye"):
        eye_motion("c", 0.5, 5)


@pytest.mark.parametrize("depth", [1.5, 4.0])
def test_the_eyes_see_a_constant_depth_with_the_parallax_the_camera_gives(depth):
    image, fov, ipd = ramp(), 40.0, 10.0
    flat = torch.full((64, 64), depth)
    f = 1 / math.tan(math.radians(fov) / 2)
    # each eye moves ipd / 2 aside: the picture shifts by f * (ipd / 2 * scale) / depth in grid units, half a width each
    shift = f * ipd / 2 * TRANSLATION_SCALE / depth * 32  # pixels
    # bilinear reads a ramp exactly (bicubic's kernel bends it a little)
    left, right = (eye_view(image, flat, eye, 0.0, ipd, fov, sampling_mode="bilinear", spherical=False) for eye in "lr")
    middle = slice(16, 48)  # away from the borders
    # the left eye sees the picture moved right (it reads the ramp shift pixels to the left), the right eye left
    assert torch.allclose(left[..., middle], image[..., middle] - shift / 40, atol=1e-4)
    assert torch.allclose(right[..., middle], image[..., middle] + shift / 40, atol=1e-4)
    parallax = ((right - left)[0, 0, 32, middle] * 40).mean().item()
    assert parallax == pytest.approx(2 * shift, rel=1e-3) and parallax > 0.5
    # the fish-eye keeps the centre's scale: the full views differ there by the same parallax
    left, right = (eye_view(image, flat, eye, 0.0, ipd, fov, sampling_mode="bilinear") for eye in "lr")
    centre = ((right - left)[0, 0, 32, 31:33] * 40).mean().item()
    assert centre == pytest.approx(2 * shift, rel=0.03)


def test_the_fisheye_keeps_the_centre_and_draws_the_edges_in():
    image = ramp()
    seen = fisheye(image)
    assert torch.allclose(seen[..., 28:36, 30:34], image[..., 28:36, 30:34], atol=2e-3)  # the centre barely moves
    assert (seen[..., 0, :] == -1).all()  # the top row reads above the frame: black
    # a pixel at p shows the picture at p (1 + 0.4 |p|): at the right edge of the middle row, past the frame: black
    assert seen[0, 0, 32, -1].item() == -1.0 and seen[0, 0, 32, 48].item() > image[0, 0, 32, 48].item()


def test_a_vr_run_makes_two_views_per_frame_that_differ(tiny_models, tmp_path):
    models = dataclasses.replace(tiny_models, depth=SlopedDepth())
    plan, doc = request(models, tmp_path, max_frames=1, **VR)
    # the eye views need depth, also in a run of one frame (which warps nothing)
    assert plan.plan.depth_models == ("midas", "adabins")
    assert plan_run(validate_settings(**{**ANIMATED, **VR, "max_frames": 1, "vr_mode": False})).depth_models == ()
    sampler(models, tmp_path)._generate(doc)
    assert doc.tags["status"] == "done" and doc.tags["frames_done"] == 1
    views = {(int(m.tags["frame"]), m.tags["eye"]): m for m in doc.matches}
    assert sorted(views) == [(0, "l"), (0, "r")]
    frames = {int(c.tags["frame"]): c.tensor for c in doc.chunks}
    s = validate_settings(**{**ANIMATED, **VR, "max_frames": 1})
    for n in (0,):
        left, right = (np.asarray(Image.open(_png(views[n, e]))) for e in "lr")
        expected = eye_views(frames[n], s, SlopedDepth().depth, torch.device("cpu"))
        assert np.array_equal(left, expected[0]) and np.array_equal(right, expected[1])
        assert not np.array_equal(left, right) and left.shape == (64, 64, 3)


def _png(picture):
    import io

    from disco_service.outputs import data_uri_bytes

    return io.BytesIO(data_uri_bytes(picture.uri))


def test_generate_image_writes_each_frames_eye_views_beside_it(tiny_models, tmp_path, monkeypatch):
    models = dataclasses.replace(tiny_models, depth=SlopedDepth())
    monkeypatch.setattr(api, "run_jobs", in_process_flow(models, sampler(models, tmp_path)))
    monkeypatch.setenv("DISCO_CLIENT_TIMEOUT_S", "3600")  # in-process, the job board hears no polls
    out = tmp_path / "out"
    values = {**ANIMATED, **VR, "max_frames": 2, "seed": 7, "output_dir": str(out)}
    results = api.generate_image(**values, host="grpc://127.0.0.1:9", progress=False)
    assert len(results[0].chunks) == 2  # the frames; the eye views are files beside them
    names = sorted(p.name for p in out.glob("*.png"))
    assert names == [f"reverse_diffusion-7-frame{n:04d}{end}.png" for n in (0, 1) for end in ("", "_l", "_r")]
    assert str(out / "reverse_diffusion-7-frame0001_r.png") in results[0].tags["files"]
    left = np.asarray(Image.open(out / "reverse_diffusion-7-frame0001_l.png"))
    right = np.asarray(Image.open(out / "reverse_diffusion-7-frame0001_r.png"))
    assert left.shape == (64, 64, 3) and not np.array_equal(left, right)
