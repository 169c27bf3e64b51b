"""The device check's plumbing without a GPU: the script's arguments and the summary of its parts."""

import json
import subprocess
from pathlib import Path

from benchmarks import gpu_summary

SCRIPT = Path(__file__).resolve().parent.parent / "benchmarks" / "gpu_check.sh"

JUNIT = """<?xml version="1.0" encoding="utf-8"?><testsuites><testsuite name="pytest" errors="0" failures="1"
 skipped="0" tests="3"><testcase classname="tests.test_cuda" name="test_a"/><testcase classname="tests.test_cuda"
 name="test_b"><failure message="boom"/></testcase><testcase classname="tests.test_cuda" name="test_c"/>
</testsuite></testsuites>"""


def step(side: str, width: int, height: int, median_s: float, peak_gib: float) -> dict:
    return {"side": side, "width": width, "height": height, "median_s": median_s, "peak_gib": peak_gib}


def work_dir(tmp_path: Path, parts: str) -> Path:
    """What gpu_check.sh leaves for the summary: part statuses, logs and the benchmarks' JSON."""
    tmp_path.mkdir()
    (tmp_path / "parts.tsv").write_text(parts)
    (tmp_path / "step_time.log").write_text("reference failed: out of memory\n")
    (tmp_path / "pytest.xml").write_text(JUNIT)
    (tmp_path / "conformance.log").write_text("device X\nok   unet  unet_out  max_error=0\n1 cases, 0 comparison(s)\n")
    results = [
        step("reference", 512, 512, 1.0, 9.0),
        step("reference", 1280, 768, 2.0, 14.0),
        step("ours", 1280, 768, 0.5, 6.0),
        step("ours_exact", 1280, 768, 1.5, 13.0),
    ]
    step_time = {"results": results, "ratio_ours_over_reference": {"512x512": 0.4, "1280x768": 0.25}}
    (tmp_path / "step_time-full-20260101-000000.json").write_text(json.dumps(step_time))
    e2e = {"size": "1280x768", "steps": 240, "seconds": 31.5, "peak_gib": 7.0}
    (tmp_path / "end_to_end.json").write_text(json.dumps(e2e))
    (tmp_path / "fast_psnr-cuda-512x512-50steps-x.json").write_text(json.dumps({"size": "512x512", "psnr_db": 33.0}))
    return tmp_path


def test_summary_judges_each_target_and_part(tmp_path):
    parts = "weights\t0\t20\ntests\t1\t30\nstep_time\t124\t200\nfast_psnr\tskipped\t0\n"
    work = work_dir(tmp_path / "work", parts)
    out = tmp_path / "out"
    assert gpu_summary.main([str(work), "--out-dir", str(out)]) == 1
    (written,) = out.glob("gpu_check-*.json")
    record = json.loads(written.read_text())
    status = {name: part["status"] for name, part in record["parts"].items()}
    assert status == {"weights": "ok", "tests": "failed", "step_time": "timed out", "fast_psnr": "skipped"}
    assert "out of memory" in record["parts"]["step_time"]["log_tail"]
    assert record["tests"]["failed"] == ["tests.test_cuda::test_b"]
    assert record["conformance"][-1].startswith("1 cases")
    verdicts = [(t["value"], t["passed"]) for t in record["targets"]]
    # 31.5 s image, ratio 0.25 at the largest size, fast peak max(6, 7), exact peak 13, PSNR 33
    assert verdicts == [(31.5, False), (0.25, True), (7.0, True), (13.0, False), (33.0, True)]


def test_summary_of_a_clean_dry_run_exits_0_and_names_the_file(tmp_path):
    work = tmp_path / "work"
    work.mkdir()
    (work / "parts.tsv").write_text("weights\t0\t20\n")
    assert gpu_summary.main([str(work), "--out-dir", str(tmp_path), "--dry-run"]) == 0
    (written,) = tmp_path.glob("gpu_check-cpu-dry-run-*.json")
    record = json.loads(written.read_text())
    assert record["dry_run"] and all(t["passed"] is None for t in record["targets"])


def test_script_refuses_unknown_arguments():
    assert subprocess.run(["bash", "-n", str(SCRIPT)]).returncode == 0
    result = subprocess.run(["bash", str(SCRIPT), "--gpu"], capture_output=True, text=True)
    assert result.returncode == 2 and "usage" in result.stderr
