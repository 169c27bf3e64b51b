"""Quotas that bound volume: what one owner may ask for per day, and what the whole queue may hold.

Per owner and UTC day: ``max_images_per_day`` images and ``max_pixel_steps_per_day`` pixel-steps
(width x height x sampled steps, summed over a job's images; an animation counts every frame of
``max_frames``, an upper bound). For the whole queue: ``max_queued_images`` images waiting for a
sampler. The state store checks them in the transaction that accepts a job (store/base.py), so
gateways sharing a database cannot both let the last one in. A limit of 0 is no limit.

Every refusal is a ``QuotaExceeded``: its HTTP ``status`` (429 for an owner's quota, 503 for a
full or draining queue), its ``failure`` (code ``quota_exceeded``, setting None, a message that
names the limit, the numbers and when it resets) and ``retry_after_s`` (the ``Retry-After`` header).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from disco.tiling import gobig_steps
from disco_service.wire import ErrorCode, Failure

__all__ = [
    "job_pixel_steps",
    "LongJob",
    "next_day_s",
    "Quota",
    "QUEUE_RETRY_S",
    "QuotaExceeded",
    "utc_day",
]

QUEUE_RETRY_S = 60  # a full or draining queue: ask again in a minute


class LongJob(RuntimeError):
    """A job whose estimate exceeds the time this server runs without asking (``DISCO_CONFIRM_OVER_S``,
    server/estimates.py); the message names the estimate and the limit. Sent again with
    ``?confirm=1``, it is accepted."""

    code = ErrorCode.CONFIRM_REQUIRED


def utc_day(now: float) -> str:
    """The UTC day of ``now`` (seconds since the epoch) as ``YYYY-MM-DD``."""
    return time.strftime("%Y-%m-%d", time.gmtime(now))


def next_day_s(now: float) -> float:
    """Seconds from ``now`` until the next UTC midnight, when the day's counts start again."""
    return 86400 - now % 86400


def job_pixel_steps(settings: dict[str, Any], images: int) -> float:
    """Pixel-steps a job of ``images`` sampler calls asks for: width x height x (steps - skip_steps) x
    ``batch_size`` each (every image of a batch), with GoBig its tiles' steps too (disco.tiling); an
    animation's one image counts ``max_frames`` frames. ``settings``: the job's tags (validated)."""
    width, height = (int(v) for v in settings.get("width_height") or (0, 0))
    video = settings.get("animation_mode") == "Video Input"  # its video_init_* overrides count in their place

    def value(name: str) -> int:
        given = settings.get(f"video_init_{name}") if video else None
        return int((settings.get(name) if given is None else given) or 0)

    steps = max(0, value("steps") - value("skip_steps"))
    frames = int(settings.get("max_frames") or 1) if settings.get("animation_mode", "None") != "None" else 1
    if settings.get("gobig") and frames == 1 and width and height:  # the image's steps (none from init) and its tiles'
        steps = 0 if settings.get("gobig_from_init") else steps
        scale, ratio, overlap = (settings.get(n) for n in ("gobig_scale", "gobig_skip_ratio", "gobig_overlap"))
        steps += gobig_steps(width, height, value("steps"), int(scale), float(ratio), int(overlap))
    batch = int(settings.get("batch_size") or 1)  # each sampler call paints batch_size images
    return float(width * height * steps * frames * images * batch)


def _when(now: float) -> str:
    left = next_day_s(now)
    return f"at 00:00 UTC (in {int(left // 3600)} h {int(left % 3600 // 60)} min)"


class QuotaExceeded(RuntimeError):
    """A job refused by a quota (see the module's text)."""

    code = ErrorCode.QUOTA_EXCEEDED

    def __init__(self, status: int, message: str, retry_after_s: float):
        super().__init__(message)
        self.status = status
        self.retry_after_s = max(1, int(retry_after_s))
        self.failure = Failure(ErrorCode.QUOTA_EXCEEDED, message)

    @property
    def headers(self) -> dict[str, str]:
        return {"Retry-After": str(self.retry_after_s)}

    @classmethod
    def draining(cls) -> QuotaExceeded:
        return cls(503, "the service is draining: it finishes the jobs it has and accepts no new ones", QUEUE_RETRY_S)

    @classmethod
    def queue_full(cls, queued: int, asked: int, limit: int) -> QuotaExceeded:
        message = (
            f"the queue is full: {queued} images wait and this job adds {asked}, the most the service holds "
            f"is {limit} (DISCO_MAX_QUEUED_IMAGES); try again in {QUEUE_RETRY_S} s"
        )
        return cls(503, message, QUEUE_RETRY_S)


@dataclass(frozen=True)
class Quota:
    """The limits (0: none) and the owners they do not apply to (the operator's tokens)."""

    max_images_per_day: int = 0
    max_pixel_steps_per_day: float = 0
    max_queued_images: int = 0
    exempt: frozenset[str] = field(default_factory=frozenset)

    def check_day(self, now: float, used_images: int, images: int, used_pixel_steps: float, pixel_steps: float) -> None:
        """Raise ``QuotaExceeded`` (429) when a job of ``images`` images and ``pixel_steps`` would take
        the owner past a daily limit, given what it used today."""
        if self.max_images_per_day and used_images + images > self.max_images_per_day:
            raise QuotaExceeded(
                429,
                f"this token asked for {used_images} images today and this job adds {images}, the most per day is "
                f"{self.max_images_per_day} (DISCO_MAX_IMAGES_PER_DAY); the count starts again {_when(now)}",
                next_day_s(now),
            )
        if self.max_pixel_steps_per_day and used_pixel_steps + pixel_steps > self.max_pixel_steps_per_day:
            raise QuotaExceeded(
                429,
                f"this token asked for {used_pixel_steps:.3g} pixel-steps today and this job adds {pixel_steps:.3g} "
                f"(width x height x steps per image), the most per day is {self.max_pixel_steps_per_day:.3g} "
                f"(DISCO_MAX_PIXEL_STEPS_PER_DAY); the count starts again {_when(now)}",
                next_day_s(now),
            )

    def view(self) -> dict[str, Any]:
        """The limits as the API shows them (None: no limit)."""
        return {
            "max_images_per_day": self.max_images_per_day or None,
            "max_pixel_steps_per_day": self.max_pixel_steps_per_day or None,
            "max_queued_images": self.max_queued_images or None,
        }
