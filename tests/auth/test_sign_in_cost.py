"""A missing user and a wrong password cost the same (issue 9), counted rather than timed: each
sign-in derives exactly one scrypt key with the stored parameters and makes the same Redis calls,
so a name cannot be told to exist by how long its refusal takes."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from redis.asyncio import Redis

import auth.passwords
from auth.accounts import Accounts
from auth.hasher import PasswordHasher

pytestmark = pytest.mark.chaos  # an attack scenario: user enumeration by timing

PASSWORD = "correct horse battery"


@dataclass
class Derivations:
    """Every scrypt derivation made: (n, r, p, salt bytes, key bytes)."""

    calls: list[tuple[int, int, int, int, int]] = field(default_factory=list)

    def take(self) -> list[tuple[int, int, int, int, int]]:
        taken, self.calls = self.calls, []
        return taken


@pytest.fixture
def derivations(monkeypatch: pytest.MonkeyPatch) -> Iterator[Derivations]:
    seen = Derivations()
    real = auth.passwords._derive

    def counting(secret: bytes, salt: bytes, n: int, r: int, p: int, length: int) -> bytes:
        seen.calls.append((n, r, p, len(salt), length))
        return real(secret, salt, n, r, p, length)

    monkeypatch.setattr(auth.passwords, "_derive", counting)
    yield seen


class CountingRedis:
    """A Redis client that records the name of every command `Accounts` sends through it."""

    def __init__(self, inner: Redis) -> None:
        self.inner = inner
        self.commands: list[str] = []

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self.inner, name)
        if not callable(attribute):
            return attribute

        def call(*args: Any, **kwargs: Any) -> Any:
            self.commands.append(name)
            return attribute(*args, **kwargs)
        return call

    def take(self) -> list[str]:
        taken, self.commands = self.commands, []
        return taken


@pytest.fixture
async def redis(redis_url: str) -> AsyncIterator[CountingRedis]:
    client = Redis.from_url(redis_url)
    yield CountingRedis(client)
    await client.aclose()


@pytest.mark.parametrize("pooled", [True, False], ids=["hashing pool", "default threads"])
async def test_a_missing_user_costs_one_scrypt_like_a_wrong_password(
        redis: CountingRedis, derivations: Derivations, pooled: bool) -> None:
    hasher = PasswordHasher(threads=1, waiting=4) if pooled else None
    try:
        accounts = Accounts(redis, hasher)  # type: ignore[arg-type]
        user = await accounts.create("alice", PASSWORD)
        expected = [(auth.passwords.SCRYPT_N, auth.passwords.SCRYPT_R, auth.passwords.SCRYPT_P,
                     auth.passwords.SALT_BYTES, auth.passwords.HASH_BYTES)]
        assert derivations.take() == expected  # the account's own hash
        redis.take()

        costs: dict[str, tuple[list[tuple[int, int, int, int, int]], list[str]]] = {}
        for case, name, password in [("first missing user", "mallory", PASSWORD),
                                     ("missing user", "trent", PASSWORD),
                                     ("wrong password", "alice", PASSWORD + "!"),
                                     ("another missing user", "eve", "x" * 40),
                                     ("another wrong password", "alice", "")]:
            assert await accounts.authenticate(name, password) is None, case
            costs[case] = (derivations.take(), redis.take())

        for case, (derived, commands) in costs.items():
            assert derived == expected, f"{case}: scrypt derivations {derived}"
            assert commands == ["hget", "hget"], f"{case}: Redis commands {commands}"

        signed_in = await accounts.authenticate("alice", PASSWORD)
        assert signed_in is not None and signed_in.id == user.id
        assert derivations.take() == expected  # the right password: the same one derivation
    finally:
        if hasher is not None:
            hasher.close()
