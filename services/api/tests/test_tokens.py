"""Tokens: the algorithm is pinned; tampered, expired, foreign and wrong-type tokens fail."""

import time

import jwt
import pytest

from depthflow.api.auth import AuthError, IpThrottle, TokenService, password_problem
from depthflow.api.config import ApiSettings

SECRET = "k" * 8 + "0123456789abcdef0123456789abcdef"


@pytest.fixture
def tokens():
    return TokenService(SECRET, ApiSettings())


def test_roundtrip(tokens):
    issued = tokens.issue("alice", "viewer", 3, "access")
    claims = tokens.verify(issued.token, "access")
    assert (claims.sub, claims.role, claims.ver, claims.typ) == ("alice", "viewer", 3, "access")


def test_refresh_is_not_access(tokens):
    refresh = tokens.issue("alice", "admin", 0, "refresh")
    with pytest.raises(AuthError):
        tokens.verify(refresh.token, "access")


def test_expired(tokens):
    old = tokens.issue("alice", "admin", 0, "access", now=time.time() - 3600)
    with pytest.raises(AuthError, match="expired"):
        tokens.verify(old.token, "access")


def test_tampered_payload(tokens):
    token = tokens.issue("alice", "viewer", 0, "access").token
    header, payload, signature = token.split(".")
    forged = jwt.utils.base64url_encode(
        jwt.utils.base64url_decode(payload).replace(b'"viewer"', b'"admin"')
    ).decode()
    with pytest.raises(AuthError):
        tokens.verify(f"{header}.{forged}.{signature}", "access")


def test_alg_none_and_other_keys_refused(tokens):
    claims = {
        "sub": "alice",
        "role": "admin",
        "typ": "access",
        "ver": 0,
        "jti": "x",
        "iss": "depthflow-api",
        "aud": "depthflow",
        "iat": int(time.time()),
        "nbf": int(time.time()),
        "exp": int(time.time()) + 60,
    }
    unsigned = jwt.encode(claims, None, algorithm="none")
    with pytest.raises(AuthError):
        tokens.verify(unsigned, "access")
    other = jwt.encode(claims, "another-secret-another-secret-0000", algorithm="HS256")
    with pytest.raises(AuthError):
        tokens.verify(other, "access")
    hs512 = jwt.encode(claims, SECRET * 2, algorithm="HS512")
    with pytest.raises(AuthError):
        tokens.verify(hs512, "access")
    wrong_aud = jwt.encode({**claims, "aud": "someone-else"}, SECRET, algorithm="HS256")
    with pytest.raises(AuthError):
        tokens.verify(wrong_aud, "access")


def test_ip_throttle_window():
    throttle = IpThrottle(max_failures=3, window_s=10)
    for t in range(3):
        assert throttle.retry_after("1.2.3.4", now=100 + t) == 0
        throttle.failed("1.2.3.4", now=100 + t)
    assert throttle.retry_after("1.2.3.4", now=103) == pytest.approx(7)
    assert throttle.retry_after("5.6.7.8", now=103) == 0
    assert throttle.retry_after("1.2.3.4", now=111) == 0


def test_password_policy():
    assert password_problem("bob", "short")
    assert password_problem("bob", "bobbobbobbobbob")
    assert password_problem("bob", "changeme-changeme")
    assert password_problem("bob", "Kx9-vT2q-Lm7w") is None
