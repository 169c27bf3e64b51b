"""``GET /metrics`` on the gateway's HTTP port: the service's numbers in Prometheus' text format.

They are counted in the state store at each scrape, so every gateway of one store reports the same
numbers, whichever took the job (sum nothing across gateways: read any one). ``METRICS`` names and
explains each (docs/serving.md lists them). Times are seconds; the histograms and the ended images
count the images the store still keeps (jobs leave after ``DISCO_RESULT_TTL_S``), so a drop after
a prune reads as a counter reset. With ``DISCO_API_TOKENS`` set, a scraper sends one of the tokens
like any caller (Prometheus' ``authorization`` setting).
The executors' own metrics (requests, their durations) are Jina's ``monitoring`` (flow.yml).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from fastapi.responses import PlainTextResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

from disco_service.server.store import JobStore
from disco_service.wire import JobStatus

__all__ = ["BUCKETS", "METRICS", "mount", "ServiceCollector"]

# the histograms' upper bounds, seconds: a queue wait or a run from a second to six hours; a step
# from 50 ms (a GPU) to a minute (a large image on a CPU)
_LONG = (1.0, 5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0, 7200.0, 21600.0)
BUCKETS = {"queue_wait": _LONG, "run": _LONG, "step": (0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0)}

METRICS: dict[str, str] = {
    "disco_jobs": "jobs by status (label status: queued, running, done, failed, cancelled, abandoned, shutdown)",
    "disco_images": "images by status (label status: the job statuses and waiting: sent, no sampler has it yet)",
    "disco_images_in_flight": "images sent to the samplers and not finished, and those claimed to be sent now",
    "disco_sampler_slots": "images this gateway lets be in flight at once (the sampler replicas)",
    "disco_images_ended_total": "images that ended, by outcome (label outcome: done, failed, cancelled, ...)",
    "disco_image_queue_wait_seconds": "time from a job's submission to its image's first sending to the Flow",
    "disco_image_run_seconds": "time from an image's start on a sampler (else its sending) to its end",
    "disco_image_step_seconds": "seconds per diffusion step of each finished image (its run over its steps)",
}


class ServiceCollector(Collector):
    """Collects ``METRICS`` from ``store`` at each scrape; ``slots``: this gateway's sampler slots."""

    def __init__(self, store: JobStore, slots: int):
        self.store, self.slots = store, int(slots)

    def collect(self) -> Iterator[Metric]:
        """One family per name of ``METRICS``, counted now. Raises what the store raises when unreachable."""
        jobs = GaugeMetricFamily("disco_jobs", METRICS["disco_jobs"], labels=["status"])
        for status, count in self.store.job_counts().items():
            jobs.add_metric([status], count)
        yield jobs
        image_counts = self.store.image_counts()
        images = GaugeMetricFamily("disco_images", METRICS["disco_images"], labels=["status"])
        ended = CounterMetricFamily("disco_images_ended", METRICS["disco_images_ended_total"], labels=["outcome"])
        for status, count in image_counts.items():
            images.add_metric([status], count)
            if JobStatus(status).finished:
                ended.add_metric([status], count)
        yield images
        yield ended
        yield GaugeMetricFamily(
            "disco_images_in_flight", METRICS["disco_images_in_flight"], value=self.store.in_flight()
        )
        yield GaugeMetricFamily("disco_sampler_slots", METRICS["disco_sampler_slots"], value=self.slots)
        for name, bounds in BUCKETS.items():
            family = f"disco_image_{name}_seconds"
            found = self.store.time_histogram(name, bounds)
            buckets: list[tuple[str, Any]] = [(repr(b), c) for b, c in zip(found.buckets, found.counts, strict=True)]
            buckets.append(("+Inf", found.count))
            yield HistogramMetricFamily(family, METRICS[family], buckets=buckets, sum_value=found.total)


def mount(app: Any, store: JobStore, slots: int) -> None:
    """Add ``GET /metrics`` to the FastAPI ``app``: the metrics of ``store`` in Prometheus' text
    format; 503 when the store cannot be read."""
    registry = CollectorRegistry(auto_describe=False)  # this app's own: no other process metrics mixed in
    registry.register(ServiceCollector(store, slots))

    def metrics() -> Response:  # a plain function: FastAPI runs it in a thread, the store's calls block
        """The service's metrics in Prometheus' text format, counted in the state store (the same from
        every gateway; names in docs/serving.md); 503 when the store cannot be read."""
        try:
            return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)
        except Exception as exc:  # the store out of reach: say so rather than report zeros
            return PlainTextResponse(f"the state store cannot be read: {exc}", status_code=503)

    app.add_api_route("/metrics", metrics, methods=["GET"], tags=["metrics"])
