"""The service around the engine: wire protocol, configuration, jobs, outputs, the Flow's life cycle and the client."""
