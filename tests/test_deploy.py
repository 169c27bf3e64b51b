"""Deployment: the device a served executor asks for, the image, and the exported manifests."""

import os
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch
from disco.loading import device_from_env

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def no_cuda(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)


def test_disco_use_gpu_1_without_a_gpu_refuses_to_run(monkeypatch, no_cuda):
    monkeypatch.setenv("DISCO_USE_GPU", "1")
    with pytest.raises(RuntimeError, match=r"DISCO_USE_GPU=1 but no CUDA GPU is usable.*DISCO_USE_GPU=0"):
        device_from_env()


def test_without_disco_use_gpu_1_a_missing_gpu_warns_and_uses_the_cpu(monkeypatch, no_cuda):
    for value in ("auto", None):  # the in-process client's use_gpu=True, and nothing set
        monkeypatch.setenv("DISCO_USE_GPU", value) if value else monkeypatch.delenv("DISCO_USE_GPU", raising=False)
        with pytest.warns(UserWarning, match="running on the CPU"):
            assert device_from_env() == torch.device("cpu")
    monkeypatch.setenv("DISCO_USE_GPU", "1")
    with pytest.warns(UserWarning, match="running on the CPU"):
        assert device_from_env(use_gpu=True) == torch.device("cpu")  # an executor argument is not the variable
    monkeypatch.setenv("DISCO_USE_GPU", "0")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert device_from_env() == torch.device("cpu")
    monkeypatch.setenv("DISCO_USE_GPU", "yes")
    with pytest.raises(ValueError, match="DISCO_USE_GPU must be 1, 0 or auto, got 'yes'"):
        device_from_env()


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without a usable GPU")
def test_a_served_sampler_with_disco_use_gpu_1_and_no_gpu_does_not_start(tmp_path):
    env = {**os.environ, "DISCO_USE_GPU": "1", "DISCO_MODEL_DIR": str(tmp_path), "PYTHONPATH": str(ROOT / "executors")}
    jina = Path(sys.executable).with_name("jina")
    done = subprocess.run(
        [str(jina), "executor", "--uses", str(ROOT / "executors" / "sampler.yml"), "--port", "0"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    output = done.stdout + done.stderr
    assert done.returncode != 0, output[-3000:]
    assert "DISCO_USE_GPU=1 but no CUDA GPU is usable" in " ".join(output.split()), output[-3000:]
