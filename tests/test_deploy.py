"""Deployment: the device a served executor asks for, the image, and the exported manifests."""

import asyncio
import importlib.util
import json
import os
import re
import stat
import subprocess
import sys
import time
import urllib.request
import warnings
from pathlib import Path

import kubernetes_validate
import pytest
import torch
import yaml
from jina.parsers import set_gateway_parser
from jina.parsers.ping import set_ping_parser
from jina.serve.networking import GrpcConnectionPool

from disco.loading import select_device
from disco_service import config

ROOT = Path(__file__).resolve().parent.parent
IMAGE = "registry.example/disco:1.2"
REPLICAS = 3
UID = 1000  # the Dockerfile's user


@pytest.fixture
def no_cuda(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)


def device_from_env(use_gpu: str | None = None) -> torch.device:
    """The executors' device as they pick it: their ``use_gpu`` argument, else ``DISCO_USE_GPU``."""
    return select_device(use_gpu if use_gpu is not None else config.load().use_gpu, "DISCO_USE_GPU")


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
        assert device_from_env(use_gpu="auto") == torch.device("cpu")  # an executor argument is not the variable
    monkeypatch.setenv("DISCO_USE_GPU", "0")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert device_from_env() == torch.device("cpu")
    monkeypatch.setenv("DISCO_USE_GPU", "yes")
    with pytest.raises(config.ConfigError, match="DISCO_USE_GPU: 'yes' is not one of .*; allowed: auto, 1 or 0"):
        device_from_env()


@pytest.mark.slow  # a served Flow (jina flow)
@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without a usable GPU")
def test_a_served_sampler_with_disco_use_gpu_1_and_no_gpu_does_not_start(tmp_path):
    env = {**os.environ, "DISCO_USE_GPU": "1", "DISCO_MODEL_DIR": str(tmp_path)}
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


# ----- Kubernetes -----


def export(kind: str, out: Path, *args: str) -> None:
    done = subprocess.run(
        [sys.executable, str(ROOT / "deploy" / "export.py"), kind, str(out), *args],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]


@pytest.fixture(scope="module")
def k8s_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("k8s")
    export("kubernetes", out, "--image", IMAGE, "--replicas", str(REPLICAS), "--namespace", "art")
    return out


@pytest.fixture(scope="module")
def k8s(k8s_dir) -> dict[str, list[dict]]:
    """The exported manifests, by file (relative path)."""
    return {
        str(p.relative_to(k8s_dir)): list(yaml.safe_load_all(p.read_text())) for p in sorted(k8s_dir.rglob("*.yml"))
    }


def workloads(k8s: dict[str, list[dict]]) -> dict[str, dict]:
    return {
        d["metadata"]["name"]: d
        for name, docs in k8s.items()
        for d in docs
        if d["kind"] in ("Deployment", "StatefulSet") and name != "database.yml"
    }


def test_every_exported_manifest_is_valid_for_kubernetes_1_30(k8s):
    documents = [d for name, docs in k8s.items() for d in docs if name != "monitoring.yml"]
    # a ConfigMap, Service and workload per part, the gateway's HTTP Service, two claims, the Flow's
    # Secret and the executors' NetworkPolicy, PostgreSQL's Secret, Service and StatefulSet
    assert len(documents) == 4 * 3 + 1 + 2 + 2 + 3
    for document in documents:  # strict: an unknown field fails too
        assert kubernetes_validate.validate(document, "1.30", strict=True) == "1.30"
    broken = json.loads(json.dumps(workloads(k8s)["sampler"]))
    broken["spec"]["template"]["spec"]["containers"][0]["resource"] = {}  # a typo the schema catches
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, "1.30", strict=True)


def test_kubernetes_pods_run_as_the_image_user_with_their_volumes_and_resources(k8s):
    found = workloads(k8s)
    assert set(found) == {"gateway", "encoder", "sampler", "renderer"}
    for name, workload in found.items():
        assert workload["metadata"]["namespace"] == "art"
        pod = workload["spec"]["template"]["spec"]
        security = pod["securityContext"]
        assert (security["runAsUser"], security["runAsGroup"], security["fsGroup"]) == (UID, UID, UID), name
        assert security["runAsNonRoot"] is True
        (container,) = pod["containers"]
        for c in [container, *pod.get("initContainers", [])]:
            assert c["image"] == IMAGE and c["imagePullPolicy"] == "IfNotPresent", name  # the gateway too
            assert c["resources"]["requests"]["cpu"] and c["resources"]["requests"]["memory"], (name, c["name"])
            assert c["resources"]["limits"]["memory"], (name, c["name"])
        gpus = container["resources"]["limits"].get("nvidia.com/gpu")
        assert gpus == (1 if name == "sampler" else None)  # one GPU per sampler replica
        mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
        claims = {v["name"]: v["persistentVolumeClaim"]["claimName"] for v in pod["volumes"]}
        assert claims[mounts["/results"]] == "disco-results", name  # the result store: every part shares it
        flow_secret = next(e for e in container["env"] if e["name"] == "DISCO_FLOW_SECRET")
        assert flow_secret["valueFrom"] == {"secretKeyRef": {"name": "disco-flow-secret", "key": "secret"}}, name
        env = {e["name"]: e.get("value", e.get("valueFrom")) for e in container["env"]}
        # every part's state (the queue, the job board) is in PostgreSQL: its URL from the Secret
        assert env["DISCO_DATABASE_URL"] == {"secretKeyRef": {"name": "disco-database", "key": "url"}}, name
        assert "DISCO_JOBS_DIR" not in env and "/jobs" not in mounts, name  # no shared folder for state
        if name == "gateway":  # the job API: the store, and the tokens from a Secret (optional: an open service)
            assert env["DISCO_RESULTS_DIR"] == "/results" and set(mounts) == {"/results"}
            assert workload["spec"]["replicas"] == 2  # two gateways share the queue
            secret = {"name": "disco-api-tokens", "key": "tokens", "optional": True}
            assert env["DISCO_API_TOKENS"] == {"secretKeyRef": secret}
            continue
        args = container["args"]
        # every interface of its pod, not flow.yml's loopback: the NetworkPolicy and the secret guard it
        assert "--host" not in args or args[args.index("--host") + 1] == "0.0.0.0", name
        config = args[args.index("--uses") + 1]
        assert config == f"executors/{name}.yml" and (ROOT / config).is_file()
        assert env["DISCO_MODEL_DIR"] == "/models" and env["DISCO_RESULTS_DIR"] == "/results"
        assert env["DISCO_USE_GPU"] == ("1" if name == "sampler" else "0")
        assert claims[mounts["/models"]] == "disco-models" and set(mounts) == {"/models", "/results"}
        assert "--monitoring" in args and args[args.index("--port-monitoring") + 1] == "9090"  # Jina's metrics
    sampler = found["sampler"]["spec"]["template"]["spec"]["containers"][0]["resources"]
    assert sampler["requests"]["memory"] == sampler["limits"]["memory"] == "16Gi"
    claims = k8s["volumes.yml"]
    assert {c["metadata"]["name"] for c in claims} == {"disco-models", "disco-results"}
    assert all(c["kind"] == "PersistentVolumeClaim" and c["spec"]["accessModes"] == ["ReadWriteMany"] for c in claims)


def test_kubernetes_executors_take_calls_from_the_gateway_only(k8s):
    (secret,) = k8s["flow-secret.yml"]
    assert secret["kind"] == "Secret" and secret["metadata"] == {"name": "disco-flow-secret", "namespace": "art"}
    assert len(secret["stringData"]["secret"]) >= 40  # 256 random bits
    (policy,) = k8s["network-policy.yml"]
    assert policy["kind"] == "NetworkPolicy" and policy["metadata"]["namespace"] == "art"
    spec = policy["spec"]
    assert spec["policyTypes"] == ["Ingress"]
    labels = {name: w["spec"]["template"]["metadata"]["labels"] for name, w in workloads(k8s).items()}

    def selected(selector: dict, pod_labels: dict) -> bool:
        matches = all(pod_labels.get(k) == v for k, v in selector.get("matchLabels", {}).items())
        return matches and all(pod_labels.get(e["key"]) in e["values"] for e in selector.get("matchExpressions", []))

    assert {n for n, pod in labels.items() if selected(spec["podSelector"], pod)} == {"encoder", "sampler", "renderer"}
    (rule,) = spec["ingress"]
    assert {n for n, pod in labels.items() if any(selected(f["podSelector"], pod) for f in rule["from"])} == {"gateway"}
    ports = {p["port"] for name in ("encoder", "sampler", "renderer") for d in k8s[f"{name}/{name}.yml"]
             if d["kind"] == "Service" for p in d["spec"]["ports"]}  # fmt: skip
    assert {p["port"] for p in rule["ports"]} == ports


def test_kubernetes_postgresql_keeps_its_password_in_a_secret_and_its_data_on_a_claim(k8s, k8s_dir):
    secret, service, database = k8s["database.yml"]
    assert (secret["kind"], service["kind"], database["kind"]) == ("Secret", "Service", "StatefulSet")
    assert stat.S_IMODE((k8s_dir / "database.yml").stat().st_mode) == 0o600  # it holds the password
    password, url = secret["stringData"]["password"], secret["stringData"]["url"]
    assert len(password) >= 32 and url == f"postgresql://disco:{password}@postgres.art.svc:5432/disco"
    assert service["metadata"]["name"] == "postgres" and service["spec"]["ports"][0]["port"] == 5432
    assert service["spec"]["selector"].items() <= database["spec"]["template"]["metadata"]["labels"].items()
    (container,) = database["spec"]["template"]["spec"]["containers"]
    env = {e["name"]: e.get("value", e.get("valueFrom")) for e in container["env"]}
    assert env["POSTGRES_PASSWORD"] == {"secretKeyRef": {"name": "disco-database", "key": "password"}}
    assert re.fullmatch(r"postgres:\d+\.\d+", container["image"])  # a fixed version
    (claim,) = database["spec"]["volumeClaimTemplates"]
    assert claim["spec"]["accessModes"] == ["ReadWriteOnce"] and container["volumeMounts"][0]["name"] == "data"
    assert container["readinessProbe"]["exec"]["command"][0] == "pg_isready"


def test_kubernetes_with_an_external_database_writes_none(tmp_path):
    export("kubernetes", tmp_path, "--image", IMAGE, "--external-database", "--gateways", "3")
    assert not (tmp_path / "database.yml").exists()
    docs = yaml.safe_load_all((tmp_path / "gateway" / "gateway.yml").read_text())
    gateway = next(d for d in docs if d["kind"] == "Deployment")
    env = {e["name"]: e.get("valueFrom") for e in gateway["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["DISCO_DATABASE_URL"] == {"secretKeyRef": {"name": "disco-database", "key": "url"}}
    assert gateway["spec"]["replicas"] == 3


def test_kubernetes_monitors_scrape_the_executors_and_the_gateways(k8s):
    monitors = {m["metadata"]["name"]: m for m in k8s["monitoring.yml"]}
    assert set(monitors) == {"encoder", "sampler", "renderer", "gateway-http"}
    assert all(m["kind"] == "ServiceMonitor" for m in monitors.values())
    assert monitors["gateway-http"]["spec"]["endpoints"][0]["path"] == "/metrics"
    services = {d["metadata"]["name"]: d for docs in k8s.values() for d in docs if d["kind"] == "Service"}
    http = services["gateway-1-http"]
    assert monitors["gateway-http"]["spec"]["selector"]["matchLabels"].items() <= http["metadata"]["labels"].items()
    assert monitors["gateway-http"]["spec"]["endpoints"][0]["port"] == http["spec"]["ports"][0]["name"]
    for name in ("encoder", "sampler", "renderer"):
        ports = {p["name"]: p["port"] for p in services[name]["spec"]["ports"]}
        assert ports["monitoring"] == 9090, name


def test_kubernetes_weights_are_downloaded_before_the_executors_start(k8s):
    for name, workload in workloads(k8s).items():
        pod = workload["spec"]["template"]["spec"]
        init = pod.get("initContainers", [])
        if name not in ("encoder", "sampler"):  # the gateway and the renderer load no weights
            assert init == [], name
            continue
        (weights,) = init
        assert weights["command"] == ["python", "/app/client.py", "--download"]
        assert (ROOT / "client.py").is_file() and "--download" in (
            ROOT / "disco_service" / "client" / "cli.py"
        ).read_text()
        assert {"name": "DISCO_MODEL_DIR", "value": "/models"} in weights["env"]
        (mount,) = weights["volumeMounts"]
        claims = {v["name"]: v["persistentVolumeClaim"]["claimName"] for v in pod["volumes"]}
        assert mount["mountPath"] == "/models" and claims[mount["name"]] == "disco-models"
        # only loading from the volume is left for the startup probe: it allows 10 minutes
        probe = pod["containers"][0]["startupProbe"]
        assert probe["initialDelaySeconds"] + probe["failureThreshold"] * probe["periodSeconds"] >= 600


def test_kubernetes_probe_commands_are_what_jina_ping_parses(k8s):
    probes = 0
    for name, workload in workloads(k8s).items():
        container = workload["spec"]["template"]["spec"]["containers"][0]
        for kind in ("startupProbe", "livenessProbe"):
            command = container[kind]["exec"]["command"]
            assert command[:2] == ["jina", "ping"] and all(" " not in item for item in command), (name, command)
            parsed = set_ping_parser().parse_args(command[2:])  # exits on an unknown argument
            assert parsed.target == ("gateway" if name == "gateway" else "executor")
            assert parsed.host == "grpc://127.0.0.1:8080"
            if kind == "livenessProbe":
                assert parsed.timeout / 1000 < container[kind]["timeoutSeconds"]  # jina answers before k8s gives up
            probes += 1
    assert probes == 8


def test_the_gateway_balances_over_every_sampler_replica_without_a_mesh(k8s):
    sampler_docs = k8s["sampler/sampler.yml"]
    service = next(d for d in sampler_docs if d["kind"] == "Service")
    sampler = workloads(k8s)["sampler"]
    # a StatefulSet behind a headless Service: pod i is sampler-i.sampler.art.svc
    assert sampler["kind"] == "StatefulSet" and sampler["spec"]["replicas"] == REPLICAS
    assert sampler["spec"]["serviceName"] == service["metadata"]["name"] == "sampler"
    assert service["spec"]["clusterIP"] == "None"
    labels = sampler["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= labels.items()
    assert sampler["spec"]["selector"]["matchLabels"].items() <= labels.items()
    port = service["spec"]["ports"][0]["port"]
    assert sampler["spec"]["template"]["spec"]["containers"][0]["ports"] == [{"containerPort": port}]
    assert all("annotations" not in w["spec"]["template"]["metadata"] for w in workloads(k8s).values())  # no mesh

    gateway = workloads(k8s)["gateway"]["spec"]["template"]["spec"]["containers"][0]
    assert gateway["args"][0] == "gateway"
    args = set_gateway_parser().parse_args(gateway["args"][1:])
    addresses = json.loads(args.deployments_addresses)
    assert addresses["sampler"] == [f"grpc://sampler-{i}.sampler.art.svc:{port}" for i in range(REPLICAS)]
    assert addresses["encoder"] == [f"grpc://encoder.art.svc:{port}"]

    async def next_addresses(count: int) -> list[str]:
        # what Jina's gateway does with them (request_handling.py / streamer.py): one connection
        # per address, the next request on the next one
        pool = GrpcConnectionPool(runtime_name="gateway")
        for address in addresses["sampler"]:
            pool.add_connection(deployment="sampler", address=address, head=True)
        replicas = pool._connections.get_replicas("sampler", head=True)
        picked = [(await replicas.get_next_connection()).address for _ in range(count)]
        await pool.close()
        return picked

    picked = asyncio.run(next_addresses(2 * REPLICAS))
    assert picked == [f"sampler-{i}.sampler.art.svc:{port}" for i in range(REPLICAS)] * 2


def load_export_module():
    spec = importlib.util.spec_from_file_location("export", ROOT / "deploy" / "export.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_image_must_have_a_version_tag_or_a_digest():
    export_module = load_export_module()
    for good in ("disco:1.0", "registry.example:5000/team/disco:2026.11", "registry.example/disco@sha256:" + "a" * 64):
        assert export_module.image_reference(good) == good
    for bad in ("disco", "disco:latest", "registry.example:5000/disco", "registry.example:5000/disco:latest"):
        with pytest.raises(Exception, match="version tag or a digest"):
            export_module.image_reference(bad)


# ----- docker-compose and the image -----


def test_docker_compose_export(tmp_path):
    out = tmp_path / "docker-compose.yml"
    export("docker-compose", out, "--image", "disco:test", "--replicas", "2", "--gpus", "2")
    compose = yaml.safe_load(out.read_text())
    services = compose["services"]
    parts = {"gateway", "gateway-2", "encoder", "sampler-rep-0", "sampler-rep-1", "renderer", "weights"}
    assert set(services) == parts | {"postgres"}
    assert all(s["image"] == "disco:test" for n, s in services.items() if n != "postgres")
    assert all("user" not in s for s in services.values())  # the image's user, uid 1000, owns the volumes
    assert services["gateway"]["ports"] == ["51000:51000", "51001:51001"]
    assert services["gateway-2"]["ports"] == ["51002:51000", "51003:51001"]  # the second gateway, same queue
    # PostgreSQL: its password and the URL in an env file beside the compose file, readable by its owner only
    env_file = tmp_path / "disco-database.env"
    values = dict(line.split("=", 1) for line in env_file.read_text().splitlines())
    assert stat.S_IMODE(env_file.stat().st_mode) == 0o600 and len(values["POSTGRES_PASSWORD"]) >= 32
    assert values["DISCO_DATABASE_URL"] == f"postgresql://disco:{values['POSTGRES_PASSWORD']}@postgres:5432/disco"
    postgres = services["postgres"]
    assert postgres["env_file"] == ["disco-database.env"] and postgres["healthcheck"]["test"][0] == "pg_isready"
    assert postgres["volumes"] == ["disco-database:/var/lib/postgresql/data"]
    assert services["gateway"]["volumes"] == ["disco-results:/results"]  # the job API's result store
    assert "DISCO_API_TOKENS=${DISCO_API_TOKENS:-}" in services["gateway"]["environment"]  # the host's tokens
    required = "DISCO_FLOW_SECRET=${DISCO_FLOW_SECRET:?set DISCO_FLOW_SECRET to a random secret}"
    flow = [n for n in services if n not in ("weights", "postgres")]
    assert all(required in services[n]["environment"] for n in flow)  # one for the Flow
    for name, service in services.items():
        if name not in ("gateway", "weights", "postgres") and "--host" in service["command"]:
            assert service["command"][service["command"].index("--host") + 1] == "0.0.0.0", name
    gateway = services["gateway"]["command"]
    addresses = json.loads(gateway[gateway.index("--deployments-addresses") + 1])
    assert addresses["sampler"] == ["sampler-rep-0:8081", "sampler-rep-1:8081"]  # every replica
    weights = services["weights"]
    assert weights["command"] == ["python", "/app/client.py", "--download"]
    assert weights["volumes"] == ["disco-models:/models"] and weights["restart"] == "no"
    devices = []
    for name, service in services.items():
        if name in ("postgres", "weights"):
            continue
        assert service["env_file"] == ["disco-database.env"], name  # DISCO_DATABASE_URL
        assert service["depends_on"]["postgres"] == {"condition": "service_healthy"}, name
        if name.startswith("gateway"):
            continue
        executor = name.split("-rep-")[0]
        command = service["command"]
        assert command[command.index("--uses") + 1] == f"executors/{executor}.yml"
        assert service["volumes"] == ["disco-models:/models", "disco-results:/results"]  # no folder for state
        assert command[command.index("--port-monitoring") + 1] == "9090" and "--monitoring" in command
        assert service["expose"] == ["9090"] and "ports" not in service  # replicas would share a host port
        assert f"DISCO_USE_GPU={int(executor == 'sampler')}" in service["environment"]
        if executor in ("encoder", "sampler"):
            assert service["depends_on"]["weights"] == {"condition": "service_completed_successfully"}
        if executor == "sampler":
            (device,) = service["deploy"]["resources"]["reservations"]["devices"]
            devices += device["device_ids"]
    assert devices == ["0", "1"]  # one GPU per replica
    assert set(compose["volumes"]) == {"disco-models", "disco-results", "disco-database"}
    assert "&id" not in out.read_text()  # no YAML aliases: each service reads on its own
    assert "version" not in compose  # the Compose Specification (depends_on conditions)


def test_docker_compose_with_an_external_database(tmp_path):
    out = tmp_path / "docker-compose.yml"
    export("docker-compose", out, "--image", "disco:test", "--external-database", "--gateways", "1")
    services = yaml.safe_load(out.read_text())["services"]
    assert "postgres" not in services and "gateway-2" not in services
    assert not (tmp_path / "disco-database.env").exists()
    url = "DISCO_DATABASE_URL=${DISCO_DATABASE_URL:?the external PostgreSQL's URL}"
    assert all(url in s["environment"] for n, s in services.items() if n != "weights")


def dockerfile_instructions() -> list[tuple[str, str]]:
    text = re.sub(r"\\\n", " ", (ROOT / "Dockerfile").read_text())
    lines = [line.strip() for line in text.splitlines() if line.strip() and not line.strip().startswith("#")]
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1]) for line in lines]


def test_the_image_user_owns_the_volume_directories():
    instructions = dockerfile_instructions()
    runs = " ".join(arg for op, arg in instructions if op == "RUN")
    assert re.search(rf"useradd .*--uid {UID} .*disco", runs)
    assert re.search(r"mkdir -p /models /results\b", runs)
    assert re.search(r"chown disco:disco /models /results\b", runs)
    assert ("USER", "disco") in instructions
    assert ("VOLUME", "/models /results") in instructions
    env = " ".join(arg for op, arg in instructions if op == "ENV")
    assert "DISCO_MODEL_DIR=/models" in env and "DISCO_USE_GPU=1" in env and "DISCO_JOBS_DIR" not in env
    assert "DISCO_RESULTS_DIR=/results" in env


def test_the_image_runs_serve_py_under_an_init_process():
    # serve.py stops its Flow's processes itself; tini, as PID 1, passes it docker's SIGTERM and
    # reaps whatever an executor leaves behind (a plain PID 1 would keep zombies)
    instructions = dockerfile_instructions()
    runs = " ".join(arg for op, arg in instructions if op == "RUN")
    assert re.search(r"apt-get install -y --no-install-recommends [^&]*\btini\b", runs)
    assert ("ENTRYPOINT", '["/usr/bin/tini", "--"]') in instructions
    assert ("CMD", '["python", "serve.py"]') in instructions


def test_the_image_installs_only_the_runtime_requirements_on_a_matching_cuda_base():
    instructions = dockerfile_instructions()
    runs = " ".join(arg for op, arg in instructions if op == "RUN")
    assert "pip install -r requirements.txt" in runs and "requirements-dev" not in runs
    assert ("COPY", "requirements.txt .") in instructions
    (base,) = [arg for op, arg in instructions if op == "ARG" and arg.startswith("CUDA_IMAGE=")]
    cuda = re.fullmatch(r"CUDA_IMAGE=nvidia/cuda:(\d+\.\d+)\.\d+-base-ubuntu22\.04", base)
    assert cuda and ("FROM", "${CUDA_IMAGE}") in instructions
    assert torch.version.cuda is None or cuda.group(1) == torch.version.cuda  # the wheels' CUDA (none: a CPU build)
    assert any(op == "ARG" and arg.startswith("TORCH_INDEX_URL") for op, arg in instructions)


def requirement_names(text: str) -> set[str]:
    return {re.split(r"[=<>\[ ]", line)[0].lower() for line in text.splitlines() if line[:1].isalnum()}


def test_requirements_are_split_into_the_product_and_the_tools():
    runtime = (ROOT / "requirements.txt").read_text()
    dev = (ROOT / "requirements-dev.txt").read_text()
    assert not requirement_names(runtime) & {"pytest", "hypothesis", "ruff", "ipython", "kubernetes-validate"}
    assert {"pytest", "hypothesis", "ruff", "ipython", "kubernetes-validate"} <= requirement_names(dev)
    assert "-r requirements.txt" in dev.splitlines()
    # every file the requirements' comments point to is in the repository
    comments = [line.split("#", 1)[1] for line in (runtime + dev).splitlines() if "#" in line]
    named = re.findall(r"[\w./-]+\.(?:md|py|txt|yml)\b", "\n".join(comments))
    assert named and all((ROOT / name).exists() for name in named), named
    ci = (ROOT / ".ci" / "run").read_text()
    assert ".venv/bin/pip install --quiet -r requirements-dev.txt" in ci
    readme = (ROOT / "README.md").read_text()
    test_command = ".venv/bin/python -m pytest -q"
    assert f"\n{test_command}\n" in ci and f"\n{test_command}\n" in readme
    assert "pip install -r requirements-dev.txt" in readme


@pytest.mark.slow  # a served gateway (jina gateway)
def test_the_exported_gateway_serves_grpc_and_http_with_the_page(k8s, tmp_path):
    gateway = workloads(k8s)["gateway"]["spec"]["template"]["spec"]["containers"][0]
    args = set_gateway_parser().parse_args(gateway["args"][1:])
    assert gateway["args"][gateway["args"].index("--uses") + 1] == "gateway/gateway.yml"
    assert [str(p) for p in args.protocol] == ["GRPC", "HTTP"] and args.port == [8080, 8081]
    assert [p["containerPort"] for p in gateway["ports"]] == [8080, 8081]
    services = [d for docs in k8s.values() for d in docs if d["kind"] == "Service"]
    assert {(s["metadata"]["name"], s["spec"]["ports"][0]["port"]) for s in services} >= {
        ("gateway", 8080),
        ("gateway-1-http", 8081),
    }
    compose = tmp_path / "docker-compose.yml"
    export("docker-compose", compose, "--image", "disco:test")
    command = yaml.safe_load(compose.read_text())["services"]["gateway"]["command"]
    assert yaml.safe_load(compose.read_text())["services"]["gateway"]["ports"] == ["51000:51000", "51001:51001"]
    # what the container runs (its working directory is the repository's copy, /app), on free ports here
    from disco_service.client.local_flow import free_port

    grpc_port, http_port, monitoring = free_port(), free_port(), free_port()
    i = command.index("--port")
    command[i + 1 : i + 3] = [str(grpc_port), str(http_port)]
    command[command.index("--port-monitoring") + 1] = str(monitoring)
    jina = Path(sys.executable).with_name("jina")
    log = tmp_path / "gateway.log"
    with open(log, "w") as out:
        process = subprocess.Popen([str(jina), *command], cwd=ROOT, stdout=out, stderr=subprocess.STDOUT)
    try:
        page = None
        for _ in range(60):
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{http_port}/ui/", timeout=2) as response:
                    page = response.read().decode()
                break
            except OSError:
                assert process.poll() is None, log.read_text()[-3000:]
                time.sleep(0.5)
        assert page and "<title>Disco Diffusion</title>" in page, log.read_text()[-3000:]
        ping = subprocess.run([str(jina), "ping", "gateway", f"grpc://127.0.0.1:{grpc_port}"], timeout=60)
        assert ping.returncode == 0
    finally:
        process.terminate()
        process.wait(30)
