"""Kubernetes or docker-compose manifests for flow.yml, running the project's container image.

    python deploy/export.py kubernetes OUT_DIR  --image IMAGE:TAG [--replicas N] [--gateways G] [--namespace NS]
    python deploy/export.py docker-compose OUT.yml --image IMAGE:TAG [--replicas N] [--gateways G] [--gpus G]
    (either with --external-database: the state store is a PostgreSQL server of yours)

``jina export`` only exports executors that are container images, so each executor here is
``docker://IMAGE`` (the Dockerfile's image, which also runs the gateway: gRPC and HTTP, the web
page included, from ``gateway/gateway.yml``); ``flow.yml`` itself stays runnable locally.
Jina's output is then completed with what it cannot express:

- each container runs its own executor config (``executors/<name>.yml`` in the image);
- the sampler asks for one GPU per replica (``nvidia.com/gpu`` / a compose GPU reservation),
  and the gateway is given the address of every sampler replica, so that it spreads the images
  over them itself (see ``balance_sampler_replicas``): no service mesh is needed;
- ``--gateways`` gateways (2 by default) share one queue in PostgreSQL (deploy/database.py: a
  StatefulSet with its own volume and its password in a Secret, or an external server whose URL is
  in a Secret): every pod reads ``DISCO_DATABASE_URL`` from the Secret ``disco-database``, so the
  jobs, claims and the executors' job board need no shared folder;
- the model directory (``/models``) and the result store (``/results``: every image made, which
  the gateways serve) are volumes, writable by the image's user;
- each executor serves Jina's metrics (flow.yml's ``monitoring``) on port 9090; the Prometheus
  Operator's ServiceMonitors for them and for the gateways' ``/metrics`` are in ``monitoring.yml``
  (apply it where the operator is installed);
- the gateway reads its tokens (``DISCO_API_TOKENS``) from the Secret ``disco-api-tokens``
  (key ``tokens``; without it the service is open) on Kubernetes, and from the host's
  ``DISCO_API_TOKENS`` with docker-compose;
- the executors listen on every interface of their pod (or container), and answer only their own
  gateway: every call must carry the Flow's secret (``DISCO_FLOW_SECRET``, see
  disco_service/server/flow_secret.py), which every pod reads from the Secret ``disco-flow-secret``
  (``flow-secret.yml``, made here at random for each export; keep it out of version control) and
  every docker-compose service from the host's ``DISCO_FLOW_SECRET`` (required); on Kubernetes a
  NetworkPolicy (``network-policy.yml``) also lets only the gateway's pods reach the executors';
- the weights are downloaded before the executors start (an init container / a compose
  service), so a first start on an empty volume is not killed by the startup probe;
- CPU and memory requests and memory limits, and probe commands that ``jina ping`` parses.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import yaml
from database import (
    COMPOSE_ENV_FILE,
    compose_service,
    database_env,
    kubernetes_manifests,
    new_password,
    write_compose_env,
)

from disco_service import config

ROOT = Path(__file__).resolve().parent.parent
MODELS, RESULTS = "/models", "/results"
PORT_MONITORING = "9090"  # each executor's Jina metrics, inside its container (Jina's Kubernetes default)
VOLUMES = {"disco-models": (MODELS, "20Gi"), "disco-results": (RESULTS, "50Gi")}
ENV = {"DISCO_MODEL_DIR": MODELS, "DISCO_RESULTS_DIR": RESULTS}
# The gateway serves the job API and the result store; it needs no weights.
GATEWAY_VOLUMES = ("disco-results",)
GATEWAYS = 2  # gateway replicas by default: one may go down (or be updated) while the other serves
COMPOSE_PORTS = (51000, 51001)  # the first compose gateway's gRPC and HTTP ports on the host; the next +2 each
TOKENS_SECRET = {"name": "disco-api-tokens", "key": "tokens"}  # the gateway's DISCO_API_TOKENS, if created
FLOW_SECRET = {"name": "disco-flow-secret", "key": "secret"}  # every pod's DISCO_FLOW_SECRET
EXECUTORS = ("encoder", "sampler", "renderer")
UID = 1000  # the image's user `disco` (Dockerfile)
# The pods run as that user; fsGroup makes the mounted volumes writable by it (checked only at the
# volume's root when it already matches, not over the 2.7 GB of weights at every start).
POD_SECURITY = {
    "runAsUser": UID,
    "runAsGroup": UID,
    "runAsNonRoot": True,
    "fsGroup": UID,
    "fsGroupChangePolicy": "OnRootMismatch",
}
# CPU request, memory request, memory limit of each container (the sampler also gets one GPU)
RESOURCES = {
    "gateway": ("250m", "512Mi", "1Gi"),
    "encoder": ("500m", "3Gi", "4Gi"),  # CLIP RN50 on the CPU
    "sampler": ("2", "16Gi", "16Gi"),  # the models are loaded in host memory before moving to the GPU
    "renderer": ("250m", "1Gi", "2Gi"),
    "weights": ("250m", "256Mi", "1Gi"),  # the download before start
}
# The executors that load weights at start, and what downloads them: the files of the default
# settings (the sampler's preloaded UNet, the secondary model, CLIP RN50), about 2.7 GB.
NEEDS_WEIGHTS = ("encoder", "sampler")
DOWNLOAD = ["python", "/app/client.py", "--download"]
DOWNLOAD_ENV = {"DISCO_MODEL_DIR": MODELS}  # the download needs the model directory only


def export_flow(image: str, replicas: int) -> dict[str, Any]:
    """flow.yml with every executor as the project's image, and the sampler's replicas."""
    flow = yaml.safe_load((ROOT / "flow.yml").read_text())
    flow["gateway"]["uses"] = f"docker://{image}"  # the page's gateway is code in the image too
    for executor in flow["executors"]:
        executor["uses"] = f"docker://{image}"
        executor.pop("jcloud", None)
        # flow.yml's loopback is for one machine: in its own pod an executor listens on the pod's
        # address, and the NetworkPolicy and the Flow's secret keep everyone but the gateway out
        executor.pop("host", None)
        executor["monitoring"] = True  # Jina's metrics (on every interface: inside the pod, here)
        if executor["name"] == "sampler":
            executor["replicas"] = replicas
    return flow


def run_jina_export(kind: str, flow: dict[str, Any], out: Path, image: str, extra: list[str]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        flow_file = Path(tmp) / "flow.yml"
        flow_file.write_text(yaml.safe_dump(flow, sort_keys=False))
        env = {**os.environ, "JINA_GATEWAY_IMAGE": image, "JINA_HUB_NO_IMAGE_REBUILD": "1"}
        jina = Path(sys.executable).with_name("jina")
        done = subprocess.run(
            [str(jina), "export", kind, str(flow_file), str(out), *extra], env=env, capture_output=True, text=True
        )
        if done.returncode != 0:
            sys.exit(f"error: jina export {kind} failed:\n{done.stderr[-3000:]}")


def _executor_config(args: list[str], name: str) -> None:
    """Point ``--uses config.yml`` (Jina's convention for an image) at this executor's config."""
    args[args.index("--uses") + 1] = f"executors/{name}.yml"
    if "--workspace" in args:  # the code in /app is read-only for the image's user
        args[args.index("--workspace") + 1] = "/tmp/jina-workspace"


def _gateway_config(args: list[str]) -> None:
    """The gateway runs the image's gateway config: gRPC, and HTTP with the web page."""
    args[args.index("--uses") + 1] = "gateway/gateway.yml"


def _resources(name: str) -> dict[str, Any]:
    cpu, memory, memory_limit = RESOURCES[name]
    resources: dict[str, Any] = {"requests": {"cpu": cpu, "memory": memory}, "limits": {"memory": memory_limit}}
    if name == "sampler":
        resources["limits"]["nvidia.com/gpu"] = 1
    return resources


def _split_probe_arguments(container: dict[str, Any]) -> None:
    """Jina writes ``"--timeout 9500"`` as one item, which ``jina ping`` ignores: one item per word."""
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        command = container.get(probe, {}).get("exec", {}).get("command")
        if command:
            container[probe]["exec"]["command"] = [word for item in command for word in item.split()]


def _weights_init_container(image: str) -> dict[str, Any]:
    return {
        "name": "weights",
        "image": image,
        "imagePullPolicy": "IfNotPresent",
        "command": DOWNLOAD,  # resumable; pods starting together wait for each other's download
        "env": [{"name": k, "value": v} for k, v in DOWNLOAD_ENV.items()],
        "volumeMounts": [{"name": "disco-models", "mountPath": MODELS}],
        "resources": _resources("weights"),
    }


def balance_sampler_replicas(docs: list[dict[str, Any]], replicas: int) -> list[str]:
    """Give every sampler replica its own address, and return them for the gateway.

    Jina's export puts the replicas behind one ClusterIP Service and gives the gateway that one
    address: gRPC keeps one HTTP/2 connection to it, so kube-proxy (which balances connections,
    not requests) sends every request to the same pod unless a service mesh balances requests.
    Instead, the sampler runs as a StatefulSet behind a headless Service, which gives pod ``i``
    the stable DNS name ``sampler-i.sampler.NS.svc``, and the gateway is given all of them in
    ``--deployments-addresses``: Jina's gateway keeps one connection per address of an executor
    and sends each request to the next one (round robin), as it does for local replicas.
    Changing the replica count therefore means exporting again (the gateway's list is fixed).
    """
    service = next(d for d in docs if d["kind"] == "Service")
    service["spec"]["clusterIP"] = "None"  # headless: DNS names for the pods, no virtual IP
    deployment = next(d for d in docs if d["kind"] == "Deployment")
    name, spec = deployment["metadata"]["name"], deployment["spec"]
    deployment["kind"] = "StatefulSet"
    deployment["spec"] = {
        "serviceName": service["metadata"]["name"],
        "podManagementPolicy": "Parallel",  # start all replicas at once, not one after another
        "replicas": replicas,
        "selector": spec["selector"],
        "updateStrategy": {"type": "RollingUpdate"},
        "template": spec["template"],
    }
    namespace = deployment["metadata"]["namespace"]
    port = service["spec"]["ports"][0]["port"]
    return [f"grpc://{name}-{i}.{service['metadata']['name']}.{namespace}.svc:{port}" for i in range(replicas)]


def _set_gateway_addresses(docs: list[dict[str, Any]], executor: str, addresses: list[str]) -> None:
    deployment = next(d for d in docs if d["kind"] == "Deployment")
    args = deployment["spec"]["template"]["spec"]["containers"][0]["args"]
    i = args.index("--deployments-addresses") + 1
    args[i] = json.dumps({**json.loads(args[i]), executor: addresses})


def _gateway_service(container: dict[str, Any], pod: dict[str, Any]) -> None:
    """The gateway runs the job API: the result store's volume, the state store's URL, and its
    tokens from the Secret ``disco-api-tokens`` (optional: without it the service is open, and says
    so in its log)."""
    container.setdefault("env", [])
    container["env"] += [
        {"name": "DISCO_RESULTS_DIR", "value": RESULTS},
        database_env(),
        {"name": "DISCO_API_TOKENS", "valueFrom": {"secretKeyRef": {**TOKENS_SECRET, "optional": True}}},
    ]
    container["volumeMounts"] = [{"name": v, "mountPath": VOLUMES[v][0]} for v in GATEWAY_VOLUMES]
    pod["volumes"] = [{"name": v, "persistentVolumeClaim": {"claimName": v}} for v in GATEWAY_VOLUMES]


def _monitors(manifests: dict[str, list[dict[str, Any]]], namespace: str) -> list[dict[str, Any]]:
    """Take Jina's ServiceMonitors (the executors' metrics) out of the manifests, and add one for
    the gateways' ``/metrics`` on their HTTP Service: the Prometheus Operator's resources, which a
    cluster without it would refuse, so they go to a file of their own."""
    monitors = []
    for docs in manifests.values():
        monitors += [d for d in docs if d["kind"] == "ServiceMonitor"]
        docs[:] = [d for d in docs if d["kind"] != "ServiceMonitor"]
    http = next(d for d in manifests["gateway"] if d["kind"] == "Service" and d["metadata"]["name"].endswith("-http"))
    http["spec"]["ports"][0]["name"] = http["spec"]["ports"][0].get("name") or "http"
    monitors.append(
        {
            "apiVersion": "monitoring.coreos.com/v1",
            "kind": "ServiceMonitor",
            "metadata": {"name": "gateway-http", "namespace": namespace, "labels": {"app": "gateway"}},
            "spec": {
                "endpoints": [{"port": http["spec"]["ports"][0]["name"], "path": "/metrics"}],
                "namespaceSelector": {"matchNames": [namespace]},
                "selector": {"matchLabels": http["metadata"].get("labels") or {"app": "gateway"}},
            },
        }
    )
    return monitors


def complete_kubernetes(
    out: Path, namespace: str, replicas: int, gateways: int = GATEWAYS, external_database: bool = False
) -> None:
    """Complete Jina's manifests in ``out`` (see the module's text); ``gateways``: gateway replicas;
    ``external_database``: the pods' database URL is in a Secret the operator made (no PostgreSQL
    is written)."""
    names = ("gateway", "encoder", "sampler", "renderer")  # Jina writes OUT/NAME/NAME.yml for each
    manifests = {name: list(yaml.safe_load_all((out / name / f"{name}.yml").read_text())) for name in names}
    monitors = _monitors(manifests, namespace)
    sampler_addresses = balance_sampler_replicas(manifests["sampler"], replicas)
    _set_gateway_addresses(manifests["gateway"], "sampler", sampler_addresses)
    for name, docs in manifests.items():
        for doc in docs:
            if doc["kind"] not in ("Deployment", "StatefulSet"):
                continue
            template = doc["spec"]["template"]
            template["metadata"].pop("annotations", None)  # Jina's linkerd opt-in: no mesh is needed
            pod = template["spec"]
            pod["securityContext"] = dict(POD_SECURITY)
            (container,) = pod["containers"]
            _split_probe_arguments(container)
            container["resources"] = _resources(name)
            container["env"] = [
                *container.get("env", []),
                {"name": "DISCO_FLOW_SECRET", "valueFrom": {"secretKeyRef": dict(FLOW_SECRET)}},
            ]
            if name == "gateway":
                doc["spec"]["replicas"] = gateways
                _gateway_config(container["args"])
                _gateway_service(container, pod)
                continue
            _executor_config(container["args"], name)
            gpu = name == "sampler"
            container["env"] += [{"name": k, "value": v} for k, v in {**ENV, "DISCO_USE_GPU": str(int(gpu))}.items()]
            container["env"].append(database_env())  # the job board's store
            container["volumeMounts"] = [{"name": v, "mountPath": path} for v, (path, _) in VOLUMES.items()]
            pod["volumes"] = [{"name": v, "persistentVolumeClaim": {"claimName": v}} for v in VOLUMES]
            if name in NEEDS_WEIGHTS:
                pod["initContainers"] = [_weights_init_container(container["image"])]
    for name, docs in manifests.items():
        (out / name / f"{name}.yml").write_text(yaml.safe_dump_all(docs, sort_keys=False))
    claims = [
        {
            "apiVersion": "v1",
            "kind": "PersistentVolumeClaim",
            "metadata": {"name": v, "namespace": namespace},
            # every replica reads the weights and writes its images: ReadWriteMany storage
            "spec": {"accessModes": ["ReadWriteMany"], "resources": {"requests": {"storage": size}}},
        }
        for v, (_, size) in VOLUMES.items()
    ]
    (out / "volumes.yml").write_text(yaml.safe_dump_all(claims, sort_keys=False))
    (out / "flow-secret.yml").write_text(yaml.safe_dump(flow_secret_manifest(namespace), sort_keys=False))
    services = [d for name in EXECUTORS for d in manifests[name] if d["kind"] == "Service"]
    ports = sorted({port["port"] for service in services for port in service["spec"]["ports"]})
    (out / "network-policy.yml").write_text(yaml.safe_dump(executor_network_policy(namespace, ports), sort_keys=False))
    (out / "monitoring.yml").write_text(yaml.safe_dump_all(monitors, sort_keys=False))
    if not external_database:
        database = out / "database.yml"
        database.touch(mode=0o600)  # it holds the database's password
        database.write_text(yaml.safe_dump_all(kubernetes_manifests(namespace, new_password()), sort_keys=False))


def flow_secret_manifest(namespace: str) -> dict[str, Any]:
    """The Secret holding the Flow's secret: random, made for this export."""
    from disco_service.server.flow_secret import new_secret

    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": FLOW_SECRET["name"], "namespace": namespace},
        "type": "Opaque",
        "stringData": {FLOW_SECRET["key"]: new_secret()},
    }


def executor_network_policy(namespace: str, ports: list[int]) -> dict[str, Any]:
    """A NetworkPolicy: the executors' pods take connections on their gRPC ``ports`` from the
    gateway's pods only (Jina labels every pod ``app: <name>``); probes run inside the pod."""
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": "disco-executors-from-gateway", "namespace": namespace},
        "spec": {
            "podSelector": {"matchExpressions": [{"key": "app", "operator": "In", "values": list(EXECUTORS)}]},
            "policyTypes": ["Ingress"],
            "ingress": [
                {
                    "from": [{"podSelector": {"matchLabels": {"app": "gateway"}}}],
                    "ports": [{"protocol": "TCP", "port": port} for port in ports],
                }
            ],
        },
    }


# the host's DISCO_FLOW_SECRET, required: compose refuses to start without it, naming it
COMPOSE_FLOW_SECRET = "DISCO_FLOW_SECRET=${DISCO_FLOW_SECRET:?set DISCO_FLOW_SECRET to a random secret}"


def complete_docker_compose(out: Path, gpus: int, gateways: int = GATEWAYS, external_database: bool = False) -> None:
    """Complete Jina's compose file ``out`` (see the module's text): ``gpus`` on the host,
    ``gateways`` gateway services (the first on host ports 51000/51001, the next 2 higher each),
    ``external_database``: the URL comes from the host's ``DISCO_DATABASE_URL``."""
    compose = yaml.safe_load(out.read_text())
    if external_database:
        database = {"environment": ["DISCO_DATABASE_URL=${DISCO_DATABASE_URL:?the external PostgreSQL's URL}"]}
    else:
        write_compose_env(out.parent, new_password())
        database = {"env_file": [COMPOSE_ENV_FILE], "depends_on": {"postgres": {"condition": "service_healthy"}}}
    # the Compose Specification (docker compose v2): depends_on conditions need it, `version` is obsolete
    compose.pop("version", None)
    sampler_index = 0
    for service_name, service in compose["services"].items():
        name = service_name.split("-rep-")[0]
        if name == "gateway":
            _gateway_config(service["command"])
            # the job API's result store, and the tokens from the host's environment (or its .env file)
            service["volumes"] = [f"{v}:{VOLUMES[v][0]}" for v in GATEWAY_VOLUMES]
            service["environment"] = [*service.get("environment", []), f"DISCO_RESULTS_DIR={RESULTS}"]
            service["environment"].append("DISCO_API_TOKENS=${DISCO_API_TOKENS:-}")
            service["environment"].append(COMPOSE_FLOW_SECRET)
            _use_database(service, database)
            continue  # Jina gives it every sampler replica's address already
        _executor_config(service["command"], name)
        # Jina mounts its host cache over the image's /app (the code): the volumes are ours instead;
        # a new named volume takes the owner of the image's directory (the image's user)
        service["volumes"] = [f"{v}:{path}" for v, (path, _) in VOLUMES.items()]
        gpu = name == "sampler"
        service["environment"] = [*service.get("environment", []), *(f"{k}={v}" for k, v in ENV.items())]
        service["environment"].append(f"DISCO_USE_GPU={int(gpu)}")
        service["environment"].append(COMPOSE_FLOW_SECRET)
        if name in NEEDS_WEIGHTS:
            service["depends_on"] = {"weights": {"condition": "service_completed_successfully"}}
        _use_database(service, database)
        _monitoring_inside(service)
        if gpu:
            device = str(sampler_index % max(gpus, 1))  # replica i on GPU i mod gpus
            sampler_index += 1
            service["deploy"] = {
                "resources": {
                    "reservations": {"devices": [{"driver": "nvidia", "device_ids": [device], "capabilities": ["gpu"]}]}
                }
            }
    image = compose["services"]["gateway"]["image"]
    compose["services"]["weights"] = {
        "image": image,
        "command": DOWNLOAD,
        "environment": [f"{k}={v}" for k, v in DOWNLOAD_ENV.items()],
        "volumes": [f"disco-models:{MODELS}"],
        "restart": "no",
    }
    gateway = compose["services"]["gateway"]
    gateway["ports"] = [f"{p}:{p}" for p in COMPOSE_PORTS] if gateway.get("ports") else gateway.get("ports")
    for n in range(1, gateways):  # more gateways on the same queue, each on host ports of its own
        more = json.loads(json.dumps(gateway))
        more["ports"] = [f"{p + 2 * n}:{p}" for p in COMPOSE_PORTS]
        compose["services"][f"gateway-{n + 1}"] = more
    compose["volumes"] = {v: {} for v in VOLUMES}
    if not external_database:
        compose["services"]["postgres"] = compose_service()
        compose["volumes"]["disco-database"] = {}
    out.write_text(yaml.safe_dump(compose, sort_keys=False))


def _monitoring_inside(service: dict[str, Any]) -> None:
    """Jina maps each executor's metrics port to the same port of the host, which replicas would
    share: the metrics stay on the compose network instead (a Prometheus there scrapes NAME:9090)."""
    command = service["command"]
    if "--port-monitoring" in command:
        command[command.index("--port-monitoring") + 1] = PORT_MONITORING
        service["expose"] = [PORT_MONITORING]
        service.pop("ports", None)


def _use_database(service: dict[str, Any], database: dict[str, Any]) -> None:
    """Give a compose service the state store's URL (and wait for the built-in PostgreSQL)."""
    service["environment"] = [*service.get("environment", []), *database.get("environment", [])]
    if "env_file" in database:
        service["env_file"] = list(database["env_file"])
    if "depends_on" in database:  # copies: the same object twice would be written as a YAML alias
        service["depends_on"] = {**service.get("depends_on", {}), **json.loads(json.dumps(database["depends_on"]))}


def image_reference(value: str) -> str:
    """An image with a tag other than ``latest`` (or a digest): what the pods run must not move."""
    last = value.rsplit("/", 1)[-1]
    if "@" not in last and (":" not in last or last.endswith(":latest")):
        raise argparse.ArgumentTypeError(
            f"give the image with a version tag or a digest (e.g. disco-diffusion-jina:1.0), got {value!r}"
        )
    return value


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("kind", choices=["kubernetes", "docker-compose"])
    parser.add_argument("out", type=Path, help="a directory (kubernetes) or a file (docker-compose)")
    parser.add_argument(
        "--image",
        required=True,
        type=image_reference,
        help="the image built from the Dockerfile, with a version tag or digest (not latest)",
    )
    parser.add_argument(
        "--replicas",
        type=int,
        default=config.load().sampler_replicas,
        help="sampler replicas, one GPU each (default: $DISCO_SAMPLER_REPLICAS or 1)",
    )
    parser.add_argument(
        "--gateways", type=int, default=GATEWAYS, help=f"gateways sharing one queue (default: {GATEWAYS})"
    )
    parser.add_argument(
        "--external-database",
        action="store_true",
        help="no PostgreSQL of its own: the pods read DISCO_DATABASE_URL from the Secret disco-database (key url), "
        "compose from the host's DISCO_DATABASE_URL",
    )
    parser.add_argument("--namespace", default="disco", help="Kubernetes namespace")
    parser.add_argument("--gpus", type=int, default=1, help="docker-compose: GPUs on the host, shared round-robin")
    args = parser.parse_args(argv)
    if args.replicas < 1:
        parser.error(f"--replicas must be >= 1, got {args.replicas}")
    if args.gateways < 1:
        parser.error(f"--gateways must be >= 1, got {args.gateways}")
    flow = export_flow(args.image, args.replicas)
    if args.kind == "kubernetes":
        run_jina_export("kubernetes", flow, args.out, args.image, ["--k8s-namespace", args.namespace])
        complete_kubernetes(args.out, args.namespace, args.replicas, args.gateways, args.external_database)
    else:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        run_jina_export("docker-compose", flow, args.out, args.image, [])
        complete_docker_compose(args.out, args.gpus, args.gateways, args.external_database)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
