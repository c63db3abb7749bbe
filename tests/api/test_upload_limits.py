"""Per-user upload limits: requests a minute and bytes an hour, 429 `rate_limited` with
Retry-After past them, counted apart for every user; 0 turns a limit off."""

from __future__ import annotations

from pathlib import Path

from tests.client import signed_in
from tests.conftest import corpus, make_settings
from tests.live import ServerFactory


def _served(live_server_factory: ServerFactory, redis_url: str, tmp_path: Path,
            **limits: int) -> str:
    """The address of a server (no worker: uploads are only queued) with these limits, and no
    request rate limit unless one is given."""
    settings = make_settings(redis_url, tmp_path / "data", embedded_worker=False,
                             **{"upload_requests_per_minute": 0, **limits})
    return live_server_factory(settings).url


async def test_uploads_past_the_rate_are_refused_with_a_retry_time(
        redis_url: str, tmp_path: Path, live_server_factory: ServerFactory) -> None:
    url = _served(live_server_factory, redis_url, tmp_path, upload_requests_per_minute=2)
    alice = await signed_in(url, redis_url, "rate-alice")
    bob = await signed_in(url, redis_url, "rate-bob")
    async with alice, bob:
        for _ in range(2):
            assert (await alice.upload(corpus("OBJ/box.obj"))).status_code == 202
        refused = await alice.upload(corpus("OBJ/box.obj"))
        assert refused.status_code == 429
        body = refused.json()
        assert body["error"] == "rate_limited" and 1 <= body["retry_after"] <= 60
        assert refused.headers["Retry-After"] == str(body["retry_after"])
        assert (await alice.get("/api/tasks")).json()["total"] == 2  # nothing queued for it
        # another user's allowance is their own
        assert (await bob.upload(corpus("OBJ/box.obj"))).status_code == 202


async def test_bytes_past_the_hourly_allowance_are_refused(
        redis_url: str, tmp_path: Path, live_server_factory: ServerFactory) -> None:
    box = corpus("OBJ/box.obj").read_bytes()
    url = _served(live_server_factory, redis_url, tmp_path, upload_bytes_per_hour=3 * 1024)
    client = await signed_in(url, redis_url, "bytes-alice")
    async with client:
        assert (await client.upload(("a.obj", box))).status_code == 202
        big = ("big.obj", box + b"# padding\n" * 400)  # about 4.6 KB: over what is left
        refused = await client.upload(big)
        assert refused.status_code == 429 and refused.json()["error"] == "rate_limited"
        assert int(refused.headers["Retry-After"]) >= 1


async def test_limits_of_zero_are_off(
        redis_url: str, tmp_path: Path, live_server_factory: ServerFactory) -> None:
    url = _served(live_server_factory, redis_url, tmp_path, upload_bytes_per_hour=0)
    client = await signed_in(url, redis_url, "free-alice")
    async with client:
        for _ in range(5):
            assert (await client.upload(corpus("OBJ/box.obj"))).status_code == 202


async def test_a_storage_quota_refuses_what_would_pass_it(
        redis_url: str, tmp_path: Path, live_server_factory: ServerFactory) -> None:
    box = corpus("OBJ/box.obj").read_bytes()
    # room for a small file, not a third box
    url = _served(live_server_factory, redis_url, tmp_path, user_quota_bytes=2 * len(box) + 400)
    alice = await signed_in(url, redis_url, "quota-alice")
    bob = await signed_in(url, redis_url, "quota-bob")
    async with alice, bob:
        for name in ("a.obj", "b.obj"):
            assert (await alice.upload((name, box))).status_code == 202
        refused = await alice.upload(("c.obj", box))
        assert refused.status_code == 413
        assert refused.json()["error"] == "quota_exceeded"
        assert "quota" in refused.json()["message"]
        assert (await alice.get("/api/tasks")).json()["total"] == 2
        # what was refused took nothing: a smaller file still fits
        assert (await alice.upload(("d.obj", box[:10]))).status_code == 415  # kept out anyway
        assert (await alice.upload(("e.obj", b"v 0 0 0\nv 1 0 0\nv 0 1 0\nf 1 2 3\n"))
                ).status_code == 202
        assert (await bob.upload(("a.obj", box))).status_code == 202  # a quota of his own
