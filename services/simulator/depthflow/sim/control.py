"""The simulator's own endpoints: truth, fault control, status, Bybit restart."""

from __future__ import annotations

from typing import TYPE_CHECKING

import orjson
from aiohttp import web
from pydantic import ValidationError

from depthflow.sim.history import HistoryUnavailable

if TYPE_CHECKING:
    from depthflow.sim.app import Simulator


def _json(data: object, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(data), status=status, content_type="application/json")


def add_routes(app: web.Application, sim: Simulator) -> None:
    async def truth(request: web.Request) -> web.Response:
        q = request.query
        symbol = q.get("symbol", "").upper()
        market = sim.markets.get(symbol)
        if market is None:
            return _json({"error": f"unknown symbol {symbol!r}"}, 400)
        try:
            depth = int(q.get("depth", "1000"))
            update_id = int(q["update_id"]) if q.get("update_id") else None
        except ValueError:
            return _json({"error": "depth and update_id must be integers"}, 400)
        if depth < 1:
            return _json({"error": "depth must be >= 1"}, 400)
        try:
            uid, bids, asks = market.truth(update_id, depth)
        except HistoryUnavailable as exc:
            return _json(
                {"error": str(exc), "oldest": market.history.oldest_id, "latest": market.update_id},
                404,
            )
        ps, qs = market.instrument.price_str, market.instrument.qty_str
        return _json(
            {
                "symbol": symbol,
                "update_id": uid,
                "bids": [[ps(p), qs(x)] for p, x in bids],
                "asks": [[ps(p), qs(x)] for p, x in asks],
            }
        )

    async def get_faults(_request: web.Request) -> web.Response:
        return _json(sim.faults.model_dump())

    async def post_faults(request: web.Request) -> web.Response:
        try:
            body = orjson.loads(await request.read() or b"{}")
            if not isinstance(body, dict):
                raise TypeError("expected a JSON object")
            merged = {**sim.faults.model_dump(), **body}
            faults = type(sim.faults).model_validate(merged)
        except (orjson.JSONDecodeError, TypeError) as exc:
            return _json({"error": f"bad JSON: {exc}"}, 400)
        except ValidationError as exc:
            return _json({"error": "invalid faults", "details": orjson.loads(exc.json())}, 400)
        sim.set_faults(faults)
        return _json(faults.model_dump())

    async def status(_request: web.Request) -> web.Response:
        return _json(
            {
                "symbols": {
                    s: {
                        "update_id": m.update_id,
                        "oldest_truth": m.history.oldest_id,
                        "best_bid": m.instrument.price_str(m.book.best_bid),
                        "best_ask": m.instrument.price_str(m.book.best_ask),
                    }
                    for s, m in sim.markets.items()
                },
                "connections": len(sim.hub.connections),
                "messages_sent": sim.hub.messages_sent,
                "rate": sim.settings.rate,
            }
        )

    async def bybit_restart(_request: web.Request) -> web.Response:
        from depthflow.sim.app import now_ms

        for pub in sim.bybit.values():
            pub.restart(now_ms())
        return _json({"restarted": True})

    async def orders(request: web.Request) -> web.Response:
        coid = request.query.get("client_order_id", "")
        if not coid:
            return _json({"error": "client_order_id is required"}, 400)
        found = [
            {
                "order_id": o.order_id,
                "client_order_id": o.client_id,
                "symbol": o.symbol,
                "status": o.status,
                "qty": o.qty,
                "filled": o.filled,
                "created": o.created,
            }
            for acct in sim.exchange.accounts.values()
            for o in acct.orders.values()
            if o.client_id == coid
        ]
        return _json(found)

    app.router.add_get("/sim/truth", truth)
    app.router.add_get("/sim/orders", orders)
    app.router.add_get("/sim/faults", get_faults)
    app.router.add_post("/sim/faults", post_faults)
    app.router.add_get("/sim/status", status)
    app.router.add_post("/sim/bybit/restart", bybit_restart)

    async def healthz(_request: web.Request) -> web.Response:
        return _json({"status": "alive"})

    app.router.add_get("/healthz", healthz)
