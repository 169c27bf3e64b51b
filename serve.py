"""Serve flow.yml with the sampler scaled out: ``python serve.py [--port P] [--http-port H] [--replicas N]``.

``jina flow --uses flow.yml`` serves one sampler. This does the same with
``DISCO_SAMPLER_REPLICAS`` (or ``--replicas``) sampler replicas; when the machine has several
GPUs, Jina pins replica ``i`` to GPU ``i mod n`` (``CUDA_VISIBLE_DEVICES`` round-robin).
It also keeps the Flow serving (see supervisor.py): a dead executor process is restarted, and
SIGINT/SIGTERM stop running jobs at their next step and send them back before the Flow stops.
The Flow that ``client.py`` starts for itself is this one too.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import yaml

from disco_service import config
from disco_service.console import ignore_third_party_warnings
from disco_service.server.flow_secret import new_secret
from disco_service.wire import ENCODER, SAMPLER

ROOT = Path(__file__).resolve().parent
FLOW_FILE = ROOT / "flow.yml"
EXECUTOR_HOST = "127.0.0.1"  # the executors' ports: for the gateway on this machine only


def load_config() -> config.Config:
    """The service's configuration; exits with the message of a bad variable."""
    try:
        return config.load()
    except config.ConfigError as exc:
        raise SystemExit(f"error: {exc}") from None


def sampler_replicas() -> int:
    return load_config().sampler_replicas


def flow_ports() -> tuple[int, int]:
    """flow.yml's gRPC and HTTP ports."""
    grpc_port, http_port = yaml.safe_load(FLOW_FILE.read_text())["gateway"]["port"]
    return int(grpc_port), int(http_port)


def board_store(port: int | None, given: str | None = None) -> str | None:
    """Where the executors' job board is: ``given``, else the SQLite file of the server on gRPC
    ``port`` (flow.yml's when None), where its gateway keeps the queue (gateway/page_gateway.py).
    None with ``DISCO_DATABASE_URL``: a URL (it may hold a password) stays off command lines, and
    each process reads it from its environment."""
    if given:
        return given
    cfg = load_config()
    return None if cfg.database_url else cfg.store_target(port or flow_ports()[0])


def gpu_count() -> int:
    """GPUs on this machine, counted the way Jina counts them (without initialising CUDA here)."""
    if not shutil.which("nvidia-smi"):
        return 0
    try:
        return subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=30).stdout.count("UUID")
    except (OSError, subprocess.SubprocessError):
        return 0


def cuda_usable() -> bool:
    """Whether torch sees a CUDA GPU, asked in a child process (this one stays without torch and CUDA)."""
    code = "import torch; print(torch.cuda.is_available())"
    try:
        done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    except (OSError, subprocess.SubprocessError):
        return True  # cannot tell: the executors decide, as with auto
    return done.stdout.strip() != "False"


def flow_device(use_gpu: str | None, configured: str) -> str | None:
    """The executors' device, decided once for the Flow: ``auto`` (``use_gpu``, else the
    ``configured`` ``DISCO_USE_GPU``) on a machine without a usable CUDA GPU becomes ``0`` with
    one warning here, where each executor process would warn on its own; else ``use_gpu``."""
    if (use_gpu or configured) != "auto" or gpu_count() > 0 or cuda_usable():
        return use_gpu
    print(
        "[serve] warning: no CUDA GPU is usable: the Flow runs on the CPU (much slower); "
        "DISCO_USE_GPU=0 (or --use-gpu 0) chooses the CPU without this warning",
        file=sys.stderr,
        flush=True,
    )
    return "0"


def flow_config(
    replicas: int | None = None,
    port: int | None = None,
    http_port: int | None = None,
    use_gpu: str | None = None,
    preload: str | None = None,
    checkpoints_anywhere: bool = False,
    host: str | None = None,
    flow_secret: str | None = None,
    state_store: str | None = None,
) -> dict[str, Any]:
    """flow.yml as a dict, with the sampler's replica count and GPU pinning applied, and the
    executors' ``use_gpu``, ``state_store`` (where the job board is) and the sampler's ``preload``
    and ``checkpoints_anywhere`` (``uses_with``) when given. ``host``: the address every port listens
    on, the gateway's and the executors' (default: all for the gateway, loopback for the executors,
    which answer the gateway alone). ``flow_secret``: what the executors require of the gateway's
    calls (given to both as ``uses_with``; default: each process finds it itself, see
    disco_service/server/flow_secret.py)."""
    config = yaml.safe_load(FLOW_FILE.read_text())
    gateway = config["gateway"]
    if host:
        gateway["host"] = host
    gateway["uses"] = str(ROOT / gateway["uses"])
    if flow_secret:
        gateway.setdefault("uses_with", {})["flow_secret"] = flow_secret
    grpc_port, default_http_port = gateway["port"]
    gateway["port"] = [port or grpc_port, http_port or default_http_port]  # the protocols' order: grpc, http
    replicas = replicas or sampler_replicas()
    for executor in config["executors"]:
        executor["uses"] = str(ROOT / executor["uses"])  # independent of the current directory
        executor["host"] = host or executor.get("host") or EXECUTOR_HOST
        if flow_secret:
            executor.setdefault("uses_with", {})["flow_secret"] = flow_secret
        if use_gpu is not None and executor["name"] in (ENCODER, SAMPLER):
            executor.setdefault("uses_with", {})["use_gpu"] = use_gpu
        if state_store:
            executor.setdefault("uses_with", {})["state_store"] = state_store
        if executor["name"] == SAMPLER:
            if preload:
                executor.setdefault("uses_with", {})["preload"] = preload
            if checkpoints_anywhere:
                executor.setdefault("uses_with", {})["checkpoints_anywhere"] = True
            executor["replicas"] = replicas
            gpus = gpu_count()
            if replicas > 1 and gpus > 1 and "CUDA_VISIBLE_DEVICES" not in os.environ:
                executor.setdefault("env", {})["CUDA_VISIBLE_DEVICES"] = "RR"  # Jina: replica i -> GPU i % gpus
    return config


def load_flow(replicas: int | None = None, port: int | None = None, http_port: int | None = None, **uses_with):
    from jina import Flow

    return Flow.load_config(flow_config(replicas, port, http_port, **uses_with))


WILDCARDS = ("", "0.0.0.0", "::")  # a gateway bound to one of these listens on every interface


def private_address() -> str:
    """This machine's address on its network (the one a route outwards leaves from); ``127.0.0.1`` without one."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(("10.255.255.255", 1))  # no packet is sent: this only picks the interface
            return probe.getsockname()[0]
        except OSError:
            return "127.0.0.1"


def banner(host: str | None, grpc_port: int, http_port: int, private: str | None = None) -> str:
    """The start banner: the addresses the Flow's gateway listens on and nothing else. Bound to
    ``host`` it is reached at ``host`` only; bound to every interface (no host, ``0.0.0.0``) at
    ``127.0.0.1`` and at this machine's ``private`` address (default: ``private_address()``)."""
    if (host or "") in WILDCARDS:
        hosts = list(dict.fromkeys(["127.0.0.1", private or private_address()]))
    else:
        hosts = [f"[{host}]" if ":" in host else host]
    lines = ["Flow is ready to serve! Listening on:"]  # the first words as jina says them: scripts wait for them
    lines += [f"  gRPC  grpc://{h}:{grpc_port}" for h in hosts]
    lines += [f"  HTTP  http://{h}:{http_port}  (the page: http://{h}:{http_port}/ui/)" for h in hosts]
    return "\n".join(lines)


def run_flow(args: argparse.Namespace) -> None:
    """Serve the Flow in this process until SIGTERM/SIGINT or until the process that started it is gone."""
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    parent = os.getppid()

    def watch_parent() -> None:
        while not stop.is_set() and os.getppid() == parent:
            time.sleep(1)
        stop.set()

    import jina.orchestrate.flow.base as flow_base

    # jina's banner (printed with rich's print) shows a private address also when the gateway is
    # bound to another one: this process prints its own, and none for a client's own Flow (quiet)
    flow_base.print = lambda *args, **kwargs: None
    with load_flow(
        args.replicas,
        args.port,
        args.http_port,
        use_gpu=args.use_gpu,
        preload=args.preload,
        checkpoints_anywhere=args.checkpoints_anywhere,
        host=args.host,
        flow_secret=config.load().flow_secret,
        state_store=args.state_store,
    ) as flow:
        if not args.quiet:
            grpc_port, http_port = flow.port  # flow_config's order: grpc, http
            print(banner(args.host, grpc_port, http_port), flush=True)
        args.ready_file.write_text(str(flow.port))
        threading.Thread(target=watch_parent, daemon=True).start()
        flow.block(stop_event=stop)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--port", type=int, default=None, help="gRPC port (default: the one in flow.yml, 51000)")
    parser.add_argument(
        "--host",
        default=None,
        help="the address every port listens on, the gateway's and the executors' (default: the gateway's "
        "on all, 0.0.0.0; the executors' on 127.0.0.1 only)",
    )
    parser.add_argument(
        "--http-port", type=int, default=None, help="HTTP port: REST and the page at /ui/ (default: flow.yml's, 51001)"
    )
    parser.add_argument(
        "--replicas", type=int, default=None, help="sampler replicas (default: $DISCO_SAMPLER_REPLICAS or 1)"
    )
    parser.add_argument(
        "--use-gpu",
        choices=config.DEVICE_CHOICES,
        default=None,
        help="the executors' device: 1 needs a GPU, 0 the CPU, auto the GPU if any (default: $DISCO_USE_GPU)",
    )
    parser.add_argument(
        "--preload",
        default=None,
        help="the diffusion model the sampler loads at start, or none (default: the default one)",
    )
    parser.add_argument(
        "--checkpoints-anywhere",
        action="store_true",
        help="a diffusion_model checkpoint path may name any file on this machine (a client's own Flow); "
        "by default only files inside the model directory are read",
    )
    parser.add_argument(
        "--state-store",
        default=None,
        help="the state store of the executors' job board, a SQLite file or a postgresql:// URL (default: "
        "$DISCO_DATABASE_URL, else this server's own file under $DISCO_STATE_DIR, as the gateway's queue)",
    )
    parser.add_argument("--quiet", action="store_true", help="no banner, no notice when stopping (a client's own Flow)")
    parser.add_argument("--ready-file", type=Path, help="written once the Flow serves (and after each restart)")
    parser.add_argument("--stop-with-parent", action="store_true", help="stop when the starting process exits")
    parser.add_argument("--flow-only", action="store_true", help=argparse.SUPPRESS)  # the supervised Flow itself
    args = parser.parse_args(argv)
    try:  # every DISCO_* value, checked before anything starts: the Flow's processes read them too
        cfg = config.load()
    except config.ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    ignore_third_party_warnings()  # before jina is imported; the Flow's processes inherit them
    if not args.flow_only:  # the supervisor decides for every Flow it starts (and restarts)
        args.use_gpu = flow_device(args.use_gpu, cfg.use_gpu)
    if not cfg.flow_secret:  # one secret for this Flow, kept across the supervisor's restarts
        config.hand_down_flow_secret(new_secret())
    args.state_store = board_store(args.port, args.state_store)
    options = (
        ("port", args.port),
        ("host", args.host),
        ("http-port", args.http_port),
        ("replicas", args.replicas),
        ("use-gpu", args.use_gpu),
        ("preload", args.preload),
        ("state-store", args.state_store),
    )
    flow_args = [f"--{name}={value}" for name, value in options if value] + (["--quiet"] if args.quiet else [])
    flow_args += ["--checkpoints-anywhere"] if args.checkpoints_anywhere else []
    if args.flow_only:
        run_flow(args)
        return 0
    from disco_service.server.supervisor import Supervisor

    return Supervisor(
        flow_args, args.ready_file, args.stop_with_parent, quiet=args.quiet, state_store=args.state_store
    ).run()


if __name__ == "__main__":
    sys.exit(main())
