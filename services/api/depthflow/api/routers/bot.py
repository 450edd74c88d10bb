"""``/bot``: real status from heartbeats, start/stop and config as desired state on
``control.v1``, and the audit of who changed what."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Body, HTTPException, Path, Query, Request, status

from depthflow.api.control import VersionConflict
from depthflow.api.deps import AdminUser, ApiDeps, CurrentUser, Deps, client_ip
from depthflow.api.models import (
    ADMIN_ERRORS,
    ERRORS,
    AuditEntry,
    BotConfig,
    BotStatus,
    ConfigUpdate,
    ControlOut,
    ControlResult,
    ErrorBody,
    ServiceConfig,
    ServicesRequest,
    ServiceStatusOut,
)

router = APIRouter(prefix="/bot", tags=["bot"])
ServiceName = Annotated[str, Path(pattern=r"^[a-z][a-z0-9_-]{0,31}$")]


def _services(deps: ApiDeps, wanted: list[str] | None) -> list[str]:
    allowed = deps.settings.api.controlled_services
    if wanted is None:
        return list(allowed)
    unknown = sorted(set(wanted) - set(allowed))
    if unknown:
        raise HTTPException(
            status.HTTP_400_BAD_REQUEST,
            detail=f"unknown service(s) {unknown}; controlled: {list(allowed)}",
        )
    return list(dict.fromkeys(wanted))


def _out(message: object) -> ControlOut:
    return ControlOut.model_validate(message, from_attributes=True)


@router.get("/status", response_model=BotStatus, responses=ERRORS)
async def bot_status(_: CurrentUser, deps: Deps) -> BotStatus:
    """Each service's real state from its heartbeats on ``status.v1``; a service whose last
    heartbeat is older than ``API_HEARTBEAT_STALE_S`` is ``down``."""
    view = deps.views.status
    names = sorted(set(deps.settings.api.controlled_services) | view.known_services())
    services = []
    for name in names:
        real = view.service(name)
        desired = view.controls.get(name)
        services.append(
            ServiceStatusOut(
                service=name,
                state=real.state,
                ready=real.ready,
                up=real.up,
                desired_state=desired.desired_state if desired else None,
                desired_version=desired.version if desired else None,
                last_heartbeat_age_s=real.age_s,
                instances=real.instances,  # type: ignore[arg-type]
            )
        )
    controlled = [s for s in services if s.service in deps.settings.api.controlled_services]
    overall: Literal["running", "stopped", "degraded", "down"]
    if all(s.up and s.state == "running" for s in controlled):
        overall = "running"
    elif all(s.state in ("stopped", "down", "unknown") for s in controlled):
        stopped_on_purpose = all(s.desired_state == "stopped" for s in controlled)
        overall = "stopped" if stopped_on_purpose else "down"
    else:
        overall = "degraded"
    return BotStatus(
        state=overall,
        services=services,  # type: ignore[arg-type]
        stale_after_s=deps.settings.api.heartbeat_stale_s,
    )


async def _set_state(
    deps: ApiDeps, services: list[str], state: str, user: str, request: Request
) -> ControlResult:
    changed = []
    for service in services:
        message = await deps.control_writer.change(
            service,
            username=user,
            action=f"set_{state}",
            desired_state=state,  # type: ignore[arg-type]
            client_ip=client_ip(request),
        )
        changed.append(_out(message))
    return ControlResult(changed=changed)


@router.post("/start", response_model=ControlResult, responses=ADMIN_ERRORS)
async def bot_start(
    admin: AdminUser,
    deps: Deps,
    request: Request,
    body: Annotated[ServicesRequest | None, Body()] = None,
) -> ControlResult:
    """Ask services to run (desired state ``running`` on ``control.v1``; admin only)."""
    services = _services(deps, body.services if body else None)
    return await _set_state(deps, services, "running", admin.username, request)


@router.post("/stop", response_model=ControlResult, responses=ADMIN_ERRORS)
async def bot_stop(
    admin: AdminUser,
    deps: Deps,
    request: Request,
    body: Annotated[ServicesRequest | None, Body()] = None,
) -> ControlResult:
    """Ask services to stop (desired state ``stopped`` on ``control.v1``; admin only)."""
    services = _services(deps, body.services if body else None)
    return await _set_state(deps, services, "stopped", admin.username, request)


@router.get("/config", response_model=BotConfig, responses=ERRORS)
async def bot_config(_: CurrentUser, deps: Deps) -> BotConfig:
    """The desired state and config of every controlled service."""
    stored = await deps.controls.all()
    out = []
    for name in deps.settings.api.controlled_services:
        row = stored.get(name)
        seen = deps.views.status.controls.get(name)
        if row and row["version"] > 0 and (seen is None or row["version"] >= seen.version):
            out.append(ServiceConfig(**row))
        elif seen is not None:
            out.append(
                ServiceConfig(
                    service=name,
                    desired_state=seen.desired_state,
                    config=seen.config,
                    version=seen.version,
                    updated_by=seen.updated_by,
                    updated_at=None,
                )
            )
        else:
            out.append(
                ServiceConfig(
                    service=name,
                    desired_state=None,
                    config={},
                    version=0,
                    updated_by=None,
                    updated_at=None,
                )
            )
    return BotConfig(services=out, trading_pairs=list(deps.settings.security.trading_pairs))


@router.put(
    "/config/{service}",
    response_model=ControlOut,
    responses={
        **ADMIN_ERRORS,
        409: {"model": ErrorBody, "description": "expected_version is not current"},
    },
)
async def bot_set_config(
    service: ServiceName, body: ConfigUpdate, admin: AdminUser, deps: Deps, request: Request
) -> ControlOut:
    """Replace a service's config (admin only): published to ``control.v1`` and audited."""
    (service,) = _services(deps, [service])
    try:
        message = await deps.control_writer.change(
            service,
            username=admin.username,
            action="set_config",
            config=dict(body.config),
            expected_version=body.expected_version,
            client_ip=client_ip(request),
        )
    except VersionConflict as exc:
        raise HTTPException(
            status.HTTP_409_CONFLICT,
            detail=f"{service} is at version {exc.current}, not {body.expected_version}",
        ) from None
    return _out(message)


@router.get("/audit", response_model=list[AuditEntry], responses=ERRORS)
async def bot_audit(
    _: CurrentUser,
    deps: Deps,
    service: Annotated[str | None, Query(pattern=r"^[a-z][a-z0-9_-]{0,31}$")] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> list[AuditEntry]:
    """Who changed what and when, newest first."""
    return [AuditEntry(**row) for row in await deps.controls.audit(limit, service)]
