"""A password stored at older scrypt parameters is stored again at today's when it is used."""

from __future__ import annotations

import base64
import hashlib

import redis.asyncio as redis_async

from auth.accounts import Accounts
from auth.hasher import PasswordHasher
from auth.passwords import SCRYPT_N, SCRYPT_P, SCRYPT_R, needs_rehash, verify_password
from records import keys


def _old_encoding(password: str) -> str:
    """As Kiln stored passwords before (scrypt n=2^14 r=8 p=1)."""
    salt = b"0123456789abcdef"
    digest = hashlib.scrypt(password.encode(), salt=salt, n=2**14, r=8, p=1, dklen=32,
                            maxmem=64 * 1024**2)
    encoded = (base64.b64encode(value).decode() for value in (salt, digest))
    return "scrypt$16384$8$1$" + "$".join(encoded)


async def test_a_sign_in_stores_an_old_hash_again_at_todays_parameters(redis_url: str) -> None:
    redis = redis_async.Redis.from_url(redis_url)
    hasher = PasswordHasher(1, 2)
    try:
        accounts = Accounts(redis, hasher)
        user_id = (await accounts.create("alice", "correct horse battery")).id
        old = _old_encoding("correct horse battery")
        await redis.hset(keys.user(user_id), "password", old)
        assert await accounts.authenticate("alice", "wrong horse") is None
        stored = (await redis.hget(keys.user(user_id), "password") or b"").decode()
        assert needs_rehash(stored)  # a wrong password changes nothing
        user = await accounts.authenticate("alice", "correct horse battery")
        assert user is not None and user.id == user_id
        stored = (await redis.hget(keys.user(user_id), "password") or b"").decode()
        assert stored.split("$")[1:4] == [str(SCRYPT_N), str(SCRYPT_R), str(SCRYPT_P)]
        assert verify_password("correct horse battery", stored) and not needs_rehash(stored)
        assert await accounts.authenticate("alice", "correct horse battery") is not None
    finally:
        hasher.close()
        await redis.aclose()
