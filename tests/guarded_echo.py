"""A tiny executor guarded by the Flow's secret behind Jina's own gateway, in a process of its own:
``python tests/guarded_echo.py GATEWAY_PORT EXECUTOR_PORT SECRET`` serves until it is stopped.

tests/test_flow_secret.py starts it as a program: a Flow started inside a test process forks its
executor and gateway from a process that already runs other tests' threads, where a forked child
can hang before it is ready."""

import sys

from jina import Executor, Flow, requests

from disco_service.server import flow_secret
from disco_service.server.flow_secret import METADATA_KEY


class Echo(Executor):
    def __init__(self, secret: str = "", **kwargs):
        super().__init__(**kwargs)
        flow_secret.guard_executor(self, secret)

    @requests
    def echo(self, docs, **kwargs):
        for doc in docs:
            doc.text = "answered"


if __name__ == "__main__":
    gateway, port, secret = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
    flow = Flow(port=gateway, timeout_ready=120_000).add(
        uses=Echo, uses_with={"secret": secret}, name="echo", host="127.0.0.1", port=port,
        grpc_metadata={METADATA_KEY: secret},
    )  # fmt: skip
    with flow:
        print("ready", flush=True)
        flow.block()
