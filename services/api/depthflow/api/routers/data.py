"""``/data``: pairs, order books and per-symbol metrics from the latest ``md.book``."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, HTTPException, Path, Query, status

from depthflow.api.deps import CurrentUser, Deps
from depthflow.api.models import (
    ERRORS,
    ErrorBody,
    MetricsOut,
    OrderBookOut,
    Pair,
    PairsOut,
    SymbolMetrics,
)
from depthflow.api.views import BookState, now_us

router = APIRouter(prefix="/data", tags=["data"])
Symbol = Annotated[str, Path(pattern=r"^[A-Za-z0-9]{2,30}$", description="e.g. BTCUSDT")]
ExchangeQ = Annotated[str | None, Query(pattern=r"^(binance|bybit)$")]
NOT_FOUND = {**ERRORS, 404: {"model": ErrorBody, "description": "no book for this symbol yet"}}


def _pick(states: list[BookState], symbol: str) -> BookState:
    if not states:
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail=f"no book for {symbol.upper()} yet")
    return max(states, key=lambda s: s.book.local_ts_us)


@router.get("/pairs", response_model=PairsOut, responses=ERRORS)
async def pairs(_: CurrentUser, deps: Deps) -> PairsOut:
    """Configured trading pairs (``TRADING_PAIRS``) and every symbol with a live book."""
    configured = deps.settings.security.trading_pairs
    seen: dict[str, list[dict[str, object]]] = {}
    for item in deps.views.market.pairs():
        seen.setdefault(str(item["symbol"]), []).append(item)
    out = []
    for symbol in sorted(set(configured) | set(seen)):
        books = seen.get(symbol, [])
        ages = [float(b["age_s"]) for b in books]  # type: ignore[arg-type]
        out.append(
            Pair(
                symbol=symbol,
                configured=symbol in configured,
                exchanges=sorted(str(b["exchange"]) for b in books),
                age_s=min(ages) if ages else None,
            )
        )
    return PairsOut(pairs=out)


@router.get("/orderbook/{symbol}", response_model=OrderBookOut, responses=NOT_FOUND)
async def orderbook(
    symbol: Symbol,
    _: CurrentUser,
    deps: Deps,
    exchange: ExchangeQ = None,
    depth: Annotated[int, Query(ge=1, le=20)] = 20,
) -> OrderBookOut:
    """The latest validated book (top 20 levels) of a symbol."""
    book = _pick(deps.views.market.books_for(symbol, exchange), symbol).book
    return OrderBookOut(
        exchange=book.exchange,
        symbol=book.symbol,
        seq=book.seq,
        exchange_ts_us=book.exchange_ts_us,
        local_ts_us=book.local_ts_us,
        age_s=max(0.0, (now_us() - book.local_ts_us) / 1e6),
        bid_price=book.bid_price,
        bid_qty=book.bid_qty,
        ask_price=book.ask_price,
        ask_qty=book.ask_qty,
        bids=book.bids[:depth],
        asks=book.asks[:depth],
    )


@router.get("/metrics/{symbol}", response_model=SymbolMetrics, responses=NOT_FOUND)
async def symbol_metrics(
    symbol: Symbol, _: CurrentUser, deps: Deps, exchange: ExchangeQ = None
) -> SymbolMetrics:
    """Spread, mid/micro price, depth, imbalance, update rate and book health of a symbol."""
    state = _pick(deps.views.market.books_for(symbol, exchange), symbol)
    return SymbolMetrics(**deps.views.market.metrics(state))


@router.get("/metrics", response_model=MetricsOut, responses=ERRORS)
async def all_metrics(_: CurrentUser, deps: Deps) -> MetricsOut:
    """Metrics of every symbol with a live book."""
    market = deps.views.market
    return MetricsOut(metrics=[SymbolMetrics(**market.metrics(s)) for s in market.books.values()])
