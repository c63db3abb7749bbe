"""Live events to clients: the process's one pub/sub hub, each client's feed, stream slots."""
