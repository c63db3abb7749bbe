"""User accounts in Redis: names, roles and scrypt password hashes (never the password itself)."""

from __future__ import annotations

import asyncio
import re
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from redis.asyncio import Redis
from redis.asyncio.client import Pipeline

from auth.hasher import HasherBusy, PasswordHasher
from auth.passwords import hash_password, needs_rehash, verify_password
from records import keys
from records.ids import new_id

USER_FIELDS = ["name", "role"]
"""What `Accounts.get` reads of a user's record."""
USERNAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$")
ROLES = ("user", "admin")


class AccountError(ValueError):
    """A user cannot be created as asked; the message says why."""


@dataclass(frozen=True)
class User:
    id: str
    name: str
    role: str

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"


def _text(value: bytes | str | None) -> str:
    if value is None:
        return ""
    return value.decode() if isinstance(value, bytes) else value


# Read in place of a missing user's record, so that a missing user costs the same round trips.
_NO_USER = keys.user("none")  # new_id() makes 22 characters: never a real user


class Accounts:
    """Creates users and checks their passwords; hashing runs off the event loop, on the
    process's PasswordHasher (a one-off tool without one uses asyncio's default threads)."""

    def __init__(self, redis: Redis, hasher: PasswordHasher | None = None) -> None:
        self._redis = redis
        self._hasher = hasher
        self._dummy_hash: str | None = None

    async def create(self, name: str, password: str, *, admin: bool = False) -> User:
        if not USERNAME.match(name):
            raise AccountError(
                "a user name is 1-64 letters, digits, '.', '_', '@' or '-', starting with a "
                "letter or digit"
            )
        if len(password) < 8:
            raise AccountError("a password needs at least 8 characters")
        if self._hasher is None:
            encoded = await asyncio.to_thread(hash_password, password)
        else:
            encoded = await self._hasher.hash(password)
        user = User(id=new_id(), name=name, role="admin" if admin else "user")
        if not await self._redis.hsetnx(keys.USERNAMES, name, user.id):  # type: ignore[misc]
            raise AccountError(f"a user named {name!r} already exists")
        await self._redis.hset(  # type: ignore[misc]
            keys.user(user.id),
            mapping={"name": name, "role": user.role, "password": encoded},
        )
        return user

    async def set_weight(self, name: str, weight: float) -> None:
        """The user's share of the worker slots against other users with waiting work
        (`records.scheduler`; 1 unless set): 2 gets twice the slots of 1."""
        if not (0 < weight <= 1000):
            raise AccountError("a weight is a number above 0, up to 1000")
        user_id = await self._redis.hget(keys.USERNAMES, name)  # type: ignore[misc]
        if user_id is None:
            raise AccountError(f"no user named {name!r}")
        await self._redis.hset(keys.user(_text(user_id)), "weight", repr(weight))  # type: ignore[misc]

    async def get(self, user_id: str) -> User | None:
        raw = await self._redis.hmget(keys.user(user_id), USER_FIELDS)  # type: ignore[misc]
        return self.user_from(user_id, raw)

    @staticmethod
    def queue_get(pipe: Pipeline, user_id: str) -> None:
        """Queue `get`'s read on a pipeline (for a caller with more to ask); its reply goes to
        `user_from`."""
        pipe.hmget(keys.user(user_id), USER_FIELDS)

    @staticmethod
    def user_from(user_id: str, raw: Sequence[Any]) -> User | None:
        name, role = (_text(v) for v in raw)
        if not name:
            return None
        return User(id=user_id, name=name, role=role or "user")

    async def authenticate(self, name: str, password: str) -> User | None:
        """The user if the password is right; an unknown name costs the same time as a wrong one
        (the same Redis round trips and one scrypt). Raises HasherBusy when hashing is full."""
        user_id = _text(await self._redis.hget(keys.USERNAMES, name))  # type: ignore[misc]
        record = keys.user(user_id) if user_id else _NO_USER
        encoded = _text(await self._redis.hget(record, "password"))  # type: ignore[misc]
        if not encoded:
            if self._dummy_hash is None:
                # making the dummy costs one scrypt, as checking against it does from then on
                self._dummy_hash = await self._hash_admitted(secrets.token_hex(8))
            else:
                await self._verify(password, self._dummy_hash)
            return None
        if not await self._verify(password, encoded):
            return None
        if needs_rehash(encoded):
            await self._rehash(record, password)
        return await self.get(user_id)

    async def _rehash(self, record: str, password: str) -> None:
        """Store the password again at today's parameters (it was just found right); skipped
        when the hashing pool is full: the next sign-in tries again."""
        try:
            encoded = await self._hash_admitted(password)
        except HasherBusy:
            return
        await self._redis.hset(record, "password", encoded)  # type: ignore[misc]

    async def _verify(self, password: str, encoded: str) -> bool:
        if self._hasher is None:
            return await asyncio.to_thread(verify_password, password, encoded)
        return await self._hasher.verify(password, encoded)

    async def _hash_admitted(self, password: str) -> str:
        if self._hasher is None:
            return await asyncio.to_thread(hash_password, password)
        return await self._hasher.hash_admitted(password)

    async def count(self) -> int:
        return int(await self._redis.hlen(keys.USERNAMES))  # type: ignore[misc]

    async def ensure_admin(self, name: str = "admin") -> str | None:
        """On a first start with no users, create an admin; returns its new password once."""
        if await self.count():
            return None
        password = secrets.token_urlsafe(15)
        try:
            await self.create(name, password, admin=True)
        except AccountError:
            return None  # another process created it first
        return password
