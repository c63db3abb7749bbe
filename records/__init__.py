"""The task records in Redis: ids, keys, the event contract and its script, the store, the queue."""
