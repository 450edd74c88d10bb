"""``/auth``: login, refresh, logout, verify, change-password, and user management."""

from __future__ import annotations

import math
import time
from typing import Annotated

from fastapi import APIRouter, Body, HTTPException, Request, Response, status

from depthflow.api.auth import AuthError, Role, password_problem
from depthflow.api.deps import AdminUser, ApiDeps, CurrentUser, Deps, client_ip, unauthorized
from depthflow.api.models import (
    ERRORS,
    ChangePasswordRequest,
    CreateUserRequest,
    ErrorBody,
    LoginRequest,
    Message,
    RefreshRequest,
    TokenPair,
    UserOut,
    VerifyOut,
)

router = APIRouter(prefix="/auth", tags=["auth"])
NO_STORE = {"Cache-Control": "no-store"}


def _too_many(retry_after: float, reason: str) -> HTTPException:
    return HTTPException(
        status.HTTP_429_TOO_MANY_REQUESTS,
        detail=reason,
        headers={"Retry-After": str(max(1, math.ceil(retry_after)))},
    )


async def _issue(deps: ApiDeps, username: str, role: Role, version: int) -> TokenPair:
    access = deps.tokens.issue(username, role, version, "access")
    refresh = deps.tokens.issue(username, role, version, "refresh")
    await deps.users.store_refresh(refresh.jti, username, refresh.expires_at)
    now = int(time.time())
    return TokenPair(
        access_token=access.token,
        refresh_token=refresh.token,
        expires_in=access.expires_at - now,
        refresh_expires_in=refresh.expires_at - now,
        role=role,
        username=username,
    )


@router.post(
    "/login",
    response_model=TokenPair,
    responses={
        401: {"model": ErrorBody, "description": "wrong user name or password"},
        429: {"model": ErrorBody, "description": "too many failures; see Retry-After"},
    },
)
async def login(body: LoginRequest, request: Request, response: Response, deps: Deps) -> TokenPair:
    """Exchange a user name and password for an access and a refresh token."""
    response.headers.update(NO_STORE)
    settings = deps.settings.api
    ip = client_ip(request)
    wait = deps.throttle.retry_after(ip)
    if wait > 0:
        raise _too_many(wait, "too many failed logins from this address")
    user = await deps.users.get(body.username)
    now = time.time()
    if user is not None and user.locked_until is not None:
        remaining = user.locked_until.timestamp() - now
        if remaining > 0:
            raise _too_many(remaining, "account temporarily locked after failed logins")
    ok = await deps.passwords.verify(user.password_hash if user else None, body.password)
    if not ok or user is None:
        deps.throttle.failed(ip)
        if user is not None:
            locked = await deps.users.record_failure(
                user.username,
                settings.login_max_failures,
                settings.login_window_s,
                settings.lockout_s,
            )
            await deps.users.auth_event(user.username, "locked" if locked else "login_failed", ip)
        raise unauthorized("wrong user name or password")
    new_hash = (
        await deps.passwords.hash(body.password)
        if deps.passwords.needs_rehash(user.password_hash)
        else None
    )
    await deps.users.record_success(user.username, new_hash)
    await deps.users.auth_event(user.username, "login", ip)
    return await _issue(deps, user.username, user.role, user.token_version)


@router.post(
    "/refresh",
    response_model=TokenPair,
    responses={
        401: {"model": ErrorBody, "description": "refresh token invalid, expired or reused"}
    },
)
async def refresh(body: RefreshRequest, response: Response, deps: Deps) -> TokenPair:
    """Rotate a refresh token: it is spent, and a new pair is issued. Reusing a spent one
    revokes every refresh token of the user."""
    response.headers.update(NO_STORE)
    try:
        claims = deps.tokens.verify(body.refresh_token, "refresh")
    except AuthError as exc:
        raise unauthorized(exc.reason) from None
    user = await deps.users.get(claims.sub)
    if user is None or user.token_version != claims.ver:
        raise unauthorized("token revoked")
    if not await deps.users.consume_refresh(claims.jti, claims.sub):
        raise unauthorized("refresh token already used or revoked")
    return await _issue(deps, user.username, user.role, user.token_version)


@router.post("/logout", response_model=Message, responses=ERRORS)
async def logout(body: RefreshRequest, user: CurrentUser, deps: Deps) -> Message:
    """Revoke a refresh token of the caller."""
    try:
        claims = deps.tokens.verify(body.refresh_token, "refresh")
    except AuthError:
        return Message(detail="logged out")
    if claims.sub == user.username:
        await deps.users.revoke_refresh(claims.jti, claims.sub)
    return Message(detail="logged out")


@router.get("/verify", response_model=VerifyOut, responses=ERRORS)
async def verify(user: CurrentUser) -> VerifyOut:
    """Check the access token; returns who it belongs to."""
    return VerifyOut(username=user.username, role=user.role, expires_at=user.expires_at)


@router.post(
    "/change-password",
    response_model=TokenPair,
    responses={**ERRORS, 400: {"model": ErrorBody, "description": "new password refused"}},
)
async def change_password(
    body: ChangePasswordRequest,
    request: Request,
    response: Response,
    user: CurrentUser,
    deps: Deps,
) -> TokenPair:
    """Change the caller's password. Every earlier token stops working; a new pair is
    returned."""
    response.headers.update(NO_STORE)
    stored = await deps.users.get(user.username)
    if stored is None:
        raise unauthorized("token revoked")
    if not await deps.passwords.verify(stored.password_hash, body.current_password):
        raise HTTPException(status.HTTP_400_BAD_REQUEST, detail="current password is wrong")
    problem = password_problem(user.username, body.new_password)
    if problem is None and body.new_password == body.current_password:
        problem = "new password must differ from the current one"
    if problem:
        raise HTTPException(status.HTTP_400_BAD_REQUEST, detail=problem)
    version = await deps.users.change_password(
        user.username, await deps.passwords.hash(body.new_password)
    )
    deps.user_cache.forget(user.username)
    await deps.users.auth_event(user.username, "password_changed", client_ip(request))
    return await _issue(deps, user.username, stored.role, version)


@router.get("/users", response_model=list[UserOut], responses=ERRORS)
async def list_users(_: AdminUser, deps: Deps) -> list[UserOut]:
    """Every user (admin only)."""
    return [UserOut(**u) for u in await deps.users.list()]


@router.post(
    "/users",
    response_model=UserOut,
    status_code=status.HTTP_201_CREATED,
    responses={
        **ERRORS,
        400: {"model": ErrorBody, "description": "password refused"},
        409: {"model": ErrorBody, "description": "user name taken"},
    },
)
async def create_user(
    body: Annotated[CreateUserRequest, Body()], admin: AdminUser, request: Request, deps: Deps
) -> UserOut:
    """Create a user with a role (admin only)."""
    problem = password_problem(body.username, body.password)
    if problem:
        raise HTTPException(status.HTTP_400_BAD_REQUEST, detail=problem)
    created = await deps.users.create(
        body.username, await deps.passwords.hash(body.password), body.role
    )
    if not created:
        raise HTTPException(status.HTTP_409_CONFLICT, detail="user name taken")
    await deps.users.auth_event(body.username, f"created_by:{admin.username}", client_ip(request))
    return UserOut(username=body.username, role=body.role)
