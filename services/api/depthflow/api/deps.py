"""The gateway's dependencies, typed, and the ``Annotated`` aliases routers declare.

``ApiDeps`` is built once by ``ApiService.start`` and handed to ``create_app``; routers reach
it through ``Deps``, ``DbPool``, ``CurrentUser`` (any valid access token) and ``AdminUser``
(role admin). A token is checked for signature, algorithm, expiry, issuer, audience and
type, and its ``ver`` against the user's current token version (cached for a few seconds),
so a password change or a deleted user ends every earlier token.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Annotated

import asyncpg
from fastapi import Depends, HTTPException, Request, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from depthflow.api.auth import AuthError, IpThrottle, Passwords, Role, TokenService
from depthflow.api.config import Settings
from depthflow.api.control import ControlWriter
from depthflow.api.feed import TopicFeed, Views
from depthflow.api.metrics import ApiMetrics
from depthflow.api.readmodel import ExecutorReadModel
from depthflow.api.store import ControlStore, UserStore
from depthflow.common.kafka import AsyncProducer


@dataclass(frozen=True, slots=True)
class Principal:
    """The authenticated caller."""

    username: str
    role: Role
    expires_at: int


class UserCache:
    """Role and token version per user, re-read from PostgreSQL every ``ttl_s`` seconds."""

    def __init__(self, users: UserStore, ttl_s: float = 5.0, limit: int = 10_000) -> None:
        self._users = users
        self._ttl = ttl_s
        self._limit = limit
        # username -> (read at, (role, token version) or None for "no such user")
        self._entries: dict[str, tuple[float, tuple[Role, int] | None]] = {}

    async def get(self, username: str) -> tuple[Role, int] | None:
        now = time.monotonic()
        entry = self._entries.get(username)
        if entry is None or now - entry[0] > self._ttl:
            user = await self._users.get(username)
            if len(self._entries) >= self._limit:
                self._entries.clear()
            entry = (now, (user.role, user.token_version) if user else None)
            self._entries[username] = entry
        return entry[1]

    def forget(self, username: str) -> None:
        self._entries.pop(username, None)


@dataclass(frozen=True)
class ApiDeps:
    """Everything the routers use; built and owned by ``ApiService``."""

    settings: Settings
    pool: asyncpg.Pool
    producer: AsyncProducer
    views: Views
    feed: TopicFeed
    tokens: TokenService
    passwords: Passwords
    users: UserStore
    user_cache: UserCache
    controls: ControlStore
    control_writer: ControlWriter
    executor: ExecutorReadModel
    throttle: IpThrottle
    metrics: ApiMetrics


def get_deps(request: Request) -> ApiDeps:
    return request.app.state.deps  # type: ignore[no-any-return]


Deps = Annotated[ApiDeps, Depends(get_deps)]


def get_pool(deps: Deps) -> asyncpg.Pool:
    return deps.pool


DbPool = Annotated[asyncpg.Pool, Depends(get_pool)]

_bearer = HTTPBearer(auto_error=False, description="an access token from POST /auth/login")


def unauthorized(reason: str) -> HTTPException:
    return HTTPException(
        status.HTTP_401_UNAUTHORIZED, detail=reason, headers={"WWW-Authenticate": "Bearer"}
    )


async def authenticate(deps: ApiDeps, token: str) -> Principal:
    """Verify an access token and the user behind it (HTTP and WebSocket share this)."""
    try:
        claims = deps.tokens.verify(token, "access")
    except AuthError as exc:
        raise unauthorized(exc.reason) from None
    current = await deps.user_cache.get(claims.sub)
    if current is None or current[1] != claims.ver:
        raise unauthorized("token revoked")
    return Principal(claims.sub, current[0], claims.exp)


async def current_user(
    deps: Deps,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Principal:
    if credentials is None:
        raise unauthorized("not authenticated")
    return await authenticate(deps, credentials.credentials)


CurrentUser = Annotated[Principal, Depends(current_user)]


async def admin_user(user: CurrentUser) -> Principal:
    if user.role != "admin":
        raise HTTPException(status.HTTP_403_FORBIDDEN, detail="admin role required")
    return user


AdminUser = Annotated[Principal, Depends(admin_user)]


def client_ip(request: Request) -> str:
    return request.client.host if request.client else "unknown"
