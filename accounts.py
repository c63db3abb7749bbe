"""User accounts in Redis: names, roles and scrypt password hashes (never the password itself)."""

from __future__ import annotations

import asyncio
import re
import secrets
from dataclasses import dataclass

from redis.asyncio import Redis

import keys
from auth.passwords import hash_password, verify_password
from ids import new_id

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


class Accounts:
    """Creates users and checks their passwords; hashing runs in a thread, off the event loop."""

    def __init__(self, redis: Redis) -> None:
        self._redis = redis
        self._dummy_hash: str | None = None

    async def create(self, name: str, password: str, *, admin: bool = False) -> User:
        if not USERNAME.match(name):
            raise AccountError(
                "a user name is 1-64 letters, digits, '.', '_', '@' or '-', starting with a "
                "letter or digit"
            )
        if len(password) < 8:
            raise AccountError("a password needs at least 8 characters")
        encoded = await asyncio.to_thread(hash_password, password)
        user = User(id=new_id(), name=name, role="admin" if admin else "user")
        if not await self._redis.hsetnx(keys.USERNAMES, name, user.id):  # type: ignore[misc]
            raise AccountError(f"a user named {name!r} already exists")
        await self._redis.hset(  # type: ignore[misc]
            keys.user(user.id),
            mapping={"name": name, "role": user.role, "password": encoded},
        )
        return user

    async def get(self, user_id: str) -> User | None:
        raw = await self._redis.hmget(keys.user(user_id), ["name", "role"])  # type: ignore[misc]
        name, role = (_text(v) for v in raw)
        if not name:
            return None
        return User(id=user_id, name=name, role=role or "user")

    async def authenticate(self, name: str, password: str) -> User | None:
        """The user if the password is right; an unknown name costs the same time as a wrong one."""
        user_id = _text(await self._redis.hget(keys.USERNAMES, name))  # type: ignore[misc]
        encoded = ""
        if user_id:
            encoded = _text(await self._redis.hget(keys.user(user_id), "password"))  # type: ignore[misc]
        if not encoded:
            if self._dummy_hash is None:
                self._dummy_hash = await asyncio.to_thread(hash_password, secrets.token_hex(8))
            await asyncio.to_thread(verify_password, password, self._dummy_hash)
            return None
        if not await asyncio.to_thread(verify_password, password, encoded):
            return None
        return await self.get(user_id)

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
