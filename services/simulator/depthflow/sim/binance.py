"""Binance USD-M futures protocol: ``/fapi/...`` REST, ``/ws`` and ``/stream`` WebSockets,
signed trading endpoints and the listenKey user-data stream.

Error bodies are ``{"code": <negative int>, "msg": "..."}`` with the exchange's codes.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import re
import secrets
import time
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl

import orjson
from aiohttp import WSMsgType, web

from depthflow.sim.book import ASK, BID
from depthflow.sim.publishers import BINANCE_DEPTH_SPEEDS
from depthflow.sim.streams import Connection
from depthflow.sim.trading import Account, AccountEvent, Order, TradingError

if TYPE_CHECKING:
    from depthflow.sim.app import Simulator

RAW_BODY = web.RequestKey("raw_body", str)
DEPTH_LIMITS = (5, 10, 20, 50, 100, 500, 1000)
CLIENT_ID_RE = re.compile(r"^[.A-Z:/a-z0-9_-]{1,36}$")
STREAM_SUFFIXES = {s[1:].lower(): s[1:] for s in BINANCE_DEPTH_SPEEDS} | {
    "bookticker": "bookTicker",
    "aggtrade": "aggTrade",
}
MAX_RECV_WINDOW = 60_000

_TRADING_ERRORS: dict[str, tuple[int, str]] = {
    "duplicate_client_id": (-4116, "ClientOrderId is duplicated."),
    "reduce_only_rejected": (-2022, "ReduceOnly Order is rejected."),
    "insufficient_margin": (-2019, "Margin is insufficient."),
    "unknown_order": (-2011, "Unknown order sent."),
    "unknown_symbol": (-1121, "Invalid symbol."),
    "post_only_would_match": (
        -5022,
        "Due to the order could not be executed as maker, "
        "the Post Only order will be rejected. The order will "
        "not be recorded in the order history",
    ),
    "rejected": (
        -1008,
        "Server is currently overloaded with other requests. Please try again in a few minutes.",
    ),
}


class BinanceError(Exception):
    def __init__(self, code: int, msg: str, status: int = 400) -> None:
        super().__init__(msg)
        self.code, self.msg, self.status = code, msg, status


def _err(
    code: int, msg: str, status: int = 400, headers: dict[str, str] | None = None
) -> web.Response:
    return web.Response(
        body=orjson.dumps({"code": code, "msg": msg}),
        status=status,
        content_type="application/json",
        headers=headers,
    )


def _ok(data: Any, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(body=orjson.dumps(data), content_type="application/json", headers=headers)


def _mandatory(name: str) -> BinanceError:
    return BinanceError(
        -1102, f"Mandatory parameter '{name}' was not sent, was empty/null, or malformed."
    )


def _now() -> int:
    return int(time.time() * 1000)


class _Weights:
    """Per-IP request weight per wall-clock minute; 429 over the limit, 418 (banned) for
    clients that keep going after ``ban_after`` 429s."""

    def __init__(self, limit: int, ban_after: int, ban_seconds: float) -> None:
        self.limit, self.ban_after, self.ban_seconds = limit, ban_after, ban_seconds
        self.used: dict[str, tuple[int, int]] = {}  # ip -> (minute, weight)
        self.strikes: dict[str, tuple[int, int]] = {}  # ip -> (minute, 429s)
        self.banned_until: dict[str, int] = {}

    def charge(self, ip: str, weight: int) -> tuple[int, web.Response | None]:
        now = _now()
        minute = now // 60_000
        until = self.banned_until.get(ip, 0)
        if until > now:
            return self._used(ip, minute), _err(
                -1003,
                f"Way too many requests; IP({ip}) banned until {until}. Please use "
                "the websocket for live updates to avoid bans.",
                418,
                {"Retry-After": str(max(1, (until - now) // 1000))},
            )
        used = self._used(ip, minute)
        if used + weight > self.limit:
            m, n = self.strikes.get(ip, (minute, 0))
            n = n + 1 if m == minute else 1
            self.strikes[ip] = (minute, n)
            if n > self.ban_after:
                until = now + int(self.ban_seconds * 1000)
                self.banned_until[ip] = until
                return used, _err(
                    -1003,
                    f"Way too many requests; IP({ip}) banned until {until}. Please "
                    "use the websocket for live updates to avoid bans.",
                    418,
                    {"Retry-After": str(int(self.ban_seconds))},
                )
            return used, _err(
                -1003,
                f"Too many requests; current limit of IP({ip}) is {self.limit} "
                "requests per minute. Please use the websocket for live updates to "
                "avoid polling the API.",
                429,
                {"Retry-After": str(60 - (now // 1000) % 60)},
            )
        self.used[ip] = (minute, used + weight)
        return used + weight, None

    def _used(self, ip: str, minute: int) -> int:
        m, w = self.used.get(ip, (minute, 0))
        return w if m == minute else 0


def add_routes(app: web.Application, sim: Simulator) -> None:
    weights = _Weights(sim.settings.weight_limit, sim.settings.ban_after, sim.settings.ban_seconds)
    listen_keys: dict[str, Account] = {}
    user_conns: dict[str, set[Connection]] = {}
    rng = __import__("random").Random(sim.settings.seed + 7)

    # ---- plumbing -----------------------------------------------------------------------
    async def params_of(request: web.Request) -> dict[str, str]:
        params = dict(request.query)
        if request.method in ("POST", "PUT", "DELETE") and request.can_read_body:
            body = (await request.read()).decode(errors="replace")
            request[RAW_BODY] = body
            if body:
                try:
                    params.update(parse_qsl(body, keep_blank_values=True, strict_parsing=True))
                except ValueError:
                    raise BinanceError(-1100, "Illegal characters found in a parameter.") from None
        return params

    def market_of(params: dict[str, str]) -> Any:
        symbol = params.get("symbol")
        if not symbol:
            raise _mandatory("symbol")
        market = sim.markets.get(symbol.upper())
        if market is None:
            raise BinanceError(-1121, "Invalid symbol.")
        return market

    def endpoint(weight: Any, signed: bool = False, key_only: bool = False) -> Any:
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
                    return _err(
                        -1003,
                        "Too many requests; current limit of IP is "
                        f"{weights.limit} requests per minute.",
                        faults.force_status,
                    )
                if faults.force_status == 503:
                    return _err(
                        -1001,
                        "Internal error; unable to process your request. Please try again.",
                        503,
                    )
                try:
                    params = await params_of(request)
                    w = weight(params) if callable(weight) else weight
                    used, refused = weights.charge(request.remote or "?", w)
                    hdr = {"X-MBX-USED-WEIGHT-1M": str(used)}
                    if refused is not None:
                        refused.headers.update(hdr)
                        return refused
                    acct = None
                    if signed or key_only:
                        acct = authenticate(request, params, signed)
                    result = await handler(request, params, acct)
                    if isinstance(result, web.Response):
                        result.headers.update(hdr)
                        return result
                    return _ok(result, hdr)
                except BinanceError as exc:
                    return _err(exc.code, exc.msg, exc.status)
                except TradingError as exc:
                    code, msg = _TRADING_ERRORS.get(exc.kind, (-1000, exc.detail or exc.kind))
                    return _err(code, msg)

            return run

        return wrap

    def authenticate(request: web.Request, params: dict[str, str], signed: bool) -> Account:
        key = request.headers.get("X-MBX-APIKEY", "")
        if not key or len(key) > 128 or not key.isprintable():
            raise BinanceError(-2014, "API-key format invalid.", 401)
        acct = sim.exchange.accounts.get(key)
        if acct is None:
            raise BinanceError(-2015, "Invalid API-key, IP, or permissions for action.", 401)
        if not signed:
            return acct
        if not params.get("timestamp"):
            raise _mandatory("timestamp")
        try:
            ts = int(params["timestamp"])
            window = int(params.get("recvWindow") or 5000)
        except ValueError:
            raise _mandatory("timestamp") from None
        if window <= 0 or window > MAX_RECV_WINDOW:
            raise BinanceError(-1131, "recvWindow must be less than 60000")
        sig = params.get("signature")
        if not sig:
            raise _mandatory("signature")
        server = _now()
        if ts >= server + 1000:
            raise BinanceError(
                -1021, "Timestamp for this request was 1000ms ahead of the server's time."
            )
        if server - ts > window:
            raise BinanceError(-1021, "Timestamp for this request is outside of the recvWindow.")
        total = _strip_signature(request.query_string)
        if request.method in ("POST", "PUT", "DELETE"):
            total += _strip_signature(request.get(RAW_BODY, ""))
        expected = hmac.new(acct.secret.encode(), total.encode(), hashlib.sha256).hexdigest()
        if not hmac.compare_digest(expected, sig.lower()):
            raise BinanceError(-1022, "Signature for this request is not valid.")
        return acct

    # ---- market data --------------------------------------------------------------------
    @endpoint(1)
    async def ping(_r: web.Request, _p: dict[str, str], _a: Any) -> Any:
        return {}

    @endpoint(1)
    async def server_time(_r: web.Request, _p: dict[str, str], _a: Any) -> Any:
        return {"serverTime": _now()}

    @endpoint(1)
    async def exchange_info(_r: web.Request, _p: dict[str, str], _a: Any) -> Any:
        symbols = []
        for sym, m in sim.markets.items():
            inst = m.instrument
            symbols.append(
                {
                    "symbol": sym,
                    "pair": sym,
                    "contractType": "PERPETUAL",
                    "deliveryDate": 4133404800000,
                    "onboardDate": 1569398400000,
                    "status": "TRADING",
                    "maintMarginPercent": "2.5000",
                    "requiredMarginPercent": "5.0000",
                    "baseAsset": inst.base,
                    "quoteAsset": "USDT",
                    "marginAsset": "USDT",
                    "pricePrecision": inst.price_dp,
                    "quantityPrecision": inst.qty_dp,
                    "baseAssetPrecision": 8,
                    "quotePrecision": 8,
                    "underlyingType": "COIN",
                    "underlyingSubType": [],
                    "triggerProtect": "0.0500",
                    "liquidationFee": "0.012500",
                    "marketTakeBound": "0.05",
                    "maxMoveOrderLimit": 10000,
                    "filters": [
                        {
                            "filterType": "PRICE_FILTER",
                            "minPrice": inst.tick_size,
                            "maxPrice": inst.price_str(10**9 // inst.tick_units),
                            "tickSize": inst.tick_size,
                        },
                        {
                            "filterType": "LOT_SIZE",
                            "minQty": inst.lot_size,
                            "maxQty": inst.qty_str(10**7),
                            "stepSize": inst.lot_size,
                        },
                        {
                            "filterType": "MARKET_LOT_SIZE",
                            "minQty": inst.lot_size,
                            "maxQty": inst.qty_str(10**6),
                            "stepSize": inst.lot_size,
                        },
                        {"filterType": "MAX_NUM_ORDERS", "limit": 200},
                        {"filterType": "MAX_NUM_ALGO_ORDERS", "limit": 10},
                        {"filterType": "MIN_NOTIONAL", "notional": "5"},
                        {
                            "filterType": "PERCENT_PRICE",
                            "multiplierUp": "1.0500",
                            "multiplierDown": "0.9500",
                            "multiplierDecimal": "4",
                        },
                    ],
                    "orderTypes": ["LIMIT", "MARKET"],
                    "timeInForce": ["GTC", "IOC", "FOK", "GTX"],
                }
            )
        return {
            "timezone": "UTC",
            "serverTime": _now(),
            "futuresType": "U_MARGINED",
            "rateLimits": [
                {
                    "rateLimitType": "REQUEST_WEIGHT",
                    "interval": "MINUTE",
                    "intervalNum": 1,
                    "limit": weights.limit,
                },
                {"rateLimitType": "ORDERS", "interval": "MINUTE", "intervalNum": 1, "limit": 1200},
                {"rateLimitType": "ORDERS", "interval": "SECOND", "intervalNum": 10, "limit": 300},
            ],
            "exchangeFilters": [],
            "assets": [{"asset": "USDT", "marginAvailable": True, "autoAssetExchange": "-10000"}],
            "symbols": symbols,
        }

    def depth_weight(p: dict[str, str]) -> int:
        try:
            limit = int(p.get("limit") or 500)
        except ValueError:
            return 2
        return 2 if limit <= 50 else 5 if limit <= 100 else 10 if limit <= 500 else 20

    @endpoint(depth_weight)
    async def depth(_r: web.Request, p: dict[str, str], _a: Any) -> Any:
        market = market_of(p)
        raw = p.get("limit") or "500"
        try:
            limit = int(raw)
        except ValueError:
            raise BinanceError(
                -1100,
                "Illegal characters found in parameter 'limit'; legal range is '^[0-9]{1,20}$'.",
            ) from None
        if limit not in DEPTH_LIMITS:
            raise BinanceError(-1130, "Data sent for parameter 'limit' is not valid.")
        uid, bids, asks = market.snapshot(limit)
        ps, qs = market.instrument.price_str, market.instrument.qty_str
        now = _now()
        return {
            "lastUpdateId": uid,
            "E": now,
            "T": market.last_ts or now,
            "bids": [[ps(x), qs(q)] for x, q in bids],
            "asks": [[ps(x), qs(q)] for x, q in asks],
        }

    def ticker_of(market: Any) -> dict[str, Any]:
        book, inst = market.book, market.instrument
        bb, ba = book.best_bid, book.best_ask
        return {
            "symbol": inst.symbol,
            "bidPrice": inst.price_str(bb),
            "bidQty": inst.qty_str(book.bids.get(bb, 0)),
            "askPrice": inst.price_str(ba),
            "askQty": inst.qty_str(book.asks.get(ba, 0)),
            "time": market.last_ts or _now(),
            "lastUpdateId": market.update_id,
        }

    @endpoint(lambda p: 2 if p.get("symbol") else 5)
    async def book_ticker(_r: web.Request, p: dict[str, str], _a: Any) -> Any:
        if p.get("symbol"):
            return ticker_of(market_of(p))
        return [ticker_of(m) for m in sim.markets.values()]

    # ---- trading ------------------------------------------------------------------------
    def order_json(o: Order) -> dict[str, Any]:
        inst = sim.markets[o.symbol].instrument
        avg = (
            inst.price_str(0)
            if not o.filled
            else str(
                (sim.exchange.price_dec(o.symbol, o.quote) / o.filled).quantize(
                    inst.tick_decimal / 10
                )
            )
        )
        return {
            "orderId": o.order_id,
            "symbol": o.symbol,
            "status": o.status,
            "clientOrderId": o.client_id,
            "price": inst.price_str(o.price or 0),
            "avgPrice": avg,
            "origQty": inst.qty_str(o.qty),
            "executedQty": inst.qty_str(o.filled),
            "cumQty": inst.qty_str(o.filled),
            "cumQuote": inst.quote_str(o.quote),
            "timeInForce": o.tif,
            "type": o.type,
            "reduceOnly": o.reduce_only,
            "closePosition": False,
            "side": "BUY" if o.side == BID else "SELL",
            "positionSide": "BOTH",
            "stopPrice": "0",
            "workingType": "CONTRACT_PRICE",
            "priceProtect": False,
            "origType": o.type,
            "priceMatch": "NONE",
            "selfTradePreventionMode": "NONE",
            "goodTillDate": 0,
            "time": o.created,
            "updateTime": o.updated,
        }

    def order_ref(p: dict[str, str]) -> tuple[int | None, str | None]:
        oid, cid = p.get("orderId"), p.get("origClientOrderId")
        if not oid and not cid:
            raise BinanceError(-1102, "Either orderId or origClientOrderId must be sent.")
        if oid:
            try:
                return int(oid), None
            except ValueError:
                raise _mandatory("orderId") from None
        return None, cid

    @endpoint(1, signed=True)
    async def new_order(_r: web.Request, p: dict[str, str], acct: Account) -> Any:
        market = market_of(p)
        inst = market.instrument
        for name in ("side", "type"):
            if not p.get(name):
                raise _mandatory(name)
        side = {"BUY": BID, "SELL": ASK}.get(p["side"])
        if side is None:
            raise BinanceError(-1117, "Invalid side.")
        otype = p["type"]
        if otype not in ("LIMIT", "MARKET"):
            raise BinanceError(-1116, "Invalid orderType.")
        if not p.get("quantity"):
            raise _mandatory("quantity")
        qty = inst.to_lots(p["quantity"])
        if qty is None:
            raise _qty_error(p["quantity"], inst.qty_dp)
        price = None
        tif = p.get("timeInForce", "")
        if otype == "LIMIT":
            if not tif:
                raise _mandatory("timeInForce")
            if tif not in ("GTC", "IOC", "FOK", "GTX"):
                raise BinanceError(-1115, "Invalid timeInForce.")
            if not p.get("price"):
                raise _mandatory("price")
            price = inst.to_ticks(p["price"])
            if price is None:
                raise _price_error(p["price"], inst.price_dp)
        else:
            if p.get("price"):
                raise BinanceError(-1106, "Parameter 'price' sent when not required.")
            tif = "GTC"
        reduce_only = p.get("reduceOnly", "false").lower()
        if reduce_only not in ("true", "false"):
            raise BinanceError(
                -1102,
                "Mandatory parameter 'reduceOnly' was not sent, was empty/null, or malformed.",
            )
        cid = p.get("newClientOrderId") or f"sim-{secrets.token_hex(8)}"
        if not CLIENT_ID_RE.match(cid):
            raise BinanceError(-4015, "Client order id is not valid.")
        if p.get("positionSide", "BOTH") != "BOTH":
            raise BinanceError(-4061, "Order's position side does not match user's setting.")
        faults = sim.faults
        if faults.reject_rate and rng.random() < faults.reject_rate:
            raise TradingError("rejected")
        now = _now()
        ack_mode = p.get("newOrderRespType", "ACK") != "RESULT"
        order = sim.exchange.place(
            acct,
            inst.symbol,
            side,
            otype,
            qty,
            price,
            tif,
            reduce_only == "true",
            cid,
            "binance",
            now,
        )
        body = order_json(order)
        if ack_mode:  # ACK: the order as accepted, before matching
            body.update(
                status="NEW",
                executedQty=inst.qty_str(0),
                cumQty=inst.qty_str(0),
                cumQuote=inst.quote_str(0),
                avgPrice=inst.price_str(0),
            )
        sim.exchange.flush()
        if faults.unknown_503_rate and rng.random() < faults.unknown_503_rate:
            return _err(
                -1007,
                "Timeout waiting for response from backend server. Send "
                "status unknown; execution status unknown.",
                503,
            )
        return body

    @endpoint(1, signed=True)
    async def get_order(_r: web.Request, p: dict[str, str], acct: Account) -> Any:
        market = market_of(p)
        oid, cid = order_ref(p)
        try:
            return order_json(sim.exchange.find(acct, market.instrument.symbol, oid, cid))
        except TradingError:
            raise BinanceError(-2013, "Order does not exist.") from None

    @endpoint(1, signed=True)
    async def cancel_order(_r: web.Request, p: dict[str, str], acct: Account) -> Any:
        market = market_of(p)
        oid, cid = order_ref(p)
        order = sim.exchange.cancel(acct, market.instrument.symbol, oid, cid, _now())
        sim.exchange.flush()
        return order_json(order)

    @endpoint(lambda p: 1 if p.get("symbol") else 40, signed=True)
    async def open_orders(_r: web.Request, p: dict[str, str], acct: Account) -> Any:
        symbol = market_of(p).instrument.symbol if p.get("symbol") else None
        return [order_json(o) for o in acct.open_orders(symbol)]

    @endpoint(1, signed=True)
    async def cancel_all(_r: web.Request, p: dict[str, str], acct: Account) -> Any:
        symbol = market_of(p).instrument.symbol
        for o in acct.open_orders(symbol):
            sim.exchange.cancel(acct, symbol, o.order_id, None, _now())
        sim.exchange.flush()
        return {"code": 200, "msg": "The operation of cancel all open order is done."}

    def position_json(acct: Account, sym: str) -> dict[str, Any]:
        ex = sim.exchange
        pos = acct.position(sym)
        mark = ex.mark(sym)
        return {
            "symbol": sym,
            "positionAmt": str(pos.qty),
            "entryPrice": str(pos.entry),
            "breakEvenPrice": str(pos.entry),
            "markPrice": str(mark),
            "unRealizedProfit": str(ex.unrealized(acct, sym)),
            "liquidationPrice": "0",
            "leverage": str(ex.leverage),
            "maxNotionalValue": "10000000",
            "marginType": "cross",
            "isolatedMargin": "0.00000000",
            "isAutoAddMargin": "false",
            "positionSide": "BOTH",
            "notional": str(pos.qty * mark),
            "isolatedWallet": "0",
            "updateTime": pos.updated,
        }

    def balance_numbers(acct: Account) -> dict[str, str]:
        ex = sim.exchange
        upnl = sum((ex.unrealized(acct, s) for s in acct.positions), ex.position_margin(acct) * 0)
        return {
            "wallet": str(acct.wallet),
            "upnl": str(upnl),
            "available": str(ex.available(acct)),
            "margin_balance": str(acct.wallet + upnl),
            "pos_margin": str(ex.position_margin(acct)),
            "order_margin": str(ex.order_margin(acct)),
        }

    @endpoint(5, signed=True)
    async def balance(_r: web.Request, _p: dict[str, str], acct: Account) -> Any:
        n = balance_numbers(acct)
        return [
            {
                "accountAlias": "SimAcct",
                "asset": "USDT",
                "balance": n["wallet"],
                "crossWalletBalance": n["wallet"],
                "crossUnPnl": n["upnl"],
                "availableBalance": n["available"],
                "maxWithdrawAmount": n["available"],
                "marginAvailable": True,
                "updateTime": acct.updated,
            }
        ]

    @endpoint(5, signed=True)
    async def account(_r: web.Request, _p: dict[str, str], acct: Account) -> Any:
        n = balance_numbers(acct)
        init = str(sim.exchange.position_margin(acct) + sim.exchange.order_margin(acct))
        return {
            "totalInitialMargin": init,
            "totalMaintMargin": "0",
            "totalWalletBalance": n["wallet"],
            "totalUnrealizedProfit": n["upnl"],
            "totalMarginBalance": n["margin_balance"],
            "totalPositionInitialMargin": n["pos_margin"],
            "totalOpenOrderInitialMargin": n["order_margin"],
            "totalCrossWalletBalance": n["wallet"],
            "totalCrossUnPnl": n["upnl"],
            "availableBalance": n["available"],
            "maxWithdrawAmount": n["available"],
            "assets": [
                {
                    "asset": "USDT",
                    "walletBalance": n["wallet"],
                    "unrealizedProfit": n["upnl"],
                    "marginBalance": n["margin_balance"],
                    "maintMargin": "0",
                    "initialMargin": init,
                    "positionInitialMargin": n["pos_margin"],
                    "openOrderInitialMargin": n["order_margin"],
                    "crossWalletBalance": n["wallet"],
                    "crossUnPnl": n["upnl"],
                    "availableBalance": n["available"],
                    "maxWithdrawAmount": n["available"],
                    "updateTime": acct.updated,
                }
            ],
            "positions": [position_json(acct, s) for s in sim.markets],
        }

    @endpoint(5, signed=True)
    async def position_risk(_r: web.Request, p: dict[str, str], acct: Account) -> Any:
        syms = [market_of(p).instrument.symbol] if p.get("symbol") else list(sim.markets)
        return [position_json(acct, s) for s in syms]

    # ---- user data stream ---------------------------------------------------------------
    @endpoint(1, key_only=True)
    async def listen_key(request: web.Request, p: dict[str, str], acct: Account) -> Any:
        existing = next((k for k, a in listen_keys.items() if a is acct), None)
        if request.method == "POST":
            key = existing or secrets.token_urlsafe(48)[:64]
            listen_keys[key] = acct
            return {"listenKey": key}
        if existing is None:
            raise BinanceError(-1125, "This listenKey does not exist.")
        if request.method == "DELETE":
            listen_keys.pop(existing, None)
            for conn in user_conns.pop(existing, set()):
                conn.send_control(
                    orjson.dumps({"e": "listenKeyExpired", "E": _now(), "listenKey": existing})
                )
                conn.close()
        return {} if request.method == "DELETE" else {"listenKey": existing}

    def user_events(events: list[AccountEvent]) -> None:
        by_acct: dict[int, list[AccountEvent]] = {}
        for ev in events:
            by_acct.setdefault(id(ev.account), []).append(ev)
        for key, acct in listen_keys.items():
            conns = user_conns.get(key)
            evs = by_acct.get(id(acct))
            if not conns or not evs:
                continue
            for ev in evs:
                payloads = [orjson.dumps(order_update(ev))]
                if ev.fill is not None:
                    payloads.append(orjson.dumps(account_update(ev)))
                for conn in conns:
                    for payload in payloads:
                        conn.publish(payload)

    sim.exchange.listeners.append(user_events)

    def order_update(ev: AccountEvent) -> dict[str, Any]:
        o, f = ev.order, ev.fill
        inst = sim.markets[o.symbol].instrument
        j = order_json(o)
        avg = (
            inst.price_str(0)
            if not ev.filled
            else str(
                (sim.exchange.price_dec(o.symbol, ev.quote) / ev.filled).quantize(
                    inst.tick_decimal / 10
                )
            )
        )
        return {
            "e": "ORDER_TRADE_UPDATE",
            "E": _now(),
            "T": ev.ts,
            "o": {
                "s": o.symbol,
                "c": o.client_id,
                "S": j["side"],
                "o": o.type,
                "f": o.tif,
                "q": j["origQty"],
                "p": j["price"],
                "ap": avg,
                "sp": "0",
                "x": ev.exec_type,
                "X": ev.status,
                "i": o.order_id,
                "l": inst.qty_str(f.qty if f else 0),
                "z": inst.qty_str(ev.filled),
                "L": inst.price_str(f.price if f else 0),
                "N": "USDT",
                "n": str(f.fee if f else 0),
                "T": ev.ts,
                "t": f.trade_id if f else 0,
                "b": "0",
                "a": "0",
                "m": bool(f and f.maker),
                "R": o.reduce_only,
                "wt": "CONTRACT_PRICE",
                "ot": o.type,
                "ps": "BOTH",
                "cp": False,
                "rp": str(f.realized if f else 0),
                "pP": False,
                "si": 0,
                "ss": 0,
                "V": "NONE",
                "pm": "NONE",
                "gtd": 0,
            },
        }

    def account_update(ev: AccountEvent) -> dict[str, Any]:
        acct, sym = ev.account, ev.order.symbol
        pos = acct.position(sym)
        return {
            "e": "ACCOUNT_UPDATE",
            "E": _now(),
            "T": ev.ts,
            "a": {
                "m": "ORDER",
                "B": [{"a": "USDT", "wb": str(acct.wallet), "cw": str(acct.wallet), "bc": "0"}],
                "P": [
                    {
                        "s": sym,
                        "pa": str(pos.qty),
                        "ep": str(pos.entry),
                        "bep": str(pos.entry),
                        "cr": str(pos.realized),
                        "up": str(sim.exchange.unrealized(acct, sym)),
                        "mt": "cross",
                        "iw": "0",
                        "ps": "BOTH",
                    }
                ],
            },
        }

    # ---- websockets ---------------------------------------------------------------------
    def resolve(name: str) -> tuple[str, str] | None:
        sym, _, rest = name.partition("@")
        if not rest or sym.upper() not in sim.markets:
            return None
        suffix = STREAM_SUFFIXES.get(rest.lower())
        if suffix is None:
            return None
        canonical = f"{sym.lower()}@{suffix}"
        return "b:" + canonical, canonical

    async def ws_handler(request: web.Request) -> web.StreamResponse:
        path_stream = request.match_info.get("stream", "")
        combined = request.path.startswith("/stream")
        ws = web.WebSocketResponse(heartbeat=180.0, max_msg_size=65536)
        await ws.prepare(request)
        if path_stream in listen_keys:
            conn = Connection(ws, sim.hub, public=False, transport=request.transport)
            user_conns.setdefault(path_stream, set()).add(conn)
        else:
            conn = Connection(
                ws, sim.hub, public=True, combined=combined, transport=request.transport
            )
        sim.hub.register(conn)
        names = request.query.get("streams", "").split("/") if combined else [path_stream]
        if conn.public:
            for name in names:
                resolved = resolve(name) if name else None
                if resolved:
                    sim.hub.subscribe(conn, resolved[0])
        try:
            async for msg in ws:
                if msg.type == WSMsgType.TEXT:
                    reply = control(conn, msg.data)
                    if reply is not None:
                        conn.send_control(reply)
                elif msg.type in (WSMsgType.ERROR, WSMsgType.CLOSE):
                    break
        finally:
            for conns in user_conns.values():
                conns.discard(conn)
            await conn.finish()
        return ws

    def control(conn: Connection, text: str) -> bytes | None:
        try:
            req = orjson.loads(text)
        except orjson.JSONDecodeError:
            return orjson.dumps({"error": {"code": 3, "msg": "Invalid JSON: expected value"}})
        if not isinstance(req, dict):
            return orjson.dumps(
                {"error": {"code": 2, "msg": "Invalid request: request must be a JSON object"}}
            )
        rid = req.get("id")
        if not isinstance(rid, int | str | type(None)):
            return orjson.dumps({"error": {"code": 2, "msg": "Invalid request: invalid id"}})
        method = req.get("method")
        params = req.get("params", [])
        if method in ("SUBSCRIBE", "UNSUBSCRIBE"):
            if not isinstance(params, list) or not all(isinstance(s, str) for s in params):
                return orjson.dumps(
                    {
                        "error": {
                            "code": 2,
                            "msg": "Invalid request: params must be a list of strings",
                        },
                        "id": rid,
                    }
                )
            resolved = [resolve(s) for s in params]
            if any(r is None for r in resolved):
                return orjson.dumps(
                    {"error": {"code": 2, "msg": "Invalid request: unknown stream name"}, "id": rid}
                )
            for r in resolved:
                assert r is not None
                if method == "SUBSCRIBE":
                    sim.hub.subscribe(conn, r[0])
                else:
                    sim.hub.unsubscribe(conn, r[0])
            return orjson.dumps({"result": None, "id": rid})
        if method == "LIST_SUBSCRIPTIONS":
            return orjson.dumps({"result": sorted(t[2:] for t in conn.topics), "id": rid})
        if method in ("SET_PROPERTY", "GET_PROPERTY"):
            if params and params[0] == "combined":
                if method == "SET_PROPERTY" and len(params) > 1 and isinstance(params[1], bool):
                    conn.combined = params[1]
                    return orjson.dumps({"result": None, "id": rid})
                return orjson.dumps({"result": conn.combined, "id": rid})
            return orjson.dumps({"error": {"code": 0, "msg": "Unknown property"}, "id": rid})
        return orjson.dumps(
            {"error": {"code": 2, "msg": "Invalid request: unknown method"}, "id": rid}
        )

    async def not_found(request: web.Request) -> web.Response:
        return _err(-5000, f"Path {request.path}, Method {request.method} is invalid", 404)

    r = app.router
    r.add_get("/fapi/v1/ping", ping)
    r.add_get("/fapi/v1/time", server_time)
    r.add_get("/fapi/v1/exchangeInfo", exchange_info)
    r.add_get("/fapi/v1/depth", depth)
    r.add_get("/fapi/v1/ticker/bookTicker", book_ticker)
    r.add_post("/fapi/v1/order", new_order)
    r.add_get("/fapi/v1/order", get_order)
    r.add_delete("/fapi/v1/order", cancel_order)
    r.add_get("/fapi/v1/openOrders", open_orders)
    r.add_delete("/fapi/v1/allOpenOrders", cancel_all)
    for v in ("v2", "v3"):
        r.add_get(f"/fapi/{v}/balance", balance)
        r.add_get(f"/fapi/{v}/account", account)
        r.add_get(f"/fapi/{v}/positionRisk", position_risk)
    r.add_route("POST", "/fapi/v1/listenKey", listen_key)
    r.add_route("PUT", "/fapi/v1/listenKey", listen_key)
    r.add_route("DELETE", "/fapi/v1/listenKey", listen_key)
    r.add_get("/ws", ws_handler)
    r.add_get("/ws/{stream}", ws_handler)
    r.add_get("/stream", ws_handler)
    r.add_route("*", "/fapi/{tail:.*}", not_found)


def _strip_signature(raw: str) -> str:
    parts = [p for p in raw.split("&") if p and not p.startswith("signature=")]
    return "&".join(parts)


def _qty_error(text: str, dp: int) -> BinanceError:
    return _decimal_error(text, dp, "quantity", -4023, "Quantity not increased by step size.")


def _price_error(text: str, dp: int) -> BinanceError:
    return _decimal_error(text, dp, "price", -4014, "Price not increased by tick size.")


def _decimal_error(text: str, dp: int, name: str, code: int, msg: str) -> BinanceError:
    from decimal import Decimal, InvalidOperation

    try:
        value = Decimal(text)
    except InvalidOperation:
        return _mandatory(name)
    if not value.is_finite() or value <= 0:
        return BinanceError(
            -4003 if name == "quantity" else -4001,
            "Quantity less than or equal to zero." if name == "quantity" else "Price less than 0.",
        )
    if -int(value.as_tuple().exponent) > dp and value != value.quantize(Decimal(1).scaleb(-dp)):
        return BinanceError(-1111, "Precision is over the maximum defined for this asset.")
    return BinanceError(code, msg)
