"""The chaos suite: real Kiln processes under crash, Redis, load and abuse faults."""
