"""What the API shows of a task: the same JSON in responses and in the stream's snapshot event."""

from __future__ import annotations

from typing import Any

from records.store import TaskRecord


def artifact_url(task_id: str, name: str) -> str:
    return f"/api/tasks/{task_id}/artifacts/{name}"


def task_view(record: TaskRecord) -> dict[str, Any]:
    """The public JSON of a task."""
    f = record.fields
    return {
        "task_id": record.id,
        "batch_id": f["batch"],
        "kind": f["kind"],
        "format": f.get("format", ""),
        "filename": f["filename"],
        "size": int(f.get("size", "0")),
        "state": f["state"],
        "stage": f.get("stage", ""),
        "progress": record.number("progress") or 0.0,
        "attempt": record.attempt,
        "priority": f.get("priority", "default"),
        "retry_at": record.number("retry_at"),
        "deduplicated_from": f.get("deduplicated_from") or None,
        "created": record.number("created"),
        "started": record.number("started"),
        "finished": record.number("finished"),
        "updated": record.number("updated"),
        "error": record.decoded("error"),
        "result": record.decoded("result"),
        "artifacts": [{**artifact, "url": artifact_url(record.id, artifact["name"])}
                      for artifact in record.artifacts],
    }
