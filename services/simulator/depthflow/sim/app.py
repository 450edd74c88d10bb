"""The simulator service: the market engine on a clock, both protocols on one port."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

from aiohttp import web

from depthflow.common.lifecycle import Service
from depthflow.sim.config import SimSettings, push_phase_ms
from depthflow.sim.faults import FaultConfig
from depthflow.sim.instruments import instrument_for
from depthflow.sim.market import Market
from depthflow.sim.publishers import BinancePublisher, BybitPublisher
from depthflow.sim.streams import Hub
from depthflow.sim.trading import Exchange

MIN_HISTORY_PER_SYMBOL = 2_000

log = logging.getLogger(__name__)


def now_ms() -> int:
    return int(time.time() * 1000)


class Simulator(Service):
    """``start`` binds the port and starts the engine clock; ``run`` serves until a stop
    condition holds; ``stop`` closes every connection."""

    name = "sim"

    def __init__(self, settings: SimSettings) -> None:
        super().__init__()
        self.settings = settings
        # the truth history is a budget over all symbols: per symbol it would grow to
        # gigabytes with hundreds of symbols (an array per update)
        retain = max(MIN_HISTORY_PER_SYMBOL, settings.history // max(len(settings.symbols), 1))
        # checkpoints (a copy of the book each) every quarter of it: at most ~1.5x retained
        every = max(MIN_HISTORY_PER_SYMBOL // 2, min(10_000, retain // 4))
        self.markets: dict[str, Market] = {
            s: Market(
                instrument_for(s),
                settings.seed,
                settings.rate,
                retain=retain,
                checkpoint_every=every,
            )
            for s in settings.symbols
        }
        self.hub = Hub(settings.seed, settings.faults)
        phase = {s: push_phase_ms(s, settings.push_phase) for s in self.markets}
        self.binance = {s: BinancePublisher(m, self.hub, phase[s]) for s, m in self.markets.items()}
        self.bybit = {s: BybitPublisher(m, self.hub, phase[s]) for s, m in self.markets.items()}
        self._feeds = [(s, m, self.binance[s], self.bybit[s]) for s, m in self.markets.items()]
        self._hub_version = -1
        self.exchange = Exchange(self.markets, settings)
        self.exchange.user_stream_delay_s = settings.faults.user_stream_delay_ms / 1000
        self.port: int | None = None
        self._runner: web.AppRunner | None = None
        self._engine: asyncio.Task[None] | None = None
        self.updates = 0
        self.lag_events = 0

    @property
    def faults(self) -> FaultConfig:
        return self.hub.faults

    def set_faults(self, faults: FaultConfig) -> None:
        self.hub.faults = faults
        self.exchange.user_stream_delay_s = faults.user_stream_delay_ms / 1000

    def build_app(self) -> web.Application:
        from depthflow.sim import binance, bybit, control

        app = web.Application(client_max_size=1024 * 1024)
        control.add_routes(app, self)
        binance.add_routes(app, self)
        bybit.add_routes(app, self)
        return app

    async def on_start(self) -> None:
        self._runner = web.AppRunner(
            self.build_app(), access_log=None, handle_signals=False, shutdown_timeout=1.0
        )
        await self._runner.setup()
        self.exit_stack.push_async_callback(self._runner.cleanup)
        site = web.TCPSite(self._runner, self.settings.host, self.settings.port)
        await site.start()
        sockets = getattr(site._server, "sockets", None) or []
        self.port = sockets[0].getsockname()[1] if sockets else self.settings.port
        self._engine = asyncio.create_task(self._clock(), name="sim-engine")
        self.exit_stack.push_async_callback(self._stop_engine)
        log.info(
            "simulator listening",
            extra={"host": self.settings.host, "port": self.port, "symbols": list(self.markets)},
        )

    async def _stop_engine(self) -> None:
        if self._engine:
            self._engine.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._engine
        for conn in list(self.hub.connections):
            conn.close()

    async def on_stop(self) -> None:
        for conn in list(self.hub.connections):
            conn.close()

    async def run(
        self,
        stop: asyncio.Event | None = None,
        max_messages: int | None = None,
        idle_timeout: float | None = None,
    ) -> int:
        """Serve until ``stop`` is set, ``max_messages`` stream messages were sent, or
        ``idle_timeout`` seconds passed."""
        stop = stop or asyncio.Event()
        deadline = time.monotonic() + idle_timeout if idle_timeout else None
        while not stop.is_set():
            if max_messages is not None and self.hub.messages_sent >= max_messages:
                break
            if deadline is not None and time.monotonic() >= deadline:
                break
            if self._engine is not None and self._engine.done():
                self._engine.result()  # re-raise an engine failure: fail loudly
                break
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(stop.wait(), 0.1)
        return self.hub.messages_sent

    def advance(self, now: int, last: int | None = None) -> None:
        """Publish what every market produced and settle the accounts' fills.

        ``last`` is the previous tick's time: given it, a symbol is skipped when it produced
        nothing, no subscription changed and none of its publishers has anything due (most
        ticks at a few updates per tick); its publishers catch up on the next call."""
        hub, exchange = self.hub, self.exchange
        visit_all = last is None or hub.version != self._hub_version
        self._hub_version = hub.version
        for sym, market, binance, bybit in self._feeds:
            out = market.outbox
            if out.events or out.trades or out.maker_fills:
                out = market.drain()
                if out.maker_fills:
                    exchange.on_maker_fills(sym, out.maker_fills, now)
            elif not visit_all and now < binance.wake_ms and now < bybit.wake_ms:
                continue
            binance.publish(out, now, last)
            bybit.publish(out, now, last)
        exchange.flush()
        hub.apply_connection_faults()

    async def _clock(self) -> None:
        tick = self.settings.tick_ms / 1000
        rate = self.settings.rate
        markets = list(self.markets.values())
        # every symbol has the same rate, so one carry: each steps the same n per tick
        carry = 0.0
        last = time.monotonic()
        last_now: int | None = None
        nxt = last + tick
        while True:
            await asyncio.sleep(max(0.0, nxt - time.monotonic()))
            t = time.monotonic()
            elapsed, last = t - last, t
            nxt = max(nxt + tick, t)
            now = now_ms()
            due = carry + rate * min(elapsed, 0.25)
            n = int(due)
            carry = due - n
            if n:
                for market in markets:
                    market.step(n, now)
                self.updates += n * len(markets)
            self.advance(now, last_now)
            last_now = now
