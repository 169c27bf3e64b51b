"""The user's side: ``generate_image``, the command line, and the Flow started for a call."""

__all__ = ["animations", "api", "cli", "cpu_estimate", "download", "local_flow", "progress", "runner"]
