"""Creating users for tests straight through the real Accounts service."""

from __future__ import annotations

from redis.asyncio import Redis

from auth.accounts import Accounts, User


async def add_user(redis_url: str, name: str, password: str = "correct horse battery",
                   *, admin: bool = False) -> User:
    client = Redis.from_url(redis_url)
    try:
        return await Accounts(client).create(name, password, admin=admin)
    finally:
        await client.aclose()
