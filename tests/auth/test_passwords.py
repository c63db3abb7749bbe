"""Password hashing: round trips, refusals, and encodings that must never raise."""

from __future__ import annotations

import base64
import hashlib

import pytest

from auth.passwords import (
    MAX_PASSWORD_BYTES,
    SCRYPT_N,
    SCRYPT_P,
    hash_password,
    needs_rehash,
    verify_password,
)

PASSWORD = "correct horse battery staple"


@pytest.fixture(scope="module")
def encoded() -> str:
    return hash_password(PASSWORD)


def encode_by_hand(password: str, n: int, r: int = 8, p: int = 1, salt: bytes = b"s" * 16) -> str:
    digest = hashlib.scrypt(
        password.encode(), salt=salt, n=n, r=r, p=p, dklen=32, maxmem=128 * r * (n + p + 3)
    )
    b64 = base64.b64encode
    return f"scrypt${n}${r}${p}${b64(salt).decode()}${b64(digest).decode()}"


def test_round_trip(encoded: str) -> None:
    assert verify_password(PASSWORD, encoded)
    assert not needs_rehash(encoded)


def test_encoding_shape(encoded: str) -> None:
    scheme, n, r, p, salt, digest = encoded.split("$")
    assert (scheme, n, r, p) == ("scrypt", "16384", "8", "5")  # OWASP: 2^14, 8, 5
    assert len(base64.b64decode(salt)) == 16
    assert len(base64.b64decode(digest)) == 32


@pytest.mark.parametrize(
    "attempt", ["", "correct horse battery stapl", "Correct horse battery staple", PASSWORD + " "]
)
def test_wrong_password_is_false(encoded: str, attempt: str) -> None:
    assert not verify_password(attempt, encoded)


def test_no_plain_text_in_the_encoding(encoded: str) -> None:
    assert PASSWORD not in encoded
    assert base64.b64encode(PASSWORD.encode()).decode()[:16] not in encoded


def test_salts_differ() -> None:
    first, second = hash_password(PASSWORD), hash_password(PASSWORD)
    assert first != second
    assert first.split("$")[4] != second.split("$")[4]
    assert verify_password(PASSWORD, first) and verify_password(PASSWORD, second)


def test_unicode_password_round_trip() -> None:
    assert verify_password("pässwörd ✓", hash_password("pässwörd ✓"))
    assert not verify_password("passwörd ✓", hash_password("pässwörd ✓"))


def test_too_long_password_is_refused() -> None:
    with pytest.raises(ValueError):
        hash_password("x" * (MAX_PASSWORD_BYTES + 1))
    with pytest.raises(ValueError):  # the limit is on bytes, not characters
        hash_password("é" * (MAX_PASSWORD_BYTES // 2 + 1))
    assert verify_password("x" * MAX_PASSWORD_BYTES, hash_password("x" * MAX_PASSWORD_BYTES))


def test_too_long_password_never_verifies(encoded: str) -> None:
    assert not verify_password(PASSWORD + "x" * MAX_PASSWORD_BYTES, encoded)


def test_unencodable_password() -> None:
    with pytest.raises(ValueError):
        hash_password("\ud800")
    assert not verify_password("\ud800", encode_by_hand("x", n=2**4))


def test_parameters_are_read_from_the_encoding() -> None:
    weaker, stronger = encode_by_hand(PASSWORD, n=2**10), encode_by_hand(PASSWORD, n=2**15)
    assert verify_password(PASSWORD, weaker) and verify_password(PASSWORD, stronger)
    assert not verify_password("wrong", weaker)
    assert needs_rehash(weaker) and needs_rehash(stronger)


def malformed(good: str) -> dict[str, str]:
    scheme, n, r, p, salt, digest = good.split("$")

    def swap(index: int, value: str) -> str:
        fields = [scheme, n, r, p, salt, digest]
        fields[index] = value
        return "$".join(fields)

    return {
        "empty": "",
        "scheme only": "scrypt",
        "other scheme": swap(0, "bcrypt"),
        "five fields": "$".join([scheme, n, r, p, salt]),
        "seven fields": f"{good}${digest}",
        "trailing newline": good + "\n",
        "leading space": " " + good,
        "n not a number": swap(1, "abc"),
        "n negative": swap(1, "-16384"),
        "n not a power of two": swap(1, "16385"),
        "n one": swap(1, "1"),
        "n zero": swap(1, "0"),
        "n needing 128 GiB": swap(1, str(2**30)),
        "n in Arabic-Indic digits": swap(1, "\u0661\u0666\u0663\u0668\u0664"),  # int() reads it
        "r zero": swap(2, "0"),
        "r huge": swap(2, "999"),
        "p zero": swap(3, "0"),
        "p huge": swap(3, "999"),
        "empty salt": swap(4, ""),
        "salt not base64": swap(4, "!!!!"),
        "salt too short": swap(4, base64.b64encode(b"s" * 8).decode()),
        "empty digest": swap(5, ""),
        "digest without padding": swap(5, digest.rstrip("=")),
        # scrypt's shorter outputs are prefixes of longer ones, so this would otherwise verify.
        "digest truncated": swap(5, base64.b64encode(base64.b64decode(digest)[:16]).decode()),
        "plain password": PASSWORD,
    }


# Made with today's parameters, so each case below differs from a valid encoding in one way.
GOOD = encode_by_hand(PASSWORD, n=SCRYPT_N, p=SCRYPT_P, salt=b"0123456789abcdef")


def test_the_unmodified_encoding_verifies() -> None:
    assert verify_password(PASSWORD, GOOD)
    assert not needs_rehash(GOOD)


@pytest.mark.parametrize("bad", malformed(GOOD).values(), ids=malformed(GOOD).keys())
def test_malformed_encodings_are_false_not_errors(bad: str) -> None:
    assert not verify_password(PASSWORD, bad)
    assert needs_rehash(bad)
