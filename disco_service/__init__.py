"""The service around the engine, in two rooms and a shared hall.

- ``disco_service.client``: what runs in the user's process: ``generate_image`` (``api``), the
  command line (``cli``), the Flow started for one call (``local_flow``), running images on a Flow
  with progress bars (``runner``, ``progress``), animation runs from files (``animations``), CPU
  estimates and the model download (``download``).
- ``disco_service.server``: what runs in the Flow's processes: the gateway's job queue
  (``job_queue``), its HTTP routes (``http_api``, ``hub_serving``), the result store (``results``),
  tokens (``tokens``), the executors' job board (``jobs``) and ``serve.py``'s supervisor.
- Shared by both: the wire protocol (``wire``), the only reader of ``DISCO_*`` (``config``), the
  files a run writes (``outputs``), gRPC calls to a Flow and what their failures mean
  (``transport``), and console output (``console``).
"""

__all__ = ["client", "config", "console", "outputs", "server", "transport", "wire"]
