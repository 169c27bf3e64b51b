"""Kubernetes or docker-compose manifests for flow.yml, running the project's container image.

    python deploy/export.py kubernetes OUT_DIR  [--image IMAGE] [--replicas N] [--namespace NS]
    python deploy/export.py docker-compose OUT.yml [--image IMAGE] [--replicas N] [--gpus G]

``jina export`` only exports executors that are container images, so each executor here is
``docker://IMAGE`` (the Dockerfile's image, which also runs the gateway); ``flow.yml`` itself
stays runnable locally. Jina's output is then completed with what it cannot express:

- each container runs its own executor config (``executors/<name>.yml`` in the image);
- the sampler asks for one GPU per replica (``nvidia.com/gpu`` / a compose GPU reservation);
- the model directory (``/models``) and the shared job directory (``/jobs``, where any
  replica answers progress and cancel for any job) are volumes.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent
MODELS, JOBS = "/models", "/jobs"
VOLUMES = {"disco-models": (MODELS, "20Gi"), "disco-jobs": (JOBS, "1Gi")}
ENV = {"DISCO_MODEL_DIR": MODELS, "DISCO_JOBS_DIR": JOBS, "PYTHONPATH": "/app/executors"}


def export_flow(image: str, replicas: int) -> dict[str, Any]:
    """flow.yml with every executor as the project's image, and the sampler's replicas."""
    flow = yaml.safe_load((ROOT / "flow.yml").read_text())
    for executor in flow["executors"]:
        executor["uses"] = f"docker://{image}"
        executor.pop("jcloud", None)
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


def complete_kubernetes(out: Path, namespace: str) -> None:
    for name in ("encoder", "sampler", "renderer"):
        path = out / name / f"{name}.yml"
        docs = list(yaml.safe_load_all(path.read_text()))
        for doc in docs:
            if doc.get("kind") != "Deployment":
                continue
            pod = doc["spec"]["template"]["spec"]
            container = next(c for c in pod["containers"] if c["name"] == "executor")
            _executor_config(container["args"], name)
            gpu = name == "sampler"
            container["env"] += [{"name": k, "value": v} for k, v in {**ENV, "DISCO_USE_GPU": str(int(gpu))}.items()]
            container["volumeMounts"] = [{"name": v, "mountPath": path} for v, (path, _) in VOLUMES.items()]
            pod["volumes"] = [{"name": v, "persistentVolumeClaim": {"claimName": v}} for v in VOLUMES]
            if gpu:
                container["resources"] = {"limits": {"nvidia.com/gpu": 1}, "requests": {"memory": "16Gi"}}
        path.write_text(yaml.safe_dump_all(docs, sort_keys=False))
    claims = [
        {
            "apiVersion": "v1",
            "kind": "PersistentVolumeClaim",
            "metadata": {"name": v, "namespace": namespace},
            # every replica reads the weights and shares the job files: ReadWriteMany storage
            "spec": {"accessModes": ["ReadWriteMany"], "resources": {"requests": {"storage": size}}},
        }
        for v, (_, size) in VOLUMES.items()
    ]
    (out / "volumes.yml").write_text(yaml.safe_dump_all(claims, sort_keys=False))


def complete_docker_compose(out: Path, gpus: int) -> None:
    compose = yaml.safe_load(out.read_text())
    sampler_index = 0
    for service_name, service in compose["services"].items():
        name = service_name.split("-rep-")[0]
        if name == "gateway":
            continue
        _executor_config(service["command"], name)
        # Jina mounts its host cache over the image's /app (the code): the volumes are ours instead
        service["volumes"] = [f"{v}:{path}" for v, (path, _) in VOLUMES.items()]
        gpu = name == "sampler"
        service["environment"] = [*service.get("environment", []), *(f"{k}={v}" for k, v in ENV.items())]
        service["environment"].append(f"DISCO_USE_GPU={int(gpu)}")
        if gpu:
            device = str(sampler_index % max(gpus, 1))  # replica i on GPU i mod gpus
            sampler_index += 1
            service["deploy"] = {
                "resources": {
                    "reservations": {"devices": [{"driver": "nvidia", "device_ids": [device], "capabilities": ["gpu"]}]}
                }
            }
    compose["volumes"] = {v: {} for v in VOLUMES}
    out.write_text(yaml.safe_dump(compose, sort_keys=False))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("kind", choices=["kubernetes", "docker-compose"])
    parser.add_argument("out", type=Path, help="a directory (kubernetes) or a file (docker-compose)")
    parser.add_argument("--image", default="disco-diffusion-jina:latest", help="the image built from the Dockerfile")
    parser.add_argument(
        "--replicas",
        type=int,
        default=int(os.environ.get("DISCO_SAMPLER_REPLICAS", 1)),
        help="sampler replicas, one GPU each (default: $DISCO_SAMPLER_REPLICAS or 1)",
    )
    parser.add_argument("--namespace", default="disco", help="Kubernetes namespace")
    parser.add_argument("--gpus", type=int, default=1, help="docker-compose: GPUs on the host, shared round-robin")
    args = parser.parse_args(argv)
    if args.replicas < 1:
        parser.error(f"--replicas must be >= 1, got {args.replicas}")
    flow = export_flow(args.image, args.replicas)
    if args.kind == "kubernetes":
        run_jina_export("kubernetes", flow, args.out, args.image, ["--k8s-namespace", args.namespace])
        complete_kubernetes(args.out, args.namespace)
    else:
        run_jina_export("docker-compose", flow, args.out, args.image, [])
        complete_docker_compose(args.out, args.gpus)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
