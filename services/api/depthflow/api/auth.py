"""Authentication building blocks: JWTs, Argon2id passwords, login throttling.

- Tokens are HS256 JWTs (the algorithm is pinned on decode, so ``alg: none`` or an RS/HS
  confusion is refused) with ``exp``, ``iat``, ``nbf``, ``iss``, ``aud``, ``jti``, ``typ``
  (access or refresh), ``role`` and ``ver`` (the user's token version: a password change
  bumps it and every earlier token stops working).
- Passwords are hashed with Argon2id in a worker thread, at most two at a time, so a login
  flood cannot starve the event loop or the CPU.
- ``IpThrottle`` bounds failed logins per client address in a sliding window; per-user
  lockout lives in the database (``users.failed_logins``/``locked_until``) so it holds
  across restarts and replicas.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import deque
from dataclasses import dataclass
from typing import Literal

import jwt
from argon2 import PasswordHasher, Type
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from depthflow.api.config import ApiSettings, _looks_placeholder

ALGORITHM = "HS256"
Role = Literal["admin", "viewer"]


def as_role(value: str) -> Role:
    """A role read from storage, checked (the database constrains it too)."""
    if value == "admin":
        return "admin"
    if value == "viewer":
        return "viewer"
    raise ValueError(f"unknown role {value!r}")


TokenType = Literal["access", "refresh"]
_REQUIRED_CLAIMS = ["exp", "iat", "nbf", "iss", "aud", "sub", "jti", "typ", "role", "ver"]


class AuthError(Exception):
    """A token or credential was refused; ``reason`` is safe to show the client."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class Claims:
    """What a verified token says."""

    sub: str
    role: Role
    typ: TokenType
    jti: str
    ver: int
    exp: int


@dataclass(frozen=True, slots=True)
class IssuedToken:
    token: str
    jti: str
    expires_at: int


class TokenService:
    """Issues and verifies the gateway's JWTs."""

    def __init__(self, secret: str, settings: ApiSettings) -> None:
        self._secret = secret
        self._issuer = settings.jwt_issuer
        self._audience = settings.jwt_audience
        self._ttl: dict[TokenType, int] = {
            "access": settings.access_token_ttl_s,
            "refresh": settings.refresh_token_ttl_s,
        }

    def __repr__(self) -> str:
        return f"TokenService(issuer={self._issuer!r}, audience={self._audience!r})"

    def issue(
        self, username: str, role: Role, version: int, typ: TokenType, now: float | None = None
    ) -> IssuedToken:
        issued = int(now if now is not None else time.time())
        jti = uuid.uuid4().hex
        exp = issued + self._ttl[typ]
        payload = {
            "sub": username,
            "role": role,
            "typ": typ,
            "ver": version,
            "jti": jti,
            "iss": self._issuer,
            "aud": self._audience,
            "iat": issued,
            "nbf": issued,
            "exp": exp,
        }
        return IssuedToken(jwt.encode(payload, self._secret, algorithm=ALGORITHM), jti, exp)

    def verify(self, token: str, typ: TokenType) -> Claims:
        """Decode and check a token; anything wrong raises ``AuthError``."""
        try:
            payload = jwt.decode(
                token,
                self._secret,
                algorithms=[ALGORITHM],
                audience=self._audience,
                issuer=self._issuer,
                leeway=5,
                options={"require": _REQUIRED_CLAIMS},
            )
        except jwt.ExpiredSignatureError:
            raise AuthError("token expired") from None
        except jwt.PyJWTError:
            raise AuthError("invalid token") from None
        if payload.get("typ") != typ:
            raise AuthError(f"not an {typ} token" if typ == "access" else f"not a {typ} token")
        role = payload.get("role")
        ver = payload.get("ver")
        if role not in ("admin", "viewer") or not isinstance(ver, int) or isinstance(ver, bool):
            raise AuthError("invalid token")
        return Claims(str(payload["sub"]), role, typ, str(payload["jti"]), ver, int(payload["exp"]))


class Passwords:
    """Argon2id hashing off the event loop, bounded so floods cannot take every core."""

    def __init__(self, settings: ApiSettings, concurrency: int = 2) -> None:
        self._hasher = PasswordHasher(
            time_cost=settings.argon2_time_cost,
            memory_cost=settings.argon2_memory_kib,
            parallelism=settings.argon2_parallelism,
            type=Type.ID,
        )
        self._slots = asyncio.Semaphore(concurrency)
        self._dummy: str | None = None

    async def hash(self, password: str) -> str:
        async with self._slots:
            return await asyncio.to_thread(self._hasher.hash, password)

    async def verify(self, stored_hash: str | None, password: str) -> bool:
        """True when ``password`` matches; with no stored hash (unknown user) a dummy hash is
        checked anyway so the answer takes as long either way."""
        if stored_hash is None:
            if self._dummy is None:
                self._dummy = await self.hash(uuid.uuid4().hex)
            stored_hash = self._dummy
        async with self._slots:
            try:
                return await asyncio.to_thread(self._hasher.verify, stored_hash, password)
            except (VerifyMismatchError, VerificationError, InvalidHashError):
                return False

    def needs_rehash(self, stored_hash: str) -> bool:
        return self._hasher.check_needs_rehash(stored_hash)


def password_problem(username: str, password: str) -> str | None:
    """Why a new password is refused, or ``None``."""
    if len(password) < 12:
        return "password must be at least 12 characters"
    if len(password) > 256:
        return "password must be at most 256 characters"
    if username.lower() in password.lower():
        return "password must not contain the user name"
    if _looks_placeholder(password):
        return "password is too common or a placeholder"
    return None


class IpThrottle:
    """Failed logins per client address in a sliding window."""

    def __init__(self, max_failures: int, window_s: float, max_addresses: int = 100_000) -> None:
        self._max = max_failures
        self._window = window_s
        self._max_addresses = max_addresses
        self._failures: dict[str, deque[float]] = {}

    def _recent(self, address: str, now: float) -> deque[float] | None:
        failures = self._failures.get(address)
        if failures is None:
            return None
        while failures and failures[0] <= now - self._window:
            failures.popleft()
        if not failures:
            del self._failures[address]
            return None
        return failures

    def retry_after(self, address: str, now: float | None = None) -> float:
        """Seconds until this address may try again (0 when it may now)."""
        now = time.monotonic() if now is None else now
        failures = self._recent(address, now)
        if failures is None or len(failures) < self._max:
            return 0.0
        return max(0.0, failures[0] + self._window - now)

    def failed(self, address: str, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        if address not in self._failures and len(self._failures) >= self._max_addresses:
            # Bounded memory: forget the oldest address rather than grow without end.
            self._failures.pop(next(iter(self._failures)))
        self._failures.setdefault(address, deque(maxlen=self._max)).append(now)

    def succeeded(self, address: str) -> None:
        self._failures.pop(address, None)
