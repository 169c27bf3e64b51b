"""Memory of a guidance step, counted on fake tensors (shapes, no values): the default image
fits 8 GB in fast mode and 12 GB in exact mode, and the engine's per-cutout figures hold."""

import pytest
import torch
from torch._subclasses.fake_tensor import FakeTensorMode

from disco import memory

GIB = 2**30


def test_live_bytes_counts_what_is_alive_and_the_peak():
    with FakeTensorMode(), memory.LiveBytes() as counter:
        a = torch.empty(1024, 1024)  # 4 MiB
        with counter.part() as part:
            b = torch.empty(2048, 1024)  # 8 MiB
            del b
            c = a.view(-1)  # a view: no new storage
        assert counter.now == 4 * 2**20 and part["peak"] == 8 * 2**20 and counter.peak == 12 * 2**20
        del a, c
        torch.empty(1)
        assert counter.now == 4


@pytest.mark.slow  # real-size weights: RN50 and ViT-B/32 at 224 px
@pytest.mark.parametrize("half", [False, True])
@pytest.mark.parametrize("clip_model", ["RN50::openai", "ViT-B-32::openai"])
def test_cutout_bytes_cover_what_a_clip_pass_takes(clip_model, half):
    from memory import cutout_cost  # benchmarks/memory.py: Disco's first-step batch of 16 cutouts

    per_cutout = cutout_cost(clip_model, half)["bytes_per_cutout"]
    budget = memory.CLIP_CUTOUT_BYTES[clip_model]["half" if half else "fp32"]
    assert 0.6 * budget < per_cutout <= budget, f"{per_cutout / 2**20:.1f} MiB per cutout"


@pytest.mark.slow  # real-size weights: the 512x512 UNet and RN50 at 1280x768
@pytest.mark.parametrize("side,card", [("fast", 8 * GIB), ("exact", 12 * GIB)])
def test_the_default_image_fits_the_card(side, card):
    from memory import measure  # benchmarks/memory.py

    result = measure(side, 1280, 768, cutn_batches=4)
    assert result["predicted_peak_bytes"] + memory.RESERVE <= card, result
    if side == "exact":  # a 12 GB card cannot take all 64 cutouts in one fp32 pass
        assert result["cutout_batches_per_clip_pass"] < 4
