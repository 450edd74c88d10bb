"""``/trading``: signals, balance, positions, risk status and execution statistics, from
``signals.v1`` and ``orders.v1`` (and the executor's fills history once it exists)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query

from depthflow.api.deps import ApiDeps, CurrentUser, Deps
from depthflow.api.models import (
    ERRORS,
    BalanceOut,
    ExecutionStatsOut,
    PositionOut,
    PositionsOut,
    RiskStatusOut,
    SignalOut,
    SignalsOut,
)

router = APIRouter(prefix="/trading", tags=["trading"])


def _positions(deps: ApiDeps) -> list[PositionOut]:
    out = []
    for position in deps.views.orders.positions.values():
        if abs(position.qty) < 1e-12:
            continue
        mark = deps.views.market.mid(position.symbol)
        unrealized = (
            (mark - position.avg_price) * position.qty
            if mark is not None and position.avg_price is not None
            else None
        )
        out.append(
            PositionOut(
                exchange=position.exchange,
                symbol=position.symbol,
                side="long" if position.qty > 0 else "short",
                qty=position.qty,
                avg_price=position.avg_price,
                mark_price=mark,
                notional_usdt=abs(position.qty) * mark if mark is not None else None,
                unrealized_pnl=unrealized,
                realized_pnl=position.realized_pnl,
                fees_paid=position.fees_paid,
                updated_ts_us=position.updated_ts_us,
                source=position.source,
            )
        )
    return out


def _exposure(positions: list[PositionOut]) -> float:
    return sum(
        p.notional_usdt if p.notional_usdt is not None else abs(p.qty) * (p.avg_price or 0.0)
        for p in positions
    )


@router.get("/signals", response_model=SignalsOut, responses=ERRORS)
async def signals(
    _: CurrentUser,
    deps: Deps,
    symbol: Annotated[str | None, Query(pattern=r"^[A-Za-z0-9]{2,30}$")] = None,
    side: Annotated[str | None, Query(pattern=r"^(buy|sell|hold)$")] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> SignalsOut:
    """The most recent signals, newest first."""
    view = deps.views.signals
    found = view.query(symbol, side, limit)
    return SignalsOut(
        signals=[SignalOut(**s.model_dump(include=set(SignalOut.model_fields))) for s in found],
        total_seen=view.total,
    )


@router.get("/positions", response_model=PositionsOut, responses=ERRORS)
async def positions(_: CurrentUser, deps: Deps) -> PositionsOut:
    """Open positions with mark price (latest mid) and unrealised PnL."""
    return PositionsOut(positions=_positions(deps))


@router.get("/balance", response_model=BalanceOut, responses=ERRORS)
async def balance(_: CurrentUser, deps: Deps) -> BalanceOut:
    """PnL, fees and exposure from the executor's events; the executor's own reported
    balance when its events carry one."""
    views = deps.views
    open_positions = _positions(deps)
    realized = sum(p.realized_pnl for p in views.orders.positions.values())
    fees = sum(p.fees_paid for p in views.orders.positions.values())
    unrealized = sum(p.unrealized_pnl or 0.0 for p in open_positions)
    return BalanceOut(
        realized_pnl=realized,
        unrealized_pnl=unrealized,
        fees_paid=fees,
        net_pnl=realized + unrealized - fees,
        exposure_usdt=_exposure(open_positions),
        reported=views.orders.balance_detail,
    )


def _limit(config: dict[str, Any], *names: str) -> float | None:
    for name in names:
        value = config.get(name)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    return None


@router.get("/risk-status", response_model=RiskStatusOut, responses=ERRORS)
async def risk_status(_: CurrentUser, deps: Deps) -> RiskStatusOut:
    """Open positions and exposure against the executor's limits (from its config on
    ``control.v1``: ``max_open_positions``, ``max_exposure_usdt``)."""
    open_positions = _positions(deps)
    exposure = _exposure(open_positions)
    control = deps.views.status.controls.get("executor")
    config = control.config if control else {}
    max_positions = _limit(config, "max_open_positions", "MAX_OPEN_POSITIONS")
    max_exposure = _limit(config, "max_exposure_usdt", "MAX_EXPOSURE_USDT")
    breaches = []
    if max_positions is not None and len(open_positions) > max_positions:
        breaches.append(f"open positions {len(open_positions)} > {int(max_positions)}")
    if max_exposure is not None and exposure > max_exposure:
        breaches.append(f"exposure {exposure:.2f} USDT > {max_exposure:.2f}")
    stats = deps.views.orders.stats
    return RiskStatusOut(
        open_positions=len(open_positions),
        exposure_usdt=exposure,
        max_open_positions=int(max_positions) if max_positions is not None else None,
        max_exposure_usdt=max_exposure,
        within_limits=not breaches,
        breaches=breaches,
        rejects=stats.rejects,
        reject_reasons=dict(stats.reject_reasons),
        executor_state=deps.views.status.service("executor").state,
    )


@router.get("/execution-stats", response_model=ExecutionStatsOut, responses=ERRORS)
async def execution_stats(
    _: CurrentUser, deps: Deps, days: Annotated[int, Query(ge=1, le=365)] = 7
) -> ExecutionStatsOut:
    """Orders, fills, rejects, fill rate and fill latency since the gateway started reading
    ``orders.v1``, plus daily history from the executor's fills table once it exists."""
    stats = deps.views.orders.stats
    latencies = sorted(stats.fill_latency_ms)
    p99 = latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))] if latencies else None
    return ExecutionStatsOut(
        orders=stats.orders,
        fills=stats.fills,
        rejects=stats.rejects,
        cancels=stats.cancels,
        fill_rate=(
            sum(1 for e in deps.views.orders.orders.values() if e.status == "filled")
            / len(deps.views.orders.orders)
            if len(deps.views.orders.orders)
            else None
        ),
        filled_qty=stats.filled_qty,
        filled_notional=stats.filled_notional,
        fees=stats.fees,
        avg_fill_latency_ms=sum(latencies) / len(latencies) if latencies else None,
        p99_fill_latency_ms=p99,
        by_status=dict(stats.by_status),
        history=[
            {k: (str(v) if k == "day" else v) for k, v in row.items()}
            for row in await deps.executor.daily_fills(days)
        ],
    )
