"""Counts over the state store for the service's metrics: images and jobs by status, and histograms
of times (seconds) over the images the store still keeps.

Every gateway of one store computes the same numbers, whichever took the job. Times come from the
images' rows: ``created`` (queued), ``first_sent`` (first sent to the Flow), ``started`` (a sampler
began it) and ``finished``. Images leave with their job after the result TTL, so the counts of
finished images are those still kept.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any

from disco_service.wire import JobStatus

__all__ = ["Histogram", "StatsRecords", "TIMES"]

_WORST_FIRST = ("failed", "shutdown", "abandoned", "cancelled")  # the status a finished job takes, worst first
_UNFINISHED = ("queued", "waiting", "running")

# name -> (the value of one image in seconds, which images have one); SQL written here only
TIMES: dict[str, tuple[str, str]] = {
    "queue_wait": ("first_sent - created", "first_sent IS NOT NULL"),
    "run": ("finished - COALESCE(started, first_sent)", "finished IS NOT NULL AND first_sent IS NOT NULL"),
    "step": ("(finished - started) / step", "status = 'done' AND started IS NOT NULL AND step > 0"),
}


@dataclass(frozen=True)
class Histogram:
    """Cumulative counts: ``counts[i]`` images had a value <= ``buckets[i]``; ``count`` had one at
    all and their values add up to ``total`` (seconds)."""

    buckets: tuple[float, ...]
    counts: tuple[int, ...]
    count: int
    total: float


class StatsRecords:
    """The store's counts for metrics, mixed into ``JobStore`` (which provides ``_tx``)."""

    def _tx(self, write: bool = True) -> AbstractContextManager[Any]:
        raise NotImplementedError

    def image_counts(self) -> dict[str, int]:
        """How many images have each status (every status named, 0 when none)."""
        counts = dict.fromkeys((s.value for s in JobStatus), 0)
        with self._tx(write=False) as tx:
            for row in tx.rows("SELECT status, COUNT(*) AS n FROM images GROUP BY status"):
                counts[row["status"]] = int(row["n"])
        return counts

    def job_counts(self) -> dict[str, int]:
        """How many jobs have each status, as the job API gives it: queued (no image sent), running
        (some image unfinished), else done or the worst way an image ended."""
        counts = dict.fromkeys((s.value for s in JobStatus), 0)
        counts.pop(JobStatus.WAITING.value)  # a job is queued or running while its images wait
        worst = " ".join(f"WHEN {c} > 0 THEN '{s}'" for s, c in zip(_WORST_FIRST, "fsac", strict=True))
        sql = f"""
            SELECT CASE WHEN q = n THEN 'queued' WHEN u > 0 THEN 'running' {worst} ELSE 'done' END AS status,
                COUNT(*) AS jobs
            FROM (SELECT COUNT(*) AS n,
                SUM(CASE WHEN status = 'queued' THEN 1 ELSE 0 END) AS q,
                SUM(CASE WHEN status IN {_UNFINISHED} THEN 1 ELSE 0 END) AS u,
                SUM(CASE WHEN status = 'failed' THEN 1 ELSE 0 END) AS f,
                SUM(CASE WHEN status = 'shutdown' THEN 1 ELSE 0 END) AS s,
                SUM(CASE WHEN status = 'abandoned' THEN 1 ELSE 0 END) AS a,
                SUM(CASE WHEN status = 'cancelled' THEN 1 ELSE 0 END) AS c
                FROM images GROUP BY job_id) per_job
            GROUP BY 1"""
        with self._tx(write=False) as tx:
            for row in tx.rows(sql):
                counts[row["status"]] = int(row["jobs"])
        return counts

    def time_histogram(self, name: str, buckets: Sequence[float]) -> Histogram:
        """The histogram of ``TIMES[name]`` (queue_wait, run or step: seconds) over the kept images,
        with upper bounds ``buckets`` (ascending). Raises ``KeyError`` for another name."""
        value, where = TIMES[name]
        bounds = tuple(float(b) for b in buckets)
        columns = "".join(f", SUM(CASE WHEN v <= {b!r} THEN 1 ELSE 0 END) AS b{i}" for i, b in enumerate(bounds))
        values = f"SELECT {value} AS v FROM images WHERE {where}"
        sql = f"SELECT COUNT(*) AS n, COALESCE(SUM(v), 0) AS total{columns} FROM ({values}) t"
        with self._tx(write=False) as tx:
            row = tx.one(sql)
        counts = tuple(int(row[f"b{i}"] or 0) for i in range(len(bounds)))
        return Histogram(bounds, counts, int(row["n"]), float(row["total"]))
