"""Gather the device check's parts (benchmarks/gpu_check.sh) into one JSON and a summary.

    python benchmarks/gpu_summary.py WORK_DIR --out-dir benchmarks/results [--dry-run]

WORK_DIR holds ``parts.tsv`` (name, exit status, seconds per part), each part's log, the
pytest JUnit XML and the JSON files of step_time, end_to_end and fast_psnr. Writes
``gpu_check-<device>-<date>.json`` (``gpu_check-cpu-dry-run-<date>.json`` for a dry run) and
prints every target with pass/fail. Exit status 1 when a part failed, timed out or was skipped.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
import xml.etree.ElementTree as ET
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

# Targets on an H100 for the default image (1280x768, 250 steps, skip 10, cutn_batches 4).
MAX_IMAGE_S = 30.0
MAX_RATIO = 0.33
MAX_PEAK_FAST_GIB = 8.0
MAX_PEAK_EXACT_GIB = 12.0
MIN_PSNR_DB = 30.0
TIMED_OUT = (124, 137)


@dataclass
class Target:
    name: str
    value: float | None
    limit: float
    unit: str
    at_most: bool = True  # False: the value must be at least the limit

    @property
    def passed(self) -> bool | None:
        if self.value is None:
            return None
        return self.value <= self.limit if self.at_most else self.value >= self.limit

    def line(self) -> str:
        verdict = {True: "PASS", False: "FAIL", None: "n/a "}[self.passed]
        value = "not measured" if self.value is None else f"{self.value:.3f} {self.unit}"
        sign = "<=" if self.at_most else ">="
        return f"{verdict} {self.name}: {value} (target {sign} {self.limit:g} {self.unit})"


def read_parts(work: Path) -> dict[str, dict]:
    """Each part's status ("ok", "failed", "timed out", "skipped"), exit status and seconds."""
    parts = {}
    for row in (work / "parts.tsv").read_text().splitlines():
        name, rc, seconds = row.split("\t")
        if rc == "skipped":
            parts[name] = {"status": "skipped", "rc": None, "seconds": 0}
            continue
        status = "ok" if rc == "0" else "timed out" if int(rc) in TIMED_OUT else "failed"
        parts[name] = {"status": status, "rc": int(rc), "seconds": int(seconds)}
        log = work / f"{name}.log"
        if status != "ok" and log.exists():
            parts[name]["log_tail"] = log.read_text(errors="replace")[-3000:]
    return parts


def read_json(path: Path | None) -> dict | None:
    return json.loads(path.read_text()) if path and path.exists() else None


def newest(work: Path, pattern: str) -> Path | None:
    found = sorted(work.glob(pattern))
    return found[-1] if found else None


def test_counts(xml: Path) -> dict | None:
    if not xml.exists():
        return None
    suite = ET.parse(xml).getroot()
    suite = suite if suite.tag == "testsuite" else suite.find("testsuite")
    counts = {k: int(suite.get(k, 0)) for k in ("tests", "failures", "errors", "skipped")}
    failed = [
        f"{case.get('classname')}::{case.get('name')}"
        for case in suite.iter("testcase")
        if case.find("failure") is not None or case.find("error") is not None
    ]
    return {**counts, "failed": failed}


def conformance_lines(log: Path) -> list[str]:
    if not log.exists():
        return []
    return [line for line in log.read_text().splitlines() if re.match(r"(ok|FAIL|device|\d+ cases)", line)]


def largest_size(step_time: dict) -> str:
    sizes = {f"{r['width']}x{r['height']}": r["width"] * r["height"] for r in step_time["results"]}
    return max(sizes, key=sizes.get)


def step_figure(step_time: dict | None, side: str, key: str) -> float | None:
    if not step_time:
        return None
    size = largest_size(step_time)
    rows = (r[key] for r in step_time["results"] if r["side"] == side and f"{r['width']}x{r['height']}" == size)
    return next(rows, None)


def targets(step_time: dict | None, end_to_end: dict | None, psnr: dict | None) -> list[Target]:
    size = largest_size(step_time) if step_time else "largest size"
    image = f"{end_to_end['size']}, {end_to_end['steps']} steps" if end_to_end else "default image"
    seconds = end_to_end["seconds"] if end_to_end else None
    ratio = step_time["ratio_ours_over_reference"][size] if step_time else None
    fast_peaks = [step_figure(step_time, "ours", "peak_gib"), end_to_end["peak_gib"] if end_to_end else None]
    fast_peak = max((v for v in fast_peaks if v is not None), default=None)
    exact_peak = step_figure(step_time, "ours_exact", "peak_gib")
    psnr_name = f"PSNR fast/exact ({psnr['size']})" if psnr else "PSNR fast/exact"
    return [
        Target(f"{image} end to end, fast", seconds, MAX_IMAGE_S, "s"),
        Target(f"step time ours/reference at {size}", ratio, MAX_RATIO, "x"),
        Target(f"peak memory, fast ({size} step, {image})", fast_peak, MAX_PEAK_FAST_GIB, "GiB"),
        Target(f"peak memory, exact ({size} step)", exact_peak, MAX_PEAK_EXACT_GIB, "GiB"),
        Target(psnr_name, psnr["psnr_db"] if psnr else None, MIN_PSNR_DB, "dB", at_most=False),
    ]


def device_name(dry_run: bool) -> str:
    if dry_run or not torch.cuda.is_available():
        return "cpu-dry-run" if dry_run else "cpu"
    return torch.cuda.get_device_name()


def summarise(work: Path, dry_run: bool) -> tuple[dict, list[str]]:
    """The combined record and the summary lines."""
    parts = read_parts(work)
    step_time = read_json(newest(work, "step_time-*.json"))
    end_to_end = read_json(work / "end_to_end.json")
    psnr = read_json(newest(work, "fast_psnr-*.json"))
    goals = targets(step_time, end_to_end, psnr)
    record = {
        "device": device_name(dry_run),
        "dry_run": dry_run,
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
        "torch": torch.__version__,
        "seconds": sum(p["seconds"] for p in parts.values()),
        "parts": parts,
        "tests": test_counts(work / "pytest.xml"),
        "conformance": conformance_lines(work / "conformance.log"),
        "step_time": step_time,
        "end_to_end": end_to_end,
        "fast_psnr": psnr,
        "targets": [{**asdict(t), "passed": t.passed} for t in goals],
    }
    lines = [f"device check on {record['device']}: {record['seconds']} s"]
    lines += [f"  part {name:<12} {p['status']:<9} {p['seconds']:>4} s" for name, p in parts.items()]
    if record["tests"]:
        t = record["tests"]
        lines.append(f"  tests: {t['tests']} run, {t['failures'] + t['errors']} failed, {t['skipped']} skipped")
    if record["conformance"]:
        lines.append(f"  conformance: {record['conformance'][-1]}")
    if step_time:
        for r in step_time["results"]:
            size = f"{r['width']}x{r['height']}"
            lines.append(f"  step {r['side']:<10} {size}: {r['median_s']:.3f} s/step, peak {r['peak_gib']:.2f} GiB")
    if dry_run:
        lines.append("  (CPU dry run: tiny sizes, the figures say nothing about the targets)")
    lines += ["  " + t.line() for t in goals]
    return record, lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("work", type=Path)
    parser.add_argument("--out-dir", type=Path, required=True)
    parser.add_argument("--dry-run", action="store_true")
    args = parser.parse_args(argv)
    record, lines = summarise(args.work, args.dry_run)
    slug = re.sub(r"[^A-Za-z0-9]+", "-", record["device"]).strip("-")
    out = args.out_dir / f"gpu_check-{slug}-{time.strftime('%Y%m%d-%H%M%S')}.json"
    args.out_dir.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(record, indent=1))
    print("\n".join(lines))
    print(f"wrote {out}")
    return 0 if all(p["status"] == "ok" for p in record["parts"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
