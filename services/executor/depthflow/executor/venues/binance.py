"""Binance USD-M futures: signed REST (HMAC-SHA256 of the query, ``recvWindow``) and the
listenKey user-data stream (``ORDER_TRADE_UPDATE``)."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import urlencode

import aiohttp
import orjson
from pydantic import SecretStr

from depthflow.executor.breaker import BreakerConfig, BreakerTransition
from depthflow.executor.fsm import binance_order_state
from depthflow.executor.ratelimit import (
    BINANCE_USDM_WEIGHTS,
    VenueRateLimiter,
    binance_usdm_buckets,
)
from depthflow.executor.reconcile import PositionView
from depthflow.executor.risk import SymbolSpec
from depthflow.executor.venues.base import (
    NewOrder,
    OrderReport,
    Venue,
    VenueRejected,
    VenueUnavailable,
    VenueUnknown,
)
from depthflow.executor.venues.common import StreamTask, fmt_step
from depthflow.executor.venues.http import HttpResult, RestEdge, json_or_none

log = logging.getLogger(__name__)
ORDER_COST = {"orders_10s": 1.0, "orders_1m": 1.0}
UNKNOWN_ORDER_CODES = {-2013, -2011}


def _w(endpoint: str) -> dict[str, float]:
    return {"weight": float(BINANCE_USDM_WEIGHTS.get(endpoint, 1))}


def order_report(o: dict[str, Any], source: str) -> OrderReport:
    """An order JSON (REST) as a report."""
    filled = float(o.get("executedQty") or 0)
    quote = float(o.get("cumQuote") or 0)
    if not quote and filled:
        quote = filled * float(o.get("avgPrice") or 0)
    return OrderReport(
        client_order_id=o["clientOrderId"],
        symbol=o["symbol"],
        state=binance_order_state(o["status"]),
        venue_order_id=str(o.get("orderId", "")),
        side=str(o.get("side", "")).lower(),
        qty=float(o.get("origQty") or 0),
        filled_qty=filled,
        filled_quote=quote,
        source=source,
        ts_us=int(o.get("updateTime") or 0) * 1000,
    )


def stream_report(ev: dict[str, Any]) -> OrderReport:
    """An ``ORDER_TRADE_UPDATE`` as a report (a ``TRADE`` carries its execution)."""
    o = ev["o"]
    filled = float(o.get("z") or 0)
    trade = o.get("x") == "TRADE"
    return OrderReport(
        client_order_id=o["c"],
        symbol=o["s"],
        state=binance_order_state(o["X"]),
        venue_order_id=str(o.get("i", "")),
        side=str(o.get("S", "")).lower(),
        qty=float(o.get("q") or 0),
        filled_qty=filled,
        filled_quote=filled * float(o.get("ap") or 0),
        trade_id=str(o.get("t")) if trade else "",
        last_qty=float(o.get("l") or 0) if trade else 0.0,
        last_price=float(o.get("L") or 0) if trade else 0.0,
        last_fee=float(o.get("n") or 0) if trade else None,
        liquidity=("maker" if o.get("m") else "taker") if trade else "",
        source="stream",
        ts_us=int(o.get("T") or ev.get("T") or 0) * 1000,
    )


class BinanceVenue(Venue):
    """Binance USD-M (``https://fapi.binance.com``, testnet, or the simulator)."""

    name = "binance"
    exchange = "binance"

    def __init__(
        self,
        *,
        base_url: str,
        ws_url: str,
        api_key: SecretStr,
        api_secret: SecretStr,
        recv_window_ms: int,
        timeout_s: float,
        breaker: BreakerConfig,
        order_timeout_s: float | None = None,
        max_wait_s: float,
        on_wait: Callable[[float], None] | None = None,
        on_breaker: Callable[[BreakerTransition], None] | None = None,
        on_stream_connected: Callable[[], Any] | None = None,
    ) -> None:
        super().__init__()
        self._key = api_key
        self._secret = api_secret
        self._recv = recv_window_ms
        self._ws_url = ws_url
        self._order_timeout = order_timeout_s
        self.rest = RestEdge(
            "binance",
            base_url,
            VenueRateLimiter(binance_usdm_buckets()),
            breaker,
            timeout_s,
            max_wait_s,
            on_wait,
            on_breaker,
        )
        self._specs: dict[str, SymbolSpec] = {}
        self._stream = StreamTask("binance-user-stream", self._user_stream, on_stream_connected)

    # ---- plumbing ----------------------------------------------------------------------
    def _signed(self, params: dict[str, Any]) -> str:
        q = dict(params)
        q["recvWindow"] = self._recv
        q["timestamp"] = int(time.time() * 1000)
        query = urlencode(q)
        sig = hmac.new(
            self._secret.get_secret_value().encode(), query.encode(), hashlib.sha256
        ).hexdigest()
        return f"{query}&signature={sig}"

    @property
    def _headers(self) -> dict[str, str]:
        return {"X-MBX-APIKEY": self._key.get_secret_value()}

    async def _call(
        self,
        method: str,
        path: str,
        params: dict[str, Any],
        *,
        signed: bool,
        costs: dict[str, float] | None = None,
        timeout_s: float | None = None,
    ) -> HttpResult:
        query = self._signed(params) if signed else urlencode(params)
        return await self.rest.request(
            method,
            path,
            costs=costs or _w(f"{method} {path}"),
            query=query,
            headers=self._headers,
            timeout_s=timeout_s,
        )

    @staticmethod
    def _fail(res: HttpResult, what: str) -> Exception:
        body = json_or_none(res.text)
        code = body.get("code") if isinstance(body, dict) else None
        msg = body.get("msg", "") if isinstance(body, dict) else res.text[:200]
        if res.status in (429, 418):
            return VenueUnavailable(f"{what}: HTTP {res.status} {msg}")
        if res.status >= 500:
            return VenueUnknown(f"{what}: HTTP {res.status} {code} {msg}")
        return VenueRejected(str(code if code is not None else res.status), str(msg))

    async def start(self) -> None:
        self._stream.start()

    async def stop(self) -> None:
        await self._stream.stop()
        await self.rest.close()

    def breaker_states(self) -> dict[str, str]:
        return self.rest.breaker_states()

    # ---- market data -------------------------------------------------------------------
    async def symbol_spec(self, symbol: str) -> SymbolSpec:
        if symbol not in self._specs:
            res = await self._call("GET", "/fapi/v1/exchangeInfo", {}, signed=False)
            if res.status != 200:
                raise self._fail(res, "exchangeInfo")
            for s in orjson.loads(res.text)["symbols"]:
                f = {x["filterType"]: x for x in s["filters"]}
                self._specs[s["symbol"]] = SymbolSpec(
                    s["symbol"],
                    float(f["PRICE_FILTER"]["tickSize"]),
                    float(f["LOT_SIZE"]["stepSize"]),
                    float(f["LOT_SIZE"]["minQty"]),
                    float(f.get("MIN_NOTIONAL", {}).get("notional", 0)),
                )
        if symbol not in self._specs:
            raise VenueRejected("-1121", f"unknown symbol {symbol}")
        return self._specs[symbol]

    async def best_prices(self, symbol: str) -> tuple[float, float]:
        res = await self._call(
            "GET",
            "/fapi/v1/ticker/bookTicker",
            {"symbol": symbol},
            signed=False,
            costs={"weight": 2.0},
        )
        if res.status != 200:
            raise self._fail(res, "bookTicker")
        t = orjson.loads(res.text)
        return float(t["bidPrice"]), float(t["askPrice"])

    # ---- trading -----------------------------------------------------------------------
    async def place_order(self, order: NewOrder) -> OrderReport:
        spec = await self.symbol_spec(order.symbol)
        params: dict[str, Any] = {
            "symbol": order.symbol,
            "side": order.side.upper(),
            "type": order.order_type,
            "quantity": fmt_step(order.qty, spec.lot_size),
            "newClientOrderId": order.client_order_id,
            "newOrderRespType": "ACK",
        }
        if order.order_type == "LIMIT":
            params["timeInForce"] = order.time_in_force
            params["price"] = fmt_step(order.price, spec.tick_size)
        res = await self._call(
            "POST",
            "/fapi/v1/order",
            params,
            signed=True,
            costs={**_w("POST /fapi/v1/order"), **ORDER_COST},
            timeout_s=self._order_timeout,
        )
        if res.status == 200:
            return order_report(orjson.loads(res.text), "rest")
        raise self._fail(res, "new order")

    async def query_order(self, symbol: str, client_order_id: str) -> OrderReport | None:
        res = await self._call(
            "GET",
            "/fapi/v1/order",
            {"symbol": symbol, "origClientOrderId": client_order_id},
            signed=True,
        )
        if res.status == 200:
            return order_report(orjson.loads(res.text), "query")
        body = json_or_none(res.text)
        if isinstance(body, dict) and body.get("code") in UNKNOWN_ORDER_CODES:
            return None
        err = self._fail(res, "query order")
        raise err if not isinstance(err, VenueRejected) else VenueUnknown(str(err))

    async def open_orders(self) -> list[OrderReport]:
        res = await self._call(
            "GET", "/fapi/v1/openOrders", {}, signed=True, costs={"weight": 40.0}
        )
        if res.status != 200:
            raise self._fail(res, "open orders")
        return [order_report(o, "reconcile") for o in orjson.loads(res.text)]

    async def positions(self) -> list[PositionView]:
        res = await self._call("GET", "/fapi/v2/positionRisk", {}, signed=True)
        if res.status != 200:
            raise self._fail(res, "positionRisk")
        return [
            PositionView(p["symbol"], float(p["positionAmt"]), float(p["entryPrice"]))
            for p in orjson.loads(res.text)
            if float(p["positionAmt"]) != 0
        ]

    async def balances(self) -> dict[str, float]:
        res = await self._call("GET", "/fapi/v2/balance", {}, signed=True)
        if res.status != 200:
            raise self._fail(res, "balance")
        return {b["asset"]: float(b["balance"]) for b in orjson.loads(res.text)}

    # ---- user-data stream --------------------------------------------------------------
    async def _user_stream(self, connected: asyncio.Event) -> None:
        res = await self._call("POST", "/fapi/v1/listenKey", {}, signed=False)
        if res.status != 200:
            raise self._fail(res, "listenKey")
        key = orjson.loads(res.text)["listenKey"]
        async with self.rest.session.ws_connect(
            f"{self._ws_url}/ws/{key}", heartbeat=30, timeout=aiohttp.ClientWSTimeout(ws_close=5)
        ) as ws:
            connected.set()
            if self._stream.on_connected is not None:
                asyncio.get_running_loop().create_task(self._stream.on_connected())
            last_keepalive = time.monotonic()
            async for msg in ws:
                if msg.type != aiohttp.WSMsgType.TEXT:
                    if msg.type in (aiohttp.WSMsgType.ERROR, aiohttp.WSMsgType.CLOSED):
                        break
                    continue
                ev = orjson.loads(msg.data)
                if ev.get("e") == "ORDER_TRADE_UPDATE":
                    try:
                        await self._emit(stream_report(ev))
                    except Exception:
                        log.exception("order update not applied", extra={"event": msg.data[:500]})
                elif ev.get("e") == "listenKeyExpired":
                    break
                if time.monotonic() - last_keepalive > 30 * 60:
                    await self._call("PUT", "/fapi/v1/listenKey", {}, signed=False)
                    last_keepalive = time.monotonic()

    @property
    def stream_connected(self) -> asyncio.Event:
        return self._stream.connected
