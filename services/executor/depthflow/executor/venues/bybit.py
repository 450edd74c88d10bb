"""Bybit v5 linear: signed REST (``X-BAPI-*``: HMAC-SHA256 of timestamp + key + recvWindow +
payload) and the private WebSocket (``auth`` then the ``order`` topic)."""

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
from depthflow.executor.fsm import bybit_order_state
from depthflow.executor.ratelimit import VenueRateLimiter, bybit_order_buckets
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
COST = {"requests": 1.0}
UNKNOWN_ORDER = 110001
DUPLICATE_LINK_ID = 110072
RATE_LIMITED = {10006, 10018}


def order_report(o: dict[str, Any], source: str) -> OrderReport:
    """A v5 order object (REST or the ``order`` topic) as a report (cumulative fee too)."""
    filled = float(o.get("cumExecQty") or 0)
    return OrderReport(
        client_order_id=o["orderLinkId"],
        symbol=o["symbol"],
        state=bybit_order_state(o["orderStatus"]),
        venue_order_id=str(o.get("orderId", "")),
        side=str(o.get("side", "")).lower(),
        qty=float(o.get("qty") or 0),
        filled_qty=filled,
        filled_quote=float(o.get("cumExecValue") or 0),
        cum_fee=float(o["cumExecFee"]) if o.get("cumExecFee") not in (None, "") else None,
        source=source,
        ts_us=int(o.get("updatedTime") or 0) * 1000,
    )


class BybitVenue(Venue):
    """Bybit v5 linear (``https://api.bybit.com``, testnet, or the simulator)."""

    name = "bybit"
    exchange = "bybit"
    taker_fee_rate = 0.00055

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
            "bybit",
            base_url,
            VenueRateLimiter(bybit_order_buckets()),
            breaker,
            timeout_s,
            max_wait_s,
            on_wait,
            on_breaker,
        )
        self._specs: dict[str, SymbolSpec] = {}
        self._stream = StreamTask("bybit-private-stream", self._private_stream, on_stream_connected)

    def _auth_headers(self, payload: str) -> dict[str, str]:
        ts = str(int(time.time() * 1000))
        key = self._key.get_secret_value()
        sig = hmac.new(
            self._secret.get_secret_value().encode(),
            (ts + key + str(self._recv) + payload).encode(),
            hashlib.sha256,
        ).hexdigest()
        return {
            "X-BAPI-API-KEY": key,
            "X-BAPI-TIMESTAMP": ts,
            "X-BAPI-SIGN": sig,
            "X-BAPI-RECV-WINDOW": str(self._recv),
            "X-BAPI-SIGN-TYPE": "2",
            "Content-Type": "application/json",
        }

    async def _get(self, path: str, params: dict[str, Any], signed: bool = True) -> HttpResult:
        query = urlencode(params)
        return await self.rest.request(
            "GET",
            path,
            costs=COST,
            query=query,
            headers=self._auth_headers(query) if signed else None,
        )

    async def _post(
        self, path: str, body: dict[str, Any], timeout_s: float | None = None
    ) -> HttpResult:
        raw = orjson.dumps(body).decode()
        return await self.rest.request(
            "POST", path, costs=COST, body=raw, headers=self._auth_headers(raw), timeout_s=timeout_s
        )

    @staticmethod
    def _result(res: HttpResult, what: str) -> Any:
        body = json_or_none(res.text)
        code = body.get("retCode") if isinstance(body, dict) else None
        msg = body.get("retMsg", "") if isinstance(body, dict) else res.text[:200]
        if res.status in (429, 418, 403) or code in RATE_LIMITED:
            raise VenueUnavailable(f"{what}: HTTP {res.status} {code} {msg}")
        if res.status >= 500 or code is None:
            raise VenueUnknown(f"{what}: HTTP {res.status} {code} {msg}")
        if code != 0:
            raise VenueRejected(str(code), str(msg))
        return body["result"]

    async def start(self) -> None:
        self._stream.start()

    async def stop(self) -> None:
        await self._stream.stop()
        await self.rest.close()

    def breaker_states(self) -> dict[str, str]:
        return self.rest.breaker_states()

    async def symbol_spec(self, symbol: str) -> SymbolSpec:
        if symbol not in self._specs:
            res = await self._get(
                "/v5/market/instruments-info", {"category": "linear"}, signed=False
            )
            for i in self._result(res, "instruments")["list"]:
                lot, price = i["lotSizeFilter"], i["priceFilter"]
                self._specs[i["symbol"]] = SymbolSpec(
                    i["symbol"],
                    float(price["tickSize"]),
                    float(lot["qtyStep"]),
                    float(lot["minOrderQty"]),
                    float(lot.get("minNotionalValue") or 0),
                )
        if symbol not in self._specs:
            raise VenueRejected("10001", f"unknown symbol {symbol}")
        return self._specs[symbol]

    async def best_prices(self, symbol: str) -> tuple[float, float]:
        res = await self._get(
            "/v5/market/orderbook",
            {"category": "linear", "symbol": symbol, "limit": 1},
            signed=False,
        )
        book = self._result(res, "orderbook")
        return float(book["b"][0][0]), float(book["a"][0][0])

    async def place_order(self, order: NewOrder) -> OrderReport:
        spec = await self.symbol_spec(order.symbol)
        body: dict[str, Any] = {
            "category": "linear",
            "symbol": order.symbol,
            "side": "Buy" if order.side == "buy" else "Sell",
            "orderType": "Limit" if order.order_type == "LIMIT" else "Market",
            "qty": fmt_step(order.qty, spec.lot_size),
            "orderLinkId": order.client_order_id,
        }
        if order.order_type == "LIMIT":
            body["price"] = fmt_step(order.price, spec.tick_size)
            body["timeInForce"] = order.time_in_force
        res = await self._post("/v5/order/create", body, self._order_timeout)
        try:
            result = self._result(res, "create order")
        except VenueRejected as exc:
            if exc.code == str(DUPLICATE_LINK_ID):
                # The venue already has this client id: our earlier send went through.
                raise VenueUnknown(f"duplicate orderLinkId {order.client_order_id}") from None
            raise
        from depthflow.executor.fsm import OrderState

        return OrderReport(
            order.client_order_id,
            order.symbol,
            OrderState.PLACED,
            venue_order_id=str(result.get("orderId", "")),
            side=order.side,
            qty=order.qty,
            source="rest",
        )

    async def query_order(self, symbol: str, client_order_id: str) -> OrderReport | None:
        res = await self._get(
            "/v5/order/realtime",
            {"category": "linear", "symbol": symbol, "orderLinkId": client_order_id},
        )
        try:
            found = self._result(res, "query order")["list"]
        except VenueRejected as exc:
            if exc.code == str(UNKNOWN_ORDER):
                return None
            raise VenueUnknown(str(exc)) from None
        return order_report(found[0], "query") if found else None

    async def open_orders(self) -> list[OrderReport]:
        res = await self._get("/v5/order/realtime", {"category": "linear", "settleCoin": "USDT"})
        return [order_report(o, "reconcile") for o in self._result(res, "open orders")["list"]]

    async def positions(self) -> list[PositionView]:
        res = await self._get("/v5/position/list", {"category": "linear", "settleCoin": "USDT"})
        out = []
        for p in self._result(res, "positions")["list"]:
            size = float(p.get("size") or 0)
            if size:
                signed = size if p.get("side") == "Buy" else -size
                out.append(PositionView(p["symbol"], signed, float(p.get("avgPrice") or 0)))
        return out

    async def balances(self) -> dict[str, float]:
        res = await self._get("/v5/account/wallet-balance", {"accountType": "UNIFIED"})
        out: dict[str, float] = {}
        for acct in self._result(res, "wallet")["list"]:
            for c in acct.get("coin", []):
                out[c["coin"]] = float(c["walletBalance"])
        return out

    async def _private_stream(self, connected: asyncio.Event) -> None:
        url = f"{self._ws_url}/v5/private"
        async with self.rest.session.ws_connect(url, heartbeat=20) as ws:
            expires = int(time.time() * 1000) + 10_000
            sig = hmac.new(
                self._secret.get_secret_value().encode(),
                f"GET/realtime{expires}".encode(),
                hashlib.sha256,
            ).hexdigest()
            await ws.send_str(
                orjson.dumps(
                    {
                        "op": "auth",
                        "req_id": "auth",
                        "args": [self._key.get_secret_value(), expires, sig],
                    }
                ).decode()
            )
            await ws.send_str(
                orjson.dumps({"op": "subscribe", "req_id": "sub", "args": ["order"]}).decode()
            )
            async for msg in ws:
                if msg.type != aiohttp.WSMsgType.TEXT:
                    if msg.type in (aiohttp.WSMsgType.ERROR, aiohttp.WSMsgType.CLOSED):
                        break
                    continue
                ev = orjson.loads(msg.data)
                if ev.get("op") == "auth" and not ev.get("success"):
                    raise ConnectionError(f"bybit auth refused: {ev.get('ret_msg')}")
                if ev.get("op") == "subscribe" and ev.get("success"):
                    connected.set()
                    if self._stream.on_connected is not None:
                        asyncio.get_running_loop().create_task(self._stream.on_connected())
                if ev.get("topic") == "order":
                    for o in ev.get("data", []):
                        try:
                            await self._emit(order_report(o, "stream"))
                        except Exception:
                            log.exception("order update not applied")

    @property
    def stream_connected(self) -> asyncio.Event:
        return self._stream.connected
