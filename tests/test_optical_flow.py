"""Optical flow: RAFT loads strictly and gives a (2, H, W) field; warping and the consistency mask on
hand-made flows (RAFT's test weights are random, so its flow between shifted frames means nothing:
that RAFT finds a shift is checked with torchvision's trained weights, when the model directory
holds them)."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from make_test_weights import make

from disco.optical_flow import FlowModel, consistency_mask, estimate_flow, load_raft, warp_with_flow
from disco.weights import RAFT_FILE, REGISTRY


def textured(height: int = 64, width: int = 64, channels: int = 3) -> np.ndarray:
    rng = np.random.default_rng(0)
    return rng.uniform(0, 255, (height, width, channels)).astype(np.float32)


def test_warping_with_a_constant_flow_shifts_the_picture() -> None:
    image = textured()
    flow = np.zeros((2, 64, 64), np.float32)
    flow[0], flow[1] = 3.0, -2.0  # every pixel reads 3 to the right and 2 up
    warped = warp_with_flow(image, flow)
    assert warped.shape == image.shape and warped.dtype == image.dtype
    np.testing.assert_allclose(warped[2:, :-3], image[:-2, 3:], atol=1e-3)
    assert (warped[:2] == 0).all() and (warped[:, -3:] == 0).all()  # read past the edge: the notebook's 0
    # a half-pixel flow interpolates between neighbours
    flow[0], flow[1] = 0.5, 0.0
    half = warp_with_flow(image, torch.from_numpy(flow))
    np.testing.assert_allclose(half[:, :-1], (image[:, :-1] + image[:, 1:]) / 2, atol=1e-2)


def moving_square() -> tuple[np.ndarray, np.ndarray]:
    """Forward and backward flows of a 10 x 10 square moving 4 pixels right over a still background."""
    forward = np.zeros((2, 40, 48), np.float32)
    backward = np.zeros((2, 40, 48), np.float32)
    forward[0, 10:20, 20:30] = 4.0  # frame a: the square at columns 20..29
    backward[0, 10:20, 24:34] = -4.0  # frame b: the square at columns 24..33
    return forward, backward


def test_the_consistency_mask_marks_the_occluded_and_the_disoccluded_pixels() -> None:
    forward, backward = moving_square()
    # frame a's background at columns 30..33 is covered by the square in frame b: occluded
    mask_a = consistency_mask(forward, backward)
    expected_a = np.ones((40, 48), np.float32)
    expected_a[10:20, 30:34] = 0
    np.testing.assert_array_equal(mask_a, expected_a)
    # frame b's background at columns 20..23 was behind the square in frame a: nothing to carry over
    mask_b = consistency_mask(torch.from_numpy(backward), torch.from_numpy(forward))
    expected_b = np.ones((40, 48), np.float32)
    expected_b[10:20, 20:24] = 0
    np.testing.assert_array_equal(mask_b, expected_b)


def test_flows_that_leave_the_frame_are_not_trusted() -> None:
    forward = np.zeros((2, 16, 16), np.float32)
    forward[0] = 5.0  # everything moves 5 right: the last 5 columns leave the frame
    mask = consistency_mask(forward, -forward)
    assert (mask[:, :11] == 1).all() and (mask[:, 11:] == 0).all()


def test_warping_the_previous_frame_with_the_backward_flow_rebuilds_the_current_one() -> None:
    forward, backward = moving_square()
    frame_a = np.zeros((40, 48), np.float32)
    frame_a[10:20, 20:30] = 1.0
    frame_b = np.zeros((40, 48), np.float32)
    frame_b[10:20, 24:34] = 1.0
    warped = warp_with_flow(frame_a, backward)
    reliable = consistency_mask(backward, forward) == 1
    np.testing.assert_array_equal(warped[reliable], frame_b[reliable])


@pytest.fixture(scope="module")
def raft_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("raft_weights")
    make(directory, [RAFT_FILE])
    return directory


def test_raft_loads_strictly_and_gives_a_flow_of_the_frames_size(raft_file: Path) -> None:
    model = load_raft(raft_file / RAFT_FILE)
    assert not model.training
    torch.manual_seed(0)
    frame_a = torch.rand(1, 3, 132, 140) * 2 - 1  # not multiples of 8: padded, then cropped back
    frame_b = torch.roll(frame_a, shifts=3, dims=-1)
    flow = estimate_flow(model, frame_a, frame_b, iterations=2)
    assert flow.shape == (2, 132, 140) and flow.dtype == torch.float32 and torch.isfinite(flow).all()
    with pytest.raises(ValueError, match="128 x 128"):
        estimate_flow(model, frame_a[..., :120, :], frame_b[..., :120, :])


def test_raft_refuses_a_file_of_other_weights(tmp_path: Path) -> None:
    state = {"feature_encoder.convnormrelu.0.weight": torch.zeros(64, 3, 7, 7)}  # one right name, no more
    torch.save(state, tmp_path / RAFT_FILE)
    with pytest.raises(ValueError, match="RAFT-Large"):
        load_raft(tmp_path / RAFT_FILE)


def trained_raft() -> Path:
    """torchvision's trained RAFT-Large in the model directory ($DISCO_MODEL_DIR, else
    ~/.cache/disco-diffusion), checked against its sha256; the test is skipped without it."""
    directory = Path(os.environ.get("DISCO_MODEL_DIR") or Path.home() / ".cache" / "disco-diffusion")
    path = directory / RAFT_FILE
    if not path.is_file() or hashlib.sha256(path.read_bytes()).hexdigest() != REGISTRY[RAFT_FILE].sha256:
        pytest.skip(
            f"needs the trained {RAFT_FILE} in {directory} (python -m disco_service.client.download {RAFT_FILE})"
        )
    return path


@pytest.mark.parametrize(("dx", "dy"), [(3, 2), (-5, 0), (0, -4)])
def test_raft_finds_the_shift_between_a_picture_and_its_shifted_copy(dx, dy):
    import cv2

    model = FlowModel(load_raft(trained_raft()))
    rng = np.random.default_rng(1)
    picture = cv2.resize(rng.integers(0, 256, (48, 48, 3), dtype=np.uint8), (192, 192), interpolation=cv2.INTER_CUBIC)
    shifted = np.roll(picture, (dy, dx), axis=(0, 1))  # what was at p is at p + (dx, dy)
    flow = model.flow(picture, shifted)  # from the picture to its copy: (dx, dy) everywhere
    inside = flow[:, 16:-16, 16:-16]  # away from the borders, where the roll wraps around
    error = np.hypot(inside[0] - dx, inside[1] - dy)
    assert np.median(error) < 0.5 and (error < 1).mean() > 0.95
