"""A shared server under load: small jobs from several tokens at once, through the job API.

    python tests/make_test_weights.py /tmp/models          # or real weights: any DISCO_MODEL_DIR
    python benchmarks/load.py /tmp/models                  # 8 jobs from 4 tokens, 2 sampler replicas

It starts ``serve.py`` with ``--replicas`` samplers and ``DISCO_API_TOKENS`` (one made-up token per
caller) on free local ports, has every token submit its jobs at once (token 0's first, then token
1's, ...; one image each), and watches them with ``GET /jobs/ID`` until all are done. For each job:
the wait (submitted to its image started) and the total (submitted to done). It prints the order in
which the tokens' images started (round-robin: each token's first image before any token's second),
p50 and p95 of the wait and the total, and writes them as JSON to
``benchmarks/results/load-<device>-<date>.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"


def percentile(values: list[float], q: float) -> float:
    """The ``q`` quantile (0..1) by linear interpolation between the nearest ranks."""
    ordered = sorted(values)
    at = (len(ordered) - 1) * q
    low = int(at)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (at - low)


def request(method: str, url: str, token: str, body: dict | None = None) -> dict:
    data = json.dumps(body).encode() if body is not None else None
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    with urllib.request.urlopen(urllib.request.Request(url, data, headers, method=method), timeout=30) as answer:
        return json.load(answer)


def free_port() -> int:
    from disco_service.client.local_flow import free_port as pick

    return pick()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model_dir", type=Path, help="the weights (DISCO_MODEL_DIR)")
    parser.add_argument("--replicas", type=int, default=2, help="sampler replicas (default 2)")
    parser.add_argument("--tokens", type=int, default=4, help="callers, one token each (default 4)")
    parser.add_argument("--jobs-per-token", type=int, default=2, help="jobs each caller submits (default 2)")
    parser.add_argument("--size", type=int, default=64, help="width and height of each image (default 64)")
    parser.add_argument("--steps", type=int, default=8, help="sampled steps of each image (default 8)")
    parser.add_argument("--out", type=Path, default=None, help="the JSON file (default: benchmarks/results/...)")
    args = parser.parse_args(argv)

    tokens = [f"load-{i}-{secrets.token_hex(12)}" for i in range(args.tokens)]
    grpc_port, http_port = free_port(), free_port()
    base = f"http://127.0.0.1:{http_port}"
    settings = {
        "text_prompts": ["a lighthouse in a storm:1"], "width_height": [args.size, args.size], "steps": args.steps,
        "skip_steps": 0, "display_rate": args.steps, "n_batches": 1, "cutn_batches": 1,
        "cut_overview": "[1]*1000", "cut_innercut": "[1]*1000",
    }  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        env = {**os.environ, "DISCO_MODEL_DIR": str(args.model_dir), "DISCO_API_TOKENS": ",".join(tokens)}
        env.update(DISCO_RESULTS_DIR=f"{tmp}/results", DISCO_STATE_DIR=f"{tmp}/state")
        env.update(PYTHONUNBUFFERED="1")
        ready = Path(tmp) / "ready"
        command = [sys.executable, str(ROOT / "serve.py"), f"--port={grpc_port}", f"--http-port={http_port}",
                   f"--replicas={args.replicas}", f"--ready-file={ready}", "--quiet"]  # fmt: skip
        log = open(Path(tmp) / "serve.log", "w")  # noqa: SIM115 (open for the server's whole life)
        started = time.time()
        server = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            while not ready.exists():
                if server.poll() is not None:
                    sys.exit(
                        f"serve.py exited with {server.returncode}:\n{(Path(tmp) / 'serve.log').read_text()[-3000:]}"
                    )
                time.sleep(0.5)
            print(f"serving {args.replicas} sampler replicas after {time.time() - started:.0f} s", flush=True)
            jobs = []
            for token in tokens:  # each caller hands in all its jobs at once, one caller after another
                for _ in range(args.jobs_per_token):
                    submitted = time.time()
                    job = request("POST", f"{base}/jobs", token, settings)
                    jobs.append({"token": tokens.index(token), "id": job["id"], "submitted": submitted})
            while any("done" not in j for j in jobs):
                for job in (j for j in jobs if "done" not in j):
                    state = request("GET", f"{base}/jobs/{job['id']}", tokens[job["token"]])
                    image = state["images"][0]
                    if "started" not in job and image["status"] in ("running", "done"):
                        job["started"] = time.time()
                    if state["status"] not in ("queued", "running"):
                        job.update(done=time.time(), status=state["status"])
                time.sleep(0.2)
        finally:
            os.killpg(server.pid, signal.SIGTERM)
            server.wait(120)
            log.close()

    waits = [j["started"] - j["submitted"] for j in jobs]
    totals = [j["done"] - j["submitted"] for j in jobs]
    order = [j["token"] for j in sorted(jobs, key=lambda j: j["started"])]
    figures = {
        "replicas": args.replicas, "tokens": args.tokens, "jobs": len(jobs), "size": args.size, "steps": args.steps,
        "start_order_by_token": order, "statuses": sorted({j["status"] for j in jobs}),
        "wait_s": {"p50": percentile(waits, 0.5), "p95": percentile(waits, 0.95), "max": max(waits)},
        "total_s": {"p50": percentile(totals, 0.5), "p95": percentile(totals, 0.95), "max": max(totals)},
        "mean_wait_s_by_token": [statistics.mean(w for j, w in zip(jobs, waits, strict=True) if j["token"] == t)
                                 for t in range(args.tokens)],
    }  # fmt: skip
    print(json.dumps(figures, indent=1))
    device = "gpu" if shutil.which("nvidia-smi") else "cpu"
    out = args.out or RESULTS / f"load-{device}-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(figures, indent=1) + "\n")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
