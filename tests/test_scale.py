"""Scale-out: sampler replicas share one call's images (the exports: test_deploy.py)."""

from pathlib import Path

import pytest
from conftest import TINY

import client as disco_client
import serve
from disco_service.client.local_flow import local_flow

ROOT = Path(__file__).resolve().parent.parent
RUN = {**TINY, "steps": 5, "skip_steps": 0, "display_rate": 4}  # long enough for the two images to overlap


def test_two_sampler_replicas_make_the_images_of_one_call_at_once(flow_env, tmp_path, monkeypatch):
    """serve.py with ``DISCO_SAMPLER_REPLICAS=2``, as the client starts it for itself, from another
    folder than the repository's: one image per replica, at the same time."""
    monkeypatch.setenv("DISCO_SAMPLER_REPLICAS", "2")
    monkeypatch.chdir(tmp_path)  # serve.py finds flow.yml and its executors from any folder
    da = disco_client.generate_image(
        text_prompts=["a lighthouse"], seed=3, n_batches=2, output_dir=str(tmp_path / "out"), progress=False, **RUN
    )
    assert [d.tags["status"] for d in da] == ["done", "done"]
    a, b = da
    assert a.tags["replica"] != b.tags["replica"]  # one image per replica
    assert a.tags["started"] < b.tags["finished"] and b.tags["started"] < a.tags["finished"]  # at the same time


def test_several_gpus_pin_sampler_replicas_round_robin(monkeypatch):
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    monkeypatch.setattr(serve, "gpu_count", lambda: 4)
    sampler = {e["name"]: e for e in serve.flow_config(replicas=3)["executors"]}["sampler"]
    assert sampler["replicas"] == 3 and sampler["env"]["CUDA_VISIBLE_DEVICES"] == "RR"
    monkeypatch.setattr(serve, "gpu_count", lambda: 0)
    sampler = {e["name"]: e for e in serve.flow_config(replicas=3)["executors"]}["sampler"]
    assert "env" not in sampler  # no GPUs: nothing to pin, and "RR" must never reach CUDA


def test_replicas_come_from_the_environment_and_are_checked(monkeypatch):
    monkeypatch.delenv("DISCO_SAMPLER_REPLICAS", raising=False)
    assert serve.sampler_replicas() == 1
    monkeypatch.setenv("DISCO_SAMPLER_REPLICAS", "3")
    assert serve.sampler_replicas() == 3
    monkeypatch.setenv("DISCO_SAMPLER_REPLICAS", "two")
    with pytest.raises(SystemExit, match="DISCO_SAMPLER_REPLICAS"):
        serve.sampler_replicas()


def test_only_the_clients_own_flow_reads_checkpoints_anywhere(monkeypatch):
    def sampler(**options):
        return {e["name"]: e for e in serve.flow_config(**options)["executors"]}["sampler"]

    assert "checkpoints_anywhere" not in sampler().get("uses_with", {})  # served: the model directory only
    assert sampler(checkpoints_anywhere=True)["uses_with"]["checkpoints_anywhere"] is True
    started = []

    class Started(Exception):
        pass

    def popen(command, **kwargs):
        started.append(command)
        raise Started  # the command is all this test needs

    monkeypatch.setattr("disco_service.client.local_flow.subprocess.Popen", popen)
    with pytest.raises(Started), local_flow(use_gpu=False, diffusion_model="/home/me/mine.pt"):
        pass
    assert "--checkpoints-anywhere" in started[0] and "--preload=/home/me/mine.pt" in started[0]
