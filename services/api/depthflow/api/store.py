"""The api's own tables (schema ``api``, the pool's search_path): users, refresh tokens,
control state and its audit. Every statement is parameterised."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

import asyncpg
import orjson

from depthflow.api.auth import Role, as_role

UTC = dt.UTC


@dataclass(frozen=True, slots=True)
class User:
    username: str
    password_hash: str
    role: Role
    token_version: int
    failed_logins: int
    first_failed_at: dt.datetime | None
    locked_until: dt.datetime | None


_SELECT_USER = (
    "SELECT username, password_hash, role, token_version, failed_logins, first_failed_at, "
    "locked_until FROM users WHERE username = $1"
)


def _user(row: asyncpg.Record | None) -> User | None:
    if row is None:
        return None
    fields = dict(row)
    fields["role"] = as_role(fields["role"])
    return User(**fields)


def _json(value: Any) -> str:
    return orjson.dumps(value).decode()


class UserStore:
    """Users, login failures and refresh tokens."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def get(self, username: str) -> User | None:
        row = await self._pool.fetchrow(_SELECT_USER, username)
        return _user(row)

    async def list(self) -> list[dict[str, Any]]:
        rows = await self._pool.fetch(
            "SELECT username, role, created_at, password_changed_at, locked_until FROM users "
            "ORDER BY username"
        )
        return [dict(r) for r in rows]

    async def create(self, username: str, password_hash: str, role: str) -> bool:
        """Create a user; False when the name is taken."""
        status = await self._pool.execute(
            "INSERT INTO users (username, password_hash, role) VALUES ($1, $2, $3) "
            "ON CONFLICT (username) DO NOTHING",
            username,
            password_hash,
            role,
        )
        return status.endswith(" 1")

    async def record_failure(
        self, username: str, max_failures: int, window_s: int, lockout_s: int
    ) -> dt.datetime | None:
        """Count a failed login in the window; returns ``locked_until`` when this locks it."""
        row = await self._pool.fetchrow(
            """
            UPDATE users SET
              failed_logins = CASE WHEN first_failed_at IS NULL
                                     OR first_failed_at < now() - make_interval(secs => $2)
                                   THEN 1 ELSE failed_logins + 1 END,
              first_failed_at = CASE WHEN first_failed_at IS NULL
                                       OR first_failed_at < now() - make_interval(secs => $2)
                                     THEN now() ELSE first_failed_at END
            WHERE username = $1
            RETURNING failed_logins
            """,
            username,
            float(window_s),
        )
        if row is None or row["failed_logins"] < max_failures:
            return None
        return await self._pool.fetchval(
            "UPDATE users SET locked_until = now() + make_interval(secs => $2), "
            "failed_logins = 0, first_failed_at = NULL WHERE username = $1 RETURNING locked_until",
            username,
            float(lockout_s),
        )

    async def record_success(self, username: str, new_hash: str | None = None) -> None:
        await self._pool.execute(
            "UPDATE users SET failed_logins = 0, first_failed_at = NULL, locked_until = NULL, "
            "password_hash = COALESCE($2, password_hash) WHERE username = $1",
            username,
            new_hash,
        )

    async def change_password(self, username: str, new_hash: str) -> int:
        """Store a new hash, bump the token version and revoke every refresh token."""
        async with self._pool.acquire() as conn, conn.transaction():
            version = await conn.fetchval(
                "UPDATE users SET password_hash = $2, token_version = token_version + 1, "
                "password_changed_at = now() WHERE username = $1 RETURNING token_version",
                username,
                new_hash,
            )
            await conn.execute(
                "UPDATE refresh_tokens SET revoked_at = now() "
                "WHERE username = $1 AND revoked_at IS NULL",
                username,
            )
        return int(version)

    async def store_refresh(self, jti: str, username: str, expires_at: int) -> None:
        await self._pool.execute(
            "INSERT INTO refresh_tokens (jti, username, expires_at) "
            "VALUES ($1, $2, to_timestamp($3))",
            jti,
            username,
            float(expires_at),
        )

    async def consume_refresh(self, jti: str, username: str) -> bool:
        """Revoke a live refresh token (rotation); False when it was already used, revoked or
        expired — a reuse, after which every refresh token of the user is revoked."""
        status = await self._pool.execute(
            "UPDATE refresh_tokens SET revoked_at = now() WHERE jti = $1 AND username = $2 "
            "AND revoked_at IS NULL AND expires_at > now()",
            jti,
            username,
        )
        if status.endswith(" 1"):
            return True
        await self._pool.execute(
            "UPDATE refresh_tokens SET revoked_at = now() "
            "WHERE username = $1 AND revoked_at IS NULL",
            username,
        )
        return False

    async def revoke_refresh(self, jti: str, username: str) -> None:
        await self._pool.execute(
            "UPDATE refresh_tokens SET revoked_at = now() WHERE jti = $1 AND username = $2 "
            "AND revoked_at IS NULL",
            jti,
            username,
        )

    async def auth_event(self, username: str, event: str, client_ip: str | None) -> None:
        await self._pool.execute(
            "INSERT INTO auth_events (username, event, client_ip) VALUES ($1, $2, $3)",
            username[:64],
            event,
            client_ip,
        )


class ControlStore:
    """The desired state last written per service, and the audit of every change."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def all(self) -> dict[str, dict[str, Any]]:
        rows = await self._pool.fetch(
            "SELECT service, desired_state, config, version, updated_by, updated_at "
            "FROM control_state ORDER BY service"
        )
        return {r["service"]: _state_row(r) for r in rows}

    async def audit(self, limit: int, service: str | None = None) -> list[dict[str, Any]]:
        rows = await self._pool.fetch(
            "SELECT id, at, username, action, service, version, before, after, trace_id "
            "FROM control_audit WHERE ($1::text IS NULL OR service = $1) "
            "ORDER BY id DESC LIMIT $2",
            service,
            limit,
        )
        out = []
        for r in rows:
            item = dict(r)
            item["before"] = orjson.loads(item["before"]) if item["before"] else None
            item["after"] = orjson.loads(item["after"])
            out.append(item)
        return out


def _state_row(r: asyncpg.Record) -> dict[str, Any]:
    return {
        "service": r["service"],
        "desired_state": r["desired_state"],
        "config": orjson.loads(r["config"]) if isinstance(r["config"], str) else r["config"],
        "version": r["version"],
        "updated_by": r["updated_by"],
        "updated_at": r["updated_at"],
    }


async def lock_state(conn: asyncpg.Connection, service: str) -> dict[str, Any] | None:
    """The current desired state of ``service``, row-locked until the transaction ends."""
    await conn.execute(
        "INSERT INTO control_state (service, desired_state, version, updated_by) "
        "VALUES ($1, 'running', 0, 'system') ON CONFLICT (service) DO NOTHING",
        service,
    )
    row = await conn.fetchrow(
        "SELECT service, desired_state, config, version, updated_by, updated_at "
        "FROM control_state WHERE service = $1 FOR UPDATE",
        service,
    )
    return _state_row(row) if row is not None else None


async def write_state(
    conn: asyncpg.Connection,
    *,
    service: str,
    desired_state: str,
    config: dict[str, Any],
    version: int,
    username: str,
    action: str,
    before: dict[str, Any] | None,
    client_ip: str | None,
    trace_id: str,
) -> None:
    """Store the new desired state and its audit row (inside the caller's transaction)."""
    await conn.execute(
        "UPDATE control_state SET desired_state = $2, config = $3::jsonb, version = $4, "
        "updated_by = $5, updated_at = now() WHERE service = $1",
        service,
        desired_state,
        _json(config),
        version,
        username,
    )
    after = {"desired_state": desired_state, "config": config, "version": version}
    await conn.execute(
        "INSERT INTO control_audit (username, action, service, version, before, after, "
        "client_ip, trace_id) VALUES ($1, $2, $3, $4, $5::jsonb, $6::jsonb, $7, $8)",
        username,
        action,
        service,
        version,
        _json(before) if before is not None else None,
        _json(after),
        client_ip,
        trace_id,
    )
