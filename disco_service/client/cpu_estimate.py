"""How long a run takes on a CPU, said before it starts.

Seconds per step ≈ ``UNET_S + UNET_S_PER_PIXEL * width * height + CLIP_S_PER_CUTOUT * cutouts * cutn_batches``,
fitted to ``benchmarks/step_time.py`` on 2 CPU cores in fast mode (``benchmarks/results/``):
11.2 s at 256x256 and 29.2 s at 512x512, both with one batch of 16 cutouts, of which CLIP's
forward and backward take about 3.2 s. More cores make it faster, a busy machine slower: it is
an order of magnitude, meant to tell minutes from hours.
"""

from __future__ import annotations

from typing import Any

from disco.animation_plan import plan_run
from disco.settings import Settings, count_schedule, with_video_init_overrides

__all__ = [
    "CLIP_S_PER_CUTOUT",
    "cpu_notice",
    "cpu_seconds_per_step",
    "duration",
    "LONG_RUN_S",
    "mean_cutouts",
    "SMALL_ANIMATION",
    "SMALL_RUN",
    "UNET_S",
    "UNET_S_PER_PIXEL",
]

UNET_S_PER_PIXEL = (29.23 - 11.21) / (512 * 512 - 256 * 256)  # 9.2e-5 s: the UNet grows with the pixels
CLIP_S_PER_CUTOUT = 3.2 / 16  # CLIP forward and backward, per cutout
UNET_S = 11.21 - UNET_S_PER_PIXEL * 256 * 256 - CLIP_S_PER_CUTOUT * 16  # 2.0 s: the rest, whatever the size
SMALL_RUN = "--width_height 256 256 --steps 50 --cutn_batches 1 --n_batches 1"
SMALL_ANIMATION = "--width_height 256 256 --steps 50 --cutn_batches 1 --max_frames 10"
LONG_RUN_S = 15 * 60  # longer than this on a CPU: say how to make it small


def cpu_seconds_per_step(width: int, height: int, cutn_batches: int = 4, cutouts: float = 16) -> float:
    """Estimated seconds per step on 2 CPU cores (fast mode) for an image of ``width`` x ``height``."""
    return UNET_S + UNET_S_PER_PIXEL * width * height + CLIP_S_PER_CUTOUT * cutouts * cutn_batches


def mean_cutouts(s: Settings) -> float:
    """Cutouts CLIP judges per step (overview plus inner cuts, times ``cutn_batches``), averaged
    over the 1000 virtual steps of the schedules: a step's time grows with it, so a run's time
    follows the mean, not the largest value, of a scheduled ``cutn_batches``."""
    overview, inner = count_schedule("cut_overview", s.cut_overview), count_schedule("cut_innercut", s.cut_innercut)
    batches = count_schedule("cutn_batches", s.cutn_batches)
    return sum((o + i) * b for o, i, b in zip(overview, inner, batches, strict=True)) / len(overview)


def duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 90 * 60:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h" if seconds < 10 * 3600 else f"{seconds / 3600:.0f} h"


def cpu_notice(s: Settings, why: str, animation: Any = None) -> str:
    """What a run on the CPU means for these settings, and how to make it small. ``animation``: an
    animation's plan (``disco_service.client.animations.AnimationRun``: its frames and steps)."""
    s = with_video_init_overrides(s)  # a video's overrides in place
    per_step = cpu_seconds_per_step(s.width, s.height, cutn_batches=1, cutouts=mean_cutouts(s))  # all batches
    if animation is not None:
        made = animation.frames - animation.start_frame
        total = per_step * animation.steps
        notice = (
            f"running on the CPU ({why}): {made} frame{'s' if made > 1 else ''} of {s.width}x{s.height}, "
            f"{animation.steps} steps in all, about {duration(per_step)} a step, {duration(total)} in all on 2 cores."
        )
        return notice + f" Use a GPU, or for a first try: {SMALL_ANIMATION}" if total > LONG_RUN_S else notice
    steps = plan_run(s).run_steps  # GoBig's tiles included
    count = s.n_batches * s.batch_size  # a batch's step costs its images' each (their pixels and cutouts)
    images = f"{count} image{'s' if count > 1 else ''}"
    if s.batch_size > 1:
        images += f" ({s.n_batches} batch{'es' if s.n_batches > 1 else ''} of {s.batch_size})"
    total = per_step * steps * count
    notice = (
        f"running on the CPU ({why}): {images} of {s.width}x{s.height}, {steps} steps each, "
        f"about {duration(per_step)} a step, {duration(total)} in all on 2 cores."
    )
    # a small run needs no advice on making it small
    return notice + f" Use a GPU, or for a first try: {SMALL_RUN}" if total > LONG_RUN_S else notice
