"""Access tokens: round trips, and every way a token must be refused."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from typing import Any

import jwt
import pytest

from auth.tokens import (
    ALGORITHM,
    AUDIENCE,
    ISSUER,
    MAX_TOKEN_BYTES,
    REQUIRED_CLAIMS,
    Claims,
    InvalidToken,
    TokenService,
)
from records import ids

pytestmark = pytest.mark.chaos  # an attack or fault scenario (pytest -m chaos)

SECRET = "test-secret-" + "x" * 52  # 64 bytes: long enough that pyjwt never warns, even for HS512
OTHER_SECRET = "other-secret-" + "y" * 51
TTL = 900
START = 1_700_000_000


class FakeClock:
    """A clock the test moves by hand."""

    def __init__(self, now: float = START) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def service(clock: FakeClock) -> TokenService:
    return TokenService(SECRET, TTL, clock=clock)


def good_claims(**changes: Any) -> dict[str, Any]:
    claims: dict[str, Any] = {
        "sub": "user_1",
        "sid": "session-1",
        "jti": ids.new_id(),
        "iat": START,
        "exp": START + TTL,
        "aud": AUDIENCE,
        "iss": ISSUER,
    }
    claims.update(changes)
    return claims


HASHES = {"HS256": hashlib.sha256, "HS384": hashlib.sha384, "HS512": hashlib.sha512}


def b64url(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def segment(value: dict[str, Any]) -> str:
    return b64url(json.dumps(value, separators=(",", ":")).encode())


def sign(claims: dict[str, Any], algorithm: str = ALGORITHM, secret: str = SECRET) -> str:
    # Built by hand rather than with jwt.encode, which refuses some of the claims tried here.
    signing_input = f"{segment({'alg': algorithm, 'typ': 'JWT'})}.{segment(claims)}"
    mac = hmac.new(secret.encode(), signing_input.encode(), HASHES[algorithm])
    return f"{signing_input}.{b64url(mac.digest())}"


def refusal(service: TokenService, token: str) -> str:
    with pytest.raises(InvalidToken) as caught:
        service.decode(token)
    if len(token) > 8:
        assert token not in str(caught.value)
    return caught.value.reason


def test_round_trip(service: TokenService) -> None:
    issued = service.issue("user_1", "session-1")
    assert issued.expires_in == TTL
    assert issued.claims == Claims(
        "user_1", "session-1", issued.claims.token_id, START, START + TTL
    )
    assert ids.is_valid_id(issued.claims.token_id)
    assert service.decode(issued.token) == issued.claims


def test_hand_signed_tokens_are_accepted(service: TokenService) -> None:
    claims = good_claims()
    assert service.decode(sign(claims)).token_id == claims["jti"]


def test_header_is_plain_hs256(service: TokenService) -> None:
    header = jwt.get_unverified_header(service.issue("u", "s").token)
    assert header == {"alg": "HS256", "typ": "JWT"}


def test_each_issue_has_a_new_token_id(service: TokenService) -> None:
    first, second = service.issue("u", "s"), service.issue("u", "s")
    assert first.claims.token_id != second.claims.token_id
    assert first.token != second.token


def test_expired_by_the_injected_clock(service: TokenService, clock: FakeClock) -> None:
    token = service.issue("u", "s").token
    clock.now = START + TTL - 1
    assert service.decode(token).user_id == "u"
    clock.now = START + TTL
    assert refusal(service, token) == "expired"


def test_leeway_applies_to_expiry(clock: FakeClock) -> None:
    service = TokenService(SECRET, TTL, clock=clock, leeway=30)
    token = service.issue("u", "s").token
    clock.now = START + TTL + 29
    assert service.decode(token).session_id == "s"
    clock.now = START + TTL + 30
    assert refusal(service, token) == "expired"


def test_issued_in_the_future_is_refused(service: TokenService) -> None:
    assert refusal(service, sign(good_claims(iat=START + 60, exp=START + 960))) == "not_yet_valid"


def test_a_future_nbf_is_refused(service: TokenService, clock: FakeClock) -> None:
    token = sign(good_claims(nbf=START + 120))
    assert refusal(service, token) == "not_yet_valid"
    clock.now = START + 120
    assert service.decode(token).user_id == "user_1"


def test_a_past_nbf_is_accepted_and_a_malformed_one_refused(service: TokenService) -> None:
    assert service.decode(sign(good_claims(nbf=START - 5))).user_id == "user_1"
    assert refusal(service, sign(good_claims(nbf="soon"))) == "malformed"


def test_alg_none_is_refused(service: TokenService) -> None:
    token = f"{segment({'alg': 'none', 'typ': 'JWT'})}.{segment(good_claims())}."
    assert refusal(service, token) == "wrong_algorithm"


@pytest.mark.parametrize("alg", ["None", "NONE", "hs256", "", "RS256", "ES256", "PS256", "EdDSA"])
def test_other_alg_headers_are_refused(service: TokenService, alg: str) -> None:
    # A real HS256 signature under a header that names another algorithm.
    header = segment({"alg": alg, "typ": "JWT"})
    signature = sign(good_claims()).rsplit(".", 1)[1]
    token = f"{header}.{segment(good_claims())}.{signature}"
    assert refusal(service, token) == "wrong_algorithm"


def test_missing_alg_is_refused(service: TokenService) -> None:
    assert refusal(service, f"{segment({'typ': 'JWT'})}.{segment(good_claims())}.") == (
        "wrong_algorithm"
    )


@pytest.mark.parametrize("alg", ["HS384", "HS512"])
def test_other_hmac_algorithms_with_the_same_secret_are_refused(
    service: TokenService, alg: str
) -> None:
    assert refusal(service, sign(good_claims(), algorithm=alg)) == "wrong_algorithm"


@pytest.mark.parametrize("claim", REQUIRED_CLAIMS)
def test_missing_claim_is_refused(service: TokenService, claim: str) -> None:
    claims = good_claims()
    del claims[claim]
    assert refusal(service, sign(claims)) == "missing_claim"


@pytest.mark.parametrize("claim", REQUIRED_CLAIMS)
def test_null_claim_counts_as_missing(service: TokenService, claim: str) -> None:
    assert refusal(service, sign(good_claims(**{claim: None}))) == "missing_claim"


def test_tampered_payload_is_refused(service: TokenService) -> None:
    header, _, signature = service.issue("user_1", "s").token.split(".")
    forged = f"{header}.{segment(good_claims(sub='admin'))}.{signature}"
    assert refusal(service, forged) == "bad_signature"


def test_stripped_signature_is_refused(service: TokenService) -> None:
    header, payload, _ = service.issue("u", "s").token.split(".")
    assert refusal(service, f"{header}.{payload}.") == "bad_signature"


def test_wrong_secret_is_refused(service: TokenService, clock: FakeClock) -> None:
    other = TokenService(OTHER_SECRET, TTL, clock=clock)
    assert refusal(service, other.issue("u", "s").token) == "bad_signature"


@pytest.mark.parametrize("aud", ["other", "", ["kiln"], ["kiln", "other"], 1])
def test_wrong_audience_is_refused(service: TokenService, aud: Any) -> None:
    # An empty aud is pyjwt's "missing" (it checks the claim is truthy).
    expected = "missing_claim" if aud == "" else "wrong_audience"
    assert refusal(service, sign(good_claims(aud=aud))) == expected


@pytest.mark.parametrize("iss", ["other", "Kiln", ""])
def test_wrong_issuer_is_refused(service: TokenService, iss: str) -> None:
    assert refusal(service, sign(good_claims(iss=iss))) == "wrong_issuer"


BAD_IDS = ["a*", "a:b", "a[0]", "a?", "a b", " a", "a\\b", "a\n", "", "x" * 65, "é", 7, ["a"]]


@pytest.mark.parametrize("claim", ["sub", "sid", "jti"])
@pytest.mark.parametrize("value", BAD_IDS, ids=repr)
def test_ids_outside_the_pattern_are_refused(service: TokenService, claim: str, value: Any) -> None:
    assert refusal(service, sign(good_claims(**{claim: value}))) == "bad_id"


@pytest.mark.parametrize("claim", ["iat", "exp"])
@pytest.mark.parametrize("value", [str(START + 10), float(START + 10), True, [START]], ids=repr)
def test_times_must_be_integers(service: TokenService, claim: str, value: Any) -> None:
    assert refusal(service, sign(good_claims(**{claim: value}))) == "malformed"


@pytest.mark.parametrize(
    "token",
    [
        "",
        "garbage",
        "a.b",
        "a.b.c",
        "..",
        "....",
        "not a token at all",
        "é.é.é",
        "eyJhbGciOiJIUzI1NiJ9.!!!!.AAAA",
        "W10.e30.AAAA",  # header [] and payload {}
        "x" * (MAX_TOKEN_BYTES + 1),
    ],
    ids=lambda token: repr(token[:24]),
)
def test_garbage_is_malformed(service: TokenService, token: str) -> None:
    assert refusal(service, token) == "malformed"


def test_oversized_token_is_refused_even_when_signed(service: TokenService) -> None:
    token = sign(good_claims(pad="p" * MAX_TOKEN_BYTES))
    assert refusal(service, token) == "malformed"


def test_refusal_hides_the_pyjwt_error(service: TokenService) -> None:
    with pytest.raises(InvalidToken) as caught:
        service.decode("a.b.c")
    assert caught.value.__cause__ is None
    assert caught.value.__suppress_context__


@pytest.mark.parametrize("user_id, session_id", [("a:b", "s"), ("u", "*"), ("", "s")])
def test_issue_refuses_bad_ids(service: TokenService, user_id: str, session_id: str) -> None:
    with pytest.raises(ValueError):
        service.issue(user_id, session_id)


def test_short_secret_is_refused() -> None:
    with pytest.raises(ValueError):
        TokenService("too-short", TTL)


@pytest.mark.parametrize("ttl, leeway", [(0, 0), (TTL, -1)])
def test_bad_ttl_or_leeway_is_refused(ttl: int, leeway: int) -> None:
    with pytest.raises(ValueError):
        TokenService(SECRET, ttl, leeway=leeway)


def test_new_ids_fit_the_pattern_that_tokens_enforce() -> None:
    fresh = ids.new_id()
    assert len(fresh) == 22 and ids.is_valid_id(fresh)
    # `re.match` with `$` would accept a trailing newline; the pattern must not.
    assert ids.ID_PATTERN.match("abc\n") is None
    assert not ids.is_valid_id("abc\n")
