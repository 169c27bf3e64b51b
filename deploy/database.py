"""The exports' PostgreSQL: the state store that several gateways and the executors share.

Kubernetes: a Secret ``disco-database`` (``password``, and ``url``: what every pod reads as
``DISCO_DATABASE_URL``), a Service ``postgres`` and a one-replica StatefulSet whose data lives on
a PersistentVolumeClaim of its own (ReadWriteOnce: one database server writes it). With an
external database (``--external-database``) none of these is written: the pods read the URL from
a Secret ``disco-database`` (key ``url``) that its operator creates.

docker-compose: a ``postgres`` service with a named volume, its password and the URL in an
env file beside the compose file (private to its owner); with an external database the URL comes
from the host's ``DISCO_DATABASE_URL``.

The password is made at export time (``secrets``), written only to the Secret or the env file.
"""

from __future__ import annotations

import secrets
from pathlib import Path
from typing import Any

__all__ = [
    "COMPOSE_ENV_FILE",
    "compose_service",
    "DATABASE",
    "database_env",
    "kubernetes_manifests",
    "new_password",
    "POSTGRES_IMAGE",
    "SECRET",
    "write_compose_env",
]

POSTGRES_IMAGE = "postgres:16.4"  # a fixed version: what the pods run must not move
SECRET = {"name": "disco-database", "key": "url"}  # DISCO_DATABASE_URL for every pod
DATABASE = {"user": "disco", "name": "disco", "service": "postgres", "port": 5432, "storage": "10Gi"}
POSTGRES_UID = 999  # the postgres user of the official image
RESOURCES = {"requests": {"cpu": "250m", "memory": "256Mi"}, "limits": {"memory": "1Gi"}}
COMPOSE_ENV_FILE = "disco-database.env"
_READY = ["pg_isready", "-U", DATABASE["user"], "-d", DATABASE["name"]]


def new_password() -> str:
    """A random password: 32 URL-safe characters (nothing a URL would need to escape)."""
    return secrets.token_urlsafe(24)


def database_env() -> dict[str, Any]:
    """The container environment entry that gives a pod ``DISCO_DATABASE_URL`` from the Secret."""
    return {"name": "DISCO_DATABASE_URL", "valueFrom": {"secretKeyRef": dict(SECRET)}}


def _url(host: str, password: str) -> str:
    return f"postgresql://{DATABASE['user']}:{password}@{host}:{DATABASE['port']}/{DATABASE['name']}"


def kubernetes_manifests(namespace: str, password: str) -> list[dict[str, Any]]:
    """The Secret, Service and StatefulSet of the built-in PostgreSQL in ``namespace``."""
    labels = {"app": DATABASE["service"]}
    host = f"{DATABASE['service']}.{namespace}.svc"
    secret = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": SECRET["name"], "namespace": namespace},
        "type": "Opaque",
        "stringData": {"password": password, "url": _url(host, password)},
    }
    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": DATABASE["service"], "namespace": namespace, "labels": labels},
        "spec": {"selector": labels, "ports": [{"name": "postgres", "port": DATABASE["port"]}]},
    }
    container = {
        "name": "postgres",
        "image": POSTGRES_IMAGE,
        "imagePullPolicy": "IfNotPresent",
        "ports": [{"containerPort": DATABASE["port"], "name": "postgres"}],
        "env": [
            {"name": "POSTGRES_USER", "value": DATABASE["user"]},
            {"name": "POSTGRES_DB", "value": DATABASE["name"]},
            {"name": "POSTGRES_PASSWORD", "valueFrom": {"secretKeyRef": {"name": SECRET["name"], "key": "password"}}},
            {"name": "PGDATA", "value": "/var/lib/postgresql/data/pgdata"},  # a folder below the volume's root
        ],
        "volumeMounts": [{"name": "data", "mountPath": "/var/lib/postgresql/data"}],
        "readinessProbe": {"exec": {"command": _READY}, "periodSeconds": 5, "timeoutSeconds": 5},
        "livenessProbe": {
            "exec": {"command": _READY},
            "initialDelaySeconds": 30,
            "periodSeconds": 20,
            "timeoutSeconds": 5,
        },
        "resources": RESOURCES,
    }
    statefulset = {
        "apiVersion": "apps/v1",
        "kind": "StatefulSet",
        "metadata": {"name": DATABASE["service"], "namespace": namespace, "labels": labels},
        "spec": {
            "serviceName": DATABASE["service"],
            "replicas": 1,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "securityContext": {"runAsUser": POSTGRES_UID, "runAsGroup": POSTGRES_UID, "fsGroup": POSTGRES_UID},
                    "containers": [container],
                },
            },
            "volumeClaimTemplates": [
                {
                    "metadata": {"name": "data"},
                    "spec": {
                        "accessModes": ["ReadWriteOnce"],
                        "resources": {"requests": {"storage": DATABASE["storage"]}},
                    },
                }
            ],
        },
    }
    return [secret, service, statefulset]


def compose_service() -> dict[str, Any]:
    """The built-in PostgreSQL as a docker-compose service (healthy once it accepts connections)."""
    return {
        "image": POSTGRES_IMAGE,
        "env_file": [COMPOSE_ENV_FILE],
        "volumes": ["disco-database:/var/lib/postgresql/data"],
        "healthcheck": {"test": _READY, "interval": "5s", "timeout": "5s", "retries": 12},
        "restart": "unless-stopped",
    }


def write_compose_env(folder: Path, password: str) -> Path:
    """Write the env file of the built-in PostgreSQL beside the compose file (mode 0600): the
    server's user, database and password, and ``DISCO_DATABASE_URL`` for the service's containers."""
    path = folder / COMPOSE_ENV_FILE
    lines = [
        f"POSTGRES_USER={DATABASE['user']}",
        f"POSTGRES_DB={DATABASE['name']}",
        f"POSTGRES_PASSWORD={password}",
        f"DISCO_DATABASE_URL={_url(DATABASE['service'], password)}",
    ]
    path.touch(mode=0o600)
    path.chmod(0o600)
    path.write_text("\n".join(lines) + "\n")
    return path
