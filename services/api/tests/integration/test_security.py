"""No/tampered/expired/foreign tokens → 401, wrong role → 403, brute force throttled and
locked out, refresh rotation, password change revokes, and no secret in responses or logs."""

import time
import uuid

import jwt
import pytest

from depthflow.common.testing import eventually

PROTECTED_GET = [
    "/auth/verify",
    "/bot/status",
    "/bot/config",
    "/bot/audit",
    "/data/pairs",
    "/data/orderbook/BTCUSDT",
    "/data/metrics/BTCUSDT",
    "/data/metrics",
    "/trading/signals",
    "/trading/balance",
    "/trading/positions",
    "/trading/risk-status",
    "/trading/execution-stats",
    "/auth/users",
]
ADMIN_POST = [
    ("POST", "/bot/start"),
    ("POST", "/bot/stop"),
    ("PUT", "/bot/config/strategy"),
    ("POST", "/auth/users"),
]


def _claims(**over):
    now = int(time.time())
    return {
        "sub": "admin",
        "role": "admin",
        "typ": "access",
        "ver": 0,
        "jti": uuid.uuid4().hex,
        "iss": "depthflow-api",
        "aud": "depthflow",
        "iat": now,
        "nbf": now,
        "exp": now + 600,
        **over,
    }


@pytest.mark.parametrize("path", PROTECTED_GET)
def test_no_token_is_401(gateway, path):
    with gateway.client() as c:
        r = c.get(path)
    assert r.status_code == 401, r.text
    assert r.headers["www-authenticate"] == "Bearer"


def test_bad_tokens_are_401(gateway, admin_token):
    header, payload, sig = admin_token.split(".")
    flipped = sig[:-2] + ("AA" if not sig.endswith("AA") else "BB")
    forged_payload = jwt.utils.base64url_encode(
        jwt.utils.base64url_decode(payload).replace(b'"admin"', b'"root0"')
    ).decode()
    bad = {
        "tampered signature": f"{header}.{payload}.{flipped}",
        "tampered payload": f"{header}.{forged_payload}.{sig}",
        "expired": jwt.encode(
            _claims(iat=1, nbf=1, exp=100), gateway.secret_key, algorithm="HS256"
        ),
        "alg none": jwt.encode(_claims(), None, algorithm="none"),
        "other key": jwt.encode(_claims(), "x" * 40, algorithm="HS256"),
        "wrong audience": jwt.encode(_claims(aud="other"), gateway.secret_key, algorithm="HS256"),
        "refresh as access": jwt.encode(
            _claims(typ="refresh"), gateway.secret_key, algorithm="HS256"
        ),
        "unknown user": jwt.encode(_claims(sub="ghost"), gateway.secret_key, algorithm="HS256"),
        "garbage": "not-a-jwt",
    }
    for what, token in bad.items():
        with gateway.client(token) as c:
            r = c.get("/bot/status")
        assert r.status_code == 401, f"{what}: {r.status_code} {r.text}"
    with gateway.client() as c:
        r = c.get("/bot/status", headers={"Authorization": f"Basic {admin_token}"})
    assert r.status_code == 401


@pytest.mark.parametrize(("method", "path"), ADMIN_POST)
def test_viewer_may_read_but_not_control(gateway, viewer_token, method, path):
    with gateway.client(viewer_token) as c:
        assert c.get("/bot/status").status_code == 200
        body = {"config": {"x": 1}} if path.startswith("/bot/config") else {}
        if path == "/auth/users":
            body = {"username": "mallory", "password": "Str0ng-pass-word", "role": "admin"}
        r = c.request(method, path, json=body)
    assert r.status_code == 403, r.text


def test_brute_force_is_locked_out(gateway, admin_token):
    name, password = f"victim{uuid.uuid4().hex[:6]}", "Vict1m-" + uuid.uuid4().hex[:10]
    with gateway.client(admin_token) as c:
        assert (
            c.post("/auth/users", json={"username": name, "password": password}).status_code == 201
        )
    with gateway.client() as c:
        codes = [
            c.post("/auth/login", json={"username": name, "password": f"guess{i}"}).status_code
            for i in range(3)
        ]
        assert codes == [401, 401, 401]
        # locked: even the right password is refused, with Retry-After
        r = c.post("/auth/login", json={"username": name, "password": password})
        assert r.status_code == 429
        assert int(r.headers["retry-after"]) > 0
        assert "locked" in r.json()["detail"]


def test_refresh_rotates_and_reuse_is_refused(gateway):
    pair = gateway.login("admin", gateway.admin_password)
    with gateway.client() as c:
        r = c.post("/auth/refresh", json={"refresh_token": pair["refresh_token"]})
        assert r.status_code == 200, r.text
        new = r.json()
        assert new["refresh_token"] != pair["refresh_token"]
        # the spent token is refused, and its reuse revokes the whole family
        assert (
            c.post("/auth/refresh", json={"refresh_token": pair["refresh_token"]}).status_code
            == 401
        )
        assert (
            c.post("/auth/refresh", json={"refresh_token": new["refresh_token"]}).status_code == 401
        )
        # an access token is not a refresh token
        assert (
            c.post("/auth/refresh", json={"refresh_token": new["access_token"]}).status_code == 401
        )


def test_change_password_revokes_earlier_tokens(gateway, admin_token):
    name, password = f"chg{uuid.uuid4().hex[:6]}", "Chang3-" + uuid.uuid4().hex[:10]
    with gateway.client(admin_token) as c:
        c.post("/auth/users", json={"username": name, "password": password, "role": "viewer"})
    old = gateway.login(name, password)
    new_password = "N3w-" + uuid.uuid4().hex[:14]
    with gateway.client(old["access_token"]) as c:
        assert (
            c.post(
                "/auth/change-password",
                json={
                    "current_password": "wrong-one-entirely",
                    "new_password": new_password,
                },
            ).status_code
            == 400
        )
        assert (
            c.post(
                "/auth/change-password",
                json={
                    "current_password": password,
                    "new_password": "short",
                },
            ).status_code
            == 400
        )
        r = c.post(
            "/auth/change-password",
            json={"current_password": password, "new_password": new_password},
        )
        assert r.status_code == 200, r.text
    fresh = r.json()

    def old_token_refused():
        with gateway.client(old["access_token"]) as c:
            return c.get("/auth/verify").status_code == 401

    eventually(old_token_refused, timeout=10, what="old access token revoked")
    with gateway.client(fresh["access_token"]) as c:
        assert c.get("/auth/verify").status_code == 200
    with gateway.client() as c:
        assert (
            c.post("/auth/refresh", json={"refresh_token": old["refresh_token"]}).status_code == 401
        )
        assert (
            c.post("/auth/login", json={"username": name, "password": password}).status_code == 401
        )
    gateway.login(name, new_password)


def test_cors_allow_list(gateway):
    with gateway.client() as c:
        ok = c.options(
            "/bot/status",
            headers={"Origin": "http://allowed.example", "Access-Control-Request-Method": "GET"},
        )
        bad = c.options(
            "/bot/status",
            headers={"Origin": "http://evil.example", "Access-Control-Request-Method": "GET"},
        )
    assert ok.headers.get("access-control-allow-origin") == "http://allowed.example"
    assert "access-control-allow-origin" not in bad.headers


def test_secrets_never_in_responses_or_logs(gateway, admin_token):
    pair = gateway.login("admin", gateway.admin_password)
    with gateway.client(admin_token) as c:
        bodies = [
            c.get(p).text
            for p in ("/bot/config", "/bot/status", "/openapi.json", "/auth/users", "/bot/audit")
        ]
        bodies.append(c.get("/metrics").text)
        bodies.append(
            c.post(
                "/auth/login", json={"username": "admin", "password": gateway.admin_password + "x"}
            ).text
        )
    for body in bodies:
        assert gateway.secret_key not in body
        assert gateway.admin_password not in body
        assert "$argon2" not in body
    logs = gateway.logs()
    assert "login" in logs or "listening" in logs  # the log is real and being written
    for secret in (
        gateway.secret_key,
        gateway.admin_password,
        pair["access_token"],
        pair["refresh_token"],
        admin_token,
        "$argon2",
    ):
        assert secret not in logs
