"""Bybit v5 (linear) protocol: ``/v5/...`` REST with ``X-BAPI-*`` HMAC auth, and the
``/v5/public/linear`` and ``/v5/private`` WebSockets.

Responses are ``{"retCode", "retMsg", "result", "retExtInfo", "time"}``; errors keep
HTTP 200 and a non-zero ``retCode``, as the exchange does.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import random
import time
import uuid
from typing import TYPE_CHECKING, Any

import orjson
from aiohttp import WSMsgType, web

from depthflow.sim.book import ASK, BID
from depthflow.sim.publishers import BYBIT_DEPTHS
from depthflow.sim.streams import Connection
from depthflow.sim.trading import Account, AccountEvent, Order, TradingError

if TYPE_CHECKING:
    from depthflow.sim.app import Simulator

_TRADING_ERRORS: dict[str, tuple[int, str]] = {
    "duplicate_client_id": (110072, "OrderLinkedID is duplicate"),
    "reduce_only_rejected": (110017, "current position is zero, cannot fix reduce-only order qty"),
    "insufficient_margin": (110007, "ab not enough for new order"),
    "unknown_order": (110001, "order not exists or too late to cancel"),
    "unknown_symbol": (10001, "params error: symbol invalid"),
    "post_only_would_match": (10001, "params error: PostOnly order would take liquidity"),
    "rejected": (10016, "Internal system error."),
}
_STATUS = {
    "NEW": "New",
    "PARTIALLY_FILLED": "PartiallyFilled",
    "FILLED": "Filled",
    "CANCELED": "Cancelled",
    "EXPIRED": "Cancelled",
}
_TIF = {"GTC": "GTC", "IOC": "IOC", "FOK": "FOK", "PostOnly": "GTX"}
_TIF_BACK = {v: k for k, v in _TIF.items()}


class BybitError(Exception):
    def __init__(self, code: int, msg: str) -> None:
        super().__init__(msg)
        self.code, self.msg = code, msg


def _now() -> int:
    return int(time.time() * 1000)


def _reply(code: int, msg: str, result: Any = None, status: int = 200) -> web.Response:
    return web.Response(
        body=orjson.dumps(
            {
                "retCode": code,
                "retMsg": msg,
                "result": {} if result is None else result,
                "retExtInfo": {},
                "time": _now(),
            }
        ),
        status=status,
        content_type="application/json",
    )


def bybit_order_id(order_id: int) -> str:
    return str(uuid.UUID(int=order_id))


def _parse_order_id(text: str) -> int | None:
    try:
        return uuid.UUID(text).int
    except ValueError:
        return None


def add_routes(app: web.Application, sim: Simulator) -> None:
    rng = random.Random(sim.settings.seed + 11)
    private: dict[int, Connection] = {}

    def endpoint(signed: bool = False) -> Any:
        def wrap(handler: Any) -> Any:
            async def run(request: web.Request) -> web.Response:
                response = await answer(request)
                delay = sim.faults.slow_response_ms
                if delay:  # the request took effect; only its answer is late
                    await asyncio.sleep(delay / 1000)
                return response

            async def answer(request: web.Request) -> web.Response:
                faults = sim.faults
                if faults.force_status in (429, 418):
                    return _reply(10006, "Too many visits!", status=faults.force_status)
                if faults.force_status == 503:
                    return _reply(10016, "Internal system error.", status=503)
                try:
                    raw = (await request.read()).decode(errors="replace")
                    params: dict[str, Any] = dict(request.query)
                    if request.method == "POST":
                        try:
                            body = orjson.loads(raw or "{}")
                        except orjson.JSONDecodeError:
                            raise BybitError(10001, "params error: invalid JSON body") from None
                        if not isinstance(body, dict):
                            raise BybitError(10001, "params error: body must be an object")
                        params.update(body)
                    acct = authenticate(request, raw) if signed else None
                    result = await handler(request, params, acct)
                    if isinstance(result, web.Response):
                        return result
                    return _reply(0, "OK", result)
                except BybitError as exc:
                    return _reply(exc.code, exc.msg)
                except TradingError as exc:
                    code, msg = _TRADING_ERRORS.get(exc.kind, (10016, exc.kind))
                    return _reply(code, msg)

            return run

        return wrap

    def authenticate(request: web.Request, raw_body: str) -> Account:
        h = request.headers
        key = h.get("X-BAPI-API-KEY", "")
        acct = sim.exchange.accounts.get(key)
        if acct is None:
            raise BybitError(10003, "API key is invalid.")
        ts, sign = h.get("X-BAPI-TIMESTAMP", ""), h.get("X-BAPI-SIGN", "")
        recv = h.get("X-BAPI-RECV-WINDOW", "5000")
        if not ts.isdigit() or not recv.isdigit():
            raise BybitError(
                10001, "params error: X-BAPI-TIMESTAMP and X-BAPI-RECV-WINDOW must be integers"
            )
        server = _now()
        if not (server - int(recv) <= int(ts) < server + 1000):
            raise BybitError(
                10002,
                f"invalid request, please check your server timestamp "
                f"or recv_window param. req_timestamp[{ts}],"
                f"server_timestamp[{server}],recv_window[{recv}]",
            )
        payload = request.query_string if request.method == "GET" else raw_body
        origin = ts + key + recv + payload
        expected = hmac.new(acct.secret.encode(), origin.encode(), hashlib.sha256).hexdigest()
        if not sign or not hmac.compare_digest(expected, sign.lower()):
            raise BybitError(10004, f"error sign! origin_string[{origin}]")
        return acct

    def market_of(params: dict[str, Any], required: bool = True) -> Any:
        if params.get("category", "linear") != "linear":
            raise BybitError(10001, "params error: category only support linear")
        symbol = params.get("symbol")
        if not symbol:
            if required:
                raise BybitError(10001, "params error: symbol is required")
            return None
        market = sim.markets.get(str(symbol).upper())
        if market is None:
            raise BybitError(10001, "params error: symbol invalid")
        return market

    # ---- market data --------------------------------------------------------------------
    @endpoint()
    async def server_time(_r: web.Request, _p: dict[str, Any], _a: Any) -> Any:
        now = time.time()
        return {"timeSecond": str(int(now)), "timeNano": str(int(now * 1e9))}

    @endpoint()
    async def orderbook(_r: web.Request, p: dict[str, Any], _a: Any) -> Any:
        market = market_of(p)
        try:
            limit = int(p.get("limit") or 25)
        except ValueError:
            raise BybitError(10001, "params error: limit invalid") from None
        if not 1 <= limit <= 500:
            raise BybitError(10001, "params error: limit must be in [1, 500]")
        uid, bids, asks = market.snapshot(limit)
        ps, qs = market.instrument.price_str, market.instrument.qty_str
        return {
            "s": market.instrument.symbol,
            "b": [[ps(x), qs(q)] for x, q in bids],
            "a": [[ps(x), qs(q)] for x, q in asks],
            "ts": _now(),
            "u": uid,
            "seq": uid,
            "cts": market.last_ts or _now(),
        }

    @endpoint()
    async def instruments(_r: web.Request, p: dict[str, Any], _a: Any) -> Any:
        m = market_of(p, required=False)
        items = []
        for market in [m] if m else sim.markets.values():
            inst = market.instrument
            items.append(
                {
                    "symbol": inst.symbol,
                    "contractType": "LinearPerpetual",
                    "status": "Trading",
                    "baseCoin": inst.base,
                    "quoteCoin": "USDT",
                    "settleCoin": "USDT",
                    "launchTime": "1585526400000",
                    "deliveryTime": "0",
                    "priceScale": str(inst.price_dp),
                    "leverageFilter": {
                        "minLeverage": "1",
                        "maxLeverage": "100.00",
                        "leverageStep": "0.01",
                    },
                    "priceFilter": {
                        "minPrice": inst.tick_size,
                        "maxPrice": "1999999.80",
                        "tickSize": inst.tick_size,
                    },
                    "lotSizeFilter": {
                        "maxOrderQty": inst.qty_str(10**6),
                        "minOrderQty": inst.lot_size,
                        "qtyStep": inst.lot_size,
                        "postOnlyMaxOrderQty": inst.qty_str(10**6),
                        "minNotionalValue": "5",
                    },
                    "unifiedMarginTrade": True,
                    "fundingInterval": 480,
                    "copyTrading": "both",
                }
            )
        return {"category": "linear", "list": items, "nextPageCursor": ""}

    # ---- trading ------------------------------------------------------------------------
    def order_json(o: Order) -> dict[str, Any]:
        inst = sim.markets[o.symbol].instrument
        ex = sim.exchange
        avg = (
            str((ex.price_dec(o.symbol, o.quote) / o.filled).quantize(inst.tick_decimal / 10))
            if o.filled
            else ""
        )
        leaves = o.qty - o.filled if o.is_open else 0
        return {
            "orderId": bybit_order_id(o.order_id),
            "orderLinkId": o.client_id,
            "blockTradeId": "",
            "symbol": o.symbol,
            "price": inst.price_str(o.price) if o.price else "0",
            "qty": inst.qty_str(o.qty),
            "side": "Buy" if o.side == BID else "Sell",
            "isLeverage": "",
            "positionIdx": 0,
            "orderStatus": _STATUS[o.status],
            "cancelType": "CancelByUser" if o.status == "CANCELED" else "UNKNOWN",
            "rejectReason": "EC_NoError",
            "avgPrice": avg,
            "leavesQty": inst.qty_str(leaves),
            "leavesValue": str(ex.qty_dec(o.symbol, leaves) * ex.price_dec(o.symbol, o.price or 0)),
            "cumExecQty": inst.qty_str(o.filled),
            "cumExecValue": inst.quote_str(o.quote),
            "cumExecFee": str(o.fees),
            "timeInForce": _TIF_BACK.get(o.tif, "GTC"),
            "orderType": "Limit" if o.type == "LIMIT" else "Market",
            "stopOrderType": "",
            "orderIv": "",
            "triggerPrice": "",
            "takeProfit": "",
            "stopLoss": "",
            "tpTriggerBy": "",
            "slTriggerBy": "",
            "triggerDirection": 0,
            "triggerBy": "",
            "lastPriceOnCreated": "",
            "reduceOnly": o.reduce_only,
            "closeOnTrigger": False,
            "smpType": "None",
            "smpGroup": 0,
            "smpOrderId": "",
            "tpslMode": "",
            "tpLimitPrice": "",
            "slLimitPrice": "",
            "placeType": "",
            "createdTime": str(o.created),
            "updatedTime": str(o.updated),
        }

    @endpoint(signed=True)
    async def create(_r: web.Request, p: dict[str, Any], acct: Account) -> Any:
        market = market_of(p)
        inst = market.instrument
        side = {"Buy": BID, "Sell": ASK}.get(p.get("side", ""))
        if side is None:
            raise BybitError(10001, "params error: side invalid")
        otype = {"Limit": "LIMIT", "Market": "MARKET"}.get(p.get("orderType", ""))
        if otype is None:
            raise BybitError(10001, "params error: orderType invalid")
        qty = inst.to_lots(str(p.get("qty", "")))
        if qty is None:
            raise BybitError(10001, "params error: qty invalid")
        price = None
        tif = "IOC" if otype == "MARKET" else _TIF.get(p.get("timeInForce") or "GTC")
        if tif is None:
            raise BybitError(10001, "params error: timeInForce invalid")
        if otype == "LIMIT":
            price = inst.to_ticks(str(p.get("price", "")))
            if price is None:
                raise BybitError(10001, "params error: price invalid")
        reduce_only = p.get("reduceOnly", False)
        if not isinstance(reduce_only, bool):
            raise BybitError(10001, "params error: reduceOnly invalid")
        link = p.get("orderLinkId") or f"sim-{uuid.uuid4().hex[:16]}"
        if not isinstance(link, str) or len(link) > 36:
            raise BybitError(10001, "params error: orderLinkId invalid")
        if any(o.client_id == link for o in acct.orders.values()):
            raise TradingError("duplicate_client_id")
        faults = sim.faults
        if faults.reject_rate and rng.random() < faults.reject_rate:
            raise TradingError("rejected")
        order = sim.exchange.place(
            acct, inst.symbol, side, otype, qty, price, tif, reduce_only, link, "bybit", _now()
        )
        sim.exchange.flush()
        if faults.unknown_503_rate and rng.random() < faults.unknown_503_rate:
            return web.Response(status=503, text="Service Unavailable")
        return {"orderId": bybit_order_id(order.order_id), "orderLinkId": order.client_id}

    def order_ref(p: dict[str, Any]) -> tuple[int | None, str | None]:
        oid, link = p.get("orderId"), p.get("orderLinkId")
        if not oid and not link:
            raise BybitError(10001, "params error: orderId or orderLinkId is required")
        if oid:
            parsed = _parse_order_id(str(oid))
            if parsed is None:
                raise TradingError("unknown_order")
            return parsed, None
        return None, str(link)

    @endpoint(signed=True)
    async def cancel(_r: web.Request, p: dict[str, Any], acct: Account) -> Any:
        market = market_of(p)
        oid, link = order_ref(p)
        order = sim.exchange.cancel(acct, market.instrument.symbol, oid, link, _now())
        sim.exchange.flush()
        return {"orderId": bybit_order_id(order.order_id), "orderLinkId": order.client_id}

    @endpoint(signed=True)
    async def realtime(_r: web.Request, p: dict[str, Any], acct: Account) -> Any:
        market = market_of(p, required=False)
        symbol = market.instrument.symbol if market else None
        if p.get("orderId") or p.get("orderLinkId"):
            oid, link = order_ref(p)
            orders = [
                o
                for o in acct.orders.values()
                if (oid is None or o.order_id == oid)
                and (link is None or o.client_id == link)
                and (symbol is None or o.symbol == symbol)
            ]
        elif str(p.get("openOnly", "0")) == "0":
            orders = acct.open_orders(symbol)
        else:
            orders = [o for o in acct.orders.values() if symbol is None or o.symbol == symbol][-50:]
        return {
            "list": [order_json(o) for o in sorted(orders, key=lambda o: -o.order_id)],
            "nextPageCursor": "",
            "category": "linear",
        }

    def position_json(acct: Account, sym: str) -> dict[str, Any]:
        ex = sim.exchange
        pos = acct.position(sym)
        value = abs(pos.qty) * pos.entry
        return {
            "positionIdx": 0,
            "riskId": 1,
            "riskLimitValue": "2000000",
            "symbol": sym,
            "side": "Buy" if pos.qty > 0 else "Sell" if pos.qty < 0 else "",
            "size": str(abs(pos.qty)),
            "avgPrice": str(pos.entry),
            "positionValue": str(value),
            "tradeMode": 0,
            "autoAddMargin": 0,
            "positionStatus": "Normal",
            "leverage": str(ex.leverage),
            "markPrice": str(ex.mark(sym)),
            "liqPrice": "",
            "bustPrice": "",
            "positionIM": str(value / ex.leverage),
            "positionMM": "0",
            "positionBalance": "0",
            "tpslMode": "Full",
            "takeProfit": "0",
            "stopLoss": "0",
            "trailingStop": "0",
            "unrealisedPnl": str(ex.unrealized(acct, sym)),
            "curRealisedPnl": str(pos.realized),
            "cumRealisedPnl": str(pos.realized),
            "adlRankIndicator": 0,
            "createdTime": str(pos.updated),
            "updatedTime": str(pos.updated),
            "seq": sim.markets[sym].update_id,
            "isReduceOnly": False,
        }

    @endpoint(signed=True)
    async def positions(_r: web.Request, p: dict[str, Any], acct: Account) -> Any:
        market = market_of(p, required=False)
        if market is None and p.get("settleCoin") != "USDT":
            raise BybitError(10001, "params error: symbol or settleCoin is required")
        syms = [market.instrument.symbol] if market else list(sim.markets)
        return {
            "list": [position_json(acct, s) for s in syms],
            "nextPageCursor": "",
            "category": "linear",
        }

    def wallet_json(acct: Account) -> dict[str, Any]:
        ex = sim.exchange
        upnl = sum((ex.unrealized(acct, s) for s in acct.positions), ex.position_margin(acct) * 0)
        equity = acct.wallet + upnl
        avail = ex.available(acct)
        realized = sum((p.realized for p in acct.positions.values()), upnl * 0)
        return {
            "totalEquity": str(equity),
            "accountIMRate": "0",
            "totalMarginBalance": str(equity),
            "totalInitialMargin": str(ex.position_margin(acct) + ex.order_margin(acct)),
            "accountType": "UNIFIED",
            "totalAvailableBalance": str(avail),
            "accountMMRate": "0",
            "totalPerpUPL": str(upnl),
            "totalWalletBalance": str(acct.wallet),
            "accountLTV": "0",
            "totalMaintenanceMargin": "0",
            "coin": [
                {
                    "availableToBorrow": "",
                    "bonus": "0",
                    "accruedInterest": "0",
                    "availableToWithdraw": str(avail),
                    "totalOrderIM": str(ex.order_margin(acct)),
                    "equity": str(equity),
                    "totalPositionMM": "0",
                    "usdValue": str(equity),
                    "unrealisedPnl": str(upnl),
                    "collateralSwitch": True,
                    "spotHedgingQty": "0",
                    "borrowAmount": "0",
                    "totalPositionIM": str(ex.position_margin(acct)),
                    "walletBalance": str(acct.wallet),
                    "cumRealisedPnl": str(realized),
                    "locked": "0",
                    "marginCollateral": True,
                    "coin": "USDT",
                }
            ],
        }

    @endpoint(signed=True)
    async def wallet(_r: web.Request, p: dict[str, Any], acct: Account) -> Any:
        if p.get("accountType") not in ("UNIFIED", "CONTRACT"):
            raise BybitError(10001, "params error: accountType invalid")
        return {"list": [wallet_json(acct)]}

    # ---- websockets ---------------------------------------------------------------------
    def ws_reply(conn: Connection, op: str, ok: bool, msg: str, req_id: Any) -> bytes:
        return orjson.dumps(
            {
                "success": ok,
                "ret_msg": msg,
                "conn_id": conn.conn_id,
                "req_id": req_id if isinstance(req_id, str) else "",
                "op": op,
            }
        )

    def public_topic(name: str) -> tuple[str, int | None, str] | None:
        parts = name.split(".")
        if len(parts) == 3 and parts[0] == "orderbook" and parts[1].isdigit():
            depth = int(parts[1])
            if depth in BYBIT_DEPTHS and parts[2] in sim.markets:
                return "y:" + name, depth, parts[2]
        if len(parts) == 2 and parts[0] == "publicTrade" and parts[1] in sim.markets:
            return "y:" + name, None, parts[1]
        return None

    def handle_public(conn: Connection, req: dict[str, Any]) -> None:
        op, req_id = req.get("op"), req.get("req_id", "")
        if op == "ping":
            conn.send_control(ws_reply(conn, "ping", True, "pong", req_id))
            return
        if op not in ("subscribe", "unsubscribe"):
            conn.send_control(ws_reply(conn, str(op or ""), False, "error:invalid op", req_id))
            return
        args = req.get("args")
        if not isinstance(args, list) or not all(isinstance(a, str) for a in args):
            conn.send_control(ws_reply(conn, op, False, "error:args must be a list", req_id))
            return
        topics = [public_topic(a) for a in args]
        bad = [a for a, t in zip(args, topics, strict=True) if t is None]
        if bad:
            conn.send_control(
                ws_reply(conn, op, False, f"error:handler not found,topic:{bad[0]}", req_id)
            )
            return
        if op == "unsubscribe":
            for t in topics:
                assert t is not None
                sim.hub.unsubscribe(conn, t[0])
            conn.send_control(ws_reply(conn, op, True, "", req_id))
            return
        for t in topics:
            assert t is not None
            if t[0] in conn.topics:
                conn.send_control(
                    ws_reply(conn, op, False, f"error:already subscribed,topic:{t[0][2:]}", req_id)
                )
                return
        conn.send_control(ws_reply(conn, op, True, "", req_id))
        for topic, depth, sym in topics:  # type: ignore[misc]
            if depth is not None:
                conn.send_control(sim.bybit[sym].snapshot_message(depth, _now()))
            sim.hub.subscribe(conn, topic)

    def handle_private(conn: Connection, req: dict[str, Any]) -> None:
        op, req_id = req.get("op"), req.get("req_id", "")
        if op == "ping":
            conn.send_control(
                orjson.dumps(
                    {"req_id": req_id, "op": "pong", "args": [str(_now())], "conn_id": conn.conn_id}
                )
            )
            return
        if op == "auth":
            args = req.get("args")
            if not isinstance(args, list) or len(args) != 3:
                conn.send_control(ws_reply(conn, "auth", False, "Params Error", req_id))
                return
            key, expires, sig = args
            acct = sim.exchange.accounts.get(str(key))
            if acct is None:
                conn.send_control(ws_reply(conn, "auth", False, "Invalid apikey", req_id))
                return
            try:
                exp = int(expires)
            except (TypeError, ValueError):
                conn.send_control(ws_reply(conn, "auth", False, "Params Error", req_id))
                return
            if exp < _now():
                conn.send_control(ws_reply(conn, "auth", False, "Request expired", req_id))
                return
            want = hmac.new(
                acct.secret.encode(), f"GET/realtime{exp}".encode(), hashlib.sha256
            ).hexdigest()
            if not hmac.compare_digest(want, str(sig).lower()):
                conn.send_control(
                    ws_reply(conn, "auth", False, "Signature verification failed", req_id)
                )
                return
            conn.account = acct
            private[conn.id] = conn
            conn.send_control(ws_reply(conn, "auth", True, "", req_id))
            return
        if op in ("subscribe", "unsubscribe"):
            if conn.account is None:
                conn.send_control(ws_reply(conn, op, False, "Request not authorized", req_id))
                return
            args = req.get("args")
            ok = isinstance(args, list) and all(
                isinstance(a, str)
                and a.split(".")[0] in ("order", "execution", "position", "wallet")
                for a in args
            )
            if not ok:
                conn.send_control(ws_reply(conn, op, False, "error:handler not found", req_id))
                return
            for a in args:  # type: ignore[union-attr]
                (conn.topics.add if op == "subscribe" else conn.topics.discard)(
                    "p:" + a.split(".")[0]
                )
            conn.send_control(ws_reply(conn, op, True, "", req_id))
            return
        conn.send_control(ws_reply(conn, str(op or ""), False, "error:invalid op", req_id))

    def private_events(events: list[AccountEvent]) -> None:
        for conn in list(private.values()):
            mine = [ev for ev in events if ev.account is conn.account]
            if not mine:
                continue
            now = _now()
            if "p:order" in conn.topics:
                conn.publish(
                    orjson.dumps(
                        {
                            "id": uuid.uuid4().hex,
                            "topic": "order",
                            "creationTime": now,
                            "data": [order_json(ev.order) | {"category": "linear"} for ev in mine],
                        }
                    )
                )
            fills = [ev for ev in mine if ev.fill is not None]
            if fills and "p:execution" in conn.topics:
                conn.publish(
                    orjson.dumps(
                        {
                            "id": uuid.uuid4().hex,
                            "topic": "execution",
                            "creationTime": now,
                            "data": [execution_json(ev) for ev in fills],
                        }
                    )
                )
            if fills and "p:position" in conn.topics:
                syms = sorted({ev.order.symbol for ev in fills})
                conn.publish(
                    orjson.dumps(
                        {
                            "id": uuid.uuid4().hex,
                            "topic": "position",
                            "creationTime": now,
                            "data": [
                                position_json(conn.account, s) | {"category": "linear"}  # type: ignore[arg-type]
                                for s in syms
                            ],
                        }
                    )
                )
            if fills and "p:wallet" in conn.topics:
                conn.publish(
                    orjson.dumps(
                        {
                            "id": uuid.uuid4().hex,
                            "topic": "wallet",
                            "creationTime": now,
                            "data": [wallet_json(conn.account)],  # type: ignore[arg-type]
                        }
                    )
                )

    sim.exchange.listeners.append(private_events)

    def execution_json(ev: AccountEvent) -> dict[str, Any]:
        o, f = ev.order, ev.fill
        assert f is not None
        inst = sim.markets[o.symbol].instrument
        ex = sim.exchange
        return {
            "category": "linear",
            "symbol": o.symbol,
            "execFee": str(f.fee),
            "execId": str(uuid.UUID(int=f.trade_id)),
            "execPrice": inst.price_str(f.price),
            "execQty": inst.qty_str(f.qty),
            "execType": "Trade",
            "execValue": inst.quote_str(f.qty * f.price),
            "isMaker": f.maker,
            "feeRate": str(ex.maker_fee if f.maker else ex.taker_fee),
            "tradeIv": "",
            "markIv": "",
            "blockTradeId": "",
            "markPrice": str(ex.mark(o.symbol)),
            "indexPrice": "",
            "underlyingPrice": "",
            "leavesQty": inst.qty_str(o.qty - o.filled if o.is_open else 0),
            "orderId": bybit_order_id(o.order_id),
            "orderLinkId": o.client_id,
            "orderPrice": inst.price_str(o.price) if o.price else "0",
            "orderQty": inst.qty_str(o.qty),
            "orderType": "Limit" if o.type == "LIMIT" else "Market",
            "stopOrderType": "UNKNOWN",
            "side": "Buy" if o.side == BID else "Sell",
            "execTime": str(f.ts),
            "isLeverage": "0",
            "closedSize": "0",
            "seq": sim.markets[o.symbol].update_id,
        }

    async def ws_handler(request: web.Request) -> web.StreamResponse:
        is_private = request.path.startswith("/v5/private")
        ws = web.WebSocketResponse(heartbeat=60.0, max_msg_size=65536)
        await ws.prepare(request)
        conn = Connection(ws, sim.hub, public=not is_private, transport=request.transport)
        sim.hub.register(conn)
        try:
            async for msg in ws:
                if msg.type != WSMsgType.TEXT:
                    if msg.type in (WSMsgType.ERROR, WSMsgType.CLOSE):
                        break
                    continue
                try:
                    req = orjson.loads(msg.data)
                except orjson.JSONDecodeError:
                    req = None
                if not isinstance(req, dict):
                    conn.send_control(
                        ws_reply(conn, "", False, "error:request must be a JSON object", "")
                    )
                    continue
                (handle_private if is_private else handle_public)(conn, req)
        finally:
            private.pop(conn.id, None)
            await conn.finish()
        return ws

    async def not_found(request: web.Request) -> web.Response:
        return web.Response(
            status=404,
            body=orjson.dumps(
                {
                    "retCode": 404,
                    "retMsg": f"path {request.path} not found",
                    "result": {},
                    "retExtInfo": {},
                    "time": _now(),
                }
            ),
            content_type="application/json",
        )

    r = app.router
    r.add_get("/v5/market/time", server_time)
    r.add_get("/v5/market/orderbook", orderbook)
    r.add_get("/v5/market/instruments-info", instruments)
    r.add_post("/v5/order/create", create)
    r.add_post("/v5/order/cancel", cancel)
    r.add_get("/v5/order/realtime", realtime)
    r.add_get("/v5/position/list", positions)
    r.add_get("/v5/account/wallet-balance", wallet)
    r.add_get("/v5/public/linear", ws_handler)
    r.add_get("/v5/private", ws_handler)
    r.add_route("*", "/v5/{tail:.*}", not_found)
