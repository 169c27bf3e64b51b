"""Scale-out: sampler replicas share one call's images; Kubernetes and docker-compose exports."""

import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from served import served

import client as disco_client
import serve

ROOT = Path(__file__).resolve().parent.parent
TINY = dict(
    width_height=[64, 64],
    steps=8,
    skip_steps=0,
    display_rate=4,
    cut_overview="[1]*1000",
    cut_innercut="[1]*1000",
    cutn_batches=1,
    use_gpu=False,
)


def test_two_sampler_replicas_make_the_images_of_one_call_at_once(flow_env, tmp_path, monkeypatch):
    monkeypatch.setenv("DISCO_SAMPLER_REPLICAS", "2")
    da = disco_client.generate_image(
        text_prompts=["a lighthouse"], seed=3, n_batches=2, output_dir=str(tmp_path), progress=False, **TINY
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


def export(kind: str, out: Path, *args: str) -> None:
    done = subprocess.run(
        [sys.executable, str(ROOT / "deploy" / "export.py"), kind, str(out), *args],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]


def test_kubernetes_export(tmp_path):
    out = tmp_path / "k8s"
    export("kubernetes", out, "--image", "registry.example/disco:1.2", "--replicas", "3", "--namespace", "art")
    deployments = {}
    for path in out.glob("*/*.yml"):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc and doc["kind"] == "Deployment":
                deployments[doc["metadata"]["name"]] = doc
    assert set(deployments) == {"gateway", "encoder", "sampler", "renderer"}
    for name, deployment in deployments.items():
        assert deployment["metadata"]["namespace"] == "art"
        pod = deployment["spec"]["template"]["spec"]
        (container,) = pod["containers"]
        assert container["image"] == "registry.example/disco:1.2", name  # the gateway too
        if name == "gateway":
            continue
        args = container["args"]
        config = args[args.index("--uses") + 1]
        assert config == f"executors/{name}.yml" and (ROOT / config).is_file()
        env = {e["name"]: e.get("value") for e in container["env"]}
        assert env["DISCO_MODEL_DIR"] == "/models" and env["DISCO_JOBS_DIR"] == "/jobs"
        mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
        claims = {v["name"]: v["persistentVolumeClaim"]["claimName"] for v in pod["volumes"]}
        assert claims[mounts["/models"]] == "disco-models" and claims[mounts["/jobs"]] == "disco-jobs"
        gpus = container.get("resources", {}).get("limits", {}).get("nvidia.com/gpu")
        assert gpus == (1 if name == "sampler" else None)
    assert deployments["sampler"]["spec"]["replicas"] == 3
    claims = list(yaml.safe_load_all((out / "volumes.yml").read_text()))
    assert {c["metadata"]["name"] for c in claims} == {"disco-models", "disco-jobs"}
    assert all(c["kind"] == "PersistentVolumeClaim" and c["spec"]["accessModes"] == ["ReadWriteMany"] for c in claims)


def test_docker_compose_export(tmp_path):
    out = tmp_path / "docker-compose.yml"
    export("docker-compose", out, "--image", "disco:test", "--replicas", "2", "--gpus", "2")
    compose = yaml.safe_load(out.read_text())
    services = compose["services"]
    assert set(services) == {"gateway", "encoder", "sampler-rep-0", "sampler-rep-1", "renderer"}
    assert all(s["image"] == "disco:test" for s in services.values())
    assert "51000:51000" in services["gateway"]["ports"]
    devices = []
    for name, service in services.items():
        if name == "gateway":
            continue
        command = service["command"]
        assert command[command.index("--uses") + 1] == f"executors/{name.split('-rep-')[0]}.yml"
        assert service["volumes"] == ["disco-models:/models", "disco-jobs:/jobs"]  # nothing mounted over /app
        if name.startswith("sampler"):
            (device,) = service["deploy"]["resources"]["reservations"]["devices"]
            devices += device["device_ids"]
    assert devices == ["0", "1"]  # one GPU per replica
    assert set(compose["volumes"]) == {"disco-models", "disco-jobs"}


def test_serve_py_serves_the_flow_with_the_replicas_asked_for(flow_env, tmp_path):
    port = disco_client.free_port()
    command = [sys.executable, str(ROOT / "serve.py"), "--port", str(port)]
    env = {**flow_env, "DISCO_SAMPLER_REPLICAS": "2"}
    with served(command, port, env, tmp_path / "serve.log", cwd=tmp_path) as address:  # from any directory
        da = disco_client.generate_image(
            text_prompts=["x"], seed=1, n_batches=2, output_dir=str(tmp_path / "out"), host=address,
            progress=False, **{**TINY, "steps": 3, "display_rate": 3},
        )  # fmt: skip
        assert [d.tags["status"] for d in da] == ["done", "done"]
        replicas = [d.tags["replica"] for d in da]
        assert replicas[0] != replicas[1], (tmp_path / "serve.log").read_text(errors="replace")[-4000:]
