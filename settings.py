"""One frozen Settings, read from the environment; every limit has a safe default."""

from __future__ import annotations

import os
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from starlette.datastructures import Secret

from tasks.progress import Limits

GiB = 1024**3


class SettingsError(ValueError):
    """An environment variable holds a value Kiln cannot use."""


def _int(env: Mapping[str, str], name: str, default: int, minimum: int = 0) -> int:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw.replace("_", ""))
    except ValueError:
        raise SettingsError(f"{name} must be an integer, got {raw!r}") from None
    if value < minimum:
        raise SettingsError(f"{name} must be at least {minimum}, got {value}")
    return value


def _float(env: Mapping[str, str], name: str, default: float, minimum: float = 0.0) -> float:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise SettingsError(f"{name} must be a number, got {raw!r}") from None
    if value < minimum:
        raise SettingsError(f"{name} must be at least {minimum}, got {value}")
    return value


def _bool(env: Mapping[str, str], name: str, default: bool) -> bool:
    raw = env.get(name, "").strip().lower()
    if not raw:
        return default
    if raw in {"1", "true", "yes", "on"}:
        return True
    if raw in {"0", "false", "no", "off"}:
        return False
    raise SettingsError(f"{name} must be true or false, got {raw!r}")


def _one_of(env: Mapping[str, str], name: str, choices: tuple[str, ...]) -> str:
    """One of `choices` (the first is the default), in any case."""
    raw = env.get(name, "").strip().lower()
    if not raw:
        return choices[0]
    if raw not in choices:
        raise SettingsError(f"{name} must be one of {', '.join(choices)}, got {raw!r}")
    return raw


def _origins(raw: str) -> tuple[str, ...]:
    """KILN_ALLOWED_ORIGINS: comma-separated `scheme://host[:port]` origins, besides Kiln's own."""
    origins = []
    for item in raw.split(","):
        origin = item.strip().rstrip("/").lower()
        if not origin:
            continue
        scheme, sep, rest = origin.partition("://")
        if scheme not in ("http", "https") or not sep or not rest or "/" in rest:
            raise SettingsError(
                f"KILN_ALLOWED_ORIGINS holds {item.strip()!r}; give origins like https://app.example"
            )
        origins.append(origin)
    return tuple(origins)


@dataclass(frozen=True)
class Settings:
    """Everything a Kiln process needs to know; built once and passed down, never global."""

    redis_url: str | None = None
    data_dir: Path = Path("var")
    host: str = "127.0.0.1"
    port: int = 8000
    jwt_secret: Secret = field(default_factory=lambda: Secret(secrets.token_urlsafe(48)))
    token_ttl: int = 900
    session_ttl: int = 7 * 86400
    refresh_grace: float = 10.0
    cookie_secure: bool = False
    max_upload_bytes: int = 1 * GiB
    max_files_per_upload: int = 100
    max_form_fields: int = 100
    child_memory_bytes: int = 4 * GiB
    child_nice: int = 10
    child_max_tasks: int = 1000
    child_max_resident: int = 1 * GiB
    task_timeout: float = 600.0
    max_attempts: int = 3
    worker_concurrency: int = max(1, os.cpu_count() or 1)
    embedded_worker: bool = True
    job_lease: float = 10.0
    poll_delay: float = 0.5
    progress_hz: float = 5.0
    event_log_max: int = 1000
    event_ttl: int = 7 * 86400
    task_ttl: int = 30 * 86400
    sse_queue_size: int = 256
    sse_ping: float = 15.0
    page_size_max: int = 200
    max_pixels: int = 178_956_970
    max_faces: int = 20_000_000
    archive_max_members: int = 1000
    archive_max_bytes: int = 2 * GiB
    archive_max_ratio: float = 200.0
    lod_min_faces: int = 10_000
    thumbnail_size: int = 512
    turntable_frames: int = 24
    turntable_frame_size: int = 256
    turntable_max_faces: int = 300_000
    mip_top_size: int = 2048
    xml_max_bytes: int = 64 * 1024**2
    preview_size: int = 512
    task_threads: int = 2
    renderer: str = "auto"
    mesh_pipeline: str = "full"
    # recovery
    sweep_interval: float = 30.0
    # upload limits per user (0: off)
    upload_requests_per_minute: int = 120
    upload_bytes_per_hour: int = 50 * GiB
    user_quota_bytes: int = 100 * GiB
    # scheduling (0: off)
    low_priority_bytes: int = 256 * 1024**2
    priority_aging: float = 300.0
    user_max_running: int = 0
    retry_base: float = 2.0
    retry_max: float = 300.0
    # cleanup
    cleanup_every: int = 10
    cleanup_batch: int = 1000
    cleanup_age: float = 3600.0
    # sign-in hardening
    login_user_failures: int = 10
    login_address_failures: int = 50
    login_window: int = 900
    login_delay_max: float = 2.0
    hash_threads: int = 2
    hash_waiting: int = 8
    allowed_origins: tuple[str, ...] = ()
    # protocol limits
    sse_per_session: int = 8
    max_header_bytes: int = 16 * 1024
    max_header_count: int = 100
    header_timeout: float = 10.0
    upload_min_rate: int = 1024
    upload_rate_grace: float = 30.0
    # Redis faults
    redis_timeout: float = 2.0
    redis_max_connections: int = 64
    redis_idle_close: float = 60.0
    redis_health_interval: float = 5.0
    redis_start_wait: float = 300.0

    def pipeline_limits(self) -> Limits:
        """Every limit a pipeline obeys, sent with each task (the child process has no Settings)."""
        return {
            "max_faces": self.max_faces,
            "archive_max_members": self.archive_max_members,
            "archive_max_bytes": self.archive_max_bytes,
            "archive_max_ratio": self.archive_max_ratio,
            "lod_min_faces": self.lod_min_faces,
            "thumbnail_size": self.thumbnail_size,
            "turntable_frames": self.turntable_frames,
            "turntable_frame_size": self.turntable_frame_size,
            "turntable_max_faces": self.turntable_max_faces,
            "threads": self.task_threads,
            "renderer": self.renderer,
            "mip_top_size": self.mip_top_size,
            "xml_max_bytes": self.xml_max_bytes,
            "preview_size": self.preview_size,
        }

    @property
    def private_redis_dir(self) -> Path:
        return self.data_dir / "redis"

    @property
    def storage_dir(self) -> Path:
        return self.data_dir / "tasks"

    @property
    def incoming_dir(self) -> Path:
        return self.data_dir / "incoming"

    def with_(self, **changes: Any) -> Settings:
        """A copy with some fields changed (tests and the CLI use it)."""
        return replace(self, **changes)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        """Read KILN_* and REDIS_URL; the JWT secret is generated once and kept in the data dir."""
        env = os.environ if env is None else env
        data_dir = Path(env.get("KILN_DATA_DIR", "").strip() or "var")
        secret = env.get("KILN_JWT_SECRET", "").strip() or load_or_create_secret(data_dir)
        token_ttl = _int(env, "KILN_TOKEN_TTL", 900, minimum=10)
        session_ttl = _int(env, "KILN_SESSION_TTL", max(7 * 86400, token_ttl), minimum=60)
        if session_ttl < token_ttl:
            raise SettingsError(
                f"KILN_SESSION_TTL ({session_ttl}) must be at least KILN_TOKEN_TTL ({token_ttl})"
            )
        return cls(
            redis_url=env.get("REDIS_URL", "").strip() or None,
            data_dir=data_dir,
            host=env.get("KILN_HOST", "").strip() or "127.0.0.1",
            port=_int(env, "KILN_PORT", 8000),
            jwt_secret=Secret(secret),
            token_ttl=token_ttl,
            session_ttl=session_ttl,
            refresh_grace=_float(env, "KILN_REFRESH_GRACE", 10.0),
            cookie_secure=_bool(env, "KILN_COOKIE_SECURE", False),
            max_upload_bytes=_int(env, "KILN_MAX_UPLOAD_BYTES", 1 * GiB, minimum=1),
            max_files_per_upload=_int(env, "KILN_MAX_FILES_PER_UPLOAD", 100, minimum=1),
            max_form_fields=_int(env, "KILN_MAX_FORM_FIELDS", 100),
            child_memory_bytes=_int(env, "KILN_CHILD_MEMORY_BYTES", 4 * GiB, minimum=256 * 1024**2),
            child_nice=_int(env, "KILN_CHILD_NICE", 10, minimum=0),
            child_max_tasks=_int(env, "KILN_CHILD_MAX_TASKS", 1000, minimum=1),
            child_max_resident=_int(env, "KILN_CHILD_MAX_RESIDENT", 1 * GiB, minimum=1),
            task_timeout=_float(env, "KILN_TASK_TIMEOUT", 600.0, minimum=0.1),
            max_attempts=_int(env, "KILN_MAX_ATTEMPTS", 3, minimum=1),
            worker_concurrency=_int(env, "KILN_WORKERS", max(1, os.cpu_count() or 1), minimum=1),
            embedded_worker=_bool(env, "KILN_EMBEDDED_WORKER", True),
            job_lease=_float(env, "KILN_JOB_LEASE", 10.0, minimum=1.0),
            poll_delay=_float(env, "KILN_POLL_DELAY", 0.5, minimum=0.01),
            progress_hz=_float(env, "KILN_PROGRESS_HZ", 5.0, minimum=0.1),
            event_log_max=_int(env, "KILN_EVENT_LOG_MAX", 1000, minimum=10),
            event_ttl=_int(env, "KILN_EVENT_TTL", 7 * 86400, minimum=60),
            task_ttl=_int(env, "KILN_TASK_TTL", 30 * 86400, minimum=60),
            sse_queue_size=_int(env, "KILN_SSE_QUEUE", 256, minimum=1),
            sse_ping=_float(env, "KILN_SSE_PING", 15.0, minimum=0.1),
            page_size_max=_int(env, "KILN_PAGE_SIZE_MAX", 200, minimum=1),
            max_pixels=_int(env, "KILN_MAX_PIXELS", 178_956_970, minimum=1),
            max_faces=_int(env, "KILN_MAX_FACES", 20_000_000, minimum=1),
            archive_max_members=_int(env, "KILN_ARCHIVE_MAX_MEMBERS", 1000, minimum=1),
            archive_max_bytes=_int(env, "KILN_ARCHIVE_MAX_BYTES", 2 * GiB, minimum=1),
            archive_max_ratio=_float(env, "KILN_ARCHIVE_MAX_RATIO", 200.0, minimum=1.0),
            lod_min_faces=_int(env, "KILN_LOD_MIN_FACES", 10_000, minimum=1),
            thumbnail_size=_int(env, "KILN_THUMBNAIL_SIZE", 512, minimum=16),
            turntable_frames=_int(env, "KILN_TURNTABLE_FRAMES", 24, minimum=0),
            turntable_frame_size=_int(env, "KILN_TURNTABLE_FRAME_SIZE", 256, minimum=16),
            turntable_max_faces=_int(env, "KILN_TURNTABLE_MAX_FACES", 300_000, minimum=1),
            mip_top_size=_int(env, "KILN_MIP_TOP_SIZE", 2048, minimum=1),
            xml_max_bytes=_int(env, "KILN_XML_MAX_BYTES", 64 * 1024**2, minimum=1024),
            preview_size=_int(env, "KILN_PREVIEW_SIZE", 512, minimum=16),
            task_threads=_int(env, "KILN_TASK_THREADS", 2, minimum=1),
            renderer=_one_of(env, "KILN_RENDERER", ("auto", "gl", "numpy")),
            mesh_pipeline=_one_of(env, "KILN_MESH_PIPELINE", ("full", "stats")),
            sweep_interval=_float(env, "KILN_SWEEP_INTERVAL", 30.0, minimum=1.0),
            upload_requests_per_minute=_int(env, "KILN_UPLOAD_REQUESTS_PER_MINUTE", 120),
            upload_bytes_per_hour=_int(env, "KILN_UPLOAD_BYTES_PER_HOUR", 50 * GiB),
            user_quota_bytes=_int(env, "KILN_USER_QUOTA_BYTES", 100 * GiB),
            low_priority_bytes=_int(env, "KILN_LOW_PRIORITY_BYTES", 256 * 1024**2),
            priority_aging=_float(env, "KILN_PRIORITY_AGING", 300.0),
            user_max_running=_int(env, "KILN_USER_MAX_RUNNING", 0),
            retry_base=_float(env, "KILN_RETRY_BASE", 2.0),
            retry_max=_float(env, "KILN_RETRY_MAX", 300.0),
            cleanup_every=_int(env, "KILN_CLEANUP_EVERY", 10),
            cleanup_batch=_int(env, "KILN_CLEANUP_BATCH", 1000, minimum=1),
            cleanup_age=_float(env, "KILN_CLEANUP_AGE", 3600.0, minimum=60.0),
            login_user_failures=_int(env, "KILN_LOGIN_USER_FAILURES", 10),
            login_address_failures=_int(env, "KILN_LOGIN_ADDRESS_FAILURES", 50),
            login_window=_int(env, "KILN_LOGIN_WINDOW", 900, minimum=1),
            login_delay_max=_float(env, "KILN_LOGIN_DELAY_MAX", 2.0),
            hash_threads=_int(env, "KILN_HASH_THREADS", 2, minimum=1),
            hash_waiting=_int(env, "KILN_HASH_WAITING", 8),
            allowed_origins=_origins(env.get("KILN_ALLOWED_ORIGINS", "")),
            sse_per_session=_int(env, "KILN_SSE_PER_SESSION", 8, minimum=1),
            max_header_bytes=_int(env, "KILN_MAX_HEADER_BYTES", 16 * 1024, minimum=1024),
            max_header_count=_int(env, "KILN_MAX_HEADERS", 100, minimum=10),
            header_timeout=_float(env, "KILN_HEADER_TIMEOUT", 10.0, minimum=0.1),
            upload_min_rate=_int(env, "KILN_UPLOAD_MIN_RATE", 1024),
            upload_rate_grace=_float(env, "KILN_UPLOAD_RATE_GRACE", 30.0, minimum=0.1),
            redis_timeout=_float(env, "KILN_REDIS_TIMEOUT", 2.0, minimum=0.1),
            redis_max_connections=_int(env, "KILN_REDIS_MAX_CONNECTIONS", 64, minimum=4),
            redis_idle_close=_float(env, "KILN_REDIS_IDLE_CLOSE", 60.0),
            redis_health_interval=_float(env, "KILN_REDIS_HEALTH_INTERVAL", 5.0, minimum=0.1),
            redis_start_wait=_float(env, "KILN_REDIS_START_WAIT", 300.0),
        )


def load_or_create_secret(data_dir: Path) -> str:
    """Return the JWT secret kept in data_dir, creating it (mode 0600) on first use."""
    path = data_dir / "jwt_secret"
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        pass
    data_dir.mkdir(parents=True, exist_ok=True)
    value = secrets.token_urlsafe(48)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:  # another process created it first
        return path.read_text().strip()
    with os.fdopen(fd, "w") as f:
        f.write(value + "\n")
    return value
