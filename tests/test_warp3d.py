"""The 3D warp against cases worked out by hand (tiny frames, CPU)."""

from __future__ import annotations

import math

import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from disco.warp3d import camera_motion, pixel_grid, rotation_matrix, sampling_grid, warp_3d

SIZE = 64


def smooth_image(height: int = SIZE, width: int = SIZE) -> torch.Tensor:
    """A smooth (1, 3, H, W) picture in [-1, 1]: sampling errors stay small, motions stay visible."""
    v, u = torch.meshgrid(torch.linspace(0, 1, height), torch.linspace(0, 1, width), indexing="ij")
    channels = [torch.sin(5 * u + 2 * v), torch.cos(3 * u - 4 * v), torch.sin(7 * u * v)]
    return torch.stack(channels)[None] * 0.9


def interior(x: torch.Tensor, margin: int = 8) -> torch.Tensor:
    return x[..., margin:-margin, margin:-margin]


def test_no_motion_is_the_identity() -> None:
    image = smooth_image()
    depth = torch.rand(SIZE, SIZE) * 3 + 0.5  # any depth: nothing moves
    for mode in ("bilinear", "nearest", "bicubic"):
        out = warp_3d(image, depth, sampling_mode=mode)
        assert torch.allclose(out, image, atol=1e-5), mode


def test_rotation_matrix_composes_x_then_y_then_z() -> None:
    r = rotation_matrix(10, 20, 30)
    assert torch.allclose(r @ r.T, torch.eye(3, dtype=torch.float64), atol=1e-12)
    assert torch.allclose(r, rotation_matrix(10, 0, 0) @ rotation_matrix(0, 20, 0) @ rotation_matrix(0, 0, 30))
    c, s = math.cos(math.radians(30)), math.sin(math.radians(30))
    expected_z = torch.tensor([[c, -s, 0], [s, c, 0], [0, 0, 1]], dtype=torch.float64)
    assert torch.allclose(rotation_matrix(0, 0, 30), expected_z)


def test_camera_motion_has_the_notebook_scale_and_signs() -> None:
    translation, rotation = camera_motion(translation_x=10, translation_y=20, translation_z=-40)
    assert translation == pytest.approx((-0.05, 0.1, 0.2))
    assert torch.equal(rotation, torch.eye(3, dtype=torch.float64))


@pytest.mark.parametrize(("angle", "height", "width"), [(5.0, SIZE, SIZE), (-12.0, SIZE, SIZE), (20.0, 48, 80)])
def test_rotation_3d_z_alone_is_the_2d_rotation_about_the_centre(angle: float, height: int, width: int) -> None:
    image = smooth_image(height, width)
    depth = torch.rand(height, width) + 1.0  # a rotation about the view axis does not depend on depth
    _, rotation = camera_motion(rotation_3d_z=angle)
    out = warp_3d(image, depth, rotation=rotation, sampling_mode="bilinear", iterations=20)
    # OpenCV: a positive angle turns the picture counter-clockwise about the centre, on screen;
    # pixels are square on a wide frame too
    centre = ((width - 1) / 2, (height - 1) / 2)
    matrix = cv2.getRotationMatrix2D(centre, angle, 1.0)
    pixels = image[0].permute(1, 2, 0).numpy().astype(np.float32)
    expected = torch.from_numpy(cv2.warpAffine(pixels, matrix, (width, height), flags=cv2.INTER_LINEAR))
    expected = expected.permute(2, 0, 1)[None]
    # compared where OpenCV read inside the frame (past the edge, it reads 0 and the warp the border)
    inside = cv2.warpAffine(np.ones((height, width), np.float32), matrix, (width, height), flags=cv2.INTER_LINEAR)
    inside = torch.from_numpy(inside > 0.999)
    assert inside.float().mean() > 0.6
    assert (out - expected).abs().amax(dim=1)[0][inside].max() < 0.02
    assert (interior(image) - interior(expected)).abs().max() > 0.1  # the rotation is visible (and its sign matters)


@pytest.mark.parametrize(("depth_value", "forward"), [(2.0, 40.0), (1.0, -30.0)])
def test_translation_z_on_a_constant_depth_zooms_about_the_centre(depth_value: float, forward: float) -> None:
    image = smooth_image()
    translation, rotation = camera_motion(translation_z=forward)
    out = warp_3d(image, torch.full((SIZE, SIZE), depth_value), translation, rotation, sampling_mode="bilinear")
    # moving forward by t brings the plane at depth d to d - t: the picture grows by d / (d - t)
    t = forward / 200
    zoom = depth_value / (depth_value - t)
    expected = F.grid_sample(image, pixel_grid(SIZE, SIZE)[None] / zoom, mode="bilinear", align_corners=False)
    assert (zoom > 1) == (forward > 0)
    assert (interior(out) - interior(expected)).abs().max() < 1e-3
    assert (interior(out) - interior(image)).abs().max() > 0.05


def test_a_point_at_a_known_depth_moves_by_the_projected_amount() -> None:
    # fov 90: f = 1, so a sideways move T at depth D shifts the picture by f * T / D in u (W / 2 pixels per unit)
    image = torch.full((1, 3, SIZE, SIZE), -1.0)
    image[..., 20, 16] = 1.0  # one bright pixel on the left half, one on the right half (away from the step)
    image[..., 40, 50] = 1.0
    depth = torch.full((SIZE, SIZE), 1.0)
    depth[:, SIZE // 2 :] = 2.0  # the right half is twice as far: half the parallax
    translation, rotation = camera_motion(translation_x=25)  # T_x = -0.125: the camera moves right
    out = warp_3d(image, depth, translation, rotation, fov=90.0, sampling_mode="nearest")
    bright = {(int(y), int(x)) for y, x in (out[0, 0] > 0).nonzero()}
    # near: -0.125 / 1 * 32 = -4 pixels; far: -0.125 / 2 * 32 = -2 pixels (the picture moves left)
    assert bright == {(20, 12), (40, 48)}


def test_translation_y_moves_the_picture_down_and_rotation_x_too() -> None:
    image = torch.full((1, 1, SIZE, SIZE), -1.0)
    image[..., 32, 32] = 1.0
    depth = torch.full((SIZE, SIZE), 1.0)
    translation, rotation = camera_motion(translation_y=25)
    out = warp_3d(image, depth, translation, rotation, fov=90.0, sampling_mode="nearest")
    assert out[0, 0, 36, 32] == 1.0 and out[0, 0, 32, 32] == -1.0
    # a small positive rotation_3d_x moves the centre down by f * tan(angle) in v
    angle = math.degrees(math.atan(4 / 32))
    _, rotation = camera_motion(rotation_3d_x=angle)
    out = warp_3d(image, depth, rotation=rotation, fov=90.0, sampling_mode="nearest", iterations=20)
    assert out[0, 0, 36, 32] == 1.0


def test_one_iteration_is_the_notebooks_offset_scheme() -> None:
    depth = torch.rand(16, 16) + 1.0
    translation, rotation = camera_motion(translation_x=8, translation_y=-6)
    grid = sampling_grid(depth, translation, rotation, fov=60.0, iterations=1)
    # the notebook samples at p - (g(p) - p); a sideways move shifts g(p) by f * T / (a * D)
    f = 1 / math.tan(math.radians(30))
    shift = torch.stack((f * translation[0] / depth, f * translation[1] / depth), dim=-1)
    assert torch.allclose(grid[0], pixel_grid(16, 16) - shift, atol=1e-5)


def test_settings_out_of_range_are_refused() -> None:
    image, depth = smooth_image(8, 8), torch.ones(8, 8)
    with pytest.raises(ValueError, match="padding_mode"):
        warp_3d(image, depth, padding_mode="wrap")
    with pytest.raises(ValueError, match="sampling_mode"):
        warp_3d(image, depth, sampling_mode="lanczos")
    with pytest.raises(ValueError, match="near_plane"):
        warp_3d(image, depth, near_plane=100, far_plane=10)
    with pytest.raises(ValueError, match="depth"):
        warp_3d(image, torch.ones(4, 8))
