"""The Flow's side: the gateway's job queue and routes, the result store, tokens, the executors'
job board and the supervisor that ``serve.py`` runs."""

__all__ = ["http_api", "hub_serving", "job_queue", "jobs", "results", "sampling_run", "supervisor", "tokens"]
