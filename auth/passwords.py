"""Password hashing with scrypt: self-describing encodings checked in constant time.

An encoding reads `scrypt$<n>$<r>$<p>$<base64 salt>$<base64 hash>`. The functions are
CPU-bound (about 80 ms each); async callers run them on the hashing pool (`auth.hasher`).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass

MAX_PASSWORD_BYTES = 1024
# One of OWASP's scrypt configurations (Password Storage Cheat Sheet: N=2^17 r=8 p=1, or the
# same work as 2^16/2, 2^15/3, 2^14/5, 2^13/10): 16 MiB a hash, the least CPU of those listed.
SCRYPT_N = 2**14
SCRYPT_R = 8
SCRYPT_P = 5
SALT_BYTES = 16
HASH_BYTES = 32

# Limits on what an encoding may ask for, so a corrupt record cannot pin a huge amount of
# memory or CPU; they leave room to raise the parameters above later.
_MAX_MEMORY = 256 * 1024**2
_MAX_P = 16
_MAX_FIELD_BYTES = 64
_B64 = r"[A-Za-z0-9+/]+={0,2}"
_ENCODING = re.compile(
    rf"scrypt\$([0-9]{{1,9}})\$([0-9]{{1,3}})\$([0-9]{{1,3}})\$({_B64})\$({_B64})"
)


@dataclass(frozen=True)
class _Scrypt:
    n: int
    r: int
    p: int
    salt: bytes
    digest: bytes


def hash_password(password: str) -> str:
    """Hash a password with a fresh random salt; ValueError if it is over MAX_PASSWORD_BYTES."""
    secret = password.encode("utf-8")  # UnicodeEncodeError (a ValueError) for lone surrogates
    if len(secret) > MAX_PASSWORD_BYTES:
        raise ValueError(f"password is longer than {MAX_PASSWORD_BYTES} bytes")
    salt = secrets.token_bytes(SALT_BYTES)
    digest = _derive(secret, salt, SCRYPT_N, SCRYPT_R, SCRYPT_P, HASH_BYTES)
    return "$".join(
        ("scrypt", str(SCRYPT_N), str(SCRYPT_R), str(SCRYPT_P), _b64(salt), _b64(digest))
    )


def verify_password(password: str, encoded: str) -> bool:
    """True if the password matches the encoding; False for a mismatch or any malformed input."""
    parsed = _parse(encoded)
    if parsed is None:
        return False
    try:
        secret = password.encode("utf-8")
    except UnicodeEncodeError:
        return False
    if len(secret) > MAX_PASSWORD_BYTES:
        return False
    try:
        digest = _derive(secret, parsed.salt, parsed.n, parsed.r, parsed.p, len(parsed.digest))
    except (ValueError, MemoryError):
        return False
    return hmac.compare_digest(digest, parsed.digest)


def needs_rehash(encoded: str) -> bool:
    """True if the encoding is malformed or was made with parameters other than the current ones."""
    parsed = _parse(encoded)
    if parsed is None:
        return True
    current = (SCRYPT_N, SCRYPT_R, SCRYPT_P, SALT_BYTES, HASH_BYTES)
    return (parsed.n, parsed.r, parsed.p, len(parsed.salt), len(parsed.digest)) != current


def _derive(secret: bytes, salt: bytes, n: int, r: int, p: int, length: int) -> bytes:
    # OpenSSL needs 128*r*(n+p+2) bytes and refuses anything over 32 MiB unless told otherwise.
    maxmem = 128 * r * (n + p + 2) + 1024**2
    return hashlib.scrypt(secret, salt=salt, n=n, r=r, p=p, maxmem=maxmem, dklen=length)


def _parse(encoded: str) -> _Scrypt | None:
    match = _ENCODING.fullmatch(encoded)
    if match is None:
        return None
    n, r, p = (int(field) for field in match.group(1, 2, 3))
    if n < 2 or n & (n - 1) or r < 1 or not 1 <= p <= _MAX_P or 128 * r * n > _MAX_MEMORY:
        return None
    try:
        salt = base64.b64decode(match.group(4), validate=True)
        digest = base64.b64decode(match.group(5), validate=True)
    except binascii.Error:
        return None
    # A short digest would still verify, since scrypt's output for a shorter length is a prefix.
    if not SALT_BYTES <= len(salt) <= _MAX_FIELD_BYTES:
        return None
    if not HASH_BYTES <= len(digest) <= _MAX_FIELD_BYTES:
        return None
    return _Scrypt(n, r, p, salt, digest)


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")
