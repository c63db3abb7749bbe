"""The task error tree: every failure a user can see carries a stable code and a human message.

    TaskError(code, message)          base; `code` is a wire identifier, never renamed
    ├── UnsupportedFormat             unsupported_format
    ├── CorruptFile                   corrupt_file
    ├── NoGeometry                    no_geometry
    ├── TooLarge                      too_large
    ├── UnsafeReference               unsafe_reference
    └── ArchiveRejected               archive_rejected

Codes that only the worker assigns (the child cannot raise them about itself):
`timeout`, `memory_limit`, `killed`, `parser_crashed`, `worker_lost`, `internal_error`.
"""

from __future__ import annotations

from typing import ClassVar


class TaskError(Exception):
    """A failure to report to the task's owner: a stable `code` and a `message` for a person."""

    default_code: ClassVar[str] = "internal_error"

    def __init__(self, message: str, code: str | None = None) -> None:
        super().__init__(message)
        self.code = code or self.default_code
        self.message = message

    def as_dict(self) -> dict[str, str]:
        return {"code": self.code, "message": self.message}


class UnsupportedFormat(TaskError):
    default_code = "unsupported_format"


class CorruptFile(TaskError):
    default_code = "corrupt_file"


class NoGeometry(TaskError):
    default_code = "no_geometry"


class TooLarge(TaskError):
    default_code = "too_large"


class UnsafeReference(TaskError):
    default_code = "unsafe_reference"


class ArchiveRejected(TaskError):
    default_code = "archive_rejected"


TIMEOUT = "timeout"
MEMORY_LIMIT = "memory_limit"
KILLED = "killed"
"""A child killed by the system (SIGKILL from no one of ours: the kernel's OOM killer)."""
PARSER_CRASHED = "parser_crashed"
WORKER_LOST = "worker_lost"
INTERNAL_ERROR = "internal_error"
CANCELLED = "cancelled"

TRANSIENT = frozenset({WORKER_LOST, KILLED})
"""Codes of faults outside the file that another attempt may not meet: the worker went away, or
the system killed the child (the OOM killer answers to every process on the machine). A task
that fails with one is retried after a backoff, up to KILN_MAX_ATTEMPTS; every other code is the
file's own doing (`memory_limit`: it outgrew the child's own limit) and final."""
