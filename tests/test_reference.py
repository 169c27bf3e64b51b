"""The conformance script against the copied fixtures, and proof that it can fail."""

import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.slow  # the real 512x512 UNet's cases: a minute of CPU each run of the script

SCRIPT = Path(__file__).resolve().parent / "reference_check.py"


def run_check(directory: Path, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(SCRIPT), str(directory), *extra], capture_output=True, text=True, timeout=900
    )


def test_every_reference_case_is_within_tolerance(reference_dir):
    result = run_check(reference_dir)
    assert result.returncode == 0, result.stdout + result.stderr
    lines = [line for line in result.stdout.splitlines() if line.startswith(("ok", "FAIL"))]
    cases = {line.split()[1] for line in lines}
    assert cases == {"unet", "full512", "sec", "ddim_eta0.0", "ddim_eta0.8", "plms_eta0.0"}
    assert all(line.startswith("ok") for line in lines)
    assert "max_error=" in lines[0] and "tolerance=" in lines[0]


def perturbed_copy(reference_dir: Path, tmp_path: Path, changes: dict) -> Path:
    copy = tmp_path / "fixtures"
    shutil.copytree(reference_dir, copy)
    arrays = dict(np.load(copy / "expected.npz"))
    for name, change in changes.items():
        arrays[name] = change(arrays[name])
    np.savez(copy / "expected.npz", **arrays)
    return copy


def bump_one(a: np.ndarray) -> np.ndarray:
    a = a.copy()
    a.flat[a.size // 2] += 0.05 * a.std()  # far beyond tolerance, one element only
    return a


def test_perturbed_expected_arrays_and_schedule_facts_fail(reference_dir, tmp_path):
    import json

    copy = perturbed_copy(
        reference_dir,
        tmp_path,
        {
            "unet_out": bump_one,
            "ddim_eta0.8_samples": bump_one,
            "sec_pred": bump_one,
            "plms_eta0.0_pred_xstart": bump_one,
        },
    )
    meta = json.loads((copy / "meta.json").read_text())
    meta["cases"]["ddim_eta0.0"]["timestep_map"][3] += 1  # a schedule fact, not an array
    (copy / "meta.json").write_text(json.dumps(meta))
    result = run_check(copy, "--only", "unet,ddim_eta0.8,sec,plms_eta0.0,ddim_eta0.0")
    assert result.returncode == 1, result.stdout
    failed = {tuple(line.split()[1:3]) for line in result.stdout.splitlines() if line.startswith("FAIL")}
    assert failed == {
        ("unet", "unet_out"),
        ("ddim_eta0.8", "ddim_eta0.8_samples"),
        ("sec", "sec_pred"),
        ("plms_eta0.0", "plms_eta0.0_pred_xstart"),
        ("ddim_eta0.0", "timestep_map"),
    }, result.stdout


def test_unknown_arrays_are_not_silently_skipped(reference_dir, tmp_path):
    copy = perturbed_copy(reference_dir, tmp_path, {})
    arrays = dict(np.load(copy / "expected.npz"), mystery_out=np.zeros(3, np.float32))
    np.savez(copy / "expected.npz", **arrays)
    result = run_check(copy, "--only", "unet")
    assert result.returncode != 0
    assert "mystery_out" in result.stdout + result.stderr
