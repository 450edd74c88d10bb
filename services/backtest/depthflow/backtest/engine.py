"""The fast path: replay events through the live feature, strategy, risk and fill-model code,
in event time, in one process. Pure: no I/O, no clock, no randomness.

Per chunk of merged events (the result does not depend on the chunk size):

1. features: every trade and book enters its symbol's ``FeatureState`` exactly as in the
   features service's ``SymbolPipeline`` (a book with ``seq <= last seq`` is skipped, an
   inconsistent one refused, ``FEATURES_MIN_EMIT_INTERVAL_MS`` thins the emitted vectors) —
   or, in the batch mode (``features_mode="batch"``, the default), each symbol's vectors are
   computed before the replay over the whole loaded range by ``vectors.batch_symbol_vectors``
   (the features' vectorised ``compute_batch``, bit-identical to streaming) and looked up;
2. strategy: each emitted vector is ``check``-ed and the kept ones are ``decide``-d in one
   batch, as the strategy service does per consumer batch (decisions depend only on vectors);
3. execution, walking the chunk again in event time: the fill model sees the books and
   trades; a buy/sell signal becomes what the live executor sends — a marketable LIMIT IOC at
   best ask/bid ± ``slippage_buffer_bps``, sized and reserved by ``RiskLedger.size_and_reserve``
   — submitted to ``FillSimulator`` at the signal's exchange time; fills update the
   ``Position`` and the ledger; a ``hold`` is not traded (the live executor ignores it).

Gaps (policy **freeze**): an invalidating health event (gap, resync, stale, crossed,
disconnect, or a sequence discontinuity found in md.book) makes its symbol invalid until its
next md.book. At that moment every order of the symbol still in flight is cancelled (it would
otherwise be matched against a book we know nothing about) and the fill model forgets the old
book; the position is held, not flattened, and marked at the last valid mid.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import cache

import numpy as np

from depthflow.backtest.events import (
    BOOK,
    HEALTH,
    INVALIDATING,
    TRADE,
    Event,
    SymbolStreams,
    merge_symbols,
)
from depthflow.backtest.vectors import (
    REJECTED,
    SKIPPED,
    FeaturesMode,
    SymbolDecisions,
    SymbolVectors,
    batch_symbol_vectors,
    decide_imbalance,
    stream_symbol_vectors,
)
from depthflow.executor.fills import (
    BookSnapshot,
    Fill,
    FillModelConfig,
    FillSimulator,
    OrderType,
    SimEvent,
    SimOrder,
    TimeInForce,
    TradePrint,
)
from depthflow.executor.fsm import ORDER_TERMINAL_STATES
from depthflow.executor.ids import client_order_id
from depthflow.executor.positions import Position, PositionFill
from depthflow.executor.risk import RiskLedger, RiskLimits, RiskState, SymbolSpec
from depthflow.features.engine import FeatureState, InvalidInputError
from depthflow.features.names import FEATURE_SET_VERSION
from depthflow.features.scaler import ActiveScaler
from depthflow.strategy.base import Strategy
from depthflow.strategy.imbalance import ImbalanceStrategy
from depthflow.strategy.vectors import INVALID_FEATURE, NON_FINITE, Decision, VectorInput

DAY_US = 86_400_000_000


def signal_id(exchange: str, symbol: str, book_seq: int, strategy: str, version: str) -> str:
    """The live strategy service's signal id (``depthflow.strategy.app.signal_id``)."""
    return _live_signal_id()(exchange, symbol, book_seq, strategy, version)


@cache
def _live_signal_id() -> Callable[[str, str, int, str, str], str]:
    # imported on first use: the strategy service's module pulls in its I/O stack
    from depthflow.strategy.app import signal_id as live_signal_id

    return live_signal_id


def default_spec(symbol: str) -> SymbolSpec:
    """The paper venue's trading rules (``KNOWN_SPECS``, else a fine grid), as live paper."""
    from depthflow.executor.venues.paper import KNOWN_SPECS

    return KNOWN_SPECS.get(symbol) or SymbolSpec(symbol, 1e-4, 1e-4, 0.0, 0.0)


@dataclass(frozen=True)
class EngineConfig:
    fill: FillModelConfig
    risk: RiskLimits
    slippage_buffer_bps: float
    min_emit_interval_us: int
    starting_balance: float
    returns_interval_us: int
    trade_from_us: int  # earlier events only warm up features and the strategy


@dataclass(slots=True)
class SignalRecord:
    ts: int
    exchange: str
    symbol: str
    book_seq: int
    side: str
    strength: float
    confidence: float
    reason: str
    signal_id: str
    outcome: str = ""  # order | hold | refused:<reason>
    client_order_id: str = ""


@dataclass(slots=True)
class TradeRecord:
    ts: int
    exchange: str
    symbol: str
    client_order_id: str
    signal_id: str
    side: str
    qty: float
    price: float
    fee: float
    liquidity: str
    realized_pnl: float
    position_qty: float
    avg_entry_price: float


@dataclass(slots=True)
class OrderRecord:
    client_order_id: str
    signal_id: str
    exchange: str
    symbol: str
    side: str
    qty: float
    limit_price: float
    submit_ts: int
    state: str = "PENDING"
    filled_qty: float = 0.0
    avg_price: float | None = None
    end_ts: int | None = None
    reason: str = ""


@dataclass(slots=True)
class GapRecord:
    key: str
    start_ts: int
    end_ts: int | None = None
    kinds: list[str] = field(default_factory=list)
    cancelled_orders: int = 0


@dataclass(slots=True)
class SymbolState:
    key: str
    exchange: str
    symbol: str
    features: FeatureState | None  # None in the batch mode
    sim: FillSimulator
    position: Position
    last_emit_ts: int | None = None
    bid: float = 0.0
    ask: float = 0.0
    mid: float | None = None
    valid: bool = True
    gap: GapRecord | None = None
    sim_book_idx: int = -1  # stream position of the last book the fill model saw
    open_orders: dict[str, OrderRecord] = field(default_factory=dict)
    books: int = 0
    trades: int = 0
    books_skipped: int = 0
    books_rejected: int = 0
    trades_rejected: int = 0
    vectors: int = 0
    fills: int = 0
    turnover: float = 0.0
    closing: list[float] = field(default_factory=list)


def _mark(s: SymbolState, bids: Sequence[Sequence[float]], asks: Sequence[Sequence[float]]) -> None:
    """Best prices and mid from an accepted book. A side the book leaves empty keeps its
    last price; the mid (the mark) moves only when both sides are quoted."""
    if bids:
        s.bid = bids[0][0]
    if asks:
        s.ask = asks[0][0]
    if bids and asks:
        s.mid = (s.bid + s.ask) / 2.0


# what the decided walk does with a book (``_walk_plan``): skipped or rejected; accepted
# without a vector (thinned); a vector kept without a signal, refused (one per reason), signalled
_SKIP, _REJECT, _ACCEPTED, _KEPT, _SIGNAL = -3, -2, -1, 0, 1
_REFUSED = {2: NON_FINITE, 3: INVALID_FEATURE}
_REFUSAL_PLAN = {reason: plan for plan, reason in _REFUSED.items()}


Mark = tuple[float, float, float | None]


def _marks(sv: SymbolVectors) -> list[Mark]:
    """Per book (stream position) of a symbol, its ``SymbolState`` (bid, ask, mid) after
    ``_mark`` of every accepted book up to it, from the books' best prices: the walk then
    need not read the level lists again."""
    assert sv.top is not None
    n = len(sv.book_code)
    accepted = np.asarray(sv.book_code) >= -1
    bid, ask = sv.top[:, 0], sv.top[:, 1]
    pos = np.arange(n)
    has_b = accepted & ~np.isnan(bid)
    has_a = accepted & ~np.isnan(ask)
    last_b = np.maximum.accumulate(np.where(has_b, pos, -1)) if n else pos
    last_a = np.maximum.accumulate(np.where(has_a, pos, -1)) if n else pos
    last_m = np.maximum.accumulate(np.where(has_b & has_a, pos, -1)) if n else pos
    bids = np.where(last_b >= 0, bid[last_b], 0.0).tolist()
    asks = np.where(last_a >= 0, ask[last_a], 0.0).tolist()
    mids: list[float | None] = ((bid[last_m] + ask[last_m]) / 2.0).tolist()
    unquoted = int(np.count_nonzero(last_m < 0))  # before the first two-sided book
    mids[:unquoted] = [None] * unquoted
    return list(zip(bids, asks, mids, strict=True))


def _walk_plan(sv: SymbolVectors, d: SymbolDecisions) -> list[int]:
    """Per book (stream position) of a symbol, what the decided walk does with it."""
    plan = []
    refusal = d.refusal
    signalled = d.decisions
    for code in sv.book_code:
        if code == SKIPPED:
            plan.append(_SKIP)
        elif code == REJECTED:
            plan.append(_REJECT)
        elif code < 0:
            plan.append(_ACCEPTED)
        elif refusal[code] is not None:
            plan.append(_REFUSAL_PLAN[refusal[code]])  # type: ignore[index]
        else:
            plan.append(_SIGNAL if code in signalled else _KEPT)
    return plan


@dataclass
class EngineResult:
    symbols: list[SymbolState]
    signals: list[SignalRecord]
    trades: list[TradeRecord]
    orders: list[OrderRecord]
    gaps: list[GapRecord]
    grid: list[tuple[int, float, float]]  # (ts, equity, gross exposure) on the returns grid
    curve: list[tuple[int, float, str]]  # grid points ("") and fills (their side)
    counters: dict[str, int]
    refusals: dict[str, int]
    risk_rejects: dict[str, int]
    health: dict[str, int]
    first_ts: int | None
    last_ts: int | None
    final_equity: float


class BacktestEngine:
    """Features → strategy → risk → fill model for every symbol of one run."""

    def __init__(
        self,
        config: EngineConfig,
        strategy: Strategy,
        scaler: ActiveScaler | None = None,
        spec_for: Callable[[str], SymbolSpec] = default_spec,
        features_mode: FeaturesMode = "batch",
    ) -> None:
        if features_mode not in ("stream", "batch"):
            raise ValueError(f"unknown features mode {features_mode!r}")
        self.features_mode = features_mode
        self.config = config
        self.strategy = strategy
        self.scaler = scaler
        self.spec_for = spec_for
        self._specs: dict[str, SymbolSpec] = {}
        self.ledger = RiskLedger(config.risk)
        self.syms: dict[str, SymbolState] = {}
        self.signals: list[SignalRecord] = []
        self.trades: list[TradeRecord] = []
        self.orders: list[OrderRecord] = []
        self.gaps: list[GapRecord] = []
        self.grid: list[tuple[int, float, float]] = []
        self.curve: list[tuple[int, float, str]] = []
        self.counters: Counter[str] = Counter()
        self.refusals: Counter[str] = Counter()
        self.risk_rejects: Counter[str] = Counter()
        self.health: Counter[str] = Counter()
        self._next_sample = config.trade_from_us
        self._day = -1
        self._daily_pnl = 0.0
        self.first_ts: int | None = None
        self.last_ts: int | None = None
        self.events = 0
        # batch mode: per symbol, the precomputed vectors (and the imbalance decisions)
        self.vectors: dict[str, SymbolVectors] = {}
        self.decided: dict[str, SymbolDecisions] = {}
        self.normalized: dict[str, np.ndarray | None] = {}
        self._plans: dict[str, list[int]] = {}  # per symbol and book: ``_walk_plan``
        self._trade_ok: dict[str, list[bool]] = {}
        self._marks: dict[str, list[Mark]] = {}  # per symbol and book: ``_marks``
        self._uncreated: set[str] = set()  # prepared keys without a SymbolState yet
        self._decide_up_front = False

    # -- state --------------------------------------------------------------------------

    def _sym(self, e: Event) -> SymbolState:
        s = self.syms.get(e.key)
        if s is None:
            s = self.syms[e.key] = SymbolState(
                e.key,
                e.exchange,
                e.symbol,
                FeatureState() if self.features_mode == "stream" else None,
                FillSimulator(self.config.fill),
                Position(e.symbol),
            )
            self._uncreated.discard(e.key)
        return s

    # -- batch mode -----------------------------------------------------------------------

    def prepare(self, streams: Sequence[SymbolStreams], reference: bool = False) -> None:
        """Batch mode: compute every symbol's vectors over the whole loaded range (and, for
        the imbalance rule, its checks and decisions) before ``run_chunk``. ``streams`` must
        be the ones the replayed events come from (``events.finalize``-d). ``reference``:
        compute them with the streaming engine instead (tests). No-op in the stream mode."""
        if self.features_mode != "batch":
            return
        compute = stream_symbol_vectors if reference else batch_symbol_vectors
        # the imbalance rule (exactly that class) is decided for all vectors at once
        self._decide_up_front = type(self.strategy) is ImbalanceStrategy
        for st in sorted(streams, key=lambda x: x.key):
            if st.key in self.vectors:
                raise ValueError(f"{st.key} prepared twice")
            sv = self.vectors[st.key] = compute(st, self.config.min_emit_interval_us)
            if self._decide_up_front:
                assert isinstance(self.strategy, ImbalanceStrategy)
                d = self.decided[st.key] = decide_imbalance(self.strategy, sv, self.scaler)
                self._plans[st.key] = _walk_plan(sv, d)
                self._marks[st.key] = _marks(sv)
                self._trade_ok[st.key] = sv.trade_ok
            else:
                self.normalized[st.key] = self.scaler.apply(sv.values) if self.scaler else None
            if st.key not in self.syms and (st.books or st.trades):
                self._uncreated.add(st.key)

    def replay(self, streams: Sequence[SymbolStreams], chunk_events: int = 512) -> EngineResult:
        """``prepare`` + every merged event in chunks + ``finish``."""
        from depthflow.backtest.app import _chunks

        self.prepare(streams)
        for chunk in _chunks(merge_symbols(streams), chunk_events):
            self.run_chunk(chunk)
        return self.finish()

    @property
    def streamed_symbols(self) -> list[str]:
        """Batch mode: the symbols computed by the streaming engine (streams out of order)."""
        return [k for k, v in self.vectors.items() if v.streamed]

    def equity(self) -> float:
        total = self.config.starting_balance
        for s in self.syms.values():
            p = s.position
            total += p.realized_pnl - p.fees_paid
            if p.qty and s.mid is not None:
                total += p.unrealized_pnl(s.mid)
        return total

    def gross_exposure(self) -> float:
        return sum(abs(s.position.qty) * s.mid for s in self.syms.values() if s.mid is not None)

    def _sample_until(self, ts: int) -> None:
        step = self.config.returns_interval_us
        while ts >= self._next_sample:
            at = self._next_sample
            for s in self.syms.values():  # orders due by then arrive first (as of the point)
                if s.open_orders:
                    self._apply(s, s.sim.advance(at))
            self.grid.append((self._next_sample, self.equity(), self.gross_exposure()))
            self.curve.append((self._next_sample, self.grid[-1][1], ""))
            self._next_sample += step

    # -- the hot path -------------------------------------------------------------------

    def run_chunk(self, events: Sequence[Event]) -> None:
        """Process a chunk of merged events (any chunking gives the same result)."""
        if not events:
            return
        if self.first_ts is None:
            self.first_ts = events[0].ts
        self.last_ts = events[-1].ts
        self.events += len(events)
        if self.features_mode == "batch":
            if not self.vectors:
                raise RuntimeError("batch features mode: call prepare(streams) first")
            if self._decide_up_front:
                self._run_chunk_decided(events)
            else:
                self._run_chunk_batch(events)
            return
        n = len(events)
        slot = [-1] * n
        accepted = [False] * n
        batch: list[VectorInput] = []
        strategy = self.strategy
        scaler = self.scaler
        scaler_version = scaler.version if scaler else ""
        min_interval = self.config.min_emit_interval_us
        # 1. features (and the vectors' checks)
        for i, e in enumerate(events):
            kind = e.kind
            if kind == TRADE:
                s = self._sym(e)
                s.trades += 1
                try:
                    s.features.on_trade(e.price, e.qty, e.is_buy, e.ts)  # type: ignore[union-attr]
                except InvalidInputError:
                    s.trades_rejected += 1
            elif kind == BOOK:
                s = self._sym(e)
                s.books += 1
                f = s.features
                assert f is not None
                seq = e.seq  # type: ignore[union-attr]
                if f.last_seq is not None and seq <= f.last_seq:
                    s.books_skipped += 1
                    continue
                try:
                    values, valid = f.on_book(e.bids, e.asks, e.ts, e.local_ts, seq)  # type: ignore[union-attr]
                except InvalidInputError:
                    s.books_rejected += 1
                    continue
                accepted[i] = True
                last = s.last_emit_ts
                if min_interval and last is not None and e.ts - last < min_interval:
                    continue
                s.last_emit_ts = e.ts
                s.vectors += 1
                v = VectorInput(
                    e.exchange,
                    e.symbol,
                    FEATURE_SET_VERSION,
                    seq,
                    e.ts,
                    values,
                    scaler.apply(values) if scaler else values,
                    valid,
                    scaler_version,
                    e.trace_id,  # type: ignore[union-attr]
                )
                refusal = strategy.check(v)
                if refusal is not None:
                    self.refusals[refusal.reason] += 1
                    continue
                slot[i] = len(batch)
                batch.append(v)
        # 2. strategy, one batch
        decisions = strategy.decide(batch) if batch else []
        # 3. execution in event time
        self._execute(events, accepted, slot, batch, decisions)

    def _run_chunk_batch(self, events: Sequence[Event]) -> None:
        """Batch mode, any strategy: the precomputed vectors, checked and decided per chunk
        exactly as in the stream mode (same batches), then the same execution walk."""
        n = len(events)
        slot = [-1] * n
        accepted = [False] * n
        batch: list[VectorInput] = []
        strategy = self.strategy
        scaler_version = self.scaler.version if self.scaler else ""
        vectors = self.vectors
        for i, e in enumerate(events):
            kind = e.kind
            if kind == TRADE:
                s = self._sym(e)
                s.trades += 1
                if not vectors[e.key].trade_ok[e.idx]:
                    s.trades_rejected += 1
            elif kind == BOOK:
                s = self._sym(e)
                s.books += 1
                sv = vectors[e.key]
                code = sv.book_code[e.idx]
                if code == SKIPPED:
                    s.books_skipped += 1
                    continue
                if code == REJECTED:
                    s.books_rejected += 1
                    continue
                accepted[i] = True
                if code < 0:  # thinned
                    continue
                s.vectors += 1
                values = sv.values[code]
                normalized = self.normalized[e.key]
                v = VectorInput(
                    e.exchange,
                    e.symbol,
                    FEATURE_SET_VERSION,
                    e.seq,  # type: ignore[union-attr]
                    e.ts,
                    values,
                    values if normalized is None else normalized[code],
                    sv.valid[code],
                    scaler_version,
                    e.trace_id,  # type: ignore[union-attr]
                )
                refusal = strategy.check(v)
                if refusal is not None:
                    self.refusals[refusal.reason] += 1
                    continue
                slot[i] = len(batch)
                batch.append(v)
        decisions = strategy.decide(batch) if batch else []
        self._execute(events, accepted, slot, batch, decisions)

    def _run_chunk_decided(self, events: Sequence[Event]) -> None:
        """Batch mode with the decisions made up front (imbalance): one walk per chunk, each
        book looked up in its symbol's ``_walk_plan`` (what the walk has to do with it)."""
        if self._uncreated:  # create SymbolStates in the stream mode's order (equity sums)
            for e in events:
                if e.kind != HEALTH and e.key in self._uncreated:
                    self._sym(e)
        syms = self.syms
        # per symbol, one lookup: its state, and per book its plan and marks, per trade
        # whether it was accepted
        walk = {
            key: (s, self._plans[key], self._marks[key], self._trade_ok[key])
            for key, s in syms.items()
            if key in self._plans
        }
        refusals = self.refusals
        next_sample = self._next_sample
        for e in events:
            ts = e.ts
            if ts >= next_sample:
                self._sample_until(ts)
                next_sample = self._next_sample
            kind = e.kind
            if kind == BOOK:
                s, plans, marks, _ = walk[e.key]
                s.books += 1
                idx = e.idx
                plan = plans[idx]
                if plan < _ACCEPTED:
                    if plan == _SKIP:
                        s.books_skipped += 1
                    else:
                        s.books_rejected += 1
                    continue
                if not s.valid:
                    self._close_gap(s, ts)
                s.bid, s.ask, s.mid = marks[idx]
                if s.open_orders:
                    s.sim_book_idx = idx
                    self._apply(s, s.sim.on_book(BookSnapshot(ts, e.bids, e.asks)))  # type: ignore[union-attr]
                if plan != _ACCEPTED:
                    s.vectors += 1
                    if plan == _SIGNAL:
                        key = e.key
                        code = self.vectors[key].book_code[idx]
                        v, d = self.decided[key].decisions[code]
                        self._on_signal(s, v, d, e)
                    elif plan != _KEPT:
                        refusals[_REFUSED[plan]] += 1
            elif kind == TRADE:
                s, _, _, trade_ok = walk[e.key]
                s.trades += 1
                if not trade_ok[e.idx]:
                    s.trades_rejected += 1
                if s.open_orders:
                    side = "buy" if e.is_buy else "sell"  # type: ignore[union-attr]
                    self._apply(s, s.sim.on_trade(TradePrint(ts, e.price, e.qty, side)))  # type: ignore[union-attr, arg-type]
            elif kind == HEALTH:
                s = self._sym(e)
                name = e.health  # type: ignore[union-attr]
                self.health[name] += 1
                if name in INVALIDATING:
                    self._open_gap(s, ts, name)

    def _execute(
        self,
        events: Sequence[Event],
        accepted: list[bool],
        slot: list[int],
        batch: list[VectorInput],
        decisions: list[Decision | None],
    ) -> None:
        for i, e in enumerate(events):
            ts = e.ts
            if ts >= self._next_sample:
                self._sample_until(ts)
            kind = e.kind
            if kind == TRADE:
                s = self.syms[e.key]
                if s.open_orders:
                    side = "buy" if e.is_buy else "sell"  # type: ignore[union-attr]
                    self._apply(s, s.sim.on_trade(TradePrint(ts, e.price, e.qty, side)))  # type: ignore[union-attr, arg-type]
            elif kind == BOOK:
                if not accepted[i]:
                    continue
                s = self.syms[e.key]
                if not s.valid:
                    self._close_gap(s, ts)
                bids, asks = e.bids, e.asks  # type: ignore[union-attr]
                _mark(s, bids, asks)
                if s.open_orders:
                    s.sim_book_idx = e.idx
                    self._apply(s, s.sim.on_book(BookSnapshot(ts, bids, asks)))
                j = slot[i]
                if j >= 0:
                    d = decisions[j]
                    if d is not None:
                        self._on_signal(s, batch[j], d, e)
            elif kind == HEALTH:
                s = self._sym(e)
                name = e.health  # type: ignore[union-attr]
                self.health[name] += 1
                if name in INVALIDATING:
                    self._open_gap(s, ts, name)

    # -- execution ----------------------------------------------------------------------

    def _spec(self, symbol: str) -> SymbolSpec:
        spec = self._specs.get(symbol)
        if spec is None:
            spec = self._specs[symbol] = self.spec_for(symbol)
        return spec

    def _refresh_daily(self, ts: int) -> None:
        day = ts // DAY_US
        if day != self._day:  # the live executor's daily PnL restarts each UTC day
            self._day = day
            self._daily_pnl = 0.0
        state = self.ledger.state
        # a new RiskState only when it changes (most signals come between the same fills)
        if state.kill_switch or state.daily_pnl != self._daily_pnl:
            self.ledger.set_state(RiskState(kill_switch=False, daily_pnl=self._daily_pnl))

    def _on_signal(self, s: SymbolState, v: VectorInput, d: Decision, e: Event) -> None:
        strategy = self.strategy
        sid = signal_id(v.exchange, v.symbol, v.book_seq, strategy.kind, strategy.model_version)
        ts = e.ts
        if ts < self.config.trade_from_us:
            self.counters["warmup_signals"] += 1
            return
        rec = SignalRecord(
            ts,
            v.exchange,
            v.symbol,
            v.book_seq,
            d.side,
            d.strength,
            d.confidence,
            d.reason,
            sid,
        )
        self.signals.append(rec)
        if d.side == "hold":
            rec.outcome = "hold"
            return
        if not s.valid:  # cannot happen at a book event; kept as a guard
            rec.outcome = "refused:book_invalid"
            return
        if (s.ask if d.side == "buy" else s.bid) <= 0.0:  # the side was never quoted
            rec.outcome = "refused:no_market"  # as the live executor refuses it
            return
        self._refresh_daily(ts)
        buffer = self.config.slippage_buffer_bps / 10_000
        ref = s.ask * (1 + buffer) if d.side == "buy" else s.bid * (1 - buffer)
        coid = client_order_id(sid)
        sizing, decision = self.ledger.size_and_reserve(
            coid,
            symbol=v.symbol,
            side=d.side,
            strength=d.strength,
            confidence=d.confidence,
            price=ref,
            spec=self._spec(v.symbol),
        )
        if not decision.accepted:
            reason = decision.reason.value if decision.reason else "refused"
            rec.outcome = f"refused:{reason}"
            self.risk_rejects[reason] += 1
            return
        rec.outcome = "order"
        rec.client_order_id = coid
        order = OrderRecord(coid, sid, v.exchange, v.symbol, d.side, sizing.qty, sizing.price, ts)
        self.orders.append(order)
        s.open_orders[coid] = order
        if s.sim_book_idx != e.idx:  # the fill model needs the book the signal saw
            s.sim_book_idx = e.idx
            self._apply(s, s.sim.on_book(BookSnapshot(ts, e.bids, e.asks)))  # type: ignore[union-attr]
        sim_order = SimOrder(
            coid, d.side, OrderType.LIMIT, sizing.qty, ts, sizing.price, TimeInForce.IOC
        )  # type: ignore[arg-type]
        self._apply(s, s.sim.submit(sim_order))

    def _apply(self, s: SymbolState, events: list[SimEvent]) -> None:
        for ev in events:
            order = s.open_orders.get(ev.order_id)
            if order is None:
                continue
            if isinstance(ev, Fill):
                side = order.side
                upd = s.position.apply(PositionFill(side, ev.qty, ev.price, ev.fee))  # type: ignore[arg-type]
                s.position = upd.position
                self.ledger.on_fill(ev.order_id, s.symbol, side, ev.qty, ev.price)  # type: ignore[arg-type]
                self._daily_pnl += upd.realized_pnl - ev.fee
                if upd.closed_qty > 0:
                    s.closing.append(upd.realized_pnl - ev.fee)
                s.fills += 1
                s.turnover += ev.qty * ev.price
                self.trades.append(
                    TradeRecord(
                        ev.ts_us,
                        s.exchange,
                        s.symbol,
                        ev.order_id,
                        order.signal_id,
                        side,
                        ev.qty,
                        ev.price,
                        ev.fee,
                        ev.liquidity.value,
                        upd.realized_pnl,
                        upd.position.qty,
                        upd.position.avg_entry_price,
                    )
                )
                self.curve.append((ev.ts_us, self.equity(), side))
            elif ev.state in ORDER_TERMINAL_STATES:
                order.state = ev.state.value
                order.filled_qty = ev.filled_qty
                order.avg_price = ev.avg_price
                order.end_ts = ev.ts_us
                order.reason = ev.reason
                self.ledger.release(ev.order_id)
                del s.open_orders[ev.order_id]

    # -- gaps ---------------------------------------------------------------------------

    def _open_gap(self, s: SymbolState, ts: int, kind: str) -> None:
        if not s.valid:
            assert s.gap is not None
            if kind not in s.gap.kinds:
                s.gap.kinds.append(kind)
            return
        s.valid = False
        gap = s.gap = GapRecord(s.key, ts, None, [kind])
        self.gaps.append(gap)
        for coid, order in list(s.open_orders.items()):
            order.state = "CANCELLED"
            order.end_ts = ts
            order.reason = f"book invalid ({kind})"
            self.ledger.release(coid)
            gap.cancelled_orders += 1
        s.open_orders.clear()
        s.sim = FillSimulator(self.config.fill)  # forget the book we no longer trust
        s.sim_book_idx = -1

    def _close_gap(self, s: SymbolState, ts: int) -> None:
        s.valid = True
        if s.gap is not None:
            s.gap.end_ts = ts
            s.gap = None

    # -- end ----------------------------------------------------------------------------

    def finish(self) -> EngineResult:
        """Close the run: a last curve point at the last event, and the collected results."""
        final = self.equity()
        if self.last_ts is not None:
            self._sample_until(self.last_ts)
            self.curve.append((self.last_ts, final, ""))
        counters = Counter(self.counters)
        counters["events"] = self.events
        for s in self.syms.values():
            counters["books"] += s.books
            counters["trades"] += s.trades
            counters["books_skipped"] += s.books_skipped
            counters["books_rejected"] += s.books_rejected
            counters["trades_rejected"] += s.trades_rejected
            counters["vectors"] += s.vectors
            counters["fills"] += s.fills
            counters["orders_open_at_end"] += len(s.open_orders)
        return EngineResult(
            symbols=[self.syms[k] for k in sorted(self.syms)],
            signals=self.signals,
            trades=self.trades,
            orders=self.orders,
            gaps=self.gaps,
            grid=self.grid,
            curve=sorted(self.curve, key=lambda c: c[0]),
            counters=dict(sorted(counters.items())),
            refusals=dict(sorted(self.refusals.items())),
            risk_rejects=dict(sorted(self.risk_rejects.items())),
            health=dict(sorted(self.health.items())),
            first_ts=self.first_ts,
            last_ts=self.last_ts,
            final_equity=final,
        )
